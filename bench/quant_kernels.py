"""ns per weight of the cpu backend's quantized linear kernels (gllm_backend_cpu.quant), per GGML
type, at T = 1, 2, 4, 8, 16 tokens, on a Qwen2.5-0.5B-sized layer (4864 x 896 and 896 x 4864).

    python bench/quant_kernels.py [--threads 2] [--isa avx2|vnni|generic] [--types q4_0,q4_k]

Each figure is the best of several timed calls (after warm-up); the load average is printed beside.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def weight(name, rows, cols, rng):
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf import quants as ref

    from gllm_core.weights import QuantType, WeightMatrix

    t = GGMLQuantizationType[name.upper()]
    block, size = GGML_QUANT_SIZES[t]
    if name.endswith("_k"):
        blocks = rng.integers(0, 256, (rows * cols // block, size), dtype=np.uint8)
        for off in {"q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208]}[name]:
            blocks[:, off:off + 2] = (rng.standard_normal(len(blocks)) * 0.002).astype(np.float16).view(np.uint8).reshape(-1, 2)
        blocks = blocks.reshape(rows, -1)
    else:
        blocks = ref.quantize((rng.standard_normal((rows, cols)) * 0.05).astype(np.float32), t)
    quant = QuantType(name, block, size, lambda b, t=t: ref.dequantize(b, t))
    return WeightMatrix(f"w.{name}", blocks, name, (rows, cols), quant)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isa", default=None)
    ap.add_argument("--types", default="q4_0,q4_1,q5_0,q8_0,q4_k,q5_k,q6_k")
    ap.add_argument("--tokens", default="1,2,4,8,16")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--packed-tokens", type=int, default=None,
                    help="tokens from which q4_0/q5_0/q8_0 take the 8-row packed kernels (default: quant.PACKED_TOKENS; "
                    "a large number: the per-row kernels only)")
    args = ap.parse_args()
    if args.isa:
        os.environ["GLLM_CPU_QUANT_ISA"] = args.isa
    import numba

    from gllm_backend_cpu import quant as Q

    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    tokens = [int(t) for t in args.tokens.split(",")]
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.2f}, isa {Q.native_isa()} "
          f"(0 generic, 1 avx2, 2 vnni), packed from T={args.packed_tokens or Q.PACKED_TOKENS}")
    print("type   shape        " + "".join(f"  T={t:<3} ns/w" for t in tokens))
    empty = np.zeros(0, np.float32)
    for name in args.types.split(","):
        for rows, cols in ((4864, 896), (896, 4864)):
            if cols % (256 if name.endswith("_k") else 32):
                continue
            w = weight(name, rows, cols, rng)
            k = Q.quant_linear_for(w)
            if args.packed_tokens is not None:
                k = Q.QuantLinear(w, packed_tokens=args.packed_tokens)
            line = f"{name:6} {rows}x{cols:<6}"
            for T in tokens:
                x = rng.standard_normal((T, cols)).astype(np.float32)
                k(x, None, 0, empty)
                best = 1e9
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    k(x, None, 0, empty)
                    best = min(best, time.perf_counter() - t0)
                line += f"  {best * 1e9 / (rows * cols):9.4f}"
            print(line, flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
