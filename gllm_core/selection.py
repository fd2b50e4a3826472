"""Backend selection: ``auto`` takes the available backend of highest priority; a name probes
only that backend (a probe may import a compiler or enumerate devices)."""

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


def _status(spec) -> BackendStatus:
    p = _probe(spec)
    return BackendStatus(spec.name, p.available, p.priority, p.detail, spec.description)


def backend_statuses(registry: Registry) -> list[BackendStatus]:
    """Every installed backend, probed: available first, then by priority."""
    rows = [_status(spec) for spec in registry.backends.values()]
    return sorted(rows, key=lambda s: (-s.available, -s.priority, s.name))


def choose_backend(registry: Registry, name: str | None = "auto") -> str:
    """The backend name that ``name`` (or ``GLLM_BACKEND``, for "auto"/None) stands for."""
    if name in (None, "auto"):
        name = os.environ.get("GLLM_BACKEND") or "auto"
    if name == "auto":
        statuses = backend_statuses(registry)
        for status in statuses:
            if status.available:
                return status.name
        raise BackendUnavailableError("no backend is available: " +
                                      "; ".join(f"{s.name}: {s.detail}" for s in statuses))
    spec = registry.backends.get(name)
    if spec is not None:
        status = _status(spec)
        if not status.available:
            raise BackendUnavailableError(f"backend {name!r} is installed but not available here: {status.detail}")
        return name
    known = ", ".join(sorted(registry.backends)) or "none"
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
