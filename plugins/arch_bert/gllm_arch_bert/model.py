"""BERT encoder built from gllm_core.nn layers, read top to bottom beside transformers' BertModel."""

from __future__ import annotations

import os

import numpy as np

from gllm_core.errors import CorruptFileError, UnsupportedArchitectureError
from gllm_core.nn import Embedding, LayerNorm, Linear, concat_rows, concat_vectors

from .pooling import read_pooling

# transformers' names for the activation → the backend's
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "gelu_fast": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu"}


def find_prefix(weights, suffix: str = "embeddings.word_embeddings.weight") -> str:
    for name in weights.names():
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise CorruptFileError(f"{weights.path}: no tensor named '*{suffix}': not a BERT checkpoint")


class BertLayer:
    def __init__(self, backend, weights, p: str, config):
        get = weights.get
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        eps = config.layer_norm_eps
        act = ACTIVATIONS.get(config.hidden_act)
        if act is None:
            raise UnsupportedArchitectureError(f"{config.path}: hidden_act {config.hidden_act!r} is not supported")
        a = p + "attention."
        # one fused GEMM for Q, K and V
        self.qkv = Linear(backend,
                          concat_rows(a + "self.qkv", [get(a + f"self.{n}.weight") for n in ("query", "key", "value")]),
                          concat_vectors(a + "self.qkv.bias", [get(a + f"self.{n}.bias") for n in ("query", "key", "value")]))
        self.attn_out = Linear(backend, get(a + "output.dense.weight"), get(a + "output.dense.bias"))
        self.attn_norm = LayerNorm(backend, get(a + "output.LayerNorm.weight"), get(a + "output.LayerNorm.bias"), eps)
        self.intermediate = Linear(backend, get(p + "intermediate.dense.weight"), get(p + "intermediate.dense.bias"), act)
        self.output = Linear(backend, get(p + "output.dense.weight"), get(p + "output.dense.bias"))
        self.out_norm = LayerNorm(backend, get(p + "output.LayerNorm.weight"), get(p + "output.LayerNorm.bias"), eps)
        hidden = config.hidden_size
        self.sizes = (hidden, hidden, hidden)
        self.scale = 1.0 / float(np.sqrt(self.head_dim))
        b = backend
        self._split, self._view, self._attention = b.split, b.view, b.attention

    def __call__(self, x, cu_seqlens, n_tokens: int):
        q, k, v = self._split(self.qkv(x), self.sizes)
        shape = (n_tokens, self.num_heads, self.head_dim)
        ctx = self._attention(self._view(q, shape), self._view(k, shape), self._view(v, shape),
                              cu_seqlens, cu_seqlens, self.scale)
        x = self.attn_norm(self.attn_out(self._view(ctx, (n_tokens, self.num_heads * self.head_dim))), x)
        return self.out_norm(self.output(self.intermediate(x)), x)


