"""One device call's worth of OpenCL measurements on a GPU, each checked before it is timed:

  * host cost of a launch (pyopencl's argument setting, the driver's enqueue) and of a decode
    step of a 28-layer model with tiny widths (the host's share of a step: GPU work ~0), with the
    kernels called and with them replaced by no-ops (Python alone);
  * the matrix-unit GEMM variants (kernels/linear_mma.cl, kernels/linear_mma_cp.cl) at T=1024 on
    the Qwen2.5-7B shapes, both precisions, each checked against numpy on a 1000 x 3584 x 1000
    product first (a variant that fails prints FAILED and is not timed);
  * prefill attention at 1024 tokens: float32 kernel against the matrix-unit kernel ("fast"),
    the latter checked against numpy first;
  * (--parts q4k) the Q4_K one-row kernel with 4, 8 and 2 weight rows per warp, each checked
    against gguf-py's dequantisation first.

    python bench/gpu_sweep.py [--parts host,gemm,attention,q4k] [--variants cp128x128s3,...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu  # noqa: E402
from gpu import _time  # noqa: E402  (seconds per call after one warm-up, queue drained)


def log(*a):
    print(*a, flush=True)


def host_launch(backend):
    import pyopencl as cl

    src = ("__kernel void k(" + ",".join(f"__global float* a{i}" for i in range(8)) + ","
           + ",".join(f"int s{i}" for i in range(12)) + ") { if (get_global_id(0) == 0 && s0 < 0) a0[0] = 1; }")
    k = cl.Kernel(cl.Program(backend.rt.ctx, src).build(), "k")
    k.set_scalar_arg_dtypes([None] * 8 + [np.int32] * 12)
    bufs = [backend._alloc(1024) for _ in range(8)]
    q = backend.queue
    args = bufs + list(range(1, 13))

    def t(f, n=4000):
        f()
        q.finish()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        d = time.perf_counter() - t0
        q.finish()
        return d / n * 1e6
    full = t(lambda: k(q, (32,), (32,), *args))
    sa = t(lambda: k.set_args(*args))
    k.set_args(*args)
    enq = t(lambda: cl.enqueue_nd_range_kernel(q, k, (32,), (32,)))
    from gllm_backend_opencl.backend import _enqueue_function, _EventlessKernel

    ek = _EventlessKernel(k, "k", _enqueue_function())
    ev = t(lambda: ek(q, (32,), (32,), *args))
    log(f"host per launch (20 args): pyopencl call {full:.2f} us (set_args {sa:.2f} us, enqueue with its event "
        f"{enq:.2f} us); eventless call {ev:.2f} us")


def host_step(noop: bool, eventless: bool = True):
    """ms of host time per decode step: 28 layers of tiny widths (the GPU's part is ~nothing)."""
    from gllm_backend_opencl import backend as cb

    saved = cb._Runtime.kernel
    rt = next(iter(cb._Runtime._by_device.values()))
    saved_enqueue = rt.enqueue
    rt.kernels.clear()
    if not eventless:
        rt.enqueue = None
    if noop:
        class Noop:
            def __init__(self, k):
                self.k = k

            def __call__(self, *a, **kw):
                return None

            def __getattr__(self, a):
                return getattr(self.k, a)
        cb._Runtime.kernel = lambda rt, p, n, st: Noop(saved(rt, p, n, st))
    try:
        b = cb.OpenCLBackend()
        b._gemv_kernels.clear()
        cfg = dict(gpu.QWEN25_7B, hidden_size=128, intermediate_size=256, num_hidden_layers=28, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=512)
        model, _ = gpu.build_gllm(cfg, gpu.make_weights(cfg), b)
        cache = model.new_cache()
        model.forward([list(range(128))], [cache])
        for i in range(5):
            model.forward([[1]], [cache])
        b.queue.finish()
        best = 1e9
        for rep in range(3):
            t0 = time.perf_counter()
            for i in range(50):
                model.forward([[i + 2]], [cache])
            best = min(best, (time.perf_counter() - t0) / 50)
        cache.free()
        return best * 1e3
    finally:
        cb._Runtime.kernel = saved
        b._gemv_kernels.clear()
        rt.kernels.clear()
        rt.enqueue = saved_enqueue


def gemm(backend, variants):
    from gllm_core.weights import WeightMatrix
    from gllm_backend_opencl.backend import MMA_CP_VARIANTS, MMA_VARIANTS

    cfg = gpu.QWEN25_7B
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    nkv, hd = cfg["num_key_value_heads"], h // cfg["num_attention_heads"]
    rng = np.random.default_rng(0)
    shapes = {"qkv": (h + 2 * nkv * hd, h), "o": (h, h), "gate_up": (2 * f, h), "down": (h, f)}
    mats = {n: backend.prepare_matrix(WeightMatrix(n, (rng.standard_normal(s, dtype=np.float32) * 0.02)
                                                   .astype(np.float16), "f16", s)) for n, s in shapes.items()}
    x = {c: backend.upload(rng.standard_normal((1024, c)).astype(np.float32)) for c in (h, f)}
    # the check: 1000 x 3584 against 1000 rows of W (every tile edge: 1000 is no multiple of the tiles)
    xc = rng.standard_normal((1000, h)).astype(np.float32)
    wc = (rng.standard_normal((1000, h), dtype=np.float32) * 0.02).astype(np.float16)
    bc = rng.standard_normal(1000).astype(np.float32)
    ref = xc @ wc.astype(np.float32).T + bc
    refx16 = xc.astype(np.float16).astype(np.float32) @ wc.astype(np.float32).T + bc
    mc = backend.prepare_matrix(WeightMatrix("check", wc, "f16", wc.shape))
    bcd = backend.prepare_vector(__import__("gllm_core.weights", fromlist=["WeightVector"]).WeightVector("b", bc, "f32"))
    xcd = backend.upload(xc)
    log("\nGEMM at T=1024, TFLOP/s (check: max |err| / max |ref| on 1000x3584x1000 with bias)")
    per_layer = {n: 2 * 1024 * r * c for n, (r, c) in shapes.items()}
    best = {}
    for variant in variants:
        for prec in ("fast", "exact"):
            backend.precision, backend.mma_variant = prec, variant
            backend._mma_kernels.clear()
            try:
                got = backend.download(backend.linear(xcd, mc, bcd))
            except Exception as exc:  # noqa: BLE001 - a variant that cannot build or run is reported
                log(f"  {variant:14s} {prec:5s}: ERROR {str(exc)[:300]}")
                continue
            r = refx16 if prec == "fast" else ref
            err = float(np.max(np.abs(got - r)) / np.max(np.abs(r)))
            tol = 2e-3 if prec == "fast" else 1e-4
            status = backend.mma_status
            if not (err < tol) or status != "ok":
                log(f"  {variant:14s} {prec:5s}: FAILED check err {err:.2e} (tol {tol}) [{status}]")
                continue
            row, total = [], 0.0
            for name, m in mats.items():
                dt = _time(backend, lambda: backend.linear(x[m.cols], m), reps=10)
                row.append(f"{name} {per_layer[name] / dt / 1e12:6.1f}")
                total += dt
            log(f"  {variant:14s} {prec:5s}: " + "  ".join(row) + f"  | 28 layers {28 * total * 1e3:6.1f} ms"
                f"  err {err:.1e}")
            if total < best.get(prec, (1e9,))[0]:
                best[prec] = (total, variant)
    for prec, (t, v) in best.items():
        log(f"  best {prec}: {v} ({28 * t * 1e3:.1f} ms of GEMM per 1024-token prefill)")
    backend.precision, backend.mma_variant = "exact", None
    backend._mma_kernels.clear()
    return best


def attention(backend):
    cfg = gpu.QWEN25_7B
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["hidden_size"] // nh
    rng = np.random.default_rng(0)
    log(f"\nprefill attention 1024 tokens, causal, {nh}/{nkv} heads, d={hd}")
    q = rng.standard_normal((1024, nh, hd)).astype(np.float32)
    k = rng.standard_normal((1024, nkv, hd)).astype(np.float32)
    v = rng.standard_normal((1024, nkv, hd)).astype(np.float32)
    qd, kd, vd = backend.upload(q), backend.upload(k), backend.upload(v)
    cu = np.array([0, 1024], np.int32)
    out = {}
    for prec in ("exact", "fast"):
        backend.precision = prec
        y = backend.download(backend.attention(qd, kd, vd, cu, cu, hd ** -0.5, True))
        dt = _time(backend, lambda: backend.attention(qd, kd, vd, cu, cu, hd ** -0.5, True), reps=10)
        out[prec] = y
        log(f"  {prec:5s}: {dt * 1e3:7.3f} ms per layer, x28 = {28 * dt * 1e3:6.1f} ms"
            + (f"  [mma: {backend.attention_mma_status}]" if prec == "fast" else ""))
    err = float(np.max(np.abs(out["fast"] - out["exact"])))
    log(f"  fast vs exact (float32 kernel): max |diff| {err:.2e} (outputs are O(1)); "
        f"{'OK' if err < 2e-2 else 'FAILED'}")
    backend.precision = "exact"


def q4k(backend, rpts=(4, 8, 2)):
    """The Q4_K one-row kernel with several weight rows per warp: checked against numpy (gguf-py's
    dequantisation, through gllm_format_gguf, bit-exact to it), then timed on the model's shapes."""
    from gllm_core.weights import WeightMatrix
    from gllm_format_gguf.quants import QUANT_TYPES

    cfg = gpu.QWEN25_7B
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nkv, hd = cfg["num_key_value_heads"], h // cfg["num_attention_heads"]
    shapes = {"qkv": (h + 2 * nkv * hd, h), "o": (h, h), "gate_up": (2 * f, h), "down": (h, f), "head": (v, h)}
    qt = QUANT_TYPES["q4_k"]
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (301, h // 256 * 144), dtype=np.uint8)
    dd = (rng.uniform(0.5, 2, (301, h // 256, 2)) * 1e-3).astype(np.float16)
    data.reshape(301, h // 256, 144)[:, :, 0:4] = dd.view(np.uint8).reshape(301, h // 256, 4)
    dense = qt.dequantize(data.reshape(-1, 144)).reshape(301, h).astype(np.float64)
    xc = rng.standard_normal((1, h)).astype(np.float32)
    ref = xc.astype(np.float64) @ dense.T
    for rpt in rpts:
        backend.q4k_rows_per_warp = rpt
        m = backend.prepare_matrix(WeightMatrix("check", data, "q4_k", (301, h), qt))
        got = backend.download(backend.linear(backend.upload(xc), m))
        err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        log(f"\nQ4_K one-row kernel, {rpt} weight rows per warp: check err {err:.1e} "
            f"{'OK' if err < 1e-5 else 'FAILED'}")
        if err < 1e-5:
            gpu.bench_q4k_gemv(backend, cfg, shapes, rng)
    backend.q4k_rows_per_warp = 4


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="host,gemm,attention")
    ap.add_argument("--variants", default="")
    args = ap.parse_args(argv)
    from gllm_backend_opencl.backend import MMA_CP_VARIANTS, OpenCLBackend

    backend = OpenCLBackend()
    log(f"date {time.strftime('%Y-%m-%d %H:%M')}  device {backend.info.describe()}  local memory "
        f"{backend.rt.local_mem} B  load {os.getloadavg()}")
    parts = args.parts.split(",")
    if "host" in parts:
        host_launch(backend)
        real, plain, noop = host_step(False), host_step(False, False), host_step(True)
        log(f"decode step, 28 tiny layers: {real:.3f} ms eventless launches, {plain:.3f} ms pyopencl's launches, "
            f"{noop:.3f} ms Python alone (kernel calls made no-ops)")
    if "gemm" in parts:
        variants = args.variants.split(",") if args.variants else ["x16-4", "x16-4k64"] + list(MMA_CP_VARIANTS)
        gemm(backend, variants)
    if "attention" in parts:
        attention(backend)
    if "q4k" in parts:
        q4k(backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
