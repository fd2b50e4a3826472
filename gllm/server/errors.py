"""Errors as the OpenAI API sends them: ``{"error": {"message", "type", "param", "code"}}``.

Every failure of a request, ours or the client's, leaves the server as one of these with its
HTTP status; a traceback never does.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from gllm_core.errors import (BadRequestError, GllmError, InvalidModelNameError, ModelNotFoundError,
                              UnsupportedArchitectureError, UnsupportedFormatError)


class ApiError(Exception):
    """An error answer: the status and the four fields of the OpenAI error object."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A request that cannot be served as written: 400."""
    return ApiError(400, message, param=param, code=code)


def over_limit(message: str, param: str | None, limit: str) -> ApiError:
    """Input over one of the server's limits: 400, ``code`` names the limit."""
    return ApiError(400, message, param=param, code=limit)


def model_not_found(name: str, served: list[str]) -> ApiError:
    listed = ", ".join(served) or "none"
    return ApiError(404, f"The model {name!r} does not exist on this server (served: {listed})",
                    param="model", code="model_not_found")


def overloaded(message: str) -> ApiError:
    return ApiError(429, message, type="rate_limit_error", code="overloaded")


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, type="server_error", code="unavailable")


def from_gllm(exc: GllmError) -> ApiError:
    """A GllmError raised while serving a request, as the error its kind deserves."""
    if isinstance(exc, (BadRequestError, InvalidModelNameError)):
        return invalid(str(exc))
    if isinstance(exc, ModelNotFoundError):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, (UnsupportedArchitectureError, UnsupportedFormatError)):
        return invalid(str(exc), param="model", code="model_not_supported")
    return ApiError(500, f"{type(exc).__name__}: {exc}", type="server_error", code="internal_error")
