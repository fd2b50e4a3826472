"""The GGUF reader: every value type, alignment, numpy-order shapes, v2/v3, and hostile files."""

import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf import quants as ref

from gllm_core.errors import CorruptFileError, GllmError
from gllm_format_gguf.reader import GGUFFile, MetadataArray


# -- valid files written by gguf-py -----------------------------------------------------------------

def _write_with_gguf_py(path, alignment=None):
    w = GGUFWriter(str(path), "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 1.5)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 1e-300)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ✓")
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_f32", [0.5, 0.25])
    w.add_array("t.arr_str", ["a", "", "日本"])
    w.add_array("t.arr_bool", [True, False])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    rng = np.random.default_rng(0)
    tensors = {
        "a.f32": rng.standard_normal((3, 5)).astype(np.float32),
        "b.f16": rng.standard_normal((7,)).astype(np.float16),
        "c.f32_3d": rng.standard_normal((2, 3, 4)).astype(np.float32),
    }
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    q = ref.quantize(rng.standard_normal((4, 64)).astype(np.float32), GGMLQuantizationType.Q8_0)
    w.add_tensor("d.q8_0", q, raw_dtype=GGMLQuantizationType.Q8_0)
    tensors["d.q8_0"] = q
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


@pytest.mark.parametrize("alignment", [None, 64, 256])
def test_round_trip_every_value_type(tmp_path, alignment):
    path = tmp_path / "x.gguf"
    tensors = _write_with_gguf_py(path, alignment)
    f = GGUFFile(path)
    md = f.metadata
    assert f.version == 3 and f.alignment == (alignment or 32)
    assert (md["t.u8"], md["t.i8"], md["t.u16"], md["t.i16"]) == (200, -100, 60000, -30000)
    assert (md["t.u32"], md["t.i32"], md["t.u64"], md["t.i64"]) == (4_000_000_000, -2_000_000_000, 2**63 + 5, -(2**62))
    assert md["t.f32"] == 1.5 and md["t.f64"] == 1e-300 and md["t.bool"] is True
    assert md["t.str"] == "héllo ✓" and md["general.architecture"] == "llama"
    assert md["t.arr_i32"].tolist() == [1, -2, 3] and md["t.arr_f32"].tolist() == [0.5, 0.25]
    assert md["t.arr_str"].tolist() == ["a", "", "日本"] and md["t.arr_bool"].tolist() == [True, False]
    assert md["t.arr_nested"].tolist() == [[1, 2], [3]]
    assert f.data_start % f.alignment == 0
    for name, arr in tensors.items():
        info = f.tensors[name]
        assert info.offset % f.alignment == 0
        got = f.array(name)
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)
    assert f.tensors["c.f32_3d"].shape == (2, 3, 4)  # numpy order, not ggml's reversed dims
    assert f.tensors["d.q8_0"].shape == (4, 64) and f.tensors["d.q8_0"].type.name == "q8_0"


def test_version_2_reads_like_version_3(tmp_path):
    path = tmp_path / "v3.gguf"
    _write_with_gguf_py(path)
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    v2 = tmp_path / "v2.gguf"
    v2.write_bytes(bytes(data))
    a, b = GGUFFile(path), GGUFFile(v2)
    assert b.version == 2
    assert list(a.tensors) == list(b.tensors)
    assert np.array_equal(a.array("a.f32"), b.array("a.f32"))


TINY = Path(__file__).parent / "fixtures" / "tiny"


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "qwen3moe"])
def test_converter_output_agrees_with_gguf_py(family):
    # files written by llama.cpp's convert_hf_to_gguf.py (tools/make_gguf_fixtures.py)
    path = TINY / f"{family}.gguf"
    ours, theirs = GGUFFile(path), GGUFReader(path)
    assert len(ours.tensors) == len(theirs.tensors)
    for t in theirs.tensors:
        info = ours.tensors[t.name]
        assert info.shape == tuple(int(d) for d in reversed(t.shape.tolist()))
        assert info.type.id == int(t.tensor_type) and info.offset == t.data_offset and info.nbytes == t.n_bytes
        assert np.array_equal(ours.array(t.name), t.data)
    for field in theirs.fields.values():
        if field.name.startswith("GGUF."):
            continue
        value, expected = ours.metadata[field.name], field.contents()
        if isinstance(value, MetadataArray):
            assert value.tolist() == expected
        elif isinstance(value, float):
            assert value == pytest.approx(expected, rel=1e-7)
        else:
            assert value == expected


def test_real_files_tensor_tables(smollm2_path, qwen_path):
    for path, count in ((smollm2_path, 272), (qwen_path, 291)):
        f = GGUFFile(path)
        assert len(f.tensors) == count
        spans = sorted((t.offset, t.offset + t.nbytes) for t in f.tensors.values())
        assert spans[0][0] == f.data_start
        for (_, end), (start, _) in zip(spans, spans[1:]):  # packed, each start aligned
            assert start - end < f.alignment and start % f.alignment == 0
        assert f.size - spans[-1][1] < f.alignment  # the last tensor ends the file
    small = GGUFFile(smollm2_path).tensors
    assert small["token_embd.weight"].shape == (49152, 576) and small["token_embd.weight"].type.name == "q8_0"
    assert small["blk.0.attn_k.weight"].shape == (192, 576) and small["blk.0.attn_k.weight"].type.name == "q4_1"


# -- hostile files: built field by field -------------------------------------------------------------

def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv_u32(key, value):
    return _s(key) + struct.pack("<II", 4, value)


