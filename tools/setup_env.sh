# Sourced by tools/demo.sh and tools/test.sh: make .venv (once) and install gllm with every plugin
# in plugins/ in editable mode. Re-running is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check -U pip >/dev/null
args=(-e ".[test]")
for plugin in plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && args+=(-e "$plugin")
done
python -m pip install -q --disable-pip-version-check "${args[@]}"
