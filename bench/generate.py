"""Generation speed of gllm's cpu backend against llama.cpp on the real GGUF models, one run.

For each model (SmolLM2-135M Q4_1, Qwen2.5-Coder-0.5B Q4_K_M) and the same prompt ids, both
engines, at the same thread count, measure:

- prompt tokens/s: one forward pass over a fixed prompt (after a warm-up pass);
- decode tokens/s: greedy single-token steps after that prompt;

beside the memory-bandwidth floor for decoding: the bytes of weights one token reads divided by
the machine's measured copy bandwidth (the fastest decode any engine could reach). Then it
writes SmolLM2 with ``gllm quantize`` (q4_k, q8_0), runs the file in llama.cpp and in gllm, and
counts how many of llama.cpp's greedy tokens on it equal its tokens on the original file.

llama.cpp runs through llama-cpp-python built from source, in its own interpreter::

    python bench/generate.py --llama-python /tmp/llvenv/bin/python [--threads 2] [--record]

``--record`` appends the table to bench/RESULTS.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import fetch_models  # noqa: E402
MODELS = ("smollm2:135m", "qwen2.5-coder:0.5b")
PROMPT = ("The history of computing is a story of ever smaller and faster machines. " * 12).strip()
DECODE_TOKENS = 64
QUANTIZE_CHECKS = (("smollm2:135m", "q4_k"), ("smollm2:135m", "q8_0"))


def llama_worker(path: str, ids: list[int], threads: int) -> dict:
    """Runs under the interpreter that has llama_cpp."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_batch=512, n_threads=threads, n_threads_batch=threads,
                          logits_all=False, verbose=False)
    n_vocab = llm.n_vocab()
    llm.reset()
    llm.eval(ids)  # warm-up
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    prompt_s = time.perf_counter() - t0
    out = []
    t0 = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        token = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))
        out.append(token)
        llm.eval([token])
    decode_s = time.perf_counter() - t0
    return {"prompt_s": prompt_s, "decode_s": decode_s, "tokens": out, "version": llama_cpp.__version__}


def gllm_run(path: str, ids: list[int], threads: int) -> dict:
    import numpy as np

    from gllm_core.loader import load_model
    from gllm_core.plugins import get_registry
    from gllm_core.selection import create_backend

    registry = get_registry()
    model = load_model("bench", path, create_backend(registry, "cpu", threads=threads), registry)
    lm = model.model
    cache = lm.new_cache()
    logits = lm.forward([ids], [cache])  # warm-up: compiles and loads the kernels
    for _ in range(2):
        logits = lm.forward([[int(np.argmax(logits[0]))]], [cache])
    cache.free()
    cache = lm.new_cache()
    t0 = time.perf_counter()
    logits = lm.forward([ids], [cache])
    prompt_s = time.perf_counter() - t0
    out = []
    t0 = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        out.append(int(np.argmax(logits[0])))
        logits = lm.forward([[out[-1]]], [cache])
    decode_s = time.perf_counter() - t0
    weights = sum(int(w.data.nbytes) for w in (model.weights.get(n) for n in model.weights.names()))
    tied = "lm_head.weight" not in model.weights
    return {"prompt_s": prompt_s, "decode_s": decode_s, "tokens": out, "weight_bytes": weights,
            "tokenizer": model.tokenizer, "tied": tied}


