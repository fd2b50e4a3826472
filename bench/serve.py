"""Serving benchmark: ``gllm serve`` with 1 and with N concurrent chat streams, driven over HTTP by
the official ``openai`` client, on the real Qwen2.5-Coder-0.5B-Instruct GGUF (Q4_K_M).

    python bench/serve.py                               # cpu backend, 8 streams, 32 tokens each
    python bench/serve.py --backend numpy --streams 4 --max-tokens 16
    python bench/serve.py --llama-python /tmp/llvenv/bin/python   # llama.cpp beside us (see below)

It starts ``gllm serve`` in a subprocess on a free loopback port, warms it up, then runs the same
greedy requests (``ignore_eos``, so every answer is exactly ``--max-tokens`` long) first one at a
time, then ``--streams`` at once. It prints:

- aggregate tokens/s: generated tokens / wall time of the run (prompts included), and the ratio N streams : 1;
- aggregate decode tokens/s while all streams decode: the tokens of every stream that come after
  the last stream's first token and up to the first stream's last, over that span;
- the decode phase per stream, from the inter-token times: each stream's (tokens - 1) / (last
  token - first token time), summed over the streams (prompt processing left out), and that ratio too;
- time to first token, inter-token latency and request latency, p50 and p99.

The peer, when ``--llama-python`` names an interpreter with llama-cpp-python (built from source,
as tools/record_llamacpp.py describes; never a gllm dependency), is llama.cpp decoding the same
GGUF and prompt greedily on the same number of threads, one stream (llama-cpp-python runs one
sequence per context). Requests go only to 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import fetch_models  # noqa: E402
MODEL = "qwen2.5-coder:0.5b"
TOPICS = ["reverses a string", "checks whether a number is prime", "merges two sorted lists",
          "counts the words in a file", "flattens a nested list", "parses an ISO date",
          "computes a moving average", "finds duplicate elements", "converts Celsius to Fahrenheit",
          "validates an email address", "transposes a matrix", "computes the Fibonacci numbers",
          "removes vowels from a string", "sums the digits of a number", "rotates a list by k",
          "finds the longest common prefix"]


def _messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Write a Python function that {TOPICS[i % len(TOPICS)]}."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Server:
    """``gllm serve`` in a subprocess, for the life of a ``with`` block."""

    def __init__(self, home: str, backend: str, streams: int, max_tokens: int, start_timeout: float):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, GLLM_HOME=home, HF_HUB_OFFLINE="1")
        env.pop("GLLM_API_KEY", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gllm", "serve", "--model", MODEL, "--backend", backend, "--port", str(self.port),
             "--max-concurrent-sequences", str(max(streams, 1)), "--max-tokens", str(max_tokens),
             "--log-level", "warning"], env=env)
        import httpx

        deadline = time.monotonic() + start_timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"gllm serve exited with status {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise SystemExit(f"gllm serve did not come up within {start_timeout} s")
            time.sleep(0.5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def one_stream(api, i: int, max_tokens: int) -> dict:
    """One greedy chat stream: when each chunk came, and how many tokens it made."""
    sent = time.perf_counter()
    times, tokens = [], 0
    for chunk in api.chat.completions.create(model=MODEL, messages=_messages(i), max_tokens=max_tokens, temperature=0,
                                             stream=True, stream_options={"include_usage": True},
                                             extra_body={"ignore_eos": True}):
        now = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        elif chunk.choices and (chunk.choices[0].delta.content or chunk.choices[0].finish_reason):
            times.append(now)
    return {"sent": sent, "times": times, "tokens": tokens, "done": time.perf_counter()}


def run(api, count: int, max_tokens: int, offset: int) -> dict:
    """``count`` streams at once; aggregate figures over all of them."""
    results: list[dict | None] = [None] * count
    errors: list[BaseException] = []

    def go(k):
        try:
            results[k] = one_stream(api, offset + k, max_tokens)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(k,)) for k in range(count)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"a stream failed: {errors[0]!r}")
    tokens = sum(r["tokens"] for r in results)
    ttft = [r["times"][0] - r["sent"] for r in results if r["times"]]
    itl = [b - a for r in results for a, b in zip(r["times"], r["times"][1:])]
    latency = [r["done"] - r["sent"] for r in results]
    decode = [(r["tokens"] - 1) / (r["times"][-1] - r["times"][0]) for r in results
              if len(r["times"]) > 1 and r["times"][-1] > r["times"][0]]
    timed = [r for r in results if len(r["times"]) > 1]
    # all streams decoding at once: from the last stream's first token to the first stream's last
    lo = max(r["times"][0] for r in timed) if timed else 0.0
    hi = min(r["times"][-1] for r in timed) if timed else 0.0
    steady = sum(lo < t <= hi for r in timed for t in r["times"])
    return {"streams": count, "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
            "decode_steady_tokens_per_s": steady / (hi - lo) if hi > lo else float("nan"),
            "decode_tokens_per_s_per_stream": statistics.mean(decode) if decode else float("nan"),
            "decode_tokens_per_s": sum(decode) if len(decode) == count else float("nan"),
            "ttft_p50_s": _percentile(ttft, 0.5), "ttft_p99_s": _percentile(ttft, 0.99),
            "itl_p50_s": _percentile(itl, 0.5), "itl_p99_s": _percentile(itl, 0.99),
            "latency_p50_s": _percentile(latency, 0.5), "latency_p99_s": _percentile(latency, 0.99)}


LLAMA_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
path, max_tokens, threads, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
llm = Llama(model_path=path, n_ctx=512, n_threads=threads, n_batch=512, verbose=False)
llm.create_chat_completion(messages=prompt, max_tokens=4, temperature=0)  # warm-up
start = time.perf_counter(); times = []
for chunk in llm.create_chat_completion(messages=prompt, max_tokens=max_tokens, temperature=0, stream=True,
                                        logit_bias={}, stop=[]):
    times.append(time.perf_counter())
n = len(times) - 1  # the first chunk carries the role only
print(json.dumps({"tokens": n, "wall_s": times[-1] - start, "ttft_s": times[1] - start,
                  "decode_tokens_per_s": (n - 1) / (times[-1] - times[1]) if n > 1 else None}))
"""


