"""GPU benchmark of the OpenCL backend: a Qwen2.5-7B-shaped decoder with random f16 weights.

Measures, on one GPU and in one run:
  * copy bandwidth (device-to-device copy, bytes read + written per second), OpenCL and PyTorch;
  * gllm (OpenCL backend): decode tokens/s at batch 1 and 8, prefill tokens/s for a 1024-token
    prompt; achieved weight bandwidth at batch 1 = weight bytes read per token x tokens/s;
  * PyTorch + transformers (Qwen2ForCausalLM, f16, sdpa, eager) on the same shapes, same weights;
  * a numerical check: last-token logits of gllm against transformers on one prompt.

    python bench/gpu.py                 # the full model (needs ~35 GB of GPU memory)
    python bench/gpu.py --kernels       # also time the kernels one by one (GEMV variants, GEMM, attention)
    python bench/gpu.py --tiny          # a small model: a dry run anywhere (PoCL and CPU torch too)

Random weights are views into one random pool, so building the model costs seconds, not minutes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import numpy as np

QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
    "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hidden_act": "silu",
    "use_sliding_window": False, "sliding_window": 131072, "max_window_layers": 28,
    "torch_dtype": "float16", "bos_token_id": 151643, "eos_token_id": 151643,
}
TINY = dict(QWEN25_7B, hidden_size=256, intermediate_size=640, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1000)


def log(*a):
    print(*a, flush=True)


# -- weights -------------------------------------------------------------------------------------

def make_weights(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """HF-named f16 arrays (f32 for norms and biases): slices of one random pool at random offsets."""
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = h // nh
    rng = np.random.default_rng(seed)
    pool_n = v * h + (1 << 20)
    pool = (rng.standard_normal(pool_n, dtype=np.float32) * 0.02).astype(np.float16)

    def mat(rows, cols):
        n = rows * cols
        off = int(rng.integers(0, pool_n - n + 1))
        return pool[off:off + n].reshape(rows, cols)

    out = {"model.embed_tokens.weight": mat(v, h), "lm_head.weight": mat(v, h),
           "model.norm.weight": np.ones(h, np.float32)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = np.ones(h, np.float32)
        out[p + "post_attention_layernorm.weight"] = np.ones(h, np.float32)
        for name, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
            out[p + f"self_attn.{name}_proj.weight"] = mat(rows, h)
            out[p + f"self_attn.{name}_proj.bias"] = (rng.standard_normal(rows) * 0.02).astype(np.float32)
        out[p + "self_attn.o_proj.weight"] = mat(h, nh * hd)
        out[p + "mlp.gate_proj.weight"] = mat(f, h)
        out[p + "mlp.up_proj.weight"] = mat(f, h)
        out[p + "mlp.down_proj.weight"] = mat(h, f)
    return out


def weight_bytes_per_token(cfg: dict) -> int:
    """Bytes of f16 weights one decode step reads: every linear layer and the output head."""
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    per_layer = h * h * 2 + 2 * kv * h + 3 * f * h
    return 2 * (cfg["num_hidden_layers"] * per_layer + v * h)


# -- gllm ----------------------------------------------------------------------------------------

def build_gllm(cfg: dict, weights: dict, backend):
    from gllm_core.config import ModelConfig
    from gllm_core.plugins import get_registry
    from gllm_core.weights import DictWeightSource, WeightMatrix, WeightVector

    wm = {}
    for name, a in weights.items():
        wm[name] = (WeightMatrix(name, a, "f16", a.shape) if a.ndim == 2 else WeightVector(name, a, "f32"))
    config = ModelConfig.from_dict(dict(cfg), path="<bench>")
    source = DictWeightSource(wm, path="<bench>")
    arch = get_registry().architecture_for(hf_architectures=config.architectures, model_type=config.model_type)
    if arch is not None:
        return arch.build(config, source, backend), f"architecture plugin {arch.name!r}"
    from gllm_core.decoder import DecoderOptions, build_decoder  # no Qwen plugin installed: the generic decoder

    return build_decoder(config, source, backend, DecoderOptions(qkv_bias=True)), "gllm_core.decoder (qkv_bias)"


WAIT = [0.0]


def time_downloads(backend):
    download = backend.download

    def timed(x):
        t0 = time.perf_counter()
        out = download(x)
        WAIT[0] += time.perf_counter() - t0
        return out

    backend.download = timed


def bench_gllm(model, cfg, args) -> dict:
    rng = np.random.default_rng(1)
    v = cfg["vocab_size"]
    res = {}
    # prefill: a prompt of args.prompt tokens into a fresh cache
    prompt = rng.integers(0, v, size=args.prompt).tolist()
    for rep in range(args.reps + 1):
        cache = model.new_cache()
        t0 = time.perf_counter()
        model.forward([prompt], [cache])
        dt = time.perf_counter() - t0
        cache.free()
        if rep:
            res.setdefault("prefill_s", []).append(dt)
    res["prefill_tok_s"] = args.prompt / min(res["prefill_s"])
    backend = model.backend
    if getattr(backend, "precision", None) == "exact":  # the same prefill with x rounded to f16 once
        backend.precision = "fast"
        best = 1e9
        for rep in range(args.reps + 1):
            cache = model.new_cache()
            t0 = time.perf_counter()
            model.forward([prompt], [cache])
            if rep:
                best = min(best, time.perf_counter() - t0)
            cache.free()
        res["prefill_fast_tok_s"] = args.prompt / best
        backend.precision = "exact"
    for batch in (1, 8):
        caches = [model.new_cache() for _ in range(batch)]
        logits = model.forward([rng.integers(0, v, size=args.context).tolist() for _ in range(batch)], caches)
        tokens = np.asarray(logits).argmax(-1)
        for step in range(args.steps + 3):
            if step == 3:
                t0 = time.perf_counter()
                WAIT[0] = 0.0
            logits = model.forward([[int(t)] for t in tokens], caches)
            tokens = np.asarray(logits).argmax(-1)
        dt = time.perf_counter() - t0
        res[f"decode_b{batch}_tok_s"] = batch * args.steps / dt
        # time the host spent waiting for the device in downloads: near 0 means the host is the bottleneck
        res[f"decode_b{batch}_wait_share"] = WAIT[0] / dt
        for c in caches:
            c.free()
    return res


def profile_decode(model, cfg):
    import cProfile
    import io
    import pstats

    cache = model.new_cache()
    model.forward([list(range(128))], [cache])
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for i in range(16):
        model.forward([[i + 1]], [cache])
    prof.disable()
    log(f"\nprofiled decode: {(time.perf_counter() - t0) / 16 * 1e3:.2f} ms/step under the profiler")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
    log("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))
    cache.free()


TRACE: list = []


def install_trace():
    """Record every kernel launch's event (the queue keeps timestamps with GLLM_OPENCL_PROFILE=1)."""
    os.environ["GLLM_OPENCL_PROFILE"] = "1"
    from gllm_backend_opencl import backend as cl_backend

    make = cl_backend._Runtime.kernel

    class Traced:
        def __init__(self, k, name):
            self.k, self.name = k, name

        def __call__(self, *args, **kwargs):
            evt = self.k(*args, **kwargs)
            TRACE.append((self.name, evt))
            return evt

        def __getattr__(self, attr):
            return getattr(self.k, attr)

    def kernel(rt, program, name, scalar_types):
        return Traced(make(rt, program, name, scalar_types), name)

    cl_backend._Runtime.kernel = kernel


