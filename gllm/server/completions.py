"""``POST /v1/chat/completions`` and ``POST /v1/completions``: text generation, streamed or not."""

from __future__ import annotations

from starlette.routing import Route


def attach(served, state) -> None:
    """Give a text-generation model its engine loop (once the engine lands)."""


def routes() -> list[Route]:
    return []
