"""Packed variable-length attention streaming over the keys with an online softmax.

One parallel task is (sequence, query head, block of up to ``QUERY_BLOCK`` queries). It walks the
keys the block may see in blocks of ``KEY_BLOCK``, keeping per query the running maximum, the
running sum of exponentials and the weighted sum of values, so memory never holds a
``[queries, keys]`` score matrix. Masks are ranges (causal: keys up to the query's position;
window: the last ``window`` of those), so masked keys cost nothing.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .scalar import exp32

QUERY_BLOCK = 64
KEY_BLOCK = 128

_OPTS = dict(parallel=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})


@numba.njit(**_OPTS)
def transpose_keys(k, kt):
    """k ``[T, H, D]`` → kt ``[H, D, T]`` so a query row meets keys along contiguous memory."""
    tokens, heads, dim = k.shape
    for h in prange(heads):
        for t in range(tokens):
            for d in range(dim):
                kt[h, d, t] = k[t, h, d]


@numba.njit(**_OPTS)
def attention_blocks(q, kt, v, cu_q, cu_k, tasks, scale, causal, window, out):
    """q ``[Tq, Hq, D]``, kt ``[Hkv, D, Tk]``, v ``[Tk, Hkv, Dv]`` → out ``[Tq, Hq, Dv]``.

    ``tasks[n] = (sequence, head, first query)``; ``window <= 0`` means no window."""
    hq = q.shape[1]
    dim = q.shape[2]
    dv = v.shape[2]
    group = hq // kt.shape[0]
    for n in prange(tasks.shape[0]):
        b = tasks[n, 0]
        h = tasks[n, 1]
        i0 = tasks[n, 2]
        kvh = h // group
        q0 = cu_q[b]
        lq = cu_q[b + 1] - q0
        k0 = cu_k[b]
        lk = cu_k[b + 1] - k0
        nq = min(QUERY_BLOCK, lq - i0)
        shift = lk - lq  # query i sits at key position i + shift
        qs = np.empty((nq, dim), dtype=np.float32)
        for r in range(nq):
            for d in range(dim):
                qs[r, d] = q[q0 + i0 + r, h, d] * scale
        acc = np.zeros((nq, dv), dtype=np.float32)
        run_max = np.full(nq, -np.inf, dtype=np.float32)
        run_sum = np.zeros(nq, dtype=np.float64)
        s = np.empty(KEY_BLOCK, dtype=np.float32)
        # keys any query of the block may see
        k_hi = lk
        if causal:
            k_hi = min(lk, i0 + nq - 1 + shift + 1)
        k_lo = 0
        if window > 0:
            k_lo = max(0, i0 + shift - window + 1)
        for j0 in range(k_lo, k_hi, KEY_BLOCK):
            j1 = min(k_hi, j0 + KEY_BLOCK)
            for r in range(nq):
                pos = i0 + r + shift
                lo = j0
                hi = j1
                if causal:
                    hi = min(hi, pos + 1)
                if window > 0:
                    lo = max(lo, pos - window + 1)
                if hi <= lo:
                    continue
                width = hi - lo
                base = k0 + lo
                for j in range(width):
                    s[j] = 0.0
                for d in range(dim):
                    qd = qs[r, d]
                    for j in range(width):
                        s[j] += qd * kt[kvh, d, base + j]
                m = run_max[r]
                for j in range(width):
                    m = max(m, s[j])
                correction = exp32(run_max[r] - m)
                total = 0.0
                for j in range(width):
                    p = exp32(s[j] - m)
                    s[j] = p
                    total += p
                run_sum[r] = run_sum[r] * correction + total
                run_max[r] = m
                for e in range(dv):
                    acc[r, e] *= correction
                for j in range(width):
                    p = s[j]
                    for e in range(dv):
                        acc[r, e] += p * v[base + j, kvh, e]
        for r in range(nq):
            inv = numba.float32(1.0 / run_sum[r]) if run_sum[r] > 0.0 else numba.float32(0.0)
            for e in range(dv):
                out[q0 + i0 + r, h, e] = acc[r, e] * inv


def make_tasks(cu_q: np.ndarray, heads: int) -> np.ndarray:
    """(sequence, head, first query) for every block, longest sequences first (balance)."""
    lengths = np.diff(cu_q).astype(np.int64)
    blocks = (lengths + QUERY_BLOCK - 1) // QUERY_BLOCK
    seq = np.repeat(np.arange(len(lengths)), blocks)
    first = np.arange(int(blocks.sum())) - np.repeat(np.cumsum(blocks) - blocks, blocks)
    order = np.argsort(-lengths[seq], kind="stable")
    seq, first = seq[order], first[order] * QUERY_BLOCK
    tasks = np.empty((len(seq) * heads, 3), dtype=np.int32)
    tasks[:, 0] = np.repeat(seq, heads)
    tasks[:, 1] = np.tile(np.arange(heads), len(seq))
    tasks[:, 2] = np.repeat(first, heads)
    return tasks
