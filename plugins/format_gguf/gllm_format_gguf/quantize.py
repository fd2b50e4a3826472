"""Quantise on load: a weight source whose float matrices come out as GGML block-quantized ones.

``Client(quantize="q4_k")`` (or ``load_model(..., quantize=...)``) wraps any model's weights
(safetensors f32/f16/bf16, or a GGUF) so that each linear weight is quantized the first time an
architecture asks for it, one tensor at a time: the float32 copy of one tensor lives only while
it is being quantized. What stays float: vectors (norms, biases), MoE routers, and matrices
whose rows are not whole blocks. As llama.cpp does, a ``q4_k`` matrix whose rows are not whole
256-weight super-blocks falls back to ``q5_0``.
"""

from __future__ import annotations

import re

from gllm_core.errors import BadRequestError
from gllm_core.weights import WeightMatrix

from .quants import GGML_TYPES_BY_NAME, quantize

#: The types gllm can quantize to.
QUANTIZE_TYPES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k")
FALLBACK = {"q4_k": "q5_0"}  # llama.cpp's choice for rows that are not whole super-blocks
KEEP_FLOAT = re.compile(r"(\.mlp\.gate\.weight|shared_expert_gate\.weight|router|\.gate\.e_score)")


def target_type(name: str, w: WeightMatrix, qtype: str) -> str | None:
    """The type a matrix is stored as after quantizing to ``qtype`` (None: it stays as it is)."""
    if w.quant is not None or KEEP_FLOAT.search(name):
        return None
    for candidate in (qtype, FALLBACK.get(qtype)):
        if candidate and w.cols % GGML_TYPES_BY_NAME[candidate].block_size == 0:
            return candidate
    return None


def quantize_matrix(w: WeightMatrix, qtype: str) -> WeightMatrix:
    t = GGML_TYPES_BY_NAME[qtype]
    data = quantize(w.to_float32(), qtype)
    return WeightMatrix(w.name, data, qtype, w.shape, t.quant)


class QuantizedSource:
    """Wraps a WeightSource: ``get`` returns quantized matrices (cached, so a tensor read twice,
    such as tied embeddings, is quantized once); everything else is the inner source's."""

    def __init__(self, inner, qtype: str):
        if qtype not in QUANTIZE_TYPES:
            raise BadRequestError(f"quantize={qtype!r} is not supported; choose one of {', '.join(QUANTIZE_TYPES)}")
        self.inner = inner
        self.qtype = qtype
        self._done: dict[str, WeightMatrix] = {}

    def __getattr__(self, name):  # path, metadata, model_config, raw, … of the inner source
        return getattr(self.inner, name)

    def names(self):
        return self.inner.names()

    def __contains__(self, name: str) -> bool:
        return name in self.inner

    def __iter__(self):
        return iter(self.inner.names())

    def get(self, name: str):
        if name in self._done:
            return self._done[name]
        w = self.inner.get(name)
        if not isinstance(w, WeightMatrix):
            return w
        target = target_type(name, w, self.qtype)
        if target is None:
            return w
        q = quantize_matrix(w, target)
        self._done[name] = q
        return q

    def close(self) -> None:
        self._done.clear()
        self.inner.close()


def quantize_source(weights, qtype: str) -> QuantizedSource:
    """The hook the weight format registers: wrap a source so it quantizes to ``qtype``."""
    return QuantizedSource(weights, qtype)
