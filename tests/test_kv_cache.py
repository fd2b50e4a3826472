"""The paged KV cache: block allocation, growth, truncation, forking, freeing (numpy backend)."""

import numpy as np
import pytest

from gllm_core.backends.numpy_backend import NumpyBackend
from gllm_core.errors import BadRequestError
from gllm_core.kv_cache import KVPool, PagedKVCache


def _write(pool, cache, start, stop):
    """Store token p's keys as p + layer/10 and values as -(p + layer/10)."""
    cache.reserve(stop)
    slots = cache.slots(start, stop)
    for layer in range(pool.num_layers):
        rows = np.arange(start, stop, dtype=np.float32)[:, None] + layer / 10
        pool.backend.scatter_rows(pool.k[layer], slots, np.repeat(rows, pool.k_width, 1))
        pool.backend.scatter_rows(pool.v[layer], slots, -np.repeat(rows, pool.v_width, 1))
    cache.advance(stop - start)


def _read(pool, cache, layer=0):
    slots = cache.slots(0, cache.length)
    return pool.backend.take_rows(pool.k[layer], slots)[:, 0], pool.backend.take_rows(pool.v[layer], slots)[:, 0]


def test_blocks_grow_without_moving_tokens_and_are_reused():
    pool = KVPool(NumpyBackend(), num_layers=2, k_width=3, v_width=5, block_size=4, initial_blocks=1)
    a, b = PagedKVCache(pool), PagedKVCache(pool)
    _write(pool, a, 0, 3)
    _write(pool, b, 0, 9)  # b needs 3 blocks: the pool doubles, then grows to fit
    _write(pool, a, 3, 11)
    assert pool.capacity >= 6 and pool.blocks_in_use == 6
    for cache, n in ((a, 11), (b, 9)):
        for layer in (0, 1):
            k, v = _read(pool, cache, layer)
            np.testing.assert_allclose(k, np.arange(n) + layer / 10, rtol=1e-6)
            np.testing.assert_allclose(v, -(np.arange(n) + layer / 10), rtol=1e-6)
    capacity = pool.capacity
    b.free()
    assert pool.blocks_in_use == 3 and b.freed and b.length == 0
    c = PagedKVCache(pool)
    _write(pool, c, 0, 12)
    assert pool.capacity == capacity  # freed blocks were reused, nothing grew
    k, _ = _read(pool, a)
    np.testing.assert_allclose(k, np.arange(11), rtol=1e-6)


def test_truncate_releases_whole_blocks_and_rewrites():
    pool = KVPool(NumpyBackend(), num_layers=1, k_width=2, v_width=2, block_size=4)
    cache = PagedKVCache(pool)
    _write(pool, cache, 0, 10)
    cache.truncate(5)
    assert cache.length == 5 and len(cache.blocks) == 2 and pool.blocks_in_use == 2
    _write(pool, cache, 5, 7)
    k, _ = _read(pool, cache)
    np.testing.assert_allclose(k, np.arange(7), rtol=1e-6)
    cache.truncate(0)
    assert cache.blocks == [] and pool.blocks_in_use == 0
    for bad in (-1, 1, 2.5, True):
        with pytest.raises(BadRequestError, match="cannot truncate"):
            cache.truncate(bad)


def test_fork_copies_tokens_into_new_blocks():
    pool = KVPool(NumpyBackend(), num_layers=2, k_width=2, v_width=3, block_size=3)
    cache = PagedKVCache(pool)
    _write(pool, cache, 0, 7)
    twin = cache.fork()
    assert twin.length == 7 and not set(twin.blocks) & set(cache.blocks)
    _write(pool, twin, 7, 8)
    cache.truncate(2)
    _write(pool, cache, 2, 4)
    for layer in (0, 1):
        k, v = _read(pool, twin, layer)
        np.testing.assert_allclose(k, np.arange(8) + layer / 10, rtol=1e-6)
        np.testing.assert_allclose(v, -(np.arange(8) + layer / 10), rtol=1e-6)


def test_a_freed_cache_refuses_use_and_garbage_collection_frees():
    pool = KVPool(NumpyBackend(), num_layers=1, k_width=1, v_width=1, block_size=2)
    cache = PagedKVCache(pool)
    _write(pool, cache, 0, 5)
    cache.free()
    cache.free()  # idempotent
    for use in (lambda: cache.reserve(1), lambda: cache.truncate(0), cache.fork):
        with pytest.raises(BadRequestError, match="freed"):
            use()
    dropped = PagedKVCache(pool)
    _write(pool, dropped, 0, 3)
    assert pool.blocks_in_use == 2
    del dropped
    assert pool.blocks_in_use == 0


def test_block_size_must_be_positive():
    with pytest.raises(BadRequestError, match="block size"):
        KVPool(NumpyBackend(), 1, 1, 1, block_size=0)
