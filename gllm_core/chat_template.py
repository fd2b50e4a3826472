"""Chat templates: turn a list of messages into the prompt text a chat model was trained on.

Templates come with the model files (tokenizer_config.json, chat_template.jinja, GGUF metadata), so
they are untrusted code: they run in Jinja's ``ImmutableSandboxedEnvironment`` with the globals
transformers gives them (``raise_exception``, ``strftime_now``, ``namespace``, ``dict``, a
``tojson`` that does not escape HTML, ``loopcontrols`` and the ``{% generation %}`` tag) and see
only plain data. A template that reaches for Python internals is refused with
``UnsafeTemplateError``.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import BadRequestError, CorruptFileError, UnsafeTemplateError

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class _TemplateRaised(jinja2.exceptions.TemplateError):
    """``raise_exception(...)`` called by the template: it refuses these messages."""


def _raise_exception(message):
    raise _TemplateRaised(str(message))


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


_now = datetime.now  # a test pins the clock here


def _strftime_now(fmt):
    return _now().strftime(fmt)


class _TemplateDict:
    """``dict(...)`` for templates without handing them the type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """``namespace(...)`` that refuses underscore names (no way to shadow or reach internals)."""

    def __init__(*args, **kwargs):  # noqa: N805 - Jinja's own signature trick, so namespace(self=1) works
        self, args = args[0], args[1:]
        values = dict(*args, **kwargs)
        for name in values:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, values)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} starts with an underscore")


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}`` marks assistant text for training masks; here it
    just renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox hands back a silent Undefined for an unsafe attribute (``{{ x.__class__ }}``
    renders as nothing); here any such attempt stops the template, so it is refused out loud."""

    def unsafe_undefined(self, obj, attribute):
        raise jinja2.exceptions.SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


@functools.lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _GenerationTag])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_TemplateDict(),
                       namespace=_Namespace)
    return env.from_string(source)


def _plain(value: Any, where: str) -> Any:
    """JSON-like data only: a template must not see objects with methods of their own."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if callable(getattr(value, "model_dump", None)):  # pydantic objects, e.g. from the openai package
        return _plain(value.model_dump(), where)
    raise BadRequestError(f"{where} must be JSON-like data (str, number, bool, list, dict), "
                          f"got {type(value).__name__}")


def _flatten_content(content: Any, where: str) -> str:
    """OpenAI content parts → one string; only text parts are understood by a text model."""
    texts = []
    for i, part in enumerate(content):
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict) or part.get("type") not in ("text", "input_text", "refusal"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise BadRequestError(f"{where}[{i}] is a {kind!r} part; this model reads text parts only")
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise BadRequestError(f"{where}[{i}].text must be a string")
        texts.append(text)
    return "\n".join(texts)


def check_messages(messages: Any) -> list[dict]:
    """OpenAI chat messages → plain dicts the templates expect, or BadRequestError naming the fault."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise BadRequestError("messages must be a non-empty list of {'role': ..., 'content': ...} objects")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if callable(getattr(message, "model_dump", None)):
            message = message.model_dump()
        if not isinstance(message, Mapping):
            raise BadRequestError(f"{where} must be an object with 'role' and 'content', got {type(message).__name__}")
        message = {k: v for k, v in _plain(dict(message), where).items() if v is not None}
        role = message.get("role")
        if role not in ROLES:
            raise BadRequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = _flatten_content(content, f"{where}.content")
        elif content is None:
            if role != "assistant":
                raise BadRequestError(f"{where}.content is required for role {role!r}")
        elif not isinstance(content, str):
            raise BadRequestError(f"{where}.content must be a string or a list of text parts")
        reasoning = next((message[k] for k in _REASONING_FIELDS if isinstance(message.get(k), str)), None)
        if reasoning is not None:  # templates read reasoning_content (gpt-oss: thinking), as transformers fills
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        for call in message.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                try:  # OpenAI sends arguments as a JSON string; templates expect the object
                    parsed = json.loads(fn["arguments"])
                except json.JSONDecodeError:
                    parsed = None
                if isinstance(parsed, dict):
                    fn["arguments"] = parsed
        out.append(message)
    return out


class ChatTemplate:
    """A compiled chat template with the special tokens it may refer to."""

    def __init__(self, source: str, *, special_tokens: Mapping[str, str] | None = None, origin: str = "the model"):
        if not isinstance(source, str) or not source.strip():
            raise CorruptFileError(f"{origin}: the chat template is empty")
        self.source = source
        self.origin = origin
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if isinstance(v, str)}
        try:
            self._template = _compile(source)
        except jinja2.exceptions.TemplateSyntaxError as exc:
            raise CorruptFileError(f"{origin}: the chat template does not parse (line {exc.lineno}): {exc.message}") \
                from None
        except jinja2.exceptions.SecurityError as exc:
            raise self._unsafe(exc) from None

    def _unsafe(self, exc) -> UnsafeTemplateError:
        return UnsafeTemplateError(f"{self.origin}: the chat template tried to reach Python internals and was "
                                   f"refused ({exc})")

    def render(self, messages: Any, *, add_generation_prompt: bool = True, tools: Sequence[dict] | None = None,
               documents: Sequence[dict] | None = None, **kwargs: Any) -> str:
        """The prompt text for ``messages``; ``kwargs`` reach the template as variables
        (e.g. ``enable_thinking=False`` for Qwen3)."""
        context = dict(self.special_tokens)
        context.update(_plain(kwargs, "chat_template_kwargs"))
        if tools is not None and (not isinstance(tools, (list, tuple)) or
                                  not all(isinstance(t, Mapping) for t in tools)):
            raise BadRequestError("tools must be a list of tool objects")
        try:
            return self._template.render(messages=check_messages(messages), tools=_plain(tools, "tools"),
                                         documents=_plain(documents, "documents"),
                                         add_generation_prompt=bool(add_generation_prompt), **context)
        except jinja2.exceptions.SecurityError as exc:
            raise self._unsafe(exc) from None
        except _TemplateRaised as exc:
            raise BadRequestError(f"the chat template of {self.origin} refused the messages: {exc.message}") \
                from None
        except (jinja2.exceptions.TemplateError, TypeError, ValueError, KeyError, IndexError,
                AttributeError, OverflowError, RecursionError) as exc:
            if isinstance(exc, BadRequestError):
                raise
            raise BadRequestError(f"the chat template of {self.origin} failed on these messages: "
                                  f"{type(exc).__name__}: {exc}") from None


def template_for(tokenizer, *, tools: Any = None, origin: str = "the model") -> ChatTemplate:
    """The chat template a tokenizer carries (the ``tool_use`` variant when tools are given and a
    named list offers one), or BadRequestError when it has none."""
    source = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if isinstance(source, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("tool_use") if tools and named.get("tool_use") else named.get("default")
    if not source:
        raise BadRequestError(f"{origin} has no chat template: use completions with a prompt instead")
    special = {name: getattr(tokenizer, name, None)
               for name in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token")}
    return ChatTemplate(source, special_tokens=special, origin=origin)
