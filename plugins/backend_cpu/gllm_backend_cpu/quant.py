"""Linear layers over GGML block-quantized weights, with llama.cpp's numerics, in numba.

The weights stay in their GGUF blocks (memory-mapped, never expanded into a float32 copy of the
model). Each call quantizes the activations to int8 as llama.cpp's CPU backend does
(``ggml-cpu``: ``quantize_row_q8_0`` / ``q8_1`` with float16 scales for the 32-weight types,
``quantize_row_q8_K`` with a float32 scale and 16-wide sums for the K-quants) and computes

    q4_0, q5_0, q8_0 · q8_0   sum_b  d_w d_x  sum_j q_w q_x
    q4_1, q5_1       · q8_1   sum_b  d_w d_x  sum_j q_w q_x  +  m_w s_x      (s_x = f16(d_x sum q_x))
    q4_K, q5_K, q6_K · q8_K   sum_b  d_x (d_w sc_g sum_j q_w q_x  -  dmin_w mn_g bsum_g)

which are llama.cpp's numbers up to the order of the float32 additions (the integer sums are
exact). Up to ``FEW_TOKENS`` tokens (decoding and prompts) take the integer-SIMD kernels: q4_0,
q5_0, q8_0, q4_K and q6_K weights whose rows come in eights over a copy repacked 8 rows at a time
on first use (kernels/qpack.py: the 8 rows in the lanes of one vector, float work once per block
for all 8), the other kinds row by row (kernels/qdot.py); int8 activations, integer dot products,
each weight block unpacked once for up to 8 tokens, rows split between threads; more tokens dequantize a tile of rows at a time into scratch and multiply
it with the quantized-then-rescaled activations through BLAS, then add the ``s_x`` rounding
correction of the q8_1 types, so a prompt gets the same sums at GEMM speed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba
import numpy as np
from numba import prange

from .kernels import qdot as _qdot
from .kernels import qpack as _qpack
from .kernels.qpack import qdot8, qdot8k, qdot16
from .kernels.qdot import HOST_ISA, ISA_AVX2, ISA_GENERIC, ISA_VNNI, KIND_NAMES, biased, native_isa, qdot  # noqa: F401
from .kernels.scalar import ACT_NONE, activate, bits_from_f32, f16_to_f32, f32_from_bits
from .kernels.twin import twins

_OPTS = dict(parallel=True, cache=True, error_model="numpy", boundscheck=False,
             fastmath={"reassoc", "contract", "nsz", "arcp"})
# the products let go of the GIL: a server's threads (HTTP, streaming) then run beside them
# instead of stopping both cores while they hold it
_TWINS = {k: v for k, v in _OPTS.items() if k != "parallel"} | {"nogil": True}  # twins builds both
_INLINE = dict(inline="always", cache=True, error_model="numpy", boundscheck=False,
               fastmath={"reassoc", "contract", "nsz", "arcp"})
F32 = np.float32
f32 = numba.float32
U8 = np.uint8
U64 = numba.uint64
# up to this many tokens the integer kernels run, more go through BLAS tiles: measured on the real
# Qwen2.5-0.5B layer shapes (2 threads, a loaded Zen 4), the integer kernels were as fast or faster
# at every count tried (16 to 512 tokens: 0.015-0.045 ns per weight and token; the tiles 0.03-2)
FEW_TOKENS = 512
TILE_ELEMENTS = 1 << 20  # weights dequantized per BLAS tile (4 MB of float32 scratch)
ROWS_PER_TASK = 16  # rows per parallel task of the integer kernels
TOKENS_PER_PASS = 16  # tokens per pass over a task's rows: their int8 rows (16 x 896 bytes) stay in L1

# activation formats
Q8_0, Q8_1, Q8_K = 0, 1, 2
_NO_SUMS = np.zeros((1, 1), dtype=np.int16)  # the q8_K sums argument of the 32-weight kinds (unread)


# -- activations -----------------------------------------------------------------------------------

@numba.njit(**_INLINE)
def round_f16(x):
    """float32 → the nearest float16 (ties to even), returned as float32 (GGML_FP32_TO_FP16)."""
    b = numba.int64(bits_from_f32(f32(x))) & numba.int64(0xFFFFFFFF)
    sign = b & numba.int64(0x80000000)
    a = b & numba.int64(0x7FFFFFFF)
    if a >= numba.int64(0x7F800000):
        return f32(x)
    if a >= numba.int64(0x477FF000):
        return f32_from_bits(numba.int32(sign | numba.int64(0x7F800000)))
    if a >= numba.int64(0x38800000):
        a = (a + numba.int64(0xFFF) + ((a >> numba.int64(13)) & numba.int64(1))) & numba.int64(0x7FFFE000)
        return f32_from_bits(numba.int32(sign | a))
    v = np.rint(f32_from_bits(numba.int32(a)) * f32(16777216.0)) * f32(5.9604644775390625e-08)
    return -v if sign else v


def _quantize_q8_0(x, with_sum, qs, d, s):
    """Rows of x → int8 values ``qs`` and per-32 scales ``d`` (float16 values, as float32); with
    ``with_sum`` also ``s = f16(d * sum(q))`` (q8_1). ggml-cpu's AVX2 quantize_row_q8_0 / q8_1."""
    T, n = x.shape
    nb = n // 32
    for t in prange(T):
        for b in range(nb):
            amax = f32(0.0)
            for j in range(32):
                amax = max(amax, abs(x[t, b * 32 + j]))
            dd = amax / f32(127.0)
            inv = f32(127.0) / amax if amax != f32(0.0) else f32(0.0)
            total = f32(0.0)
            for j in range(32):
                q = np.rint(x[t, b * 32 + j] * inv)
                qs[t, b * 32 + j] = numba.int8(q)
                total += q
            d[t, b] = round_f16(dd)
            if with_sum:
                s[t, b] = round_f16(dd * total)


