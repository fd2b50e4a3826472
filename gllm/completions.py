"""``client.completions``: text completions in the OpenAI shape, and what chat shares with them
(request parameters, streams, logprob formatting).

Every request runs on the model's one engine (gllm_core.generation.engine_for), so requests from
several threads, or the several prompts and ``n`` choices of one request, decode in one batch.
"""

from __future__ import annotations

import time
import uuid
from typing import Callable, Iterator

from gllm_core.errors import BadRequestError
from gllm_core.generation import GenerationRequest, SequenceOutput, engine_for
from gllm_core.sampling import SamplingParams

from .builder import RequestBuilder
from .completion_types import Completion, CompletionChoice, CompletionUsage, Logprobs

_DONE = object()

# Parameters gllm takes beyond OpenAI's (vLLM names them the same way).
EXTRA_FIELDS = ("top_k", "min_p", "repetition_penalty", "stop_token_ids", "ignore_eos", "skip_special_tokens")


class Stream:
    """Chunks as they are generated. Iterate it; ``close()`` (or leaving a ``with`` block, or
    dropping it) stops the generation and frees its KV cache. ``requests`` are the engine requests
    behind it (queued on the first ``next()``); ``cancel()`` stops them from any thread."""

    def __init__(self, chunks: Iterator, *, engine=None, requests=()):
        self._chunks = chunks
        self._engine = engine
        self.requests = list(requests)

    def cancel(self) -> None:
        """Stop the generation from another thread (``close()`` belongs to the reading one): the
        sequences end with finish_reason "cancelled" and free their KV cache; the stream then ends."""
        if self._engine is not None:
            for request in self.requests:
                self._engine.cancel(request.id)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncStream:
    """``async for`` over a Stream; each step runs on the client's worker threads, off the loop."""

    def __init__(self, stream: Stream, run: Callable):
        self._stream = stream
        self._run = run

    def __aiter__(self):
        return self

    async def __anext__(self):
        chunk = await self._run(next, self._stream, _DONE)
        if chunk is _DONE:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        await self._run(self._stream.close)

    close = aclose

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise BadRequestError(f"{name} must be true or false, got {value!r}")
    return value


def sampling_params(*, max_tokens, temperature, top_p, n, stop, seed, presence_penalty, frequency_penalty,
                    logit_bias, top_k, min_p, repetition_penalty, stop_token_ids, ignore_eos, skip_special_tokens,
                    logprobs) -> SamplingParams:
    """OpenAI request fields (None meaning "the default", as the API treats null) → SamplingParams,
    checked; BadRequestError names the field at fault."""
    return SamplingParams(
        max_tokens=max_tokens, temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p, n=1 if n is None else n, stop=stop or (), seed=seed,
        presence_penalty=presence_penalty or 0.0, frequency_penalty=frequency_penalty or 0.0,
        logit_bias=logit_bias, top_k=0 if top_k is None else top_k, min_p=min_p or 0.0,
        repetition_penalty=1.0 if repetition_penalty is None else repetition_penalty,
        stop_token_ids=tuple(stop_token_ids or ()), ignore_eos=_check_bool("ignore_eos", ignore_eos),
        skip_special_tokens=_check_bool("skip_special_tokens", skip_special_tokens), logprobs=logprobs,
    ).validate()


def include_usage(stream_options) -> bool:
    if stream_options is None:
        return False
    if not isinstance(stream_options, dict) or not set(stream_options) <= {"include_usage", "continuous_usage_stats"}:
        raise BadRequestError(f"stream_options must be an object like {{'include_usage': true}}, "
                              f"got {stream_options!r}")
    return bool(stream_options.get("include_usage"))


def token_text(tokenizer, token_id: int) -> tuple[str, bytes]:
    """A token as OpenAI shows it: its text, or ``bytes:\\xNN…`` when it is part of a character."""
    raw = tokenizer.token_bytes(token_id) if tokenizer is not None else str(token_id).encode()
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw), raw


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class ChoiceState:
    """One choice's answer, gathered from the engine's outputs."""

    def __init__(self):
        self.text: list[str] = []
        self.logprobs: list = []
        self.finish_reason: str | None = None
        self.tokens = 0

    def add(self, out: SequenceOutput) -> None:
        self.text.append(out.text)
        self.logprobs.extend(out.logprobs)
        self.finish_reason = out.finish_reason or self.finish_reason
        self.tokens = out.num_generated_tokens


def run_requests(engine, requests: list[GenerationRequest], n: int) -> tuple[list[ChoiceState], int, int]:
    """Run to the end: one ChoiceState per choice (prompt-major, as OpenAI numbers them), and the
    prompt and completion token counts."""
    states = [ChoiceState() for _ in range(len(requests) * n)]
    where = {r.id: i for i, r in enumerate(requests)}
    for request in requests:
        engine.add_request(request)
    for out in engine.stream(requests):
        states[where[out.request_id] * n + out.index].add(out)
    prompt_tokens = sum(len(r.prompt_ids) for r in requests)
    return states, prompt_tokens, sum(s.tokens for s in states)


def legacy_logprobs(tokenizer, entries, offset_base: int = 0) -> Logprobs:
    lp = Logprobs()
    for e in entries:
        lp.tokens.append(token_text(tokenizer, e.token_id)[0])
        lp.token_logprobs.append(e.logprob)
        lp.top_logprobs.append({token_text(tokenizer, t)[0]: v for t, v in e.top})
        lp.text_offset.append(offset_base + e.text_offset)
    return lp


