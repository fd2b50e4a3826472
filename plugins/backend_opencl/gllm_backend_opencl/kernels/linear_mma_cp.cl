// y = act(x @ W.T + b) on NVIDIA matrix units (sm_80+) from 16-bit x (made once per call by
// linear_mma.cl's to16), a multi-stage pipeline: tiles go from global to local memory through
// cp.async (no register staging), ST stages in flight, and the mma fragments come out of local
// memory through ldmatrix. Inline PTX throughout (NVIDIA's OpenCL passes it through); a __local
// pointer cast to an integer is its shared-window address, which cp.async and ldmatrix take.
//
// Compile-time: WM x WN warps, each MT x NL mma tiles (16 x 8) of y, so BM = 16 MT WM rows of x
// and BN = 8 NL WN rows of W per work-group; k in steps of 32 (4 chunks of 16 bytes per tile
// row, stored XOR-swizzled so the 8 rows an ldmatrix reads hit 8 distinct bank groups); ST stages.
// SPLIT_X: x as hi + lo halves (float32 accuracy, twice the matrix work). NL must be even.
// Needs n_in % 32 == 0. NO_PTX: compile check only (PoCL), the arithmetic is meaningless.

#define CBM (16 * MT * WM)
#define CBN (8 * NL * WN)
#define CNT (32 * WM * WN)
#define CKB 32
#define CA_PER ((CBM * 4) / CNT)   // 16-byte chunks of the x tile per work-item per stage
#define CB_PER ((CBN * 4) / CNT)   // of the W tile

#if WDTYPE == 2
#define CMMA_TYPE "bf16"
#else
#define CMMA_TYPE "f16"
#endif

// byte offset of chunk c (0..3) of tile row r in a stage: rows of 64 bytes, chunks swizzled
#define SWZ(r, c) ((((r) << 2) + ((c) ^ (((r) >> 1) & 3))) << 4)

inline uint smem_addr(__local const void* p) { return (uint)(size_t)p; }

