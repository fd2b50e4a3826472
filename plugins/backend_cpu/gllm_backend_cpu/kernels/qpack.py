"""Integer dot products over GGML weights repacked eight rows at a time, written in LLVM IR.

kernels/qdot.py reduces each 32-weight block of one row to one number per token: a vector of
partial sums, then a conversion, a scale and an FMA per block and token, about four vector
operations for every 32 products. With several tokens that float work binds, not the integer
products. Here the blocks of eight rows are interleaved (llama.cpp's repacked ``q8_0 8x8`` idea):
one 32-byte vector holds four consecutive weights of each of eight rows, so one ``vpdpbusd``
(AVX-512 VNNI / AVX-VNNI) with a broadcast of four activation bytes adds four products to each
row's lane, eight of them make the block's dot product of eight rows at once, and the float work
(convert, scale, FMA) is done once per block and token for the eight rows: 11 operations for 256
products instead of about 32. Without VNNI the same layout runs on ``vpmaddubsw`` + ``vpmaddwd``
(AVX2) or plain widening arithmetic (generic).

Layouts (per group of 8 rows and block of 32 weights, the same bytes as the 8 original blocks):

    q4_0   8 f16 scales (16 B) | 4 x 32 B nibbles                       = 144 = 8 x 18
    q5_0   8 f16 scales (16 B) | 32 B high bits | 4 x 32 B nibbles       = 176 = 8 x 22
    q8_0   8 f16 scales (16 B) | 8 x 32 B signed bytes                  = 272 = 8 x 34

Vector j (j < 8) covers weights 4j..4j+3 of the block: byte m is weight 4j + m % 4 of row m // 4.
Nibble vector a holds vector a in its low and vector a + 4 in its high nibbles; byte m of the high
bits holds, in bit j, the fifth bit of vector j's byte m. The q4_0 / q5_0 values are stored
unsigned (0..15 / 0..31); their offsets (8 / 16) come off as ``offset * sum x`` per block and
token, which the caller passes as ``xc`` (int32, ``-offset * sum of the block's int8 x``; for
q8_0 on the VNNI path, which reads the signed weights as ``w + 128``, ``-128 * sum x``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .qdot import HOST_ISA, ISA_VNNI, V8F32, V8I32, V16I16, V32I8, _c64, _codegen_args, _emit_paths, \
    _splat_const
from .scalar import _HARDWARE_HALF, half_to_float, target_has

ROWS = 8  # rows per group
KINDS = (0, 2, 4)  # the qdot kinds that have a packed form: q4_0, q5_0, q8_0
GROUP_SIZE = {0: 144, 2: 176, 4: 272}  # bytes per group of 8 rows and one block
ORIGINAL_SIZE = {0: 18, 2: 22, 4: 34}


def offset(kind: int, isa: int) -> int:
    """What the kernel's integer sums exceed the true ones by, per unit of the block's sum of x."""
    if kind == 0:
        return 8
    if kind == 2:
        return 16
    return 128 if min(isa, HOST_ISA) >= ISA_VNNI else 0


def pack(kind: int, data: np.ndarray) -> np.ndarray:
    """GGML blocks ``data`` (rows x bytes, rows a multiple of 8) → the packed groups
    (rows / 8 x blocks * GROUP_SIZE[kind]) described in the module docstring."""
    rows, nbytes = data.shape
    size = ORIGINAL_SIZE[kind]
    nb = nbytes // size
    g = rows // ROWS
    blocks = np.asarray(data).reshape(g, ROWS, nb, size)
    scales = blocks[..., 0:2].transpose(0, 2, 1, 3).reshape(g, nb, 2 * ROWS)
    if kind == 4:
        q = blocks[..., 2:34]
    else:
        qs = blocks[..., size - 16:size]
        q = np.concatenate([qs & 15, qs >> 4], axis=-1)  # weights 0..15, then 16..31
        if kind == 2:
            qh = blocks[..., 2:6].copy().view("<u4")[..., 0]
            bits = ((qh[..., None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
            q = q | (bits << 4)
    # (g, row, nb, j, m4) → (g, nb, j, row, m4): vector j holds 4 weights of each of the 8 rows
    vecs = q.reshape(g, ROWS, nb, 8, 4).transpose(0, 2, 3, 1, 4).reshape(g, nb, 8, 32)
    parts = [scales]
    if kind == 4:
        parts.append(vecs.reshape(g, nb, 256))
    else:
        if kind == 2:
            high = np.zeros((g, nb, 32), dtype=np.uint8)
            for j in range(8):
                high |= ((vecs[:, :, j] >> 4) & 1) << j
            parts.append(high)
        low = vecs & 15
        parts.append((low[:, :, :4] | (low[:, :, 4:] << 4)).reshape(g, nb, 128))
    out = np.concatenate(parts, axis=-1)
    assert out.shape[-1] == GROUP_SIZE[kind]
    return np.ascontiguousarray(out.reshape(g, nb * GROUP_SIZE[kind]))


def _pair_dots(e, xs, vs, start):
    """Without VNNI: sum of the unsigned weight bytes ``vs`` (at most 63) times the int8 activation
    vectors ``xs`` (|x| <= 127) in 8 int32 lanes, two vpmaddubsw results added as int16 before each
    vpmaddwd (|sum| <= 4 x 63 x 127 < 2^15: no saturation)."""
    b = e.b
    parts = []
    for j in range(0, len(vs), 2):
        s16 = b.add(e.maddubs(vs[j], xs[j]), e.maddubs(vs[j + 1], xs[j + 1]))
        parts.append(e.madd(s16, _splat_const(V16I16, 1)))
    total = parts[0] if start is None else b.add(start, parts[0])
    rest = parts[1:]
    while len(rest) > 1:  # a tree: the sums do not wait on each other
        rest = [b.add(rest[i], rest[i + 1]) if i + 1 < len(rest) else rest[i] for i in range(0, len(rest), 2)]
    return b.add(total, rest[0]) if rest else total


# The packed weights stream from memory once per step (a model is far larger than the caches).
# With several tokens the products are slow enough that the hardware prefetchers fall behind: each
# block asks for the lines PREFETCH_BYTES further on (into L2), past the next groups' rows, so
# memory and arithmetic overlap. Measured (8 decoding sequences, Qwen2.5-0.5B, 2 threads): the
# 32-weight products 0.49-0.53 -> 0.35 s per 20 steps; 0.7-2 KB ahead into L1 changed nothing.
PREFETCH_BYTES = 16384


def _prefetch(e, ptr, ahead: int, size: int) -> None:
    """``prefetcht1`` of the ``size`` bytes ``ahead`` bytes past ptr (never faults)."""
    b = e.b
    i8p = ir.IntType(8).as_pointer()
    fn = cgutils.get_or_insert_function(b.module, ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32),
                                                                                  ir.IntType(32)]), "llvm.prefetch.p0i8")
    for off in range(0, size, 64):
        b.call(fn, [e.ptr(ptr, _c64(ahead + off)), ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 2),
                    ir.Constant(ir.IntType(32), 1)])


def _halves(e, bits, vf):
    """The float16 bits ``bits`` (a vector of i16) as the float vector type vf."""
    b = e.b
    if _HARDWARE_HALF:
        return b.fpext(b.bitcast(bits, ir.VectorType(ir.HalfType(), vf.count)), vf)
    v = ir.Constant(vf, ir.Undefined)
    for i in range(vf.count):
        lane = ir.Constant(ir.IntType(32), i)
        v = b.insert_element(v, half_to_float(b, b.extract_element(bits, lane)), lane)
    return v


def _block_loop(e, P, prefix, t_index, vf, body, inner=()):
    """The loop over a group's ``P["nb"]`` blocks with one float accumulator (type vf) per token,
    then the stores of the sums to ``out[t_index[t], 8g:]``. ``body(blk, accs, *inner_blocks)``
    emits one block (it may end in another basic block: the basic blocks named ``inner`` come
    between the loop's and the exit's) and returns the new accumulators."""
    b = e.b
    nt = len(t_index)
    zero = ir.Constant(vf, None)
    entry = b.block
    loop = b.append_basic_block(f"{prefix}_loop")
    blocks = [b.append_basic_block(f"{prefix}_{name}") for name in inner]
    done = b.append_basic_block(f"{prefix}_done")
    b.cbranch(b.icmp_signed(">", P["nb"], _c64(0)), loop, done)
    b.position_at_end(loop)
    blk = b.phi(ir.IntType(64))
    accs = [b.phi(vf) for _ in range(nt)]
    new = body(blk, accs, *blocks)
    nxt = b.add(blk, _c64(1))
    end = b.block
    b.cbranch(b.icmp_signed("<", nxt, P["nb"]), loop, done)
    blk.add_incoming(_c64(0), entry)
    blk.add_incoming(nxt, end)
    for t in range(nt):
        accs[t].add_incoming(zero, entry)
        accs[t].add_incoming(new[t], end)
    b.position_at_end(done)
    finals = []
    for t in range(nt):  # every phi first
        ph = b.phi(vf)
        ph.add_incoming(zero, entry)
        ph.add_incoming(new[t], end)
        finals.append(ph)
    col = b.mul(P["g"], _c64(4 * ROWS))
    for t in range(nt):
        addr = b.add(b.mul(t_index[t], P["out_s0"]), col)
        b.store(finals[t], b.bitcast(e.ptr(P["out"], addr), vf.as_pointer()), align=4)


# AVX-512 VNNI with 512-bit byte operations: two groups (16 rows) per vector, so that one
# broadcast of four activation bytes and one instruction serve 64 products
WIDE = target_has("avx512vnni") and target_has("avx512bw") and target_has("avx512f")


def _emit_group(e, kind, nt, P, wide=False):
    """The loop over the blocks of one group of 8 rows for nt tokens, and the stores. ``wide``
    (the VNNI path only): groups g and g + 1 (rows 8g..8g+15) on 512-bit vectors, each vector the
    concatenation of the two groups' 32-byte vectors."""
    b = e.b
    gsize = GROUP_SIZE[kind]
    lanes = 16 if wide else 8
    i32t = ir.IntType(32)
    vi8, vi32 = ir.VectorType(ir.IntType(8), 4 * lanes), ir.VectorType(i32t, lanes)
    vf = ir.VectorType(ir.FloatType(), lanes)
    bases = [e.ptr(P["p"], b.mul(P["g"], P["p_s0"]))]
    if wide:
        bases.append(e.ptr(bases[0], P["p_s0"]))
    t_index = [b.add(P["t0"], _c64(t)) for t in range(nt)]
    x_rows = [e.ptr(P["xq"], b.mul(ti, P["xq_s0"])) for ti in t_index]
    vnni = e.isa >= ISA_VNNI
    # independent integer sums per token: the eight vpdpbusd of a block would otherwise wait on
    # each other (latency 4-5 cycles each)
    chains = 4 if nt <= 2 else 2

    def load(gbs, off, ty):
        """The vector of type ty at byte off of each group's block, concatenated."""
        parts = [e.load(gb, _c64(off), ty) for gb in gbs]
        return parts[0] if len(parts) == 1 else e.shuffle(parts[0], parts[1], range(2 * ty.count))

    def weights(gbs):
        """The block's 8 weight vectors (as the dot products read them)."""
        if kind == 4:
            vs = [load(gbs, 16 + 32 * j, V32I8) for j in range(8)]
            if vnni:  # w + 128, unsigned: vpdpbusd multiplies unsigned by signed bytes
                vs = [b.xor(v, _splat_const(vi8, -128)) for v in vs]
            return vs
        lo = 16 if kind == 0 else 48
        nib = [load(gbs, lo + 32 * a, V32I8) for a in range(4)]
        vs = [e.and_(n, 15) for n in nib] + [e.and_(e.lshr(n, 4), 15) for n in nib]
        if kind == 2:
            high = load(gbs, 16, V32I8)
            for j in range(8):
                bit = e.and_(high, (1 << j) - (256 if j == 7 else 0))
                if j < 4:
                    bit = e.shl(bit, 4 - j)
                elif j > 4:
                    bit = e.lshr(bit, j - 4)
                vs[j] = b.or_(vs[j], bit)
        return vs

    def dot_us(u, s, acc):
        if not wide:
            return e.dot_us(u, s, acc)
        start = ir.Constant(vi32, None) if acc is None else acc
        return e.call("llvm.x86.avx512.vpdpbusd.512", vi32, start, b.bitcast(u, vi32), b.bitcast(s, vi32))

    def dots(t, vs, xoff, start):
        """Sum over the block of the rows' weights times token t's activations: int32 lanes."""
        accs = [start] + [None] * (chains - 1)
        if not vnni and kind != 4:
            return _pair_dots(e, [b.bitcast(e.splat(e.load(x_rows[t], b.add(xoff, _c64(4 * j)), i32t), V8I32), V32I8)
                                  for j in range(8)], vs, start)
        for j in range(8):
            x4 = e.load(x_rows[t], b.add(xoff, _c64(4 * j)), i32t)
            xv = b.bitcast(e.splat(x4, vi32), vi8)
            c = j % chains
            if kind == 4 and not vnni:  # signed weights: |w| x sign(x, w)
                prod = e.madd(e.maddubs(e.sign(vs[j], vs[j]), e.sign(xv, vs[j])), _splat_const(V16I16, 1))
                accs[c] = prod if accs[c] is None else b.add(accs[c], prod)
            else:
                accs[c] = dot_us(vs[j], xv, accs[c])
        total = accs[0]
        for a in accs[1:]:
            total = b.add(total, a)
        return total

    def body(blk, accs):
        boff = b.mul(blk, _c64(gsize))
        gbs = [e.ptr(base, boff) for base in bases]
        for gb in gbs:
            _prefetch(e, gb, PREFETCH_BYTES, gsize)
        dw = _halves(e, load(gbs, 0, ir.VectorType(ir.IntType(16), 8)), vf)
        vs = weights(gbs)
        xoff = b.mul(blk, _c64(32))
        d_col = e.ptr(P["xd"], b.mul(blk, P["xd_s0"]))
        c_col = e.ptr(P["xc"], b.mul(blk, P["xc_s0"]))
        new = []
        for t in range(nt):
            start = e.splat(e.load(c_col, b.mul(t_index[t], _c64(4)), i32t), vi32) if P["corr"] else None
            total = dots(t, vs, xoff, start)
            dx = e.load(d_col, b.mul(t_index[t], _c64(4)), ir.FloatType())
            new.append(e.fma(b.fmul(dw, e.splat(dx, vf)), b.sitofp(total, vf), accs[t]))
        return new

    _block_loop(e, P, "qpack16" if wide else "qpack", t_index, vf, body)