def prompt_token_lists(loaded, prompt, add_special_tokens: bool) -> list[list[int]]:
    """OpenAI ``prompt``: a string, strings, token ids, or lists of token ids."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise BadRequestError("prompt must be a string, a list of strings, a list of token ids or a list of "
                              "lists of token ids, and not empty")
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        return [list(prompt)]
    if not (all(isinstance(p, str) for p in prompt) or all(isinstance(p, (list, tuple)) for p in prompt)):
        raise BadRequestError("prompt must be all strings or all lists of token ids; do not mix the forms")
    out = []
    for i, p in enumerate(prompt):
        if isinstance(p, str):
            if loaded.tokenizer is None:
                raise BadRequestError(f"model {loaded.name!r} has no tokenizer: pass the prompt as token ids")
            ids = loaded.tokenizer.encode_prompt(p, add_special_tokens=add_special_tokens)
        elif isinstance(p, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            ids = list(p)
        else:
            raise BadRequestError(f"prompt[{i}] must be a string or a list of token ids; do not mix the forms")
        if not ids:
            raise BadRequestError(f"prompt[{i}] is empty (no tokens)")
        out.append(ids)
    return out


class Completions:
    """``client.completions.create(model=, prompt=, ...)`` as ``openai.OpenAI().completions``."""

    FIELDS = ("model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options",
              "logprobs", "echo", "stop", "presence_penalty", "frequency_penalty", "seed", "logit_bias", "user",
              "best_of", "suffix", "add_special_tokens") + EXTRA_FIELDS

    def __init__(self, client):
        self._client = client

    def create(self, *, model: str, prompt, max_tokens: int | None = 16, temperature: float | None = 1.0,
               top_p: float | None = 1.0, n: int | None = 1, stream: bool = False, stream_options: dict | None = None,
               logprobs: int | None = None, echo: bool = False, stop: str | list[str] | None = None,
               presence_penalty: float | None = 0.0, frequency_penalty: float | None = 0.0, seed: int | None = None,
               logit_bias: dict | None = None, user: str | None = None, best_of: int | None = None,
               suffix: str | None = None, add_special_tokens: bool = True, top_k: int | None = 0,
               min_p: float | None = 0.0, repetition_penalty: float | None = 1.0, stop_token_ids=None,
               ignore_eos: bool = False, skip_special_tokens: bool = True) -> Completion | Stream:
        """Continue ``prompt``. ``max_tokens`` defaults to 16 as in OpenAI's API (None: up to the
        context length); ``logprobs=k`` gives each token's log-probability and the top k. With
        ``stream=True`` returns a Stream of Completion chunks (``choices[0].text`` is the new text)."""
        if echo:
            raise BadRequestError("echo is not supported")
        if suffix:
            raise BadRequestError("suffix (insertion) is not supported")
        if best_of is not None and best_of != (n or 1):
            raise BadRequestError("best_of other than n is not supported")
        params = sampling_params(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n, stop=stop, seed=seed,
            presence_penalty=presence_penalty, frequency_penalty=frequency_penalty, logit_bias=logit_bias,
            top_k=top_k, min_p=min_p, repetition_penalty=repetition_penalty, stop_token_ids=stop_token_ids,
            ignore_eos=ignore_eos, skip_special_tokens=skip_special_tokens, logprobs=logprobs)
        usage_chunk = include_usage(stream_options)
        _check_bool("stream", stream)
        loaded = self._client.load(model)
        engine = engine_for(loaded)
        ids = prompt_token_lists(loaded, prompt, _check_bool("add_special_tokens", add_special_tokens))
        requests = [engine.make_request(p, params) for p in ids]  # every check before anything runs
        rid, created = new_id("cmpl"), int(time.time())
        if stream:
            return Stream(self._chunks(engine, requests, loaded, model, rid, created, usage_chunk),
                          engine=engine, requests=requests)
        states, prompt_tokens, completion_tokens = run_requests(engine, requests, params.n)
        choices = [CompletionChoice(index=i, text="".join(s.text), finish_reason=s.finish_reason,
                                    logprobs=legacy_logprobs(loaded.tokenizer, s.logprobs)
                                    if params.logprobs is not None else None)
                   for i, s in enumerate(states)]
        return Completion(id=rid, choices=choices, created=created, model=model,
                          usage=CompletionUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                                total_tokens=prompt_tokens + completion_tokens))

    def _chunks(self, engine, requests, loaded, model, rid, created, usage_chunk) -> Iterator[Completion]:
        n = requests[0].params.n
        where = {r.id: i for i, r in enumerate(requests)}
        generated: dict[int, int] = {}
        for request in requests:  # queued on the first next(): a stream never read never runs
            engine.add_request(request)
        for out in engine.stream(requests):
            index = where[out.request_id] * n + out.index
            generated[index] = out.num_generated_tokens
            if not (out.text or out.finish_reason or out.logprobs):
                continue  # tokens whose text is still held back (part of a character, a stop string?)
            lp = legacy_logprobs(loaded.tokenizer, out.logprobs) if requests[0].params.logprobs is not None else None
            yield Completion(id=rid, created=created, model=model, choices=[CompletionChoice(
                index=index, text=out.text, finish_reason=out.finish_reason, logprobs=lp)])
        if usage_chunk:
            prompt_tokens = sum(len(r.prompt_ids) for r in requests)
            completion_tokens = sum(generated.values())
            yield Completion(id=rid, created=created, model=model, choices=[], usage=CompletionUsage(
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens))

    def builder(self, **fields) -> RequestBuilder:
        return RequestBuilder(self.create, self.FIELDS, **fields)


class AsyncCompletions:
    def __init__(self, client):
        self._client = client

    async def create(self, **kwargs) -> Completion | AsyncStream:
        result = await self._client._run(self._client._sync.completions.create, **kwargs)
        return AsyncStream(result, self._client._run) if isinstance(result, Stream) else result

    def builder(self, **fields):
        from .async_client import _AsyncBuilder

        return _AsyncBuilder(self.create, Completions.FIELDS, **fields)

