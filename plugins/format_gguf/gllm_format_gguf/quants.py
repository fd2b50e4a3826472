"""GGML tensor types as a table: block size, bytes per block, and a numpy dequantiser for each.

Block layouts follow llama.cpp's ``ggml-common.h`` (little-endian, packed, no padding); the byte
counts are asserted below. Every dequantiser performs the same float32 operations, in the same
order, as gguf-py's ``gguf/quants.py``, so their results are bit-identical (the tests hold them
together). A dequantiser maps ``uint8 [n, type_size]`` blocks to ``float32 [n, block_size]``.
"""

from __future__ import annotations

from typing import Callable

import attrs
import numpy as np

from gllm_core.weights import QuantType

QK_K = 256  # weights per super-block of the K-quants
K_SCALE_SIZE = 12  # packed 6-bit scales and mins of Q4_K / Q5_K


def _f16(b: np.ndarray) -> np.ndarray:
    """Two bytes per row → float32 column (the block scale ``d`` and friends)."""
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray, n: int, group: int) -> np.ndarray:
    """Low nibbles of each ``group`` bytes first, then their high nibbles: uint8 ``[n, 2*len]``."""
    q = qs.reshape((n, -1, 1, group)) >> np.array([0, 4], dtype=np.uint8).reshape((1, 1, 2, 1))
    return (q & np.uint8(0x0F)).reshape((n, -1))


def _bits(packed: np.ndarray, n: int, group: int, nbits: int, count: int) -> np.ndarray:
    """``count`` fields of ``nbits`` bits from each byte of ``group``-byte rows, lowest field first."""
    shifts = np.arange(0, count * nbits, nbits, dtype=np.uint8).reshape((1, 1, count, 1))
    q = packed.reshape((n, -1, 1, group)) >> shifts
    return q & np.uint8((1 << nbits) - 1)


# -- 32-weight blocks ----------------------------------------------------------------------------
# block_q4_0 { f16 d; u8 qs[16]; }            w = d * (q - 8)
# block_q4_1 { f16 d; f16 m; u8 qs[16]; }     w = d * q + m
# block_q5_0 { f16 d; u8 qh[4]; u8 qs[16]; }  w = d * (q - 16), q's 5th bit in qh
# block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16]; }
# block_q8_0 { f16 d; i8 qs[32]; }            w = d * q

def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d = _f16(blocks[:, :2])
    q = _nibbles(blocks[:, 2:], n, 16).astype(np.int8) - np.int8(8)
    return d * q.astype(np.float32)


def dequantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d, m = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    q = _nibbles(blocks[:, 4:], n, 16).astype(np.float32)
    return d * q + m


def _q5_high(qh: np.ndarray, n: int) -> np.ndarray:
    bits = np.ascontiguousarray(qh).view(np.uint32).reshape((n, 1)) >> np.arange(32, dtype=np.uint32).reshape((1, 32))
    return (bits & np.uint32(1)).astype(np.uint8)


def dequantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d = _f16(blocks[:, :2])
    q = (_nibbles(blocks[:, 6:], n, 16) | (_q5_high(blocks[:, 2:6], n) << np.uint8(4))).astype(np.int8) - np.int8(16)
    return d * q.astype(np.float32)


def dequantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d, m = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    q = (_nibbles(blocks[:, 8:], n, 16) | (_q5_high(blocks[:, 4:8], n) << np.uint8(4))).astype(np.float32)
    return d * q + m


def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    d = _f16(blocks[:, :2])
    return np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32) * d


# -- 256-weight super-blocks (K-quants) ------------------------------------------------------------
# block_q2_K { u8 scales[16]; u8 qs[64]; f16 d; f16 dmin; }   16 groups of 16, 4-bit scale/min
# block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d; }   16 groups of 16, 6-bit scales
# block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }   8 groups of 32, 6-bit scale/min
# block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }
# block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d; }   16 groups of 16

def dequantize_q2_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    scales, qs = blocks[:, :16], blocks[:, 16:80]
    d, dmin = _f16(blocks[:, 80:82]), _f16(blocks[:, 82:84])
    dl = (d * (scales & 0xF).astype(np.float32)).reshape((n, 16, 1))
    ml = (dmin * (scales >> 4).astype(np.float32)).reshape((n, 16, 1))
    q = _bits(qs, n, 32, 2, 4).reshape((n, 16, 16)).astype(np.float32)
    return (dl * q - ml).reshape((n, QK_K))


