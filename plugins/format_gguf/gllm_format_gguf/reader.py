"""A memory-mapped GGUF (v2, v3) reader that trusts nothing in the file.

Layout (little-endian)::

    "GGUF"  u32 version  u64 n_tensors  u64 n_kv
    n_kv ×      { string key, u32 value_type, value }
    n_tensors × { string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset }
    padding to ``general.alignment`` (default 32), then the tensor data; offsets are relative to
    the start of the data and multiples of the alignment.

A string is a u64 byte length and that many UTF-8 bytes; an array is a u32 element type, a u64
count and the elements. GGUF lists tensor dimensions fastest-varying first (ggml's ``ne``); the
reader reverses them into numpy (row-major) order.

Every count and length is checked against the bytes left in the file before anything is built
from it, so a corrupt or hostile file raises ``CorruptFileError`` naming the file, the field and
what was expected, never allocates more than the file's size, and never crashes.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from typing import Any, Iterator

import attrs
import numpy as np

from gllm_core.errors import CorruptFileError

from .quants import GGML_TYPES, GGMLType

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 8
_MAX_ELEMENTS = (1 << 62) - 1  # what llama.cpp accepts: the element count fits an int64

# value type id → (name, struct format, numpy dtype) for the fixed-size scalars
_SCALARS = {
    0: ("uint8", "<B", "u1"),
    1: ("int8", "<b", "i1"),
    2: ("uint16", "<H", "<u2"),
    3: ("int16", "<h", "<i2"),
    4: ("uint32", "<I", "<u4"),
    5: ("int32", "<i", "<i4"),
    6: ("float32", "<f", "<f4"),
    7: ("bool", "<?", "u1"),
    10: ("uint64", "<Q", "<u8"),
    11: ("int64", "<q", "<i8"),
    12: ("float64", "<d", "<f8"),
}
STRING, ARRAY = 8, 9
VALUE_TYPE_NAMES = {**{k: v[0] for k, v in _SCALARS.items()}, STRING: "string", ARRAY: "array"}


@attrs.frozen
class TensorInfo:
    """One tensor's entry: numpy-order shape, GGML type, byte range inside the file."""

    name: str
    shape: tuple[int, ...]  # numpy order: the last axis is the contiguous one
    type: GGMLType
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@attrs.frozen
class MetadataArray:
    """An array value: numeric arrays are numpy views of the mapping, strings a list."""

    type: str  # the element type name
    values: Any  # np.ndarray for numbers and bools, list[str] for strings, list for nested arrays

    def __len__(self) -> int:
        return len(self.values)

    def tolist(self) -> list:
        if isinstance(self.values, np.ndarray):
            return self.values.tolist()
        return [v.tolist() if isinstance(v, MetadataArray) else v for v in self.values]


