// Prefill attention on NVIDIA matrix units (sm_80+, inline PTX mma.sync m16n8k16, f16 in, f32
// accumulate), flash style: precision "fast" only (q, k, v and the probabilities rounded to f16,
// as PyTorch's f16 attention computes). Same arguments and batch layout as attention.cl's
// `attention` (packed sequences through cu_seqlens, causal, sliding window, GQA, q/k/v column
// views, keys and values read through KV-cache row indices).
//
// A work-group of 4 warps serves 64 query rows of one query head; each warp 16 rows. Keys and
// values stream through local memory in blocks of 64 as f16 (values transposed, so a warp's
// B fragments are 32-bit reads); scores stay in registers, the softmax is online (exp2, running
// max per row, partial sums per lane summed at the end), the probabilities become the A
// fragments of P.V without leaving registers. Compile-time: D (head dim, multiple of 16, <= 128).
// NO_PTX: compile check only.

#define QB 64
#define KVB 64
#define NTH 128
#define LDK (D + 8)          // halves per staged key row (fragment reads hit distinct banks)
#define LDV (KVB + 8)        // halves per staged (transposed) value row
#define DT (D / 8)           // output n-tiles per warp
#define KS (D / 16)          // k steps of Q.K^T

inline uint fpack2(float a, float b) {
    uint r;
#ifdef NO_PTX
    r = as_uint(a) ^ as_uint(b);
#else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(clamp(b, -65504.0f, 65504.0f)), "f"(clamp(a, -65504.0f, 65504.0f)));
#endif
    return r;
}

