"""The register-tile product every GEMM here is built on, written in LLVM IR.

A tile kernel computes ``C[MR rows, NR columns] (+)= A[MR rows, :K] @ B[:K, NR columns]`` with all
MR x NR sums held in vector registers for the whole K loop: each step loads NR values of B's row
k as vectors and multiplies them with one broadcast element of each A row. numba's own loops
cannot keep such a tile in registers (its arrays live in memory and SLP vectorisation is off),
so this one loop is spelled out with llvmlite, once per tile shape. The shapes follow the
machine (measured on a Zen 4 core, one thread, x @ W.T for MiniLM's layers): with AVX-512 the
linear layers use 6 x 64 (24 of 32 zmm registers: 98-107 GFLOP/s where OpenBLAS sgemm does
97-99 and 12 x 32 does 90) and attention 12 x 32 (head dims are often 32); with AVX2 both use
6 x 16 (12 of 16 ymm registers).
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .scalar import target_has

VECTOR = 16  # float32 lanes per IR vector; LLVM splits them in two on AVX2


AVX512 = target_has("avx512f")
LINEAR_SHAPE = (6, 64) if AVX512 else (6, 16)
ATTENTION_SHAPE = (12, 32) if AVX512 else (6, 16)


class _LoopID(ir.values.MDValue):
    """A metadata node that lists itself first, as LLVM's loop IDs do (llvmlite has no helper)."""

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


def _no_unroll(module):
    """Loop metadata ``!{self, !{"llvm.loop.unroll.disable"}}``: unrolled twice, LLVM hoists the
    broadcasts of both steps and spills the accumulators."""
    flag = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
    loop_id = _LoopID(module, [flag], name=str(len(module.metadata)))  # appends itself to the module
    loop_id.operands = (loop_id, flag)
    return loop_id


def make_tile(MR: int, NR: int):
    """The tile intrinsic for MR x NR (NR a multiple of 16):

    ``tile(a, a_off, lda, a_rows, b, b_off, ldb, kdim, c, c_off, ldc, accumulate)`` computes
    ``C[i, j] (+)= sum_k A[i, k] * B[k, j]`` for ``i < MR``, ``j < NR``, ``k < kdim``, with
    ``A[i, k] = a[a_off + min(i, a_rows - 1) * lda + k]``, ``B[k, j] = b[b_off + k * ldb + j]``
    and ``C[i, j] = c[c_off + i * ldc + j]`` (``+=`` when ``accumulate``). ``a``, ``b``, ``c`` are
    flat float32 arrays. Rows past ``a_rows`` repeat A's last row and still write C (callers
    ignore them); callers guarantee all MR x NR elements of C and NR readable columns of B on
    every row."""
    assert NR % VECTOR == 0
    nvec = NR // VECTOR

    def typer(typingctx, a, a_off, lda, a_rows, b, b_off, ldb, kdim, c, c_off, ldc, accumulate):
        ints = (a_off, lda, a_rows, b_off, ldb, kdim, c_off, ldc, accumulate)
        if not all(isinstance(t, (types.Integer, types.Boolean)) for t in ints):
            return None
        sig = types.void(a, a_off, lda, a_rows, b, b_off, ldb, kdim, c, c_off, ldc, accumulate)
        return sig, codegen

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        vec = ir.VectorType(ir.FloatType(), VECTOR)
        vptr = vec.as_pointer()

        def as_i64(i):
            value, ty = args[i], signature.args[i]
            if isinstance(ty, types.Boolean):
                return builder.zext(value, i64)
            if ty.bitwidth == 64:
                return value
            return builder.sext(value, i64) if ty.signed else builder.zext(value, i64)

        # every array field is read here: numba's struct proxy emits a load where first used
        a_data = context.make_array(signature.args[0])(context, builder, args[0]).data
        b_data = context.make_array(signature.args[4])(context, builder, args[4]).data
        c_data = context.make_array(signature.args[8])(context, builder, args[8]).data
        a_off, lda, a_rows, b_off, ldb, kdim, c_off, ldc = (as_i64(i) for i in (1, 2, 3, 5, 6, 7, 9, 10))
        add_to_c = builder.icmp_signed("!=", as_i64(11), ir.Constant(i64, 0))

        b_base = builder.gep(b_data, [b_off])
        c_base = builder.gep(c_data, [c_off])
        last = builder.sub(a_rows, ir.Constant(i64, 1))
        rows = []
        for i in range(MR):
            ci = ir.Constant(i64, i)
            r = builder.select(builder.icmp_signed("<", ci, a_rows), ci, last)
            rows.append(builder.gep(a_data, [builder.add(a_off, builder.mul(r, lda))]))
        c_ptrs = [[builder.bitcast(builder.gep(c_base, [builder.add(builder.mul(ir.Constant(i64, i), ldc),
                                                                     ir.Constant(i64, v * VECTOR))]), vptr)
                   for v in range(nvec)] for i in range(MR)]
        zero = ir.Constant(vec, [0.0] * VECTOR)
        # the sums start from C (accumulate) or from zero
        start = [[builder.select(add_to_c, builder.load(c_ptrs[i][v], align=4), zero) for v in range(nvec)]
                 for i in range(MR)]
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                             f"llvm.fma.v{VECTOR}f32")
        splat_mask = ir.Constant(ir.VectorType(i32, VECTOR), [0] * VECTOR)
        undef = ir.Constant(vec, ir.Undefined)

        entry = builder.block
        loop = builder.append_basic_block("tile_loop")
        done = builder.append_basic_block("tile_done")
        builder.cbranch(builder.icmp_signed(">", kdim, ir.Constant(i64, 0)), loop, done)

        builder.position_at_end(loop)
        k = builder.phi(i64)
        acc = [[builder.phi(vec) for _ in range(nvec)] for _ in range(MR)]
        b_row = builder.gep(b_base, [builder.mul(k, ldb)])
        bv = [builder.load(builder.bitcast(builder.gep(b_row, [ir.Constant(i64, v * VECTOR)]), vptr), align=4)
              for v in range(nvec)]
        new = []
        for i in range(MR):
            a_val = builder.load(builder.gep(rows[i], [k]), align=4)
            splat = builder.shuffle_vector(builder.insert_element(undef, a_val, ir.Constant(i32, 0)), undef, splat_mask)
            new.append([builder.call(fma, [splat, bv[v], acc[i][v]]) for v in range(nvec)])
        k_next = builder.add(k, ir.Constant(i64, 1))
        end = builder.block
        back = builder.cbranch(builder.icmp_signed("<", k_next, kdim), loop, done)
        back.set_metadata("llvm.loop", _no_unroll(builder.module))
        k.add_incoming(ir.Constant(i64, 0), entry)
        k.add_incoming(k_next, end)
        for i in range(MR):
            for v in range(nvec):
                acc[i][v].add_incoming(start[i][v], entry)
                acc[i][v].add_incoming(new[i][v], end)

        builder.position_at_end(done)
        results = []
        for i in range(MR):  # every phi first: LLVM wants them at the top of the block
            for v in range(nvec):
                result = builder.phi(vec)
                result.add_incoming(start[i][v], entry)
                result.add_incoming(new[i][v], end)
                results.append((i, v, result))
        for i, v, result in results:
            builder.store(result, c_ptrs[i][v], align=4)
        return context.get_dummy_value()

    typer.__name__ = f"tile_{MR}x{NR}"
    return intrinsic(typer)


linear_tile = make_tile(*LINEAR_SHAPE)
attention_tile = make_tile(*ATTENTION_SHAPE)
