"""Row-parallel elementwise kernels: add / mul (with broadcasts), activations, softmax, top-k,
row gathers and column splits. Arrays are float32, C-contiguous, viewed as ``[rows, cols]``.

Inner loops index row views (``a[i]``, ``x[i, c0:c1]``) with a plain counter from 0: numba
fixes up negative indices on every access it cannot prove non-negative, and such a check inside
a loop stops it vectorising (a 3-5x difference on these memory-bound loops)."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .scalar import (ACT_GELU, ACT_GELU_TANH, ACT_RELU, ACT_SILU, bf16_to_f32, exp32, f16_to_f32,
                     gelu32, gelu_tanh32, maxnum32, silu32)
from .twin import twins

OPTS = dict(cache=True, error_model="numpy")
# reassociation lets LLVM vectorise float sums; no nnan/ninf: masked -inf values must stay exact
SUMS = dict(OPTS, fastmath={"reassoc", "contract"})

CHUNK = 16384  # elements per parallel task in flat loops


@numba.njit(cache=True, error_model="numpy")
def row_max(x, lo, hi):
    """max(x[lo:hi]), NaNs skipped (hi > lo)."""
    v = x[lo:hi]
    m = v[0]
    for j in range(1, v.shape[0]):
        m = maxnum32(m, v[j])
    return m


@twins(**OPTS)
def add_flat(a, b, out):
    n = a.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        hi = min(n, lo + CHUNK)
        av, bv, ov = a[lo:hi], b[lo:hi], out[lo:hi]
        for i in range(hi - lo):
            ov[i] = av[i] + bv[i]


@twins(**OPTS)
def mul_flat(a, b, out):
    n = a.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        hi = min(n, lo + CHUNK)
        av, bv, ov = a[lo:hi], b[lo:hi], out[lo:hi]
        for i in range(hi - lo):
            ov[i] = av[i] * bv[i]


@twins(**OPTS)
def add_row_vector(a, vec, out):
    for i in prange(a.shape[0]):
        ar, orow = a[i], out[i]
        for j in range(ar.shape[0]):
            orow[j] = ar[j] + vec[j]


@twins(**OPTS)
def mul_row_vector(a, vec, out):
    for i in prange(a.shape[0]):
        ar, orow = a[i], out[i]
        for j in range(ar.shape[0]):
            orow[j] = ar[j] * vec[j]


@twins(**OPTS)
def mul_column(a, col, out):
    for i in prange(a.shape[0]):
        c = col[i]
        ar, orow = a[i], out[i]
        for j in range(ar.shape[0]):
            orow[j] = ar[j] * c


@twins(**OPTS)
def bias_activation(x, bias, act, y):
    """``y = act(x + bias)`` (``y`` may be ``x``); an empty ``bias`` means none. The branches
    sit outside the inner loops so each loop vectorises."""
    rows, cols = x.shape
    has_bias = bias.shape[0] == cols
    for i in prange(rows):
        xr, yr = x[i], y[i]
        if has_bias:
            for j in range(cols):
                yr[j] = xr[j] + bias[j]
        else:
            for j in range(cols):
                yr[j] = xr[j]
        if act == ACT_GELU:
            for j in range(cols):
                yr[j] = gelu32(yr[j])
        elif act == ACT_GELU_TANH:
            for j in range(cols):
                yr[j] = gelu_tanh32(yr[j])
        elif act == ACT_RELU:
            for j in range(cols):
                yr[j] = max(yr[j], numba.float32(0.0))
        elif act == ACT_SILU:
            for j in range(cols):
                yr[j] = silu32(yr[j])


@twins(**OPTS)
def silu_mul(gate, up, out):
    for i in prange(gate.shape[0]):
        g, u, o = gate[i], up[i], out[i]
        for j in range(g.shape[0]):
            o[j] = silu32(g[j]) * u[j]


@twins(**SUMS)
def softmax_rows(x, out):
    rows, cols = x.shape
    for i in prange(rows):
        xr, o = x[i], out[i]
        m = row_max(xr, 0, cols)
        s = 0.0  # float64: long rows (a vocabulary) must not lose the small terms
        for j in range(cols):
            e = exp32(xr[j] - m)
            o[j] = e
            s += e
        inv = numba.float32(1.0 / s)
        for j in range(cols):
            o[j] *= inv


@twins(cache=True)
def top_k_rows(x, k, values, indices):
    """k largest per row, descending; among equal values the lower index comes first."""
    rows, cols = x.shape
    for i in prange(rows):
        n = 0
        for j in range(cols):
            v = x[i, j]
            if v != v:  # NaN never ranks
                continue
            if n == k and not v > values[i, k - 1]:
                continue
            p = n if n < k else k - 1
            while p > 0 and v > values[i, p - 1]:
                values[i, p] = values[i, p - 1]
                indices[i, p] = indices[i, p - 1]
                p -= 1
            values[i, p] = v
            indices[i, p] = j
            if n < k:
                n += 1
        for j in range(cols):  # fewer than k numbers: NaNs follow, in index order (as argsort)
            if n == k:
                break
            if x[i, j] != x[i, j]:
                values[i, n] = x[i, j]
                indices[i, n] = j
                n += 1


@twins(**OPTS)
def gather_rows_f32(table, ids, out):
    for t in prange(ids.shape[0]):
        src, dst = table[ids[t]], out[t]
        for j in range(dst.shape[0]):
            dst[j] = src[j]


@twins(**OPTS)
def gather_rows_16(table, bf16, ids, out):
    """Rows of a 16-bit table (uint16 bits of f16, or of bf16 when ``bf16``) as float32."""
    for t in prange(ids.shape[0]):
        src, dst = table[ids[t]], out[t]
        if bf16:
            for j in range(dst.shape[0]):
                dst[j] = bf16_to_f32(src[j])
        else:
            for j in range(dst.shape[0]):
                dst[j] = f16_to_f32(src[j])


@twins(**OPTS)
def split_columns(x, offsets, out):
    """Column blocks of ``x [T, C]`` into one flat buffer: block p (columns offsets[p]:offsets[p+1])
    becomes the contiguous ``[T, size_p]`` array at ``out[T * offsets[p]:]``."""
    rows = x.shape[0]
    parts = offsets.shape[0] - 1
    for i in prange(rows):
        for p in range(parts):
            c0 = offsets[p]
            size = offsets[p + 1] - c0
            base = rows * c0 + i * size
            src, dst = x[i, c0:c0 + size], out[base:base + size]
            for j in range(size):
                dst[j] = src[j]


@twins(**OPTS)
def scatter_rows(dst, rows, src, accumulate):
    """``dst[rows[t]] = src[t]`` (or ``+=``); rows are distinct, so tasks never collide."""
    for t in prange(rows.shape[0]):
        d, s = dst[rows[t]], src[t]
        if accumulate:
            for j in range(d.shape[0]):
                d[j] += s[j]
        else:
            for j in range(d.shape[0]):
                d[j] = s[j]
