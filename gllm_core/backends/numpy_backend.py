"""The numpy reference backend: the obvious implementation that defines every op's meaning."""

from __future__ import annotations

import math

import numpy as np

from ..backend import Backend
from ..hookspecs import hookimpl
from ..registry import BackendProbe, BackendSpec
from ..weights import WeightMatrix, WeightVector

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 in float64: |error| < 1.5e-7, below float32 resolution of gelu
    x64 = np.asarray(x, dtype=np.float64)
    a = np.abs(x64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (np.sign(x64) * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


def gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))).astype(np.float32)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))).astype(np.float32)


def silu(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) → inf for very negative x gives the right limit, -0
        return (x / (1.0 + np.exp(-x))).astype(np.float32)


ACTIVATION_FUNCTIONS = {
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "relu": lambda x: np.maximum(x, 0, dtype=np.float32),
    "silu": silu,
}


class NumpyMatrix:
    """A prepared matrix: f32 storage used in place, other storage expanded per call."""

    __slots__ = ("weight", "f32")

    def __init__(self, weight: WeightMatrix):
        self.weight = weight
        self.f32 = weight.data if weight.dtype == "f32" else None

    @property
    def shape(self):
        return self.weight.shape

    def dense(self, rows=slice(None)) -> np.ndarray:
        if self.f32 is not None:
            return np.asarray(self.f32[rows])
        return self.weight.dense(rows)