def copy_bandwidth() -> float:
    """Bytes per second that numpy moves copying a 512 MB buffer (read + write), best of 5."""
    import numpy as np

    src = np.ones(64 * 1024 * 1024, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, load average {load:.1f} at start"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-python", default=sys.executable)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(llama_worker(args.worker[0], json.loads(args.worker[1]), args.threads)))
        return 0
    from gllm_format_gguf.source import open_gguf
    from gllm_format_gguf.tokenizer import build_tokenizer

    fetch = fetch_models
    where = machine()
    bandwidth = copy_bandwidth()
    rows = []
    version = "?"
    for alias in MODELS:
        path = fetch.model_path(alias)
        tok = build_tokenizer(open_gguf(path).metadata, path)
        ids = tok.encode_prompt(PROMPT)
        ours = gllm_run(path, ids, args.threads)
        cmd = [args.llama_python, __file__, "--threads", str(args.threads), "--worker", path, json.dumps(ids)]
        theirs = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        version = theirs["version"]
        same = sum(1 for a, b in zip(ours["tokens"], theirs["tokens"]) if a == b)
        floor = bandwidth / ours["weight_bytes"]
        rows.append((alias, len(ids), len(ids) / ours["prompt_s"], len(ids) / theirs["prompt_s"],
                     DECODE_TOKENS / ours["decode_s"], DECODE_TOKENS / theirs["decode_s"], floor,
                     ours["weight_bytes"], same))
    header = (f"| model | prompt | prompt tok/s gllm | llama.cpp | ratio | decode tok/s gllm | llama.cpp | ratio "
              f"| bandwidth floor tok/s | weights MB | same greedy tokens |")
    lines = [header, "|" + "---|" * 11]
    for alias, n, pg, pl, dg, dl, floor, nbytes, same in rows:
        lines.append(f"| {alias} | {n} | {pg:.1f} | {pl:.1f} | {pg / pl:.2f} | {dg:.1f} | {dl:.1f} | {dg / dl:.2f} "
                     f"| {floor:.0f} | {nbytes / 1e6:.0f} | {same}/{DECODE_TOKENS} |")
    # gllm quantize: the file it writes runs in llama.cpp, and greedy tokens stay near the original's
    qlines = ["| model | gllm quantize --type | file MB | llama.cpp decode tok/s on it | gllm decode tok/s on it "
              "| llama.cpp tokens equal to its run of the original file (of 64) |", "|" + "---|" * 6]
    import tempfile

    from gllm_format_gguf.convert import quantize_model

    with tempfile.TemporaryDirectory() as tmp:
        for alias, qtype in QUANTIZE_CHECKS:
            path = fetch.model_path(alias)
            out = os.path.join(tmp, f"{alias.replace(':', '-')}-{qtype}.gguf")
            quantize_model(path, out, qtype)
            ids = build_tokenizer(open_gguf(path).metadata, path).encode_prompt(PROMPT)
            cmd = [args.llama_python, __file__, "--threads", str(args.threads), "--worker"]
            original = json.loads(subprocess.run(cmd + [path, json.dumps(ids)], check=True, capture_output=True,
                                                 text=True).stdout.strip().splitlines()[-1])
            theirs = json.loads(subprocess.run(cmd + [out, json.dumps(ids)], check=True, capture_output=True,
                                               text=True).stdout.strip().splitlines()[-1])
            ours = gllm_run(out, ids, args.threads)
            same = 0
            for a_tok, b_tok in zip(original["tokens"], theirs["tokens"]):
                if a_tok != b_tok:
                    break
                same += 1
            qlines.append(f"| {alias} | {qtype} | {os.path.getsize(out) / 1e6:.0f} | "
                          f"{DECODE_TOKENS / theirs['decode_s']:.1f} | {DECODE_TOKENS / ours['decode_s']:.1f} | "
                          f"{same} first, {sum(x == y for x, y in zip(original['tokens'], theirs['tokens']))} in all |")
    table = "\n".join(lines) + "\n\n" + "\n".join(qlines)
    print(f"{where}; {args.threads} threads; copy bandwidth {bandwidth / 1e9:.1f} GB/s; llama-cpp-python {version}")
    print(table)
    if args.record:
        stamp = datetime.date.today().isoformat()
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(f"\n## Generation: gllm cpu vs llama.cpp, GGUF models ({stamp})\n\n"
                    f"`python bench/generate.py --llama-python … --threads {args.threads}` on {where}; "
                    f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write, one thread); llama-cpp-python "
                    f"{version} built from source (GGML_NATIVE). Prompt of the ids shown, then "
                    f"{DECODE_TOKENS} greedy tokens. The floor is the decode rate at which reading the "
                    f"weights once per token takes all of the measured bandwidth.\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
