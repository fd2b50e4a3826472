"""The matrix-vector kernel in the work-group shapes the backend picks on GPUs (one 128-wide group
per weight row for one row of x), run here on whatever device there is, against numpy."""

import numpy as np
import pytest

from gllm_core.backends.numpy_backend import NumpyBackend
from gllm_core.testing import random_matrix, random_vector
from gllm_backend_opencl.backend import OpenCLBackend


@pytest.mark.parametrize("shape", [(128, 1), (64, 2), (32, 4)])
@pytest.mark.parametrize("n_in, n_out, dtype", [(1096, 19, "f16"), (2056, 70, "bf16"), (520, 33, "f32"), (12, 5, "f16")])
def test_one_row_gemv_shapes(shape, n_in, n_out, dtype):
    out = []
    for b in (NumpyBackend(), OpenCLBackend()):
        if isinstance(b, OpenCLBackend):
            b.gemv_shape1 = shape
        rng = np.random.default_rng(n_in)
        w = b.prepare_matrix(random_matrix(rng, n_out, n_in, dtype, scale=1 / np.sqrt(n_in)))
        bias = b.prepare_vector(random_vector(rng, n_out))
        x = b.upload(rng.standard_normal((1, n_in)).astype(np.float32))
        out.append(b.download(b.linear(x, w, bias, "silu")))
    np.testing.assert_allclose(out[1], out[0], rtol=1e-4, atol=1e-4)
