"""``gllm.Client``: the OpenAI-shaped SDK over the plugin host, model store and engine."""

from __future__ import annotations

import functools
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any

from gllm_core import embedding as emb
from gllm_core import rerank as rr
from gllm_core.errors import BadRequestError
from gllm_core.loader import LoadedModel, load_model
from gllm_core.plugins import get_host
from gllm_core.selection import choose_backend, create_backend
from gllm_core.store import ModelStore

from .builder import RequestBuilder
from .types import CreateEmbeddingResponse, Embedding, EmbeddingUsage, RerankResponse, RerankResult, RerankUsage


if TYPE_CHECKING:
    from .chat import Chat
    from .completions import Completions


class Client:
    """Runs models in this process.

    ``backend`` is ``"auto"`` (the available backend of highest priority, or ``GLLM_BACKEND``)
    or a backend name; ``home`` moves the model store (default ``GLLM_HOME`` or ``~/.gllm``);
    ``quantize`` ("q8_0", "q4_0", "q4_k", … with gllm-format-gguf) stores float weights
    block-quantized as models load. Loaded models are kept for the life of the client.
    """

    def __init__(self, backend: str = "auto", *, home: str | os.PathLike | None = None,
                 quantize: str | None = None, **backend_options: Any):
        self._host = get_host()
        self.quantize = quantize  # e.g. "q8_0", "q4_0", "q4_k": quantize float weights as they load
        registry = self._host.registry
        self.backend_name = choose_backend(registry, backend)
        self.backend = create_backend(registry, self.backend_name, **backend_options)
        root = None if home is None else os.path.join(os.fspath(home), "models")
        self.store = ModelStore(root=root, aliases=registry.aliases)
        self._models: dict[str, LoadedModel] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.embeddings = Embeddings(self)
        self.rerank = Rerank(self)

    # generation brings the engine and Jinja (chat templates): imported on first use, so that an
    # embedding or reranking process never pays for them
    @functools.cached_property
    def chat(self) -> Chat:
        """``chat.completions.create(...)``, as in the OpenAI SDK."""
        from .chat import Chat

        return Chat(self)

    @functools.cached_property
    def completions(self) -> Completions:
        from .completions import Completions

        return Completions(self)

    def load(self, model: str) -> LoadedModel:
        """The loaded model for a name (alias, repository id, store name or path), loading it once."""
        if not isinstance(model, str) or not model:
            raise BadRequestError(f"model must be a non-empty string, got {model!r}")
        with self._lock:
            if model in self._models:
                return self._models[model]
            lock = self._locks.setdefault(model, threading.Lock())
        with lock:  # concurrent first calls load once
            if model not in self._models:
                resolved = self.store.resolve(model)
                loaded = load_model(model, resolved.path, self.backend, self._host.registry,
                                    quantize=self.quantize)
                with self._lock:
                    self._models[model] = loaded
            return self._models[model]

    def unload(self, model: str) -> None:
        with self._lock:
            self._models.pop(model, None)

    def close(self) -> None:
        with self._lock:
            self._models.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Embeddings:
    FIELDS = ("model", "input", "encoding_format", "dimensions", "user")

    def __init__(self, client: Client):
        self._client = client

    def create(self, *, model: str, input, encoding_format: str = "float", dimensions: int | None = None,
               user: str | None = None) -> CreateEmbeddingResponse:
        """Embed text or token ids, as ``openai.OpenAI().embeddings.create``."""
        if encoding_format not in ("float", "base64"):
            raise BadRequestError(f"encoding_format must be 'float' or 'base64', got {encoding_format!r}")
        loaded = self._client.load(model)
        seqs = emb.tokenize_inputs(loaded, input)
        vectors = emb.shorten(emb.embed_sequences(loaded, seqs), dimensions)
        if encoding_format == "base64":
            data = [Embedding(emb.encode_base64(v), i) for i, v in enumerate(vectors)]
        else:
            data = [Embedding(v.tolist(), i) for i, v in enumerate(vectors)]
        tokens = sum(len(ids) for ids, _ in seqs)
        return CreateEmbeddingResponse(data=data, model=model, usage=EmbeddingUsage(tokens, tokens))

    def builder(self, **fields) -> RequestBuilder:
        return RequestBuilder(self.create, self.FIELDS, **fields)


def rerank_response(model: str, documents, texts, scores, tokens: int, top_n: int | None,
                    return_documents: bool) -> RerankResponse:
    """Scores in input order → the Cohere / Jina response (the HTTP server answers with it too)."""
    results = []
    for i in rr.ranking(scores, top_n):
        doc = None
        if return_documents:
            doc = dict(documents[i]) if isinstance(documents[i], dict) else {"text": texts[i]}
        results.append(RerankResult(index=i, relevance_score=float(scores[i]), document=doc))
    return RerankResponse(id=f"rerank-{uuid.uuid4().hex}", results=results, model=model,
                          usage=RerankUsage(tokens, tokens))


class Rerank:
    FIELDS = ("model", "query", "documents", "top_n", "return_documents", "raw_scores")

    def __init__(self, client: Client):
        self._client = client

    def create(self, *, model: str, query: str | None = None, documents=None, top_n: int | None = None,
               return_documents: bool = True, raw_scores: bool = False) -> RerankResponse:
        """Rank ``documents`` (strings, or dicts with a ``"text"``) by relevance to ``query``.

        Returns the Cohere / Jina shape: ``results`` sorted by descending ``relevance_score``,
        each with its ``index`` in ``documents`` and the ``document`` (``{"text": ...}``, or the
        dict as given; None with ``return_documents=False``); ``top_n`` keeps the best ``n``.
        A cross-encoder scores each (query, document) pair with the activation
        sentence-transformers' CrossEncoder uses for the checkpoint (sigmoid for one label unless
        it says otherwise); ``raw_scores=True`` gives the raw logits instead. An embedding model
        scores by the cosine similarity of the document's embedding with the query's
        (``raw_scores`` changes nothing there). Long documents are cut on the document side
        only; a query too long for the model is an error, never cut.
        """
        query = rr.check_query(query)
        texts = rr.document_texts(documents)
        top_n = rr.check_top_n(top_n)
        loaded = self._client.load(model)
        scores, tokens = rr.score_documents(loaded, query, texts, raw_scores=bool(raw_scores))
        return rerank_response(model, documents, texts, scores, tokens, top_n, return_documents)

    def builder(self, **fields) -> RequestBuilder:
        return RequestBuilder(self.create, self.FIELDS, **fields)
