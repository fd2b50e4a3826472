"""Linear layers and embedding lookups computed from GGML blocks on the device, against
``x @ dequant(W).T`` with gguf-py's numpy dequantiser (the reference the GGUF plugin is bit-exact to)."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants as gguf_quants

from gllm_backend_opencl.backend import QUANT_CODES, OpenCLBackend
from gllm_core.weights import WeightMatrix
from gllm_format_gguf.quants import QUANT_TYPES

# byte offsets of each type's f16 fields (d, and m / dmin where there is one), from ggml-common.h
F16_FIELDS = {"q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2], "q8_0": [0], "q2_k": [80, 82],
              "q3_k": [108], "q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208]}
TYPES = sorted(QUANT_CODES)
GGUF_QUANTISERS = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0"}  # the types gguf-py can quantise
# x rows: 1, 2, 4, 8 reach the four matrix-vector kernels (and rows between them the padded ones);
# 9 and 70 the tiled kernel, with one and two tiles of rows
ROWS = [1, 2, 3, 5, 8, 9, 70]


@pytest.fixture(scope="module")
def backend():
    return OpenCLBackend()


def _gguf_type(name: str) -> GGMLQuantizationType:
    return GGMLQuantizationType[name.upper()]


def random_blocks(rng, name: str, rows: int, n_blocks: int, quantise: bool, scale: float = 0.02) -> np.ndarray:
    """uint8 [rows, n_blocks * type_size]: gguf-py's quantiser on normal weights (``quantise``, for
    the types it has one), else random bytes (every bit pattern of quants, scales and masks) with
    finite f16 scales."""
    q = QUANT_TYPES[name]
    if quantise and name in GGUF_QUANTISERS:
        w = (rng.standard_normal((rows, n_blocks * q.block_size)) * scale).astype(np.float32)
        return np.ascontiguousarray(gguf_quants.quantize(w, _gguf_type(name)), dtype=np.uint8)
    data = rng.integers(0, 256, (rows, n_blocks, q.type_size), dtype=np.uint8)
    for off in F16_FIELDS[name]:
        v = rng.uniform(0.5, 2, (rows, n_blocks)) * rng.choice([-1, 1], (rows, n_blocks)) * scale / 8
        data[:, :, off:off + 2] = v.astype(np.float16).view(np.uint8).reshape(rows, n_blocks, 2)
    return data.reshape(rows, n_blocks * q.type_size)


def _matrix(rng, name, rows, n_blocks, quantise=False):
    q = QUANT_TYPES[name]
    data = random_blocks(rng, name, rows, n_blocks, quantise)
    w = WeightMatrix(f"blk.0.{name}.weight", data, name, (rows, n_blocks * q.block_size), q)
    dense = gguf_quants.dequantize(data, _gguf_type(name)).astype(np.float32)
    assert dense.shape == w.shape and np.isfinite(dense).all()
    return w, dense


def _close(got, x, dense, bias=None, activation=None):
    """Within 1e-4 of the float64 product, relative to the sum of the terms' magnitudes."""
    pre = x.astype(np.float64) @ dense.T.astype(np.float64)
    if bias is not None:
        pre += bias
    want = pre / (1 + np.exp(-pre)) if activation == "silu" else pre
    bound = 1e-4 * (np.abs(x).astype(np.float64) @ np.abs(dense).T + (0 if bias is None else np.abs(bias)) + 1e-30)
    err = np.abs(got - want)
    assert np.all(err <= bound), f"max error {err.max():.3g}, worst relative {(err / bound).max() * 1e-4:.3g}"


@pytest.mark.parametrize("name", TYPES)
def test_quantized_linear_matches_dequantized_product(backend, name):
    rng = np.random.default_rng(QUANT_CODES[name])
    n_blocks = 3 if QUANT_TYPES[name].block_size == 256 else 7
    for n_out, quantise in ((37, True), (130, False)):  # odd row counts; 130 spans three tiles of weight rows
        w, dense = _matrix(rng, name, n_out, n_blocks, quantise)
        prepared = backend.prepare_matrix(w)
        for t in ROWS:
            x = rng.standard_normal((t, w.cols)).astype(np.float32)
            got = backend.download(backend.linear(backend.upload(x), prepared))
            assert got.shape == (t, n_out)
            _close(got, x, dense)


@pytest.mark.parametrize("name", ["q4_0", "q8_0", "q4_k", "q6_k"])
def test_bias_and_activation_fused(backend, name):
    from gllm_core.weights import WeightVector

    rng = np.random.default_rng(7)
    w, dense = _matrix(rng, name, 29, 2 if QUANT_TYPES[name].block_size == 256 else 9)
    bias = rng.standard_normal(29).astype(np.float32)
    pw, pb = backend.prepare_matrix(w), backend.prepare_vector(WeightVector("b", bias, "f32"))
    for t in (1, 6, 33):
        x = rng.standard_normal((t, w.cols)).astype(np.float32)
        _close(backend.download(backend.linear(backend.upload(x), pw, pb, "silu")), x, dense, bias, "silu")


@pytest.mark.parametrize("name", TYPES)
def test_blocks_stay_as_stored_and_kernels_resolve_at_prepare(backend, name):
    rng = np.random.default_rng(1)
    w, _ = _matrix(rng, name, 5, 2)
    prepared = backend.prepare_matrix(w)
    assert prepared.dtype == name and prepared.buf.size == w.data.nbytes  # bytes as uploaded, not widened
    assert prepared.quant is not None and prepared.quant is backend.prepare_matrix(w).quant  # one kernel set per type


@pytest.mark.parametrize("name", TYPES)
def test_embedding_rows_are_the_dequantized_rows(backend, name):
    rng = np.random.default_rng(2)
    w, dense = _matrix(rng, name, 41, 2)
    ids = np.array([0, 40, 7, 7, 13], np.int32)
    got = backend.download(backend.embedding(backend.prepare_matrix(w), backend.upload(ids)))
    np.testing.assert_array_equal(got, dense[ids])


def test_input_of_the_wrong_width_is_refused(backend):
    from gllm_core.errors import BadRequestError

    w, _ = _matrix(np.random.default_rng(3), "q4_0", 4, 2)
    with pytest.raises(BadRequestError, match="blk.0.q4_0.weight"):
        backend.linear(backend.upload(np.zeros((2, 63), np.float32)), backend.prepare_matrix(w))


@pytest.mark.parametrize("rpt", [2, 8])
def test_q4k_one_row_kernel_other_row_counts(rpt):
    # the Q4_K kernel for one row of x with 2 or 8 weight rows per warp (4 is the default, above)
    b = OpenCLBackend()
    b.q4k_rows_per_warp = rpt
    rng = np.random.default_rng(rpt)
    for n_out in (37, 130):
        w, dense = _matrix(rng, "q4_k", n_out, 3)
        prepared = b.prepare_matrix(w)
        assert prepared.quant.gemv[1][1] == rpt
        x = rng.standard_normal((1, w.cols)).astype(np.float32)
        _close(b.download(b.linear(b.upload(x), prepared)), x, dense)
