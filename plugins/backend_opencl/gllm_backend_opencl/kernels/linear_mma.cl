// y = act(x @ W.T + b) on NVIDIA matrix units (sm_80+), through inline PTX mma.sync m16n8k16:
// NVIDIA's OpenCL has no cl_khr_fp16, but its compiler passes PTX through. W stays f16 (or bf16)
// as stored; x is rounded to the same 16-bit type as it is staged; products accumulate in f32.
//
// SPLIT_X=1 keeps float32 accuracy: x = hi + lo, both 16-bit, and y = W.hi + W.lo (twice the
// matrix work; W is exact in its own type, so the only rounding left is lo's, ~2^-22 relative).
//
// Work-group: 4 warps (2 x 2) computing a BM x BN = 64 x 128 tile of y (M = x rows, N = W rows),
// each warp 32 x 64 = 2 x 8 mma tiles; k advances in steps of BK = 32 staged through local memory
// (rows padded to 40 halves: fragment reads hit distinct banks), the next step's global loads
// issued before the current step's math. Needs n_in % 32 == 0 (true of real models' widths).

#define BM 64
#define BN 128
#define BK 32
#define LDS (BK + 8)

#if WDTYPE == 2
#define MMA_TYPE "bf16"
inline uint round16(float a) {  // float -> bf16 bits, round to nearest even
    uint u = as_uint(a);
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
inline uint pack2(float a, float b) { return round16(a) | (round16(b) << 16); }
inline float widen16(uint h) { return as_float(h << 16); }
#else
#define MMA_TYPE "f16"
#define F16_MAX 65504.0f
inline uint pack2(float a, float b) {  // saturating: beyond the f16 range stays finite
    uint r;
#ifdef NO_PTX  // compile check on devices without PTX (syntax only)
    r = as_uint(a) ^ as_uint(b);
#else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(clamp(b, -F16_MAX, F16_MAX)), "f"(clamp(a, -F16_MAX, F16_MAX)));
#endif
    return r;
}
inline float widen16(uint h) { return f16_bits(h); }
#endif
inline uint pack2_lo(float a, float b) {  // what rounding to 16 bits left out of a and b
    uint r = pack2(a, b);
    return pack2(a - widen16(r & 0xffffu), b - widen16(r >> 16));
}

inline void mma16816(float* c, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1) {
#ifdef NO_PTX
    c[0] += as_float(a0 ^ b0); c[1] += as_float(a1 ^ b1); c[2] += as_float(a2); c[3] += as_float(a3);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." MMA_TYPE "." MMA_TYPE ".f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

__kernel __attribute__((reqd_work_group_size(128, 1, 1)))
void gemm_mma(__global const ushort* restrict w, __global const float* restrict x,
              __global const float* restrict bias, __global float* restrict y,
              const int T, const int n_in, const int n_out, const int has_bias, const int act) {
    __local uint as[BM * LDS / 2];  // x tile, 16-bit pairs, row-major [BM][LDS]
#if SPLIT_X
    __local uint al[BM * LDS / 2];  // what x lost in rounding, same layout
#endif
    __local uint bs[BN * LDS / 2];  // W tile [BN][LDS]
    const int tid = get_local_id(0), lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const int g = lane >> 2, tg = lane & 3;
    const int n0 = get_group_id(0) * BN, m0 = get_group_id(1) * BM;

    float acc[2][8][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    // global -> register staging: x 64 x 32 floats (4 float4 per item), W 128 x 32 halves (4 uint4)
    float4 xr[4];
    uint4 wr[4];
#define LOAD_TILE(k0)                                                                            \
    for (int i = 0; i < 4; i++) {                                                                \
        int e = tid + 128 * i, row = e >> 3, c4 = (e & 7) * 4, gm = m0 + row;                    \
        xr[i] = gm < T ? vload4(0, x + (size_t)gm * n_in + (k0) + c4) : (float4)(0.0f);          \
        int e2 = tid + 128 * i, rown = e2 >> 2, c8 = (e2 & 3) * 8, gn = n0 + rown;               \
        wr[i] = gn < n_out ? *(__global const uint4*)(w + (size_t)gn * n_in + (k0) + c8) : (uint4)(0u); \
    }
#define STORE_TILE()                                                                             \
    for (int i = 0; i < 4; i++) {                                                                \
        int e = tid + 128 * i, row = e >> 3, c4 = (e & 7) * 4;                                   \
        __local uint* p = as + (row * LDS + c4) / 2;                                             \
        p[0] = pack2(xr[i].x, xr[i].y);                                                          \
        p[1] = pack2(xr[i].z, xr[i].w);                                                          \
        STORE_LO                                                                                 \
        int e2 = tid + 128 * i, rown = e2 >> 2, c8 = (e2 & 3) * 8;                               \
        __local uint* q = bs + (rown * LDS + c8) / 2;                                            \
        q[0] = wr[i].x; q[1] = wr[i].y; q[2] = wr[i].z; q[3] = wr[i].w;                          \
    }

#if SPLIT_X
#define STORE_LO { __local uint* pl = al + (row * LDS + c4) / 2;                                 \
                   pl[0] = pack2_lo(xr[i].x, xr[i].y); pl[1] = pack2_lo(xr[i].z, xr[i].w); }
#else
#define STORE_LO
#endif
    LOAD_TILE(0)
    for (int k0 = 0; k0 < n_in; k0 += BK) {
        barrier(CLK_LOCAL_MEM_FENCE);
        STORE_TILE()
        barrier(CLK_LOCAL_MEM_FENCE);
        if (k0 + BK < n_in) { LOAD_TILE(k0 + BK) }
#pragma unroll
        for (int ks = 0; ks < BK; ks += 16) {
            uint a[2][4], b[8][2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                int r = wm * 32 + i * 16 + g;
                a[i][0] = as[(r * LDS + ks + tg * 2) / 2];
                a[i][1] = as[((r + 8) * LDS + ks + tg * 2) / 2];
                a[i][2] = as[(r * LDS + ks + tg * 2 + 8) / 2];
                a[i][3] = as[((r + 8) * LDS + ks + tg * 2 + 8) / 2];
            }
#pragma unroll
            for (int j = 0; j < 8; j++) {
                int n = wn * 64 + j * 8 + g;
                b[j][0] = bs[(n * LDS + ks + tg * 2) / 2];
                b[j][1] = bs[(n * LDS + ks + tg * 2 + 8) / 2];
            }
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 8; j++) mma16816(acc[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b[j][0], b[j][1]);
#if SPLIT_X
#pragma unroll
            for (int i = 0; i < 2; i++) {
                int r = wm * 32 + i * 16 + g;
                a[i][0] = al[(r * LDS + ks + tg * 2) / 2];
                a[i][1] = al[((r + 8) * LDS + ks + tg * 2) / 2];
                a[i][2] = al[(r * LDS + ks + tg * 2 + 8) / 2];
                a[i][3] = al[((r + 8) * LDS + ks + tg * 2 + 8) / 2];
            }
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 8; j++) mma16816(acc[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b[j][0], b[j][1]);
#endif
        }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int n = n0 + wn * 64 + j * 8 + tg * 2;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int m = m0 + wm * 32 + i * 16 + g + h * 8;
                if (m >= T) continue;
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    if (n + c < n_out) {
                        float v = acc[i][j][2 * h + c] + (has_bias ? bias[n + c] : 0.0f);
                        y[(size_t)m * n_out + n + c] = apply_act(v, act);
                    }
                }
            }
        }
    }
}


