"""Finding an OpenCL device: GPUs first, ``GLLM_OPENCL_DEVICE`` picks one, and what ``probe()`` says."""

from __future__ import annotations

import os

import attrs

from gllm_core.errors import BackendUnavailableError

ENV_DEVICE = "GLLM_OPENCL_DEVICE"
PRIORITY_GPU = 300  # above numba (200)
PRIORITY_CPU = 150  # an OpenCL CPU device (PoCL): usable on request, below numba


@attrs.frozen
class DeviceInfo:
    index: int
    platform: str
    name: str
    kind: str  # "gpu" | "accelerator" | "cpu" | "other"
    memory: int  # bytes of global memory
    fp16: bool  # cl_khr_fp16: arithmetic on half (we only ever load half, so it is informational)
    version: str

    def describe(self) -> str:
        fp16 = "yes" if self.fp16 else "no (f16 weights widened to f32 as they are read)"
        return (f"[{self.index}] {self.name} ({self.kind}, {self.memory / 2**30:.1f} GiB, fp16 {fp16}; "
                f"{self.platform}, {self.version})")


def _kind(device) -> str:
    import pyopencl as cl

    t = device.type
    if t & cl.device_type.GPU:
        return "gpu"
    if t & cl.device_type.ACCELERATOR:
        return "accelerator"
    if t & cl.device_type.CPU:
        return "cpu"
    return "other"


_RANK = {"gpu": 0, "accelerator": 1, "cpu": 2, "other": 3}


def list_devices() -> list[tuple[DeviceInfo, object]]:
    """Every OpenCL device of every platform, GPUs first: ``(info, pyopencl.Device)`` pairs."""
    import pyopencl as cl

    try:
        platforms = cl.get_platforms()
    except cl.Error:  # no ICD installed: clGetPlatformIDs reports PLATFORM_NOT_FOUND_KHR
        return []
    found = []
    for platform in platforms:
        try:
            devices = platform.get_devices()
        except cl.Error:
            continue
        for device in devices:
            found.append((platform, device))
    found.sort(key=lambda pd: _RANK[_kind(pd[1])])
    out = []
    for i, (platform, device) in enumerate(found):
        info = DeviceInfo(index=i, platform=platform.name.strip(), name=device.name.strip(), kind=_kind(device),
                          memory=int(device.global_mem_size), fp16="cl_khr_fp16" in device.extensions,
                          version=device.version.strip())
        out.append((info, device))
    return out


def choose_device(wanted: str | None = None) -> tuple[DeviceInfo, object]:
    """The device ``wanted`` names (an index into ``list_devices()`` or a piece of its platform or
    device name), else ``GLLM_OPENCL_DEVICE``, else the first (a GPU when there is one)."""
    devices = list_devices()
    if not devices:
        raise BackendUnavailableError(
            "no OpenCL device found: install a driver (an ICD), or PoCL for CPUs: pip install pocl-binary-distribution")
    wanted = wanted if wanted not in (None, "") else os.environ.get(ENV_DEVICE, "")
    if wanted in (None, ""):
        return devices[0]
    wanted = str(wanted).strip()
    if wanted.isdigit():
        i = int(wanted)
        if i < len(devices):
            return devices[i]
    else:
        for info, device in devices:
            if wanted.lower() in f"{info.platform} {info.name}".lower():
                return info, device
    listing = "; ".join(info.describe() for info, _ in devices)
    raise BackendUnavailableError(f"{ENV_DEVICE}={wanted!r} matches no OpenCL device (found: {listing})")
