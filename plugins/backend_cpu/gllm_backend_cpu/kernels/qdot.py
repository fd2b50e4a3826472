"""Integer dot products of GGML weight blocks with 8-bit activations, written in LLVM IR.

One intrinsic, ``qdot``, computes ``out[t0 + i, r] = row r of W · row t0 + i of x`` for ``nt`` tokens
at once (nt = 1, 2, 4 or 8) over a whole row, the way llama.cpp's ggml-cpu does it
(``ggml_vec_dot_q4_0_q8_0`` etc. in ggml/src/ggml-cpu/arch/x86/quants.c): each weight block is
loaded and unpacked to bytes once, then multiplied with every token's int8 activations as
unsigned x signed bytes summed to int16 and int32 (AVX2 ``vpmaddubsw`` + ``vpmaddwd``, or AVX-512
VNNI ``vpdpbusd``), converted to float and added with one FMA per block and token
(``d_w * d_x``). The float sums stay in vector registers along the row; one horizontal sum per
row and token at the end. Only the order of the float additions differs from llama.cpp: the
integer sums are exact.

numba cannot express this (its integers widen to 64 bits and it has no byte-vector types), so
the loops are spelled out in IR as ``tile.py`` does for the float GEMM. Three instruction paths
are emitted, the best one the CPU has chosen at run time (``native_isa``), the others selectable
for tests: ``ISA_VNNI`` (AVX-512 VNNI / AVX-VNNI on 256-bit vectors), ``ISA_AVX2`` (vpmaddubsw,
vpmaddwd, vpsignb) and ``ISA_GENERIC`` (plain widening vector arithmetic that LLVM lowers on any
CPU; the AVX2 instructions' saturation never triggers for these value ranges, so it is exact).
A path the compiling CPU lacks is never emitted: it falls back to the best one it has.

Weight kinds (the block layouts of ggml-common.h):

    0 q4_0  (18 bytes)   1 q4_1 (20)   2 q5_0 (22)   3 q5_1 (24)   4 q8_0 (34)   · q8_0 / q8_1
    5 q4_K (144 bytes)   6 q5_K (176)  7 q6_K (210)                               · q8_K

Activations: ``xq`` int8 (T, n) (``q + 128`` as uint8 where ``biased(kind, isa)``); ``xd`` float32 (T, blocks) the scales; ``xs`` float32 (T, blocks)
q8_1's ``f16(d * sum q)`` (read by q4_1 / q5_1 only); ``xb`` int16 (T, n / 16) q8_K's sums of 16
(read by the K kinds only).
"""

from __future__ import annotations

import os

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .scalar import _x86, half_to_float, target_has

ISA_GENERIC, ISA_AVX2, ISA_VNNI = 0, 1, 2
ISA_NAMES = {"generic": ISA_GENERIC, "avx2": ISA_AVX2, "vnni": ISA_VNNI}
ISA_ENV = "GLLM_CPU_QUANT_ISA"
TOKEN_CHUNKS = (8, 4, 2, 1)  # tokens handled per pass over a row (a row of weights is unpacked once per pass)

BLOCK = (32, 32, 32, 32, 32, 256, 256, 256)
SIZE = (18, 20, 22, 24, 34, 144, 176, 210)
KIND_NAMES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k")


def _host_isa() -> int:
    if not _x86():
        return ISA_GENERIC
    if (target_has("avx512vnni") and target_has("avx512vl")) or target_has("avxvnni"):
        return ISA_VNNI
    if target_has("avx2"):
        return ISA_AVX2
    return ISA_GENERIC


HOST_ISA = _host_isa()


def biased(kind: int, isa: int) -> bool:
    """Whether qdot reads the activations as ``q + 128`` (uint8; the bits ``q ^ 0x80``): on the
    VNNI path for the signed weight kinds (q4_0, q5_0, q8_0), so that vpdpbusd multiplies unsigned
    activations with the signed weights directly, its accumulator starting at ``-128 sum w``."""
    return min(isa, HOST_ISA) >= ISA_VNNI and kind in (0, 2, 4)