def dequantize_q3_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    hmask, qs, packed = blocks[:, :32], blocks[:, 32:96], blocks[:, 96:108]
    d = _f16(blocks[:, 108:110])
    # 16 six-bit scales: low nibbles in bytes 0..7 (two per byte), top 2 bits in bytes 8..11
    low = (packed[:, :8].reshape((n, 1, 8)) >> np.array([0, 4], dtype=np.uint8).reshape((1, 2, 1))).reshape((n, 16))
    high = (packed[:, 8:].reshape((n, 1, 4)) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape((1, 4, 1))).reshape((n, 16))
    scales = (low & np.uint8(0x0F)) | ((high & np.uint8(0x03)) << np.uint8(4))
    scales = (scales.astype(np.int8) - np.int8(32)).astype(np.float32)
    dl = (d * scales).reshape((n, 16, 1))
    ql = _bits(qs, n, 32, 2, 4).reshape((n, 16, 16))
    qh = _bits(hmask, n, 32, 1, 8).reshape((n, 16, 16)) ^ np.uint8(1)  # a set mask bit means no offset
    q = (ql.astype(np.int8) - (qh << np.uint8(2)).astype(np.int8)).astype(np.float32)
    return (dl * q).reshape((n, QK_K))


def k_scale_min(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit scales and 8 six-bit mins packed in 12 bytes (Q4_K, Q5_K): uint8 ``[n, 8]`` each."""
    n = packed.shape[0]
    p = packed.reshape((n, 3, 4))
    d, m, md = p[:, 0, :], p[:, 1, :], p[:, 2, :]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    sc, mn = k_scale_min(blocks[:, 4:16])
    dl = (d * sc.astype(np.float32)).reshape((n, -1, 1))
    ml = (dmin * mn.astype(np.float32)).reshape((n, -1, 1))
    q = _nibbles(blocks[:, 16:], n, 32).reshape((n, -1, 32)).astype(np.float32)
    return (dl * q - ml).reshape((n, QK_K))


def dequantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    sc, mn = k_scale_min(blocks[:, 4:16])
    dl = (d * sc.astype(np.float32)).reshape((n, -1, 1))
    ml = (dmin * mn.astype(np.float32)).reshape((n, -1, 1))
    ql = _nibbles(blocks[:, 48:], n, 32).reshape((n, -1, 32))
    qh = _bits(blocks[:, 16:48], n, 32, 1, 8).reshape((n, -1, 32))
    q = (ql | (qh << np.uint8(4))).astype(np.float32)
    return (dl * q - ml).reshape((n, QK_K))


def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    ql, qh = blocks[:, :128], blocks[:, 128:192]
    scales = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)
    d = (_f16(blocks[:, 208:210]) * scales).reshape((n, 16, 1))
    low = _nibbles(ql, n, 64).reshape((n, -1, 32))
    high = _bits(qh, n, 32, 2, 4).reshape((n, -1, 32))
    q = (low | (high << np.uint8(4))).astype(np.int8) - np.int8(32)
    return (d * q.reshape((n, 16, -1)).astype(np.float32)).reshape((n, QK_K))


# -- quantisers: float32 [n, block_size] → uint8 [n, type_size] --------------------------------------
# The 32-weight types follow ggml's reference quantisers (quantize_row_*_ref), as gguf-py does;
# Q4_K follows quantize_row_q4_K_ref (make_qkx2_quants: a weighted search over 21 scales).

def _f16_bytes(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).astype(np.float16).reshape(-1, 1).view(np.uint8)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """uint8 [n, 32] values 0..15 → [n, 16]: weight j in the low nibble of byte j, j+16 in its high."""
    return (q[:, :16] | (q[:, 16:] << np.uint8(4))).astype(np.uint8)


def _high_bits(q: np.ndarray) -> np.ndarray:
    """Bit 4 of 32 values → 4 bytes, weight j at bit j (little-endian u32)."""
    return np.packbits((q >> np.uint8(4)) & np.uint8(1), axis=-1, bitorder="little").reshape(q.shape[0], 4)


def _round_away(x: np.ndarray) -> np.ndarray:
    """C's roundf: halves away from zero."""
    a = np.abs(x)
    return np.sign(x) * np.floor(a + np.float32(0.5))


def _signed_absmax(blocks: np.ndarray) -> np.ndarray:
    idx = np.abs(blocks).argmax(axis=-1)[:, None]
    return np.take_along_axis(blocks, idx, axis=-1)


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def quantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    d = (np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
    q = _round_away(blocks * _inverse(d)).astype(np.int8).view(np.uint8)
    return np.concatenate([_f16_bytes(d), q], axis=1)


def quantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    d = (_signed_absmax(blocks) / np.float32(-8)).astype(np.float32)
    q = np.trunc(blocks * _inverse(d) + np.float32(8.5)).clip(0, 15).astype(np.uint8)
    return np.concatenate([_f16_bytes(d), _pack_nibbles(q)], axis=1)


def quantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    lo, hi = blocks.min(axis=1, keepdims=True), blocks.max(axis=1, keepdims=True)
    d = ((hi - lo) / np.float32(15)).astype(np.float32)
    q = np.trunc((blocks - lo) * _inverse(d) + np.float32(0.5)).clip(0, 15).astype(np.uint8)
    return np.concatenate([_f16_bytes(d), _f16_bytes(lo), _pack_nibbles(q)], axis=1)


def quantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    d = (_signed_absmax(blocks) / np.float32(-16)).astype(np.float32)
    q = np.trunc(blocks * _inverse(d) + np.float32(16.5)).clip(0, 31).astype(np.uint8)
    return np.concatenate([_f16_bytes(d), _high_bits(q), _pack_nibbles(q & np.uint8(15))], axis=1)


def quantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    lo, hi = blocks.min(axis=1, keepdims=True), blocks.max(axis=1, keepdims=True)
    d = ((hi - lo) / np.float32(31)).astype(np.float32)
    q = np.trunc((blocks - lo) * _inverse(d) + np.float32(0.5)).clip(0, 31).astype(np.uint8)
    return np.concatenate([_f16_bytes(d), _f16_bytes(lo), _high_bits(q), _pack_nibbles(q & np.uint8(15))], axis=1)


def _nearest(x: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: round half to even, as integers."""
    return np.rint(x).astype(np.int32)


def _qkx2(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """ggml's make_qkx2_quants over groups (rows of x): (levels, scale, -min) per group. Sums run
    left to right (cumsum) as the C loops do, so near-ties between scales resolve the same way."""
    f = np.float32
    lo = np.minimum(x.min(axis=1), f(0))
    hi = x.max(axis=1)
    sum_w = w.cumsum(axis=1, dtype=f)[:, -1]
    sum_x = (w * x).cumsum(axis=1, dtype=f)[:, -1]
    span = (hi - lo).astype(f)
    flat = span == 0
    span_safe = np.where(flat, f(1), span)
    iscale = (f(nmax) / span_safe).astype(f)
    scale = (f(1) / iscale).astype(f)
    levels = np.clip(_nearest(iscale[:, None] * (x - lo[:, None])), 0, nmax)
    best = (w * np.square(scale[:, None] * levels + lo[:, None] - x)).cumsum(axis=1, dtype=f)[:, -1]
    best_min = lo.copy()  # ggml updates ``min`` in place: later steps search around the better one
    for step in range(nstep + 1):
        span_now = np.where(flat, f(1), hi - best_min).astype(f)
        iscale = ((f(rmin) + f(rdelta) * f(step) + f(nmax)) / span_now).astype(f)
        aux = np.clip(_nearest(iscale[:, None] * (x - best_min[:, None])), 0, nmax).astype(f)
        sum_l = (w * aux).cumsum(axis=1, dtype=f)[:, -1]
        sum_l2 = (w * aux * aux).cumsum(axis=1, dtype=f)[:, -1]
        sum_xl = (w * aux * x).cumsum(axis=1, dtype=f)[:, -1]
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        det = np.where(ok, det, f(1))
        this_scale = ((sum_w * sum_xl - sum_x * sum_l) / det).astype(f)
        this_min = ((sum_l2 * sum_x - sum_l * sum_xl) / det).astype(f)
        positive = this_min > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            this_scale = np.where(positive, sum_xl / np.where(sum_l2 == 0, f(1), sum_l2), this_scale).astype(f)
        this_min = np.where(positive, f(0), this_min).astype(f)
        err = (w * np.square(this_scale[:, None] * aux + this_min[:, None] - x)).cumsum(axis=1, dtype=f)[:, -1]
        better = ok & (err < best) & ~flat
        levels = np.where(better[:, None], aux.astype(np.int32), levels)
        best = np.where(better, err, best)
        scale = np.where(better, this_scale, scale)
        best_min = np.where(better, this_min, best_min)
    scale = np.where(flat, f(0), scale)
    levels = np.where(flat[:, None], 0, levels)
    return levels, scale.astype(f), (-best_min).astype(f)


def quantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    f = np.float32
    n = blocks.shape[0]
    x = blocks.reshape(n * 8, 32).astype(f)
    av = np.sqrt((x * x).cumsum(axis=1, dtype=f)[:, -1] / f(32)).astype(f)
    levels, scales, mins = _qkx2(x, (av[:, None] + np.abs(x)).astype(f), 15, -1.0, 0.1, 20)
    scales, mins, levels = scales.reshape(n, 8), mins.reshape(n, 8), levels.reshape(n, 8, 32)
    max_scale = np.maximum(scales.max(axis=1), f(0))
    max_min = np.maximum(mins.max(axis=1), f(0))
    inv_scale = np.where(max_scale > 0, f(63) / np.where(max_scale > 0, max_scale, f(1)), f(0)).astype(f)
    inv_min = np.where(max_min > 0, f(63) / np.where(max_min > 0, max_min, f(1)), f(0)).astype(f)
    ls = np.minimum(63, _nearest(inv_scale[:, None] * scales)).astype(np.uint8)
    lm = np.minimum(63, _nearest(inv_min[:, None] * mins)).astype(np.uint8)
    packed = np.zeros((n, 12), dtype=np.uint8)
    packed[:, 0:4] = ls[:, :4]
    packed[:, 4:8] = lm[:, :4]
    packed[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    packed[:, 0:4] |= (ls[:, 4:] >> 4) << 6
    packed[:, 4:8] |= (lm[:, 4:] >> 4) << 6
    d16 = (max_scale / f(63)).astype(np.float16)
    dmin16 = (max_min / f(63)).astype(np.float16)
    d = (d16.astype(f)[:, None] * ls.astype(f)).astype(f)
    dm = (dmin16.astype(f)[:, None] * lm.astype(f)).astype(f)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(_nearest((blocks.reshape(n, 8, 32) + dm[:, :, None]) / d[:, :, None]), 0, 15)
    levels = np.where((d == 0)[:, :, None], levels, requant).reshape(n, 256).astype(np.uint8)
    qs = (levels.reshape(n, 4, 2, 32)[:, :, 0, :] | (levels.reshape(n, 4, 2, 32)[:, :, 1, :] << np.uint8(4)))
    return np.concatenate([d16.reshape(n, 1).view(np.uint8), dmin16.reshape(n, 1).view(np.uint8), packed,
                           qs.reshape(n, 128).astype(np.uint8)], axis=1)


# -- the table -----------------------------------------------------------------------------------

@attrs.frozen
class GGMLType:
    """One GGML tensor type: its id in the file, layout, and how gllm holds it."""

    id: int
    name: str  # lower case, as gllm names storage types ("f16", "q4_k")
    block_size: int
    type_size: int
    dense: str | None = None  # the WeightMatrix dtype for dense types ("f32", "f16", "bf16")
    numpy: str | None = None  # numpy dtype of unblocked types (f32, f16, bf16 bits, ints)
    dequantize: Callable[[np.ndarray], np.ndarray] | None = None
    quantize: Callable[[np.ndarray], np.ndarray] | None = None  # float32 [n, block] → blocks

    @property
    def quant(self) -> QuantType | None:
        if self.dequantize is None:
            return None
        return _QUANT_TYPES[self.name]

    def nbytes(self, count: int) -> int:
        """Bytes that ``count`` weights take (count must be a multiple of the block size)."""
        return count // self.block_size * self.type_size


_TYPES = [
    GGMLType(0, "f32", 1, 4, dense="f32", numpy="<f4"),
    GGMLType(1, "f16", 1, 2, dense="f16", numpy="<f2"),
    GGMLType(2, "q4_0", 32, 18, dequantize=dequantize_q4_0, quantize=quantize_q4_0),
    GGMLType(3, "q4_1", 32, 20, dequantize=dequantize_q4_1, quantize=quantize_q4_1),
    GGMLType(6, "q5_0", 32, 22, dequantize=dequantize_q5_0, quantize=quantize_q5_0),
    GGMLType(7, "q5_1", 32, 24, dequantize=dequantize_q5_1, quantize=quantize_q5_1),
    GGMLType(8, "q8_0", 32, 34, dequantize=dequantize_q8_0, quantize=quantize_q8_0),
    GGMLType(9, "q8_1", 32, 40),
    GGMLType(10, "q2_k", 256, 84, dequantize=dequantize_q2_k),
    GGMLType(11, "q3_k", 256, 110, dequantize=dequantize_q3_k),
    GGMLType(12, "q4_k", 256, 144, dequantize=dequantize_q4_k, quantize=quantize_q4_k),
    GGMLType(13, "q5_k", 256, 176, dequantize=dequantize_q5_k),
    GGMLType(14, "q6_k", 256, 210, dequantize=dequantize_q6_k),
    GGMLType(15, "q8_k", 256, 292),
    GGMLType(16, "iq2_xxs", 256, 66),
    GGMLType(17, "iq2_xs", 256, 74),
    GGMLType(18, "iq3_xxs", 256, 98),
    GGMLType(19, "iq1_s", 256, 50),
    GGMLType(20, "iq4_nl", 32, 18),
    GGMLType(21, "iq3_s", 256, 110),
    GGMLType(22, "iq2_s", 256, 82),
    GGMLType(23, "iq4_xs", 256, 136),
    GGMLType(24, "i8", 1, 1, numpy="i1"),
    GGMLType(25, "i16", 1, 2, numpy="<i2"),
    GGMLType(26, "i32", 1, 4, numpy="<i4"),
    GGMLType(27, "i64", 1, 8, numpy="<i8"),
    GGMLType(28, "f64", 1, 8, numpy="<f8"),
    GGMLType(29, "iq1_m", 256, 56),
    GGMLType(30, "bf16", 1, 2, dense="bf16", numpy="<u2"),
    GGMLType(34, "tq1_0", 256, 54),
    GGMLType(35, "tq2_0", 256, 66),
    GGMLType(39, "mxfp4", 32, 17),
]

GGML_TYPES: dict[int, GGMLType] = {t.id: t for t in _TYPES}
GGML_TYPES_BY_NAME: dict[str, GGMLType] = {t.name: t for t in _TYPES}

_QUANT_TYPES: dict[str, QuantType] = {
    t.name: QuantType(name=t.name, block_size=t.block_size, type_size=t.type_size, dequantize=t.dequantize)
    for t in _TYPES if t.dequantize is not None
}

#: The block-quantized types gllm computes with, by name.
QUANT_TYPES: dict[str, QuantType] = dict(_QUANT_TYPES)

# The layouts above, checked against the struct byte counts of ggml-common.h.
assert GGML_TYPES_BY_NAME["q4_0"].type_size == 2 + 32 // 2
assert GGML_TYPES_BY_NAME["q4_1"].type_size == 2 * 2 + 32 // 2
assert GGML_TYPES_BY_NAME["q5_0"].type_size == 2 + 4 + 32 // 2
assert GGML_TYPES_BY_NAME["q5_1"].type_size == 2 * 2 + 4 + 32 // 2
assert GGML_TYPES_BY_NAME["q8_0"].type_size == 2 + 32
assert GGML_TYPES_BY_NAME["q2_k"].type_size == 2 * 2 + QK_K // 16 + QK_K // 4
assert GGML_TYPES_BY_NAME["q3_k"].type_size == 2 + QK_K // 4 + QK_K // 8 + 12
assert GGML_TYPES_BY_NAME["q4_k"].type_size == 2 * 2 + K_SCALE_SIZE + QK_K // 2
assert GGML_TYPES_BY_NAME["q5_k"].type_size == 2 * 2 + K_SCALE_SIZE + QK_K // 8 + QK_K // 2
assert GGML_TYPES_BY_NAME["q6_k"].type_size == 2 + QK_K // 16 + 3 * QK_K // 4


def quantize(values: np.ndarray, type_name: str) -> np.ndarray:
    """float32 rows (the last axis a whole number of blocks) → uint8 rows of blocks of one type."""
    t = GGML_TYPES_BY_NAME[type_name]
    if t.quantize is None:
        raise NotImplementedError(type_name)
    x = np.ascontiguousarray(values, dtype=np.float32)
    if x.shape[-1] % t.block_size:
        raise ValueError(f"rows of {x.shape[-1]} values are not whole {type_name} blocks of {t.block_size}")
    shape = x.shape[:-1] + (x.shape[-1] // t.block_size * t.type_size,)
    return t.quantize(x.reshape(-1, t.block_size)).reshape(shape)


def dequantize(data: np.ndarray, type_name: str) -> np.ndarray:
    """Blocks of any supported quantized type (uint8, last axis a whole number of blocks) → float32."""
    t = GGML_TYPES_BY_NAME[type_name]
    if t.dequantize is None:
        raise NotImplementedError(type_name)
    raw = np.ascontiguousarray(data, dtype=np.uint8)
    shape = raw.shape[:-1] + (raw.shape[-1] // t.type_size * t.block_size,)
    return t.dequantize(raw.reshape(-1, t.type_size)).reshape(shape)
