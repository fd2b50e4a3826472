"""``POST /v1/chat/completions`` and ``POST /v1/completions``: text generation, streamed or not.

A request becomes an SDK stream (``client.chat.completions.create(stream=True)``: the chat
template, tokenizer, parameter checks and chunk shapes all live in the SDK). Its own thread reads
the stream to the end and hands each chunk to the event loop through an unbounded queue. Every
such thread steps the model's one engine whenever no other is stepping it
(``gllm_core.generation``), so all running requests decode together in one batch and a request
that arrives joins that batch at the next step. A slow client only lets its own queue grow; a
client that goes away has its sequences cancelled, which frees their KV cache at once.

At most ``max_concurrent_sequences`` sequences per model generate at once (a request makes one per
prompt and choice); the next ``max_queued_requests`` requests wait their turn; more get 429.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gllm_core.errors import BadRequestError, GllmError

from ..chat import ChatCompletions
from ..completion_types import (ChatCompletion, ChatCompletionMessage, Choice, ChoiceLogprobs, Completion,
                                CompletionChoice, Logprobs)
from ..completions import Completions, include_usage
from .errors import ApiError, from_gllm, invalid, over_limit, overloaded, unavailable
from .params import field, read_json

_END = object()


class _Disconnected(Exception):
    """The client closed the connection."""


class Generation:
    """One request's SDK stream, read to the end by its own thread."""

    def __init__(self, stream, loop: asyncio.AbstractEventLoop, on_done: Callable[[], None]):
        self.stream = stream
        self.queue: asyncio.Queue = asyncio.Queue()
        self.finished = threading.Event()
        self._loop = loop
        self._on_done = on_done
        self._cancelled = False
        self._thread = threading.Thread(target=self._pump, name="gllm-generation", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item) -> None:
        self._call(self.queue.put_nowait, item)

    def _call(self, fn, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop has closed (the server stopped): no one is left to tell
            pass

    def _pump(self) -> None:
        resent = False
        try:
            if not self._cancelled:
                for chunk in self.stream:  # each next() may step the engine for every running request
                    self._put(chunk)
                    if self._cancelled and not resent:  # a cancel that came before the request was queued
                        self.stream.cancel()
                        resent = True
                # a cancelled stream ends after the chunk that says so (finish_reason "cancelled")
        except BaseException as exc:  # noqa: BLE001 - handed to the request's coroutine
            self._put(exc)
        finally:
            self.stream.close()
            self._put(_END)
            self._call(self._on_done)
            self.finished.set()

    def cancel(self) -> None:
        """Stop generating (any thread): the sequences end and free their KV cache."""
        self._cancelled = True
        self.stream.cancel()

    async def next(self, disconnected: asyncio.Future):
        """The next chunk, an exception from the generation, or ``_END``; raises _Disconnected first
        if the client goes away."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        get = asyncio.ensure_future(self.queue.get())
        await asyncio.wait((get, disconnected), return_when=asyncio.FIRST_COMPLETED)
        if get.done():
            return get.result()
        get.cancel()
        raise _Disconnected


async def _wait_for_disconnect(receive) -> None:
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # noqa: BLE001 - a connection that fails to read is gone as well
        return


class Slots:
    """Admission for one model: ``size`` sequences generate at once (a request takes one per prompt
    and choice), ``max_waiting`` more requests may wait."""

    def __init__(self, name: str, size: int, max_waiting: int):
        self.name = name
        self.size = size
        self.max_waiting = max_waiting
        self.running: set[Generation] = set()
        self.waiting = 0
        self._free = size
        self._wake: asyncio.Condition | None = None
        self._closed = False

    def start(self) -> None:
        self._wake = asyncio.Condition()

    async def stop(self) -> None:
        """Cancel what still runs and wait for its threads: no sequence outlives the server."""
        self._closed = True
        if self._wake is not None:
            async with self._wake:  # requests still waiting for a slot get 503
                self._wake.notify_all()
        for gen in list(self.running):
            gen.cancel()
        for gen in list(self.running):
            await asyncio.to_thread(gen.finished.wait, 30.0)

    async def admit(self, sequences: int) -> None:
        if self._closed or self._wake is None:
            raise unavailable("the server is shutting down")
        if self._free < sequences and self.waiting >= self.max_waiting:
            raise overloaded(f"model {self.name!r} has {self.size - self._free} sequences generating and "
                             f"{self.waiting} requests waiting, the server's limits (max_concurrent_sequences, "
                             f"max_queued_requests; set with --max-concurrent-sequences and "
                             f"--max-queued-requests); retry later")
        self.waiting += 1
        try:
            async with self._wake:
                await self._wake.wait_for(lambda: self._free >= sequences or self._closed)
                if self._closed:
                    raise unavailable("the server is shutting down")
                self._free -= sequences
        finally:
            self.waiting -= 1

    def release(self, sequences: int) -> None:
        self._free += sequences
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._wake:
            self._wake.notify_all()


def attach(served, state) -> None:
    """Give a text-generation model its admission slots."""
    if "generate" in served.tasks:
        served.generator = Slots(served.name, state.limits.max_concurrent_sequences,
                                 state.limits.max_queued_requests)


# -- from a request to a running generation -------------------------------------------------------

class _Kind:
    """What differs between chat and text completions."""

    def __init__(self, fields, create: Callable, required: str, limit_fields: tuple[str, ...]):
        self.fields = frozenset(fields) - {"model", "stream", "stream_options"}  # passed on to the SDK
        self.create = create
        self.required = required
        self.limit_fields = limit_fields


CHAT = _Kind(ChatCompletions.FIELDS, lambda client: client.chat.completions.create, "messages",
             ("max_tokens", "max_completion_tokens"))
TEXT = _Kind(Completions.FIELDS, lambda client: client.completions.create, "prompt", ("max_tokens",))


async def _start(request: Request, kind: _Kind):
    from .app import state_of

    state = state_of(request)
    limits = state.limits
    body = await read_json(request, limits.max_body_bytes)
    served = state.model(body, "generate")
    stream = field(body, "stream", bool, default=False)
    client_usage = include_usage(body.get("stream_options")) if stream else False
    kwargs: dict[str, Any] = {k: v for k, v in body.items() if k in kind.fields and v is not None}
    if kind.required not in kwargs:
        raise invalid(f"missing required parameter {kind.required!r}", param=kind.required,
                      code="missing_required_parameter")
    for name in kind.limit_fields:
        value = kwargs.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > limits.max_tokens:
            raise over_limit(f"{name!r} is {value}, over the server's limit of {limits.max_tokens} tokens "
                             f"(max_tokens, set with --max-tokens)", name, "max_tokens")
    try:
        sdk_stream = await asyncio.to_thread(kind.create(state.client), model=served.name, stream=True,
                                             stream_options={"include_usage": True}, **kwargs)
    except BadRequestError as exc:  # the SDK's messages start with the field at fault
        named = re.match(r"[a-z_]+", str(exc))
        param = named.group(0) if named and named.group(0) in kind.fields else None
        raise invalid(str(exc), param=param) from None
    prompt_tokens = sum(len(r.prompt_ids) for r in sdk_stream.requests)
    if prompt_tokens > limits.max_input_tokens:
        sdk_stream.close()
        raise over_limit(f"the prompt has {prompt_tokens} tokens, over the server's limit of "
                         f"{limits.max_input_tokens} (max_input_tokens, set with --max-input-tokens)",
                         kind.required, "max_input_tokens")
    for r in sdk_stream.requests:  # not queued yet: a request that named no max_tokens gets the server's
        r.max_tokens = min(r.max_tokens, limits.max_tokens)
    slots: Slots = served.generator
    sequences = sum(r.params.n for r in sdk_stream.requests)
    if sequences > slots.size:
        sdk_stream.close()
        raise over_limit(f"the request makes {sequences} sequences (prompts × n), over the server's limit of "
                         f"{slots.size} generating at once (max_concurrent_sequences, set with "
                         f"--max-concurrent-sequences)", "n", "max_concurrent_sequences")
    try:
        await slots.admit(sequences)
    except BaseException:
        sdk_stream.close()
        raise
    gen = Generation(sdk_stream, asyncio.get_running_loop(), on_done=lambda: _finish(slots, gen, sequences))
    slots.running.add(gen)
    gen.start()
    return gen, stream, client_usage


def _finish(slots: Slots, gen: Generation, sequences: int) -> None:
    slots.running.discard(gen)
    slots.release(sequences)


def _error_of(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, GllmError):
        return from_gllm(exc)
    return ApiError(500, f"generation failed: {type(exc).__name__}: {exc}", type="server_error",
                    code="internal_error")


# -- streamed answers: server-sent events ---------------------------------------------------------

class EventStream:
    """``text/event-stream``: ``data: {chunk}`` per chunk, then ``data: [DONE]``. Watches the
    connection while it waits for chunks, so a client that leaves is noticed at once."""

    def __init__(self, gen: Generation, client_usage: bool):
        self.gen = gen
        self.client_usage = client_usage

    async def __call__(self, scope, receive, send):
        disconnected = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]})
            while True:
                item = await self.gen.next(disconnected)
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    await self._event(send, _error_of(item).body())
                    continue
                if item.usage is not None and not item.choices and not self.client_usage:
                    continue  # the usage chunk the server asked for itself
                await self._event(send, item.model_dump())
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        except (_Disconnected, OSError):
            pass
        finally:
            disconnected.cancel()
            if not self.gen.finished.is_set():
                self.gen.cancel()

    @staticmethod
    async def _event(send, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})


# -- whole answers: the chunks gathered --------------------------------------------------------------

async def _gather(request: Request, gen: Generation) -> list:
    """Every chunk of the answer; raises _Disconnected (having cancelled it) if the client leaves."""
    disconnected = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    chunks = []
    try:
        while True:
            item = await gen.next(disconnected)
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise _error_of(item)
            chunks.append(item)
    finally:
        disconnected.cancel()
        if not gen.finished.is_set():
            gen.cancel()
    if not chunks or any(c.finish_reason == "cancelled" for chunk in chunks for c in chunk.choices):
        raise unavailable("the request was cancelled: the server is shutting down")
    return chunks


def _chat_response(chunks: list) -> ChatCompletion:
    first, choices, usage = chunks[0], {}, None
    for chunk in chunks:
        usage = chunk.usage or usage
        for c in chunk.choices:
            entry = choices.setdefault(c.index, {"text": [], "finish": None, "logprobs": None})
            entry["text"].append(c.delta.content or "")
            entry["finish"] = c.finish_reason or entry["finish"]
            if c.logprobs is not None:
                entry["logprobs"] = (entry["logprobs"] or []) + list(c.logprobs.content or [])
    return ChatCompletion(id=first.id, created=first.created, model=first.model, usage=usage, choices=[
        Choice(index=i, message=ChatCompletionMessage(content="".join(e["text"])), finish_reason=e["finish"],
               logprobs=ChoiceLogprobs(content=e["logprobs"]) if e["logprobs"] is not None else None)
        for i, e in sorted(choices.items())])


def _text_response(chunks: list) -> Completion:
    first, choices, usage = chunks[0], {}, None
    for chunk in chunks:
        usage = chunk.usage or usage
        for c in chunk.choices:
            entry = choices.setdefault(c.index, {"text": [], "finish": None, "logprobs": None})
            entry["text"].append(c.text)
            entry["finish"] = c.finish_reason or entry["finish"]
            if c.logprobs is not None:
                lp = entry["logprobs"] = entry["logprobs"] or Logprobs()
                for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
                    getattr(lp, name).extend(getattr(c.logprobs, name))
    return Completion(id=first.id, created=first.created, model=first.model, usage=usage, choices=[
        CompletionChoice(index=i, text="".join(e["text"]), finish_reason=e["finish"], logprobs=e["logprobs"])
        for i, e in sorted(choices.items())])


async def _answer(request: Request, kind: _Kind, build: Callable):
    gen, stream, client_usage = await _start(request, kind)
    if stream:
        return EventStream(gen, client_usage)
    try:
        chunks = await _gather(request, gen)
    except _Disconnected:
        return Response(status_code=499)  # no one is listening; nginx's "client closed request"
    return JSONResponse(build(chunks).model_dump())


async def chat_completions(request: Request):
    return await _answer(request, CHAT, _chat_response)


async def completions(request: Request):
    return await _answer(request, TEXT, _text_response)


def routes() -> list[Route]:
    return [Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"])]
