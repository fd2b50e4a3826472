"""From a model name to a built model: store → weight format → config → architecture → backend."""

from __future__ import annotations

import os
import threading
from typing import Any

import attrs

from .config import ModelConfig
from .errors import BadRequestError, CorruptFileError, UnsupportedArchitectureError, UnsupportedFormatError
from .registry import Registry


@attrs.define(eq=False)
class LoadedModel:
    """A model ready to run, with what the SDK needs beside it."""

    name: str
    path: str
    config: ModelConfig
    tokenizer: Any
    model: Any
    backend: Any
    architecture: str
    weights: Any = None
    lock: Any = attrs.Factory(threading.Lock)  # one forward pass at a time per model

    @property
    def tasks(self) -> frozenset[str]:
        return frozenset(getattr(self.model, "tasks", ()))


def _by_priority(table):
    return sorted(table.values(), key=lambda item: -item.priority)


def open_weights(path: str, registry: Registry):
    for fmt in _by_priority(registry.weight_formats):
        try:
            matched = fmt.sniff(path)
        except Exception:
            matched = False
        if matched:
            return fmt.open(path)
    known = ", ".join(registry.weight_formats) or "none"
    raise UnsupportedFormatError(f"{path}: no installed weight format recognises these files (installed: {known})")


def read_config(path: str, weights) -> ModelConfig:
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    config_file = os.path.join(folder, "config.json")
    if hasattr(weights, "model_config"):  # formats that carry their config (GGUF)
        return weights.model_config()
    if os.path.isfile(config_file):
        return ModelConfig.from_file(config_file)
    raise CorruptFileError(f"{path}: no config.json beside the weights")


def load_tokenizer(path: str, config: ModelConfig, registry: Registry, weights=None):
    for loader in _by_priority(registry.tokenizers):
        try:
            matched = loader.sniff(path)
        except Exception:
            matched = False
        if matched:
            return loader.load(path, config)
    return None


def quantize_weights(weights, qtype: str, registry: Registry):
    """Wrap a weight source so its matrices are quantized to ``qtype`` as they are read."""
    for fmt in _by_priority(registry.weight_formats):
        if fmt.quantize is not None and qtype in fmt.quant_types:
            return fmt.quantize(weights, qtype)
    offered = sorted({t for f in registry.weight_formats.values() for t in f.quant_types})
    raise BadRequestError(f"quantize={qtype!r}: no installed weight format quantizes to it (offered: "
                          f"{', '.join(offered) or 'none; pip install gllm-format-gguf'})")


def load_model(name: str, path: str, backend, registry: Registry, quantize: str | None = None) -> LoadedModel:
    weights = open_weights(path, registry)
    if quantize:
        weights = quantize_weights(weights, quantize, registry)
    config = read_config(path, weights)
    arch = registry.architecture_for(hf_architectures=config.architectures, model_type=config.model_type,
                                     gguf_architecture=config.raw.get("general.architecture"))
    if arch is None:
        wanted = ", ".join(config.architectures) or config.model_type or "unknown"
        known = ", ".join(sorted({n for a in registry.architectures.values() for n in a.hf_architectures})) or "none"
        raise UnsupportedArchitectureError(
            f"{name}: no installed plugin serves architecture {wanted} (served: {known}); "
            f"install the plugin for that family, e.g. pip install gllm-arch-<family>")
    tokenizer = load_tokenizer(path, config, registry, weights)
    model = arch.build(config, weights, backend)
    return LoadedModel(name=name, path=path, config=config, tokenizer=tokenizer, model=model,
                       backend=backend, architecture=arch.name, weights=weights)