def _packed_intrinsic(args, kinds, prefix, emit, sums="xc"):
    """Typing and codegen of a packed intrinsic (arguments ``kind, isa, nt, p, g, xq, xd, <sums>,
    t0, nb, out``; kind a literal of kinds, the scalars integers): a switch over the instruction
    paths and token chunks, each case filled by ``emit(e, kind, nt, P)``."""
    kind, isa, nt, p, g, xq, xd, xc, t0, nb, out = args
    if not (isinstance(kind, types.IntegerLiteral) and kind.literal_value in kinds
            and all(isinstance(t, types.Integer) for t in (isa, nt, g, t0, nb))):
        return None
    kind_value = kind.literal_value
    arrays = (("p", 3), ("xq", 5), ("xd", 6), (sums, 7), ("out", 10))

    def codegen(context, builder, signature, cargs):
        P = _codegen_args(context, builder, signature, cargs, arrays,
                          (("g", 4), ("t0", 8), ("nb", 9), ("isa", 1), ("nt", 2)))
        _emit_paths(builder, P, prefix, lambda e, n: emit(e, kind_value, n, P))
        return context.get_dummy_value()

    return types.void(*args), codegen


def _emit_one(e, kind, nt, P):
    """qdot8's case: one group."""
    _emit_group(e, kind, nt, dict(P, corr=offset(kind, e.isa) != 0))


