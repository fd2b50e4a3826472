"""The interface between the generation engine and decoder architectures.

An architecture plugin's ``build`` returns an object with ``tasks = ("generate",)`` that follows
``CausalLM``; the engine (batching, chunked prefill, sampling, stop handling) only ever talks to
it through these methods, so every decoder family and every backend serve the same engine.

Each sequence owns a ``KVCache`` made by ``model.new_cache()``. The cache grows in blocks as
tokens are appended (never re-copied per token) and lives wherever the backend keeps its arrays.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class KVCache(Protocol):
    """Keys and values of one sequence, for every layer."""

    @property
    def length(self) -> int:
        """Tokens already stored (the position of the next token)."""

    def truncate(self, length: int) -> None:
        """Forget everything after ``length`` tokens (rewind)."""

    def free(self) -> None:
        """Give the cache's blocks back; the cache is unusable afterwards."""


class CausalLM(Protocol):
    tasks: tuple[str, ...]  # contains "generate"
    vocab_size: int
    max_position_embeddings: int

    def new_cache(self) -> KVCache:
        """An empty cache for one new sequence."""

    def forward(self, tokens: Sequence[Sequence[int]], caches: Sequence[KVCache],
                all_logits: bool = False) -> np.ndarray | list[np.ndarray]:
        """Append ``tokens[i]`` (one or more new token ids) to sequence ``i`` and run them.

        Sequences of different lengths run together in one packed batch (a decode step is
        one token each; a prefill chunk is many). Returns host float32 logits: ``[B, vocab]``
        for the last new token of each sequence, or with ``all_logits`` a list of
        ``[len(tokens[i]), vocab]`` arrays. The caches are advanced by ``len(tokens[i])``."""
