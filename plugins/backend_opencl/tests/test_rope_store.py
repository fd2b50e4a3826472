"""A decode step's RoPE of queries and keys and its KV-cache writes go out as one launch
(``rope_store``); the results are those of the four ops one by one, however the sequence is cut."""

import numpy as np
import pytest

from gllm_core.backends.numpy_backend import NumpyBackend
from gllm_backend_opencl.backend import OpenCLBackend


def _step(b, qkv, positions, inv_freq, slots, n_slots, hq, hkv, d, cut=None):
    """RoPE q and k (column views of qkv), write k and v rows into fresh caches."""
    t = qkv.shape[0]
    x = b.upload(qkv)
    kc, vc = b.zeros((n_slots, hkv * d)), b.zeros((n_slots, hkv * d))
    q, k, v = b.split(x, [hq * d, hkv * d, hkv * d])
    q = b.rope(b.view(q, (t, hq, d)), positions, inv_freq)
    k = b.rope(b.view(k, (t, hkv, d)), positions, inv_freq)
    if cut == "after_rope":
        b.download(q)
    b.scatter_rows(kc, slots, b.view(k, (t, hkv * d)))
    if cut == "after_keys":
        b.download(kc)
    b.scatter_rows(vc, slots, v)
    return [b.download(a) for a in (q, k, kc, vc)]


@pytest.mark.parametrize("cut", [None, "after_rope", "after_keys"])
@pytest.mark.parametrize("t", [1, 3])
def test_rope_and_cache_writes(cut, t, count_rope_store):
    rng = np.random.default_rng(t)
    hq, hkv, d = 4, 2, 16
    qkv = rng.standard_normal((t, (hq + 2 * hkv) * d)).astype(np.float32)
    positions = np.arange(5, 5 + t, dtype=np.int32)
    inv_freq = (10000.0 ** (-np.arange(0, d, 2) / d)).astype(np.float32)
    slots = rng.permutation(9)[:t].astype(np.int32)
    want = _step(NumpyBackend(), qkv, positions, inv_freq, slots, 9, hq, hkv, d)
    b = OpenCLBackend()
    counted = count_rope_store(b)
    got = _step(b, qkv, positions, inv_freq, slots, 9, hq, hkv, d, cut)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert counted.calls == (1 if cut is None else 0)  # one launch only when nothing comes between


def test_off_gives_the_same(count_rope_store):
    rng = np.random.default_rng(0)
    hq, hkv, d = 2, 1, 8
    qkv = rng.standard_normal((2, (hq + 2 * hkv) * d)).astype(np.float32)
    args = (np.array([0, 1], np.int32), np.ones(4, np.float32) * 0.5, np.array([3, 1], np.int32), 4, hq, hkv, d)
    on = _step(OpenCLBackend(), qkv, *args)
    b = OpenCLBackend()
    b.fuse_rope_store = False
    counted = count_rope_store(b)
    off = _step(b, qkv, *args)
    assert counted.calls == 0
    for x, y in zip(on, off):
        np.testing.assert_array_equal(x, y)
