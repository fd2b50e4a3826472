"""The GGML quantized linear kernels (gllm_backend_cpu.quant) against numpy references.

The reference is written out in numpy, the obvious way: activations quantized by ggml's rules
(8-bit, float16 or float32 scales), weights dequantized by gguf-py, and the sum of products in
float64 plus the q8_1 rounding term; the kernels must agree to float32 rounding.
"""

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as ref

from gllm_backend_cpu import quant as Q
from gllm_core.backends.numpy_backend import NumpyBackend
from gllm_core.plugins import get_registry
from gllm_core.selection import create_backend
from gllm_core.weights import QuantType, WeightMatrix, WeightVector

TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k"]
K_TYPES = {"q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208]}  # byte offsets of their f16 scales


def _f16(a):
    return np.asarray(a, np.float32).astype(np.float16).astype(np.float32)


def _weight(name, rows, cols, rng):
    t = GGMLQuantizationType[name.upper()]
    block, size = GGML_QUANT_SIZES[t]
    if name in K_TYPES:  # gguf-py has no K quantiser: random blocks with sane scales
        blocks = rng.integers(0, 256, (rows * cols // block, size), dtype=np.uint8)
        for off in K_TYPES[name]:
            blocks[:, off:off + 2] = (rng.standard_normal(len(blocks)) * 0.002).astype(np.float16).view(np.uint8).reshape(-1, 2)
        blocks = blocks.reshape(rows, -1)
    else:
        blocks = ref.quantize((rng.standard_normal((rows, cols)) * 0.05).astype(np.float32), t)
    quant = QuantType(name, block, size, lambda b, t=t: ref.dequantize(b, t))
    return WeightMatrix(f"w.{name}", blocks, name, (rows, cols), quant), ref.dequantize(blocks, t)


def _reference_activations(x, fmt):
    """ggml's quantize_row_q8_0 / q8_1 (AVX2 form) and quantize_row_q8_K_ref, in numpy."""
    T, n = x.shape
    if fmt == Q.Q8_K:
        b = x.reshape(T, n // 256, 256)
        vmax = np.take_along_axis(b, np.abs(b).argmax(-1)[..., None], -1)
        zero = vmax == 0  # an all-zero block: scale 0, values 0
        iscale = np.where(zero, 0, np.float32(-127) / np.where(zero, 1, vmax)).astype(np.float32)
        q = np.minimum(np.rint(iscale * b), 127).astype(np.float32)
        d = np.where(zero, 0, np.float32(1) / np.where(zero, 1, iscale)).astype(np.float32)
        return q.reshape(T, n), d[..., 0], None
    b = x.reshape(T, n // 32, 32)
    amax = np.abs(b).max(-1)
    d = (amax / np.float32(127)).astype(np.float32)
    inv = np.where(amax != 0, np.float32(127) / np.where(amax != 0, amax, 1), 0).astype(np.float32)
    q = np.rint(b * inv[..., None]).astype(np.float32)
    return q.reshape(T, n), _f16(d), _f16(d * q.sum(-1))


def test_round_f16_matches_numpy():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(20000) * s for s in (1e-8, 1e-6, 1e-4, 1, 100, 1e4)]).astype(np.float32)
    halfway = (np.arange(1, 2000, dtype=np.float32) + np.float32(0.5)) * np.float32(2.0 ** -24)
    x = np.concatenate([x, halfway, -halfway, [0.0, -0.0, 65504.0, 65519.0, 65520.0, 7e4, np.inf, -np.inf]])
    x = x.astype(np.float32)
    with np.errstate(over="ignore"):
        expected = np.concatenate([x[:5000], x[-4010:]]).astype(np.float16).astype(np.float32)
    got = np.array([Q.round_f16(v) for v in x[:5000]] + [Q.round_f16(v) for v in x[-4010:]], dtype=np.float32)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("fmt", [Q.Q8_0, Q.Q8_1, Q.Q8_K])
def test_activation_quantization_is_ggmls(fmt):
    rng = np.random.default_rng(fmt)
    x = np.concatenate([rng.standard_normal((5, 512)), np.zeros((1, 512)),
                        rng.standard_normal((2, 512)) * 1e-6]).astype(np.float32)
    qs, d, s, sums = Q.quantize_activations(x, fmt)
    rq, rd, rs = _reference_activations(x, fmt)
    assert np.array_equal(qs, rq) and np.array_equal(d, rd)
    if fmt == Q.Q8_1:
        assert np.array_equal(s, rs)
    if fmt == Q.Q8_K:
        assert np.array_equal(sums, rq.reshape(len(x), -1, 16).sum(-1))


def _expected(w, deq, x, fmt, bias):
    """float64 sums of the quantized activations times the dequantized weights (+ q8_1's float16
    sum term), and the scale that bounds float32 rounding."""
    tokens, cols = x.shape
    rows = deq.shape[0]
    rq, rd, rs = _reference_activations(x, fmt)
    block = 256 if fmt == Q.Q8_K else 32
    xd = (rq.reshape(tokens, -1, block) * rd[..., None]).reshape(tokens, cols).astype(np.float64)
    expected = xd @ deq.astype(np.float64).T
    if fmt == Q.Q8_1:  # llama.cpp adds m * s with s rounded to float16
        mins = w.data.reshape(rows, cols // 32, -1)[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float64)
        expected += (rs - rd * rq.reshape(tokens, -1, 32).sum(-1)).astype(np.float64) @ mins.T
    expected += bias
    scale = np.abs(xd) @ np.abs(deq.astype(np.float64)).T + np.abs(bias)
    return expected, scale


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("tokens", [1, 3, 20])
def test_quant_linear_matches_the_reference(name, tokens):
    rng = np.random.default_rng(len(name) * 100 + tokens)
    rows, cols = 37, 512
    w, deq = _weight(name, rows, cols, rng)
    kernel = Q.quant_linear_for(w)
    assert np.shares_memory(kernel.data, w.data)  # the blocks are used in place
    x = rng.standard_normal((tokens, cols)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    out = kernel(x, bias, 0, np.zeros(0, np.float32))
    expected, scale = _expected(w, deq, x, kernel.fmt, bias)
    assert np.max(np.abs(out - expected) / scale) < 1e-6
    if tokens > 1:  # and the dequantized BLAS tiles (used past FEW_TOKENS)
        tiles = Q.QuantLinear(w, few_tokens=0)(x, bias, 0, np.zeros(0, np.float32))
        assert np.max(np.abs(tiles - expected) / scale) < 1e-6
    # and close to the unquantized activations
    dense = x @ deq.T + bias
    assert np.max(np.abs(out - dense)) < 0.03 * np.max(np.abs(dense))


PATHS = {"generic": Q.ISA_GENERIC, "avx2": Q.ISA_AVX2, "native": None}


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("path", PATHS)
def test_integer_kernels_on_every_path_and_token_count(name, path):
    """The integer kernels (kernels/qdot.py) on each instruction path, forced, and on the CPU's
    own; 1..16 tokens (passes of 8, 4, 2 and 1 tokens over a row); odd row counts that end inside
    a parallel task; weights that start at a later row of their blocks (an offset view)."""
    rng = np.random.default_rng(len(name) * 7 + len(path))
    cols = 768 if name in K_TYPES else 352
    w, deq = _weight(name, 45, cols, rng)
    isa = PATHS[path]
    kernel = Q.QuantLinear(w, isa=isa, few_tokens=16)
    assert kernel.isa == (Q.native_isa() if isa is None else min(isa, Q.HOST_ISA))
    for rows in (45, 19, 1):
        sub = WeightMatrix(w.name, w.data[45 - rows:], name, (rows, cols), w.quant)
        # rows split between threads, and (19 rows) on the calling thread alone
        k = Q.QuantLinear(sub, isa=isa, few_tokens=16, serial_work=0 if rows != 19 else 1 << 30)
        for tokens in (1, 2, 5, 8, 16) if rows == 45 else (3, 13):
            x = rng.standard_normal((tokens, cols)).astype(np.float32)
            x[0, :32] = 0.0  # an all-zero activation block (scale 0)
            bias = rng.standard_normal(rows).astype(np.float32)
            out = k(x, bias, 0, np.zeros(0, np.float32))
            expected, scale = _expected(sub, deq[45 - rows:], x, k.fmt, bias)
            assert np.max(np.abs(out - expected) / scale) < 1e-6, (rows, tokens)


@pytest.mark.parametrize("name", ["q4_0", "q5_0", "q8_0", "q4_k", "q6_k"])
@pytest.mark.parametrize("path", PATHS)
def test_packed_kernels_on_every_path_and_token_count(name, path):
    """The kernels over weights repacked 8 rows at a time (kernels/qpack.py) on each instruction
    path: 1..20 tokens (passes of 8, 4, 2 and 1, a second pass of 16), groups split between
    threads and on the calling thread alone, every activation sign and an all-zero block; the
    same sums as the per-row kernels (which 45 rows, not a multiple of 8, still take)."""
    from gllm_backend_cpu.kernels import qpack

    rng = np.random.default_rng(len(name) * 11 + len(path))
    cols = 768 if name in K_TYPES else 352
    w, deq = _weight(name, 56, cols, rng)
    isa = PATHS[path]
    for rows, serial_work in ((56, 0), (16, 1 << 30), (8, 0)):
        sub = WeightMatrix(w.name, w.data[56 - rows:], name, (rows, cols), w.quant)
        k = Q.QuantLinear(sub, isa=isa, few_tokens=32, serial_work=serial_work)
        per_row = Q.QuantLinear(sub, isa=isa, few_tokens=32, packed_tokens=1 << 30)
        for tokens in (1, 2, 3, 5, 8, 13, 20) if rows == 56 else (1, 9):
            x = rng.standard_normal((tokens, cols)).astype(np.float32)
            x[0, :32] = 0.0
            bias = rng.standard_normal(rows).astype(np.float32)
            out = k(x, bias, 0, np.zeros(0, np.float32))
            expected, scale = _expected(sub, deq[56 - rows:], x, k.fmt, bias)
            assert np.max(np.abs(out - expected) / scale) < 1e-6, (rows, tokens)
            assert np.max(np.abs(out - per_row(x, bias, 0, np.zeros(0, np.float32))) / scale) < 1e-6
        size = qpack.GROUP_SIZE_K[k.qkind] * cols // 256 if name in K_TYPES else sub.data.nbytes * 8 // rows
        assert k.packed is not None and k.packed.nbytes == size * rows // 8  # 8 rows interleaved
        assert per_row.packed is None
    odd = Q.QuantLinear(WeightMatrix(w.name, w.data[:45], name, (45, cols), w.quant))
    odd(rng.standard_normal((4, cols)).astype(np.float32), None, 0, np.zeros(0, np.float32))
    assert odd.packed is None and qpack.KINDS == (0, 2, 4) and qpack.KINDS_K == (5, 7)


@pytest.mark.parametrize("name", ["q4_0", "q5_0", "q8_0", "q4_k", "q6_k"])
def test_packing_kernel_matches_the_numpy_layout(name):
    """quant.pack_rows (what a model's weights go through) gives qpack.pack / pack_k's bytes."""
    from gllm_backend_cpu.kernels import qpack

    rng = np.random.default_rng(len(name))
    w, _ = _weight(name, 24, 768 if name in K_TYPES else 96, rng)
    kind = Q.KIND_NAMES.index(name)
    reference = (qpack.pack_k if name in K_TYPES else qpack.pack)(kind, w.data)
    assert np.array_equal(Q.packed_copy(kind, w.data), reference)


def test_the_cpu_path_follows_the_cpu_and_the_environment(monkeypatch):
    from gllm_backend_cpu.kernels import qdot
    from gllm_core.errors import GllmError

    monkeypatch.delenv(qdot.ISA_ENV, raising=False)
    assert qdot.native_isa() == qdot.HOST_ISA
    if qdot.target_has("avx2"):
        assert qdot.HOST_ISA >= Q.ISA_AVX2
    monkeypatch.setenv(qdot.ISA_ENV, "generic")
    assert qdot.native_isa() == Q.ISA_GENERIC
    monkeypatch.setenv(qdot.ISA_ENV, "avx2")
    assert qdot.native_isa() == min(Q.ISA_AVX2, qdot.HOST_ISA)
    monkeypatch.setenv(qdot.ISA_ENV, "sse9")
    with pytest.raises(GllmError, match="GLLM_CPU_QUANT_ISA"):
        qdot.native_isa()


def test_activation_is_fused():
    rng = np.random.default_rng(5)
    w, deq = _weight("q4_0", 64, 256, rng)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    kernel = Q.quant_linear_for(w)
    plain = kernel(x, None, 0, np.zeros(0, np.float32))
    silu = kernel(x, None, 4, np.zeros(0, np.float32))
    np.testing.assert_allclose(silu, plain / (1 + np.exp(-plain)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["q4_1", "q6_k"])
def test_backend_linear_resolves_quantized_weights_at_prepare(name):
    registry = get_registry()
    cpu = create_backend(registry, "cpu")
    rng = np.random.default_rng(9)
    w, deq = _weight(name, 48, 512, rng)
    prepared = cpu.prepare_matrix(w)
    assert isinstance(prepared.qlinear, Q.QuantLinear)
    x = rng.standard_normal((12, 512)).astype(np.float32)
    b = WeightVector("b", rng.standard_normal(48).astype(np.float32), "f32")
    out = cpu.linear(cpu.upload(x), prepared, cpu.prepare_vector(b), "silu")
    numpy = NumpyBackend()
    expected = numpy.linear(x, numpy.prepare_matrix(w), numpy.prepare_vector(b), "silu")
    assert np.max(np.abs(out - expected)) < 0.03 * np.max(np.abs(expected))
    for t in (1, 12):  # the few-token kernels and the BLAS tiles give the same sums
        np.testing.assert_allclose(cpu.linear(x[:t], prepared, None)[0], cpu.linear(x, prepared, None)[0],
                                   rtol=1e-5, atol=1e-5)


def test_serial_and_parallel_builds_have_cache_names_of_their_own():
    """numba's on-disk cache keys a kernel by its qualified name, not by ``parallel``: builds of
    one source that shared a name loaded each other's code (every product on one thread)."""
    pairs = [(Q.GEMV[k], Q.GEMV_SERIAL[k]) for k in range(len(Q.KIND_NAMES))]
    pairs += [(Q.quantize_q8_0, Q.quantize_q8_0.serial), (Q.quantize_q8_k, Q.quantize_q8_k.serial)]
    pairs += [(g, g.serial) for g in Q.GEMV_PACKED.values()] + [(Q.offset_sums, Q.offset_sums.serial)]
    for parallel, serial in pairs:
        assert parallel.targetoptions.get("parallel") and not serial.targetoptions.get("parallel")
        assert parallel.py_func.__qualname__ != serial.py_func.__qualname__
        assert parallel.py_func.__code__ is serial.py_func.__code__  # one source
