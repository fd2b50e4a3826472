"""Quantise on load: float weights become GGML blocks as the model loads, and still work."""

from pathlib import Path

import numpy as np
import pytest

import gllm
from gllm_core.errors import BadRequestError
from gllm_core.loader import open_weights, quantize_weights
from gllm_core.plugins import get_registry
from gllm_format_gguf.quantize import QuantizedSource

TINY = Path(__file__).parent / "fixtures" / "tiny"


def test_quantized_source_types():
    registry = get_registry()
    weights = quantize_weights(open_weights(str(TINY / "qwen3moe.gguf"), registry), "q4_k", registry)
    assert isinstance(weights, QuantizedSource)
    kinds = {name: weights.get(name).dtype for name in weights.names()}
    # rows of 32 or 64 values are not whole 256-blocks: q4_k falls back to q5_0, as llama.cpp does
    assert kinds["model.layers.0.self_attn.q_proj.weight"] == "q5_0"
    assert kinds["model.layers.0.mlp.experts.1.down_proj.weight"] == "f32"  # 24 columns: no block fits
    assert kinds["model.layers.0.mlp.gate.weight"] == "f32"  # the MoE router stays float
    assert kinds["model.norm.weight"] == "f32"
    assert weights.get("lm_head.weight") is weights.get("lm_head.weight")  # quantized once
    assert weights.model_config().num_hidden_layers == 2


def test_unknown_type_is_refused():
    registry = get_registry()
    with pytest.raises(BadRequestError, match="q3_k"):
        quantize_weights(open_weights(str(TINY / "llama.gguf"), registry), "q3_k", registry)


@pytest.fixture(scope="module")
def minilm(fetch):
    return fetch.model_path("all-minilm:l6")


@pytest.mark.parametrize("qtype, floor", [("q8_0", 0.999), ("q4_k", 0.98), ("q4_0", 0.95)])
def test_real_embeddings_survive_quantization(minilm, qtype, floor):
    texts = ["A cat sits on the mat.", "Quantized weights keep most of the meaning."]
    exact = np.array([d.embedding for d in gllm.Client(backend="numpy").embeddings.create(model=minilm, input=texts).data])
    client = gllm.Client(backend="cpu", quantize=qtype)
    quant = np.array([d.embedding for d in client.embeddings.create(model=minilm, input=texts).data])
    weights = client.load(minilm).weights
    # [384 → 1536] rows of 384 are not whole 256-blocks (q4_k falls back to q5_0); [1536 → 384] are
    assert weights.get("encoder.layer.0.output.dense.weight").dtype == qtype
    assert weights.get("encoder.layer.0.intermediate.dense.weight").dtype == ("q5_0" if qtype == "q4_k" else qtype)
    assert np.all(np.sum(exact * quant, axis=1) > floor)
