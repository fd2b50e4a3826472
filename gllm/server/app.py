"""The ASGI application: ``create_app(["all-minilm:l6", ...])`` → a Starlette app to run on uvicorn.

Models are loaded when the app is made (a name that does not load fails before a port is bound);
each gets its own batchers or generation slots, started and stopped with the app's lifespan.
Routes live beside this module, one file per kind of request; this one holds what they share.
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import attrs
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gllm_core.errors import BadRequestError, GllmError
from gllm_core.loader import LoadedModel

from .batching import MicroBatcher
from .errors import ApiError, from_gllm, invalid, model_not_found
from .limits import Limits

log = logging.getLogger("gllm.server")


@attrs.define(eq=False)
class ServedModel:
    """One model the server answers for, under the name the operator gave it."""

    name: str
    loaded: LoadedModel
    created: int
    embedder: MicroBatcher | None = None
    reranker: MicroBatcher | None = None
    generator: Any = None  # a text-generation model's admission slots (completions.Slots)

    @property
    def tasks(self) -> frozenset[str]:
        return self.loaded.tasks


@attrs.define(eq=False)
class ServerState:
    client: Any
    models: dict[str, ServedModel]
    limits: Limits
    api_key: str | None
    executor: ThreadPoolExecutor

    def model(self, body: dict, task: str | None = None) -> ServedModel:
        """The served model a request names, 404 when there is none, 400 when it cannot do ``task``."""
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise invalid("'model' must be the name of a served model (see GET /v1/models)", param="model",
                          code="missing_required_parameter" if name is None else "invalid_type")
        served = self.models.get(name)
        if served is None:
            raise model_not_found(name, list(self.models))
        if task is not None and task not in served.tasks:
            does = ", ".join(sorted(served.tasks)) or "nothing"
            raise invalid(f"model {name!r} ({served.loaded.architecture}) cannot {task}: it serves {does}",
                          param="model", code="model_not_supported")
        return served


def state_of(request: Request) -> ServerState:
    return request.app.state.gllm


# -- middleware and error handlers ------------------------------------------------------------------

class ApiKeyMiddleware:
    """``Authorization: Bearer <key>`` on every route but ``/health``, compared in constant time."""

    OPEN_PATHS = frozenset({"/health"})

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.api_key is not None and scope["path"] not in self.OPEN_PATHS:
            auth = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                message = ("Incorrect API key provided" if auth else
                           "Missing API key: send it as 'Authorization: Bearer <key>'")
                response = ApiError(401, message, code="invalid_api_key").response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _api_error(request: Request, exc: ApiError):
    return exc.response()


async def _gllm_error(request: Request, exc: GllmError):
    return from_gllm(exc).response()


async def _http_error(request: Request, exc: HTTPException):
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; the API is under /v1"
        return ApiError(404, message, code="not_found").response()
    if exc.status_code == 405:
        return ApiError(405, f"{request.method} is not allowed on {request.url.path}",
                        code="method_not_allowed").response()
    return ApiError(exc.status_code, str(exc.detail)).response()


async def _server_error(request: Request, exc: Exception):
    log.exception("internal error on %s %s", request.method, request.url.path)
    return ApiError(500, f"internal server error: {type(exc).__name__}", type="server_error",
                    code="internal_error").response()


# -- routes shared by every kind of model ------------------------------------------------------------

async def health(request: Request):
    state = state_of(request)
    return JSONResponse({"status": "ok", "models": list(state.models)})


def _model_card(served: ServedModel) -> dict:
    return {"id": served.name, "object": "model", "created": served.created, "owned_by": "gllm"}


async def list_models(request: Request):
    state = state_of(request)
    return JSONResponse({"object": "list", "data": [_model_card(m) for m in state.models.values()]})


async def retrieve_model(request: Request):
    state = state_of(request)
    name = request.path_params["model"]
    if name not in state.models:
        raise model_not_found(name, list(state.models))
    return JSONResponse(_model_card(state.models[name]))


# -- the app --------------------------------------------------------------------------------------

def create_app(models: Sequence[str], *, client=None, backend: str = "auto", limits: Limits | None = None,
               api_key: str | None = None, **client_options: Any) -> Starlette:
    """An app serving ``models`` (aliases, repository ids, store names or paths) through ``client``.

    ``client`` is a ``gllm.Client`` (one is made on ``backend`` when not given); ``api_key``, when
    set, is required on every route but ``/health``."""
    from gllm import Client

    from . import completions, embeddings, rerank

    names = list(models)
    if not names:
        raise BadRequestError("serve at least one model (gllm serve --model NAME)")
    if len(set(names)) != len(names):
        raise BadRequestError(f"a model is named twice: {names}")
    limits = limits or Limits()
    client = client or Client(backend=backend, **client_options)
    created = int(time.time())
    served = {name: ServedModel(name, client.load(name), created) for name in names}
    executor = ThreadPoolExecutor(max_workers=max(2, len(served)), thread_name_prefix="gllm-serve")
    state = ServerState(client=client, models=served, limits=limits, api_key=api_key, executor=executor)
    for model in served.values():
        embeddings.attach(model, state)
        rerank.attach(model, state)
        completions.attach(model, state)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for model in served.values():
            for part in (model.embedder, model.reranker, model.generator):
                if part is not None:
                    part.start()
        # the loaded libraries and models are some 10^5 long-lived objects that every full
        # collection walks (~50 ms, in the middle of a decode step): kept out of the collector
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            for model in served.values():
                for part in (model.embedder, model.reranker, model.generator):
                    if part is not None:
                        await part.stop()
            executor.shutdown(wait=False, cancel_futures=True)
            gc.unfreeze()  # an app served inside a longer-lived process gives its objects back

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        *embeddings.routes(),
        *rerank.routes(),
        *completions.routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ApiKeyMiddleware, api_key=api_key)],
        exception_handlers={ApiError: _api_error, GllmError: _gllm_error, HTTPException: _http_error,
                            Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.gllm = state
    return app
