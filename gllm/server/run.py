"""Running the app on uvicorn: in the foreground (``gllm serve``) or in a background thread (tests, notebooks)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator

import uvicorn

from gllm_core.errors import GllmError


def _config(app, *, log_level: str, graceful_timeout: float) -> uvicorn.Config:
    # the app's own lifespan starts and stops the batchers and engine loops
    return uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=graceful_timeout,
                          access_log=log_level in ("debug", "trace"))


def serve(app, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          graceful_timeout: float = 30.0) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, give in-flight requests ``graceful_timeout``
    seconds to finish, cancel what is left (freeing its sequences) and stop the engine loops."""
    config = _config(app, log_level=log_level, graceful_timeout=graceful_timeout)
    config.host, config.port = host, port
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:  # uvicorn re-raises SIGINT once it has shut down gracefully
        pass


@contextlib.contextmanager
def running(app, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
            graceful_timeout: float = 5.0, start_timeout: float = 60.0) -> Iterator[str]:
    """Serve ``app`` from a background thread for the life of the ``with`` block; yields the base URL.

    ``port=0`` takes a free port. Leaving the block shuts down as SIGINT would."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GllmError(f"cannot listen on {host}:{port}: {exc}") from None
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, log_level=log_level, graceful_timeout=graceful_timeout))
    failure: list[BaseException] = []

    def run():
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name="gllm-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if failure or not thread.is_alive():
            sock.close()
            raise GllmError(f"the server did not start: {failure[0] if failure else 'its thread ended'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise GllmError(f"the server did not start within {start_timeout} s")
        time.sleep(0.01)
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    try:
        yield f"http://{url_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(graceful_timeout + 30.0)
        sock.close()