class BertEncoder:
    """Embeddings + encoder layers.

    ``padding_idx`` serves XLM-R / RoBERTa: positions count the non-pad tokens from
    ``padding_idx + 1`` and a pad token keeps position ``padding_idx``, as transformers'
    ``create_position_ids_from_input_ids``. BERT positions are ``position_offset + 0, 1, …``."""

    def __init__(self, config, weights, backend, position_offset: int = 0, padding_idx: int | None = None):
        if not config.hidden_size or not config.num_attention_heads or config.hidden_size % config.num_attention_heads:
            raise CorruptFileError(f"{config.path}: hidden_size {config.hidden_size} is not divisible by "
                                   f"num_attention_heads {config.num_attention_heads}")
        p = find_prefix(weights)
        get = weights.get
        self.backend = backend
        self.config = config
        self.padding_idx = padding_idx
        self.position_offset = position_offset if padding_idx is None else padding_idx + 1
        self.word = Embedding(backend, get(p + "embeddings.word_embeddings.weight"))
        self.position = Embedding(backend, get(p + "embeddings.position_embeddings.weight"))
        types = p + "embeddings.token_type_embeddings.weight"
        self.token_type = Embedding(backend, get(types)) if types in weights else None
        self.norm = LayerNorm(backend, get(p + "embeddings.LayerNorm.weight"), get(p + "embeddings.LayerNorm.bias"),
                              config.layer_norm_eps)
        self.max_positions = self.position.num_embeddings - self.position_offset
        self.layers = [BertLayer(backend, weights, f"{p}encoder.layer.{i}.", config)
                       for i in range(config.num_hidden_layers)]
        self.hidden_size = config.hidden_size

    def forward(self, ids_list, type_ids_list=None):
        """Packed forward of several sequences → (hidden ``[T, H]`` backend array, cu_seqlens)."""
        lengths = [len(ids) for ids in ids_list]
        if max(lengths) > self.max_positions:
            raise CorruptFileError(f"sequence of {max(lengths)} tokens is longer than the model's "
                                   f"{self.max_positions} positions")
        cu = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=cu[1:])
        ids = np.concatenate([np.asarray(s, dtype=np.int32) for s in ids_list])
        x = self.backend.add(self.word(ids), self.position(self._positions(ids, cu)))
        if self.token_type is not None and self.token_type.num_embeddings == 1:  # RoBERTa: one type, always 0
            x = self.backend.add(x, self.token_type(np.zeros(len(ids), dtype=np.int32)))
        elif self.token_type is not None:
            types = (np.zeros(len(ids), dtype=np.int32) if type_ids_list is None
                     else np.concatenate([np.asarray(t, dtype=np.int32) for t in type_ids_list]))
            x = self.backend.add(x, self.token_type(types))
        x = self.norm(x)
        n = int(cu[-1])
        for layer in self.layers:
            x = layer(x, cu, n)
        return x, cu

    def _positions(self, ids: np.ndarray, cu: np.ndarray) -> np.ndarray:
        if self.padding_idx is None:
            return np.concatenate([np.arange(cu[i + 1] - cu[i], dtype=np.int32)
                                   for i in range(len(cu) - 1)]) + self.position_offset
        keep = (ids != self.padding_idx).astype(np.int32)
        counts = np.cumsum(keep)
        starts = np.repeat(counts[cu[:-1] - 1] * (cu[:-1] > 0), np.diff(cu))  # restart the count per sequence
        return ((counts - starts) * keep + self.padding_idx).astype(np.int32)


class BertEmbeddingModel:
    """Encoder + sentence-transformers pooling → one vector per sequence."""

    tasks = ("embed",)

    def __init__(self, encoder: BertEncoder, pooling):
        self.encoder = encoder
        self.pooling = pooling
        self.dimensions = encoder.hidden_size * len(pooling.modes)

    def hidden_states(self, ids_list, type_ids_list=None) -> list[np.ndarray]:
        hidden, cu = self.encoder.forward(ids_list, type_ids_list)
        hidden = self.encoder.backend.download(hidden)
        return [hidden[cu[i]:cu[i + 1]] for i in range(len(cu) - 1)]

    def embed(self, ids_list, type_ids_list=None) -> np.ndarray:
        hidden, cu = self.encoder.forward(ids_list, type_ids_list)
        return self.pooling(self.encoder.backend.download(hidden), cu)


def roberta_padding_idx(config) -> int | None:
    """XLM-R / RoBERTa checkpoints number positions after their pad id; BERT ones do not."""
    if config.model_type in ("xlm-roberta", "roberta") or any("Roberta" in a for a in config.architectures):
        return int(config.pad_token_id if config.pad_token_id is not None else 1)
    return None


def build_embedding_model(config, weights, backend) -> BertEmbeddingModel:
    folder = config.path if os.path.isdir(config.path) else os.path.dirname(config.path)
    encoder = BertEncoder(config, weights, backend, padding_idx=roberta_padding_idx(config))
    return BertEmbeddingModel(encoder, read_pooling(folder))