def trace_decode(model, steps=4):
    """GPU time per decode step by kernel, from the launches' event timestamps."""
    cache = model.new_cache()
    model.forward([list(range(128))], [cache])
    model.forward([[1]], [cache])
    TRACE.clear()
    for i in range(steps):
        model.forward([[i + 2]], [cache])
    per = {}
    for name, evt in TRACE:
        dt = (evt.profile.end - evt.profile.start) * 1e-9
        n, t = per.get(name, (0, 0.0))
        per[name] = (n + 1, t + dt)
    busy = sum(t for _, t in per.values())
    span = (TRACE[-1][1].profile.end - TRACE[0][1].profile.start) * 1e-9
    log(f"\ntrace of {steps} decode steps: kernels busy {busy / steps * 1e3:.2f} ms/step, first start to last end "
        f"{span / steps * 1e3:.2f} ms/step")
    for name, (n, t) in sorted(per.items(), key=lambda kv: -kv[1][1]):
        log(f"  {name:18s} {n // steps:4d} launches/step  {t / steps * 1e3:7.3f} ms/step  {t / n * 1e6:7.1f} us each")
    cache.free()


def gllm_logits(model, prompt) -> np.ndarray:
    cache = model.new_cache()
    out = np.asarray(model.forward([prompt], [cache]))[0]
    cache.free()
    return out


# -- transformers --------------------------------------------------------------------------------

def build_torch(cfg: dict, weights: dict, device: str):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")})
    config._attn_implementation = "sdpa"
    dtype = torch.float16 if device == "cuda" else torch.float32
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, a in weights.items():
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(a)).to(dtype))
    return model


