"""Embedding throughput: gllm (cpu and numpy backends) against sentence-transformers and onnxruntime.

The real all-MiniLM-L6-v2 (from its PyPI package, see tools/fetch_models.py) embeds 512
deterministic sentences of 8-120 words, batch 32, max length 256, with the same thread count
for every engine. Each engine runs in its own worker process (so their thread pools, BLAS and
OpenMP runtimes never meet) and the rounds are interleaved, engine after engine, so a noisy
machine slows them alike; the table gives the best and the median round.

    python bench/embed.py                       # 2 threads, every engine, writes bench/results/
    python bench/embed.py --threads 1 --rounds 5
    python bench/embed.py --engines gllm-cpu,onnxruntime --no-latency

Peers (benchmark extras, never dependencies of gllm): ``pip install -e 'plugins/backend_cpu[bench]'``
(sentence-transformers, torch, onnx, onnxruntime, matplotlib). onnxruntime runs the model that
this script exports with ``torch.onnx.export`` (cached in ~/.cache/gllm-bench/), as exported
("onnxruntime") and after onnxruntime's own BERT fusion pass ("onnxruntime-fused"); both with
their default spinning thread pool and with spinning off, since gllm's pool sleeps when idle.
Batches are sorted by length for every engine (sentence-transformers and gllm do that
themselves; the onnxruntime worker does it the same way), and padded per batch where the engine
needs padding.

Also measured: the worst cosine of every engine's vectors against sentence-transformers', the
peak resident memory of each worker, and the time a fresh process takes from start to the first
vector with gllm's cpu backend, with a cold and with a warm numba cache.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import fetch_models  # noqa: E402
RESULTS = ROOT / "bench" / "results"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gllm-bench"
ENGINES = ("gllm-cpu", "gllm-numpy", "sentence-transformers", "onnxruntime", "onnxruntime-nospin",
           "onnxruntime-fused", "onnxruntime-fused-nospin")
REFERENCE = "sentence-transformers"

_WORDS = """time person year way day thing man world life hand part child eye woman place work week case
point government company number group problem fact be have do say get make go know take see come
think look want give use find tell ask seem feel try leave call good new first last long great
little own other old right big high different small large next early young important few public
bad same able to of in for on with at by from up about into over after the and a that it not he as
you this but his they her she or an will my one all would there their river mountain computer
network language model vector search query document embedding sentence meaning similar cluster
index memory garden kitchen window morning evening coffee music library station market bridge
forest ocean winter summer silver quickly slowly because although während café naïve 2024 3.14
""".split()


def corpus(n: int = 512, seed: int = 1234, shortest: int = 8, longest: int = 120) -> list[str]:
    """n sentences of shortest..longest words, the same on every machine and Python version."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(shortest, longest))]
        text = " ".join(words)
        out.append(text[0].upper() + text[1:] + ".")
    return out


def model_folder() -> str:
    return str(fetch_models.model_path("all-minilm:l6"))


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("GLLM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"  # every engine tokenizes on its calling thread
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.pop("GLLM_BACKEND", None)
    return env


# -- the engines (each runs inside its own worker process) ----------------------------------------

class GllmEngine:
    def __init__(self, folder: str, backend: str, threads: int, batch: int, max_length: int):
        import gllm
        from gllm_core import embedding

        embedding.embed_sequences.__defaults__ = (batch,)  # the SDK batches 32 by default as well
        self.client = gllm.Client(backend=backend)
        self.folder = folder
        loaded = self.client.load(folder)
        if loaded.tokenizer.max_length != max_length:
            raise SystemExit(f"gllm reads max length {loaded.tokenizer.max_length}, expected {max_length}")

    def embed(self, texts):
        import numpy as np

        out = self.client.embeddings.create(model=self.folder, input=texts)
        return np.array([d.embedding for d in out.data], dtype=np.float32)


class SentenceTransformersEngine:
    def __init__(self, folder: str, threads: int, batch: int, max_length: int):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(folder, device="cpu")
        self.model.max_seq_length = max_length
        self.batch = batch

    def embed(self, texts):
        return self.model.encode(texts, batch_size=self.batch, convert_to_numpy=True, show_progress_bar=False)


class OnnxRuntimeEngine:
    def __init__(self, folder: str, onnx_path: str, threads: int, batch: int, max_length: int, spinning: bool):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.batch = batch

    def embed(self, texts):
        import numpy as np

        ids = [e.ids for e in self.tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # as sentence-transformers does
        out = np.empty((len(ids), 384), dtype=np.float32)
        for start in range(0, len(order), self.batch):
            chunk = order[start:start + self.batch]
            width = max(len(ids[i]) for i in chunk)
            input_ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                input_ids[row, :len(ids[i])] = ids[i]
                mask[row, :len(ids[i])] = 1
            hidden = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask,
                                             "token_type_ids": np.zeros_like(input_ids)})[0]
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            out[chunk] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


