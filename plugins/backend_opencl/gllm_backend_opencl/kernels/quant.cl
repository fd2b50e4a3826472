// Linear layers and embedding lookups straight from GGML block-quantized weights, as the file
// stores them (llama.cpp ggml-common.h layouts: little-endian, packed, blocks unaligned). One
// program per type (QTYPE); the only type-specific code is deq8, which turns 8 consecutive weights
// of a block into floats with the operations of gguf-py's dequantisers, so x @ dequant(W).T is
// computed in float32 (nothing rounds x). Everything else (matrix-vector for decode rows, tiles
// for prompts, the embedding gather) is shared.

#define Q4_0 2
#define Q4_1 3
#define Q5_0 6
#define Q5_1 7
#define Q8_0 8
#define Q2_K 10
#define Q3_K 11
#define Q4_K 12
#define Q5_K 13
#define Q6_K 14

typedef __global const uchar* block_ptr;

inline float f16_at(block_ptr p) { return f16_bits((uint)p[0] | ((uint)p[1] << 8)); }

inline float8 u8f(uchar8 v) { return convert_float8(v); }

#if QTYPE == Q4_0 || QTYPE == Q4_1 || QTYPE == Q5_0 || QTYPE == Q5_1 || QTYPE == Q8_0
#define QK 32
#else
#define QK 256
#endif

