"""Linear layers for a few tokens (decode): row-parallel dot products that read f32, f16 or bf16
weights as stored, so a decode step streams each weight once at its stored size."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .scalar import ACT_NONE, activate, bf16_to_f32, f16_to_f32
from .twin import twins

_OPTS = dict(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})

DTYPE_F32, DTYPE_F16, DTYPE_BF16 = 0, 1, 2
ROWS_PER_TASK = 16


@numba.njit(inline="always", cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _finish(x, row, o, bias, act, out):
    """Dot products of one float32 weight row with every token, plus bias and activation."""
    has_bias = bias.shape[0] == out.shape[1]
    for t in range(x.shape[0]):
        xt = x[t]
        acc = numba.float32(0.0)
        for j in range(xt.shape[0]):
            acc += xt[j] * row[j]
        if has_bias:
            acc += bias[o]
        out[t, o] = activate(acc, act) if act != ACT_NONE else acc


@twins(**_OPTS)
def linear_few_f32(x, w, bias, act, out):
    """``out = act(x @ w.T + bias)`` for a handful of tokens, parallel over output rows."""
    n_out = w.shape[0]
    for c in prange((n_out + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for o in range(c * ROWS_PER_TASK, min(n_out, c * ROWS_PER_TASK + ROWS_PER_TASK)):
            _finish(x, w[o], o, bias, act, out)


@twins(**_OPTS)
def linear_few_16(x, w, bf16, bias, act, out):
    """As ``linear_few_f32`` with 16-bit weights, each row decoded once into float32 scratch."""
    n_out, cols = w.shape
    for c in prange((n_out + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        row = np.empty(cols, dtype=np.float32)
        for o in range(c * ROWS_PER_TASK, min(n_out, c * ROWS_PER_TASK + ROWS_PER_TASK)):
            wo = w[o]  # a row view: no negative-index fix-up inside the loops below
            if bf16:
                for j in range(cols):
                    row[j] = bf16_to_f32(wo[j])
            else:
                for j in range(cols):
                    row[j] = f16_to_f32(wo[j])
            _finish(x, row, o, bias, act, out)
