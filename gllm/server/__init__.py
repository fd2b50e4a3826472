"""``gllm serve``: an OpenAI-compatible HTTP server over the SDK (``pip install 'gllm[server]'``).

    from gllm.server import Limits, create_app, running
    app = create_app(["all-minilm:l6"], backend="cpu", limits=Limits(max_tokens=512))
    with running(app) as url:          # a background thread on a free loopback port
        ...                            # openai.OpenAI(base_url=url + "/v1", api_key="-")
    # or in the foreground: gllm.server.serve(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

from .limits import Limits

__all__ = ["Limits", "create_app", "running", "serve"]


def __getattr__(name: str):
    # starlette and uvicorn come with the extra; Limits (used by the CLI's options) does not need them
    if name in ("create_app", "running", "serve"):
        try:
            from . import app, run
        except ImportError as exc:
            from gllm_core.errors import GllmError

            raise GllmError(f"the server needs its extra: pip install 'gllm[server]' ({exc})") from None
        return {"create_app": app.create_app, "running": run.running, "serve": run.serve}[name]
    raise AttributeError(f"module 'gllm.server' has no attribute {name!r}")