#if QTYPE == Q4_0
// block_q4_0 { half d; uchar qs[16]; }: weight j < 16 in qs[j]'s low nibble, j + 16 in its high
#define TYPE_SIZE 18
inline float8 deq8(block_ptr b, int c) {
    uchar8 q = (vload8(0, b + 2 + 8 * (c & 1)) >> (uchar)(4 * (c >> 1))) & (uchar)15;
    return f16_at(b) * (u8f(q) - 8.0f);
}
#elif QTYPE == Q4_1
// block_q4_1 { half d; half m; uchar qs[16]; }: d * q + m
#define TYPE_SIZE 20
inline float8 deq8(block_ptr b, int c) {
    uchar8 q = (vload8(0, b + 4 + 8 * (c & 1)) >> (uchar)(4 * (c >> 1))) & (uchar)15;
    return f16_at(b) * u8f(q) + f16_at(b + 2);
}
#elif QTYPE == Q5_0 || QTYPE == Q5_1
// block_q5_0 { half d; uchar qh[4]; uchar qs[16]; }: bit j of qh (little-endian) is weight j's 5th
// bit; block_q5_1 adds half m after d
#if QTYPE == Q5_0
#define TYPE_SIZE 22
#define QH 2
#else
#define TYPE_SIZE 24
#define QH 4
#endif
inline float8 deq8(block_ptr b, int c) {
    uchar8 q = (vload8(0, b + QH + 4 + 8 * (c & 1)) >> (uchar)(4 * (c >> 1))) & (uchar)15;
    uchar8 h = ((uchar8)(b[QH + c]) >> (uchar8)(0, 1, 2, 3, 4, 5, 6, 7)) & (uchar)1;
    q |= h << (uchar)4;
#if QTYPE == Q5_0
    return f16_at(b) * (u8f(q) - 16.0f);
#else
    return f16_at(b) * u8f(q) + f16_at(b + 2);
#endif
}
#elif QTYPE == Q8_0
// block_q8_0 { half d; char qs[32]; }
#define TYPE_SIZE 34
inline float8 deq8(block_ptr b, int c) {
    return f16_at(b) * convert_float8(as_char8(vload8(0, b + 2 + 8 * c)));
}
#elif QTYPE == Q2_K
// block_q2_K { uchar scales[16]; uchar qs[64]; half d; half dmin; }: weight v = 128h + 32k + p is
// bits 2k..2k+1 of qs[32h + p]; group v / 16 has scale (low nibble) and min (high nibble)
#define TYPE_SIZE 84
inline float8 deq8(block_ptr b, int c) {
    int h = c >> 4, k = (c >> 2) & 3, p = 8 * (c & 3);
    uchar8 q = (vload8(0, b + 16 + 32 * h + p) >> (uchar)(2 * k)) & (uchar)3;
    uint sc = b[c >> 1];
    float dl = f16_at(b + 80) * (float)(sc & 15u), ml = f16_at(b + 82) * (float)(sc >> 4);
    return dl * u8f(q) - ml;
}
#elif QTYPE == Q3_K
// block_q3_K { uchar hmask[32]; uchar qs[64]; uchar scales[12]; half d; }: low 2 bits as in Q2_K,
// weight v = 32b + p less 4 unless bit b of hmask[p] is set; 16 six-bit scales less 32
#define TYPE_SIZE 110
inline float8 deq8(block_ptr b, int c) {
    int h = c >> 4, k = (c >> 2) & 3, p = 8 * (c & 3), s = c >> 1;
    uchar8 ql = (vload8(0, b + 32 + 32 * h + p) >> (uchar)(2 * k)) & (uchar)3;
    uchar8 hb = (vload8(0, b + p) >> (uchar)(c >> 2)) & (uchar)1;
    float8 q = u8f(ql) - 4.0f * (1.0f - u8f(hb));
    int low = (b[96 + (s & 7)] >> (4 * (s >> 3))) & 15, high = (b[104 + (s & 3)] >> (2 * (s >> 2))) & 3;
    float dl = f16_at(b + 108) * (float)((low | (high << 4)) - 32);
    return dl * q;
}
#elif QTYPE == Q4_K || QTYPE == Q5_K
// block_q4_K { half d; half dmin; uchar scales[12]; uchar qs[128]; }: 8 groups of 32, weight
// v = 64i + 32j + p is nibble j of qs[32i + p]; block_q5_K adds qh[32] before qs, bit g of qh[p]
// being the 5th bit of position p in group g. Six-bit scales and mins packed as in k_scale_min.
#if QTYPE == Q4_K
#define TYPE_SIZE 144
#define QS 16
#else
#define TYPE_SIZE 176
#define QS 48
#endif
inline float8 deq8(block_ptr b, int c) {
    int g = c >> 2, p = 8 * (c & 3);
    uchar8 q = (vload8(0, b + QS + 32 * (g >> 1) + p) >> (uchar)(4 * (g & 1))) & (uchar)15;
#if QTYPE == Q5_K
    q |= ((vload8(0, b + 16 + p) >> (uchar)g) & (uchar)1) << (uchar)4;
#endif
    block_ptr s = b + 4;
    uint sc, mn;
    if (g < 4) {
        sc = s[g] & 63u;
        mn = s[g + 4] & 63u;
    } else {
        sc = (s[g + 4] & 15u) | ((s[g - 4] >> 6) << 4);
        mn = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
    }
    float dl = f16_at(b) * (float)sc, ml = f16_at(b + 2) * (float)mn;
    return dl * u8f(q) - ml;
}
#elif QTYPE == Q6_K
// block_q6_K { uchar ql[128]; uchar qh[64]; char scales[16]; half d; }: weight v = 128h + r has
// nibble r / 64 of ql[64h + r % 64] and bits 2(r / 32).. of qh[32h + r % 32], less 32
#define TYPE_SIZE 210
inline float8 deq8(block_ptr b, int c) {
    int h = c >> 4, r = 8 * (c & 15);
    uchar8 lo = (vload8(0, b + 64 * h + (r & 63)) >> (uchar)(4 * (r >> 6))) & (uchar)15;
    uchar8 hi = (vload8(0, b + 128 + 32 * h + (r & 31)) >> (uchar)(2 * (r >> 5))) & (uchar)3;
    float8 q = u8f(lo | (hi << (uchar)4)) - 32.0f;
    float dl = f16_at(b + 208) * (float)as_char(b[192 + (c >> 1)]);
    return dl * q;
}
#else
#error "QTYPE names no quant type with kernels"
#endif