inline void cp16(uint dst, __global const void* src, int bytes) {
#ifdef NO_PTX
    (void)dst; (void)src; (void)bytes;
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
#endif
}
inline void cp_commit(void) {
#ifndef NO_PTX
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
#define STR_(x) #x
#define STR(x) STR_(x)
#ifdef NO_PTX
#define CP_WAIT(n)
#else
#define CP_WAIT(n) asm volatile("cp.async.wait_group " STR(n) ";" ::: "memory")
#endif

inline void ldm4(uint addr, uint* r) {
#ifdef NO_PTX
    r[0] = addr; r[1] = addr + 1; r[2] = addr + 2; r[3] = addr + 3;
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
#endif
}

inline void cmma(float* c, const uint* a, uint b0, uint b1) {
#ifdef NO_PTX
    c[0] += as_float(a[0] ^ b0); c[1] += as_float(a[1] ^ b1); c[2] += as_float(a[2]); c[3] += as_float(a[3]);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." CMMA_TYPE "." CMMA_TYPE ".f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// the 16-byte chunks of one operand's tile that a work-item copies at every stage (PER of them):
// P_src their global addresses at k = 0 (rows from row0; past the operand's `rows` rows the last
// row's, with P_ok 0 bytes to copy, else 16), P_dst their swizzled local offsets
#define CHUNKS(P, PER, src, row0, rows)                                                          \
    __global const ushort* P##_src[PER];                                                         \
    uint P##_dst[PER];                                                                           \
    int P##_ok[PER];                                                                             \
    _Pragma("unroll") for (int i = 0; i < PER; i++) {                                            \
        int e = tid + CNT * i, r = e >> 2, c = e & 3, g = row0 + r;                              \
        P##_ok[i] = g < rows ? 16 : 0;                                                           \
        P##_src[i] = src + (size_t)min(g, rows - 1) * n_in + c * 8;                              \
        P##_dst[i] = SWZ(r, c);                                                                  \
    }

__kernel __attribute__((reqd_work_group_size(CNT, 1, 1)))
void gemm_mma_cp(__global const ushort* restrict w, __global const ushort* restrict xh,
                 __global const ushort* restrict xl, __global const float* restrict bias,
                 __global float* restrict y, const int T, const int n_in, const int n_out,
                 const int has_bias, const int act) {
    __local uint4 sa[ST * CBM * 4];
#if SPLIT_X
    __local uint4 sl[ST * CBM * 4];
#endif
    __local uint4 sb[ST * CBN * 4];
    const int tid = get_local_id(0), lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;
    const int n0 = get_group_id(0) * CBN, m0 = get_group_id(1) * CBM;
    const uint a_base = smem_addr(sa), b_base = smem_addr(sb);
#if SPLIT_X
    const uint l_base = smem_addr(sl);
#endif
    const int nk = n_in / CKB;

    MMA_ACC_ZEROED(acc);

    // this work-item's chunks: fixed rows and chunk columns, only k moves
    CHUNKS(a, CA_PER, xh, m0, T)
    CHUNKS(b, CB_PER, w, n0, n_out)

#define LOAD_STAGE(s, kt)                                                                         \
    {                                                                                             \
        const int kofs = (kt) * CKB;                                                              \
        for (int i = 0; i < CA_PER; i++) {                                      \
            cp16(a_base + (s) * (CBM * 64) + a_dst[i], a_src[i] + kofs, a_ok[i]);                \
            LOAD_LO(s, i, kofs)                                                                   \
        }                                                                                         \
        for (int i = 0; i < CB_PER; i++)                                        \
            cp16(b_base + (s) * (CBN * 64) + b_dst[i], b_src[i] + kofs, b_ok[i]);                 \
    }
#if SPLIT_X
#define LOAD_LO(s, i, kofs) cp16(l_base + (s) * (CBM * 64) + a_dst[i], xl + (a_src[i] - xh) + kofs, a_ok[i]);
#else
#define LOAD_LO(s, i, kofs)
#endif

#pragma unroll
    for (int s = 0; s < ST - 1; s++) {
        if (s < nk) LOAD_STAGE(s, s)
        cp_commit();
    }
    // ldmatrix lane addresses within a stage (byte offsets), for k chunk pair 0; chunk pair 1 flips c by 2
    uint a_lane[MT];
#pragma unroll
    for (int i = 0; i < MT; i++) {
        int r = wm * 16 * MT + i * 16 + (lane & 15);
        a_lane[i] = SWZ(r, lane >> 4);
    }
    uint b_lane[NL / 2];
#pragma unroll
    for (int j = 0; j < NL / 2; j++) {
        int mi = lane >> 3, r = wn * 8 * NL + j * 16 + (mi >> 1) * 8 + (lane & 7);
        b_lane[j] = SWZ(r, mi & 1);
    }

    for (int kt = 0; kt < nk; kt++) {
        CP_WAIT(ST - 2);
        barrier(CLK_LOCAL_MEM_FENCE);
        {
            const int kn = kt + ST - 1;
            if (kn < nk) LOAD_STAGE(kn % ST, kn)
            cp_commit();
        }
        const int s = kt % ST;
        const uint sa_s = a_base + s * (CBM * 64), sb_s = b_base + s * (CBN * 64);
#if SPLIT_X
        const uint sl_s = l_base + s * (CBM * 64);
#endif
#pragma unroll
        for (int ks = 0; ks < 2; ks++) {
            // chunk c -> c ^ 2 moves from k 0..15 to 16..31 (the swizzle XORs the low bits only)
            const uint flip = ks * 32;
            uint b[NL][2];
#pragma unroll
            for (int j = 0; j < NL / 2; j++) {
                uint r4[4];
                ldm4(sb_s + (b_lane[j] ^ flip), r4);
                b[2 * j][0] = r4[0]; b[2 * j][1] = r4[1]; b[2 * j + 1][0] = r4[2]; b[2 * j + 1][1] = r4[3];
            }
#pragma unroll
            for (int i = 0; i < MT; i++) {
                uint a[4];
                ldm4(sa_s + (a_lane[i] ^ flip), a);
#pragma unroll
                for (int j = 0; j < NL; j++) cmma(acc[i][j], a, b[j][0], b[j][1]);
#if SPLIT_X
                ldm4(sl_s + (a_lane[i] ^ flip), a);
#pragma unroll
                for (int j = 0; j < NL; j++) cmma(acc[i][j], a, b[j][0], b[j][1]);
#endif
            }
        }
    }
    CP_WAIT(0);

    const int g = lane >> 2, tg = lane & 3;
#pragma unroll
    for (int i = 0; i < MT; i++) {
#pragma unroll
        for (int j = 0; j < NL; j++) {
            int n = n0 + wn * 8 * NL + j * 8 + tg * 2;
            float b0 = 0.0f, b1 = 0.0f;
            if (has_bias) {
                b0 = n < n_out ? bias[n] : 0.0f;
                b1 = n + 1 < n_out ? bias[n + 1] : 0.0f;
            }
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int m = m0 + wm * 16 * MT + i * 16 + g + h * 8;
                if (m >= T) continue;
                __global float* yr = y + (size_t)m * n_out;
                if (n < n_out) yr[n] = apply_act(acc[i][j][2 * h] + b0, act);
                if (n + 1 < n_out) yr[n + 1] = apply_act(acc[i][j][2 * h + 1] + b1, act);
            }
        }
    }
}
