"""``client.chat.completions``: chat in the OpenAI shape. The messages go through the model's chat
template (sandboxed, gllm_core.chat_template), then through the same engine as text completions."""

from __future__ import annotations

import time
from typing import Iterator

from gllm_core.chat_template import check_messages, template_for
from gllm_core.errors import BadRequestError
from gllm_core.generation import engine_for
from gllm_core.sampling import MAX_TOP_LOGPROBS

from .builder import RequestBuilder
from .completion_types import (ChatCompletion, ChatCompletionChunk, ChatCompletionMessage, ChatCompletionTokenLogprob,
                               Choice, ChoiceDelta, ChoiceLogprobs, ChunkChoice, CompletionUsage, TopLogprob)
from .completions import (EXTRA_FIELDS, AsyncStream, Stream, _check_bool, include_usage, new_id, run_requests,
                          sampling_params, token_text)


def chat_logprobs(tokenizer, entries) -> ChoiceLogprobs:
    content = []
    for e in entries:
        text, raw = token_text(tokenizer, e.token_id)
        top = []
        for t, v in e.top:
            t_text, t_raw = token_text(tokenizer, t)
            top.append(TopLogprob(token=t_text, bytes=list(t_raw), logprob=v))
        content.append(ChatCompletionTokenLogprob(token=text, bytes=list(raw), logprob=e.logprob, top_logprobs=top))
    return ChoiceLogprobs(content=content)


def _check_unsupported(tools, tool_choice, response_format, logprobs, top_logprobs):
    if tool_choice not in (None, "auto", "none"):
        raise BadRequestError("tool_choice other than 'auto' or 'none' is not supported")
    if response_format is not None and not (isinstance(response_format, dict) and
                                            response_format.get("type") == "text"):
        raise BadRequestError("response_format other than {'type': 'text'} is not supported")
    _check_bool("logprobs", logprobs)
    if top_logprobs is not None:
        if not logprobs:
            raise BadRequestError("top_logprobs needs logprobs=true")
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or \
                not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise BadRequestError(f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}, got {top_logprobs!r}")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise BadRequestError("tools must be a list of tool objects")


