"""A paged KV cache: keys and values live in backend-owned blocks shared by a model's sequences.

A ``KVPool`` holds, per layer, one ``[slots, width]`` float32 backend array for keys and one for
values (``width`` = KV heads × head dim); slots come in blocks of ``block_size`` tokens. Each
sequence's ``PagedKVCache`` owns a list of blocks (its block table): token ``p`` of the sequence
lives in slot ``blocks[p // block_size] * block_size + p % block_size`` of every layer.

A forward pass writes the new tokens' keys and values into their slots (``scatter_rows``) and
hands attention each sequence's keys contiguously (``take_rows`` over its slots). Nothing is
re-copied when a token is appended; when the pool runs out of blocks it doubles, copying the old
storage once.
"""

from __future__ import annotations

import threading

import numpy as np

from .errors import BadRequestError


class KVPool:
    """The storage of one model's KV caches; thread-safe block allocation."""

    def __init__(self, backend, num_layers: int, k_width: int, v_width: int, block_size: int = 256,
                 initial_blocks: int = 4):
        if block_size < 1:
            raise BadRequestError(f"KV block size must be at least 1, got {block_size}")
        self.backend = backend
        self.num_layers = num_layers
        self.k_width, self.v_width = int(k_width), int(v_width)
        self.block_size = int(block_size)
        self.initial_blocks = max(1, int(initial_blocks))
        self.k: list = [None] * num_layers  # per layer [capacity * block_size, k_width]
        self.v: list = [None] * num_layers
        self.capacity = 0  # blocks
        self._free: list[int] = []
        self._lock = threading.RLock()  # a cache collected by the GC during _grow releases re-entrantly

    @property
    def blocks_in_use(self) -> int:
        return self.capacity - len(self._free)

    def allocate(self, n: int) -> list[int]:
        with self._lock:
            if len(self._free) < n:
                self._grow(self.blocks_in_use + n)
            taken, self._free = self._free[:n], self._free[n:]
            return taken

    def release(self, blocks: list[int]) -> None:
        if blocks:
            with self._lock:
                self._free.extend(blocks)
                self._free.sort()  # hand out low blocks first: keeps the used part of the pool compact

    def _grow(self, needed: int) -> None:
        new_capacity = max(needed, 2 * self.capacity, self.initial_blocks)
        b, bs = self.backend, self.block_size
        old_rows = np.arange(self.capacity * bs, dtype=np.int32)
        for layer in range(self.num_layers):
            for store, width in ((self.k, self.k_width), (self.v, self.v_width)):
                grown = b.zeros((new_capacity * bs, width))
                if self.capacity:
                    b.scatter_rows(grown, old_rows, store[layer])
                store[layer] = grown
        self._free.extend(range(self.capacity, new_capacity))
        self.capacity = new_capacity


class PagedKVCache:
    """The keys and values of one sequence (``gllm_core.causal_lm.KVCache``)."""

    def __init__(self, pool: KVPool):
        self.pool = pool
        self.blocks: list[int] = []
        self._length = 0
        self._freed = False

    @property
    def length(self) -> int:
        return self._length

    @property
    def freed(self) -> bool:
        return self._freed

    def _check(self) -> None:
        if self._freed:
            raise BadRequestError("this KV cache was freed and cannot be used again")

    def reserve(self, length: int) -> None:
        """Make sure blocks exist for ``length`` tokens."""
        self._check()
        need = -(-length // self.pool.block_size) - len(self.blocks)
        if need > 0:
            self.blocks.extend(self.pool.allocate(need))

    def slots(self, start: int, stop: int) -> np.ndarray:
        """Pool slots (host int32) of the tokens at positions ``start:stop`` (blocks reserved)."""
        bs = self.pool.block_size
        positions = np.arange(start, stop, dtype=np.int64)
        table = np.asarray(self.blocks, dtype=np.int64)
        return (table[positions // bs] * bs + positions % bs).astype(np.int32)

    def advance(self, n: int) -> None:
        """Count ``n`` more tokens as stored (their keys and values were written)."""
        self._length += n

    def truncate(self, length: int) -> None:
        self._check()
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 0 <= length <= self._length:
            raise BadRequestError(f"cannot truncate a KV cache of {self._length} tokens to {length!r}")
        self._length = int(length)
        keep = -(-self._length // self.pool.block_size)
        released, self.blocks = self.blocks[keep:], self.blocks[:keep]
        self.pool.release(released)

    def fork(self) -> "PagedKVCache":
        """A new cache holding a copy of this one's tokens (n completions of one prompt)."""
        self._check()
        other = PagedKVCache(self.pool)
        if self._length:
            other.reserve(self._length)
            src, dst = self.slots(0, self._length), other.slots(0, self._length)
            b, pool = self.pool.backend, self.pool
            for layer in range(pool.num_layers):
                for store in (pool.k, pool.v):
                    b.scatter_rows(store[layer], dst, b.take_rows(store[layer], src))
            other._length = self._length
        return other

    def free(self) -> None:
        if not self._freed:
            self._freed = True
            blocks, self.blocks = self.blocks, []
            self._length = 0
            self.pool.release(blocks)

    def __del__(self):
        try:
            self.free()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn the pool down
            pass

    def __repr__(self) -> str:
        state = "freed" if self._freed else f"{self._length} tokens in {len(self.blocks)} blocks"
        return f"<PagedKVCache {state}>"
