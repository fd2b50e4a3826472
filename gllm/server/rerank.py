"""``POST /v1/rerank`` (and ``/rerank``): the Cohere / Jina request and response, micro-batched per model.

Concurrent requests to one model are tokenised on their own, then scored together in one set of
forward batches (``gllm_core.rerank.score_encoded``) and answered each with its own ranking.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gllm_core import rerank as rr
from gllm_core.errors import BadRequestError

from ..client import rerank_response
from .batching import MicroBatcher
from .embeddings import check_input_count, check_input_tokens, check_queue
from .errors import invalid
from .params import field, read_json


def can_rerank(served) -> bool:
    return bool({"rerank", "embed"} & served.tasks)


def attach(served, state) -> None:
    """Give a cross-encoder or embedding model its rerank batcher."""
    if can_rerank(served):
        loaded = served.loaded
        served.reranker = MicroBatcher(served.name, lambda encoded: rr.score_encoded(loaded, encoded),
                                       max_batch=state.limits.max_batch_inputs, executor=state.executor)


async def create_rerank(request: Request):
    from .app import state_of

    state = state_of(request)
    body = await read_json(request, state.limits.max_body_bytes)
    served = state.model(body)
    if not can_rerank(served):
        raise invalid(f"model {served.name!r} ({served.loaded.architecture}) cannot rerank: it is neither a "
                      "cross-encoder nor an embedding model", param="model", code="model_not_supported")
    query = field(body, "query", str)
    documents = field(body, "documents", list)
    top_n = field(body, "top_n", int, default=None, minimum=1)
    return_documents = field(body, "return_documents", bool, default=True)
    raw_scores = field(body, "raw_scores", bool, default=False)
    check_input_count(documents, state.limits, "documents")
    try:
        texts = rr.document_texts(documents)
    except BadRequestError as exc:
        raise invalid(str(exc), param="documents") from None
    try:
        rr.check_query(query)
        encoded = await asyncio.to_thread(rr.encode_request, served.loaded, query, texts, raw_scores=raw_scores)
    except BadRequestError as exc:
        raise invalid(str(exc), param="query") from None
    check_input_tokens(encoded.tokens, state.limits, "documents")
    check_queue(served.reranker, state.limits)
    (scores,) = await served.reranker.submit([encoded], weight=max(1, len(encoded.seqs)))
    response = rerank_response(served.name, documents, texts, scores, encoded.tokens, top_n, return_documents)
    return JSONResponse(response.model_dump())


def routes() -> list[Route]:
    return [Route("/v1/rerank", create_rerank, methods=["POST"]), Route("/rerank", create_rerank, methods=["POST"])]