def _quantize_q8_k(x, qs, d, bsums):
    """Rows of x → int8 values ``qs``, a float32 scale per 256 and integer sums per 16
    (``bsums``, int16): ggml's quantize_row_q8_K_ref."""
    T, n = x.shape
    nb = n // 256
    for t in prange(T):
        for b in range(nb):
            base = b * 256
            amax = f32(0.0)
            vmax = f32(0.0)
            for j in range(256):
                ax = abs(x[t, base + j])
                if ax > amax:
                    amax = ax
                    vmax = x[t, base + j]
            if amax == f32(0.0):
                d[t, b] = 0.0
                for j in range(256):
                    qs[t, base + j] = 0
                for g in range(16):
                    bsums[t, b * 16 + g] = 0
                continue
            iscale = f32(-127.0) / vmax
            for g in range(16):
                acc = f32(0.0)
                for j in range(16):
                    q = min(f32(127.0), np.rint(iscale * x[t, base + g * 16 + j]))
                    qs[t, base + g * 16 + j] = numba.int8(q)
                    acc += q
                bsums[t, b * 16 + g] = numba.int16(acc)
            d[t, b] = f32(1.0) / iscale


def _offset_sums(qs, factor, out):
    """``out[b, t] = factor * sum(qs[t, 32b:32b + 32])``: the packed 32-weight kinds' offsets."""
    T, n = qs.shape
    for t in prange(T):
        for b in range(n // 32):
            acc = numba.int32(0)
            for j in range(32):
                acc += numba.int32(qs[t, b * 32 + j])
            out[b, t] = acc * factor


# a parallel region costs more than quantizing a few rows: those run the serial twin
quantize_q8_0 = twins(**_TWINS)(_quantize_q8_0)
quantize_q8_k = twins(**_TWINS)(_quantize_q8_k)
offset_sums = twins(**_TWINS)(_offset_sums)


def quantize_activations(x: np.ndarray, fmt: int):
    """``(qs, d, s, bsums)``: the 8-bit quantized rows of x in one format: int8 values, float32
    scales (and q8_1 sums), int16 sums of 16 (q8_K; else the scales again)."""
    T, n = x.shape
    qs = np.empty((T, n), dtype=np.int8)
    few = T <= 8
    if fmt == Q8_K:
        d = np.empty((T, n // 256), dtype=F32)
        bsums = np.empty((T, n // 16), dtype=np.int16)
        (quantize_q8_k.serial if few else quantize_q8_k)(x, qs, d, bsums)
        return qs, d, d, bsums
    d = np.empty((T, n // 32), dtype=F32)
    s = np.empty((T, n // 32), dtype=F32) if fmt == Q8_1 else d
    (quantize_q8_0.serial if few else quantize_q8_0)(x, fmt == Q8_1, qs, d, s)
    return qs, d, s, d


# -- block fields ----------------------------------------------------------------------------------

@numba.njit(**_INLINE)
def _f16_at(w, r, i):
    return f16_to_f32(numba.int32(w[r, i]) | (numba.int32(w[r, i + 1]) << numba.int32(8)))


_INV_POW2 = np.array([2.0 ** -j for j in range(16)], dtype=F32)


@numba.njit(**_INLINE)
def _qh_halves(w, r, o):
    """The 32 high bits of a Q5 block (u32 at w[r, o:o+4]) as two float32 halves (exact)."""
    lo = numba.int32(w[r, o]) | (numba.int32(w[r, o + U64(1)]) << numba.int32(8))
    hi = numba.int32(w[r, o + U64(2)]) | (numba.int32(w[r, o + U64(3)]) << numba.int32(8))
    return f32(lo), f32(hi)


@numba.njit(**_INLINE)
def _bit(half, inv):
    """Bit j of a 16-bit value held as float32, given inv = 2**-j: float arithmetic, so it vectorises."""
    t = np.floor(half * inv)
    return t - f32(2.0) * np.floor(t * f32(0.5))


@numba.njit(**_INLINE)
def _k_scale_min(w, r, o, g):
    """Scale and min of group g (0..7) from the 12 packed bytes at w[r, o:o+12] (Q4_K / Q5_K)."""
    if g < 4:
        sc = numba.int32(w[r, o + g]) & 63
        mn = numba.int32(w[r, o + g + 4]) & 63
    else:
        sc = (numba.int32(w[r, o + g + 4]) & 15) | ((numba.int32(w[r, o + g - 4]) >> 6) << 4)
        mn = (numba.int32(w[r, o + g + 4]) >> 4) | ((numba.int32(w[r, o + g]) >> 6) << 4)
    return sc, mn


@numba.njit(**_INLINE)
def _finish(value, t, r, bias, act, out):
    if bias.shape[0] == out.shape[1]:
        value += bias[r]
    out[t, r] = activate(value, act) if act != ACT_NONE else value


# -- integer kernels for a few tokens ----------------------------------------------------------------
# kernels/qdot.py holds the block dot products (LLVM IR, integer SIMD); here the rows are split
# between threads and each pass over a row serves up to 8 tokens (one unpack of its blocks).

# numba's cache knows this file's changes, not those of kernels/qdot.py, whose IR the kernels
# inline: a digest of qdot.py is a closure value of every kernel, so that it is part of the key
_QDOT_DIGEST = int.from_bytes(hashlib.sha256(Path(_qdot.__file__).read_bytes()
                                             + Path(_qpack.__file__).read_bytes()).digest()[:7], "little")


def _make_gemv(kind):
    """``act(x @ W.T + b)`` for the int8 activations of a few tokens, weights of one kind
    (qdot.KIND_NAMES; a constant here, as qdot needs), rows split between threads; its
    ``.serial`` twin runs them on the calling thread."""
    block = 256 if kind >= 5 else 32
    digest = _QDOT_DIGEST

    def gemv_q(w, isa, xq, xd, xs, xb, bias, act, out):
        if digest < 0:  # never: it only keys the cache
            return
        rows = w.shape[0]
        T, n = xq.shape
        nb = n // block
        tasks = (rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK
        finish = bias.shape[0] == rows or act != ACT_NONE
        for c in prange(tasks):
            r0 = c * ROWS_PER_TASK
            r1 = min(rows, r0 + ROWS_PER_TASK)
            for tb in range(0, T, TOKENS_PER_PASS):  # the task's rows stay in cache across the tokens
                te = min(T, tb + TOKENS_PER_PASS)
                for r in range(r0, r1):
                    t = tb
                    while t < te:
                        left = te - t
                        nt = 8 if left >= 8 else (4 if left >= 4 else (2 if left >= 2 else 1))
                        qdot(kind, isa, nt, w, r, xq, xd, xs, xb, t, nb, out)
                        t += nt
            if finish:
                for r in range(r0, r1):
                    for t in range(T):
                        _finish(out[t, r], t, r, bias, act, out)

    # twins gives the serial build a cache name of its own: sharing one, the two builds loaded
    # each other's code and every product ran on one thread (measured: 2 threads, cpu time ==
    # wall time)
    return twins(**_TWINS)(gemv_q)


def _make_gemv_packed(kind):
    """``act(x @ W.T + b)`` over weights repacked 8 rows at a time (kernels/qpack.py): groups of
    rows split between threads, each pass over a group serving up to 8 tokens. ``xc``: for
    q4_0 / q5_0 / q8_0 the offsets (``qdot8``), two groups at a time where there are two
    (``qdot16``: 16 rows, one 512-bit vector with AVX-512); for the K kinds (``qdot8k``, 256-weight
    super-blocks) the q8_K sums ``xb``, a group at a time."""
    digest = _QDOT_DIGEST
    k_kind = kind in _qpack.KINDS_K  # a closure constant: numba drops the other branch
    block = 256 if k_kind else 32
    step = 1 if k_kind else 2

    def gemv_packed(p, isa, xq, xd, xc, bias, act, out):
        if digest < 0:  # never: it only keys the cache
            return
        groups = p.shape[0]
        T, n = xq.shape
        nb = n // block
        tasks = (groups + GROUPS_PER_TASK - 1) // GROUPS_PER_TASK
        rows = out.shape[1]
        finish = bias.shape[0] == rows or act != ACT_NONE
        for c in prange(tasks):
            g0 = c * GROUPS_PER_TASK
            g1 = min(groups, g0 + GROUPS_PER_TASK)
            for tb in range(0, T, TOKENS_PER_PASS):
                te = min(T, tb + TOKENS_PER_PASS)
                for g in range(g0, g1, step):
                    t = tb
                    while t < te:
                        left = te - t
                        nt = 8 if left >= 8 else (4 if left >= 4 else (2 if left >= 2 else 1))
                        if k_kind:
                            qdot8k(kind, isa, nt, p, g, xq, xd, xc, t, nb, out)
                        elif g + 1 < g1:
                            qdot16(kind, isa, nt, p, g, xq, xd, xc, t, nb, out)
                        else:
                            qdot8(kind, isa, nt, p, g, xq, xd, xc, t, nb, out)
                        t += nt
            if finish:
                for r in range(g0 * 8, g1 * 8):
                    for t in range(T):
                        _finish(out[t, r], t, r, bias, act, out)

    return twins(**_TWINS)(gemv_packed)


PACKED_TOKENS = 1  # from this many tokens on the packed kernels run (where the weight type has them)
_NO_CORRECTION = np.zeros((1, 1), dtype=np.int32)  # xc of q8_0 off the VNNI path (unread)
GROUPS_PER_TASK = 2  # groups of 8 rows per parallel task of the packed kernels
GEMV_PACKED = {kind: _make_gemv_packed(kind) for kind in _qpack.KINDS + _qpack.KINDS_K}
GEMV = tuple(_make_gemv(kind) for kind in range(len(KIND_NAMES)))
# small products run on the calling thread: a parallel region costs a few microseconds when idle
# and, on a busy machine, waits for the slowest thread's time slice (measured: 0.3-0.5 ms for a
# 128 x 896 decode step under load, of 10-20 us work)
GEMV_SERIAL = tuple(gemv.serial for gemv in GEMV)
SERIAL_WORK = 1 << 18  # weights x tokens below which a product runs serially


# -- dequantized tiles for BLAS (prompts) ----------------------------------------------------------
# The float32 values are those of gllm_format_gguf.quants (and gguf-py): same operations, same order.

@numba.njit(**_OPTS)
def dequant_32(w, kind, r0, r1, out, mins):
    """Rows r0:r1 of 32-weight blocks → float32 ``out``; the q4_1 / q5_1 block mins into ``mins``."""
    nb = out.shape[1] // 32
    size = (18, 20, 22, 24, 34)[kind]
    m15, s4 = U8(15), U8(4)
    inv = _INV_POW2
    for i in prange(r1 - r0):
        r = r0 + i
        for b in range(nb):
            o = U64(b * size)
            k = b * 32
            d = _f16_at(w, r, o)
            if kind == 0:
                for j in range(16):
                    byte = w[r, o + U64(2 + j)]
                    out[i, k + j] = d * f32(numba.int8(U8(byte & m15)) - numba.int8(8))
                    out[i, k + 16 + j] = d * f32(numba.int8(U8(byte >> s4)) - numba.int8(8))
            elif kind == 1:
                m = _f16_at(w, r, o + U64(2))
                mins[i, b] = m
                for j in range(16):
                    byte = w[r, o + U64(4 + j)]
                    out[i, k + j] = d * f32(U8(byte & m15)) + m
                    out[i, k + 16 + j] = d * f32(U8(byte >> s4)) + m
            elif kind == 2 or kind == 3:
                q0 = o + U64(6) if kind == 2 else o + U64(8)
                h0 = o + U64(2) if kind == 2 else o + U64(4)
                m = f32(0.0)
                off = f32(16.0) if kind == 2 else f32(0.0)
                if kind == 3:
                    m = _f16_at(w, r, o + U64(2))
                    mins[i, b] = m
                lo16, hi16 = _qh_halves(w, r, h0)
                for j in range(16):
                    byte = w[r, q0 + U64(j)]
                    lo = f32(U8(byte & m15)) + f32(16.0) * _bit(lo16, inv[j]) - off  # exact small integers
                    hi = f32(U8(byte >> s4)) + f32(16.0) * _bit(hi16, inv[j]) - off
                    if kind == 2:
                        out[i, k + j] = d * lo
                        out[i, k + 16 + j] = d * hi
                    else:
                        out[i, k + j] = d * lo + m
                        out[i, k + 16 + j] = d * hi + m
            else:
                for j in range(32):
                    out[i, k + j] = f32(numba.int8(w[r, o + U64(2 + j)])) * d


@numba.njit(**_OPTS)
def dequant_k(w, kind, r0, r1, out):
    """Rows r0:r1 of 256-weight super-blocks → float32 ``out``."""
    nb = out.shape[1] // 256
    size = (144, 176, 210)[kind]
    m15, m3, s4, one = U8(15), U8(3), U8(4), U8(1)
    for i in prange(r1 - r0):
        r = r0 + i
        for b in range(nb):
            o = U64(b * size)
            k = b * 256
            if kind == 2:
                d = _f16_at(w, r, o + U64(208))
                for h in range(2):
                    for p in range(4):
                        lo_base = o + U64(64 * h + 32 * (p & 1))
                        sh = U8(4 * (p >> 1))
                        hs = U8(2 * p)
                        for j in range(32):
                            ql = U8(w[r, lo_base + U64(j)] >> sh) & m15
                            qh = U8(w[r, o + U64(128 + 32 * h + j)] >> hs) & m3
                            q = f32(numba.int8(ql | U8(qh << s4)) - numba.int8(32))
                            g = 8 * h + 2 * p + (j >> 4)
                            out[i, k + 128 * h + 32 * p + j] = (d * f32(numba.int8(w[r, o + U64(192 + g)]))) * q
            else:
                d = _f16_at(w, r, o)
                dmin = _f16_at(w, r, o + U64(2))
                qo = o + U64(16) if kind == 0 else o + U64(48)
                for g in range(8):
                    sc, mn = _k_scale_min(w, r, o + U64(4), g)
                    dl = d * f32(sc)
                    ml = dmin * f32(mn)
                    base = qo + U64(32 * (g >> 1))
                    sh = U8(4 * (g & 1))
                    gb = U8(g)
                    for j in range(32):
                        q = U8(w[r, base + U64(j)] >> sh) & m15
                        if kind == 1:
                            q = q | U8((U8(w[r, o + U64(16 + j)] >> gb) & one) << s4)
                        out[i, k + 32 * g + j] = dl * f32(q) - ml


@numba.njit(**_OPTS)
def rescale(qs, d, block, out):
    """``out = qs * d`` per block of ``block`` values: the quantized activations as float32."""
    T, n = qs.shape
    for t in prange(T):
        for j in range(n):
            out[t, j] = f32(qs[t, j]) * d[t, j // block]


@numba.njit(**_OPTS)
def sum_correction(qs, d, s, out):
    """Per token and 32-block: ``s - d * sum(q)`` (what q8_1's float16 sum adds to the exact one)."""
    T, n = qs.shape
    for t in prange(T):
        for b in range(n // 32):
            total = f32(0.0)
            for j in range(32):
                total += f32(qs[t, b * 32 + j])
            out[t, b] = s[t, b] - d[t, b] * total


@numba.njit(**_OPTS)
def epilogue(out, bias, act):
    T, rows = out.shape
    for t in prange(T):
        for r in range(rows):
            _finish(out[t, r], t, r, bias, act, out)


# -- repacking 8 rows at a time (kernels/qpack.py's layouts; qpack.pack / pack_k are the numpy
# references, these the fast twins a model's weights go through on first use) --------------------

@numba.njit(**_OPTS)
def pack_rows(data, kind, size, gsize, out):
    """GGML blocks of ``size`` bytes → qpack's 8-row groups of ``gsize`` bytes per block, for q4_0,
    q5_0, q8_0 (32-weight blocks) and q4_K, q6_K."""
    groups = out.shape[0]
    nb = data.shape[1] // size
    for G in prange(groups):
        for i in range(out.shape[1]):
            out[G, i] = 0
        for b in range(nb):
            o = b * gsize
            for r in range(8):
                row = 8 * G + r
                s = b * size
                if kind < 5:
                    out[G, o + 2 * r] = data[row, s]
                    out[G, o + 2 * r + 1] = data[row, s + 1]
                    for i in range(32):
                        m = 4 * r + (i & 3)
                        j = i >> 2
                        if kind == 4:
                            out[G, o + 16 + 32 * j + m] = data[row, s + 2 + i]
                            continue
                        qs = numba.int64(data[row, s + size - 16 + (i & 15)])
                        q = (qs & 15) if i < 16 else (qs >> 4)
                        if kind == 2:
                            bit = (numba.int64(data[row, s + 2 + (i >> 3)]) >> (i & 7)) & 1  # no branch
                            out[G, o + 16 + m] |= U8(bit << j)
                        out[G, o + (16 if kind == 0 else 48) + 32 * (j & 3) + m] |= U8((q & 15) << (4 if j >= 4 else 0))
                elif kind == 5:
                    for k in range(4):
                        out[G, o + 2 * r + k // 2 * 16 + (k & 1)] = data[row, s + k]  # d, then dmin
                    for grp in range(8):
                        sc, mn = _k_scale_min(data, row, U64(s + 4), grp)
                        out[G, o + 32 + 8 * grp + r] = U8(sc)
                        out[G, o + 96 + 32 * (grp >> 1) + 4 * r + 2 * (grp & 1)] = U8(mn)
                        for w in range(32):
                            q = (numba.int64(data[row, s + 16 + 32 * (grp >> 1) + w]) >> (4 * (grp & 1))) & 15
                            j = w >> 2
                            out[G, o + 224 + 128 * grp + 32 * (j & 3) + 4 * r + (w & 3)] |= U8(q << (4 if j >= 4 else 0))
                else:
                    out[G, o + 2 * r] = data[row, s + 208]
                    out[G, o + 2 * r + 1] = data[row, s + 209]
                    for sub in range(16):
                        out[G, o + 16 + 8 * sub + r] = data[row, s + 192 + sub]
                    for h in range(2):
                        for p in range(4):
                            grp = 4 * h + p
                            for w in range(32):
                                lo = (numba.int64(data[row, s + 64 * h + 32 * (p & 1) + w]) >> (4 * (p >> 1))) & 15
                                hi = (numba.int64(data[row, s + 128 + 32 * h + w]) >> (2 * p)) & 3
                                j = w >> 2
                                m = 4 * r + (w & 3)
                                out[G, o + 144 + 128 * grp + 32 * (j & 3) + m] |= U8(lo << (4 if j >= 4 else 0))
                                out[G, o + 1168 + 64 * grp + 32 * (j >> 2) + m] |= U8(hi << (2 * (j & 3)))


def packed_copy(kind: int, data: np.ndarray) -> np.ndarray:
    """``qpack.pack`` / ``pack_k`` of ``data`` (rows a multiple of 8), made by ``pack_rows``."""
    k_kind = kind in _qpack.KINDS_K
    size = (_qpack.ORIGINAL_SIZE_K if k_kind else _qpack.ORIGINAL_SIZE)[kind]
    gsize = (_qpack.GROUP_SIZE_K if k_kind else _qpack.GROUP_SIZE)[kind]
    out = np.empty((data.shape[0] // _qpack.ROWS, data.shape[1] // size * gsize), dtype=U8)
    pack_rows(np.ascontiguousarray(data), kind, size, gsize, out)
    return out


# -- the table -------------------------------------------------------------------------------------

# GGML type name → (kernel family, kind, activation format)
KERNELS = {
    "q4_0": ("32", 0, Q8_0), "q4_1": ("32", 1, Q8_1), "q5_0": ("32", 2, Q8_0), "q5_1": ("32", 3, Q8_1),
    "q8_0": ("32", 4, Q8_0), "q4_k": ("k", 0, Q8_K), "q5_k": ("k", 1, Q8_K), "q6_k": ("k", 2, Q8_K),
}


class QuantLinear:
    """``act(x @ W.T + b)`` for one block-quantized weight, resolved once at prepare time."""

    __slots__ = ("weight", "data", "family", "kind", "fmt", "qkind", "isa", "few_tokens", "serial_work", "packed",
                 "packed_tokens")

    def __init__(self, weight, isa: int | None = None, few_tokens: int = FEW_TOKENS, serial_work: int = SERIAL_WORK,
                 packed_tokens: int = PACKED_TOKENS):
        """``isa`` forces an instruction path of kernels/qdot.py (ISA_GENERIC, ISA_AVX2, ISA_VNNI;
        capped at what the CPU has); default: the best one (or ``GLLM_CPU_QUANT_ISA``).
        ``few_tokens``: up to this many tokens the integer kernels run, more go to BLAS tiles;
        below ``serial_work`` weights x tokens they run on the calling thread alone; from
        ``packed_tokens`` tokens on, q4_0 / q5_0 / q8_0 / q4_K / q6_K weights with rows in eights take the
        kernels of kernels/qpack.py over a repacked copy (made on first use)."""
        self.weight = weight
        self.family, self.kind, self.fmt = KERNELS[weight.quant.name]
        self.qkind = KIND_NAMES.index(weight.quant.name)
        self.isa = native_isa() if isa is None else min(int(isa), HOST_ISA)
        self.few_tokens = few_tokens
        self.serial_work = serial_work
        self.data = np.ascontiguousarray(weight.data)  # a view of the file when it already is
        packable = self.qkind in _qpack.KINDS or self.qkind in _qpack.KINDS_K
        self.packed_tokens = packed_tokens if packable and weight.rows % _qpack.ROWS == 0 \
            else few_tokens + 1
        self.packed = None

    def __call__(self, x: np.ndarray, bias, act: int, empty_bias: np.ndarray) -> np.ndarray:
        T = x.shape[0]
        qs, d, s, sums = quantize_activations(x, self.fmt)
        rows = self.weight.rows
        out = np.empty((T, rows), dtype=F32)
        b = empty_bias if bias is None else bias
        if self.packed_tokens <= T <= self.few_tokens:
            return self._packed(qs, d, sums, b, act, out)
        if T <= self.few_tokens:
            if biased(self.qkind, self.isa):
                np.bitwise_xor(qs.view(U8), U8(0x80), out=qs.view(U8))
            dt = np.ascontiguousarray(d.T)  # (blocks, T): the kernels load a block's scales as a vector
            st = np.ascontiguousarray(s.T) if self.fmt == Q8_1 else dt
            serial = rows * self.weight.cols * T < self.serial_work
            (GEMV_SERIAL if serial else GEMV)[self.qkind](self.data, self.isa, qs, dt, st, sums if self.family == "k" else _NO_SUMS,
                   b, act, out)
            return out
        xr = np.empty(qs.shape, dtype=F32)
        rescale(qs, d, 32 if self.family == "32" else 256, xr)
        with_mins = self.fmt == Q8_1
        corr = None
        if with_mins:
            corr = np.empty_like(d)
            sum_correction(qs, d, s, corr)
        cols = self.weight.cols
        step = max(16, TILE_ELEMENTS // max(cols, 1))
        tile = np.empty((min(step, rows), cols), dtype=F32)
        mins = np.empty((min(step, rows), cols // 32), dtype=F32) if with_mins else np.empty((0, 0), dtype=F32)
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            if self.family == "32":
                dequant_32(self.data, self.kind, r0, r1, tile, mins)
            else:
                dequant_k(self.data, self.kind, r0, r1, tile)
            np.matmul(xr, tile[:r1 - r0].T, out=out[:, r0:r1])
            if with_mins:
                out[:, r0:r1] += corr @ mins[:r1 - r0].T
        if bias is not None or act != ACT_NONE:
            epilogue(out, b, act)
        return out

    def _packed(self, qs, d, sums, bias, act, out):
        if self.packed is None:  # the file's blocks, eight rows interleaved
            self.packed = packed_copy(self.qkind, self.data)
        T, n = qs.shape
        dt = np.ascontiguousarray(d.T)
        gemv = GEMV_PACKED[self.qkind]
        serial = self.weight.rows * self.weight.cols * T < self.serial_work
        if self.family == "k":
            xb = sums if self.qkind == 7 else sums[:, 0::2] + sums[:, 1::2]  # q4_K: sums of 32
            (gemv.serial if serial else gemv)(self.packed, self.isa, qs, dt, xb, bias, act, out)
            return out
        off = _qpack.offset(self.qkind, self.isa)
        if off:
            xc = np.empty((n // 32, T), dtype=np.int32)
            (offset_sums.serial if T <= 8 else offset_sums)(qs, np.int32(-off), xc)
        else:
            xc = _NO_CORRECTION
        (gemv.serial if serial else gemv)(self.packed, self.isa, qs, dt, xc, bias, act, out)
        return out


def quant_linear_for(weight):
    """The kernel for a block-quantized WeightMatrix, or None if its type has none here (the
    backend then dequantizes tiles for BLAS without quantizing the activations)."""
    if weight.quant is None or weight.quant.name not in KERNELS:
        return None
    return QuantLinear(weight)
