"""Rotary position embedding (neox halves or interleaved pairs, partial rotary, scaled cos/sin)."""

from __future__ import annotations

import math

import numba
from numba import prange


@numba.njit(parallel=True, cache=True, error_model="numpy")
def rope_rows(x, positions, inv_freq, interleaved, scale, out):
    """x, out ``[T, H, D]``; angles ``positions[t] * inv_freq`` in float32, as the reference."""
    tokens, heads, dim = x.shape
    half = inv_freq.shape[0]
    for t in prange(tokens):
        pos = numba.float32(positions[t])
        for i in range(half):
            angle = pos * inv_freq[i]  # float32 product, like the numpy reference
            cos = numba.float32(math.cos(angle) * scale)
            sin = numba.float32(math.sin(angle) * scale)
            if interleaved:
                a, b = 2 * i, 2 * i + 1
            else:
                a, b = i, i + half
            for h in range(heads):
                x1 = x[t, h, a]
                x2 = x[t, h, b]
                out[t, h, a] = x1 * cos - x2 * sin
                out[t, h, b] = x2 * cos + x1 * sin
        for h in range(heads):
            for j in range(2 * half, dim):
                out[t, h, j] = x[t, h, j]
