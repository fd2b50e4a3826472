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

from .qdot import HOST_ISA, ISA_AVX2, ISA_GENERIC, ISA_VNNI, V8F32, V8I32, V16I16, V32I8, _c64, _Emit, \
    _splat_const
from .scalar import _HARDWARE_HALF, half_to_float

ROWS = 8  # rows per group
KINDS = (0, 2, 4)  # the qdot kinds that have a packed form: q4_0, q5_0, q8_0
GROUP_SIZE = {0: 144, 2: 176, 4: 272}  # bytes per group of 8 rows and one block
ORIGINAL_SIZE = {0: 18, 2: 22, 4: 34}
TOKEN_CHUNKS = (8, 4, 2, 1)


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


def _emit_group(e, kind, nt, P):
    """The loop over the blocks of one group of 8 rows for nt tokens, and the stores."""
    b = e.b
    gsize = GROUP_SIZE[kind]
    nb = P["nb"]
    base = e.ptr(P["p"], b.mul(P["g"], P["p_s0"]))
    t_index = [b.add(P["t0"], _c64(t)) for t in range(nt)]
    x_rows = [e.ptr(P["xq"], b.mul(ti, P["xq_s0"])) for ti in t_index]
    i32t = ir.IntType(32)
    vnni = e.isa >= ISA_VNNI
    # independent integer sums per token: the eight vpdpbusd of a block would otherwise wait on
    # each other (latency 4-5 cycles each)
    chains = 4 if nt <= 2 else 2
    v8i16 = ir.VectorType(ir.IntType(16), 8)

    def scales8(gb):
        bits = e.load(gb, _c64(0), v8i16)
        if _HARDWARE_HALF:
            return b.fpext(b.bitcast(bits, ir.VectorType(ir.HalfType(), 8)), V8F32)
        v = ir.Constant(V8F32, ir.Undefined)
        for i in range(8):
            lane = ir.Constant(i32t, i)
            v = b.insert_element(v, half_to_float(b, b.extract_element(bits, lane)), lane)
        return v

    def weights(gb):
        """The block's 8 weight vectors (as the dot products read them)."""
        if kind == 4:
            vs = [e.load(gb, _c64(16 + 32 * j), V32I8) for j in range(8)]
            if vnni:  # w + 128, unsigned: vpdpbusd multiplies unsigned by signed bytes
                vs = [b.xor(v, _splat_const(V32I8, -128)) for v in vs]
            return vs
        lo = 16 if kind == 0 else 48
        nib = [e.load(gb, _c64(lo + 32 * a), V32I8) for a in range(4)]
        vs = [e.and_(n, 15) for n in nib] + [e.and_(e.lshr(n, 4), 15) for n in nib]
        if kind == 2:
            high = e.load(gb, _c64(16), V32I8)
            for j in range(8):
                bit = e.and_(high, (1 << j) - (256 if j == 7 else 0))
                if j < 4:
                    bit = e.shl(bit, 4 - j)
                elif j > 4:
                    bit = e.lshr(bit, j - 4)
                vs[j] = b.or_(vs[j], bit)
        return vs

    def dots(t, vs, xoff, start):
        """Sum over the block of the 8 rows' weights times token t's activations: 8 int32 lanes."""
        accs = [start] + [None] * (chains - 1)
        for j in range(8):
            x4 = e.load(x_rows[t], b.add(xoff, _c64(4 * j)), i32t)
            xv = b.bitcast(e.splat(x4, V8I32), V32I8)
            c = j % chains
            if kind == 4 and not vnni:  # signed weights: |w| x sign(x, w)
                prod = e.madd(e.maddubs(e.sign(vs[j], vs[j]), e.sign(xv, vs[j])), _splat_const(V16I16, 1))
                accs[c] = prod if accs[c] is None else b.add(accs[c], prod)
            else:
                accs[c] = e.dot_us(vs[j], xv, accs[c])
        total = accs[0]
        for a in accs[1:]:
            total = b.add(total, a)
        return total

    zero = ir.Constant(V8F32, None)
    entry = b.block
    loop = b.append_basic_block("qpack_loop")
    done = b.append_basic_block("qpack_done")
    b.cbranch(b.icmp_signed(">", nb, _c64(0)), loop, done)
    b.position_at_end(loop)
    blk = b.phi(ir.IntType(64))
    accs = [b.phi(V8F32) for _ in range(nt)]
    gb = e.ptr(base, b.mul(blk, _c64(gsize)))
    dw = scales8(gb)
    vs = weights(gb)
    xoff = b.mul(blk, _c64(32))
    d_col = e.ptr(P["xd"], b.mul(blk, P["xd_s0"]))
    c_col = e.ptr(P["xc"], b.mul(blk, P["xc_s0"]))
    new = []
    for t in range(nt):
        start = e.splat(e.load(c_col, b.mul(t_index[t], _c64(4)), i32t), V8I32) if P["corr"] else None
        total = dots(t, vs, xoff, start)
        dx = e.load(d_col, b.mul(t_index[t], _c64(4)), ir.FloatType())
        new.append(e.fma(b.fmul(dw, e.splat(dx, V8F32)), b.sitofp(total, V8F32), accs[t]))
    nxt = b.add(blk, _c64(1))
    end = b.block
    b.cbranch(b.icmp_signed("<", nxt, nb), loop, done)
    blk.add_incoming(_c64(0), entry)
    blk.add_incoming(nxt, end)
    for t in range(nt):
        accs[t].add_incoming(zero, entry)
        accs[t].add_incoming(new[t], end)
    b.position_at_end(done)
    finals = []
    for t in range(nt):
        ph = b.phi(V8F32)
        ph.add_incoming(zero, entry)
        ph.add_incoming(new[t], end)
        finals.append(ph)
    col = b.mul(P["g"], _c64(4 * ROWS))
    for t in range(nt):
        addr = b.add(b.mul(t_index[t], P["out_s0"]), col)
        b.store(finals[t], b.bitcast(e.ptr(P["out"], addr), V8F32.as_pointer()), align=4)