def native_isa() -> int:
    """The path the kernels take: the best the CPU has, or ``GLLM_CPU_QUANT_ISA`` (generic, avx2,
    vnni) capped at what the CPU has."""
    raw = os.environ.get(ISA_ENV, "").strip().lower()
    if not raw:
        return HOST_ISA
    if raw not in ISA_NAMES:
        from gllm_core.errors import BackendUnavailableError

        raise BackendUnavailableError(f"{ISA_ENV}={raw!r}: expected one of {', '.join(ISA_NAMES)}")
    return min(ISA_NAMES[raw], HOST_ISA)


# -- IR helpers ----------------------------------------------------------------------------------

i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
f32 = ir.FloatType()
V32I8 = ir.VectorType(i8, 32)
V16I8 = ir.VectorType(i8, 16)
V16I16 = ir.VectorType(i16, 16)
V8I16 = ir.VectorType(i16, 8)
V8I32 = ir.VectorType(i32, 8)
V8F32 = ir.VectorType(f32, 8)


def _c64(v):
    return ir.Constant(i64, v)


def _vec(ty, values):
    return ir.Constant(ty, [ir.Constant(ty.element, v) for v in values])


def _splat_const(ty, v):
    return _vec(ty, [v] * ty.count)


def _mask(idx):
    return _vec(ir.VectorType(i32, len(idx)), list(idx))