class _Cursor:
    """Reads fields from the mapping, checking each against the end of the file."""

    def __init__(self, reader: "GGUFFile", buf, pos: int = 0):
        self.reader, self.buf, self.pos, self.end = reader, buf, pos, len(buf)

    def need(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > self.end:
            raise self.reader.error(f"{what}: needs {n} bytes at offset {self.pos} but the file ends at "
                                    f"{self.end} (truncated?)")
        start = self.pos
        self.pos += n
        return start

    def scalar(self, fmt: str, size: int, what: str):
        start = self.need(size, what)
        return struct.unpack_from(fmt, self.buf, start)[0]

    def u32(self, what: str) -> int:
        return self.scalar("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", 8, what)

    def string(self, what: str) -> str:
        length = self.u64(f"{what} (length)")
        if length > self.end - self.pos:
            raise self.reader.error(f"{what}: string of {length} bytes at offset {self.pos} runs past the "
                                    f"end of the {self.end}-byte file")
        start = self.need(length, what)
        try:
            return self.buf[start:start + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.reader.error(f"{what}: string at offset {start} is not valid UTF-8 ({exc})") from None

    def value(self, vtype: int, what: str, depth: int = 0):
        if vtype in _SCALARS:
            name, fmt, _ = _SCALARS[vtype]
            size = struct.calcsize(fmt)
            value = self.scalar(fmt, size, what)
            if vtype == 7:
                raw = self.buf[self.pos - 1]
                if raw not in (0, 1):
                    raise self.reader.error(f"{what}: bool byte is {raw}, expected 0 or 1")
            return value
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY:
            return self.array(what, depth)
        raise self.reader.error(f"{what}: unknown value type {vtype} (known: "
                                f"{', '.join(f'{k} {v}' for k, v in sorted(VALUE_TYPE_NAMES.items()))})")

    def array(self, what: str, depth: int) -> MetadataArray:
        if depth >= MAX_ARRAY_DEPTH:
            raise self.reader.error(f"{what}: arrays nested more than {MAX_ARRAY_DEPTH} deep")
        etype = self.u32(f"{what} (array element type)")
        count = self.u64(f"{what} (array length)")
        left = self.end - self.pos
        if etype in _SCALARS:
            name, fmt, dtype = _SCALARS[etype]
            size = struct.calcsize(fmt)
            if count > left // size:
                raise self.reader.error(f"{what}: array of {count} {name} values needs {count * size} bytes "
                                        f"but only {left} are left in the file")
            start = self.need(count * size, what)
            values = np.frombuffer(self.buf, dtype=np.dtype(dtype), count=count, offset=start)
            if etype == 7:
                if values.size and values.max() > 1:
                    raise self.reader.error(f"{what}: bool array holds a byte other than 0 or 1")
                values = values.view(np.bool_)
            return MetadataArray(name, values)
        if etype == STRING:
            if count > left // 8:  # every string takes at least its 8-byte length
                raise self.reader.error(f"{what}: array of {count} strings cannot fit in the {left} bytes "
                                        f"left in the file")
            return MetadataArray("string", self._strings(count, what))
        if etype == ARRAY:
            if count > left // 12:  # every nested array takes at least its type and length
                raise self.reader.error(f"{what}: array of {count} arrays cannot fit in the {left} bytes "
                                        f"left in the file")
            return MetadataArray("array", [self.array(f"{what}[{i}]", depth + 1) for i in range(count)])
        raise self.reader.error(f"{what}: unknown array element type {etype}")

    def _strings(self, count: int, what: str) -> list[str]:
        buf, pos, end = self.buf, self.pos, self.end
        unpack = struct.Struct("<Q").unpack_from
        out = []
        append = out.append
        for i in range(count):
            if pos + 8 > end:
                raise self.reader.error(f"{what}[{i}]: string length at offset {pos} runs past the end of "
                                        f"the {end}-byte file")
            (length,) = unpack(buf, pos)
            pos += 8
            if length > end - pos:
                raise self.reader.error(f"{what}[{i}]: string of {length} bytes at offset {pos} runs past "
                                        f"the end of the {end}-byte file")
            try:
                append(buf[pos:pos + length].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise self.reader.error(f"{what}[{i}]: not valid UTF-8 ({exc})") from None
            pos += length
        self.pos = pos
        return out


class GGUFFile:
    """One validated, memory-mapped GGUF file: ``metadata`` (key → value) and ``tensors``.

    Scalars are Python ints/floats/bools/strs; arrays are ``MetadataArray``. ``array(name)``
    returns a tensor's data as a read-only numpy view of the mapping.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                self.size = os.fstat(f.fileno()).st_size
                if self.size < 24:
                    raise self.error(f"file is {self.size} bytes, shorter than a GGUF header (24 bytes)")
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise CorruptFileError(f"{self.path}: cannot read: {exc}") from exc
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    def error(self, fault: str) -> CorruptFileError:
        return CorruptFileError(f"{self.path}: {fault}")

    # -- parsing -----------------------------------------------------------------------------------
    def _parse(self) -> None:
        buf = self._mmap
        if bytes(buf[:4]) != MAGIC:
            raise self.error(f"not a GGUF file: magic is {bytes(buf[:4])!r}, expected {MAGIC!r}")
        cur = _Cursor(self, buf, 4)
        version = cur.u32("version")
        if version not in SUPPORTED_VERSIONS:
            swapped = struct.unpack("<I", struct.pack(">I", version))[0]
            if swapped in SUPPORTED_VERSIONS:
                raise self.error(f"big-endian GGUF (version {swapped}) is not supported")
            raise self.error(f"GGUF version {version} is not supported (supported: "
                             f"{', '.join(map(str, SUPPORTED_VERSIONS))})")
        self.version = version
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("metadata count")
        # the smallest key/value takes 8 + 4 + 1 bytes, the smallest tensor entry 8 + 4 + 4 + 8
        if n_kv > (self.size - cur.pos) // 13:
            raise self.error(f"metadata count {n_kv} is absurd for a {self.size}-byte file")
        if n_tensors > (self.size - cur.pos) // 24:
            raise self.error(f"tensor count {n_tensors} is absurd for a {self.size}-byte file")

        metadata: dict[str, Any] = {}
        self.value_types: dict[str, str] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            vtype = cur.u32(f"metadata {key!r} (value type)")
            if key in metadata:
                raise self.error(f"metadata key {key!r} appears twice")
            metadata[key] = cur.value(vtype, f"metadata {key!r}")
            self.value_types[key] = VALUE_TYPE_NAMES.get(vtype, "?")
        self.metadata = metadata

        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0
                or alignment & (alignment - 1) or alignment > 1 << 20):
            raise self.error(f"general.alignment {alignment!r} is not a power of two up to 1 MiB")
        self.alignment = alignment

        entries = []
        names = set()
        for i in range(n_tensors):
            name = cur.string(f"tensor #{i} name")
            if name in names:
                raise self.error(f"tensor {name!r} appears twice")
            names.add(name)
            n_dims = cur.u32(f"tensor {name!r} dimension count")
            if not 1 <= n_dims <= MAX_DIMS:
                raise self.error(f"tensor {name!r} has {n_dims} dimensions (expected 1 to {MAX_DIMS})")
            ne = [cur.u64(f"tensor {name!r} dimension {d}") for d in range(n_dims)]
            if math.prod(max(d, 1) for d in ne) > _MAX_ELEMENTS:
                raise self.error(f"tensor {name!r} has absurd dimensions {list(reversed(ne))}")
            type_id = cur.u32(f"tensor {name!r} type")
            offset = cur.u64(f"tensor {name!r} offset")
            entries.append((name, ne, type_id, offset))

        data_start = -(-cur.pos // alignment) * alignment
        if data_start > self.size and entries:  # vocab-only files may end before the padding
            raise self.error(f"tensor data would start at {data_start}, past the end of the {self.size}-byte file")
        self.data_start = data_start
        data_len = max(0, self.size - data_start)

        tensors: dict[str, TensorInfo] = {}
        for name, ne, type_id, offset in entries:
            gtype = GGML_TYPES.get(type_id)
            if gtype is None:
                raise self.error(f"tensor {name!r} has unknown GGML type {type_id}")
            count = math.prod(ne)
            if ne and ne[0] % gtype.block_size:
                raise self.error(f"tensor {name!r}: row of {ne[0]} values is not a whole number of "
                                 f"{gtype.name} blocks of {gtype.block_size}")
            nbytes = count // gtype.block_size * gtype.type_size
            if offset % alignment:
                raise self.error(f"tensor {name!r}: offset {offset} is not a multiple of the alignment {alignment}")
            if offset > data_len or nbytes > data_len - offset:
                raise self.error(f"tensor {name!r}: {gtype.name}{list(reversed(ne))} needs bytes "
                                 f"[{offset}, {offset + nbytes}) of the data section, which ends at {data_len} "
                                 f"(offset past the end, or file truncated)")
            tensors[name] = TensorInfo(name=name, shape=tuple(reversed(ne)), type=gtype,
                                       offset=data_start + offset, nbytes=nbytes)
        self._check_overlaps(tensors.values())
        self.tensors = tensors

    def _check_overlaps(self, tensors) -> None:
        spans = sorted((t for t in tensors if t.nbytes), key=lambda t: t.offset)
        for prev, cur in zip(spans, spans[1:]):
            if cur.offset < prev.offset + prev.nbytes:
                raise self.error(f"tensors {prev.name!r} and {cur.name!r} overlap in the file")

    # -- access ------------------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value (arrays as MetadataArray)."""
        return self.metadata.get(key, default)

    def array(self, name: str) -> np.ndarray:
        """The tensor's stored data, read-only, memory-mapped: numpy-order shape for unblocked types;
        for block-quantized types uint8 ``[*shape[:-1], shape[-1] / block_size * type_size]``."""
        info = self.tensors[name]
        t = info.type
        if t.numpy is not None:
            dtype, shape = np.dtype(t.numpy), info.shape
        else:
            dtype = np.dtype(np.uint8)
            shape = info.shape[:-1] + (info.shape[-1] // t.block_size * t.type_size,) if info.shape else (0,)
        count = info.nbytes // dtype.itemsize
        flat = np.frombuffer(self._mmap, dtype=dtype, count=count, offset=info.offset) if count else \
            np.empty(0, dtype=dtype)
        return flat.reshape(shape)

    def close(self) -> None:
        mm = getattr(self, "_mmap", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # arrays handed out still view the mapping; it goes with the last of them

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def is_gguf(path: str | os.PathLike) -> bool:
    """True if ``path`` is a file that starts with the GGUF magic."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False
