"""Weight containers: what a weight format hands to an architecture and a backend prepares.

A ``WeightMatrix`` is a 2-D weight in the orientation of the checkpoint (``[out, in]`` for a
linear layer, ``[vocab, hidden]`` for an embedding table). Its ``data`` is the stored form, kept
memory-mapped where the file allows: float32 for f32, float16 for f16, uint16 holding the raw
bits for bf16, or uint8 blocks (one row of blocks per matrix row) for a quantized type described
by a ``QuantType``. Nothing is expanded to float32 until a caller asks for rows of it.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping, Protocol

import attrs
import numpy as np

from .errors import CorruptFileError

DENSE_DTYPES = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16}


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) → float32: the bf16 value is the top half of a float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits, rounded to nearest even (as torch does)."""
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = u + 0x7FFF + ((u >> 16) & 1)
    out = (rounded >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        out[nan] = 0x7FC0
    return out


@attrs.frozen
class QuantType:
    """A block-quantized storage type (GGML Q4_0, Q4_K, …): a table row, one dequantiser each."""

    name: str
    block_size: int  # weights per block
    type_size: int  # bytes per block
    dequantize: Callable[[np.ndarray], np.ndarray]  # uint8 [n, type_size] blocks → float32 [n, block_size]


@attrs.define(eq=False)
class WeightMatrix:
    name: str
    data: np.ndarray
    dtype: str  # "f32" | "f16" | "bf16" | a QuantType name
    shape: tuple[int, int]
    quant: QuantType | None = None

    def __attrs_post_init__(self):
        rows, cols = self.shape
        if self.quant is None:
            if self.dtype not in DENSE_DTYPES:
                raise CorruptFileError(f"{self.name}: unknown dense dtype {self.dtype!r}")
            if self.data.shape != (rows, cols) or self.data.dtype != DENSE_DTYPES[self.dtype]:
                raise CorruptFileError(f"{self.name}: stored {self.data.dtype}{self.data.shape} does not "
                                       f"match {self.dtype}{self.shape}")
        else:
            q = self.quant
            if cols % q.block_size:
                raise CorruptFileError(f"{self.name}: {cols} columns is not a multiple of the "
                                       f"{q.name} block size {q.block_size}")
            if self.data.shape != (rows, cols // q.block_size * q.type_size):
                raise CorruptFileError(f"{self.name}: {q.name} data of shape {self.data.shape} does not "
                                       f"hold a {rows}x{cols} matrix")

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return self.shape[1]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def dense(self, rows=slice(None)) -> np.ndarray:
        """Selected rows as float32 (``rows`` is a slice or an index array)."""
        block = self.data[rows]
        if self.quant is not None:
            n = block.shape[0]
            blocks = np.ascontiguousarray(block).reshape(-1, self.quant.type_size)
            return self.quant.dequantize(blocks).reshape(n, self.cols).astype(np.float32, copy=False)
        if self.dtype == "bf16":
            return bf16_to_f32(block)
        return np.asarray(block, dtype=np.float32)

    def to_float32(self) -> np.ndarray:
        return self.dense()


@attrs.define(eq=False)
class WeightVector:
    name: str
    data: np.ndarray
    dtype: str

    @property
    def shape(self) -> tuple[int]:
        return (int(self.data.shape[0]),)

    def to_float32(self) -> np.ndarray:
        if self.dtype == "bf16":
            return bf16_to_f32(self.data)
        return np.asarray(self.data, dtype=np.float32)


def dense_weight(name: str, array: np.ndarray, dtype: str | None = None):
    """Wrap an in-memory array (f32/f16 numpy, or uint16 bf16 bits with dtype="bf16")."""
    if dtype is None:
        dtype = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}[array.dtype]
    if array.ndim == 1:
        return WeightVector(name, array, dtype)
    if array.ndim == 2:
        return WeightMatrix(name, array, dtype, tuple(array.shape))
    raise CorruptFileError(f"{name}: weights of {array.ndim} dimensions are not supported")


class WeightSource(Protocol):
    """What a weight format's ``open(path)`` returns."""

    path: str
    metadata: Mapping[str, object]

    def names(self) -> list[str]: ...

    def __contains__(self, name: str) -> bool: ...

    def get(self, name: str) -> WeightMatrix | WeightVector: ...

    def close(self) -> None: ...


class DictWeightSource:
    """A WeightSource over in-memory weights (tests, converted checkpoints)."""

    def __init__(self, weights: Mapping[str, WeightMatrix | WeightVector], path: str = "<memory>",
                 metadata: Mapping[str, object] | None = None):
        self._weights = dict(weights)
        self.path = path
        self.metadata = dict(metadata or {})

    def names(self) -> list[str]:
        return list(self._weights)

    def __contains__(self, name: str) -> bool:
        return name in self._weights

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def get(self, name: str):
        try:
            return self._weights[name]
        except KeyError:
            raise CorruptFileError(f"{self.path}: no tensor named {name!r}") from None

    def close(self) -> None:
        pass