#define CHUNKS (QK / 8)  // 8-weight chunks per block

// the chunk of 8 weights that starts at column 8 * k of a row
inline float8 row_chunk(block_ptr row, int k) {
    return deq8(row + (size_t)(k / CHUNKS) * TYPE_SIZE, k % CHUNKS);
}

// -- matrix-vector (decode): T <= NT rows of x ------------------------------------------------------
// A work-group is WARPS groups of LANES work-items; each group serves RPT weight rows. Lane l
// takes chunks l, l + LANES, ... of the row (neighbouring lanes read neighbouring bytes), every x
// chunk it loads serves all RPT rows, and lane sums meet in local memory.
inline void qgemv(block_ptr w, __global const float* restrict x, __global const float* restrict bias,
                  __global float* restrict y, const int T, const int n_in, const int n_out, const int has_bias,
                  const int act, __local float* red, const int NT, const int RPT) {
    const int lane = get_local_id(0), warp = get_local_id(1);
    const int o0 = (get_group_id(0) * WARPS + warp) * RPT;
    const size_t row_bytes = (size_t)(n_in / QK) * TYPE_SIZE;
    const int nk = n_in / 8;
    float acc[2][8];
    for (int r = 0; r < RPT; r++)
        for (int t = 0; t < NT; t++) acc[r][t] = 0.0f;
    for (int k = lane; k < nk; k += LANES) {
        float8 xv[8];
        for (int t = 0; t < NT; t++) {
            if (t < T) {
                __global const float4* xp = (__global const float4*)(x + (size_t)t * n_in + 8 * k);
                xv[t] = (float8)(xp[0], xp[1]);
            }
        }
        for (int r = 0; r < RPT; r++) {
            if (o0 + r < n_out) {
                float8 wv = row_chunk(w + (size_t)(o0 + r) * row_bytes, k);
                for (int t = 0; t < NT; t++)
                    if (t < T) acc[r][t] += dot8(wv, xv[t]);
            }
        }
    }
    __local float* mine = red + warp * (16 * (LANES + 1));
    for (int r = 0; r < RPT; r++)
        for (int t = 0; t < NT; t++) mine[(r * NT + t) * (LANES + 1) + lane] = acc[r][t];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int slot = lane; slot < RPT * NT; slot += LANES) {
        int r = slot / NT, t = slot % NT, o = o0 + r;
        if (o < n_out && t < T) {
            float s = 0.0f;
            for (int l = 0; l < LANES; l++) s += mine[slot * (LANES + 1) + l];
            if (has_bias) s += bias[o];
            y[(size_t)t * n_out + o] = apply_act(s, act);
        }
    }
}

#define QGEMV(NT, RPT)                                                                                      \
__kernel __attribute__((reqd_work_group_size(LANES, WARPS, 1)))                                             \
void qgemv_##NT(block_ptr w, __global const float* restrict x, __global const float* restrict bias,         \
                __global float* restrict y, const int T, const int n_in, const int n_out, const int has_bias, \
                const int act) {                                                                            \
    __local float red[WARPS * 16 * (LANES + 1)];                                                            \
    qgemv(w, x, bias, y, T, n_in, n_out, has_bias, act, red, NT, RPT);                                      \
}
QGEMV(1, 1)
QGEMV(2, 1)
QGEMV(4, 2)
QGEMV(8, 2)

#if QTYPE == Q4_K
// Q4_K matrix-vector with wide loads (decode, 1 or 2 rows of x): 8 lanes share a block, lane c
// reads 16 bytes of its qs (c / 2 picks the 32-byte pair of groups, c % 2 the half), which hold
// 16 weights of group 2i (low nibbles) and the 16 at the same places of group 2i + 1 (high
// nibbles); d, dmin and the 12 scale bytes come as whole words. Per group the lane sums q * x and
// x, then applies d * sc and dmin * m once: the same function as x @ dequant(W).T.
inline uint sbyte(uint s0, uint s1, uint s2, int k) {
    uint v = k < 4 ? s0 : (k < 8 ? s1 : s2);
    return (v >> (8 * (k & 3))) & 255u;
}

