"""Layers that architectures are built from.

Each layer prepares its weights on the backend once and keeps a direct reference to the
backend kernel it calls, so a forward pass does no lookup and no dispatch.
"""

from __future__ import annotations

import numpy as np

from .errors import CorruptFileError
from .weights import WeightMatrix, WeightVector


def concat_rows(name: str, parts: list[WeightMatrix]) -> WeightMatrix:
    """Stack matrices with the same columns and storage type along rows (fused Q/K/V, gate/up).

    The copy keeps the stored type (f16 stays f16, quantized stays quantized)."""
    first = parts[0]
    for p in parts[1:]:
        if p.dtype != first.dtype or p.cols != first.cols:
            raise CorruptFileError(f"{name}: cannot fuse {p.name} ({p.dtype}, {p.cols} columns) with "
                                   f"{first.name} ({first.dtype}, {first.cols} columns)")
    data = np.concatenate([np.asarray(p.data) for p in parts], axis=0)
    return WeightMatrix(name, data, first.dtype, (sum(p.rows for p in parts), first.cols), first.quant)


def concat_vectors(name: str, parts: list[WeightVector]) -> WeightVector:
    data = np.concatenate([p.to_float32() for p in parts])
    return WeightVector(name, data, "f32")


class Linear:
    """``act(x @ W.T + b)``."""

    def __init__(self, backend, weight: WeightMatrix, bias: WeightVector | None = None,
                 activation: str | None = None):
        if bias is not None and bias.shape[0] != weight.rows:
            raise CorruptFileError(f"{bias.name}: bias of {bias.shape[0]} for {weight.rows} outputs")
        self.out_features, self.in_features = weight.shape
        self.weight = backend.prepare_matrix(weight)
        self.bias = None if bias is None else backend.prepare_vector(bias)
        self.activation = activation
        self._linear = backend.linear

    def __call__(self, x):
        return self._linear(x, self.weight, self.bias, self.activation)


class Embedding:
    def __init__(self, backend, table: WeightMatrix):
        self.num_embeddings, self.dim = table.shape
        self.table = backend.prepare_matrix(table)
        self._lookup = backend.embedding
        self._upload = backend.upload

    def __call__(self, ids: np.ndarray):
        return self._lookup(self.table, self._upload(np.asarray(ids, dtype=np.int32)))


class LayerNorm:
    def __init__(self, backend, weight: WeightVector, bias: WeightVector | None, eps: float):
        self.weight = backend.prepare_vector(weight)
        self.bias = None if bias is None else backend.prepare_vector(bias)
        self.eps = float(eps)
        self._norm = backend.layer_norm

    def __call__(self, x, residual=None):
        return self._norm(x, self.weight, self.bias, self.eps, residual)


class RMSNorm:
    def __init__(self, backend, weight: WeightVector, eps: float):
        self.weight = backend.prepare_vector(weight)
        self.eps = float(eps)
        self._norm = backend.rms_norm
        self._add_norm = backend.add_rms_norm

    def __call__(self, x):
        return self._norm(x, self.weight, self.eps)

    def add(self, x, residual):
        """Returns (norm(x + residual), x + residual)."""
        return self._add_norm(x, residual, self.weight, self.eps)


def expect_shape(w, shape: tuple, what: str):
    if tuple(w.shape) != tuple(shape):
        raise CorruptFileError(f"{w.name}: {what} should have shape {tuple(shape)}, found {tuple(w.shape)}")
    return w
