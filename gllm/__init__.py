"""gllm: local embeddings, reranking and text generation, without PyTorch.

    import gllm
    client = gllm.Client(backend="auto")
    client.embeddings.create(model="all-minilm:l6", input=["a", "b"]).data[0].embedding
    client.rerank.create(model="all-minilm:l6", query="q", documents=["a", "b"]).results[0].index
"""

from gllm_core import __version__
from gllm_core.errors import (BackendUnavailableError, BadRequestError, CorruptFileError, GllmError,
                              InvalidModelNameError, ModelNotFoundError, OfflineError, PluginError,
                              UnsafeTemplateError, UnsupportedArchitectureError, UnsupportedFormatError)

from .async_client import AsyncClient
from .client import Client
from .completion_types import ChatCompletion, ChatCompletionChunk, Completion, CompletionUsage
from .completions import AsyncStream, Stream
from .types import CreateEmbeddingResponse, Embedding, EmbeddingUsage, RerankResponse, RerankResult, RerankUsage

__all__ = [
    "AsyncClient", "Client", "CreateEmbeddingResponse", "Embedding", "EmbeddingUsage", "GllmError",
    "BackendUnavailableError", "BadRequestError", "CorruptFileError", "InvalidModelNameError",
    "ModelNotFoundError", "OfflineError", "PluginError", "UnsupportedArchitectureError",
    "UnsupportedFormatError", "__version__",
    "ChatCompletion", "ChatCompletionChunk", "Completion", "CompletionUsage", "Stream", "AsyncStream",
    "UnsafeTemplateError",
    "RerankResponse", "RerankResult", "RerankUsage",
]