inline void k4_scale_min(uint s0, uint s1, uint s2, int g, float* sc, float* mn) {
    if (g < 4) {
        *sc = (float)(sbyte(s0, s1, s2, g) & 63u);
        *mn = (float)(sbyte(s0, s1, s2, g + 4) & 63u);
    } else {
        *sc = (float)((sbyte(s0, s1, s2, g + 4) & 15u) | ((sbyte(s0, s1, s2, g - 4) >> 6) << 4));
        *mn = (float)((sbyte(s0, s1, s2, g + 4) >> 4) | ((sbyte(s0, s1, s2, g) >> 6) << 4));
    }
}

// One row of x, RPT weight rows per warp: a lane loads its 32 x values (two runs of 16) once per
// block and uses them for all RPT rows (x is float32, 7x the bytes of the 4.5-bit weights it meets:
// read per row, it would bound the kernel by the L1's bandwidth).
#ifndef K4_RPT
#define K4_RPT 4
#endif
__kernel __attribute__((reqd_work_group_size(LANES, WARPS, 1)))
void q4k_gemv_1(block_ptr w, __global const float* restrict x, __global const float* restrict bias,
                __global float* restrict y, const int T, const int n_in, const int n_out, const int has_bias,
                const int act) {
    __local float red[WARPS][K4_RPT][LANES + 1];
    const int lane = get_local_id(0), warp = get_local_id(1);
    const int o0 = (get_group_id(0) * WARPS + warp) * K4_RPT;
    const int nb = n_in / 256;
    const int c = lane & 7, i = c >> 1, hh = c & 1;
    const size_t row_bytes = (size_t)nb * TYPE_SIZE;
    float acc[K4_RPT];
    block_ptr rows[K4_RPT];
#pragma unroll
    for (int r = 0; r < K4_RPT; r++) {
        acc[r] = 0.0f;
        rows[r] = w + (size_t)min(o0 + r, n_out - 1) * row_bytes;
    }
    for (int b = lane >> 3; b < nb; b += LANES / 8) {
        __global const float4* x0 = (__global const float4*)(x + 256 * b + 64 * i + 16 * hh);
        __global const float4* x1 = x0 + 8;  // 32 columns on: group 2i + 1
        const float4 a0 = x0[0], a1 = x0[1], a2 = x0[2], a3 = x0[3];
        const float4 b0 = x1[0], b1 = x1[1], b2 = x1[2], b3 = x1[3];
        const float4 sa = (a0 + a1) + (a2 + a3), sb = (b0 + b1) + (b2 + b3);
        const float sum0 = (sa.x + sa.y) + (sa.z + sa.w), sum1 = (sb.x + sb.y) + (sb.z + sb.w);
#pragma unroll
        for (int r = 0; r < K4_RPT; r++) {
            block_ptr blk = rows[r] + (size_t)b * TYPE_SIZE;
            const uint dd = *(__global const uint*)blk;
            const uint s0 = *(__global const uint*)(blk + 4), s1 = *(__global const uint*)(blk + 8),
                       s2 = *(__global const uint*)(blk + 12);
            const uint4 q = *(__global const uint4*)(blk + 16 + 32 * i + 16 * hh);
            float sc0, mn0, sc1, mn1;
            k4_scale_min(s0, s1, s2, 2 * i, &sc0, &mn0);
            k4_scale_min(s0, s1, s2, 2 * i + 1, &sc1, &mn1);
            const float d = f16_bits(dd & 0xffffu), dmin = f16_bits(dd >> 16);
#define LO(u) (float4)((float)((u) & 15u), (float)(((u) >> 8) & 15u), (float)(((u) >> 16) & 15u), (float)(((u) >> 24) & 15u))
#define HI(u) (float4)((float)(((u) >> 4) & 15u), (float)(((u) >> 12) & 15u), (float)(((u) >> 20) & 15u), (float)((u) >> 28))
            const float dot0 = dot(LO(q.x), a0) + dot(LO(q.y), a1) + dot(LO(q.z), a2) + dot(LO(q.w), a3);
            const float dot1 = dot(HI(q.x), b0) + dot(HI(q.y), b1) + dot(HI(q.z), b2) + dot(HI(q.w), b3);
#undef LO
#undef HI
            acc[r] += (d * sc0) * dot0 - (dmin * mn0) * sum0 + (d * sc1) * dot1 - (dmin * mn1) * sum1;
        }
    }
#pragma unroll
    for (int r = 0; r < K4_RPT; r++) red[warp][r][lane] = acc[r];
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lane < K4_RPT && o0 + lane < n_out) {
        float s = 0.0f;
        for (int l = 0; l < LANES; l++) s += red[warp][lane][l];
        if (has_bias) s += bias[o0 + lane];
        y[o0 + lane] = apply_act(s, act);
    }
}
#endif

