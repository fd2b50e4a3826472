"""The matrix-unit kernels (inline PTX: kernels/linear_mma_cp.cl, kernels/attention_mma.cl) run
only on NVIDIA GPUs, where the backend checks each against the host before trusting it and
bench/gpu_sweep.py checks them on model shapes. Here (PoCL) they are compiled with their PTX left
out, so a syntax error shows up in CI; and off NVIDIA the backend never picks them."""

import numpy as np
import pytest

from gllm_backend_opencl.backend import MMA_CP_VARIANTS, OpenCLBackend, mma_cp_local_bytes


@pytest.fixture(scope="module")
def b():
    return OpenCLBackend(precision="fast")


@pytest.mark.parametrize("variant", sorted(MMA_CP_VARIANTS))
def test_cp_gemm_compiles(b, variant):
    for split in (0, 1):
        if mma_cp_local_bytes(variant, split) <= b.rt.local_mem:
            assert callable(b._mma_cp_launcher(1, split, variant))


def test_cp_gemm_local_memory():
    assert mma_cp_local_bytes("cp128x128s3", 0) == 48 * 1024
    assert mma_cp_local_bytes("cp64x256s2", 1) == 48 * 1024


@pytest.mark.parametrize("d", [64, 128])
def test_attention_mma_compiles(b, d):
    b.rt.program(["attention_mma.cl"], {"D": d, "NO_PTX": 1})


def test_not_used_off_nvidia(b):
    if b.rt.nv_compute is not None:
        pytest.skip("an NVIDIA device: the kernels run there and are checked at first use")
    assert b._attention_mma_kernel(16) is None
    rng = np.random.default_rng(0)
    q = b.upload(rng.standard_normal((20, 2, 16)).astype(np.float32))
    cu = np.array([0, 20], np.int32)
    out = b.download(b.attention(q, q, q, cu, cu, 0.25, True))  # the float32 kernel
    assert np.isfinite(out).all()
