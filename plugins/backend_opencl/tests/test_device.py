"""Device choice, probing, and clear errors for bad input."""

import numpy as np
import pytest

import gllm_backend_opencl
from gllm_core.errors import BackendUnavailableError, BadRequestError, GllmError
from gllm_core.plugins import get_registry
from gllm_core.selection import backend_statuses, create_backend
from gllm_core.weights import dense_weight
from gllm_backend_opencl.backend import OpenCLBackend
from gllm_backend_opencl.device import ENV_DEVICE, list_devices


def test_registered_and_available_with_the_documented_priority():
    statuses = {s.name: s for s in backend_statuses(get_registry())}
    s = statuses["opencl"]
    assert s.available, s.detail
    info, _ = list_devices()[0]
    assert s.priority == (300 if info.kind == "gpu" else 150)
    assert info.name in s.detail and "GiB" in s.detail and "fp16" in s.detail
    assert type(create_backend(get_registry(), "opencl")).__name__ == "OpenCLBackend"


def test_gpus_come_first():
    kinds = [info.kind for info, _ in list_devices()]
    assert kinds == sorted(kinds, key=["gpu", "accelerator", "cpu", "other"].index)


def test_device_variable_picks_by_index_or_name(monkeypatch):
    info, _ = list_devices()[0]
    monkeypatch.setenv(ENV_DEVICE, "0")
    assert OpenCLBackend().info == info
    monkeypatch.setenv(ENV_DEVICE, info.name.split()[0].upper())
    assert OpenCLBackend().info.name == info.name


def test_unknown_device_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(ENV_DEVICE, "no-such-device-xyz")
    with pytest.raises(BackendUnavailableError, match="GLLM_OPENCL_DEVICE='no-such-device-xyz'"):
        OpenCLBackend()
    probe = gllm_backend_opencl.probe()
    assert not probe.available and "no-such-device-xyz" in probe.detail
    monkeypatch.setenv(ENV_DEVICE, "99")
    with pytest.raises(BackendUnavailableError, match="matches no OpenCL device"):
        OpenCLBackend()


def test_bad_inputs_raise_gllm_errors():
    b = OpenCLBackend()
    w = b.prepare_matrix(dense_weight("w", np.ones((3, 4), np.float32)))
    x = b.upload(np.ones((2, 5), np.float32))
    with pytest.raises(BadRequestError, match="w of shape"):
        b.linear(x, w)
    table = b.prepare_matrix(dense_weight("table", np.ones((3, 4), np.float16)))
    with pytest.raises(BadRequestError, match="out of range for table"):
        b.embedding(table, b.upload(np.array([0, 3], np.int32)))
    with pytest.raises(BadRequestError, match="out of range"):
        b.take_rows(x, np.array([2]))
    with pytest.raises(GllmError, match="cannot broadcast"):
        b.add(x, b.upload(np.ones(3, np.float32)))
    with pytest.raises(BadRequestError, match="rope: unknown style"):
        b.rope(b.upload(np.ones((1, 1, 4), np.float32)), np.zeros(1, np.int32), np.ones(2, np.float32), "other")
    q = b.upload(np.ones((2, 3, 4), np.float32))
    with pytest.raises(BadRequestError, match="do not describe"):
        b.attention(q, q, q, np.array([0, 1]), np.array([0, 2]), 1.0)


def test_matrix_unit_kernels_build():
    # NVIDIA sm_80+: the matrix-unit GEMM is built and passes its check against the host. Elsewhere
    # its source is still compiled (PTX stubbed out), so a syntax error cannot hide until a GPU run.
    b = OpenCLBackend()
    from gllm_backend_opencl.backend import MMA_FALLBACK, MMA_VARIANTS

    if b.rt.nv_compute is not None and b.rt.nv_compute >= (8, 0):
        assert b._mma(1) is not None and b.mma_status == "ok", b.mma_status
    else:
        wm, wn, mt, nl, kb = MMA_VARIANTS[MMA_FALLBACK["exact"]]  # (the cp.async kernels: test_mma_build.py)
        prg = b.rt.program(["linear_mma.cl"], {"WDTYPE": 1, "SPLIT_X": 1, "NO_PTX": 1, "WM": wm, "WN": wn,
                                               "MT": mt, "NL": nl, "KB": kb})
        assert {k.function_name for k in prg.all_kernels()} == {"gemm_mma", "gemm_mma16", "to16"}
        assert b._mma(1) is None and "no NVIDIA" in b.mma_status
