"""Dense GEMM with the bias and activation fused into the tile store: ``act(x @ W.T + b)``.

W (``[N, K]``, f32 or the uint16 bits of f16/bf16) is packed per call into column panels of NR
outputs, ``[N/NR, K, NR]`` float32 (MR x NR = ``tile.LINEAR_SHAPE``), decoding 16-bit storage on
the way: each tile call streams one panel and one strip of MR rows of x, and 16-bit weights never
exist as a whole float32 copy. Tasks are (block of rows of x, group of panels), handed to numba's thread pool.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .scalar import ACT_GELU, ACT_GELU_TANH, ACT_RELU, ACT_SILU, bf16_to_f32, f16_to_f32, gelu32, gelu_tanh32, silu32
from .tile import LINEAR_SHAPE, linear_tile

MR, NR = LINEAR_SHAPE

ROW_BLOCK = 16 * MR  # rows of x per task: with K = 384 that block stays in L2 across the panels

_OPTS = dict(parallel=True, cache=True, error_model="numpy")


@numba.njit(inline="always", cache=True, error_model="numpy")
def _pack_panel(w, p, kind, panel):
    """``panel[k, c] = W[p * NR + c, k]`` as float32 (kind 0 f32, 1 f16 bits, 2 bf16 bits), zero
    past W's last row. Transposed in blocks of 16 columns, so the rows read and the panel rows
    written both stay in L1."""
    n_out, cols = w.shape
    valid = min(NR, n_out - p * NR)
    if valid < NR:
        for k in range(cols):
            pk = panel[k]
            for c in range(NR):
                pk[c] = 0.0
    for k0 in range(0, cols, 16):
        k1 = min(cols, k0 + 16)
        for c in range(valid):
            src = w[p * NR + c, k0:k1]
            for kk in range(k1 - k0):
                if kind == 1:
                    panel[k0 + kk, c] = f16_to_f32(src[kk])
                elif kind == 2:
                    panel[k0 + kk, c] = bf16_to_f32(src[kk])
                else:
                    panel[k0 + kk, c] = src[kk]


@numba.njit(**_OPTS)
def pack_f32(w, packed):
    """``packed[p, k, c] = w[p * NR + c, k]``, zero past the last row of w."""
    for p in prange(packed.shape[0]):
        _pack_panel(w, p, 0, packed[p])


@numba.njit(**_OPTS)
def pack_16(w, bf16, packed):
    """As ``pack_f32`` for 16-bit weights (uint16 bits of bf16 when ``bf16``, else f16)."""
    kind = 2 if bf16 else 1
    for p in prange(packed.shape[0]):
        _pack_panel(w, p, kind, packed[p])


@numba.njit(**_OPTS)
def gemm_bias_act(x, packed, bias, act, panel_groups, col0, out):
    """``out[:, col0 + c] = act(x @ W.T + bias)[:, col0 + c]`` for the columns of the packed panels
    (panel p holds outputs ``col0 + p * NR ...``); an empty ``bias`` means none."""
    rows, cols = x.shape
    n_out = out.shape[1]
    panels = packed.shape[0]
    has_bias = bias.shape[0] == n_out
    xf = x.reshape(-1)
    pf = packed.reshape(-1)
    row_blocks = (rows + ROW_BLOCK - 1) // ROW_BLOCK
    per_group = (panels + panel_groups - 1) // panel_groups
    for task in prange(row_blocks * panel_groups):
        rb = task // panel_groups
        g = task % panel_groups
        tile = np.empty((MR, NR), dtype=np.float32)
        tf = tile.reshape(-1)
        r0 = rb * ROW_BLOCK
        r1 = min(rows, r0 + ROW_BLOCK)
        for p in range(g * per_group, min(panels, (g + 1) * per_group)):
            c0 = col0 + p * NR
            width = min(NR, n_out - c0)
            for i0 in range(r0, r1, MR):
                n = min(MR, r1 - i0)
                linear_tile(xf, i0 * cols, cols, n, pf, p * cols * NR, NR, cols, tf, 0, NR, False)
                # bias per row, the activation over the whole tile in one loop (a row of 16
                # lanes alone would end in scalar code), then the rows out; row views keep each
                # inner index a 0-based counter, so numba adds no negative-index fix-ups there
                if has_bias:
                    b = bias[c0:c0 + width]
                    for i in range(n):
                        t = tile[i]
                        for j in range(width):
                            t[j] += b[j]
                m = MR * NR if n == MR else n * NR
                if act == ACT_GELU:
                    for e in range(m):
                        tf[e] = gelu32(tf[e])
                elif act == ACT_GELU_TANH:
                    for e in range(m):
                        tf[e] = gelu_tanh32(tf[e])
                elif act == ACT_RELU:
                    for e in range(m):
                        tf[e] = max(tf[e], numba.float32(0.0))
                elif act == ACT_SILU:
                    for e in range(m):
                        tf[e] = silu32(tf[e])
                for i in range(n):
                    o = out[i0 + i, c0:c0 + width]
                    t = tile[i]
                    for j in range(width):
                        o[j] = t[j]


def panel_count(n_out: int) -> int:
    return (n_out + NR - 1) // NR


def panel_groups(rows: int, panels: int, threads: int) -> int:
    """Split the panels too when there are too few row blocks to feed every thread."""
    row_blocks = (rows + ROW_BLOCK - 1) // ROW_BLOCK
    want = 4 * threads
    if row_blocks >= want or threads == 1:
        return 1
    return max(1, min(panels, -(-want // row_blocks)))