def export_onnx(folder: str, fused: bool) -> str:
    """The model as ONNX (torch.onnx.export), optionally through onnxruntime's BERT fusion; cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    plain = CACHE / "all-minilm-l6-v2.onnx"
    target = CACHE / ("all-minilm-l6-v2.fused.onnx" if fused else plain.name)
    if target.exists():
        return str(target)
    if not plain.exists():
        code = f"""
import torch, warnings
from transformers import AutoModel
warnings.filterwarnings("ignore")
model = AutoModel.from_pretrained({folder!r}, attn_implementation="eager").eval()
class Hidden(torch.nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
ids = torch.ones((2, 16), dtype=torch.long)
names = ["input_ids", "attention_mask", "token_type_ids"]
with torch.no_grad():
    torch.onnx.export(Hidden(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), {str(plain)!r},
                      input_names=names, output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                      dynamic_axes={{n: {{0: "batch", 1: "tokens"}} for n in names + ["last_hidden_state"]}})
"""
        subprocess.run([sys.executable, "-c", code], check=True, env=thread_env(os.cpu_count() or 1))
    if fused:  # in a child too: the orchestrator stays small and its workers' memory their own
        code = f"""
from onnxruntime.transformers import optimizer
model = optimizer.optimize_model({str(plain)!r}, model_type="bert", num_heads=12, hidden_size=384, opt_level=0)
model.save_model_to_file({str(target)!r})
"""
        subprocess.run([sys.executable, "-c", code], check=True, env=thread_env(os.cpu_count() or 1))
    return str(target)


def make_engine(name: str, folder: str, threads: int, batch: int, max_length: int):
    if name == "gllm-cpu":
        return GllmEngine(folder, "cpu", threads, batch, max_length)
    if name == "gllm-numpy":
        return GllmEngine(folder, "numpy", threads, batch, max_length)
    if name == "sentence-transformers":
        return SentenceTransformersEngine(folder, threads, batch, max_length)
    if name.startswith("onnxruntime"):
        path = export_onnx(folder, fused="fused" in name)
        return OnnxRuntimeEngine(folder, path, threads, batch, max_length, spinning=not name.endswith("nospin"))
    raise SystemExit(f"unknown engine {name!r}; engines: {', '.join(ENGINES)}")


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: on Linux that one
    keeps the parent's peak across fork and exec, so every worker would report the orchestrator's."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(name: str, folder: str, threads: int, batch: int, max_length: int, sentences: int) -> None:
    """Load one engine, then answer the orchestrator's commands (one JSON line each way)."""
    import numpy as np

    texts = corpus(sentences)
    t0 = time.perf_counter()
    engine = make_engine(name, folder, threads, batch, max_length)
    engine.embed(texts[:64])  # warm-up: first calls, kernel loads, allocator
    reply = {"ready": True, "load_s": time.perf_counter() - t0}
    print(json.dumps(reply), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["do"] == "run":
            t, c = time.perf_counter(), time.process_time()
            vectors = engine.embed(texts)
            reply = {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c}
            if cmd.get("save"):
                np.save(cmd["save"], np.asarray(vectors, dtype=np.float32))
        elif cmd["do"] == "quit":
            reply = {"peak_rss_mb": peak_rss_mb()}
        else:
            reply = {"error": f"unknown command {cmd!r}"}
        print(json.dumps(reply), flush=True)
        if cmd["do"] == "quit":
            return


class Worker:
    def __init__(self, name: str, args, folder: str):
        self.name = name
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--model", folder,
               "--threads", str(args.threads), "--batch", str(args.batch), "--max-length", str(args.max_length),
               "--sentences", str(args.sentences)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=thread_env(args.threads), cwd=ROOT)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited with status {self.proc.wait()}")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()


# -- first-call latency ----------------------------------------------------------------------------

_FIRST_CALL = """
import json, time
t0 = time.perf_counter()
import gllm
t1 = time.perf_counter()
client = gllm.Client(backend="cpu")
vector = client.embeddings.create(model={folder!r}, input="How long does the first vector take?").data[0].embedding
t2 = time.perf_counter()
print(json.dumps({{"vector_at": time.time(), "import_s": t1 - t0, "client_and_embed_s": t2 - t1, "dims": len(vector)}}),
      flush=True)
"""


def first_call_latency(folder: str, threads: int) -> dict:
    """A fresh interpreter, from its start to the first vector: with an empty numba cache (every
    kernel compiles) and again with the cache that run left (warm). The interpreter's exit after
    the vector is reported apart."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="gllm-numba-cache-") as cache, \
            tempfile.TemporaryDirectory(prefix="gllm-home-") as home:
        env = thread_env(threads)
        env["NUMBA_CACHE_DIR"] = cache
        env["GLLM_HOME"] = home
        for label in ("cold", "warm"):
            start = time.time()
            run = subprocess.run([sys.executable, "-c", _FIRST_CALL.format(folder=folder)], env=env, cwd=ROOT,
                                 capture_output=True, text=True)
            end = time.time()
            if run.returncode != 0:
                raise RuntimeError(f"first-call run failed:\n{run.stderr[-2000:]}")
            inner = json.loads(run.stdout.strip().splitlines()[-1])
            results[label] = {"start_to_vector_s": inner["vector_at"] - start, "exit_s": end - inner["vector_at"],
                              "import_s": inner["import_s"], "client_and_embed_s": inner["client_and_embed_s"]}
    return results


# -- reporting --------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = open("/proc/cpuinfo").read()
        flags = "AVX-512" if " avx512f" in text else ("AVX2" if " avx2" in text else "")
    except OSError:
        pass
    return {"cpu": cpu, "isa": flags, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for dist in ("numpy", "numba", "onnxruntime", "torch", "sentence-transformers", "transformers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def write_report(summary: dict, out_dir: Path) -> tuple[Path, Path | None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary["engines"]
    ort_best = max((r["best"] for n, r in rows.items() if n.startswith("onnxruntime")), default=None)
    lines = [
        f"Embedding throughput, all-MiniLM-L6-v2: {summary['sentences']} sentences of 8-120 words "
        f"({summary['tokens']} tokens), batch {summary['batch']}, max length {summary['max_length']}, "
        f"**{summary['threads']} threads** for every engine; best / median of {summary['rounds']} interleaved rounds.",
        f"{summary['date']} · {summary['machine']['cpu']} ({summary['machine']['isa']}, "
        f"{summary['machine']['cores']} cores) · load average before/after "
        f"{summary['load_before']} / {summary['load_after']} · `python bench/embed.py --threads {summary['threads']}`",
        "",
        "| engine | sentences/s (best) | median | × best onnxruntime | worst cosine vs sentence-transformers | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["best"]):
        ratio = f"{r['best'] / ort_best:.2f}×" if ort_best else "–"
        cos = "reference" if name == REFERENCE else (f"{r['worst_cosine']:.7f}" if r.get("worst_cosine") is not None else "–")
        lines.append(f"| {name} | {r['best']:.1f} | {r['median']:.1f} | {ratio} | {cos} | {r['peak_rss_mb']:.0f} |")
    lat = summary.get("first_call")
    if lat:
        lines += ["", "First vector from a fresh process (gllm cpu backend, `python -c`, start to vector): "
                  f"cold numba cache **{lat['cold']['start_to_vector_s']:.2f} s**, "
                  f"warm **{lat['warm']['start_to_vector_s']:.2f} s** "
                  f"(of which `import gllm` {lat['warm']['import_s']:.2f} s; the interpreter's exit afterwards "
                  f"{lat['warm']['exit_s']:.2f} s more)."]
    md_path = out_dir / "embed.md"
    md_path.write_text("\n".join(lines) + "\n")
    (out_dir / "embed.json").write_text(json.dumps(summary, indent=2) + "\n")
    png = None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = sorted(rows, key=lambda n: rows[n]["best"])
        values = [rows[n]["best"] for n in names]
        colors = ["#d62728" if n.startswith("gllm") else "#7f7f7f" for n in names]
        fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 1.2))
        bars = ax.barh(names, values, color=colors)
        for bar, value in zip(bars, values):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.1f}", va="center", fontsize=9)
        ax.set_xlabel(f"sentences / s (all-MiniLM-L6-v2, {summary['threads']} threads, higher is better)")
        ax.set_xlim(0, max(values) * 1.15)
        ax.set_title(f"{summary['machine']['cpu']}, {summary['date']}", fontsize=9)
        fig.tight_layout()
        png = out_dir / "embed.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
    return md_path, png


README_START = "<!-- bench/embed.py: start -->"
README_END = "<!-- bench/embed.py: end -->"


def update_readme(table: str) -> None:
    """Replace what lies between the markers in README.md (nothing else is touched)."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md has no {README_START} ... {README_END} block to update")
    readme.write_text(text[:start + len(README_START)] + "\n" + table.rstrip() + "\n" + text[end:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--no-latency", action="store_true", help="skip the first-call latency runs")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--readme", action="store_true",
                    help="also copy the table into README.md's Speed section (between its embed-bench markers)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.model, args.threads, args.batch, args.max_length, args.sentences)
        return 0

    import numpy as np

    folder = model_folder()
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    for name in names:
        if name not in ENGINES:
            ap.error(f"unknown engine {name!r}; engines: {', '.join(ENGINES)}")
    for name in names:  # exports happen here, not inside a timed worker
        if name.startswith("onnxruntime"):
            export_onnx(folder, fused="fused" in name)
    load_before = tuple(round(x, 2) for x in os.getloadavg())
    workers = {}
    for name in names:
        print(f"starting {name} ...", file=sys.stderr, flush=True)
        workers[name] = Worker(name, args, folder)
    times = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="gllm-bench-") as tmp:
        for r in range(args.rounds):
            for name, w in workers.items():
                save = os.path.join(tmp, f"{name}.npy") if r == 0 else None
                reply = w.ask(do="run", save=save)
                times[name].append(reply["seconds"])
                print(f"round {r + 1}: {name:26s} {args.sentences / reply['seconds']:7.1f} sentences/s", file=sys.stderr,
                      flush=True)
        vectors = {name: np.load(os.path.join(tmp, f"{name}.npy")) for name in names}
    peaks = {name: w.ask(do="quit")["peak_rss_mb"] for name, w in workers.items()}
    load_after = tuple(round(x, 2) for x in os.getloadavg())

    ref = vectors.get(REFERENCE)
    engines = {}
    for name in names:
        rates = [args.sentences / s for s in times[name]]
        row = {"best": max(rates), "median": statistics.median(rates), "rounds": rates, "peak_rss_mb": peaks[name],
               "worst_cosine": None}
        if ref is not None and name != REFERENCE:
            v = vectors[name]
            cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
            row["worst_cosine"] = float(cos.min())
        engines[name] = row

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(args.max_length)
    tokens = sum(len(e.ids) for e in tok.encode_batch(corpus(args.sentences)))
    summary = {"date": datetime.date.today().isoformat(), "machine": machine(), "versions": versions(),
               "threads": args.threads, "sentences": args.sentences, "tokens": tokens, "batch": args.batch,
               "max_length": args.max_length, "rounds": args.rounds, "engines": engines,
               "load_before": load_before, "load_after": load_after}
    if not args.no_latency and "gllm-cpu" in names:
        print("first-call latency (fresh processes, cold then warm numba cache) ...", file=sys.stderr, flush=True)
        summary["first_call"] = first_call_latency(folder, args.threads)
    md_path, png = write_report(summary, args.out)
    if args.readme:
        update_readme(md_path.read_text())
    print(md_path.read_text())
    print(f"wrote {md_path}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