def _emit_two(e, kind, nt, P):
    """qdot16's case: groups g and g + 1 on 512-bit vectors, or one after the other."""
    Pc = dict(P, corr=offset(kind, e.isa) != 0)
    if e.isa >= ISA_VNNI and WIDE:
        _emit_group(e, kind, nt, Pc, wide=True)
    else:
        _emit_group(e, kind, nt, Pc)
        _emit_group(e, kind, nt, dict(Pc, g=e.b.add(P["g"], _c64(1))))


@intrinsic
def qdot16(typingctx, kind, isa, nt, p, g, xq, xd, xc, t0, nb, out):
    """``qdot8`` for groups g and g + 1 together (rows 8g..8g+15): on 512-bit vectors where the
    VNNI path runs on a CPU with AVX-512 VNNI and BW, else the two groups one after the other."""
    return _packed_intrinsic((kind, isa, nt, p, g, xq, xd, xc, t0, nb, out), KINDS, "qpack16", _emit_two)


@intrinsic
def qdot8(typingctx, kind, isa, nt, p, g, xq, xd, xc, t0, nb, out):
    """``qdot8(kind, isa, nt, p, g, xq, xd, xc, t0, nb, out)``: ``out[t0 + i, 8g:8g + 8]`` for
    ``i < nt`` (1, 2, 4 or 8) = rows 8g..8g+7 of the packed weights ``p`` (``pack``) dotted with
    the int8 activation rows ``t0 + i`` (scales ``xd`` and offsets ``xc`` as (blocks, T)) over
    ``nb`` blocks. ``kind`` must be a literal; ``isa`` picks the path at run time (paths the CPU
    lacks fall back to one it has); any other ``nt`` writes nothing."""
    return _packed_intrinsic((kind, isa, nt, p, g, xq, xd, xc, t0, nb, out), KINDS, "qpack", _emit_one)


