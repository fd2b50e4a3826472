"""Backend selection: ``auto`` takes the available backend of highest priority."""

from __future__ import annotations

import os

import attrs

from .errors import BackendUnavailableError
from .registry import BackendProbe, Registry


@attrs.frozen
class BackendStatus:
    name: str
    available: bool
    priority: int
    detail: str
    description: str


def _probe(spec) -> BackendProbe:
    try:
        probe = spec.probe()
        if not isinstance(probe, BackendProbe):
            return BackendProbe(False, 0, f"probe() returned {type(probe).__name__}, not BackendProbe")
        return probe
    except Exception as exc:  # a probe that breaks means "not available", never a crash
        return BackendProbe(False, 0, f"probe failed: {type(exc).__name__}: {exc}")


def backend_statuses(registry: Registry) -> list[BackendStatus]:
    rows = []
    for spec in registry.backends.values():
        p = _probe(spec)
        rows.append(BackendStatus(spec.name, p.available, p.priority, p.detail, spec.description))
    return sorted(rows, key=lambda s: (-s.available, -s.priority, s.name))


def choose_backend(registry: Registry, name: str | None = "auto") -> str:
    """The backend name that ``name`` (or ``GLLM_BACKEND``, for "auto"/None) stands for."""
    if name in (None, "auto"):
        name = os.environ.get("GLLM_BACKEND") or "auto"
    statuses = backend_statuses(registry)
    if name == "auto":
        for status in statuses:
            if status.available:
                return status.name
        raise BackendUnavailableError("no backend is available: " +
                                      "; ".join(f"{s.name}: {s.detail}" for s in statuses))
    for status in statuses:
        if status.name == name:
            if not status.available:
                raise BackendUnavailableError(f"backend {name!r} is installed but not available here: {status.detail}")
            return name
    known = ", ".join(s.name for s in statuses) or "none"
    raise BackendUnavailableError(f"no backend named {name!r} is installed (installed: {known}); "
                                  f"install its plugin, e.g. pip install gllm-backend-{name}")


def create_backend(registry: Registry, name: str | None = "auto", **options):
    chosen = choose_backend(registry, name)
    try:
        return registry.backends[chosen].create(**options)
    except BackendUnavailableError:
        raise
    except Exception as exc:
        raise BackendUnavailableError(f"backend {chosen!r} failed to start: {type(exc).__name__}: {exc}") from exc
