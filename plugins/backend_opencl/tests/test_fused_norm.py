"""One-row RMSNorm computed by the next matrix-vector product (decode at batch 1): the pending norm
and its residual sum against the numpy reference, however they are consumed afterwards."""

import numpy as np
import pytest

from gllm_core.backends.numpy_backend import NumpyBackend
from gllm_core.testing import random_matrix, random_vector
from gllm_backend_opencl.backend import OpenCLBackend


@pytest.fixture(scope="module")
def backend():
    b = OpenCLBackend()
    assert b.fuse_norm
    return b


def _setup(b, seed, n_in, n_out, dtype, rows=1):
    rng = np.random.default_rng(seed)
    w = b.prepare_matrix(random_matrix(rng, n_out, n_in, dtype, scale=1 / np.sqrt(n_in)))
    bias = b.prepare_vector(random_vector(rng, n_out))
    g = b.prepare_vector(random_vector(rng, n_in))
    x = rng.standard_normal((rows, n_in)).astype(np.float32) * 3
    r = rng.standard_normal((rows, n_in)).astype(np.float32)
    return w, bias, g, x, r


def _reference(seed, n_in, n_out, dtype, residual, act, rows=1):
    b = NumpyBackend()
    w, bias, g, x, r = _setup(b, seed, n_in, n_out, dtype, rows)
    if residual:
        y, h = b.add_rms_norm(x, r, g, 1e-6)
    else:
        y, h = b.rms_norm(x, g, 1e-6), x
    return b.linear(y, w, bias, act), y, h


@pytest.mark.parametrize("n_in, n_out, dtype", [(64, 77, "f16"), (136, 1000, "bf16"), (1096, 19, "f32"),
                                                (3584, 40, "f16")])
