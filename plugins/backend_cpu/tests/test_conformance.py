"""The numba backend against the numpy reference: the shared conformance suite, then random
shapes with odd sizes and the fast paths' edges (few-token kernels vs the tiled GEMM, weight
panels packed per call vs cached, attention on the register tiles vs the vector loops, long
inputs that take several key and query blocks)."""

import numpy as np
import pytest

from gllm_core.errors import BadRequestError
from gllm_core.testing import Case, conformance_cases, random_matrix, random_vector

from gllm_backend_cpu import backend as cpu_backend
from gllm_backend_cpu.backend import NumbaBackend
from gllm_backend_cpu.kernels import attention as attn_kernels


@pytest.fixture(scope="module")
def cpu():
    return NumbaBackend()


@pytest.mark.parametrize("case", conformance_cases(), ids=str)
def test_conformance(case, cpu):
    case.check(cpu)


def _cu(lengths):
    cu = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    return cu


def _linear_case(t, n_in, n_out, dtype, bias, act, seed):
    def run(b, rng):
        w = b.prepare_matrix(random_matrix(rng, n_out, n_in, dtype, scale=1.0 / np.sqrt(n_in)))
        bv = b.prepare_vector(random_vector(rng, n_out)) if bias else None
        x = b.upload((rng.standard_normal((t, n_in)) * 2).astype(np.float32))
        return b.download(b.linear(x, w, bv, act)), b.download(b.linear(x, w, bv, act))  # twice: panels cached
    return Case(f"linear-{dtype}-{t}x{n_in}->{n_out}-{act}", run, seed=seed)


# token counts on both sides of the few-token kernels, around the GEMM's row blocks and tiles
LINEAR_SHAPES = [(cpu_backend.FEW_TOKENS_PACKED, 33, 70), (cpu_backend.FEW_TOKENS_PACKED + 1, 33, 70),
                 (cpu_backend.FEW_TOKENS, 40, 65), (cpu_backend.FEW_TOKENS + 1, 40, 65), (13, 100, 1),
                 (97, 67, 129), (200, 384, 96), (1, 5, 300)]


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_random_shapes(cpu, dtype, shape):
    t, n_in, n_out = shape
    for seed, act in enumerate([None, "gelu", "gelu_tanh", "relu", "silu"]):
        _linear_case(t, n_in, n_out, dtype, seed % 2 == 0, act, seed).check(cpu)


def test_linear_packs_in_chunks_without_a_cache(monkeypatch):
    """Weights too big for one packing pass (and no panel cache) give the same products."""
    monkeypatch.setattr(cpu_backend, "PACK_ELEMENTS", 40 * 64)
    small = NumbaBackend(packed_cache_mb=0)
    for dtype in ("f32", "f16", "bf16"):
        _linear_case(50, 40, 300, dtype, True, "gelu", 3).check(small)


def test_packed_panels_are_cached_within_the_budget():
    rng = np.random.default_rng(0)
    w = random_matrix(rng, 100, 64)
    x = rng.standard_normal((20, 64)).astype(np.float32)
    roomy, none = NumbaBackend(), NumbaBackend(packed_cache_mb=0)
    a, b = roomy.prepare_matrix(w), none.prepare_matrix(w)
    np.testing.assert_allclose(roomy.linear(x, a), none.linear(x, b), rtol=1e-6, atol=1e-6)
    assert a.packed is not None and b.packed is None
    assert none.prepare_matrix(random_matrix(rng, 100, 64, "f16")).packed is None


def _attention_case(lengths_q, lengths_k, hq, hkv, d, causal, window=None, dv=None, seed=0):
    dv = dv or d

    def run(b, rng):
        q = b.upload(rng.standard_normal((sum(lengths_q), hq, d)).astype(np.float32))
        k = b.upload(rng.standard_normal((sum(lengths_k), hkv, d)).astype(np.float32))
        v = b.upload(rng.standard_normal((sum(lengths_k), hkv, dv)).astype(np.float32))
        return b.download(b.attention(q, k, v, _cu(lengths_q), _cu(lengths_k), 1.0 / np.sqrt(d), causal, window))
    return Case(f"attention-{lengths_q}-{lengths_k}-{hq}/{hkv}-d{d}-dv{dv}-c{causal}-w{window}", run, seed=seed)