# -- K quants: super-blocks of 256 weights -----------------------------------------------------------
# A super-block is 8 groups of 32 weights; a group is 8 vectors laid out as above (vector j: weights
# 4j..4j+3 of the group, for each of the 8 rows). Per group of 8 rows and super-block:
#
#   q4_K  8 f16 d | 8 f16 dmin | 8 x 8 u8 scales (group-major) | 4 x 8 x 2 i16 mins (pairs of
#         groups, row-major within a pair) | 8 x 4 x 32 B nibbles                     = 1248 B
#   q6_K  8 f16 d | 16 x 8 i8 scales (16-weight sub-groups) | 8 x 4 x 32 B nibbles |
#         8 x 2 x 32 B high bit pairs (byte m, bits 2k..2k+1: vector 4a + k)       = 1680 B
#
# q4_K's mins term (dmin * sum_g min_g * sum x over group g) takes one vpdpwssd per pair of groups
# with the activations' 32-sums (``xb``: int16, T x n / 32); q6_K's -32 offset starts each
# sub-group's sum at -32 times its 16-sum (``xb``: q8_K's int16 sums, T x n / 16).

KINDS_K = (5, 7)  # q4_K, q6_K
GROUP_SIZE_K = {5: 1248, 7: 1680}
ORIGINAL_SIZE_K = {5: 144, 7: 210}


