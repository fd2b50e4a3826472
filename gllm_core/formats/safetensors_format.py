"""The built-in safetensors weight format: a memory-mapped reader that trusts nothing in the file.

Layout of a ``.safetensors`` file: an 8-byte little-endian u64 header length ``N``, ``N`` bytes of
UTF-8 JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
then the data buffer; offsets are relative to the start of that buffer. Each tensor is an
``np.frombuffer`` view over one read-only ``mmap`` of its file, so no tensor byte is read until
used, and every size in the header is checked against the file before anything is built from it.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator

import numpy as np

from ..errors import CorruptFileError, ModelNotFoundError, UnsupportedFormatError
from ..hookspecs import hookimpl
from ..registry import WeightFormat
from ..weights import WeightMatrix, WeightVector

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100 * 1024 * 1024

# safetensors dtype → numpy storage dtype (little-endian, as the format stores it). FP8 types
# have no numpy dtype; they are handed out as raw bytes for plugins that know the encoding.
STORAGE_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"), "F8_E4M3": np.dtype("u1"), "F8_E5M2": np.dtype("u1"),
}
# The dtypes ``get`` turns into WeightMatrix / WeightVector, by their gllm name.
WEIGHT_DTYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _TensorInfo:
    __slots__ = ("name", "dtype", "shape", "begin", "end")

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...], begin: int, end: int):
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end


class _SafetensorsFile:
    """One validated, memory-mapped ``.safetensors`` file."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 8:
                    raise self._error(f"file is {size} bytes, shorter than the 8-byte header length")
                # The mapping keeps its own handle, so the file stays readable after ``with``.
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise CorruptFileError(f"{path}: cannot read: {exc}") from exc
        try:
            self.metadata, self.tensors, self._data_start = self._parse(size)
        except BaseException:
            self._mmap.close()
            raise

    def _error(self, fault: str) -> CorruptFileError:
        return CorruptFileError(f"{self.path}: {fault}")

    def _parse(self, size: int):
        (header_len,) = struct.unpack("<Q", self._mmap[:8])
        if header_len > MAX_HEADER_BYTES:
            raise self._error(f"header length {header_len} is absurd (limit {MAX_HEADER_BYTES} bytes)")
        if 8 + header_len > size:
            raise self._error(f"header length {header_len} runs past the end of the {size}-byte file")
        try:
            header = json.loads(self._mmap[8:8 + header_len].decode("utf-8"),
                                object_pairs_hook=self._no_duplicate_keys)
        except UnicodeDecodeError as exc:
            raise self._error(f"header is not valid UTF-8: {exc}") from None
        except (ValueError, RecursionError) as exc:
            raise self._error(f"header is not valid JSON: {exc}") from None
        if not isinstance(header, dict):
            raise self._error(f"header is a JSON {type(header).__name__}, not an object")

        metadata = header.pop("__metadata__", {})
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise self._error("__metadata__ must be an object of string values")

        data_start = 8 + header_len
        data_len = size - data_start
        tensors = {name: self._parse_entry(name, entry, data_len) for name, entry in header.items()}
        self._check_overlaps(tensors.values())
        return metadata, tensors, data_start

    def _no_duplicate_keys(self, pairs):
        obj = {}
        for key, value in pairs:
            if key in obj:
                raise self._error(f"header repeats the key {key!r}")
            obj[key] = value
        return obj

    def _parse_entry(self, name: str, entry, data_len: int) -> _TensorInfo:
        where = f"tensor {name!r}"
        if not isinstance(entry, dict):
            raise self._error(f"{where}: entry is a JSON {type(entry).__name__}, not an object")
        for key in ("dtype", "shape", "data_offsets"):
            if key not in entry:
                raise self._error(f"{where}: entry has no {key!r}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str):
            raise self._error(f"{where}: dtype {dtype!r} is not a string")
        if dtype not in STORAGE_DTYPES:
            raise self._error(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise self._error(f"{where}: shape {shape!r} is not a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_int(o) and o >= 0 for o in offsets)):
            raise self._error(f"{where}: data_offsets {offsets!r} is not two non-negative integers")
        begin, end = offsets
        if begin > end:
            raise self._error(f"{where}: data_offsets begin {begin} is past end {end}")
        itemsize = STORAGE_DTYPES[dtype].itemsize
        nbytes = math.prod(shape) * itemsize
        if end - begin != nbytes:
            raise self._error(f"{where}: {dtype}{shape} needs {nbytes} bytes but data_offsets "
                              f"[{begin}, {end}] hold {end - begin}")
        # numpy refuses shapes whose nonzero dims multiply past the address space, even when
        # another dim is 0 and nothing would be allocated.
        if math.prod(d for d in shape if d) * itemsize > sys.maxsize:
            raise self._error(f"{where}: shape {shape} is too large")
        if end > data_len:
            raise self._error(f"{where}: data_offsets [{begin}, {end}] run past the data buffer "
                              f"({data_len} bytes; file truncated?)")
        return _TensorInfo(name, dtype, tuple(shape), begin, end)

    def _check_overlaps(self, tensors) -> None:
        # Empty tensors occupy no bytes, so they cannot overlap anything.
        spans = sorted((t for t in tensors if t.end > t.begin), key=lambda t: (t.begin, t.end))
        for prev, cur in zip(spans, spans[1:]):
            if cur.begin < prev.end:
                raise self._error(f"tensors {prev.name!r} [{prev.begin}, {prev.end}] and "
                                  f"{cur.name!r} [{cur.begin}, {cur.end}] overlap")

    def array(self, name: str) -> np.ndarray:
        """The tensor in its stored dtype and full shape: a read-only view of the mapping."""
        info = self.tensors[name]
        dtype = STORAGE_DTYPES[info.dtype]
        if info.end == info.begin:
            return np.empty(info.shape, dtype=dtype)
        count = (info.end - info.begin) // dtype.itemsize
        flat = np.frombuffer(self._mmap, dtype=dtype, count=count, offset=self._data_start + info.begin)
        return flat.reshape(info.shape)

    def close(self) -> None:
        try:
            self._mmap.close()
        except BufferError:
            # Arrays handed out still view the mapping; it is unmapped when the last one goes.
            pass


def _check_shard_name(index_path: str, shard: object) -> str:
    if not isinstance(shard, str) or not shard:
        raise CorruptFileError(f"{index_path}: shard file name {shard!r} is not a non-empty string")
    posix = PurePosixPath(shard.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(shard).drive or ".." in posix.parts:
        raise CorruptFileError(f"{index_path}: shard path {shard!r} escapes the model folder")
    return shard


def _read_index(index_path: str) -> dict[str, str]:
    try:
        with open(index_path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_HEADER_BYTES:
                raise CorruptFileError(f"{index_path}: index file is absurdly large")
            index = json.loads(f.read().decode("utf-8"))
    except OSError as exc:
        raise CorruptFileError(f"{index_path}: cannot read: {exc}") from exc
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CorruptFileError(f"{index_path}: not valid UTF-8 JSON: {exc}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise CorruptFileError(f"{index_path}: no 'weight_map' object")
    return {name: _check_shard_name(index_path, shard) for name, shard in weight_map.items()}


class SafetensorsSource:
    """A WeightSource over one ``.safetensors`` file or a folder of shards.

    ``get`` hands out F32/F16/BF16 tensors as WeightVector (0-D, 1-D) or WeightMatrix (2-D, and
    higher ranks flattened to ``[prod(shape[:-1]), shape[-1]]``); ``raw`` hands out any tensor as
    a numpy array of its full shape (BF16 as uint16 bits, FP8 as uint8 bytes).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._files: list[_SafetensorsFile] = []
        self._owner: dict[str, _SafetensorsFile] = {}
        self.metadata: dict[str, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._closed = False
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        if os.path.isfile(self.path):
            self._add_file(self.path)
            return
        if not os.path.isdir(self.path):
            raise ModelNotFoundError(f"{self.path}: no such file or folder")
        single = os.path.join(self.path, SINGLE_FILE)
        index = os.path.join(self.path, INDEX_FILE)
        if os.path.isfile(single):
            self._add_file(single)
        elif os.path.isfile(index):
            weight_map = _read_index(index)
            by_shard: dict[str, list[str]] = {}
            for name, shard in weight_map.items():
                by_shard.setdefault(shard, []).append(name)
            for shard in sorted(by_shard):
                shard_path = os.path.join(self.path, shard)
                if not os.path.isfile(shard_path):
                    raise CorruptFileError(f"{index}: shard {shard!r} is missing")
                shard_file = self._add_file(shard_path)
                for name in by_shard[shard]:
                    if name not in shard_file.tensors:
                        raise CorruptFileError(f"{index}: tensor {name!r} is not in shard {shard!r}")
        else:
            shards = sorted(p for p in os.listdir(self.path)
                            if p.endswith(".safetensors") and os.path.isfile(os.path.join(self.path, p)))
            if not shards:
                raise UnsupportedFormatError(f"{self.path}: folder holds no .safetensors files")
            for shard in shards:
                self._add_file(os.path.join(self.path, shard))

    def _add_file(self, path: str) -> _SafetensorsFile:
        shard = _SafetensorsFile(path)
        self._files.append(shard)
        for name, info in shard.tensors.items():
            if name in self._owner:
                raise CorruptFileError(f"{path}: tensor {name!r} is also in {self._owner[name].path}")
            self._owner[name] = shard
            self.shapes[name] = info.shape
        for key, value in shard.metadata.items():
            self.metadata.setdefault(key, value)
        return shard

    def _info(self, name: str) -> tuple[_SafetensorsFile, _TensorInfo]:
        if self._closed:
            raise ValueError(f"{self.path}: weight source is closed")
        try:
            shard = self._owner[name]
        except KeyError:
            raise CorruptFileError(f"{self.path}: no tensor named {name!r}") from None
        return shard, shard.tensors[name]

    def names(self) -> list[str]:
        return list(self._owner)

    def __contains__(self, name: str) -> bool:
        return name in self._owner

    def __iter__(self) -> Iterator[str]:
        return iter(self._owner)

    def __len__(self) -> int:
        return len(self._owner)

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self._info(name)[1].shape

    def dtype_of(self, name: str) -> str:
        """The safetensors dtype as stored: "F32", "BF16", "I64", …"""
        return self._info(name)[1].dtype

    def raw(self, name: str) -> np.ndarray:
        shard, _ = self._info(name)
        return shard.array(name)

    def get(self, name: str) -> WeightMatrix | WeightVector:
        shard, info = self._info(name)
        dtype = WEIGHT_DTYPES.get(info.dtype)
        if dtype is None:
            raise UnsupportedFormatError(f"{shard.path}: tensor {name!r} has dtype {info.dtype}, "
                                         f"which is not a weight dtype (F32, F16, BF16); use raw()")
        data = shard.array(name)
        if data.ndim <= 1:
            return WeightVector(name, data.reshape(-1), dtype)
        if data.ndim > 2:
            data = data.reshape(math.prod(info.shape[:-1]), info.shape[-1])
        return WeightMatrix(name, data, dtype, (int(data.shape[0]), int(data.shape[1])))

    def close(self) -> None:
        self._closed = True
        for shard in self._files:
            shard.close()

    def __enter__(self) -> SafetensorsSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SafetensorsSource({self.path!r}, {len(self._owner)} tensors, {len(self._files)} files)"


def sniff(path) -> bool:
    """True for a ``.safetensors`` file or a folder that holds safetensors weights."""
    try:
        p = Path(path)
        if p.is_file():
            return p.suffix == ".safetensors"
        if p.is_dir():
            return ((p / SINGLE_FILE).is_file() or (p / INDEX_FILE).is_file()
                    or any(c.is_file() for c in p.glob("*.safetensors")))
    except (OSError, TypeError, ValueError):
        pass
    return False


def open_safetensors(path) -> SafetensorsSource:
    return SafetensorsSource(path)


@hookimpl
def register_weight_formats(register):
    register(WeightFormat(name="safetensors", sniff=sniff, open=open_safetensors, priority=100))
