"""Reading a JSON request body and its fields, with a 400 that names the field at fault."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from .errors import ApiError, invalid

_MISSING = object()


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, refused past ``max_bytes`` without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise invalid("the request body is empty: send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise invalid(f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    return body


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"the request body is larger than the server's limit of {max_bytes} bytes "
                         f"(max_body_bytes, set with --max-body-bytes)", code="max_body_bytes")


_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
          dict: "an object"}


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def field(body: dict, name: str, kind: type | tuple[type, ...], *, default: Any = _MISSING,
          minimum: float | None = None, maximum: float | None = None, choices: tuple | None = None,
          nullable: bool = True) -> Any:
    """``body[name]`` checked against ``kind`` (and a range or choices); ``default`` when absent or null."""
    value = body.get(name, _MISSING)
    if value is None and nullable:
        value = _MISSING
    if value is _MISSING:
        if default is _MISSING:
            raise invalid(f"missing required parameter {name!r}", param=name, code="missing_required_parameter")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not any(_is(value, k) for k in kinds):
        wanted = " or ".join(_NAMES.get(k, k.__name__) for k in kinds)
        raise invalid(f"{name!r} must be {wanted}, got {json.dumps(value)[:80]}", param=name, code="invalid_type")
    if choices is not None and value not in choices:
        raise invalid(f"{name!r} must be one of {', '.join(map(repr, choices))}, got {value!r}", param=name,
                      code="invalid_value")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        span = f"from {minimum} to {maximum}" if minimum is not None and maximum is not None else (
            f"at least {minimum}" if minimum is not None else f"at most {maximum}")
        raise invalid(f"{name!r} must be {span}, got {value!r}", param=name, code="invalid_value")
    return value