class _Emit:
    """Vector operations for one instruction path."""

    def __init__(self, builder, isa):
        self.b = builder
        self.isa = isa

    def fn(self, name, ret, args):
        return cgutils.get_or_insert_function(self.b.module, ir.FunctionType(ret, [a.type for a in args]), name)

    def call(self, name, ret, *args):
        return self.b.call(self.fn(name, ret, args), list(args))

    # memory
    def ptr(self, base, offset):
        return self.b.gep(base, [offset])

    def load(self, base, offset, ty):
        p = self.b.bitcast(self.b.gep(base, [offset]), ty.as_pointer())
        return self.b.load(p, align=1)

    def half(self, base, offset):
        """The float16 at base + offset (bytes) as a float."""
        return half_to_float(self.b, self.load(base, offset, i16))

    # shuffles
    def shuffle(self, a, b_, idx):
        return self.b.shuffle_vector(a, b_ if b_ is not None else ir.Constant(a.type, ir.Undefined), _mask(idx))

    def splat(self, value, ty):
        undef = ir.Constant(ty, ir.Undefined)
        one = self.b.insert_element(undef, value, ir.Constant(i32, 0))
        return self.b.shuffle_vector(one, undef, _mask([0] * ty.count))

    # integer products
    def maddubs(self, u, s):
        """u (32 unsigned bytes) x s (32 signed bytes), adjacent pairs summed: 16 int16."""
        b = self.b
        if self.isa >= ISA_AVX2:
            return self.call("llvm.x86.avx2.pmadd.ub.sw", V16I16, u, s)
        p = b.mul(b.zext(u, ir.VectorType(i16, 32)), b.sext(s, ir.VectorType(i16, 32)))
        return b.add(self.shuffle(p, p, range(0, 32, 2)), self.shuffle(p, p, range(1, 32, 2)))

    def madd(self, a, s):
        """16 int16 x 16 int16, adjacent pairs summed: 8 int32."""
        b = self.b
        if self.isa >= ISA_AVX2:
            return self.call("llvm.x86.avx2.pmadd.wd", V8I32, a, s)
        v16i32 = ir.VectorType(i32, 16)
        p = b.mul(b.sext(a, v16i32), b.sext(s, v16i32))
        return b.add(self.shuffle(p, p, range(0, 16, 2)), self.shuffle(p, p, range(1, 16, 2)))

    def dot_us(self, u, s, acc=None):
        """Sums of 4 adjacent products of unsigned u and signed s bytes (+ acc): 8 int32."""
        b = self.b
        if self.isa >= ISA_VNNI:
            start = ir.Constant(V8I32, None) if acc is None else acc
            return self.call("llvm.x86.avx512.vpdpbusd.256", V8I32, start, b.bitcast(u, V8I32), b.bitcast(s, V8I32))
        r = self.madd(self.maddubs(u, s), _splat_const(V16I16, 1))
        return r if acc is None else b.add(r, acc)

    def dot_ws(self, a, s, acc=None):
        """16 int16 x 16 int16, adjacent pairs summed (+ acc): 8 int32 (vpdpwssd with VNNI)."""
        if self.isa >= ISA_VNNI:
            b = self.b
            start = ir.Constant(V8I32, None) if acc is None else acc
            return self.call("llvm.x86.avx512.vpdpwssd.256", V8I32, start, b.bitcast(a, V8I32), b.bitcast(s, V8I32))
        r = self.madd(a, s)
        return r if acc is None else self.b.add(r, acc)

    def token_sums(self, vs):
        """The lane sums of nt (4 or 8) int32 vectors as one <nt x i32>: pairwise adds within
        128-bit halves (vphaddd-like shuffles), then the two halves added."""
        b = self.b
        even, odd = [0, 2, 8, 10, 4, 6, 12, 14], [1, 3, 9, 11, 5, 7, 13, 15]
        last = 2 if len(vs) == 8 else 1
        while len(vs) > last:
            vs = [b.add(self.shuffle(vs[i], vs[i + 1], even), self.shuffle(vs[i], vs[i + 1], odd))
                  for i in range(0, len(vs), 2)]
        if len(vs) == 2:  # 8 tokens: [t0..t3 | t0..t3] and [t4..t7 | t4..t7]
            lo = self.shuffle(vs[0], vs[1], [0, 1, 2, 3, 8, 9, 10, 11])
            hi = self.shuffle(vs[0], vs[1], [4, 5, 6, 7, 12, 13, 14, 15])
            return b.add(lo, hi)
        v = vs[0]  # 4 tokens: [t0..t3 | t0..t3]
        return b.add(self.shuffle(v, None, range(4)), self.shuffle(v, None, range(4, 8)))

    def sign(self, y, x):
        """y negated where x < 0, zeroed where x == 0 (vpsignb)."""
        b = self.b
        if self.isa >= ISA_AVX2:
            return self.call("llvm.x86.avx2.psign.b", V32I8, y, x)
        zero = ir.Constant(V32I8, None)
        neg = b.sub(zero, y)
        return b.select(b.icmp_signed("<", x, zero), neg, b.select(b.icmp_signed("==", x, zero), zero, y))

    def and_(self, v, c):
        return self.b.and_(v, _splat_const(v.type, c))

    def lshr(self, v, n):
        return self.b.lshr(v, _splat_const(v.type, n))

    def shl(self, v, n):
        return self.b.shl(v, _splat_const(v.type, n))

    def tofloat(self, v):
        return self.b.sitofp(v, V8F32)

    def fma(self, a, x, acc):
        return self.call(f"llvm.fmuladd.v{acc.type.count}f32", acc.type, a, x, acc)

    def hsum(self, v):
        b = self.b
        v4 = b.fadd(self.shuffle(v, None, range(4)), self.shuffle(v, None, range(4, 8)))
        v2 = b.fadd(self.shuffle(v4, None, range(2)), self.shuffle(v4, None, range(2, 4)))
        return b.fadd(b.extract_element(v2, ir.Constant(i32, 0)), b.extract_element(v2, ir.Constant(i32, 1)))


# -- one pass over a row for nt tokens -----------------------------------------------------------

