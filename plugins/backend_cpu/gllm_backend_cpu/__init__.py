"""gllm plugin: the numba CPU backend ("cpu"), chosen by ``backend="auto"`` when no GPU backend is.

Importing this module is cheap; numba and the kernels load when the backend is probed or created.
"""

from __future__ import annotations

import functools

from gllm_core.hookspecs import hookimpl
from gllm_core.registry import BackendProbe, BackendSpec

__version__ = "0.1.0"

PRIORITY = 200


@functools.lru_cache(maxsize=1)
def probe() -> BackendProbe:
    try:
        import numba
    except Exception as exc:  # noqa: BLE001 - a broken numba means "not available", nothing worse
        return BackendProbe(False, PRIORITY, f"numba does not import: {type(exc).__name__}: {exc}")
    from .threads import available_cores

    return BackendProbe(True, PRIORITY, f"numba {numba.__version__} kernels, {available_cores()} cores")


def create(threads: int | None = None, packed_cache_mb: int | None = None, **options):
    """``threads`` (default ``GLLM_NUM_THREADS``, else every core) caps numba and BLAS alike;
    ``packed_cache_mb`` bounds the f32 weights kept as GEMM panels (default 1024)."""
    from .backend import PACKED_CACHE_MB, NumbaBackend

    return NumbaBackend(threads=threads, packed_cache_mb=PACKED_CACHE_MB if packed_cache_mb is None else packed_cache_mb)


@hookimpl
def register_backends(register):
    register(BackendSpec(
        name="cpu",
        probe=probe,
        create=create,
        description="numba CPU kernels: BLAS GEMMs with fused epilogues, streaming attention, f16/bf16 read in place",
    ))
