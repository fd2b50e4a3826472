"""Group sequences into batches of similar length, for encoders that run many inputs at once."""

from __future__ import annotations

from typing import Iterator, Sequence


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> Iterator[list[int]]:
    """Indices of ``lengths`` in batches, shortest first: at most ``batch_size`` sequences and, when
    ``max_tokens`` is given, at most that many tokens (a longer sequence still gets a batch alone).

    Sorting by length keeps each batch's sequences alike, so the longest one does not hold back
    many short ones; callers put results back in input order by the indices."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    tokens = 0
    for i in order:
        if batch and (len(batch) >= batch_size or (max_tokens is not None and tokens + lengths[i] > max_tokens)):
            yield batch
            batch, tokens = [], 0
        batch.append(i)
        tokens += lengths[i]
    if batch:
        yield batch
