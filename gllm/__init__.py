"""gllm: local embeddings, reranking and text generation, without PyTorch.

    import gllm
    client = gllm.Client(backend="auto")
    client.embeddings.create(model="all-minilm:l6", input=["a", "b"]).data[0].embedding
    client.rerank.create(model="all-minilm:l6", query="q", documents=["a", "b"]).results[0].index
"""

import importlib
from typing import TYPE_CHECKING

from gllm_core import __version__
from gllm_core.errors import (BackendUnavailableError, BadRequestError, CorruptFileError, GllmError,
                              InvalidModelNameError, ModelNotFoundError, OfflineError, PluginError,
                              UnsafeTemplateError, UnsupportedArchitectureError, UnsupportedFormatError)

from .client import Client
from .types import CreateEmbeddingResponse, Embedding, EmbeddingUsage, RerankResponse, RerankResult, RerankUsage

# Generation (the engine, Jinja for chat templates) and asyncio load on first use (PEP 562), so
# that ``import gllm`` for embeddings does not pay for them.
_LAZY = {
    "AsyncClient": ".async_client",
    "ChatCompletion": ".completion_types", "ChatCompletionChunk": ".completion_types",
    "Completion": ".completion_types", "CompletionUsage": ".completion_types",
    "AsyncStream": ".completions", "Stream": ".completions",
}

if TYPE_CHECKING:
    from .async_client import AsyncClient
    from .completion_types import ChatCompletion, ChatCompletionChunk, Completion, CompletionUsage
    from .completions import AsyncStream, Stream


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'gllm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "AsyncClient", "Client", "CreateEmbeddingResponse", "Embedding", "EmbeddingUsage", "GllmError",
    "BackendUnavailableError", "BadRequestError", "CorruptFileError", "InvalidModelNameError",
    "ModelNotFoundError", "OfflineError", "PluginError", "UnsupportedArchitectureError",
    "UnsupportedFormatError", "__version__",
    "ChatCompletion", "ChatCompletionChunk", "Completion", "CompletionUsage", "Stream", "AsyncStream",
    "UnsafeTemplateError",
    "RerankResponse", "RerankResult", "RerankUsage",
]
