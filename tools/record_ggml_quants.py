"""Record what ggml's own quantisers make of fixed inputs, as a committed fixture for the tests.

Runs under a Python that has llama-cpp-python built from source (see tools/record_llamacpp.py):
it loads that build's ``libggml-base`` and calls ``ggml_quantize_chunk`` (no importance matrix,
the reference quantisers ``llama-quantize`` uses) on seeded random rows, for every type gllm can
write. Writes ``plugins/format_gguf/tests/fixtures/ggml_quants.npz``: ``input`` float32 rows
and ``<type>`` uint8 blocks, plus ``version`` (the llama-cpp-python version).

    /tmp/llvenv/bin/python tools/record_ggml_quants.py
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "plugins" / "format_gguf" / "tests" / "fixtures" / "ggml_quants.npz"
TYPES = {"q4_0": (2, 18, 32), "q4_1": (3, 20, 32), "q5_0": (6, 22, 32), "q5_1": (7, 24, 32),
         "q8_0": (8, 34, 32), "q4_k": (12, 144, 256)}


def main() -> int:
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    ggml = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
    ggml.ggml_quantize_chunk.restype = ctypes.c_size_t
    ggml.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    ggml.ggml_quantize_init.argtypes = [ctypes.c_int]
    rng = np.random.default_rng(2024)
    rows = [rng.standard_normal(512) * 0.02, rng.standard_normal(512) * 3.0, rng.uniform(-1, 1, 512),
            np.abs(rng.standard_normal(512)) * 0.1, np.zeros(512), rng.standard_normal(512) ** 3,
            np.concatenate([np.zeros(256), rng.standard_normal(256)]),
            np.where(rng.random(512) < 0.9, 0.0, rng.standard_normal(512))]
    rows += [rng.standard_normal(512) * s for s in np.geomspace(1e-4, 10, 24)]
    x = np.ascontiguousarray(np.stack(rows).astype(np.float32))
    result = {"input": x, "version": np.array(llama_cpp.__version__)}
    for name, (type_id, size, block) in TYPES.items():
        ggml.ggml_quantize_init(type_id)
        out = np.zeros((x.shape[0], x.shape[1] // block * size), dtype=np.uint8)
        written = ggml.ggml_quantize_chunk(type_id, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], None)
        assert written == out.nbytes, (name, written, out.nbytes)
        result[name] = out
    np.savez_compressed(OUT, **result)
    print(f"wrote {OUT} (llama-cpp-python {llama_cpp.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
