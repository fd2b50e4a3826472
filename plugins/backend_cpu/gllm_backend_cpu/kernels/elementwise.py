"""Row-parallel elementwise kernels: add / mul (with broadcasts), activations, softmax, top-k,
row gathers and column splits. Arrays are float32, C-contiguous, viewed as ``[rows, cols]``."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .scalar import (ACT_GELU, ACT_GELU_TANH, ACT_RELU, ACT_SILU, bf16_to_f32, exp32, f16_to_f32,
                     gelu32, gelu_tanh32, silu32)

PARALLEL = dict(parallel=True, cache=True, error_model="numpy")
# reassociation lets LLVM vectorise float sums; no nnan/ninf: masked -inf values must stay exact
SUMS = dict(PARALLEL, fastmath={"reassoc", "contract"})

CHUNK = 16384  # elements per parallel task in flat loops


@numba.njit(**PARALLEL)
def add_flat(a, b, out):
    n = a.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, c * CHUNK + CHUNK)):
            out[i] = a[i] + b[i]


@numba.njit(**PARALLEL)
def mul_flat(a, b, out):
    n = a.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, c * CHUNK + CHUNK)):
            out[i] = a[i] * b[i]


@numba.njit(**PARALLEL)
def add_row_vector(a, vec, out):
    for i in prange(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] + vec[j]


@numba.njit(**PARALLEL)
def mul_row_vector(a, vec, out):
    for i in prange(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] * vec[j]


@numba.njit(**PARALLEL)
def mul_column(a, col, out):
    for i in prange(a.shape[0]):
        c = col[i]
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] * c


@numba.njit(**PARALLEL)
def bias_activation(x, bias, act, y):
    """``y = act(x + bias)`` (``y`` may be ``x``); an empty ``bias`` means none. The branches
    sit outside the inner loops so each loop vectorises."""
    rows, cols = x.shape
    has_bias = bias.shape[0] == cols
    for i in prange(rows):
        if has_bias:
            for j in range(cols):
                y[i, j] = x[i, j] + bias[j]
        else:
            for j in range(cols):
                y[i, j] = x[i, j]
        if act == ACT_GELU:
            for j in range(cols):
                y[i, j] = gelu32(y[i, j])
        elif act == ACT_GELU_TANH:
            for j in range(cols):
                y[i, j] = gelu_tanh32(y[i, j])
        elif act == ACT_RELU:
            for j in range(cols):
                y[i, j] = max(y[i, j], numba.float32(0.0))
        elif act == ACT_SILU:
            for j in range(cols):
                y[i, j] = silu32(y[i, j])


@numba.njit(**PARALLEL)
def silu_mul(gate, up, out):
    for i in prange(gate.shape[0]):
        for j in range(gate.shape[1]):
            out[i, j] = silu32(gate[i, j]) * up[i, j]


@numba.njit(**SUMS)
def softmax_rows(x, out):
    rows, cols = x.shape
    for i in prange(rows):
        m = x[i, 0]
        for j in range(1, cols):
            m = max(m, x[i, j])
        s = 0.0  # float64: long rows (a vocabulary) must not lose the small terms
        for j in range(cols):
            e = exp32(x[i, j] - m)
            out[i, j] = e
            s += e
        inv = numba.float32(1.0 / s)
        for j in range(cols):
            out[i, j] *= inv


@numba.njit(parallel=True, cache=True)
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


@numba.njit(**PARALLEL)
def gather_rows_f32(table, ids, out):
    for t in prange(ids.shape[0]):
        r = ids[t]
        for j in range(table.shape[1]):
            out[t, j] = table[r, j]


@numba.njit(**PARALLEL)
def gather_rows_16(table, bf16, ids, out):
    """Rows of a 16-bit table (uint16 bits of f16, or of bf16 when ``bf16``) as float32."""
    for t in prange(ids.shape[0]):
        r = ids[t]
        if bf16:
            for j in range(table.shape[1]):
                out[t, j] = bf16_to_f32(table[r, j])
        else:
            for j in range(table.shape[1]):
                out[t, j] = f16_to_f32(table[r, j])


@numba.njit(**PARALLEL)
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
            for j in range(size):
                out[base + j] = x[i, c0 + j]


@numba.njit(**PARALLEL)
def scatter_rows(dst, rows, src, accumulate):
    """``dst[rows[t]] = src[t]`` (or ``+=``); rows are distinct, so tasks never collide."""
    for t in prange(rows.shape[0]):
        r = rows[t]
        if accumulate:
            for j in range(dst.shape[1]):
                dst[r, j] += src[t, j]
        else:
            for j in range(dst.shape[1]):
                dst[r, j] = src[t, j]