// x [T, n_in] float32 -> 16-bit hi (and, with SPLIT_X, lo) copies, once per linear: the GEMM
// below then reads both operands as 16-bit and converts nothing in its loop.
__kernel void to16(__global const float* restrict x, __global uint* restrict hi, __global uint* restrict lo,
                   const int n2) {
    int i = get_global_id(0);
    if (i >= n2) return;
    float2 v = vload2(i, x);
    hi[i] = pack2(v.x, v.y);
#if SPLIT_X
    lo[i] = pack2_lo(v.x, v.y);
#endif
}

#ifdef WM
// The same product from 16-bit x. WM x WN warps, each MT x NL mma tiles (16 x 8 each) of y:
// BM = 16 MT WM rows of x, BN = 8 NL WN rows of W, k in steps of KB (32 or 64).
#ifndef WN
#define WN 2
#endif
#ifndef MT
#define MT 2
#endif
#ifndef NL
#define NL 8
#endif
#ifndef KB
#define KB 32
#endif
#define BM2 (16 * MT * WM)
#define BN2 (8 * NL * WN)
#define NT2 (32 * WM * WN)
#define LD2 (KB + 8)
#define CPR (KB / 8)                    // 16-byte chunks per tile row
#define NA ((BM2 * CPR) / NT2)          // x chunks per work-item per k step
#define NB2 ((BN2 * CPR) / NT2)         // W chunks per work-item per k step
__kernel __attribute__((reqd_work_group_size(NT2, 1, 1)))
void gemm_mma16(__global const ushort* restrict w, __global const ushort* restrict xh,
                __global const ushort* restrict xl, __global const float* restrict bias,
                __global float* restrict y, const int T, const int n_in, const int n_out,
                const int has_bias, const int act) {
    __local uint as[BM2 * LD2 / 2];
#if SPLIT_X
    __local uint al[BM2 * LD2 / 2];
#endif
    __local uint bs[BN2 * LD2 / 2];
    const int tid = get_local_id(0), lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;
    const int g = lane >> 2, tg = lane & 3;
    const int n0 = get_group_id(0) * BN2, m0 = get_group_id(1) * BM2;

    MMA_ACC_ZEROED(acc);

    uint4 xr[NA], wr[NB2];
#if SPLIT_X
    uint4 xlr[NA];
#endif
#define LOAD16(k0)                                                                               \
    for (int i = 0; i < NA; i++) {                                                               \
        int e = tid + NT2 * i, row = e / CPR, c8 = (e % CPR) * 8, gm = m0 + row;                 \
        size_t off = (size_t)gm * n_in + (k0) + c8;                                              \
        xr[i] = gm < T ? *(__global const uint4*)(xh + off) : (uint4)(0u);                       \
        LOADLO                                                                                   \
    }                                                                                            \
    for (int i = 0; i < NB2; i++) {                                                              \
        int e = tid + NT2 * i, rown = e / CPR, c8 = (e % CPR) * 8, gn = n0 + rown;               \
        wr[i] = gn < n_out ? *(__global const uint4*)(w + (size_t)gn * n_in + (k0) + c8) : (uint4)(0u); \
    }
#define STORE16()                                                                                \
    for (int i = 0; i < NA; i++) {                                                               \
        int e = tid + NT2 * i, row = e / CPR, c8 = (e % CPR) * 8;                                \
        __local uint* p = as + (row * LD2 + c8) / 2;                                             \
        p[0] = xr[i].x; p[1] = xr[i].y; p[2] = xr[i].z; p[3] = xr[i].w;                          \
        STORELO                                                                                  \
    }                                                                                            \
    for (int i = 0; i < NB2; i++) {                                                              \
        int e = tid + NT2 * i, rown = e / CPR, c8 = (e % CPR) * 8;                               \
        __local uint* q = bs + (rown * LD2 + c8) / 2;                                            \
        q[0] = wr[i].x; q[1] = wr[i].y; q[2] = wr[i].z; q[3] = wr[i].w;                          \
    }
#if SPLIT_X
#define LOADLO xlr[i] = gm < T ? *(__global const uint4*)(xl + off) : (uint4)(0u);
#define STORELO { __local uint* pl = al + (row * LD2 + c8) / 2;                                  \
                  pl[0] = xlr[i].x; pl[1] = xlr[i].y; pl[2] = xlr[i].z; pl[3] = xlr[i].w; }
