"""Packed variable-length attention streaming over the keys with an online softmax.

The rows of a task are (query, head) pairs that share one KV head: with grouped KV heads
(``Hq = group * Hkv``) the ``group`` query heads of each query position read the same keys and
values, so a task reads them once for all of them (a decode step of a GQA model has ``group``
rows, not one). One parallel task is (sequence, KV head, block of up to ``QUERY_BLOCK`` rows).
It walks the keys its rows may see in blocks of ``KEY_BLOCK``, keeping per row the running
maximum, the running sum of exponentials and the weighted sum of values, so memory never holds
more than a ``[QUERY_BLOCK, KEY_BLOCK]`` tile of scores. Masks are ranges (causal: keys up to the
query's position; window: the last ``window`` of those), so fully masked key blocks cost nothing.

With enough rows (prefill, encoders) both products run on the register-tile microkernel
(``tile.attention_tile``); with a few (decode) the scores are dot products along k's own rows and
the keys are never transposed.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .elementwise import row_max
from .rope import rope_angles, rope_token
from .scalar import exp32, maxnum32
from .tile import ATTENTION_SHAPE, attention_tile
from .twin import twins

MR, NR = ATTENTION_SHAPE
QUERY_BLOCK = 8 * MR  # rows (query, head) per task
KEY_BLOCK = 4 * NR  # a multiple of 16: score rows are padded to whole vectors
TILED_ROWS = MR // 2  # fewer rows or query positions (decode): no tiles, no transposed keys

_OPTS = dict(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})


@numba.njit(parallel=True, **_OPTS)
def transpose_keys(k, kt):
    """k ``[T, H, D]`` → kt ``[H, D, T + NR]`` (zero tail) so query rows meet keys along
    contiguous memory and a tile may read NR columns past the last key."""
    tokens, heads, dim = k.shape
    cols = kt.shape[2]
    for h in prange(heads):
        kh = kt[h]
        for t in range(tokens):  # reads whole rows of k; writes D streams along kt's rows
            src = k[t, h]
            for d in range(dim):
                kh[d, t] = src[d]
        for d in range(dim):
            row = kh[d]
            for t in range(tokens, cols):
                row[t] = 0.0


@twins(**_OPTS)
def attention_blocks(q, k, kt, v, key_rows, cu_q, cu_k, tasks, scale, causal, window, out):
    """q ``[Tq, Hq, D]``, k ``[Tk, Hkv, D]``, v ``[Tk, Hkv, Dv]`` → out ``[Tq, Hq, Dv]``.

    ``kt`` is k transposed (``transpose_keys``; no columns: none), read only by blocks of at
    least ``TILED_ROWS`` rows in sequences of at least ``TILED_ROWS`` queries.
    ``tasks[n] = (sequence, KV head, first row)``; row ``r`` of a sequence is query
    ``r // group`` through query head ``kvh * group + r % group``. ``window <= 0``: no window.
    Key ``j`` of the keys ``cu_k`` gives is row ``j`` of k and v, or row ``key_rows[j]`` when
    ``key_rows`` is not empty (a paged KV cache; then ``kt`` must have no columns)."""
    for n in prange(tasks.shape[0]):
        _attend(n, q, k, kt, v, key_rows, cu_q, cu_k, tasks, scale, causal, window, out)


@twins(**_OPTS)
def rope_store_attend(q, k, v, positions, inv_freq, interleaved, rope_scale, k_cache, v_cache, write_rows,
                      read_rows, cu_q, cu_k, tasks, scale, window, qr, out):
    """A decode step of one attention layer through a paged KV cache, in one call: q and k
    ``[T, H, D]`` rotated (``rope.rope_token``; no frequencies: copied), the new keys and values
    written to rows ``write_rows`` of ``k_cache`` / ``v_cache`` ``[S, Hkv, D]``, then causal
    ``attention_blocks`` over the cache rows ``read_rows``. ``qr`` ``[T, Hq, D]``: scratch for
    the rotated queries; ``tasks`` must give no task ``TILED_ROWS`` query positions."""
    half = inv_freq.shape[0]
    for t in prange(q.shape[0]):
        cos = np.empty(half, dtype=np.float32)
        sin = np.empty(half, dtype=np.float32)
        rope_angles(positions[t], inv_freq, rope_scale, cos, sin)
        rope_token(q[t], cos, sin, interleaved, qr[t])
        rope_token(k[t], cos, sin, interleaved, k_cache[write_rows[t]])
        vs, vd = v[t], v_cache[write_rows[t]]
        for h in range(vs.shape[0]):
            vsh, vdh = vs[h], vd[h]
            for e in range(vsh.shape[0]):
                vdh[e] = vsh[e]
    no_kt = np.empty((0, 0, 0), dtype=np.float32)
    for n in prange(tasks.shape[0]):
        _attend(n, qr, k_cache, no_kt, v_cache, read_rows, cu_q, cu_k, tasks, scale, True, window, out)


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _attend(n, q, k, kt, v, key_rows, cu_q, cu_k, tasks, scale, causal, window, out):
    """Task ``n`` of ``attention_blocks``."""
    hq = q.shape[1]
    dim = q.shape[2]
    hkv = v.shape[1]
    dv = v.shape[2]
    group = hq // hkv
    kt_cols = kt.shape[2]
    paged = key_rows.shape[0] > 0
    ktf = kt.reshape(-1)
    vf = v.reshape(-1)
    neg_inf = numba.float32(-np.inf)
    b = tasks[n, 0]
    kvh = tasks[n, 1]
    row0 = tasks[n, 2]
    q0 = cu_q[b]
    lq = cu_q[b + 1] - q0
    k0 = cu_k[b]
    lk = cu_k[b + 1] - k0
    nq = min(QUERY_BLOCK, lq * group - row0)
    tiled = kt_cols > 0 and nq >= TILED_ROWS and lq >= TILED_ROWS  # decode steps never transpose the keys
    rows = (nq + MR - 1) // MR * MR  # tiles write whole MR-row strips
    shift = lk - lq  # query i sits at key position i + shift
    qs = np.empty((rows, dim), dtype=np.float32)
    for r in range(nq):
        i = (row0 + r) // group
        src = q[q0 + i, kvh * group + (row0 + r) % group]
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
    # keys any row of the block may see
    first_query = row0 // group
    last_query = (row0 + nq - 1) // group
    k_hi = lk
    if causal:
        k_hi = min(lk, last_query + shift + 1)
    k_lo = 0
    if window > 0:
        k_lo = max(0, first_query + shift - window + 1)
    for j0 in range(k_lo, k_hi, KEY_BLOCK):
        width = min(k_hi, j0 + KEY_BLOCK) - j0
        key0 = k0 + j0
        # scores s[r, :width] = qs[r] . k
        if tiled:
            for r0 in range(0, nq, MR):
                for c0 in range(0, width, NR):
                    attention_tile(qsf, r0 * dim, dim, nq - r0, ktf, (kvh * dim) * kt_cols + key0 + c0,
                                   kt_cols, dim, sf, r0 * KEY_BLOCK + c0, KEY_BLOCK, False)
        else:  # a few rows (decode): dot products along k's own rows, each key read once
            for j in range(width):
                kr = k[key_rows[key0 + j], kvh] if paged else k[key0 + j, kvh]
                for r in range(nq):
                    t = numba.float32(0.0)
                    for d in range(dim):
                        t += qs[r, d] * kr[d]
                    s[r, j] = t
        # masks as ranges, then the online softmax update of each row; the row loops run
        # over whole 16-lane vectors (masked tail = -inf, exp = 0) so none ends in scalar code
        padded = (width + 15) // 16 * 16
        for r in range(nq):
            srow = s[r, :padded]
            pos = (row0 + r) // group + shift
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
                    attention_tile(sf, r0 * KEY_BLOCK, KEY_BLOCK, nq - r0, vf, (key0 * hkv + kvh) * dv + e0,
                                   hkv * dv, width, accf, r0 * dv + e0, dv, True)
        else:
            width4 = width - width % 4
            for j in range(0, width4, 4):  # four keys per pass: fewer dependent updates of a row
                if paged:
                    va = v[key_rows[key0 + j], kvh]
                    vb = v[key_rows[key0 + j + 1], kvh]
                    vc = v[key_rows[key0 + j + 2], kvh]
                    vd = v[key_rows[key0 + j + 3], kvh]
                else:
                    va = v[key0 + j, kvh]
                    vb = v[key0 + j + 1, kvh]
                    vc = v[key0 + j + 2, kvh]
                    vd = v[key0 + j + 3, kvh]
                for r in range(nq):
                    pa = s[r, j]
                    pb = s[r, j + 1]
                    pc = s[r, j + 2]
                    pd = s[r, j + 3]
                    for e in range(dv):
                        acc[r, e] += pa * va[e] + pb * vb[e] + pc * vc[e] + pd * vd[e]
            for j in range(width4, width):
                va = v[key_rows[key0 + j], kvh] if paged else v[key0 + j, kvh]
                for r in range(nq):
                    pa = s[r, j]
                    for e in range(dv):
                        acc[r, e] += pa * va[e]
    for r in range(nq):
        inv = numba.float32(1.0 / run_sum[r]) if run_sum[r] > 0.0 else numba.float32(0.0)
        arow = acc[r]
        orow = out[q0 + (row0 + r) // group, kvh * group + (row0 + r) % group]
        for e in range(dv):
            orow[e] = arow[e] * inv


@numba.njit(cache=True, error_model="numpy")
def make_tasks(cu_q, kv_heads, group):
    """(sequence, KV head, first row) for every block of rows, longest sequences first (a few
    microseconds: it runs once per forward pass, or per call of ``attention``)."""
    n = cu_q.shape[0] - 1
    lengths = np.empty(n, dtype=np.int64)
    for b in range(n):
        lengths[b] = cu_q[b + 1] - cu_q[b]
    blocks = (lengths * group + QUERY_BLOCK - 1) // QUERY_BLOCK
    order = np.argsort(-lengths, kind="mergesort")  # stable: equal lengths keep their order
    tasks = np.empty((int(blocks.sum()) * kv_heads, 3), dtype=np.int32)
    t = 0
    for b in order:
        for block in range(blocks[b]):
            for h in range(kv_heads):
                tasks[t, 0] = b
                tasks[t, 1] = h
                tasks[t, 2] = block * QUERY_BLOCK
                t += 1
    return tasks
