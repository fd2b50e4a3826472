"""ModelConfig: one attrs class built from a Hugging Face config.json (or, later, GGUF metadata)."""

from __future__ import annotations

import json
import os
from typing import Any

import attrs

from .errors import CorruptFileError


@attrs.define
class ModelConfig:
    """The fields the shared layers read, named as the checkpoints name them; the rest is in ``raw``."""

    architectures: tuple[str, ...] = ()
    model_type: str = ""
    vocab_size: int = 0
    hidden_size: int = 0
    num_hidden_layers: int = 0
    num_attention_heads: int = 0
    num_key_value_heads: int = 0
    head_dim: int = 0
    intermediate_size: int = 0
    hidden_act: str = "gelu"
    max_position_embeddings: int = 0
    layer_norm_eps: float = 1e-12
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = False
    type_vocab_size: int = 0
    pad_token_id: int | None = None
    bos_token_id: int | list | None = None
    eos_token_id: int | list | None = None
    torch_dtype: str | None = None
    path: str = ""  # the model's folder or file, for plugins that read more files beside it
    raw: dict[str, Any] = attrs.Factory(dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: str = "") -> "ModelConfig":
        if not isinstance(raw, dict):
            raise CorruptFileError(f"{path}: config must be a JSON object")
        fields = {f.name for f in attrs.fields(cls)} - {"raw", "path", "architectures"}
        kwargs = {k: raw[k] for k in fields if k in raw and raw[k] is not None}
        if "layer_norm_epsilon" in raw and "layer_norm_eps" not in raw:
            kwargs["layer_norm_eps"] = raw["layer_norm_epsilon"]
        if "dtype" in raw and "torch_dtype" not in raw:
            kwargs["torch_dtype"] = raw["dtype"]
        try:
            config = cls(architectures=tuple(raw.get("architectures") or ()), path=path, raw=dict(raw), **kwargs)
        except TypeError as exc:
            raise CorruptFileError(f"{path}: bad config field: {exc}") from None
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings",
                     "type_vocab_size"):
            value = getattr(config, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 1 << 31:
                raise CorruptFileError(f"{path}: config field {name!r} must be a non-negative integer, got {value!r}")
        if config.num_attention_heads and not config.num_key_value_heads:
            config.num_key_value_heads = config.num_attention_heads
        if config.num_attention_heads and not config.head_dim and config.hidden_size:
            config.head_dim = config.hidden_size // config.num_attention_heads
        return config

    @classmethod
    def from_file(cls, path: str) -> "ModelConfig":
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptFileError(f"{path}: cannot read config: {exc}") from None
        return cls.from_dict(raw, path=os.path.dirname(os.path.abspath(path)))
