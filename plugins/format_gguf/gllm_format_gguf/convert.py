"""``gllm quantize``: resolve a model name, open it as gllm does, write it as a GGUF file."""

from __future__ import annotations

import os

from gllm_core.loader import open_weights, read_config
from gllm_core.plugins import get_registry
from gllm_core.store import ModelStore

from .writer import write_gguf


def quantize_model(model: str, out: str, qtype: str, progress=None) -> dict[str, int]:
    registry = get_registry()
    path = str(ModelStore(aliases=registry.aliases).resolve(model).path)
    weights = open_weights(path, registry)
    config = read_config(path, weights)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    return write_gguf(weights, config, folder, os.fspath(out), qtype, progress=progress)
