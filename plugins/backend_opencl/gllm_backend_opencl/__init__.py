"""gllm plugin: OpenCL kernels (pyopencl) for GPUs, and for CPUs through PoCL."""

from __future__ import annotations

import functools
import os

from gllm_core.hookspecs import hookimpl
from gllm_core.registry import BackendProbe, BackendSpec

__version__ = "0.1.0"


@functools.lru_cache(maxsize=8)
def _probe(wanted: str) -> BackendProbe:
    try:
        import pyopencl  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken install means "not available"
        return BackendProbe(False, 0, f"pyopencl cannot be imported: {type(exc).__name__}: {exc}")
    from gllm_core.errors import BackendUnavailableError

    from .device import PRIORITY_CPU, PRIORITY_GPU, choose_device

    try:
        info, _ = choose_device(wanted or None)
    except BackendUnavailableError as exc:
        return BackendProbe(False, 0, str(exc))
    return BackendProbe(True, PRIORITY_GPU if info.kind == "gpu" else PRIORITY_CPU, info.describe())


def probe() -> BackendProbe:
    """Available when an OpenCL device exists: priority 300 on a GPU, 150 on a CPU device (PoCL)."""
    from .device import ENV_DEVICE

    return _probe(os.environ.get(ENV_DEVICE, ""))


def create(**options):
    from .backend import OpenCLBackend

    return OpenCLBackend(**options)


@hookimpl
def register_backends(register):
    register(BackendSpec(
        name="opencl",
        probe=probe,
        create=create,
        description="OpenCL kernels (pyopencl): GPUs first; CPUs through PoCL. GLLM_OPENCL_DEVICE picks a device.",
    ))
