"""Scalar building blocks the kernels inline: bit casts, exp, erf, tanh and 16-bit float decoding.

Everything here is branch-free float32 arithmetic (selects, not calls into libm), so that LLVM
vectorises the loops that use it; numba has no vector math library without SVML.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

INLINE = dict(inline="always", cache=True, error_model="numpy")


@intrinsic
def f32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        width = bits.bitwidth
        if width > 32:
            value = builder.trunc(value, ir.IntType(32))
        elif width < 32:
            value = builder.zext(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def bits_from_f32(typingctx, value):
    """The bits of a float32 as an int32."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(value), codegen


@intrinsic
def maxnum32(typingctx, a, b):
    """LLVM's maxnum on float32: unlike numba's max() it has no NaN branches, so a loop that
    reduces with it vectorises (a 25x difference on a long row)."""
    if a != types.float32 or b != types.float32:
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32, f32]), "llvm.maxnum.f32")
        return builder.call(fn, args)

    return types.float32(a, b), codegen


_LOG2E = numba.float32(1.4426950408889634)
_LN2_HI = numba.float32(0.693359375)
_LN2_LO = numba.float32(-2.12194440e-4)


@numba.njit(**INLINE)
def exp32(x):
    """exp(x) in float32 (Cephes expf: relative error < 2e-7); 0 below -87.3, inf above 88.7."""
    x = numba.float32(x)
    xc = min(max(x, numba.float32(-87.3)), numba.float32(88.3))
    n = np.floor(xc * _LOG2E + numba.float32(0.5))
    r = xc - n * _LN2_HI - n * _LN2_LO
    p = numba.float32(1.9875691500e-4)
    p = p * r + numba.float32(1.3981999507e-3)
    p = p * r + numba.float32(8.3334519073e-3)
    p = p * r + numba.float32(4.1665795894e-2)
    p = p * r + numba.float32(1.6666665459e-1)
    p = p * r + numba.float32(5.0000001201e-1)
    p = p * r * r + r + numba.float32(1.0)
    scale = f32_from_bits((numba.int32(n) + numba.int32(127)) << numba.int32(23))
    y = p * scale
    y = numba.float32(0.0) if x < numba.float32(-87.3) else y
    return numba.float32(math.inf) if x > numba.float32(88.7) else y


@numba.njit(**INLINE)
def erf32(x):
    """erf(x) (Abramowitz & Stegun 7.1.28, |error| < 3e-7): a polynomial, no exp."""
    a = abs(numba.float32(x))
    p = numba.float32(4.30638e-5)
    p = p * a + numba.float32(2.765672e-4)
    p = p * a + numba.float32(1.520143e-4)
    p = p * a + numba.float32(9.2705272e-3)
    p = p * a + numba.float32(4.22820123e-2)
    p = p * a + numba.float32(7.05230784e-2)
    p = p * a + numba.float32(1.0)
    p = min(p, numba.float32(1e3))  # p**16 stays finite; 1/p**16 is already 0 in float32 there
    p2 = p * p
    p4 = p2 * p2
    p8 = p4 * p4
    y = numba.float32(1.0) - numba.float32(1.0) / (p8 * p8)
    return y if x >= numba.float32(0.0) else -y


@numba.njit(**INLINE)
def tanh32(x):
    x = numba.float32(x)
    e = exp32(numba.float32(-2.0) * abs(x))
    y = (numba.float32(1.0) - e) / (numba.float32(1.0) + e)
    return y if x >= numba.float32(0.0) else -y


_SQRT_HALF = numba.float32(0.7071067811865476)
_SQRT_2_OVER_PI = numba.float32(0.7978845608028654)


@numba.njit(**INLINE)
def gelu32(x):
    return numba.float32(0.5) * x * (numba.float32(1.0) + erf32(x * _SQRT_HALF))