def bench_torch(model, cfg, args, device) -> dict:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(1)
    v = cfg["vocab_size"]
    res = {}
    with torch.inference_mode():
        ids = torch.randint(0, v, (1, args.prompt), generator=g).to(device)
        for rep in range(args.reps + 1):
            sync()
            t0 = time.perf_counter()
            model(input_ids=ids, use_cache=True, logits_to_keep=1)
            sync()
            if rep:
                res.setdefault("prefill_s", []).append(time.perf_counter() - t0)
        res["prefill_tok_s"] = args.prompt / min(res["prefill_s"])
        for batch in (1, 8):
            ids = torch.randint(0, v, (batch, args.context), generator=g).to(device)
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            pkv, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            for step in range(args.steps + 3):
                if step == 3:
                    sync()
                    t0 = time.perf_counter()
                out = model(input_ids=tok, past_key_values=pkv, use_cache=True)
                pkv, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                tok.cpu()  # sampling needs the token on the host, as in gllm
            sync()
            res[f"decode_b{batch}_tok_s"] = batch * args.steps / (time.perf_counter() - t0)
            del pkv, out
    return res


def torch_logits(model, prompt, device) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt], device=device), logits_to_keep=1)
    return out.logits[0, -1].float().cpu().numpy()


# -- bandwidth and kernels -----------------------------------------------------------------------

def copy_bandwidth_cl(backend, nbytes: int = 2 << 30) -> float:
    cl, q = backend.cl, backend.queue
    a = cl.Buffer(backend.rt.ctx, cl.mem_flags.READ_WRITE, nbytes)
    b = cl.Buffer(backend.rt.ctx, cl.mem_flags.READ_WRITE, nbytes)
    cl.enqueue_copy(q, b, a)
    q.finish()
    best = 1e9
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(5):
            cl.enqueue_copy(q, b, a)
        q.finish()
        best = min(best, (time.perf_counter() - t0) / 5)
    return 2 * nbytes / best


def copy_bandwidth_torch(nbytes: int = 2 << 30) -> float | None:
    try:
        import torch
        if not torch.cuda.is_available():
            return None
    except ImportError:
        return None
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    best = 1e9
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(5):
            b.copy_(a)
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / 5)
    del a, b
    torch.cuda.empty_cache()
    return 2 * nbytes / best


def _time(backend, fn, reps=10):
    fn()
    backend.queue.finish()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    backend.queue.finish()
    return (time.perf_counter() - t0) / reps


def bench_kernels(backend, cfg, parts):
    from gllm_core.weights import WeightMatrix

    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = h // nh
    rng = np.random.default_rng(0)
    shapes = {"qkv": (h + 2 * nkv * hd, h), "o": (h, h), "gate_up": (2 * f, h), "down": (h, f), "head": (v, h)}
    mats = {}
    for name, (r, c) in shapes.items():
        data = (rng.standard_normal((r, c), dtype=np.float32) * 0.02).astype(np.float16)
        mats[name] = backend.prepare_matrix(WeightMatrix(name, data, "f16", (r, c)))
    if "gemv" in parts:
        bench_gemv(backend, cfg, mats, rng)
    if "gemm" in parts:
        bench_gemm(backend, mats, rng, h, f)
    if "attention" in parts:
        bench_attention(backend, rng, nh, nkv, hd)


def bench_gemv(backend, cfg, mats, rng):
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    log("\nGEMV (f16 weights), GB/s of weights read; variants: lanes x warps, rows per group, unroll, loads")
    t1 = [(32, 4, 1, 4, False), (32, 4, 1, 2, False), (32, 4, 2, 4, False), (64, 4, 1, 4, False),
          (32, 8, 1, 4, False), (32, 4, 1, 8, False), (32, 4, 1, 4, True)]
    t8 = [(32, 4, 2, 1, False), (32, 4, 2, 2, False), (32, 4, 4, 1, False), (32, 4, 1, 2, False),
          (32, 4, 1, 4, False), (64, 4, 2, 1, False)]
    saved = (backend.gemv_lanes, backend.gemv_warps, dict(backend.gemv_rpt), dict(backend.gemv_unroll),
             backend.gemv_vload)
    for t, variants in ((1, t1), (8, t8)):
        x = {c: backend.upload(rng.standard_normal((t, c)).astype(np.float32)) for c in (h, f)}
        for lanes, warps, rpt, unroll, vload in variants:
            backend.gemv_lanes, backend.gemv_warps, backend.gemv_vload = lanes, warps, vload
            backend.gemv_rpt = {k: rpt for k in (1, 2, 4, 8)}
            backend.gemv_unroll = {k: unroll for k in (1, 2, 4, 8)}
            backend._gemv_kernels.clear()
            for m in mats.values():
                m.launch.clear()
            row = []
            total_b, total_t = 0, 0.0
            for name, m in mats.items():
                dt = _time(backend, lambda: backend.linear(x[m.cols], m), reps=20)
                nb = m.rows * m.cols * 2
                total_b += nb * (cfg["num_hidden_layers"] if name != "head" else 1)
                total_t += dt * (cfg["num_hidden_layers"] if name != "head" else 1)
                row.append(f"{name} {nb / dt / 1e9:5.0f}")
            log(f"  T={t} {lanes}x{warps} rpt{rpt} u{unroll} {'vload' if vload else 'bits '}: " + " ".join(row)
                + f" | model {total_b / total_t / 1e9:5.0f} GB/s")
    (backend.gemv_lanes, backend.gemv_warps, backend.gemv_rpt, backend.gemv_unroll, backend.gemv_vload) = saved
    backend._gemv_kernels.clear()
    for m in mats.values():
        m.launch.clear()