def build(kvs=(), tensors=(), data=b"", *, magic=b"GGUF", version=3, n_tensors=None, n_kv=None, align=32):
    """A GGUF file from raw pieces; counts default to the pieces given."""
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    pad = (-len(body)) % align
    return body + b"\0" * pad + data


def tensor(name, dims, ggml_type=0, offset=0):
    return _s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<IQ", ggml_type, offset)


GOOD = build([_kv_u32("general.alignment", 32), _s("general.architecture") + struct.pack("<I", 8) + _s("llama")],
             [tensor("w", [4, 2], 0, 0)], np.arange(8, dtype=np.float32).tobytes())

HOSTILE = {
    "bad magic": b"GGUX" + GOOD[4:],
    "ggml magic": b"lmgg" + GOOD[4:],
    "empty": b"",
    "short header": GOOD[:20],
    "version 1": build(version=1),
    "version 99": build(version=99),
    "big-endian": build(version=3 << 24),
    "absurd tensor count": build(n_tensors=2**63),
    "absurd kv count": build(n_kv=2**40),
    "truncated in a key": build([_kv_u32("general.alignment", 32)])[:30],
    "truncated in the tensor data": GOOD[:-4],
    "truncated in tensor info": build([], [tensor("w", [4, 2])])[:40],
    "key longer than the file": build([struct.pack("<Q", 2**62) + b"abc"]),
    "string value longer than the file": build([_s("k") + struct.pack("<I", 8) + struct.pack("<Q", 10**12)]),
    "tensor name longer than the file": build([], [struct.pack("<Q", 2**40)]),
    "unknown value type": build([_s("k") + struct.pack("<I", 13) + b"\0" * 8]),
    "unknown array element type": build([_s("k") + struct.pack("<IIQ", 9, 77, 1)]),
    "array longer than the file": build([_s("k") + struct.pack("<IIQ", 9, 4, 2**61)]),
    "string array longer than the file": build([_s("k") + struct.pack("<IIQ", 9, 8, 2**50)]),
    "nested array too deep": build([_s("k") + struct.pack("<IIQ", 9, 9, 1) * 20 + struct.pack("<IIQ", 9, 0, 0)]),
    "bool byte 7": build([_s("k") + struct.pack("<IB", 7, 7)]),
    "invalid utf-8 key": build([_s(b"\xff\xfe") + struct.pack("<II", 4, 1)]),
    "duplicate key": build([_kv_u32("a", 1), _kv_u32("a", 2)]),
    "alignment 0": build([_kv_u32("general.alignment", 0)]),
    "alignment 3": build([_kv_u32("general.alignment", 3)]),
    "unknown ggml type": build([], [tensor("w", [4, 2], 17_000, 0)], b"\0" * 32),
    "offset past the end": build([], [tensor("w", [4, 2], 0, 2**40)], b"\0" * 32),
    "offset not aligned": build([], [tensor("w", [4, 2], 0, 4)], b"\0" * 64),
    "absurd dimensions": build([], [tensor("w", [2**40, 2**40], 0, 0)], b"\0" * 32),
    "dimension 2**64-1": build([], [tensor("w", [2**64 - 1], 0, 0)], b"\0" * 32),
    "five dimensions": build([], [tensor("w", [1, 1, 1, 1, 1], 0, 0)], b"\0" * 32),
    "zero dimensions": build([], [tensor("w", [], 0, 0)], b"\0" * 32),
    "row not whole blocks": build([], [tensor("w", [33, 1], 8, 0)], b"\0" * 64),
    "duplicate tensor": build([], [tensor("w", [8], 0, 0), tensor("w", [8], 0, 32)], b"\0" * 64),
    "overlapping tensors": build([], [tensor("a", [8], 0, 0), tensor("b", [8], 0, 0)], b"\0" * 64),
    "tensor bytes past the end": build([], [tensor("w", [64], 0, 0)], b"\0" * 32),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_raises_corrupt_file_error(tmp_path, case):
    path = tmp_path / "bad.gguf"
    path.write_bytes(HOSTILE[case])
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError) as info:
            GGUFFile(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 1 << 20, f"{case}: parsing allocated {peak} bytes"


def test_good_file_parses(tmp_path):
    path = tmp_path / "good.gguf"
    path.write_bytes(GOOD)
    f = GGUFFile(path)
    assert f.tensors["w"].shape == (2, 4)
    assert f.array("w").tolist() == np.arange(8, dtype=np.float32).reshape(2, 4).tolist()


def test_vocab_only_file_may_end_before_the_padding(tmp_path):
    path = tmp_path / "vocab.gguf"
    body = build([_kv_u32("x", 1)], align=1)
    path.write_bytes(body)
    assert GGUFFile(path).metadata["x"] == 1


def test_random_corruption_never_escapes_as_another_error(tmp_path, smollm2_path):
    # the first kilobytes of a real file hold the header, metadata and the start of the tensor table
    head = bytearray(open(smollm2_path, "rb").read(1 << 16))
    rng = np.random.default_rng(11)
    path = tmp_path / "fuzz.gguf"
    for trial in range(150):
        data = bytearray(head)
        for _ in range(int(rng.integers(1, 8))):
            pos = int(rng.integers(4, 4096))
            data[pos] = int(rng.integers(0, 256))
        cut = len(data) if trial % 3 else int(rng.integers(8, len(data)))
        path.write_bytes(bytes(data[:cut]))
        try:
            GGUFFile(path)
        except GllmError:
            pass
