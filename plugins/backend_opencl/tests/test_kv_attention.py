"""``kv_attention`` of the OpenCL backend: when q and k are adjacent column views of one buffer (a
fused QKV product's output), RoPE, the KV-cache writes and attention go out as two launches
(``rope_store``, then attention over the cache rows); the results (output and both caches) are
those of the default composition of ops, and of the numpy reference backend."""

import numpy as np
import pytest

from gllm_core.backend import Backend
from gllm_core.backends.numpy_backend import NumpyBackend
from gllm_core.errors import BadRequestError
from gllm_core.testing import kv_cache_setup
from gllm_backend_opencl.backend import OpenCLAttentionPlan, OpenCLBackend


def _cu(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def _case(b, history, new, hq, hkv, d, rot, style, window, rng_seed, composed=False):
    rng = np.random.default_rng(rng_seed)
    kc, vc, plan = kv_cache_setup(b, rng, history, new, hkv, d, (rot, style, 1.1))
    t = sum(new)
    qkv = b.upload(rng.standard_normal((t, (hq + 2 * hkv) * d)).astype(np.float32))
    q, k, v = b.split(qkv, [hq * d, hkv * d, hkv * d])
    q, k, v = b.view(q, (t, hq, d)), b.view(k, (t, hkv, d)), b.view(v, (t, hkv, d))
    run = Backend.kv_attention if composed else type(b).kv_attention
    out = run(b, q, k, v, kc, vc, plan, 1.0 / np.sqrt(d), window)
    return b.download(out), b.download(kc), b.download(vc)


CASES = [
    ([130], [1], 28 // 4, 1, 16, 16, "neox", None),  # a decode step, GQA
    ([16, 0, 40], [1, 1, 2], 6, 2, 16, 16, "neox", None),  # decode steps of a batch
    ([0, 0], [5, 3], 4, 4, 8, 8, "neox", None),  # prompts: the keys are the new tokens
    ([7, 150], [1, 1], 3, 1, 10, 6, "interleaved", 20),  # partial rotary, sliding window
    ([4, 0], [9, 1], 4, 2, 12, 12, "neox", 5),  # a chunk after a cache
    ([0], [40], 4, 2, 16, 16, "neox", None),  # a prompt of several query blocks
]


@pytest.mark.parametrize("case", CASES, ids=[f"h{c[0]}-n{c[1]}-win{c[7]}" for c in CASES])
def test_fused_matches_composed_and_numpy(case, count_rope_store):
    history, new, hq, hkv, d, rot, style, window = case
    b = OpenCLBackend()
    counted = count_rope_store(b)
    got = _case(b, history, new, hq, hkv, d, rot, style, window, 1)
    assert counted.calls == 1  # RoPE and both cache writes: one launch
    composed = _case(OpenCLBackend(), history, new, hq, hkv, d, rot, style, window, 1, composed=True)
    want = _case(NumpyBackend(), history, new, hq, hkv, d, rot, style, window, 1)
    for g, c, w in zip(got, composed, want):
        np.testing.assert_allclose(g, c, rtol=1e-5, atol=2e-5)
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=2e-4)


def test_plan_is_checked():
    b = OpenCLBackend()
    plan = b.kv_attention_plan(np.array([3], np.int32), _cu([1]), _cu([4]), np.array([7], np.int32),
                               np.array([0, 1, 2, 7], np.int32), np.ones(4, np.float32))
    assert isinstance(plan, OpenCLAttentionPlan)
    with pytest.raises(BadRequestError, match="packed sequences"):
        b.kv_attention_plan(np.array([3, 4], np.int32), _cu([1]), _cu([4]), np.array([7], np.int32), None)
    with pytest.raises(BadRequestError, match="negative"):
        b.kv_attention_plan(np.array([0], np.int32), _cu([1]), _cu([1]), np.array([-2], np.int32), None)
    with pytest.raises(BadRequestError, match="rope style"):
        b.kv_attention_plan(np.array([0], np.int32), _cu([1]), _cu([1]), np.array([0], np.int32), None,
                            np.ones(4, np.float32), "sideways")
    # a cache with too few rows for the plan's slots
    qkv = b.upload(np.zeros((1, 3 * 8), np.float32))
    q, k, v = (b.view(p, (1, 1, 8)) for p in b.split(qkv, [8, 8, 8]))
    small = b.zeros((4, 8))
    with pytest.raises(BadRequestError, match="k_cache"):
        b.kv_attention(q, k, v, small, b.zeros((8, 8)), plan, 0.3)


def test_lazy_reader_references_stay_bounded():
    # every column view of a buffer is remembered (weakly) so a write into the buffer can make it
    # contiguous first; dead references are dropped, so a decode loop does not grow them (their
    # growth set off the garbage collector's full passes in the middle of decode steps)
    b = OpenCLBackend()
    x = b.upload(np.arange(12, dtype=np.float32).reshape(2, 6))
    for _ in range(200):
        b.split(x, [2, 4])
    assert len(b._readers[id(x.buf)]) <= 34
    keep = b.split(x, [3, 3])  # live views survive the pruning and still see the values they were made with
    for _ in range(100):
        b.split(x, [2, 4])
    b.scatter_rows(x, np.array([0]), b.upload(np.zeros((1, 6), np.float32)))
    np.testing.assert_array_equal(b.download(keep[1]), [[3, 4, 5], [9, 10, 11]])