inline void amma(float* c, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1) {
#ifdef NO_PTX
    c[0] += as_float(a0 ^ b0); c[1] += as_float(a1 ^ b1); c[2] += as_float(a2); c[3] += as_float(a3);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

inline float quad_max(float v) {
#ifndef NO_PTX
    float t;
    asm volatile("shfl.sync.bfly.b32 %0, %1, 1, 0x1f, 0xffffffff;" : "=f"(t) : "f"(v));
    v = fmax(v, t);
    asm volatile("shfl.sync.bfly.b32 %0, %1, 2, 0x1f, 0xffffffff;" : "=f"(t) : "f"(v));
    v = fmax(v, t);
#endif
    return v;
}

inline float quad_sum(float v) {
#ifndef NO_PTX
    float t;
    asm volatile("shfl.sync.bfly.b32 %0, %1, 1, 0x1f, 0xffffffff;" : "=f"(t) : "f"(v));
    v += t;
    asm volatile("shfl.sync.bfly.b32 %0, %1, 2, 0x1f, 0xffffffff;" : "=f"(t) : "f"(v));
    v += t;
#endif
    return v;
}

__kernel __attribute__((reqd_work_group_size(NTH, 1, 1)))
void attention_mma(__global const float* restrict q, __global const float* restrict k,
                   __global const float* restrict v, __global float* restrict out,
                   __global const int* restrict blocks, __global const int* restrict cu_q,
                   __global const int* restrict cu_k, const float scale, const int causal,
                   const int window, const int group, const int hq, const int hkv,
                   const int q_stride, const int q_off, const int k_stride, const int k_off,
                   const int v_stride, const int v_off, __global const int* restrict kv_rows,
                   const int use_rows) {
    __local uint ks[KVB * LDK / 2];
    __local ushort vt[D * LDV];
    __local int krow[KVB];
    const int tid = get_local_id(0), lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tg = lane & 3;
    const int h = get_group_id(1), kvh = h / group;
    const int b = blocks[2 * get_group_id(0)], r0 = blocks[2 * get_group_id(0) + 1];
    const int q0 = cu_q[b], lq = cu_q[b + 1] - q0, k0 = cu_k[b], lk = cu_k[b + 1] - k0;
    const float sl2 = scale * 1.4426950408889634f;  // scores in log2 units: exp2 below

    // this warp's 16 query rows as A fragments (f16, scaled), rows qa and qa + 8
    const int qa = r0 + warp * 16 + g, qb_ = qa + 8;
    uint qf[KS][4];
    {
        __global const float* pa = q + (size_t)(q0 + min(qa, lq - 1)) * q_stride + q_off + h * D;
        __global const float* pb = q + (size_t)(q0 + min(qb_, lq - 1)) * q_stride + q_off + h * D;
#pragma unroll
        for (int s = 0; s < KS; s++) {
            int c = s * 16 + tg * 2;
            qf[s][0] = fpack2(pa[c] * sl2, pa[c + 1] * sl2);
            qf[s][1] = fpack2(pb[c] * sl2, pb[c + 1] * sl2);
            qf[s][2] = fpack2(pa[c + 8] * sl2, pa[c + 9] * sl2);
            qf[s][3] = fpack2(pb[c + 8] * sl2, pb[c + 9] * sl2);
        }
    }
    float o[DT][4];
#pragma unroll
    for (int j = 0; j < DT; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f;
    const int pos_a = lk - lq + qa, pos_b = lk - lq + qb_;  // key positions the rows sit at

    const int last = min(r0 + QB, lq) - 1;
    const int kend = causal ? min(lk, lk - lq + last + 1) : lk;
    const int kbeg = window > 0 ? max(0, lk - lq + r0 - window + 1) : 0;

    for (int kb = kbeg; kb < kend; kb += KVB) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (tid < KVB) {
            int kp = kb + tid;
            krow[tid] = kp < kend ? (use_rows ? kv_rows[k0 + kp] : k0 + kp) : -1;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        // stage keys (row-major) and values (transposed) as f16
        for (int e = tid; e < KVB * (D / 4); e += NTH) {
            int j = e / (D / 4), c = (e % (D / 4)) * 4, row = krow[j];
            float4 kv4 = (float4)(0.0f), vv4 = (float4)(0.0f);
            if (row >= 0) {
                kv4 = vload4(0, k + (size_t)row * k_stride + k_off + kvh * D + c);
                vv4 = vload4(0, v + (size_t)row * v_stride + v_off + kvh * D + c);
            }
            ks[(j * LDK + c) / 2] = fpack2(kv4.x, kv4.y);
            ks[(j * LDK + c) / 2 + 1] = fpack2(kv4.z, kv4.w);
            uint v01 = fpack2(vv4.x, vv4.y), v23 = fpack2(vv4.z, vv4.w);
            vt[(c + 0) * LDV + j] = (ushort)(v01 & 0xffffu);
            vt[(c + 1) * LDV + j] = (ushort)(v01 >> 16);
            vt[(c + 2) * LDV + j] = (ushort)(v23 & 0xffffu);
            vt[(c + 3) * LDV + j] = (ushort)(v23 >> 16);
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        // S = Q K^T for 64 keys: 8 n-tiles
        float s[8][4];
#pragma unroll
        for (int n = 0; n < 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int st = 0; st < KS; st++) {
#pragma unroll
            for (int n = 0; n < 8; n++) {
                int key = n * 8 + g;
                uint b0 = ks[(key * LDK + st * 16 + tg * 2) / 2];
                uint b1 = ks[(key * LDK + st * 16 + tg * 2 + 8) / 2];
                amma(s[n], qf[st][0], qf[st][1], qf[st][2], qf[st][3], b0, b1);
            }
        }
        // mask, running max
        float mxa = ma, mxb = mb;
#pragma unroll
        for (int n = 0; n < 8; n++) {
#pragma unroll
            for (int c = 0; c < 2; c++) {
                int kp = kb + n * 8 + tg * 2 + c;
                bool oka = kp < kend && (!causal || kp <= pos_a) && (window <= 0 || kp > pos_a - window);
                bool okb = kp < kend && (!causal || kp <= pos_b) && (window <= 0 || kp > pos_b - window);
                s[n][c] = oka ? s[n][c] : -INFINITY;
                s[n][2 + c] = okb ? s[n][2 + c] : -INFINITY;
                mxa = fmax(mxa, s[n][c]);
                mxb = fmax(mxb, s[n][2 + c]);
            }
        }
        mxa = quad_max(mxa);
        mxb = quad_max(mxb);
        const float ua = mxa == -INFINITY ? 0.0f : mxa, ub = mxb == -INFINITY ? 0.0f : mxb;
        const float alpha_a = exp2(ma - ua), alpha_b = exp2(mb - ub);
        ma = mxa;
        mb = mxb;
        la *= alpha_a;
        lb *= alpha_b;
#pragma unroll
        for (int j = 0; j < DT; j++) {
            o[j][0] *= alpha_a; o[j][1] *= alpha_a;
            o[j][2] *= alpha_b; o[j][3] *= alpha_b;
        }
        // P (f16 A fragments, 4 k-steps of 16 keys) and O += P V
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            float p0 = exp2(s[2 * kk][0] - ua), p1 = exp2(s[2 * kk][1] - ua);
            float p2 = exp2(s[2 * kk][2] - ub), p3 = exp2(s[2 * kk][3] - ub);
            float p4 = exp2(s[2 * kk + 1][0] - ua), p5 = exp2(s[2 * kk + 1][1] - ua);
            float p6 = exp2(s[2 * kk + 1][2] - ub), p7 = exp2(s[2 * kk + 1][3] - ub);
            la += p0 + p1 + p4 + p5;
            lb += p2 + p3 + p6 + p7;
            uint a0 = fpack2(p0, p1), a1 = fpack2(p2, p3), a2 = fpack2(p4, p5), a3 = fpack2(p6, p7);
#pragma unroll
            for (int j = 0; j < DT; j++) {
                int col = j * 8 + g;
                __local const uint* vr = (__local const uint*)(vt + col * LDV + kk * 16 + tg * 2);
                amma(o[j], a0, a1, a2, a3, vr[0], vr[4]);
            }
        }
    }
    la = quad_sum(la);
    lb = quad_sum(lb);
    const float ia = la > 0.0f ? 1.0f / la : 0.0f, ib = lb > 0.0f ? 1.0f / lb : 0.0f;
    const int dv = D;
#pragma unroll
    for (int j = 0; j < DT; j++) {
        int col = j * 8 + tg * 2;
        if (qa < lq) {
            __global float* p = out + ((size_t)(q0 + qa) * hq + h) * dv + col;
            p[0] = o[j][0] * ia;
            p[1] = o[j][1] * ia;
        }
        if (qb_ < lq) {
            __global float* p = out + ((size_t)(q0 + qb_) * hq + h) * dv + col;
            p[0] = o[j][2] * ib;
            p[1] = o[j][3] * ib;
        }
    }
}
