"""Text-generation responses in the shapes of the OpenAI Python SDK (``openai.types.chat`` and
``openai.types.completion``), as attrs classes with ``model_dump()``."""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs

from .types import _Model

ChoiceT = TypeVar("ChoiceT")


@attrs.define(kw_only=True)
class CompletionUsage(_Model):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@attrs.define(kw_only=True)
class _Response(_Model, Generic[ChoiceT]):
    """The fields a completion, a chat completion and a chunk begin with; each adds ``object`` and the rest."""

    id: str
    choices: list[ChoiceT]
    created: int
    model: str
    usage: CompletionUsage | None = None


# -- chat ------------------------------------------------------------------------------------------
@attrs.define(kw_only=True)
class TopLogprob(_Model):
    token: str
    bytes: list[int] | None
    logprob: float


@attrs.define(kw_only=True)
class ChatCompletionTokenLogprob(TopLogprob):
    """A generated token: ``token``, ``bytes`` and ``logprob`` as a ``TopLogprob``, then its alternatives."""

    top_logprobs: list[TopLogprob]


@attrs.define(kw_only=True)
class ChoiceLogprobs(_Model):
    content: list[ChatCompletionTokenLogprob] | None
    refusal: list[ChatCompletionTokenLogprob] | None = None


@attrs.define(kw_only=True)
class ChatCompletionMessage(_Model):
    content: str | None
    role: str = "assistant"
    refusal: str | None = None
    tool_calls: list | None = None


@attrs.define(kw_only=True)
class Choice(_Model):
    index: int
    message: ChatCompletionMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


@attrs.define(kw_only=True)
class ChatCompletion(_Response[Choice]):
    object: str = "chat.completion"
    system_fingerprint: str | None = None
    service_tier: str | None = None


@attrs.define(kw_only=True)
class ChoiceDelta(_Model):
    content: str | None = None
    role: str | None = None
    refusal: str | None = None
    tool_calls: list | None = None


@attrs.define(kw_only=True)
class ChunkChoice(_Model):
    index: int
    delta: ChoiceDelta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


@attrs.define(kw_only=True)
class ChatCompletionChunk(_Response[ChunkChoice]):
    object: str = "chat.completion.chunk"
    system_fingerprint: str | None = None
    service_tier: str | None = None


# -- text completions (the legacy API) -------------------------------------------------------------
@attrs.define(kw_only=True)
class Logprobs(_Model):
    """Parallel lists, one entry per generated token; ``text_offset`` counts characters of the choice's text."""

    tokens: list[str] = attrs.Factory(list)
    token_logprobs: list[float] = attrs.Factory(list)
    top_logprobs: list[dict[str, float]] = attrs.Factory(list)
    text_offset: list[int] = attrs.Factory(list)


@attrs.define(kw_only=True)
class CompletionChoice(_Model):
    index: int
    text: str
    finish_reason: str | None
    logprobs: Logprobs | None = None


@attrs.define(kw_only=True)
class Completion(_Response[CompletionChoice]):
    object: str = "text_completion"
    system_fingerprint: str | None = None