class NumpyBackend(Backend):
    name = "numpy"

    def upload(self, array):
        return np.ascontiguousarray(array)

    def download(self, x):
        return np.asarray(x)

    def prepare_matrix(self, w: WeightMatrix):
        return NumpyMatrix(w)

    def prepare_vector(self, v: WeightVector):
        return np.ascontiguousarray(v.to_float32())

    def view(self, x, shape):
        return x.reshape(shape)

    def split(self, x, sizes):
        bounds = np.cumsum(sizes)[:-1]
        return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=-1)]

    def take_rows(self, x, rows):
        return x[np.asarray(rows)]

    def zeros(self, shape):
        return np.zeros(tuple(shape), dtype=np.float32)

    def scatter_rows(self, dst, rows, src, accumulate=False):
        rows = np.asarray(rows, dtype=np.intp)
        if accumulate:
            dst[rows] += src  # rows are distinct, so fancy += adds each row once
        else:
            dst[rows] = src

    def linear(self, x, w: NumpyMatrix, bias=None, activation=None):
        y = np.matmul(x, w.dense().T, dtype=np.float32)
        if bias is not None:
            y += bias
        if activation is not None:
            y = ACTIVATION_FUNCTIONS[activation](y)
        return y

    def embedding(self, table: NumpyMatrix, ids):
        return table.dense(np.asarray(ids, dtype=np.int64)).astype(np.float32, copy=False)

    def add(self, a, b):
        return np.add(a, b, dtype=np.float32)

    def mul(self, a, b):
        return np.multiply(a, b, dtype=np.float32)

    def activation(self, x, kind):
        return ACTIVATION_FUNCTIONS[kind](x)

    def silu_mul(self, gate, up):
        return (silu(gate) * up).astype(np.float32)

    def layer_norm(self, x, weight, bias, eps, residual=None):
        h = x if residual is None else x + residual
        h64 = h.astype(np.float64)
        mean = h64.mean(-1, keepdims=True)
        var = ((h64 - mean) ** 2).mean(-1, keepdims=True)
        y = ((h64 - mean) / np.sqrt(var + eps)).astype(np.float32) * weight
        if bias is not None:
            y = y + bias
        return y.astype(np.float32)

    def rms_norm(self, x, weight, eps):
        h64 = x.astype(np.float64)
        y = (h64 / np.sqrt((h64 * h64).mean(-1, keepdims=True) + eps)).astype(np.float32)
        return (y * weight).astype(np.float32)

    def add_rms_norm(self, x, residual, weight, eps):
        h = (x + residual).astype(np.float32)
        return self.rms_norm(h, weight, eps), h

    def rope(self, x, positions, inv_freq, style="neox", scale=1.0):
        inv_freq = np.asarray(inv_freq, dtype=np.float32)
        half = inv_freq.shape[0]
        angles = np.asarray(positions, dtype=np.float32)[:, None] * inv_freq[None, :]  # [T, R/2]
        cos = (np.cos(angles) * scale).astype(np.float32)[:, None, :]
        sin = (np.sin(angles) * scale).astype(np.float32)[:, None, :]
        out = np.array(x, dtype=np.float32, copy=True)
        if style == "neox":
            x1, x2 = x[..., :half], x[..., half:2 * half]
            out[..., :half] = x1 * cos - x2 * sin
            out[..., half:2 * half] = x2 * cos + x1 * sin
        elif style == "interleaved":
            x1, x2 = x[..., 0:2 * half:2], x[..., 1:2 * half:2]
            out[..., 0:2 * half:2] = x1 * cos - x2 * sin
            out[..., 1:2 * half:2] = x2 * cos + x1 * sin
        else:
            raise ValueError(f"unknown rope style {style!r}")
        return out

    def attention(self, q, k, v, cu_seqlens_q, cu_seqlens_k, scale, causal=False, window=None):
        tq, hq, d = q.shape
        hkv = k.shape[1]
        group = hq // hkv
        out = np.empty((tq, hq, v.shape[2]), dtype=np.float32)
        for b in range(len(cu_seqlens_q) - 1):
            q0, q1 = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
            k0, k1 = int(cu_seqlens_k[b]), int(cu_seqlens_k[b + 1])
            lq, lk = q1 - q0, k1 - k0
            if lq == 0:
                continue
            kb = np.repeat(k[k0:k1], group, axis=1).transpose(1, 2, 0)  # [Hq, D, Lk]
            vb = np.repeat(v[k0:k1], group, axis=1).transpose(1, 0, 2)  # [Hq, Lk, Dv]
            # bound memory by blocks of queries: scores are [Hq, block, Lk]
            for s in range(0, lq, 256):
                e = min(lq, s + 256)
                qb = q[q0 + s:q0 + e].transpose(1, 0, 2)  # [Hq, block, D]
                scores = np.matmul(qb, kb, dtype=np.float32) * np.float32(scale)
                if causal or window is not None:
                    qpos = np.arange(s, e)[:, None] + (lk - lq)
                    kpos = np.arange(lk)[None, :]
                    allowed = np.ones((e - s, lk), dtype=bool)
                    if causal:
                        allowed &= kpos <= qpos
                    if window is not None:
                        allowed &= kpos > qpos - window
                    scores = np.where(allowed[None], scores, -np.inf)
                m = scores.max(-1, keepdims=True)
                m = np.where(np.isfinite(m), m, 0.0)
                p = np.exp(scores - m)
                denom = p.sum(-1, keepdims=True, dtype=np.float64)
                ctx = np.matmul(p, vb, dtype=np.float32) / np.maximum(denom, 1e-30)
                out[q0 + s:q0 + e] = ctx.transpose(1, 0, 2)
        return out

    def softmax(self, x):
        m = x.max(-1, keepdims=True)
        e = np.exp(x - m)
        return (e / e.sum(-1, keepdims=True, dtype=np.float64)).astype(np.float32)

    def top_k(self, x, k):
        x = np.asarray(x)
        idx = np.argsort(-x, axis=-1, kind="stable")[..., :k]
        return np.take_along_axis(x, idx, -1), idx.astype(np.int32)


@hookimpl
def register_backends(register):
    register(BackendSpec(
        name="numpy",
        probe=lambda: BackendProbe(available=True, priority=100, detail="numpy reference kernels"),
        create=lambda **options: NumpyBackend(),
        description="Reference kernels in plain numpy: always available, slow.",
    ))
