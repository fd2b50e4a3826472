"""The OpenCL backend against the numpy reference: the shared conformance suite, plus shapes that
reach the paths the suite's small cases do not (several GEMM tiles, split-K attention)."""

import numpy as np
import pytest

from gllm_core.backends.numpy_backend import NumpyBackend
from gllm_core.testing import conformance_cases, random_matrix, random_vector
from gllm_backend_opencl.backend import OpenCLBackend

CASES = conformance_cases()


@pytest.fixture(scope="module")
def backend():
    return OpenCLBackend()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conformance(case, backend):
    case.check(backend)


@pytest.mark.parametrize("case", [c for c in CASES if c.name.startswith("attention")], ids=str)
def test_split_k_attention(case, backend):
    # ask for more work-groups than the device has: every key range is cut and merged by log-sum-exp
    case.check(OpenCLBackend(attention_min_groups=10_000))


def _linear_both(t, n_in, n_out, dtype, act, seed=0):
    out = []
    for b in (NumpyBackend(), OpenCLBackend()):
        rng = np.random.default_rng(seed)
        w = b.prepare_matrix(random_matrix(rng, n_out, n_in, dtype, scale=1 / np.sqrt(n_in)))
        bias = b.prepare_vector(random_vector(rng, n_out))
        x = b.upload(rng.standard_normal((t, n_in)).astype(np.float32))
        out.append(b.download(b.linear(x, w, bias, act)))
    return out


@pytest.mark.parametrize("t, n_in, n_out, dtype", [
    (70, 200, 130, "f16"),  # several tiles each way, ragged edges
    (2, 264, 9, "bf16"),  # decode path, vector loads, a partial row group
    (4, 136, 77, "f32"),
    (8, 128, 1000, "f16"),
    (1, 1096, 19, "f16"),  # long rows: the unrolled loop and its remainder
    (2, 2056, 5, "bf16"),
    (3, 1032, 7, "f32"),
    (6, 1552, 33, "f16"),
])
def test_linear_shapes(t, n_in, n_out, dtype):
    expected, actual = _linear_both(t, n_in, n_out, dtype, "silu")
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_long_decode_attention_matches():
    # one query per sequence over a long cache, GQA 7:1 as in Qwen2.5-7B, split across groups
    rng = np.random.default_rng(1)
    lk = [600, 37]
    cu_q, cu_k = np.array([0, 1, 2], np.int32), np.array([0, 600, 637], np.int32)
    q = rng.standard_normal((2, 14, 64)).astype(np.float32)
    k = rng.standard_normal((sum(lk), 2, 64)).astype(np.float32)
    v = rng.standard_normal((sum(lk), 2, 64)).astype(np.float32)
    outs = []
    for b in (NumpyBackend(), OpenCLBackend(), OpenCLBackend(attention_min_groups=10_000)):
        outs.append(b.download(b.attention(b.upload(q), b.upload(k), b.upload(v), cu_q, cu_k, 0.125, True)))
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outs[2], outs[0], rtol=1e-4, atol=1e-5)


def test_arrays_stay_on_the_device_between_ops(backend):
    x = backend.upload(np.arange(12, dtype=np.float32).reshape(3, 4))
    y = backend.add(backend.view(x, (3, 4)), x)
    assert type(y).__name__ == "DeviceArray" and y.shape == (3, 4)
    np.testing.assert_array_equal(backend.download(y), 2 * np.arange(12, dtype=np.float32).reshape(3, 4))


def test_lazy_views_read_in_place_match_copies(backend):
    # split gives column views and take_rows row gathers; ops read them in place or copy them first
    ref = NumpyBackend()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 24)).astype(np.float32)
    pool = rng.standard_normal((9, 8)).astype(np.float32)
    rows = np.array([4, 0, 7, 7, 2], np.int32)
    inv = (1.0 / 10000 ** (np.arange(0, 4, 2, dtype=np.float32) / 4)).astype(np.float32)
    pos = np.arange(3, 8, dtype=np.int32)

    def run(b):
        q, k, v = b.split(b.upload(x), (8, 8, 8))
        out = [b.rope(b.view(q, (5, 2, 4)), pos, inv), b.silu_mul(k, v), b.add(k, v), b.view(v, (40,))]
        dst = b.upload(pool)
        keys = b.take_rows(dst, rows)
        vals = b.take_rows(dst, rows)
        cu = np.array([0, 2, 5], np.int32)
        out.append(b.attention(b.view(q, (5, 2, 4)), b.view(keys, (5, 2, 4)), b.view(vals, (5, 2, 4)), cu, cu, 0.5,
                               True))
        b.scatter_rows(dst, np.array([4, 1], np.int32), b.take_rows(b.upload(x[:, :8]), np.array([1, 3])))
        out.append(keys)  # written after it was gathered: must hold the old rows
        b.scatter_rows(dst, np.array([0], np.int32), b.split(b.upload(x[:1]), (8, 16))[0])  # a column view as src
        out.append(dst)
        return [b.download(o) for o in out]

    for got, want in zip(run(backend), run(ref)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("interleave", [False, True])
def test_paired_launches_match_the_reference(backend, interleave):
    # RoPE of queries then keys (columns of one QKV output) and the key write then the value write of
    # a KV cache each go out as one launch; with another op between them, as two
    rng = np.random.default_rng(4)
    t, hq, hkv, d = 3, 4, 2, 8
    qkv = rng.standard_normal((t, (hq + 2 * hkv) * d)).astype(np.float32)
    kpool, vpool = rng.standard_normal((2, 10, hkv * d)).astype(np.float32)
    pos = np.array([5, 6, 9], np.int32)
    inv = (1.0 / 10000 ** (np.arange(0, d, 2, dtype=np.float32) / d)).astype(np.float32)
    slots = np.array([7, 2, 4], np.int32)

    def run(b):
        q, k, v = b.split(b.upload(qkv), (hq * d, hkv * d, hkv * d))
        qr = b.rope(b.view(q, (t, hq, d)), pos, inv, "neox", 1.0)
        extra = b.add(v, v) if interleave else None
        kr = b.rope(b.view(k, (t, hkv, d)), pos, inv, "neox", 1.0)
        kp, vp = b.upload(kpool), b.upload(vpool)
        b.scatter_rows(kp, slots, b.view(kr, (t, hkv * d)))
        if interleave:
            extra = b.add(extra, v)
        b.scatter_rows(vp, slots, v)
        out = [qr, kr, kp, vp] + ([extra] if interleave else [])
        return [b.download(o) for o in out]

    for got, want in zip(run(backend), run(NumpyBackend())):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("d", [300, 2500, 9000])  # rows held in registers, and rows longer than that
def test_long_row_norms(backend, d):
    rng = np.random.default_rng(d)
    x = (rng.standard_normal((2, d)) * 3 + 1).astype(np.float32)
    r = rng.standard_normal((2, d)).astype(np.float32)
    w, bias = (rng.standard_normal((2, d)) * 0.5 + 1).astype(np.float32)

    def run(b):
        from gllm_core.weights import WeightVector
        wv, bv = b.prepare_vector(WeightVector("w", w, "f32")), b.prepare_vector(WeightVector("b", bias, "f32"))
        xs, rs = b.upload(x), b.upload(r)
        y, h = b.add_rms_norm(xs, rs, wv, 1e-6)
        return [b.download(o) for o in (b.layer_norm(xs, wv, bv, 1e-5, rs), b.rms_norm(xs, wv, 1e-6), y, h)]

    for got, want in zip(run(backend), run(NumpyBackend())):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
