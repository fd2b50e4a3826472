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
TINY = dict(QWEN25_7B, hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1000)


def log(*a):
    print(*a, flush=True)


# -- weights -------------------------------------------------------------------------------------

def make_weights(cfg: dict, seed: int = 0, q4k: bool = False):
    """HF-named f16 arrays (f32 for norms and biases): slices of one random pool at random offsets.

    With ``q4k`` the pool is random Q4_K blocks (scales picked so weights have a spread near 0.02)
    and the f16 arrays are its dequantised values (gllm_format_gguf's numpy dequantiser, bit-exact
    to gguf-py's), rounded to f16: returns (f16 arrays, Q4_K WeightMatrix objects at the same
    offsets), so the Q4_K model and the f16 models compute the same function up to that rounding."""
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = h // nh
    rng = np.random.default_rng(seed)
    pool_n = v * h + (1 << 20)
    qmats: dict = {}
    if q4k:
        from gllm_core.weights import WeightMatrix
        from gllm_format_gguf.quants import QUANT_TYPES

        qt = QUANT_TYPES["q4_k"]
        nblk = pool_n // 256
        blocks = rng.integers(0, 256, (nblk, 144), dtype=np.uint8)
        # w = d * sc * q - dmin * m with q in 0..15, sc and m in 0..63: d ~ 1.2e-4 gives a spread
        # near 0.02; dmin = 7.5 d centres the blocks
        d = (rng.uniform(0.8, 1.2, nblk) * 1.2e-4).astype(np.float16)
        blocks[:, 0:2] = d.view(np.uint8).reshape(nblk, 2)
        blocks[:, 2:4] = (d.astype(np.float32) * 7.5).astype(np.float16).view(np.uint8).reshape(nblk, 2)
        pool = np.empty(nblk * 256, np.float16)
        step = 1 << 16
        for i in range(0, nblk, step):
            pool[i * 256:(i + step) * 256] = qt.dequantize(blocks[i:i + step]).reshape(-1)
        pool_n = nblk * 256
    else:
        pool = (rng.standard_normal(pool_n, dtype=np.float32) * 0.02).astype(np.float16)

    def mat(name, rows, cols):
        n = rows * cols
        if q4k:  # whole blocks: the Q4_K matrix and its f16 twin start at the same block
            b0 = int(rng.integers(0, (pool_n - n) // 256 + 1))
            qmats[name] = WeightMatrix(name, blocks[b0:b0 + n // 256].reshape(rows, cols // 256 * 144), "q4_k",
                                       (rows, cols), qt)
            return pool[b0 * 256:b0 * 256 + n].reshape(rows, cols)
        off = int(rng.integers(0, pool_n - n + 1))
        return pool[off:off + n].reshape(rows, cols)

    out = {"model.embed_tokens.weight": mat("model.embed_tokens.weight", v, h),
           "lm_head.weight": mat("lm_head.weight", v, h), "model.norm.weight": np.ones(h, np.float32)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = np.ones(h, np.float32)
        out[p + "post_attention_layernorm.weight"] = np.ones(h, np.float32)
        for name, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
            out[p + f"self_attn.{name}_proj.weight"] = mat(p + f"self_attn.{name}_proj.weight", rows, h)
            out[p + f"self_attn.{name}_proj.bias"] = (rng.standard_normal(rows) * 0.02).astype(np.float32)
        for name, rows, cols in (("self_attn.o_proj", h, nh * hd), ("mlp.gate_proj", f, h), ("mlp.up_proj", f, h),
                                 ("mlp.down_proj", h, f)):
            out[p + name + ".weight"] = mat(p + name + ".weight", rows, cols)
    return (out, qmats) if q4k else out


def stored_bytes_per_token(weights: dict) -> int:
    """Bytes of stored weights one decode step reads: every matrix but the token embedding."""
    return sum(int(w.nbytes) for name, w in weights.items() if name != "model.embed_tokens.weight"
               and getattr(w, "ndim", 2) == 2)


def weight_bytes_per_token(cfg: dict) -> int:
    """Bytes of f16 weights one decode step reads: every linear layer and the output head."""
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    per_layer = h * h * 2 + 2 * kv * h + 3 * f * h
    return 2 * (cfg["num_hidden_layers"] * per_layer + v * h)


# -- gllm ----------------------------------------------------------------------------------------

def build_gllm(cfg: dict, weights: dict, backend, quant: dict | None = None):
    """The model on ``backend``; matrices named in ``quant`` (prepared WeightMatrix objects, Q4_K)
    replace their f16 arrays."""
    from gllm_core.config import ModelConfig
    from gllm_core.plugins import get_registry
    from gllm_core.weights import DictWeightSource, WeightMatrix, WeightVector

    wm = {}
    for name, a in weights.items():
        if quant and name in quant:
            wm[name] = quant[name]
            continue
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


def bench_gllm(model, cfg, args, reps: int | None = None, fast: bool = True) -> dict:
    rng = np.random.default_rng(1)
    v = cfg["vocab_size"]
    res = {}
    reps = args.reps if reps is None else reps
    # prefill: a prompt of args.prompt tokens into a fresh cache
    prompt = rng.integers(0, v, size=args.prompt).tolist()
    for rep in range(reps + 1):
        cache = model.new_cache()
        t0 = time.perf_counter()
        model.forward([prompt], [cache])
        dt = time.perf_counter() - t0
        cache.free()
        if rep:
            res.setdefault("prefill_s", []).append(dt)
    res["prefill_tok_s"] = args.prompt / min(res["prefill_s"])
    backend = model.backend
    if fast and getattr(backend, "precision", None) == "exact":  # the same prefill with x rounded to f16 once
        backend.precision = "fast"
        best = 1e9
        for rep in range(reps + 1):
            cache = model.new_cache()
            t0 = time.perf_counter()
            model.forward([prompt], [cache])
            if rep:
                best = min(best, time.perf_counter() - t0)
            cache.free()
        res["prefill_fast_tok_s"] = args.prompt / best
        backend.precision = "exact"
    for batch in (1, 8):
        for rep in range(args.decode_reps):  # fresh caches each time: the same context length
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
            rate = batch * args.steps / dt
            res.setdefault(f"decode_b{batch}_runs", []).append(round(rate, 2))
            if rate >= res.get(f"decode_b{batch}_tok_s", 0.0):
                res[f"decode_b{batch}_tok_s"] = rate
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
            TRACE.append((self.name, evt, args[1] if len(args) > 1 else None))
            return evt

        def __getattr__(self, attr):
            return getattr(self.k, attr)

    def kernel(rt, program, name, scalar_types):
        return Traced(make(rt, program, name, scalar_types), name)

    cl_backend._Runtime.kernel = kernel


def _trace_summary(what: str, steps: int, by_shape: bool = False):
    per = {}
    for name, evt, gs in TRACE:
        dt = (evt.profile.end - evt.profile.start) * 1e-9
        key = f"{name} {tuple(gs)}" if by_shape and gs is not None else name
        n, t = per.get(key, (0, 0.0))
        per[key] = (n + 1, t + dt)
    busy = sum(t for _, t in per.values())
    span = (TRACE[-1][1].profile.end - TRACE[0][1].profile.start) * 1e-9
    log(f"\ntrace of {what}: kernels busy {busy / steps * 1e3:.2f} ms/step, first start to last end "
        f"{span / steps * 1e3:.2f} ms/step, {len(TRACE) // steps} launches/step")
    for name, (n, t) in sorted(per.items(), key=lambda kv: -kv[1][1])[:24]:
        log(f"  {name:34s} {n / steps:6.1f} launches/step  {t / steps * 1e3:8.3f} ms/step  {t / n * 1e6:8.1f} us each")


def trace_decode(model, steps=4):
    """GPU time per decode step by kernel, from the launches' event timestamps."""
    cache = model.new_cache()
    model.forward([list(range(128))], [cache])
    model.forward([[1]], [cache])
    TRACE.clear()
    for i in range(steps):
        model.forward([[i + 2]], [cache])
    _trace_summary(f"{steps} decode steps (batch 1, ~130-token context)", steps)
    cache.free()


def trace_prefill(model, n: int):
    """GPU time of one n-token prefill by kernel and launch shape."""
    prompt = list(range(1, n + 1))
    for rep in range(2):
        cache = model.new_cache()
        TRACE.clear()
        model.forward([prompt], [cache])
        cache.free()
    _trace_summary(f"a {n}-token prefill", 1, by_shape=True)


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
    for name, (r, c) in shapes.items() if {"gemv", "gemm"} & set(parts) else ():
        data = (rng.standard_normal((r, c), dtype=np.float32) * 0.02).astype(np.float16)
        mats[name] = backend.prepare_matrix(WeightMatrix(name, data, "f16", (r, c)))
    if "gemv" in parts:
        bench_gemv(backend, cfg, mats, rng)
    if "q4k" in parts:
        bench_q4k_gemv(backend, cfg, shapes, rng)
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
             backend.gemv_vload, backend.gemv_shape1)
    backend.gemv_shape1 = None
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
    (backend.gemv_lanes, backend.gemv_warps, backend.gemv_rpt, backend.gemv_unroll, backend.gemv_vload,
     backend.gemv_shape1) = saved
    backend._gemv_kernels.clear()
    for m in mats.values():
        m.launch.clear()


def bench_q4k_gemv(backend, cfg, shapes, rng):
    """Q4_K matrix-vector kernels on the model's shapes: GB/s of blocks read, wide-load kernel
    (default for 1 and 2 rows) against the type-generic one."""
    from gllm_core.weights import WeightMatrix
    from gllm_format_gguf.quants import QUANT_TYPES

    qt = QUANT_TYPES["q4_k"]
    log("\nQ4_K GEMV, GB/s of blocks read (wide: 16-byte quant loads; generic: 8 weights per lane)")
    mats = {}
    for name, (r, c) in shapes.items():
        data = rng.integers(0, 256, (r, c // 256 * 144), dtype=np.uint8)
        d = np.full((r, c // 256), 1e-4, np.float16).view(np.uint8).reshape(r, c // 256, 2)
        data.reshape(r, c // 256, 144)[:, :, 0:2] = d
        data.reshape(r, c // 256, 144)[:, :, 2:4] = d
        mats[name] = backend.prepare_matrix(WeightMatrix(name, data, "q4_k", (r, c), qt))
    for t in (1, 2):
        x = {c: backend.upload(rng.standard_normal((t, c)).astype(np.float32)) for c in {c for _, c in shapes.values()}}
        for kind in ("wide", "generic"):
            row, total_b, total_t = [], 0, 0.0
            for name, m in mats.items():
                m.launch.clear()
                k, rpt = (m.quant.gemv if kind == "wide" else m.quant.generic)[t]
                groups = -(-m.rows // (m.quant.warps * rpt))
                m.launch[t] = (k, (groups * m.quant.lanes, m.quant.warps), (m.quant.lanes, m.quant.warps))
                dt = _time(backend, lambda: backend.linear(x[m.cols], m), reps=20)
                nb = m.rows * m.cols // 256 * 144
                n = cfg["num_hidden_layers"] if name != "head" else 1
                total_b, total_t = total_b + nb * n, total_t + dt * n
                row.append(f"{name} {nb / dt / 1e9:5.0f}")
                m.launch.clear()
            log(f"  T={t} {kind + (' (=generic)' if kind == 'wide' and t > 1 else ''):7s}: " + " ".join(row) + f" | model {total_b / total_t / 1e9:5.0f} GB/s")


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
    backend.attention_threads = 128
    backend._attention_kernels.clear()
    backend._plans.clear()
    saved = backend.attention_bk, backend.attention_split_blocks
    for lq, lk in ((1024, 1024), (1, 130), (1, 1024), (1, 4096)):
        for batch in (1, 8) if lq == 1 else (1,):
            q = backend.upload(rng.standard_normal((batch * lq, nh, hd)).astype(np.float32))
            k = backend.upload(rng.standard_normal((batch * lk, nkv, hd)).astype(np.float32))
            cu_q = np.arange(batch + 1, dtype=np.int32) * lq
            cu_k = np.arange(batch + 1, dtype=np.int32) * lk
            row = []
            for bk, sb in ((None, 2), (None, 1), (16, 1)) if lq == 1 else ((None, 1),):
                backend.attention_bk, backend.attention_split_blocks = bk, sb
                dt = _time(backend, lambda: backend.attention(q, k, k, cu_q, cu_k, hd ** -0.5, True), reps=20)
                flops = 4 * batch * lq * lk * nh * hd / (2 if lq == lk else 1)
                kv_bytes = 2 * batch * lk * nkv * hd * 4
                row.append(f"bk {bk or 'auto'} split>={sb}: {dt * 1e6:8.1f} us {flops / dt / 1e12:5.2f} TFLOP/s "
                           f"{kv_bytes / dt / 1e9:5.0f} GB/s")
            log(f"  q{lq} k{lk} b{batch}: " + " | ".join(row))
    backend.attention_bk, backend.attention_split_blocks = saved


def forget_launches(backend):
    from gllm_backend_opencl.backend import DeviceMatrix

    backend._plans.clear()
    backend._gemv_kernels.clear()
    for o in gc.get_objects():
        if isinstance(o, DeviceMatrix):
            o.launch.clear()


def apply_setting(backend, item: str):
    """Set backend attributes from "attr=value[+attr=value...]" (gemv_u1=2: U=2 for one row of x);
    returns a function that restores them."""
    undo = []
    for part in item.split("+"):
        attr, value = part.split("=")
        if attr.startswith("gemv_u"):
            nt = int(attr[6:])
            old_u = dict(backend.gemv_unroll)
            backend.gemv_unroll[nt] = int(value)
            undo.append(("gemv_unroll", old_u))
        else:
            old = getattr(backend, attr)
            undo.append((attr, old))
            setattr(backend, attr, None if value == "None" else type(old)(int(value)) if isinstance(old, (bool, int))
                    else int(value))
    forget_launches(backend)

    def restore():
        for attr, old in reversed(undo):
            setattr(backend, attr, old)
        forget_launches(backend)
    return restore


# -- main ----------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a small model (dry run)")
    ap.add_argument("--kernels", nargs="?", const="gemv,q4k,gemm,attention", default="",
                    help="time single kernels too (comma list of gemv, q4k, gemm, attention)")
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
    ap.add_argument("--no-q4k", action="store_true", help="skip the Q4_K model (f16 weights from random blocks "
                    "otherwise, so both compute the same function)")
    ap.add_argument("--decode-reps", type=int, default=2, help="decode runs per batch size (best kept)")
    ap.add_argument("--ab", default="", help="backend settings to compare on decode at batch 1, each alone "
                    "(comma list of attr=value, e.g. fuse_norm=0,attention_split_blocks=2)")
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
    qmats = None
    if args.no_q4k:
        weights = make_weights(cfg)
    else:
        weights, qmats = make_weights(cfg, q4k=True)
    log(f"\nrandom weights{'' if args.no_q4k else ' (Q4_K blocks, f16 = their dequantised values)'}: "
        f"{time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    time_downloads(backend)
    model, how = build_gllm(cfg, weights, backend)
    backend.queue.finish()
    log(f"gllm model built with {how} in {time.perf_counter() - t0:.1f} s")
    if args.trace:
        trace_decode(model)
        for item in filter(None, args.ab.split(",")):  # GPU time of each variant (host speed aside)
            restore = apply_setting(backend, item)
            log(f"\nwith {item}:")
            trace_decode(model)
            restore()
        trace_prefill(model, args.prompt)
        if qmats:
            del model
            gc.collect()
            qmodel, _ = build_gllm(cfg, weights, backend, qmats)
            log("\nQ4_K model:")
            trace_decode(qmodel)
        return 0
    ours = bench_gllm(model, cfg, args)
    results["gllm"] = ours
    log(f"gllm: {json.dumps({k: round(v, 3) for k, v in ours.items() if not isinstance(v, list)})}  "
        f"(mma: {backend.mma_status}; prefill attention on the matrix units: {backend.attention_mma_status})")
    # the matrix-unit kernels check themselves against the host at first use; on NVIDIA a failed
    # check (the backend then falls back to slower kernels) fails this run
    failed = [f"{what}: {st}" for what, st in (("GEMM", backend.mma_status),
                                              ("attention", backend.attention_mma_status))
              if backend.rt.nv_compute is not None and backend.rt.nv_compute >= (8, 0) and st != "ok"]
    for f in failed:
        log(f"FAILED matrix-unit self-check, {f}")
    for item in filter(None, args.ab.split(",")):
        restore = apply_setting(backend, item)
        a = argparse.Namespace(**vars(args))
        a.prompt, a.reps = 16, 1
        r = bench_gllm(model, cfg, a, fast=False)
        restore()
        ours[f"decode_b1_{item}"] = r["decode_b1_tok_s"]
        log(f"  with {item}: decode b1 {r['decode_b1_tok_s']:.1f} tok/s {r['decode_b1_runs']}, "
            f"b8 {r['decode_b8_tok_s']:.1f}  (default: {ours['decode_b1_tok_s']:.1f}, {ours['decode_b8_tok_s']:.1f})")
    if args.profile:
        profile_decode(model, cfg)
    check_prompt = np.random.default_rng(7).integers(0, cfg["vocab_size"], size=64).tolist()
    ours_logits = gllm_logits(model, check_prompt)
    qres = None
    if qmats:
        del model
        gc.collect()
        t0 = time.perf_counter()
        model, _ = build_gllm(cfg, weights, backend, qmats)
        backend.queue.finish()
        log(f"gllm Q4_K model built in {time.perf_counter() - t0:.1f} s")
        qres = bench_gllm(model, cfg, args, reps=1, fast=False)
        results["gllm_q4k"] = qres
        log(f"gllm Q4_K: {json.dumps({k: round(v, 3) for k, v in qres.items() if not isinstance(v, list)})}")
        q_logits = gllm_logits(model, check_prompt)
        err = float(np.max(np.abs(q_logits - ours_logits)) / np.max(np.abs(ours_logits)))
        results["q4k_check"] = {"max_abs_diff_over_max": err, "argmax_equal": bool(q_logits.argmax() == ours_logits.argmax())}
        log(f"Q4_K logits vs the f16 model on the dequantised weights: max |diff| / max |logit| = {err:.2e}, "
            f"same argmax: {results['q4k_check']['argmax_equal']}")

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
    if qres:
        for key, label in (("decode_b1_tok_s", "Q4_K decode b1"), ("decode_b8_tok_s", "Q4_K decode b8"),
                           ("prefill_tok_s", f"Q4_K prefill {args.prompt}")):
            t = theirs[key] if theirs else float("nan")
            log(f"{label:22s}{qres[key]:14.1f}{t:14.1f}{qres[key] / t:8.2f}")
    achieved = wb * ours["decode_b1_tok_s"]
    results["achieved_bw_b1"] = achieved
    log(f"decode b1 f16 : {wb / 1e9:.2f} GB of weights per token -> {achieved / 1e9:.0f} GB/s = "
        f"{100 * achieved / copy:.1f}% of the copy bandwidth ({copy / 1e9:.0f} GB/s); runs {ours['decode_b1_runs']}")
    if qres:
        qb = stored_bytes_per_token(qmats)
        qa = qb * qres["decode_b1_tok_s"]
        results["achieved_bw_b1_q4k"] = qa
        log(f"decode b1 Q4_K: {qb / 1e9:.2f} GB of weights per token -> {qa / 1e9:.0f} GB/s = "
            f"{100 * qa / copy:.1f}% of the copy bandwidth; runs {qres['decode_b1_runs']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