def llama_cpp(python: str, gguf: str, max_tokens: int, threads: int) -> dict | None:
    try:
        out = subprocess.run([python, "-c", LLAMA_SCRIPT, gguf, str(max_tokens), str(threads),
                              json.dumps(_messages(0))], capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"llama.cpp: not run ({exc})")
        return None
    if out.returncode != 0:
        print(f"llama.cpp: failed: {out.stderr.strip()[-400:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    """The benchmark; a temporary GLLM_HOME it made (a copy of the model, ~0.5 GB) is removed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--singles", type=int, default=2, help="single-stream runs (the mean is reported)")
    parser.add_argument("--home", default=None, help="GLLM_HOME with the model (default: a fresh temporary one)")
    parser.add_argument("--llama-python", default=None, help="an interpreter with llama-cpp-python, for the peer")
    parser.add_argument("--start-timeout", type=float, default=900.0)
    parser.add_argument("--json", dest="json_out", default=None, help="also write the figures to this file")
    parser.add_argument("--model-path", default=None, help="another model (folder or GGUF) instead of Qwen2.5-Coder, "
                        "to try the benchmark itself quickly")
    args = parser.parse_args(argv)
    global MODEL

    fetch = fetch_models
    gguf = args.model_path or fetch.model_path("qwen2.5-coder-0.5b")
    if args.model_path:
        MODEL = "bench-model"
    home = args.home or tempfile.mkdtemp(prefix="gllm-bench-serve-")
    try:
        return _bench(args, gguf, home)
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)


def _bench(args, gguf: str, home: str) -> int:
    import openai

    os.environ["GLLM_HOME"] = home
    from gllm_core.plugins import get_registry
    from gllm_core.store import ModelStore

    store = ModelStore(aliases=get_registry().aliases)
    if store.get(MODEL) is None:
        store.import_path(gguf, MODEL)

    print(f"# gllm serve, {MODEL}, backend {args.backend}, {args.max_tokens} tokens per answer, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.1f}")
    figures = {}
    with Server(home, args.backend, args.streams, args.max_tokens, args.start_timeout) as server:
        api = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=3600)
        run(api, 1, 4, 100)  # warm-up: first forward passes, kernels compiled
        run(api, min(args.streams, 2), 4, 200)
        print("warmed up", flush=True)
        singles = []
        for i in range(args.singles):
            singles.append(run(api, 1, args.max_tokens, i))
            print(f"single stream {i + 1}/{args.singles}: {singles[-1]['tokens_per_s']:.2f} tok/s", flush=True)
        single = {k: statistics.mean(s[k] for s in singles) for k in singles[0]}
        many = run(api, args.streams, args.max_tokens, 0)
    figures["gllm_1"] = single
    figures[f"gllm_{args.streams}"] = many
    ratio = many["tokens_per_s"] / single["tokens_per_s"]
    figures["ratio"] = ratio
    decode_ratio = many["decode_tokens_per_s"] / single["decode_tokens_per_s"]
    figures["decode_ratio"] = decode_ratio

    print(f"{'':24}{'streams':>8}{'tok/s':>9}{'dec/s/str':>10}{'TTFT p50':>10}{'p99':>8}"
          f"{'ITL p50':>9}{'p99':>8}{'lat p50':>9}{'p99':>8}")
    for name, r in (("gllm serve, 1 stream", single), (f"gllm serve, {args.streams} streams", many)):
        print(f"{name:24}{r['streams']:>8.0f}{r['tokens_per_s']:>9.2f}{r['decode_tokens_per_s_per_stream']:>10.2f}"
              f"{r['ttft_p50_s']:>10.2f}{r['ttft_p99_s']:>8.2f}{r['itl_p50_s']:>9.3f}{r['itl_p99_s']:>8.3f}"
              f"{r['latency_p50_s']:>9.2f}{r['latency_p99_s']:>8.2f}")
    if args.llama_python:
        peer = llama_cpp(args.llama_python, gguf, args.max_tokens, os.cpu_count() or 1)
        if peer:
            figures["llama_cpp_1"] = peer
            print(f"{'llama.cpp, 1 stream':24}{1:>8}{peer['tokens'] / peer['wall_s']:>9.2f}"
                  f"{peer['decode_tokens_per_s'] or float('nan'):>10.2f}{peer['ttft_s']:>10.2f}")
    steady_ratio = many["decode_steady_tokens_per_s"] / single["decode_steady_tokens_per_s"]
    figures["decode_steady_ratio"] = steady_ratio
    print(f"aggregate tokens/s over the wall time, prompts included, {args.streams} streams : 1 stream = {ratio:.2f}x")
    print(f"aggregate decode tokens/s (target >= 3x) while all {args.streams} streams decode (last first token to "
          f"first last token): {many['decode_steady_tokens_per_s']:.2f} : {single['decode_steady_tokens_per_s']:.2f}"
          f" tok/s = {steady_ratio:.2f}x")
    print(f"decode phase per stream, summed (inter-token times, prompts left out): {many['decode_tokens_per_s']:.2f} : "
          f"{single['decode_tokens_per_s']:.2f} tok/s = {decode_ratio:.2f}x; load {os.getloadavg()[0]:.1f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