def _k4_scales_mins(s):
    """The 6-bit scales and mins of q4_K / q5_K super-blocks from their 12 bytes (..., 12)."""
    s = s.astype(np.uint8)
    sc = np.empty(s.shape[:-1] + (8,), dtype=np.uint8)
    mn = np.empty_like(sc)
    sc[..., :4] = s[..., 0:4] & 63
    mn[..., :4] = s[..., 4:8] & 63
    sc[..., 4:] = (s[..., 8:12] & 15) | ((s[..., 0:4] >> 6) << 4)
    mn[..., 4:] = (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)
    return sc, mn


def _vectors(q, g, nb):
    """Weights (g, row, nb, 256) in super-block order → (g, nb, 8 groups, 8 vectors, 32 bytes)."""
    return q.reshape(g, ROWS, nb, 8, 8, 4).transpose(0, 2, 3, 4, 1, 5).reshape(g, nb, 8, 8, 32)


def pack_k(kind: int, data: np.ndarray) -> np.ndarray:
    """GGML q4_K / q6_K super-blocks (rows x bytes, rows a multiple of 8) → the packed groups."""
    rows, nbytes = data.shape
    nb = nbytes // ORIGINAL_SIZE_K[kind]
    g = rows // ROWS
    blocks = np.asarray(data).reshape(g, ROWS, nb, ORIGINAL_SIZE_K[kind])

    def per_row(a):  # (g, row, nb, k...) → (g, nb, k..., row) flattened to bytes
        a = np.moveaxis(a, 1, -1)
        return np.ascontiguousarray(a).view(np.uint8).reshape(g, nb, -1)

    if kind == 5:
        d = per_row(blocks[..., 0:2].copy().view(np.uint16)[..., 0])
        dmin = per_row(blocks[..., 2:4].copy().view(np.uint16)[..., 0])
        sc, mn = _k4_scales_mins(blocks[..., 4:16])
        mins = mn.astype(np.int16).reshape(g, ROWS, nb, 4, 2).transpose(0, 2, 3, 1, 4)
        qs = blocks[..., 16:144].reshape(g, ROWS, nb, 4, 32)
        q = np.stack([qs & 15, qs >> 4], axis=4).reshape(g, ROWS, nb, 256)  # group 2k: low, 2k+1: high
        vecs = _vectors(q, g, nb)
        low = vecs
        parts = [d, dmin, per_row(sc), np.ascontiguousarray(mins).view(np.uint8).reshape(g, nb, -1)]
    else:
        d = per_row(blocks[..., 208:210].copy().view(np.uint16)[..., 0])
        sc = per_row(blocks[..., 192:208].view(np.int8))
        ql = blocks[..., 0:128].reshape(g, ROWS, nb, 2, 2, 32)  # (h, p & 1, i)
        qh = blocks[..., 128:192].reshape(g, ROWS, nb, 2, 1, 32)  # (h, -, i)
        q = np.empty((g, ROWS, nb, 2, 4, 32), dtype=np.uint8)  # weight 128h + 32p + i
        for p in range(4):
            q[..., p, :] = ((ql[..., p & 1, :] >> (4 * (p >> 1))) & 15) | (((qh[..., 0, :] >> (2 * p)) & 3) << 4)
        vecs = _vectors(q.reshape(g, ROWS, nb, 256), g, nb)
        low = vecs & 15
        high = np.zeros((g, nb, 8, 2, 32), dtype=np.uint8)
        for j in range(8):
            high[:, :, :, j // 4] |= ((vecs[:, :, :, j] >> 4) & 3) << (2 * (j % 4))
        parts = [d, sc]
    parts.append((low[:, :, :, :4] | (low[:, :, :, 4:] << 4)).reshape(g, nb, 1024))
    if kind == 7:
        parts.append(high.reshape(g, nb, 512))
    out = np.concatenate(parts, axis=-1)
    assert out.shape[-1] == GROUP_SIZE_K[kind]
    return np.ascontiguousarray(out.reshape(g, nb * GROUP_SIZE_K[kind]))


def _emit_group_k(e, kind, nt, P):
    """The loop over the super-blocks of one group of 8 rows for nt tokens, and the stores."""
    b = e.b
    gsize = GROUP_SIZE_K[kind]
    base = e.ptr(P["p"], b.mul(P["g"], P["p_s0"]))
    t_index = [b.add(P["t0"], _c64(t)) for t in range(nt)]
    x_rows = [e.ptr(P["xq"], b.mul(ti, P["xq_s0"])) for ti in t_index]
    b_rows = [e.ptr(P["xb"], b.mul(ti, P["xb_s0"])) for ti in t_index]
    i32t, i16t = ir.IntType(32), ir.IntType(16)
    v8i8 = ir.VectorType(ir.IntType(8), 8)
    v8i16 = ir.VectorType(i16t, 8)
    chains = 4 if nt <= 2 else 2
    nib0 = 224 if kind == 5 else 144

    def halves8(gb, off):
        return _halves(e, e.load(gb, _c64(off), v8i16), V8F32)

    def group_vectors(gb, grp):
        """Group grp's 8 weight vectors (grp an i64 value: the group loop is a real loop, so that
        the code of a super-block stays small enough for the CPU's decoded-instruction cache)."""
        nib_at = b.add(_c64(nib0), b.mul(grp, _c64(128)))
        nib = [e.load(gb, b.add(nib_at, _c64(32 * a)), V32I8) for a in range(4)]
        vs = [e.and_(n, 15) for n in nib] + [e.and_(e.lshr(n, 4), 15) for n in nib]
        if kind == 7:
            high_at = b.add(_c64(1168), b.mul(grp, _c64(64)))
            hs = [e.load(gb, b.add(high_at, _c64(32 * a)), V32I8) for a in range(2)]
            for j in range(8):
                h = hs[j // 4]
                k = j % 4
                bits = e.and_(e.lshr(h, 2 * k) if k else h, 3)
                vs[j] = b.or_(vs[j], e.shl(bits, 4))
        return vs

    def dot(t, vs, xoff, start):
        if e.isa < ISA_VNNI:
            xs = [b.bitcast(e.splat(e.load(x_rows[t], b.add(xoff, _c64(4 * n)), i32t), V8I32), V32I8)
                  for n in range(len(vs))]
            return _pair_dots(e, xs, vs, start)
        accs = [start] + [None] * (chains - 1)
        for n, v in enumerate(vs):
            x4 = e.load(x_rows[t], b.add(xoff, _c64(4 * n)), i32t)
            c = n % chains
            accs[c] = e.dot_us(v, b.bitcast(e.splat(x4, V8I32), V32I8), accs[c])
        total = accs[0]
        for a in accs[1:]:
            if a is not None:
                total = b.add(total, a)
        return total

    def scale_vector(gb, off):
        raw = e.load(gb, off, v8i8)
        return b.zext(raw, V8I32) if kind == 5 else b.sext(raw, V8I32)

    izero = ir.Constant(V8I32, None)

    def body(blk, accs, gloop, gdone):
        loop = b.block
        gb = e.ptr(base, b.mul(blk, _c64(gsize)))
        _prefetch(e, gb, PREFETCH_BYTES, gsize)
        xblk = b.mul(blk, _c64(256))
        b.branch(gloop)
        b.position_at_end(gloop)
        grp = b.phi(ir.IntType(64))
        sumi_in = [b.phi(V8I32) for _ in range(nt)]
        sumi = list(sumi_in)
        vs = group_vectors(gb, grp)
        xgrp = b.add(xblk, b.mul(grp, _c64(32)))
        if kind == 5:
            sc = scale_vector(gb, b.add(_c64(32), b.mul(grp, _c64(8))))
            for t in range(nt):
                sumi[t] = b.add(sumi[t], b.mul(dot(t, vs, xgrp, None), sc))
        else:
            for half in range(2):
                sub = b.add(b.mul(grp, _c64(2)), _c64(half))
                sc = scale_vector(gb, b.add(_c64(16), b.mul(sub, _c64(8))))
                for t in range(nt):
                    bs = b.sext(e.load(b_rows[t], b.mul(b.add(b.mul(blk, _c64(16)), sub), _c64(2)), i16t), i32t)
                    start = e.splat(b.mul(bs, ir.Constant(i32t, -32)), V8I32)
                    prod = b.mul(dot(t, vs[4 * half:4 * half + 4], b.add(xgrp, _c64(16 * half)), start), sc)
                    sumi[t] = b.add(sumi[t], prod)
        gnext = b.add(grp, _c64(1))
        gend = b.block
        b.cbranch(b.icmp_signed("<", gnext, _c64(8)), gloop, gdone)
        grp.add_incoming(_c64(0), loop)
        grp.add_incoming(gnext, gend)
        for t in range(nt):
            sumi_in[t].add_incoming(izero, loop)
            sumi_in[t].add_incoming(sumi[t], gend)
        b.position_at_end(gdone)
        d_col = e.ptr(P["xd"], b.mul(blk, P["xd_s0"]))
        dw = halves8(gb, 0)
        new = []
        if kind == 5:
            dmin = b.fneg(halves8(gb, 16))
            mins = [b.bitcast(e.load(gb, _c64(96 + 32 * p), V8I32), V16I16) for p in range(4)]
        for t in range(nt):
            dx = e.splat(e.load(d_col, b.mul(t_index[t], _c64(4)), ir.FloatType()), V8F32)
            acc = e.fma(b.fmul(dw, dx), b.sitofp(sumi[t], V8F32), accs[t])
            if kind == 5:
                summ = None
                for p in range(4):  # the 32-sums of groups 2p and 2p + 1, one i32 load
                    pair = e.load(b_rows[t], b.mul(b.add(b.mul(blk, _c64(8)), _c64(2 * p)), _c64(2)), i32t)
                    summ = e.dot_ws(mins[p], b.bitcast(e.splat(pair, V8I32), V16I16), summ)
                acc = e.fma(b.fmul(dmin, dx), b.sitofp(summ, V8F32), acc)
            new.append(acc)
        return new

    _block_loop(e, P, "qpackk", t_index, V8F32, body, ("groups", "sums"))


@intrinsic
def qdot8k(typingctx, kind, isa, nt, p, g, xq, xd, xb, t0, nb, out):
    """``qdot8k(kind, isa, nt, p, g, xq, xd, xb, t0, nb, out)``: as ``qdot8`` for the packed K
    kinds (``pack_k``) over ``nb`` super-blocks: ``xd`` the q8_K scales as (super-blocks, T);
    ``xb`` int16 sums per 32 (q4_K) or per 16 (q6_K) as (T, sums)."""
    return _packed_intrinsic((kind, isa, nt, p, g, xq, xd, xb, t0, nb, out), KINDS_K, "qpackk", _emit_group_k,
                             sums="xb")
