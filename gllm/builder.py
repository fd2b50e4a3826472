"""The builder form of a request: set fields one call at a time, send with ``.generate()``."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from gllm_core.errors import BadRequestError


class RequestBuilder:
    """``client.embeddings.builder().model("m").input(["a"]).dimensions(64).generate()``."""

    def __init__(self, send: Callable[..., Any], fields: Iterable[str], **initial: Any):
        self._send = send
        self._fields = frozenset(fields)
        self._values: dict[str, Any] = {}
        for key, value in initial.items():
            self._set(key, value)

    def _set(self, key: str, value: Any) -> "RequestBuilder":
        if key not in self._fields:
            raise BadRequestError(f"unknown request field {key!r}; fields: {', '.join(sorted(self._fields))}")
        self._values[key] = value
        return self

    def __getattr__(self, key: str):
        if key.startswith("_"):
            raise AttributeError(key)
        if key not in self._fields:
            raise AttributeError(f"request has no field {key!r}; fields: {', '.join(sorted(self._fields))}")
        return lambda value: self._set(key, value)

    def params(self) -> dict[str, Any]:
        return dict(self._values)

    def generate(self):
        return self._send(**self._values)