class ChatCompletions:
    """``client.chat.completions.create(model=, messages=, ...)`` as ``openai.OpenAI().chat.completions``."""

    FIELDS = ("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
              "stream_options", "stop", "seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
              "logit_bias", "user", "tools", "tool_choice", "response_format", "chat_template_kwargs",
              "add_generation_prompt") + EXTRA_FIELDS

    def __init__(self, client):
        self._client = client

    def create(self, *, model: str, messages, max_tokens: int | None = None, max_completion_tokens: int | None = None,
               temperature: float | None = 1.0, top_p: float | None = 1.0, n: int | None = 1, stream: bool = False,
               stream_options: dict | None = None, stop: str | list[str] | None = None, seed: int | None = None,
               logprobs: bool = False, top_logprobs: int | None = None, presence_penalty: float | None = 0.0,
               frequency_penalty: float | None = 0.0, logit_bias: dict | None = None, user: str | None = None,
               tools: list | None = None, tool_choice=None, response_format: dict | None = None,
               chat_template_kwargs: dict | None = None, add_generation_prompt: bool = True,
               top_k: int | None = 0, min_p: float | None = 0.0, repetition_penalty: float | None = 1.0,
               stop_token_ids=None, ignore_eos: bool = False,
               skip_special_tokens: bool = True) -> ChatCompletion | Stream:
        """Answer ``messages``. ``max_tokens`` (or ``max_completion_tokens``) defaults to the rest of
        the context; ``logprobs=True`` with ``top_logprobs=k`` gives each token's log-probability and
        the top k. ``chat_template_kwargs`` reach the template (e.g. ``{"enable_thinking": False}``).
        With ``stream=True`` returns a Stream of ChatCompletionChunk (``choices[0].delta.content``;
        the last chunk of each choice carries ``finish_reason``)."""
        messages = check_messages(messages)
        _check_unsupported(tools, tool_choice, response_format, logprobs, top_logprobs)
        if max_tokens is not None and max_completion_tokens is not None and max_tokens != max_completion_tokens:
            raise BadRequestError("give max_tokens or max_completion_tokens, not two different values")
        if chat_template_kwargs is not None and not isinstance(chat_template_kwargs, dict):
            raise BadRequestError("chat_template_kwargs must be an object")
        params = sampling_params(
            max_tokens=max_completion_tokens if max_completion_tokens is not None else max_tokens,
            temperature=temperature, top_p=top_p, n=n, stop=stop, seed=seed, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty, logit_bias=logit_bias, top_k=top_k, min_p=min_p,
            repetition_penalty=repetition_penalty, stop_token_ids=stop_token_ids, ignore_eos=ignore_eos,
            skip_special_tokens=skip_special_tokens, logprobs=(top_logprobs or 0) if logprobs else None)
        usage_chunk = include_usage(stream_options)
        _check_bool("stream", stream)
        loaded = self._client.load(model)
        engine = engine_for(loaded)
        template = template_for(loaded.tokenizer, tools=tools, origin=f"model {model!r}")
        text = template.render(messages, tools=tools, add_generation_prompt=_check_bool(
            "add_generation_prompt", add_generation_prompt), **(chat_template_kwargs or {}))
        ids = loaded.tokenizer.encode_prompt(text, add_special_tokens=False)  # the template placed the specials
        request = engine.make_request(ids, params)
        rid, created = new_id("chatcmpl"), int(time.time())
        if stream:
            return Stream(self._chunks(engine, request, loaded, model, rid, created, usage_chunk),
                          engine=engine, requests=[request])
        states, prompt_tokens, completion_tokens = run_requests(engine, [request], params.n)
        choices = [Choice(index=i, message=ChatCompletionMessage(content="".join(s.text)),
                          finish_reason=s.finish_reason,
                          logprobs=chat_logprobs(loaded.tokenizer, s.logprobs) if logprobs else None)
                   for i, s in enumerate(states)]
        return ChatCompletion(id=rid, choices=choices, created=created, model=model,
                              usage=CompletionUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                                    total_tokens=prompt_tokens + completion_tokens))

    def _chunks(self, engine, request, loaded, model, rid, created, usage_chunk) -> Iterator[ChatCompletionChunk]:
        def chunk(choice: ChunkChoice) -> ChatCompletionChunk:
            return ChatCompletionChunk(id=rid, created=created, model=model, choices=[choice])

        engine.add_request(request)  # on the first next(): a stream never read never runs
        for i in range(request.params.n):  # the role comes first, as OpenAI streams it
            yield chunk(ChunkChoice(index=i, delta=ChoiceDelta(role="assistant", content="")))
        generated = {}
        want_logprobs = request.params.logprobs is not None
        for out in engine.stream(request):
            generated[out.index] = out.num_generated_tokens
            if not (out.text or out.finish_reason or out.logprobs):
                continue  # tokens whose text is still held back (part of a character, a stop string?)
            yield chunk(ChunkChoice(
                index=out.index, delta=ChoiceDelta(content=out.text if out.text else None),
                finish_reason=out.finish_reason,
                logprobs=chat_logprobs(loaded.tokenizer, out.logprobs) if want_logprobs else None))
        if usage_chunk:
            prompt_tokens, completion_tokens = len(request.prompt_ids), sum(generated.values())
            yield ChatCompletionChunk(id=rid, created=created, model=model, choices=[], usage=CompletionUsage(
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens))

    def builder(self, **fields) -> RequestBuilder:
        return RequestBuilder(self.create, self.FIELDS, **fields)


class Chat:
    """``client.chat``: holds ``completions``, as in the OpenAI SDK."""

    def __init__(self, client):
        self.completions = ChatCompletions(client)


class AsyncChatCompletions:
    def __init__(self, client):
        self._client = client

    async def create(self, **kwargs) -> ChatCompletion | AsyncStream:
        result = await self._client._run(self._client._sync.chat.completions.create, **kwargs)
        return AsyncStream(result, self._client._run) if isinstance(result, Stream) else result

    def builder(self, **fields):
        from .async_client import _AsyncBuilder

        return _AsyncBuilder(self.create, ChatCompletions.FIELDS, **fields)


class AsyncChat:
    def __init__(self, client):
        self.completions = AsyncChatCompletions(client)