@numba.njit(**INLINE)
def gelu_tanh32(x):
    inner = _SQRT_2_OVER_PI * (x + numba.float32(0.044715) * x * x * x)
    return numba.float32(0.5) * x * (numba.float32(1.0) + tanh32(inner))


@numba.njit(**INLINE)
def silu32(x):
    return x / (numba.float32(1.0) + exp32(-x))


# activation codes shared by the kernels and the backend
ACT_NONE, ACT_GELU, ACT_GELU_TANH, ACT_RELU, ACT_SILU = 0, 1, 2, 3, 4
ACT_CODES = {None: ACT_NONE, "gelu": ACT_GELU, "gelu_tanh": ACT_GELU_TANH, "relu": ACT_RELU, "silu": ACT_SILU}


@numba.njit(**INLINE)
def activate(x, act):
    if act == ACT_GELU:
        return gelu32(x)
    if act == ACT_GELU_TANH:
        return gelu_tanh32(x)
    if act == ACT_RELU:
        return max(x, numba.float32(0.0))
    if act == ACT_SILU:
        return silu32(x)
    return x


def target_has(feature: str) -> bool:
    """Whether numba compiles for a CPU with this LLVM feature (it targets the host unless
    NUMBA_CPU_NAME / NUMBA_CPU_FEATURES say otherwise)."""
    from llvmlite import binding as llvm
    from numba.core import config

    if config.CPU_FEATURES:
        return f"+{feature}" in config.CPU_FEATURES.split(",")
    if config.CPU_NAME and config.CPU_NAME != "host":
        return False
    try:
        return bool(llvm.get_host_cpu_features().get(feature))
    except Exception:  # noqa: BLE001 - unknown host: assume the feature is missing
        return False


def _x86() -> bool:
    import platform

    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


# half → float by the hardware where it can (F16C on x86, always on arm64), else by bit arithmetic
_HARDWARE_HALF = target_has("f16c") or not _x86()


def half_to_float(builder, value):
    """IR: an i16 of IEEE half bits → float, exact: ``fpext half`` where the CPU converts halves,
    else 32-bit integer arithmetic (subnormals, inf and NaN included)."""
    f32, i32 = ir.FloatType(), ir.IntType(32)
    if _HARDWARE_HALF:
        return builder.fpext(builder.bitcast(value, ir.HalfType()), f32)
    h = builder.zext(value, i32)

    def c(x):
        return ir.Constant(i32, x)

    em = builder.and_(h, c(0x7FFF))
    sign = builder.shl(builder.and_(h, c(0x8000)), c(16))
    normal = builder.add(builder.shl(em, c(13)), c(0x38000000))
    special = builder.or_(c(0x7F800000), builder.shl(builder.and_(em, c(0x3FF)), c(13)))
    out = builder.select(builder.icmp_unsigned(">=", em, c(0x7C00)), special, normal)
    sub = builder.fmul(builder.uitofp(em, f32), ir.Constant(f32, 2.0 ** -24))
    out = builder.select(builder.icmp_unsigned("<", em, c(0x400)), builder.bitcast(sub, i32), out)
    return builder.bitcast(builder.or_(out, sign), f32)


@intrinsic
def f16_to_f32(typingctx, bits):
    """IEEE half bits (the low 16 bits of an integer) → float32, exact (subnormals, inf, NaN).

    LLVM's own ``fpext half`` where the CPU converts halves (a loop of them becomes vcvtph2ps),
    else the same in 32-bit integer IR; written in numba that bit arithmetic would run in 64-bit
    lanes (numba widens integer operations), three times slower."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i16 = ir.IntType(16)
        value = args[0]
        if bits.bitwidth > 16:
            value = builder.trunc(value, i16)
        elif bits.bitwidth < 16:
            value = builder.zext(value, i16)
        return half_to_float(builder, value)

    return types.float32(bits), codegen


@numba.njit(**INLINE)
def bf16_to_f32(h):
    return f32_from_bits(numba.int32(h) << numba.int32(16))
