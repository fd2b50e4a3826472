"""``POST /v1/embeddings``: OpenAI's request and response, micro-batched per model."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gllm_core import embedding as emb
from gllm_core.errors import BadRequestError

from ..types import CreateEmbeddingResponse, Embedding, EmbeddingUsage
from .batching import MicroBatcher
from .errors import invalid, over_limit, overloaded
from .params import field, read_json


def attach(served, state) -> None:
    """Give an embedding model its batcher."""
    if "embed" in served.tasks:
        loaded = served.loaded
        served.embedder = MicroBatcher(served.name, lambda seqs: emb.embed_sequences(loaded, seqs),
                                       max_batch=state.limits.max_batch_inputs, executor=state.executor)


def check_input_count(inputs, limits, param: str = "input") -> None:
    """Refuse more inputs than the limit before any tokenising."""
    if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) and len(inputs) > limits.max_inputs:
        raise over_limit(f"{param!r} has {len(inputs)} items, over the server's limit of {limits.max_inputs} "
                         f"(max_inputs, set with --max-inputs)", param, "max_inputs")


def check_input_tokens(count: int, limits, param: str = "input") -> None:
    if count > limits.max_input_tokens:
        raise over_limit(f"{param!r} has {count} tokens, over the server's limit of {limits.max_input_tokens} "
                         f"(max_input_tokens, set with --max-input-tokens)", param, "max_input_tokens")


def check_queue(batcher, limits) -> None:
    if batcher.pending >= limits.max_queued_requests:
        raise overloaded(f"model {batcher.name!r} has {batcher.pending} requests waiting, the server's limit "
                         f"(max_queued_requests, set with --max-queued-requests); retry later")


async def create_embeddings(request: Request):
    from .app import state_of

    state = state_of(request)
    body = await read_json(request, state.limits.max_body_bytes)
    served = state.model(body, "embed")
    encoding_format = field(body, "encoding_format", str, default="float", choices=("float", "base64"))
    dimensions = field(body, "dimensions", int, default=None, minimum=1)
    inputs = field(body, "input", (str, list))
    check_input_count(inputs, state.limits)
    try:
        seqs = await asyncio.to_thread(emb.tokenize_inputs, served.loaded, inputs)
    except BadRequestError as exc:
        raise invalid(str(exc), param="input") from None
    tokens = sum(len(ids) for ids, _ in seqs)
    check_input_tokens(tokens, state.limits)
    check_queue(served.embedder, state.limits)
    vectors = await served.embedder.submit(seqs)
    try:
        vectors = emb.shorten(vectors, dimensions)
    except BadRequestError as exc:
        raise invalid(str(exc), param="dimensions") from None
    if encoding_format == "base64":
        data = [Embedding(emb.encode_base64(v), i) for i, v in enumerate(vectors)]
    else:
        data = [Embedding(v.tolist(), i) for i, v in enumerate(vectors)]
    response = CreateEmbeddingResponse(data=data, model=served.name, usage=EmbeddingUsage(tokens, tokens))
    return JSONResponse(response.model_dump())


def routes() -> list[Route]:
    return [Route("/v1/embeddings", create_embeddings, methods=["POST"])]
