"""Rotary position embedding (neox halves or interleaved pairs, partial rotary, scaled cos/sin)."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from .twin import twins

INLINE = dict(inline="always", cache=True, error_model="numpy")


@numba.njit(**INLINE)
def rope_angles(position, inv_freq, scale, cos, sin):
    """cos / sin of ``position * inv_freq`` (a float32 product, like the numpy reference), times ``scale``."""
    pos = numba.float32(position)
    for i in range(inv_freq.shape[0]):
        angle = pos * inv_freq[i]
        cos[i] = numba.float32(math.cos(angle) * scale)
        sin[i] = numba.float32(math.sin(angle) * scale)


@numba.njit(**INLINE)
def rope_token(x, cos, sin, interleaved, out):
    """One token ``x [H, D]`` → ``out [H, D]`` (may be another array's row, never ``x``)."""
    half = cos.shape[0]
    for h in range(x.shape[0]):
        xh, oh = x[h], out[h]
        if interleaved:
            for i in range(half):
                x1 = xh[2 * i]
                x2 = xh[2 * i + 1]
                oh[2 * i] = x1 * cos[i] - x2 * sin[i]
                oh[2 * i + 1] = x2 * cos[i] + x1 * sin[i]
        else:  # halves: a loop along contiguous memory, vectorised
            x1s, x2s, o1s, o2s = xh[:half], xh[half:2 * half], oh[:half], oh[half:2 * half]
            for i in range(half):
                x1 = x1s[i]
                x2 = x2s[i]
                o1s[i] = x1 * cos[i] - x2 * sin[i]
                o2s[i] = x2 * cos[i] + x1 * sin[i]
        for j in range(2 * half, xh.shape[0]):
            oh[j] = xh[j]


@twins(cache=True, error_model="numpy")
def rope_rows(x, positions, inv_freq, interleaved, scale, out):
    """x, out ``[T, H, D]``; angles ``positions[t] * inv_freq`` in float32, as the reference."""
    half = inv_freq.shape[0]
    for t in prange(x.shape[0]):
        cos = np.empty(half, dtype=np.float32)
        sin = np.empty(half, dtype=np.float32)
        rope_angles(positions[t], inv_freq, scale, cos, sin)
        rope_token(x[t], cos, sin, interleaved, out[t])