def _emit_row(e, kind, nt, P):
    """Emit the loop over the row's blocks for nt tokens; the builder ends after the stores."""
    b = e.b
    size, block = SIZE[kind], BLOCK[kind]
    nb = P["nb"]
    w_row = e.ptr(P["w"], b.mul(P["r"], P["w_s0"]))
    t_index = [b.add(P["t0"], _c64(t)) for t in range(nt)]
    x_rows = [e.ptr(P["xq"], b.mul(ti, P["xq_s0"])) for ti in t_index]
    vnf = ir.VectorType(f32, nt)
    d_col = e.ptr(P["xd"], b.mul(P["t0"], _c64(4)))  # scales are (blocks, T): one vector load per block
    s_col = e.ptr(P["xs"], b.mul(P["t0"], _c64(4)))
    bs_rows = [e.ptr(P["xb"], b.mul(ti, P["xb_s0"])) for ti in t_index]
    with_mins = kind in (1, 3)
    # K kinds, 4 or 8 tokens: each block's integer sums are added across lanes into one vector
    # over the tokens, converted and scaled with one FMA per term (not a conversion, scalar scale
    # and FMA per token); the float sums are then one vector per row (lanes = tokens), no
    # horizontal sums (measured 0.127 -> 0.110 ns/weight for 8 tokens, one thread, Zen 4). The
    # 32-weight kinds keep per-token sums: no faster that way, and their float order is kept.
    vec = nt >= 4 and kind >= 5
    nacc, acc_ty = (1, vnf) if vec else (nt, V8F32)

    def body(blk, acc, macc):
        """One block (all nt tokens) added to the sums acc (and the q8_1 mins sums macc)."""
        wb = e.ptr(w_row, b.mul(blk, _c64(size)))
        x_off = b.mul(blk, _c64(block))          # byte offset of the block in an int8 activation row
        dxs = e.load(d_col, b.mul(blk, P["xd_s0"]), vnf)  # the block's activation scales, nt tokens
        new_acc, new_macc = [], None

        def group_dots(t, values, scales):
            """A K block for token t: sum over its 8 groups of 32 of scale_g * (values_g . x), int32 lanes."""
            sumi = None
            for g in range(8):
                y = e.load(x_rows[t], b.add(x_off, _c64(32 * g)), V32I8)
                sumi = e.dot_ws(e.maddubs(values[g], y), scales[g], sumi)
            return sumi

        if kind < 5:
            dw = e.half(wb, _c64(0))
            if kind == 4:
                qx = e.load(wb, _c64(2), V32I8)
            else:
                q16 = e.load(wb, _c64((2, 4, 6, 8)[kind]), V16I8)
                qx = e.shuffle(e.and_(q16, 15), e.and_(e.lshr(q16, 4), 15), range(32))
                if kind in (2, 3):  # the fifth bits: bit j of the u32 qh for weight j
                    h4 = e.load(wb, _c64(2 if kind == 2 else 4), ir.VectorType(i8, 4))
                    hb = e.shuffle(h4, None, [j // 8 for j in range(32)])
                    bit = b.and_(hb, _vec(V32I8, [(1 << (j % 8)) - (256 if j % 8 == 7 else 0) for j in range(32)]))
                    unset = b.icmp_signed("==", bit, ir.Constant(V32I8, None))
                    if kind == 2:  # (q | bit << 4) - 16 as a signed byte
                        qx = b.or_(qx, b.select(unset, _splat_const(V32I8, -16), ir.Constant(V32I8, None)))
                    else:
                        qx = b.or_(qx, b.select(unset, ir.Constant(V32I8, None), _splat_const(V32I8, 16)))
                if kind == 0:
                    qx = b.sub(qx, _splat_const(V32I8, 8))
            signed = kind in (0, 2, 4)
            mw = e.half(wb, _c64(2)) if with_mins else None
            if signed and e.isa >= ISA_VNNI:  # activations biased to q + 128: dot = sum (q+128) w - 128 sum w
                negc = b.sub(ir.Constant(V8I32, None), e.dot_us(_splat_const(V32I8, -128), qx))
            elif signed:
                ax = e.sign(qx, qx)
            dds = b.fmul(e.splat(dw, vnf), dxs)
            if with_mins:
                new_macc = e.fma(e.splat(mw, vnf), e.load(s_col, b.mul(blk, P["xs_s0"]), vnf), macc)
            dots = []
            for t in range(nt):
                y = e.load(x_rows[t], x_off, V32I8)
                if signed and e.isa >= ISA_VNNI:
                    dot = e.dot_us(y, qx, negc)
                else:
                    dot = e.dot_us(ax, e.sign(y, qx)) if signed else e.dot_us(qx, y)
                if vec:
                    dots.append(dot)
                    continue
                dd = b.extract_element(dds, ir.Constant(i32, t))
                new_acc.append(e.fma(e.splat(dd, V8F32), e.tofloat(dot), acc[t]))
            if vec:
                new_acc.append(e.fma(dds, b.sitofp(e.token_sums(dots), vnf), acc[0]))
        elif kind in (5, 6):
            d = e.half(wb, _c64(0))
            dmin = e.half(wb, _c64(2))
            u0, u1, u2 = (e.load(wb, _c64(4 + 4 * i), i32) for i in range(3))
            k1, k2, k3 = (ir.Constant(i32, v) for v in (0x3F3F3F3F, 0x0F0F0F0F, 0x03030303))
            s3 = b.or_(b.and_(b.lshr(u2, ir.Constant(i32, 4)), k2), b.shl(b.and_(b.lshr(u1, ir.Constant(i32, 6)), k3), ir.Constant(i32, 4)))
            s2 = b.and_(u1, k1)
            s1 = b.or_(b.and_(u2, k2), b.shl(b.and_(b.lshr(u0, ir.Constant(i32, 6)), k3), ir.Constant(i32, 4)))
            s0 = b.and_(u0, k1)
            v4 = ir.VectorType(i32, 4)
            packed = ir.Constant(v4, ir.Undefined)
            for i, s in enumerate((s0, s1, s2, s3)):
                packed = b.insert_element(packed, s, ir.Constant(i32, i))
            sm = b.zext(b.bitcast(packed, V16I8), V16I16)  # 8 scales, then 8 mins
            scales = [e.shuffle(sm, None, [g] * 16) for g in range(8)]
            mins = e.shuffle(sm, None, [8 + j // 2 for j in range(16)])
            qo = 16 if kind == 5 else 48
            groups = []
            for k in range(4):
                v = e.load(wb, _c64(qo + 32 * k), V32I8)
                groups += [e.and_(v, 15), e.and_(e.lshr(v, 4), 15)]
            if kind == 6:
                qh = e.load(wb, _c64(16), V32I8)
                zero = ir.Constant(V32I8, None)
                for g in range(8):
                    hit = b.icmp_signed("!=", e.and_(qh, (1 << g) - (256 if g == 7 else 0)), zero)
                    groups[g] = b.or_(groups[g], b.select(hit, _splat_const(V32I8, 16), zero))
            sumis, mps = [], []
            for t in range(nt):
                sumi = group_dots(t, groups, scales)
                bs = e.load(bs_rows[t], b.mul(blk, _c64(32)), V16I16)
                mp = e.madd(bs, mins)
                if vec:
                    sumis.append(sumi)
                    mps.append(mp)
                    continue
                dx = b.extract_element(dxs, ir.Constant(i32, t))
                a = e.fma(e.splat(b.fmul(d, dx), V8F32), e.tofloat(sumi), acc[t])
                new_acc.append(e.fma(e.splat(b.fneg(b.fmul(dmin, dx)), V8F32), e.tofloat(mp), a))
            if vec:
                a = e.fma(b.fmul(e.splat(d, vnf), dxs), b.sitofp(e.token_sums(sumis), vnf), acc[0])
                new_acc.append(e.fma(b.fmul(e.splat(b.fneg(dmin), vnf), dxs), b.sitofp(e.token_sums(mps), vnf), a))
        else:  # q6_K
            d = e.half(wb, _c64(208))
            S = b.sext(e.load(wb, _c64(192), V16I8), V16I16)
            quads, svecs = [], []
            for h in range(2):
                A = e.load(wb, _c64(64 * h), V32I8)
                B = e.load(wb, _c64(64 * h + 32), V32I8)
                Q = e.load(wb, _c64(128 + 32 * h), V32I8)
                lows = (e.and_(A, 15), e.and_(B, 15), e.and_(e.lshr(A, 4), 15), e.and_(e.lshr(B, 4), 15))
                for p in range(4):
                    hi = e.and_(e.lshr(Q, 2 * p), 3) if p else e.and_(Q, 3)
                    quads.append(b.or_(lows[p], e.shl(hi, 4)))
                    g0 = 8 * h + 2 * p
                    svecs.append(e.shuffle(S, None, [g0] * 8 + [g0 + 1] * 8))
            sumis = []
            for t in range(nt):
                sumi = group_dots(t, quads, svecs)
                bs = e.load(bs_rows[t], b.mul(blk, _c64(32)), V16I16)
                sumi = b.sub(sumi, e.shl(e.madd(bs, S), 5))  # the -32 offset: 32 * sum_g sc_g * bsum_g
                if vec:
                    sumis.append(sumi)
                    continue
                dx = b.extract_element(dxs, ir.Constant(i32, t))
                new_acc.append(e.fma(e.splat(b.fmul(d, dx), V8F32), e.tofloat(sumi), acc[t]))
            if vec:
                new_acc.append(e.fma(b.fmul(e.splat(d, vnf), dxs), b.sitofp(e.token_sums(sumis), vnf), acc[0]))
        return new_acc, new_macc

    # with one or two tokens a 32-weight block is a few instructions and the float sums' FMA
    # latency would bind: two sets of sums (even and odd blocks), added at the end
    lanes = 2 if kind < 5 and nt <= 2 else 1
    steps = b.lshr(nb, _c64(lanes - 1))
    zero = ir.Constant(acc_ty, None)
    mzero = ir.Constant(vnf, None)
    entry = b.block
    loop = b.append_basic_block("qdot_loop")
    mid = b.append_basic_block("qdot_mid")
    b.cbranch(b.icmp_signed(">", steps, _c64(0)), loop, mid)

    b.position_at_end(loop)
    step = b.phi(i64)
    accs = [[b.phi(acc_ty) for _ in range(nacc)] for _ in range(lanes)]
    maccs = [b.phi(vnf) if with_mins else None for _ in range(lanes)]
    news = []
    for lane in range(lanes):
        news.append(body(b.add(b.mul(step, _c64(lanes)), _c64(lane)), accs[lane], maccs[lane]))
    nxt = b.add(step, _c64(1))
    end = b.block
    b.cbranch(b.icmp_signed("<", nxt, steps), loop, mid)
    step.add_incoming(_c64(0), entry)
    step.add_incoming(nxt, end)
    for lane in range(lanes):
        for t in range(nacc):
            accs[lane][t].add_incoming(zero, entry)
            accs[lane][t].add_incoming(news[lane][0][t], end)
        if with_mins:
            maccs[lane].add_incoming(mzero, entry)
            maccs[lane].add_incoming(news[lane][1], end)

    b.position_at_end(mid)  # every phi first: LLVM wants them at the top of the block
    sums = []
    for lane in range(lanes):
        row = []
        for t in range(nacc):
            ph = b.phi(acc_ty)
            ph.add_incoming(zero, entry)
            ph.add_incoming(news[lane][0][t], end)
            row.append(ph)
        mph = None
        if with_mins:
            mph = b.phi(vnf)
            mph.add_incoming(mzero, entry)
            mph.add_incoming(news[lane][1], end)
        sums.append((row, mph))
    finals, fm = sums[0]
    if lanes == 2:  # an odd last block, then the two sets added
        tail = b.append_basic_block("qdot_tail")
        done = b.append_basic_block("qdot_done")
        b.cbranch(b.icmp_unsigned("!=", b.and_(nb, _c64(1)), _c64(0)), tail, done)
        b.position_at_end(tail)
        t_acc, t_macc = body(b.sub(nb, _c64(1)), finals, fm)
        b.branch(done)
        b.position_at_end(done)
        merged = []
        for t in range(nacc):
            ph = b.phi(acc_ty)
            ph.add_incoming(finals[t], mid)
            ph.add_incoming(t_acc[t], tail)
            merged.append(ph)
        mm = None
        if with_mins:
            mm = b.phi(vnf)
            mm.add_incoming(fm, mid)
            mm.add_incoming(t_macc, tail)
        finals = [b.fadd(merged[t], sums[1][0][t]) for t in range(nacc)]
        fm = b.fadd(mm, sums[1][1]) if with_mins else None
    for t in range(nt):
        total = b.extract_element(finals[0], ir.Constant(i32, t)) if vec else e.hsum(finals[t])
        if fm is not None:
            total = b.fadd(total, b.extract_element(fm, ir.Constant(i32, t)))
        addr = b.add(b.mul(t_index[t], P["out_s0"]), b.mul(P["r"], _c64(4)))
        b.store(total, b.bitcast(e.ptr(P["out"], addr), f32.as_pointer()), align=4)


def _codegen_args(context, builder, signature, args, arrays, ints):
    """An intrinsic's arguments for the emitters: each array (name, position) as an i8 pointer
    ``P[name]`` and its first stride ``P[name + "_s0"]``, then each integer (name, position)
    widened to i64."""
    P = {}
    for name, i in arrays:
        arr = context.make_array(signature.args[i])(context, builder, args[i])
        P[name] = builder.bitcast(arr.data, ir.IntType(8).as_pointer())
        P[name + "_s0"] = cgutils.unpack_tuple(builder, arr.strides)[0]
    for name, i in ints:
        value, ty = args[i], signature.args[i]
        if ty.bitwidth != 64:
            value = builder.sext(value, i64) if ty.signed else builder.zext(value, i64)
        P[name] = value
    return P


def _emit_paths(builder, P, prefix, emit):
    """A switch on ``P["isa"] * 16 + P["nt"]`` with one case per instruction path and token chunk,
    each filled by ``emit(_Emit(builder, path), nt)`` (a path the CPU lacks gets the best it has);
    the builder ends after the switch."""
    key = builder.add(builder.mul(P["isa"], _c64(16)), P["nt"])
    finish = builder.append_basic_block(f"{prefix}_end")
    switch = builder.switch(key, finish)
    for isa_value in (ISA_GENERIC, ISA_AVX2, ISA_VNNI):
        emitted = min(isa_value, HOST_ISA)
        for n in TOKEN_CHUNKS:
            case = builder.append_basic_block(f"{prefix}_{isa_value}_{n}")
            switch.add_case(_c64(isa_value * 16 + n), case)
            builder.position_at_end(case)
            emit(_Emit(builder, emitted), n)
            builder.branch(finish)
    builder.position_at_end(finish)


@intrinsic
def qdot(typingctx, kind, isa, nt, w, r, xq, xd, xs, xb, t0, nb, out):
    """``qdot(kind, isa, nt, w, r, xq, xd, xs, xb, t0, nb, out)``: ``out[t0 + i, r]`` for
    ``i < nt`` (1, 2, 4 or 8) = row r of the GGML blocks ``w`` (uint8, rows x bytes) dotted with
    the quantized activation rows ``t0 + i`` over ``nb`` blocks. ``kind`` must be a literal; ``isa``
    picks the instruction path at run time (paths the CPU lacks fall back to one it has); any
    other ``nt`` writes nothing. Rows of every array must be contiguous."""
    if not isinstance(kind, types.IntegerLiteral):
        return None
    kind_value = kind.literal_value
    ints = (isa, nt, r, t0, nb)
    if not all(isinstance(t, types.Integer) for t in ints):
        return None
    sig = types.void(kind, isa, nt, w, r, xq, xd, xs, xb, t0, nb, out)

    def codegen(context, builder, signature, args):
        P = _codegen_args(context, builder, signature, args,
                          (("w", 3), ("xq", 5), ("xd", 6), ("xs", 7), ("xb", 8), ("out", 11)),
                          (("r", 4), ("t0", 9), ("nb", 10), ("isa", 1), ("nt", 2)))
        _emit_paths(builder, P, "qdot", lambda e, n: _emit_row(e, kind_value, n, P))
        return context.get_dummy_value()

    return sig, codegen
