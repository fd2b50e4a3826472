"""Packed variable-length attention streaming over the keys with an online softmax.

One parallel task is (sequence, query head, block of up to ``QUERY_BLOCK`` queries). It walks the
keys the block may see in blocks of ``KEY_BLOCK``, keeping per query the running maximum, the
running sum of exponentials and the weighted sum of values, so memory never holds more than a
``[QUERY_BLOCK, KEY_BLOCK]`` tile of scores. Masks are ranges (causal: keys up to the query's
position; window: the last ``window`` of those), so fully masked key blocks cost nothing.

With enough queries (prefill, encoders) both products run on the register-tile microkernel
(``tile.attention_tile``); a decode step (one query per sequence) uses plain vector loops.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .elementwise import row_max
from .scalar import exp32, maxnum32
from .tile import ATTENTION_SHAPE, attention_tile

MR, NR = ATTENTION_SHAPE

QUERY_BLOCK = 8 * MR
KEY_BLOCK = 4 * NR  # a multiple of 16: score rows are padded to whole vectors

_OPTS = dict(parallel=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})


@numba.njit(**_OPTS)
def transpose_keys(k, kt):
    """k ``[T, H, D]`` → kt ``[H, D, T + NR]`` (zero tail) so query rows meet keys along
    contiguous memory and a tile may read NR columns past the last key."""
    tokens, heads, dim = k.shape
    for h in prange(heads):
        for d in range(dim):
            row = kt[h, d]
            for t in range(tokens):
                row[t] = k[t, h, d]
            for t in range(tokens, row.shape[0]):
                row[t] = 0.0


@numba.njit(**_OPTS)
def attention_blocks(q, kt, v, cu_q, cu_k, tasks, scale, causal, window, out):
    """q ``[Tq, Hq, D]``, kt ``[Hkv, D, Tk + NR]``, v ``[Tk, Hkv, Dv]`` → out ``[Tq, Hq, Dv]``.

    ``tasks[n] = (sequence, head, first query)``; ``window <= 0`` means no window."""
    hq = q.shape[1]
    dim = q.shape[2]
    hkv = v.shape[1]
    dv = v.shape[2]
    group = hq // hkv
    kt_cols = kt.shape[2]
    ktf = kt.reshape(-1)
    vf = v.reshape(-1)
    neg_inf = numba.float32(-np.inf)
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
        tiled = nq >= MR // 2
        rows = (nq + MR - 1) // MR * MR  # tiles write whole MR-row strips
        shift = lk - lq  # query i sits at key position i + shift
        qs = np.empty((rows, dim), dtype=np.float32)
        for r in range(nq):
            src = q[q0 + i0 + r, h]
            dst = qs[r]
            for d in range(dim):
                dst[d] = src[d] * scale
        acc = np.zeros((rows, dv), dtype=np.float32)
        run_max = np.full(rows, -np.inf, dtype=np.float32)
        run_sum = np.zeros(rows, dtype=np.float64)
        s = np.empty((rows, KEY_BLOCK), dtype=np.float32)
        qsf = qs.reshape(-1)
        sf = s.reshape(-1)
        accf = acc.reshape(-1)
        # keys any query of the block may see
        k_hi = lk
        if causal:
            k_hi = min(lk, i0 + nq - 1 + shift + 1)
        k_lo = 0
        if window > 0:
            k_lo = max(0, i0 + shift - window + 1)
        for j0 in range(k_lo, k_hi, KEY_BLOCK):
            width = min(k_hi, j0 + KEY_BLOCK) - j0
            key0 = k0 + j0
            # scores s[r, :width] = qs[r] . k
            if tiled:
                for r0 in range(0, nq, MR):
                    for c0 in range(0, width, NR):
                        attention_tile(qsf, r0 * dim, dim, nq - r0, ktf, (kvh * dim) * kt_cols + key0 + c0, kt_cols,
                                  dim, sf, r0 * KEY_BLOCK + c0, KEY_BLOCK, False)
            else:
                for r in range(nq):
                    srow = s[r, :width]
                    for j in range(width):
                        srow[j] = 0.0
                    for d in range(dim):
                        qd = qs[r, d]
                        krow = kt[kvh, d, key0:key0 + width]
                        for j in range(width):
                            srow[j] += qd * krow[j]
            # masks as ranges, then the online softmax update of each row; the row loops run
            # over whole 16-lane vectors (masked tail = -inf, exp = 0) so none ends in scalar code
            padded = (width + 15) // 16 * 16
            for r in range(nq):
                srow = s[r, :padded]
                pos = i0 + r + shift
                lo = 0
                hi = width
                if causal:
                    hi = min(hi, pos + 1 - j0)
                if window > 0:
                    lo = max(lo, pos - window + 1 - j0)
                if hi <= lo:  # nothing visible in this block: contributes nothing
                    for j in range(padded):
                        srow[j] = 0.0
                    continue
                for j in range(lo):
                    srow[j] = neg_inf
                for j in range(max(hi, 0), padded):
                    srow[j] = neg_inf
                m = maxnum32(run_max[r], row_max(srow, 0, padded))
                correction = exp32(run_max[r] - m)
                total = numba.float32(0.0)
                for j in range(padded):
                    p = exp32(srow[j] - m)
                    srow[j] = p
                    total += p
                run_sum[r] = run_sum[r] * correction + total
                run_max[r] = m
                arow = acc[r]
                for e in range(dv):
                    arow[e] *= correction
            # values: acc[r] += s[r, :width] @ v[keys]
            if tiled and dv % NR == 0:
                for r0 in range(0, nq, MR):
                    for e0 in range(0, dv, NR):
                        attention_tile(sf, r0 * KEY_BLOCK, KEY_BLOCK, nq - r0, vf, (key0 * hkv + kvh) * dv + e0, hkv * dv,
                                  width, accf, r0 * dv + e0, dv, True)
            else:
                width4 = width - width % 4
                for r in range(nq):
                    arow = acc[r]
                    srow = s[r]
                    for j in range(0, width4, 4):  # four keys per pass: fewer dependent updates of arow
                        pa = srow[j]
                        pb = srow[j + 1]
                        pc = srow[j + 2]
                        pd = srow[j + 3]
                        va = v[key0 + j, kvh]
                        vb = v[key0 + j + 1, kvh]
                        vc = v[key0 + j + 2, kvh]
                        vd = v[key0 + j + 3, kvh]
                        for e in range(dv):
                            arow[e] += pa * va[e] + pb * vb[e] + pc * vc[e] + pd * vd[e]
                    for j in range(width4, width):
                        pa = srow[j]
                        va = v[key0 + j, kvh]
                        for e in range(dv):
                            arow[e] += pa * va[e]
        for r in range(nq):
            inv = numba.float32(1.0 / run_sum[r]) if run_sum[r] > 0.0 else numba.float32(0.0)
            arow = acc[r]
            orow = out[q0 + i0 + r, h]
            for e in range(dv):
                orow[e] = arow[e] * inv


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
