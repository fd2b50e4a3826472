"""The built-in safetensors reader: round trips, sharded folders, and every malformed header."""

from __future__ import annotations

import json
import mmap
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from gllm_core.errors import CorruptFileError, ModelNotFoundError, UnsupportedFormatError
from gllm_core.formats.safetensors_format import (
    SafetensorsSource,
    open_safetensors,
    register_weight_formats,
    sniff,
)
from gllm_core.registry import WeightFormat
from gllm_core.weights import WeightMatrix, WeightVector


def raw_file(header, data: bytes = b"", header_len: int | None = None) -> bytes:
    """A safetensors file built by hand: ``header`` is a JSON-able object or raw bytes."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if header_len is None else header_len) + body + data


def write(path, content: bytes):
    path.write_bytes(content)
    return path


def mapped_base(array: np.ndarray):
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


# -- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("np_dtype,gllm_dtype", [(np.float32, "f32"), (np.float16, "f16")])
def test_round_trip_float(tmp_path, np_dtype, gllm_dtype):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 7)).astype(np_dtype)
    b = rng.standard_normal(7).astype(np_dtype)
    path = tmp_path / "m.safetensors"
    save_file({"w": w, "b": b}, str(path))
    with open_safetensors(path) as src:
        assert sorted(src.names()) == ["b", "w"] and "w" in src and "x" not in src
        mat, vec = src.get("w"), src.get("b")
        assert isinstance(mat, WeightMatrix) and mat.dtype == gllm_dtype and mat.shape == (5, 7)
        assert isinstance(vec, WeightVector) and vec.dtype == gllm_dtype and vec.shape == (7,)
        np.testing.assert_array_equal(mat.data, w)
        np.testing.assert_array_equal(mat.dense(), w.astype(np.float32))
        np.testing.assert_array_equal(mat.dense(slice(1, 3)), w[1:3].astype(np.float32))
        np.testing.assert_array_equal(vec.to_float32(), b.astype(np.float32))
        assert src.dtype_of("w") == ("F32" if np_dtype == np.float32 else "F16")


def test_bf16_kept_as_bits_and_mapped(tmp_path):
    values = np.array([[1.0, -2.5, 0.15625], [3.0, 0.0, -1024.0]], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")  # all exactly representable in bf16
    header = {"__metadata__": {"format": "pt"},
              "w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}}
    path = write(tmp_path / "bf16.safetensors", raw_file(header, bits.tobytes()))
    src = SafetensorsSource(path)
    m = src.get("w")
    assert m.dtype == "bf16" and m.data.dtype == np.uint16 and m.shape == (2, 3)
    np.testing.assert_array_equal(m.data, bits)
    np.testing.assert_array_equal(m.dense(), values)
    # A view over the file mapping, not a copy read into memory.
    assert isinstance(mapped_base(m.data), mmap.mmap)
    assert not m.data.flags.owndata and not m.data.flags.writeable
    assert src.metadata == {"format": "pt"}
    src.close()


def test_shapes_0d_1d_2d_3d_and_empty(tmp_path):
    t3 = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    tensors = {"scalar": np.array(2.5, dtype=np.float32), "v": np.arange(3, dtype=np.float32),
               "m": np.ones((2, 2), dtype=np.float16), "t3": t3, "empty": np.zeros((0, 4), dtype=np.float32)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path))
    src = SafetensorsSource(path)
    s = src.get("scalar")
    assert isinstance(s, WeightVector) and s.shape == (1,) and s.to_float32()[0] == 2.5
    assert src.shape_of("scalar") == ()
    assert isinstance(src.get("v"), WeightVector)
    assert isinstance(src.get("m"), WeightMatrix)
    t = src.get("t3")
    assert isinstance(t, WeightMatrix) and t.shape == (6, 4)
    np.testing.assert_array_equal(t.dense(), t3.reshape(6, 4))
    assert src.shape_of("t3") == (2, 3, 4) and src.shapes["t3"] == (2, 3, 4)
    np.testing.assert_array_equal(src.raw("t3"), t3)
    e = src.get("empty")
    assert e.shape == (0, 4) and e.dense().shape == (0, 4)
    src.close()


def test_int_tensors_only_raw(tmp_path):
    path = tmp_path / "bert.safetensors"
    pos = np.arange(8, dtype=np.int64)[None, :]
    save_file({"embeddings.position_ids": pos, "mask": np.array([True, False]),
               "w": np.ones((2, 2), dtype=np.float32)}, str(path))
    src = SafetensorsSource(path)
    np.testing.assert_array_equal(src.raw("embeddings.position_ids"), pos)
    assert src.raw("embeddings.position_ids").dtype == np.int64
    assert src.dtype_of("embeddings.position_ids") == "I64"
    np.testing.assert_array_equal(src.raw("mask"), [True, False])
    with pytest.raises(UnsupportedFormatError, match=r"embeddings\.position_ids.*I64"):
        src.get("embeddings.position_ids")
    with pytest.raises(CorruptFileError, match="nope"):
        src.get("nope")
    src.close()


def test_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": np.zeros((1, 1), np.float32)}, str(path), metadata={"format": "pt", "x": "y"})
    assert SafetensorsSource(path).metadata == {"format": "pt", "x": "y"}


def test_close_with_live_arrays(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": np.full((2, 2), 3.0, np.float32), "v": np.ones(2, np.float32)}, str(path))
    src = SafetensorsSource(path)
    w = src.get("w")
    src.close()  # must not unmap memory that ``w`` still views
    assert w.dense().sum() == 12.0
    with pytest.raises(ValueError):
        src.get("v")


# -- folders and shards --------------------------------------------------------------------------

def make_sharded(folder, weight_map=None):
    folder.mkdir(exist_ok=True)
    save_file({"a": np.ones((2, 2), np.float32)}, str(folder / "model-00001-of-00002.safetensors"),
              metadata={"format": "pt"})
    save_file({"b": np.full(3, 2.0, np.float16), "c": np.zeros((1, 2), np.float32)},
              str(folder / "model-00002-of-00002.safetensors"))
    if weight_map is None:
        weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
                      "c": "model-00002-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 28}, "weight_map": weight_map}))
    return folder


def test_sharded_index(tmp_path):
    folder = make_sharded(tmp_path / "model")
    assert sniff(folder)
    src = open_safetensors(folder)
    assert sorted(src.names()) == ["a", "b", "c"]
    np.testing.assert_array_equal(src.get("a").dense(), np.ones((2, 2)))
    np.testing.assert_array_equal(src.get("b").to_float32(), [2.0, 2.0, 2.0])
    assert src.metadata == {"format": "pt"}
    src.close()


def test_sharded_subfolder_allowed(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    save_file({"a": np.ones(2, np.float32)}, str(folder / "sub" / "s.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "sub/s.safetensors"}}))
    assert open_safetensors(folder).names() == ["a"]


@pytest.mark.parametrize("shard", ["../x.safetensors", "/etc/x.safetensors", "sub/../../x.safetensors",
                                   "..\\x.safetensors", "C:\\x.safetensors", "", 3])
def test_index_escape_rejected(tmp_path, shard):
    save_file({"a": np.ones(2, np.float32)}, str(tmp_path / "x.safetensors"))
    folder = tmp_path / "model"
    folder.mkdir()
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(CorruptFileError, match="shard") as info:
        open_safetensors(folder)
    assert str(index) in str(info.value)


@pytest.mark.parametrize("fault,weight_map,content", [
    ("missing", {"a": "gone.safetensors"}, None),
    ("not in shard", {"a": "model-00002-of-00002.safetensors"}, None),
    ("weight_map", None, "{}"),
    ("JSON", None, "{not json"),
])
def test_bad_index(tmp_path, fault, weight_map, content):
    folder = make_sharded(tmp_path / "model", weight_map)
    if content is not None:
        (folder / "model.safetensors.index.json").write_text(content)
    with pytest.raises(CorruptFileError, match=fault) as info:
        open_safetensors(folder)
    assert str(folder / "model.safetensors.index.json") in str(info.value)


def test_folder_single_file_and_glob(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    save_file({"w": np.ones((1, 2), np.float32)}, str(single / "model.safetensors"))
    save_file({"other": np.ones((1, 2), np.float32)}, str(single / "extra.safetensors"))
    assert sniff(single) and open_safetensors(single).names() == ["w"]

    glob = tmp_path / "glob"
    glob.mkdir()
    save_file({"b": np.ones(2, np.float32)}, str(glob / "b.safetensors"))
    save_file({"a": np.ones(2, np.float32)}, str(glob / "a.safetensors"))
    assert sniff(glob) and open_safetensors(glob).names() == ["a", "b"]


def test_duplicate_names_across_shards(tmp_path):
    for name in ("one", "two"):
        save_file({"w": np.ones(2, np.float32)}, str(tmp_path / f"{name}.safetensors"))
    with pytest.raises(CorruptFileError, match="'w' is also in") as info:
        open_safetensors(tmp_path)
    assert str(tmp_path / "two.safetensors") in str(info.value)


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(ModelNotFoundError):
        open_safetensors(tmp_path / "absent")
    with pytest.raises(UnsupportedFormatError):
        open_safetensors(tmp_path)


def test_sniff(tmp_path):
    f = tmp_path / "w.safetensors"
    save_file({"w": np.ones(1, np.float32)}, str(f))
    other = tmp_path / "w.bin"
    other.write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sniff(f) and sniff(str(f)) and sniff(tmp_path)
    assert not sniff(other) and not sniff(empty) and not sniff(tmp_path / "absent")


def test_registration():
    registered = []
    register_weight_formats(registered.append)
    (fmt,) = registered
    assert isinstance(fmt, WeightFormat) and fmt.name == "safetensors" and fmt.priority == 100
    assert fmt.sniff is sniff and fmt.open is open_safetensors


# -- malformed files -----------------------------------------------------------------------------

def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def truncated_file() -> bytes:
    good = raw_file({"w": entry(shape=[4], offsets=[0, 16])}, bytes(16))
    return good[:-4]


MALFORMED = {
    "empty file": (b"", "shorter than"),
    "short file": (b"\x01\x02\x03", "shorter than"),
    "header past end": (raw_file(b"{}", header_len=1000), "past the end"),
    "absurd header": (raw_file(b"{}", header_len=200 * 1024 * 1024), "absurd"),
    "huge header length": (raw_file(b"{}", header_len=2**64 - 1), "absurd"),
    "not utf-8": (raw_file(b'{"\xff\xfe": 1}'), "UTF-8"),
    "not json": (raw_file(b'{"w": '), "JSON"),
    "not object": (raw_file(b"[1, 2]"), "not an object"),
    "duplicate key": (raw_file(b'{"w": 1, "w": 2}'), "repeats"),
    "bad metadata": (raw_file({"__metadata__": {"a": 1}}), "__metadata__"),
    "entry not object": (raw_file({"w": [1]}), "not an object"),
    "missing dtype": (raw_file({"w": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8)), "no 'dtype'"),
    "missing shape": (raw_file({"w": {"dtype": "F32", "data_offsets": [0, 8]}}, bytes(8)), "no 'shape'"),
    "missing offsets": (raw_file({"w": {"dtype": "F32", "shape": [2]}}, bytes(8)), "no 'data_offsets'"),
    "dtype not str": (raw_file({"w": entry(dtype=5)}, bytes(8)), "not a string"),
    "unknown dtype": (raw_file({"w": entry(dtype="F128")}, bytes(8)), "unknown dtype"),
    "shape not list": (raw_file({"w": {**entry(), "shape": "2"}}, bytes(8)), "shape"),
    "negative dim": (raw_file({"w": entry(shape=[-2])}, bytes(8)), "non-negative"),
    "float dim": (raw_file({"w": entry(shape=[2.0])}, bytes(8)), "non-negative integers"),
    "bool dim": (raw_file({"w": entry(shape=[True, 2])}, bytes(8)), "non-negative integers"),
    "offsets not pair": (raw_file({"w": entry(offsets=[0])}, bytes(8)), "data_offsets"),
    "offsets not list": (raw_file({"w": {**entry(), "data_offsets": "0,8"}}, bytes(8)), "data_offsets"),
    "negative offset": (raw_file({"w": entry(offsets=[-8, 0])}, bytes(8)), "data_offsets"),
    "float offset": (raw_file({"w": entry(offsets=[0, 8.0])}, bytes(8)), "data_offsets"),
    "begin after end": (raw_file({"w": entry(shape=[0], offsets=[8, 4])}, bytes(8)), "past end"),
    "size mismatch": (raw_file({"w": entry(shape=[3], offsets=[0, 8])}, bytes(12)), "needs 12 bytes"),
    "dtype mismatch": (raw_file({"w": entry(dtype="F16", shape=[2], offsets=[0, 8])}, bytes(8)), "needs 4 bytes"),
    "offsets out of range": (raw_file({"w": entry(shape=[100], offsets=[0, 400])}, bytes(16)), "past the data"),
    "shape too large": (raw_file({"w": entry(shape=[0, 2**62, 2**62], offsets=[0, 0])}), "too large"),
    "overlap": (raw_file({"a": entry(shape=[4], offsets=[0, 16]), "b": entry(shape=[4], offsets=[8, 24])},
                         bytes(24)), "overlap"),
    "truncated": (truncated_file(), "truncated"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed(tmp_path, case):
    content, fault = MALFORMED[case]
    path = write(tmp_path / "bad.safetensors", content)
    with pytest.raises(CorruptFileError, match=fault) as info:
        SafetensorsSource(path)
    assert str(path) in str(info.value)


def test_empty_tensor_inside_another_is_not_overlap(tmp_path):
    header = {"a": entry(shape=[4], offsets=[0, 16]), "e": entry(shape=[0, 3], offsets=[8, 8])}
    path = write(tmp_path / "ok.safetensors", raw_file(header, bytes(16)))
    src = SafetensorsSource(path)
    assert src.get("e").shape == (0, 3)
    np.testing.assert_array_equal(src.raw("a"), np.zeros(4, np.float32))
