"""Developer tools (fixture generators, model fetching), importable as ``tools`` with the repository
root on ``sys.path``: pytest puts it there (``pythonpath`` in pyproject.toml); benchmarks and tool
scripts insert it themselves, e.g. ``from tools import fetch_models``."""
