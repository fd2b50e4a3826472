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