QB, KB = attn_kernels.QUERY_BLOCK, attn_kernels.KEY_BLOCK
ATTENTION_CASES = [
    # encoder batches (BERT): packed sequences of different lengths, tiled path (d = 32, 64)
    ([70, 3, 129, 1, 64], None, 12, 12, 32, False, None, None),
    ([50, 7, QB + 5], None, 4, 4, 64, False, None, None),
    # causal prefill over several key and query blocks, grouped heads, head dims off the tile width
    ([QB + KB + 3], None, 6, 2, 64, True, None, None),
    ([2 * QB + 1, 17], None, 4, 1, 24, True, None, 40),
    ([KB + 9], None, 2, 2, 32, True, 37, None),  # window inside a key block
    ([3 * KB], None, 2, 1, 16, True, KB + 5, None),  # window across key blocks
    # chunked prefill and decode after a cache: fewer queries than keys
    ([40, 1, 9], [40 + 2 * KB, 300, 9], 8, 2, 64, True, None, None),
    ([1, 1, 1], [1, 777, 33], 9, 3, 64, True, None, None),
    ([1, 1], [500, 90], 4, 4, 128, True, 100, None),
    ([5, 1], [2, 3], 2, 1, 8, True, None, None),  # more queries than keys: early queries see nothing
]


@pytest.mark.parametrize("case", ATTENTION_CASES, ids=lambda c: f"q{c[0]}-k{c[1]}-h{c[2]}/{c[3]}-d{c[4]}")
def test_attention_random_shapes(cpu, case):
    lengths_q, lengths_k, hq, hkv, d, causal, window, dv = case
    _attention_case(lengths_q, lengths_k or lengths_q, hq, hkv, d, causal, window, dv).check(cpu)


def test_attention_with_no_visible_key_is_zero(cpu):
    q = np.ones((3, 1, 4), np.float32)
    k = v = np.ones((1, 1, 4), np.float32)
    out = cpu.attention(q, k, v, np.array([0, 3]), np.array([0, 1]), 0.5, causal=True)
    np.testing.assert_array_equal(out[:2], 0.0)
    np.testing.assert_allclose(out[2], 1.0)


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 1000), (37, 33), (2, 151937)])
def test_rowwise_ops_random_shapes(cpu, rows, cols):
    def run(b, rng):
        x = b.upload((rng.standard_normal((rows, cols)) * 4).astype(np.float32))
        y = b.upload(rng.standard_normal((rows, cols)).astype(np.float32))
        w = b.prepare_vector(random_vector(rng, cols, offset=1.0))
        bias = b.prepare_vector(random_vector(rng, cols))
        outs = [b.softmax(x), b.layer_norm(x, w, bias, 1e-5, y), b.rms_norm(x, w, 1e-6), b.silu_mul(x, y),
                b.add(x, bias), b.mul(x, y), b.activation(x, "gelu")]
        values, idx = b.top_k(x, min(5, cols))
        return tuple(b.download(o) for o in outs) + (np.asarray(values), np.asarray(idx).astype(np.int64))
    Case(f"rowwise-{rows}x{cols}", run).check(cpu)


def test_softmax_and_top_k_keep_masked_logits(cpu):
    x = np.array([[0.5, -np.inf, 2.0, -np.inf, 2.0]], np.float32)
    np.testing.assert_allclose(cpu.softmax(x), cpu_backend.NumpyBackend().softmax(x), atol=1e-7)
    values, idx = cpu.top_k(x, 4)
    assert idx.tolist() == [[2, 4, 0, 1]] and values[0, 3] == -np.inf


def test_bad_inputs_are_clear_errors(cpu):
    rng = np.random.default_rng(0)
    w = cpu.prepare_matrix(random_matrix(rng, 4, 6, name="layer.weight"))
    with pytest.raises(BadRequestError, match="layer.weight"):
        cpu.linear(np.zeros((2, 5), np.float32), w)
    with pytest.raises(BadRequestError, match="activation"):
        cpu.linear(np.zeros((2, 6), np.float32), w, activation="swishy")
    table = cpu.prepare_matrix(random_matrix(rng, 10, 3, name="embed.weight"))
    with pytest.raises(BadRequestError, match="token id 10 .*embed.weight"):
        cpu.embedding(table, np.array([1, 10], np.int32))
    with pytest.raises(BadRequestError, match="window"):
        cpu.attention(np.zeros((2, 1, 4), np.float32), np.zeros((2, 1, 4), np.float32),
                      np.zeros((2, 1, 4), np.float32), np.array([0, 2]), np.array([0, 2]), 1.0, True, 0)
    with pytest.raises(BadRequestError, match="cu_seqlens"):
        cpu.attention(np.zeros((2, 1, 4), np.float32), np.zeros((2, 1, 4), np.float32),
                      np.zeros((2, 1, 4), np.float32), np.array([0, 3]), np.array([0, 2]), 1.0)
    with pytest.raises(BadRequestError, match="split"):
        cpu.split(np.zeros((2, 5), np.float32), [2, 2])
    with pytest.raises(BadRequestError, match="out of range"):
        cpu.take_rows(np.zeros((2, 5), np.float32), np.array([2]))
    with pytest.raises(BadRequestError, match="out of range"):
        cpu.scatter_rows(cpu.zeros((2, 5)), np.array([5]), np.zeros((1, 5), np.float32))
    with pytest.raises(BadRequestError, match="rope style"):
        cpu.rope(np.zeros((1, 1, 4), np.float32), np.array([0]), np.ones(2, np.float32), "sideways")