// -- tiles (prompts) ---------------------------------------------------------------------------------
// A 16x16 work-group computes a 64 x 64 tile of y (4 x 4 per work-item) in k steps of 32 columns:
// each step stages 64 rows of x and 64 weight rows' 32 columns, dequantised once (one 8-weight
// chunk per work-item), in local memory.
#define BM 64
#define BN 64
#define BK 32
__kernel __attribute__((reqd_work_group_size(16, 16, 1)))
void qgemm(block_ptr w, __global const float* restrict x, __global const float* restrict bias,
           __global float* restrict y, const int T, const int n_in, const int n_out, const int has_bias,
           const int act) {
    __local float xs[BK][BM + 1];
    __local float ws[BK][BN + 1];
    const int tx = get_local_id(0), ty = get_local_id(1), tid = ty * 16 + tx;
    const int n0 = get_group_id(0) * BN, m0 = get_group_id(1) * BM;
    const size_t row_bytes = (size_t)(n_in / QK) * TYPE_SIZE;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    const int wrow = tid >> 2, wk = tid & 3, gn = n0 + wrow;  // this item's weight chunk in the tile
    for (int k0 = 0; k0 < n_in; k0 += BK) {  // n_in is a whole number of blocks: no ragged k step
        for (int e = tid; e < BM * BK; e += 256) {
            int row = e / BK, kk = e % BK, gm = m0 + row;
            xs[kk][row] = gm < T ? x[(size_t)gm * n_in + k0 + kk] : 0.0f;
        }
        float8 wv = gn < n_out ? row_chunk(w + (size_t)gn * row_bytes, k0 / 8 + wk) : (float8)(0.0f);
        float wa[8];
        vstore8(wv, 0, wa);
#pragma unroll
        for (int e = 0; e < 8; e++) ws[8 * wk + e][wrow] = wa[e];
        barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll 8
        for (int kk = 0; kk < BK; kk++) {
            float a[4], bb[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = xs[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; j++) bb[j] = ws[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * bb[j];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int m = m0 + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int n = n0 + tx + 16 * j;
            if (m < T && n < n_out) {
                float v = acc[i][j] + (has_bias ? bias[n] : 0.0f);
                y[(size_t)m * n_out + n] = apply_act(v, act);
            }
        }
    }
}

// -- embedding lookup: rows of a quantized [V, D] table, one 8-weight chunk per work-item ------------
__kernel void qembedding(block_ptr table, __global const int* ids, __global float* y, const int v, const int d,
                         const int t_count) {
    int k = get_global_id(0), t = get_global_id(1);
    if (8 * k >= d || t >= t_count) return;
    int id = clamp(ids[t], 0, v - 1);
    float8 wv = row_chunk(table + (size_t)id * (size_t)(d / QK) * TYPE_SIZE, k);
    vstore8(wv, 0, y + (size_t)t * d + 8 * k);
}
