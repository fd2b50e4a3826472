// Attention over packed sequences, flash style: keys stream through local memory in blocks of BK
// with an online softmax, so memory never grows with Lq x Lk.
//
// A work-group serves one KV head and BQ "rows": a row is (query i, head g of the KV head's group),
// so the Hq/Hkv query heads that share a KV head read each key block once (GQA/MQA). The key range
// can be cut into nsplit pieces (split-K, for decode: few rows, many keys); each piece then writes
// its unnormalised output with its running max and sum, and the last work-group of the pieces
// combines them by log-sum-exp (attention_split). Compile-time: D, DV (head dims), BQ, BK, NT (work-items; TPR = NT / BQ per row).

#define TPR (NT / BQ)
#define SPT (BK / TPR)                 // scores per work-item per key block
#define OPT ((DV + TPR - 1) / TPR)     // output columns per work-item

inline void attention_body(__global const float* restrict q, __global const float* restrict k,
               __global const float* restrict v, __global float* restrict out,
               __global float* restrict part_o, __global float* restrict part_ml,
               __global const int* restrict blocks, __global const int* restrict cu_q,
               __global const int* restrict cu_k, const float scale, const int causal,
               const int window, const int group, const int hq, const int hkv,
               const int split_len, const int tq, const int q_stride, const int q_off,
               const int k_stride, const int k_off, const int v_stride, const int v_off,
               __global const int* restrict kv_rows, const int use_rows, const int vec4,
               __local int* krow, __local float (*qs)[D + 1],
               __local float (*ks)[D + 1], __local float (*vs)[DV], __local float (*ps)[BK + 1],
               __local float (*red)[TPR]) {

    const int tid = get_local_id(0);
    const int kvh = get_group_id(1), split = get_group_id(2), nsplit = get_num_groups(2);
    const int b = blocks[2 * get_group_id(0)], row0 = blocks[2 * get_group_id(0) + 1];
    const int q0 = cu_q[b], lq = cu_q[b + 1] - q0, k0 = cu_k[b], lk = cu_k[b + 1] - k0;
    const int nrows = lq * group;

    for (int e = tid; e < BQ * D; e += NT) {
        int r = e / D, c = e % D, row = row0 + r;
        float val = 0.0f;
        if (row < nrows) {
            int i = row / group, h = kvh * group + row % group;
            val = q[(size_t)(q0 + i) * q_stride + q_off + h * D + c] * scale;
        }
        qs[r][c] = val;
    }

    // keys any row of this block may see, then this split's share of them
    const int last = min(row0 + BQ, nrows) - 1;
    int kend = causal ? min(lk, lk - lq + last / group + 1) : lk;
    int kbeg = window > 0 ? max(0, lk - lq + row0 / group - window + 1) : 0;
    const int s_beg = kbeg + split * split_len;
    const int s_end = min(kend, s_beg + split_len);

    const int r = tid / TPR, c0 = tid % TPR, row = row0 + r;
    const int qpos = lk - lq + row / group;
    float o_acc[OPT];
#pragma unroll
    for (int e = 0; e < OPT; e++) o_acc[e] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    for (int kb = s_beg; kb < s_end; kb += BK) {
        barrier(CLK_LOCAL_MEM_FENCE);
        // key rows come straight from the KV cache when kv_rows maps them (no gathered copy); the
        // block's row numbers first, so every element load below is independent of the others
        for (int j = tid; j < BK; j += NT) {
            int kp = kb + j;
            krow[j] = kp < s_end ? (use_rows ? kv_rows[k0 + kp] : k0 + kp) : -1;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (vec4) {  // rows 16-byte aligned: float4 loads
#pragma unroll
            for (int u = 0; u < (BK * D / 4 + NT - 1) / NT; u++) {
                int e = tid + u * NT;
                if (e < BK * D / 4) {
                    int j = e / (D / 4), c = (e % (D / 4)) * 4, row = krow[j];
                    float4 val = row >= 0 ? *(__global const float4*)(k + (size_t)row * k_stride + k_off + kvh * D + c)
                                          : (float4)(0.0f);
                    ks[j][c] = val.x; ks[j][c + 1] = val.y; ks[j][c + 2] = val.z; ks[j][c + 3] = val.w;
                }
            }
#pragma unroll
            for (int u = 0; u < (BK * DV / 4 + NT - 1) / NT; u++) {
                int e = tid + u * NT;
                if (e < BK * DV / 4) {
                    int j = e / (DV / 4), c = (e % (DV / 4)) * 4, row = krow[j];
                    float4 val = row >= 0 ? *(__global const float4*)(v + (size_t)row * v_stride + v_off + kvh * DV + c)
                                          : (float4)(0.0f);
                    vs[j][c] = val.x; vs[j][c + 1] = val.y; vs[j][c + 2] = val.z; vs[j][c + 3] = val.w;
                }
            }
        } else {
            for (int e = tid; e < BK * D; e += NT) {
                int j = e / D, c = e % D, row = krow[j];
                ks[j][c] = row >= 0 ? k[(size_t)row * k_stride + k_off + kvh * D + c] : 0.0f;
            }
            for (int e = tid; e < BK * DV; e += NT) {
                int j = e / DV, c = e % DV, row = krow[j];
                vs[j][c] = row >= 0 ? v[(size_t)row * v_stride + v_off + kvh * DV + c] : 0.0f;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        float s[SPT];
#pragma unroll
        for (int jj = 0; jj < SPT; jj++) s[jj] = 0.0f;
        for (int c = 0; c < D; c++) {
            float qv = qs[r][c];
#pragma unroll
            for (int jj = 0; jj < SPT; jj++) s[jj] += qv * ks[c0 + TPR * jj][c];
        }
        float bmax = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < SPT; jj++) {
            int kp = kb + c0 + TPR * jj;
            bool ok = row < nrows && kp < s_end && (!causal || kp <= qpos) && (window <= 0 || kp > qpos - window);
            s[jj] = ok ? s[jj] : -INFINITY;
            bmax = fmax(bmax, s[jj]);
        }
        red[r][c0] = bmax;
        barrier(CLK_LOCAL_MEM_FENCE);
        float m_new = m;
#pragma unroll
        for (int u = 0; u < TPR; u++) m_new = fmax(m_new, red[r][u]);
        float alpha = m_new == -INFINITY ? 1.0f : exp(m - m_new);
        float lsum = 0.0f;
#pragma unroll
        for (int jj = 0; jj < SPT; jj++) {
            float p = s[jj] == -INFINITY ? 0.0f : exp(s[jj] - m_new);
            ps[r][c0 + TPR * jj] = p;
            lsum += p;
        }
        l = l * alpha + lsum;
        m = m_new;
        barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
        for (int e = 0; e < OPT; e++) o_acc[e] *= alpha;
        for (int j = 0; j < BK; j++) {
            float p = ps[r][j];
#pragma unroll
            for (int e = 0; e < OPT; e++) {
                int c = c0 + TPR * e;
                if (OPT * TPR == DV || c < DV) o_acc[e] += p * vs[j][c];
            }
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    red[r][c0] = l;
    barrier(CLK_LOCAL_MEM_FENCE);
    float l_tot = 0.0f;
#pragma unroll
    for (int u = 0; u < TPR; u++) l_tot += red[r][u];
    if (row >= nrows) return;
    const int i = row / group, h = kvh * group + row % group;
    const size_t orow = (size_t)(q0 + i) * hq + h;
    if (nsplit == 1) {
        float inv = l_tot > 0.0f ? 1.0f / l_tot : 0.0f;
#pragma unroll
        for (int e = 0; e < OPT; e++) {
            int c = c0 + TPR * e;
            if (c < DV) out[orow * DV + c] = o_acc[e] * inv;
        }
        return;
    }
    size_t prow = (size_t)split * tq * hq + orow;
#pragma unroll
    for (int e = 0; e < OPT; e++) {
        int c = c0 + TPR * e;
        if (c < DV) part_o[prow * DV + c] = o_acc[e];
    }
    if (c0 == 0) { part_ml[2 * prow] = m; part_ml[2 * prow + 1] = l_tot; }
}

#define LOCALS                                                                                   \
    __local float qs[BQ][D + 1];                                                                 \
    __local float ks[BK][D + 1];                                                                 \
    __local float vs[BK][DV];                                                                    \
    __local float ps[BQ][BK + 1];                                                                \
    __local float red[BQ][TPR];                                                                  \
    __local int krow[BK];

__kernel __attribute__((reqd_work_group_size(NT, 1, 1)))
void attention(__global const float* restrict q, __global const float* restrict k,
               __global const float* restrict v, __global float* restrict out,
               __global const int* restrict blocks, __global const int* restrict cu_q,
               __global const int* restrict cu_k, const float scale, const int causal,
               const int window, const int group, const int hq, const int hkv,
               const int split_len, const int tq, const int q_stride, const int q_off,
               const int k_stride, const int k_off, const int v_stride, const int v_off,
               __global const int* restrict kv_rows, const int use_rows, const int vec4) {
    LOCALS
    attention_body(q, k, v, out, out, out, blocks, cu_q, cu_k, scale, causal, window, group, hq, hkv,
                   split_len, tq, q_stride, q_off, k_stride, k_off, v_stride, v_off, kv_rows, use_rows, vec4,
                   krow, qs, ks, vs, ps, red);
}

// The split-K pieces of one (block, KV head) meet here: the last work-group to finish merges them
// by log-sum-exp (one launch instead of a merge kernel after), then resets its counter.
__kernel __attribute__((reqd_work_group_size(NT, 1, 1)))
void attention_split(__global const float* restrict q, __global const float* restrict k,
                     __global const float* restrict v, __global float* restrict out,
                     __global float* part_o, __global float* part_ml,
                     __global const int* restrict blocks, __global const int* restrict cu_q,
                     __global const int* restrict cu_k, const float scale, const int causal,
                     const int window, const int group, const int hq, const int hkv,
                     const int split_len, const int tq, const int q_stride, const int q_off,
                     const int k_stride, const int k_off, const int v_stride, const int v_off,
                     __global const int* restrict kv_rows, const int use_rows, const int vec4,
                     __global int* counters) {
    LOCALS
    attention_body(q, k, v, out, part_o, part_ml, blocks, cu_q, cu_k, scale, causal, window, group, hq, hkv,
                   split_len, tq, q_stride, q_off, k_stride, k_off, v_stride, v_off, kv_rows, use_rows, vec4,
                   krow, qs, ks, vs, ps, red);
    __local int last;
    __local float mw[MAXS * BQ], lw[MAXS * BQ];
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
    const int nsplit = get_num_groups(2);
    const int slot = get_group_id(0) * hkv + get_group_id(1);
    if (get_local_id(0) == 0) last = atomic_inc(counters + slot) == nsplit - 1;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (!last) return;
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    const int tid = get_local_id(0), kvh = get_group_id(1);
    const int b = blocks[2 * get_group_id(0)], row0 = blocks[2 * get_group_id(0) + 1];
    const int q0 = cu_q[b], nrows = (cu_q[b + 1] - q0) * group;
    const int rows = tq * hq;
    // every split's running max and sum of this block's rows, loaded side by side (no load waits
    // on another), then per row the weight of each split: exp(m_s - M) / sum_s l_s exp(m_s - M)
    for (int e = tid; e < nsplit * BQ; e += NT) {
        int s = e / BQ, r = e % BQ, row = row0 + r;
        float m = -INFINITY, l = 0.0f;
        if (row < nrows) {
            size_t p = (size_t)s * rows + (size_t)(q0 + row / group) * hq + kvh * group + row % group;
            m = part_ml[2 * p];
            l = part_ml[2 * p + 1];
        }
        mw[e] = m;
        lw[e] = l;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int r = tid; r < BQ; r += NT) {
        float mx = -INFINITY;
        for (int s = 0; s < nsplit; s++) mx = fmax(mx, mw[s * BQ + r]);
        float den = 0.0f;
        for (int s = 0; s < nsplit; s++) {
            float f = mx == -INFINITY ? 0.0f : exp(mw[s * BQ + r] - mx);
            lw[s * BQ + r] *= f;
            mw[s * BQ + r] = f;
            den += lw[s * BQ + r];
        }
        float inv = den > 0.0f ? 1.0f / den : 0.0f;
        for (int s = 0; s < nsplit; s++) mw[s * BQ + r] *= inv;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int e = tid; e < BQ * DV; e += NT) {
        int r = e / DV, c = e % DV, row = row0 + r;
        if (row >= nrows) continue;
        size_t orow = (size_t)(q0 + row / group) * hq + kvh * group + row % group;
        float acc = 0.0f;
#pragma unroll 8
        for (int s = 0; s < nsplit; s++) acc += part_o[((size_t)s * rows + orow) * DV + c] * mw[s * BQ + r];
        out[orow * DV + c] = acc;
    }
    if (tid == 0) counters[slot] = 0;
}
