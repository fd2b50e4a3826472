"""Start-up latency: how long a fresh process takes from ``import gllm`` to its first vector.

For each of ``--runs`` fresh interpreters (the real all-MiniLM-L6-v2 from its PyPI package, the
numba cache warmed by one run beforehand, the checkout's plugins), it measures:

- ``import gllm`` (``-X importtime``'s cumulative microseconds for the ``gllm`` package);
- ``gllm.Client(backend=...)`` (plugin loading, backend selection and start);
- the first ``client.embeddings.create`` (model load, first forward);
- the whole process, from its start to the first vector;

and, beside them, sentence-transformers doing the same in its own fresh process (import, load,
first ``encode``). Medians over the runs; the machine's load average is printed with them.
``importtime`` is ``-X importtime``'s cumulative time of the ``gllm`` package, ``import`` the
wall time of ``import gllm`` (``from sentence_transformers import SentenceTransformer`` for the peer).

    python bench/startup.py                      # cpu backend, 5 runs
    python bench/startup.py --backend numpy --runs 9
    python bench/startup.py --tree /tmp/old --tree .   # checkouts' gllm, gllm_core, plugins/*, interleaved
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import fetch_models  # noqa: E402

_GLLM = """
import json, sys, time
t0 = time.perf_counter()
import gllm
t1 = time.perf_counter()
client = gllm.Client(backend={backend!r})
t2 = time.perf_counter()
vector = client.embeddings.create(model={folder!r}, input="How long does the first vector take?").data[0].embedding
t3 = time.perf_counter()
print(json.dumps({{"vector_at": time.time(), "import_s": t1 - t0, "client_s": t2 - t1, "embed_s": t3 - t2,
                  "dims": len(vector), "jinja2_loaded": "jinja2" in sys.modules}}), flush=True)
"""

_PEER = """
import json, time
t0 = time.perf_counter()
from sentence_transformers import SentenceTransformer
t1 = time.perf_counter()
model = SentenceTransformer({folder!r}, device="cpu")
t2 = time.perf_counter()
vector = model.encode(["How long does the first vector take?"])[0]
t3 = time.perf_counter()
print(json.dumps({{"vector_at": time.time(), "import_s": t1 - t0, "client_s": t2 - t1, "embed_s": t3 - t2,
                  "dims": len(vector)}}), flush=True)
"""


def _env(tree: Path, cache: str, home: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, GLLM_HOME=home, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    paths = [str(tree)] + sorted(str(p) for p in (tree / "plugins").glob("*") if (p / "pyproject.toml").exists())
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("GLLM_BACKEND", None)
    return env


def _run(script: str, env: dict) -> dict:
    start = time.time()
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=tempfile.gettempdir(), capture_output=True,
                         text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"run failed:\n{run.stderr[-2000:]}")
    inner = json.loads(run.stdout.strip().splitlines()[-1])
    inner["start_to_vector_s"] = inner.pop("vector_at") - start
    return inner


def import_time_us(env: dict) -> int:
    """``python -X importtime -c "import gllm"``: the cumulative time of the ``gllm`` package."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", "import gllm"], env=env,
                         cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=120)
    for line in run.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "gllm":
            return int(parts[1])
    raise RuntimeError(f"no gllm line in -X importtime's output:\n{run.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tree", type=Path, action="append",
                    help="a checkout whose gllm/, gllm_core/ and plugins/* are measured (repeatable; default this one)")
    ap.add_argument("--no-peer", action="store_true", help="skip sentence-transformers")
    args = ap.parse_args(argv)
    trees = [t.resolve() for t in args.tree or [ROOT]]
    folder = fetch_models.model_path("all-minilm:l6")
    rows: dict[str, list[dict]] = {f"gllm {t}": [] for t in trees}
    imports: dict[str, list[int]] = {name: [] for name in rows}
    if not args.no_peer:
        rows["sentence-transformers"] = []
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="gllm-numba-cache-") as cache, \
            tempfile.TemporaryDirectory(prefix="gllm-home-") as home:
        envs = {f"gllm {t}": _env(t, cache, home) for t in trees}
        gllm_script = _GLLM.format(backend=args.backend, folder=folder)
        for env in envs.values():
            _run(gllm_script, env)  # fills the numba cache: the runs below measure a warm start
        for _ in range(args.runs):  # interleaved, so a noisy machine slows them alike
            for name, env in envs.items():
                imports[name].append(import_time_us(env))
                rows[name].append(_run(gllm_script, env))
            if not args.no_peer:
                rows["sentence-transformers"].append(_run(_PEER.format(folder=folder), envs[f"gllm {trees[0]}"]))
            loads.append(os.getloadavg()[0])
    print(f"backend {args.backend}, {args.runs} runs each, warm numba cache, 1-minute load average "
          f"{min(loads):.2f}..{max(loads):.2f} during the runs")
    print(f"{'median seconds':40} {'importtime':>10} {'import':>8} {'client/load':>12} {'first embed':>12} "
          f"{'start to vector':>16}  jinja2")
    for name, runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("import_s", "client_s", "embed_s",
                                                                   "start_to_vector_s")}
        importtime = f"{statistics.median(imports[name]) / 1e6:10.3f}" if name in imports else f"{'':10}"
        jinja = str(any(r.get("jinja2_loaded") for r in runs)) if name in imports else ""
        print(f"{name[-40:]:40} {importtime} {med['import_s']:8.3f} {med['client_s']:12.3f} {med['embed_s']:12.3f} "
              f"{med['start_to_vector_s']:16.3f}  {jinja}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