def bench_gemm(backend, mats, rng, h, f):
    log("\nGEMM, TFLOP/s at T=1024 (mma: NVIDIA matrix units via inline PTX)")
    x = {c: backend.upload(rng.standard_normal((1024, c)).astype(np.float32)) for c in (h, f)}
    from gllm_backend_opencl.backend import MMA_VARIANTS

    for variant in ("f32x",) + tuple(MMA_VARIANTS):
        for prec in ("exact", "fast"):
            backend.precision, backend.mma_variant = prec, variant
            row = []
            for name in ("qkv", "o", "gate_up", "down"):
                m = mats[name]
                dt = _time(backend, lambda: backend.linear(x[m.cols], m), reps=5)
                row.append(f"{name} {2 * 1024 * m.rows * m.cols / dt / 1e12:6.1f}")
            log(f"  mma {variant:5s} {prec:5s}: " + "  ".join(row) + f"   [{backend.mma_status}]")
    backend.precision, backend.mma_variant = "exact", None
    os.environ["GLLM_OPENCL_MMA"] = "0"
    backend._mma_kernels.clear()
    m = mats["gate_up"]
    dt = _time(backend, lambda: backend.linear(x[m.cols], m), reps=3)
    log(f"  f32 tiles : gate_up {2 * 1024 * m.rows * m.cols / dt / 1e12:6.1f}")
    del os.environ["GLLM_OPENCL_MMA"]
    backend._mma_kernels.clear()


def bench_attention(backend, rng, nh, nkv, hd):
    log("\nattention (causal, GQA %d/%d, d=%d)" % (nh, nkv, hd))
    for threads in (256, 128):
        backend.attention_threads = threads
        backend._attention_kernels.clear()
        backend._plans.clear()
        q = backend.upload(rng.standard_normal((1024, nh, hd)).astype(np.float32))
        k = backend.upload(rng.standard_normal((1024, nkv, hd)).astype(np.float32))
        cu = np.array([0, 1024], np.int32)
        dt = _time(backend, lambda: backend.attention(q, k, k, cu, cu, hd ** -0.5, True), reps=5)
        log(f"  prefill 1024, {threads} work-items: {dt * 1e3:.3f} ms")
    for lq, lk in ((1024, 1024), (1, 1024), (1, 4096)):
        for batch in (1, 8) if lq == 1 else (1,):
            q = backend.upload(rng.standard_normal((batch * lq, nh, hd)).astype(np.float32))
            k = backend.upload(rng.standard_normal((batch * lk, nkv, hd)).astype(np.float32))
            cu_q = np.arange(batch + 1, dtype=np.int32) * lq
            cu_k = np.arange(batch + 1, dtype=np.int32) * lk
            dt = _time(backend, lambda: backend.attention(q, k, k, cu_q, cu_k, hd ** -0.5, True), reps=5)
            flops = 4 * batch * lq * lk * nh * hd / (2 if lq == lk else 1)
            kv_bytes = 2 * batch * lk * nkv * hd * 4
            log(f"  q{lq} k{lk} b{batch}: {dt * 1e3:8.3f} ms  {flops / dt / 1e12:6.2f} TFLOP/s  "
                f"{kv_bytes / dt / 1e9:7.0f} GB/s of K/V")


