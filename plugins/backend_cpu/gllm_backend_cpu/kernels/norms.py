"""LayerNorm and RMSNorm over the last axis, with the residual add fused in; statistics in float64."""

from __future__ import annotations

import math

import numba
from numba import prange

from .twin import twins

SUMS = dict(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})


@twins(**SUMS)
def layer_norm_rows(x, residual, weight, bias, eps, out):
    """``out = LayerNorm(x + residual)``; an empty ``residual`` / ``bias`` (shape[0] == 0) means none."""
    rows, cols = x.shape
    has_res = residual.shape[0] == rows
    has_bias = bias.shape[0] == cols
    for i in prange(rows):
        xr, o = x[i], out[i]
        s = 0.0
        if has_res:
            rr = residual[i]
            for j in range(cols):
                h = xr[j] + rr[j]
                o[j] = h
                s += h
        else:
            for j in range(cols):
                h = xr[j]
                o[j] = h
                s += h
        mean = s / cols
        v = 0.0
        for j in range(cols):
            d = o[j] - mean
            v += d * d
        inv = 1.0 / math.sqrt(v / cols + eps)
        if has_bias:
            for j in range(cols):
                o[j] = numba.float32((o[j] - mean) * inv) * weight[j] + bias[j]
        else:
            for j in range(cols):
                o[j] = numba.float32((o[j] - mean) * inv) * weight[j]


@twins(**SUMS)
def rms_norm_rows(x, residual, weight, eps, out, hidden):
    """``hidden = x + residual`` (when ``residual`` is not empty), ``out = RMSNorm(hidden)``."""
    rows, cols = x.shape
    has_res = residual.shape[0] == rows
    for i in prange(rows):
        xr, o = x[i], out[i]
        s = 0.0
        if has_res:
            rr, hr = residual[i], hidden[i]
            for j in range(cols):
                h = xr[j] + rr[j]
                hr[j] = h
                s += numba.float64(h) * h
        else:
            for j in range(cols):
                h = xr[j]
                s += numba.float64(h) * h
        inv = 1.0 / math.sqrt(s / cols + eps)
        if has_res:
            for j in range(cols):
                o[j] = numba.float32(hr[j] * inv) * weight[j]
        else:
            for j in range(cols):
                o[j] = numba.float32(xr[j] * inv) * weight[j]