#else
#define LOADLO
#define STORELO
#endif

    LOAD16(0)
    for (int k0 = 0; k0 < n_in; k0 += KB) {
        barrier(CLK_LOCAL_MEM_FENCE);
        STORE16()
        barrier(CLK_LOCAL_MEM_FENCE);
        if (k0 + KB < n_in) { LOAD16(k0 + KB) }
#pragma unroll
        for (int ks = 0; ks < KB; ks += 16) {
            uint b[NL][2];
#pragma unroll
            for (int j = 0; j < NL; j++) {
                int n = wn * 8 * NL + j * 8 + g;
                b[j][0] = bs[(n * LD2 + ks + tg * 2) / 2];
                b[j][1] = bs[(n * LD2 + ks + tg * 2 + 8) / 2];
            }
#pragma unroll
            for (int i = 0; i < MT; i++) {
                int r = wm * 16 * MT + i * 16 + g;
                uint a0 = as[(r * LD2 + ks + tg * 2) / 2], a1 = as[((r + 8) * LD2 + ks + tg * 2) / 2];
                uint a2 = as[(r * LD2 + ks + tg * 2 + 8) / 2], a3 = as[((r + 8) * LD2 + ks + tg * 2 + 8) / 2];
#pragma unroll
                for (int j = 0; j < NL; j++) mma16816(acc[i][j], a0, a1, a2, a3, b[j][0], b[j][1]);
#if SPLIT_X
                a0 = al[(r * LD2 + ks + tg * 2) / 2]; a1 = al[((r + 8) * LD2 + ks + tg * 2) / 2];
                a2 = al[(r * LD2 + ks + tg * 2 + 8) / 2]; a3 = al[((r + 8) * LD2 + ks + tg * 2 + 8) / 2];
#pragma unroll
                for (int j = 0; j < NL; j++) mma16816(acc[i][j], a0, a1, a2, a3, b[j][0], b[j][1]);
#endif
            }
        }
    }
#pragma unroll
    for (int i = 0; i < MT; i++) {
#pragma unroll
        for (int j = 0; j < NL; j++) {
            int n = n0 + wn * 8 * NL + j * 8 + tg * 2;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int m = m0 + wm * 16 * MT + i * 16 + g + h * 8;
                if (m >= T) continue;
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    if (n + c < n_out) {
                        float v = acc[i][j][2 * h + c] + (has_bias ? bias[n + c] : 0.0f);
                        y[(size_t)m * n_out + n + c] = apply_act(v, act);
                    }
                }
            }
        }
    }
}
#endif
