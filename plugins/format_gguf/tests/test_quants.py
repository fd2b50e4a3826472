"""Dequantisation of every GGML type gllm supports, bit for bit against gguf-py."""

import zlib
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as ref

from gllm_core.weights import WeightMatrix
from gllm_format_gguf.quants import GGML_TYPES, GGML_TYPES_BY_NAME, QUANT_TYPES, dequantize, quantize
from gllm_format_gguf.reader import GGUFFile

SUPPORTED = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]

# byte offsets of the f16 scales inside each block, kept finite so the comparison is of numbers
F16_FIELDS = {"q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2], "q8_0": [0], "q2_k": [80, 82],
              "q3_k": [108], "q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208]}


def _bits_equal(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _random_blocks(name, n, rng):
    t = GGML_TYPES_BY_NAME[name]
    blocks = rng.integers(0, 256, size=(n, t.type_size), dtype=np.uint8)
    for off in F16_FIELDS[name]:
        scale = (rng.standard_normal(n) * 0.05).astype(np.float16)
        blocks[:, off:off + 2] = scale.view(np.uint8).reshape(n, 2)
    return blocks


def test_table_matches_gguf_py():
    for qtype, (block, size) in GGML_QUANT_SIZES.items():
        if int(qtype) in GGML_TYPES:
            t = GGML_TYPES[int(qtype)]
            assert (t.name, t.block_size, t.type_size) == (qtype.name.lower(), block, size)
    assert sorted(QUANT_TYPES) == sorted(SUPPORTED)


@pytest.mark.parametrize("name", SUPPORTED)
def test_random_blocks_bit_exact(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    blocks = _random_blocks(name, 257, rng)
    t = GGML_TYPES_BY_NAME[name]
    ours = t.dequantize(blocks)
    theirs = ref.dequantize(blocks, GGMLQuantizationType[name.upper()]).reshape(257, t.block_size)
    _bits_equal(ours, theirs)


@pytest.mark.parametrize("name", ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"])
def test_quantized_by_gguf_py_bit_exact(name):
    # realistic blocks: gguf-py's own quantiser of gaussian weights, rows of 4 blocks
    rng = np.random.default_rng(7)
    weights = rng.standard_normal((33, 128)).astype(np.float32)
    packed = ref.quantize(weights, GGMLQuantizationType[name.upper()])
    _bits_equal(dequantize(packed, name), ref.dequantize(packed, GGMLQuantizationType[name.upper()]))
    close = dequantize(packed, name)
    assert np.abs(close - weights).max() < (0.02 if name == "q8_0" else 0.6)


def test_weight_matrix_rows_dequantise_per_row():
    rng = np.random.default_rng(3)
    blocks = _random_blocks("q4_k", 6 * 2, rng).reshape(6, 2 * 144)
    w = WeightMatrix("w", blocks, "q4_k", (6, 512), QUANT_TYPES["q4_k"])
    full = ref.dequantize(blocks, GGMLQuantizationType.Q4_K)
    _bits_equal(w.dense(), full)
    _bits_equal(w.dense(np.array([4, 1])), full[[4, 1]])


def _real_tensors(path, per_type=2):
    f = GGUFFile(path)
    seen = {}
    for info in f.tensors.values():
        if info.type.dequantize is not None and seen.get(info.type.name, 0) < per_type:
            seen[info.type.name] = seen.get(info.type.name, 0) + 1
            yield info, f.array(info.name)


def test_real_smollm2_tensors_bit_exact(smollm2_path):
    types = set()
    for info, data in _real_tensors(smollm2_path):
        rows = data[:64]  # the embedding table is big; a slice of rows is the same code path
        _bits_equal(dequantize(rows, info.type.name), ref.dequantize(rows, GGMLQuantizationType(info.type.id)))
        types.add(info.type.name)
    assert types == {"q4_1", "q8_0"}


def test_real_qwen_tensors_bit_exact(qwen_path):
    types = set()
    for info, data in _real_tensors(qwen_path):
        rows = data[:64]
        _bits_equal(dequantize(rows, info.type.name), ref.dequantize(rows, GGMLQuantizationType(info.type.id)))
        types.add(info.type.name)
    assert types == {"q5_0", "q8_0", "q4_k", "q6_k"}


# -- quantisers ------------------------------------------------------------------------------------

GGML_FIXTURE = Path(__file__).parent / "fixtures" / "ggml_quants.npz"


@pytest.mark.parametrize("name", ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k"])
def test_quantisers_bit_exact_against_ggml(name):
    # blocks made by llama.cpp's own ggml_quantize_chunk (tools/record_ggml_quants.py)
    recorded = np.load(GGML_FIXTURE)
    assert np.array_equal(quantize(recorded["input"], name), recorded[name])


@pytest.mark.parametrize("name", ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"])
def test_quantisers_bit_exact_against_gguf_py(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = (rng.standard_normal((40, 256)) * rng.uniform(0.001, 3, (40, 1))).astype(np.float32)
    x[0] = 0
    assert np.array_equal(quantize(x, name), ref.quantize(x, GGMLQuantizationType[name.upper()]))


def test_q4_k_round_trip_error():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 512)).astype(np.float32)
    err_k = np.sqrt(np.mean((dequantize(quantize(x, "q4_k"), "q4_k") - x) ** 2))
    err_0 = np.sqrt(np.mean((dequantize(quantize(x, "q4_0"), "q4_0") - x) ** 2))
    assert err_k < err_0 < 0.1


def test_quantise_refuses_partial_blocks():
    with pytest.raises(ValueError, match="whole"):
        quantize(np.zeros((2, 100), np.float32), "q4_k")