@intrinsic
def qdot8(typingctx, kind, isa, nt, p, g, xq, xd, xc, t0, nb, out):
    """``qdot8(kind, isa, nt, p, g, xq, xd, xc, t0, nb, out)``: ``out[t0 + i, 8g:8g + 8]`` for
    ``i < nt`` (1, 2, 4 or 8) = rows 8g..8g+7 of the packed weights ``p`` (``pack``) dotted with
    the int8 activation rows ``t0 + i`` (scales ``xd`` and offsets ``xc`` as (blocks, T)) over
    ``nb`` blocks. ``kind`` must be a literal; ``isa`` picks the path at run time (paths the CPU
    lacks fall back to one it has); any other ``nt`` writes nothing."""
    if not isinstance(kind, types.IntegerLiteral) or kind.literal_value not in KINDS:
        return None
    kind_value = kind.literal_value
    if not all(isinstance(t, types.Integer) for t in (isa, nt, g, t0, nb)):
        return None
    sig = types.void(kind, isa, nt, p, g, xq, xd, xc, t0, nb, out)

    def codegen(context, builder, signature, args):
        def as_i64(i):
            value, ty = args[i], signature.args[i]
            if ty.bitwidth == 64:
                return value
            return builder.sext(value, ir.IntType(64)) if ty.signed else builder.zext(value, ir.IntType(64))

        P = {}
        for name, i in (("p", 3), ("xq", 5), ("xd", 6), ("xc", 7), ("out", 10)):
            arr = context.make_array(signature.args[i])(context, builder, args[i])
            P[name] = builder.bitcast(arr.data, ir.IntType(8).as_pointer())
            P[name + "_s0"] = cgutils.unpack_tuple(builder, arr.strides)[0]
        P["g"], P["t0"], P["nb"] = as_i64(4), as_i64(8), as_i64(9)
        isa_v, nt_v = as_i64(1), as_i64(2)
        key = builder.add(builder.mul(isa_v, _c64(16)), nt_v)
        finish = builder.append_basic_block("qpack_end")
        switch = builder.switch(key, finish)
        for isa_value in (ISA_GENERIC, ISA_AVX2, ISA_VNNI):
            emitted = min(isa_value, HOST_ISA)
            for n in TOKEN_CHUNKS:
                case = builder.append_basic_block(f"qpack_{isa_value}_{n}")
                switch.add_case(_c64(isa_value * 16 + n), case)
                builder.position_at_end(case)
                P["corr"] = offset(kind_value, emitted) != 0
                _emit_group(_Emit(builder, emitted), kind_value, n, P)
                builder.branch(finish)
        builder.position_at_end(finish)
        return context.get_dummy_value()

    return sig, codegen