# -- main ----------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a small model (dry run)")
    ap.add_argument("--kernels", nargs="?", const="gemv,gemm,attention", default="",
                    help="time single kernels too (comma list of gemv, gemm, attention)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch + transformers")
    ap.add_argument("--precision", default="exact", choices=("exact", "fast"))
    ap.add_argument("--prompt", type=int, default=1024, help="prefill prompt length")
    ap.add_argument("--context", type=int, default=128, help="tokens in the cache before decoding")
    ap.add_argument("--steps", type=int, default=64, help="decode steps timed")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--profile", action="store_true", help="profile the host side of 16 decode steps")
    ap.add_argument("--trace", action="store_true", help="GPU time of each kernel in decode steps (then stop)")
    ap.add_argument("--variant", default=None, help="matrix-unit GEMM variant (x16-2, x16-4, f32x)")
    args = ap.parse_args(argv)
    cfg = TINY if args.tiny else QWEN25_7B

    if args.trace:
        install_trace()
    from gllm_backend_opencl.backend import OpenCLBackend

    backend = OpenCLBackend(precision=args.precision)
    if args.variant:
        backend.mma_variant = args.variant
    log(f"date {time.strftime('%Y-%m-%d %H:%M')}  device {backend.info.describe()}")
    results = {"device": backend.info.describe(), "date": time.strftime("%Y-%m-%d"), "config": "tiny" if args.tiny
               else "Qwen2.5-7B shape", "precision": args.precision}
    results["copy_cl"] = copy_bandwidth_cl(backend, (64 << 20) if args.tiny else (2 << 30))
    results["copy_torch"] = None if args.no_torch else copy_bandwidth_torch()
    log(f"copy bandwidth (read + write): OpenCL {results['copy_cl'] / 1e9:.0f} GB/s"
        + (f", PyTorch {results['copy_torch'] / 1e9:.0f} GB/s" if results["copy_torch"] else ""))
    if args.kernels:
        bench_kernels(backend, cfg, args.kernels.split(","))

    t0 = time.perf_counter()
    weights = make_weights(cfg)
    log(f"\nrandom weights: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    time_downloads(backend)
    model, how = build_gllm(cfg, weights, backend)
    backend.queue.finish()
    log(f"gllm model built with {how} in {time.perf_counter() - t0:.1f} s")
    if args.trace:
        trace_decode(model)
        return 0
    ours = bench_gllm(model, cfg, args)
    results["gllm"] = ours
    log(f"gllm: {json.dumps({k: round(v, 3) for k, v in ours.items() if not isinstance(v, list)})}  "
        f"(mma: {backend.mma_status})")
    if args.profile:
        profile_decode(model, cfg)
    check_prompt = np.random.default_rng(7).integers(0, cfg["vocab_size"], size=64).tolist()
    ours_logits = gllm_logits(model, check_prompt)

    theirs = None
    if not args.no_torch:
        del model
        gc.collect()
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        t0 = time.perf_counter()
        tmodel = build_torch(cfg, weights, device)
        log(f"transformers model built in {time.perf_counter() - t0:.1f} s on {device}")
        theirs = bench_torch(tmodel, cfg, args, device)
        results["transformers"] = theirs
        log(f"transformers: {json.dumps({k: round(v, 1) for k, v in theirs.items() if not isinstance(v, list)})}")
        ref = torch_logits(tmodel, check_prompt, device)
        err = float(np.max(np.abs(ours_logits - ref)) / np.max(np.abs(ref)))
        results["logits_check"] = {"max_abs_diff_over_max": err, "argmax_equal": bool(ours_logits.argmax() == ref.argmax())}
        log(f"logits vs transformers: max |diff| / max |logit| = {err:.2e}, same argmax: "
            f"{results['logits_check']['argmax_equal']}")

    wb = weight_bytes_per_token(cfg)
    copy = results["copy_cl"]
    log(f"\n{'':22s}{'gllm opencl':>14s}{'transformers':>14s}{'ratio':>8s}")
    for key, label in (("decode_b1_tok_s", "decode b1 tok/s"), ("decode_b8_tok_s", "decode b8 tok/s"),
                       ("prefill_tok_s", f"prefill {args.prompt} tok/s"),
                       ("prefill_fast_tok_s", f"  precision fast")):
        if key not in ours:
            continue
        t = theirs[key.replace("_fast", "")] if theirs else float("nan")
        log(f"{label:22s}{ours[key]:14.1f}{t:14.1f}{ours[key] / t:8.2f}")
    achieved = wb * ours["decode_b1_tok_s"]
    results["achieved_bw_b1"] = achieved
    log(f"decode b1: {wb / 1e9:.2f} GB of weights per token -> {achieved / 1e9:.0f} GB/s = "
        f"{100 * achieved / copy:.0f}% of the copy bandwidth ({copy / 1e9:.0f} GB/s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    sys.exit(main())