@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("act", [None, "silu"])
def test_norm_in_gemv(backend, n_in, n_out, dtype, residual, act):
    want_out, want_y, want_h = _reference(3, n_in, n_out, dtype, residual, act)
    w, bias, g, x, r = _setup(backend, 3, n_in, n_out, dtype)
    xd, rd = backend.upload(x), backend.upload(r)
    if residual:
        y, h = backend.add_rms_norm(xd, rd, g, 1e-6)
        assert (y.kind, h.kind) == (3, 4)  # both pending: the product below computes them
    else:
        y, h = backend.rms_norm(xd, g, 1e-6), xd
        assert y.kind == 3
    out = backend.linear(y, w, bias, act)
    assert h.kind == 0  # written by the product
    np.testing.assert_allclose(backend.download(out), want_out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(backend.download(h), want_h, rtol=1e-6, atol=1e-6)
    # the pending norm itself, read after the product (its own kernel runs then)
    np.testing.assert_allclose(backend.download(y), want_y, rtol=1e-5, atol=1e-5)
    assert y.kind == 0


def test_residual_sum_read_first(backend):
    # h read before any product: the norm kernel writes both, the product then reads the result
    want_out, want_y, want_h = _reference(5, 256, 33, "f16", True, None)
    w, bias, g, x, r = _setup(backend, 5, 256, 33, "f16")
    y, h = backend.add_rms_norm(backend.upload(x), backend.upload(r), g, 1e-6)
    np.testing.assert_allclose(backend.download(h), want_h, rtol=1e-6, atol=1e-6)
    assert y.kind == 0
    np.testing.assert_allclose(backend.download(backend.linear(y, w, bias)), want_out, rtol=1e-4, atol=1e-4)


def test_pending_norm_through_other_ops(backend):
    want_out, want_y, want_h = _reference(7, 128, 16, "f16", True, None)
    w, bias, g, x, r = _setup(backend, 7, 128, 16, "f16")
    y, h = backend.add_rms_norm(backend.upload(x), backend.upload(r), g, 1e-6)
    # a view, an add and a row pick all see the normed values
    np.testing.assert_allclose(backend.download(backend.view(y, (1, 8, 16))), want_y.reshape(1, 8, 16),
                               rtol=1e-5, atol=1e-5)
    y2, h2 = backend.add_rms_norm(backend.upload(x), backend.upload(r), g, 1e-6)
    np.testing.assert_allclose(backend.download(backend.add(h2, y2)), want_h + want_y, rtol=1e-5, atol=1e-5)
    y3, _ = backend.add_rms_norm(backend.upload(x), backend.upload(r), g, 1e-6)
    np.testing.assert_allclose(backend.download(backend.take_rows(y3, np.array([0, 0], np.int32))),
                               np.concatenate([want_y, want_y]), rtol=1e-5, atol=1e-5)
    # the same pending norm read by two products
    y4, _ = backend.add_rms_norm(backend.upload(x), backend.upload(r), g, 1e-6)
    a = backend.download(backend.linear(y4, w, bias))
    b = backend.download(backend.linear(y4, w, bias))
    np.testing.assert_allclose(a, want_out, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(a, b)


def test_not_pending_where_it_cannot_be(backend):
    # two rows, a width that is not a multiple of 8, quantized-free f16 beyond the local-memory limit
    for rows, n in ((2, 64), (1, 60), (1, 8200)):
        rng = np.random.default_rng(0)
        g = backend.prepare_vector(random_vector(rng, n))
        x = backend.upload(rng.standard_normal((rows, n)).astype(np.float32))
        y, h = backend.add_rms_norm(x, x, g, 1e-6)
        assert y.kind == 0 and h.kind == 0


def test_fuse_norm_off_matches(backend):
    off = OpenCLBackend()
    off.fuse_norm = False
    w, bias, g, x, r = _setup(off, 9, 512, 300, "bf16")
    y, h = off.add_rms_norm(off.upload(x), off.upload(r), g, 1e-6)
    assert y.kind == 0
    got_off = off.download(off.linear(y, w, bias, "silu"))
    w2, bias2, g2, _, _ = _setup(backend, 9, 512, 300, "bf16")
    y2, _ = backend.add_rms_norm(backend.upload(x), backend.upload(r), g2, 1e-6)
    got_on = backend.download(backend.linear(y2, w2, bias2, "silu"))
    np.testing.assert_allclose(got_on, got_off, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lanes, warps, groups", [(32, 8, 8), (64, 4, 2), (32, 4, 1)])
def test_other_work_group_shapes(lanes, warps, groups):
    b = OpenCLBackend()
    b.norm_lanes, b.norm_warps, b.norm_groups_per_cu = lanes, warps, groups
    want_out, want_y, want_h = _reference(11, 1096, 301, "f16", True, "silu")
    w, bias, g, x, r = _setup(b, 11, 1096, 301, "f16")
    y, h = b.add_rms_norm(b.upload(x), b.upload(r), g, 1e-6)
    np.testing.assert_allclose(b.download(b.linear(y, w, bias, "silu")), want_out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.download(h), want_h, rtol=1e-6, atol=1e-6)


def _gated(b, seed, n_in, f, cut=None):
    """rms_norm -> stacked gate/up product (with bias) -> halves -> silu_mul, as a gated MLP runs."""
    rng = np.random.default_rng(seed)
    w = b.prepare_matrix(random_matrix(rng, 2 * f, n_in, "f16", scale=1 / np.sqrt(n_in)))
    bias = b.prepare_vector(random_vector(rng, 2 * f))
    g = b.prepare_vector(random_vector(rng, n_in))
    x = b.upload(rng.standard_normal((1, n_in)).astype(np.float32))
    r = b.upload(rng.standard_normal((1, n_in)).astype(np.float32))
    y, h = b.add_rms_norm(x, r, g, 1e-6)
    gu = b.linear(y, w, bias)
    if cut == "download":
        b.download(gu)
    gate, up = b.split(gu, [f, f])
    if cut == "other_op":
        b.add(gate, gate)
    return b.download(b.silu_mul(gate, up)), b.download(gu), b.download(h)


@pytest.mark.parametrize("cut", [None, "download", "other_op"])
@pytest.mark.parametrize("n_in, f", [(64, 40), (1096, 333)])
def test_gated_mlp_product_in_one_launch(cut, n_in, f):
    want = _gated(NumpyBackend(), 4, n_in, f)
    b = OpenCLBackend()
    b.fuse_silu = True
    calls = []
    k = b._k_silu_mul
    b._k_silu_mul = lambda *a, **kw: calls.append(1) or k(*a, **kw)
    got = _gated(b, 4, n_in, f, cut)
    for g_, w_ in zip(got, want):
        np.testing.assert_allclose(g_, w_, rtol=1e-4, atol=1e-4)
    assert len(calls) == (0 if cut is None else 1)  # no silu_mul launch when nothing comes between
