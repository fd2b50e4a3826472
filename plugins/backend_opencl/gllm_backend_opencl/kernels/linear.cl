// y[t, o] = act(sum_k x[t, k] * W[o, k] + b[o]); x [T, n_in] float32, W [n_out, n_in] of wtype.
// Compiled per weight type (WDTYPE) and kernel shape.

#ifdef GEMV
// Matrix-vector for few rows of x (decode): T <= NT. A work-group is WARPS groups of LANES
// work-items; each group reads RPT weight rows with all its lanes (coalesced 16-byte loads) and
// every x chunk it loads serves all RPT rows. Lane partial sums meet in local memory.
__kernel __attribute__((reqd_work_group_size(LANES, WARPS, 1)))
void gemv(__global const wtype* restrict w, __global const float* restrict x,
          __global const float* restrict bias, __global float* restrict y,
          const int T, const int n_in, const int n_out, const int has_bias, const int act) {
    __local float red[WARPS][RPT * NT][LANES + 1];
    const int lane = get_local_id(0), warp = get_local_id(1);
    const int o0 = (get_group_id(0) * WARPS + warp) * RPT;
    float acc[RPT][NT];
#pragma unroll
    for (int r = 0; r < RPT; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0.0f;
    if ((n_in & 7) == 0) {
        int k = lane * 8;
#if U > 1
        // U chunks per row in flight before any is used: more bytes outstanding per work-item
        for (; k + (U - 1) * LANES * 8 < n_in; k += U * LANES * 8) {
            float8 wv[RPT][U];
#pragma unroll
            for (int r = 0; r < RPT; r++)
#pragma unroll
                for (int u = 0; u < U; u++)
                    wv[r][u] = o0 + r < n_out ? loadw8(w + (size_t)(o0 + r) * n_in + k + u * LANES * 8) : (float8)(0.0f);
#pragma unroll
            for (int u = 0; u < U; u++) {
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    if (t < T) {
                        __global const float4* xp = (__global const float4*)(x + (size_t)t * n_in + k + u * LANES * 8);
                        float8 xv = (float8)(xp[0], xp[1]);
#pragma unroll
                        for (int r = 0; r < RPT; r++) acc[r][t] += dot8(wv[r][u], xv);
                    }
                }
            }
        }
#endif
        for (; k < n_in; k += LANES * 8) {
            float8 xv[NT];
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < T) {
                    __global const float4* xp = (__global const float4*)(x + (size_t)t * n_in + k);
                    xv[t] = (float8)(xp[0], xp[1]);
                }
            }
#pragma unroll
            for (int r = 0; r < RPT; r++) {
                if (o0 + r < n_out) {
                    float8 wv = loadw8(w + (size_t)(o0 + r) * n_in + k);
#pragma unroll
                    for (int t = 0; t < NT; t++)
                        if (t < T) acc[r][t] += dot8(wv, xv[t]);
                }
            }
        }
    } else {
        for (int k = lane; k < n_in; k += LANES) {
            float xv[NT];
#pragma unroll
            for (int t = 0; t < NT; t++) xv[t] = t < T ? x[(size_t)t * n_in + k] : 0.0f;
#pragma unroll
            for (int r = 0; r < RPT; r++) {
                if (o0 + r < n_out) {
                    float wv = LOADW(w, (size_t)(o0 + r) * n_in + k);
#pragma unroll
                    for (int t = 0; t < NT; t++) acc[r][t] += wv * xv[t];
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPT; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) red[warp][r * NT + t][lane] = acc[r][t];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int slot = lane; slot < RPT * NT; slot += LANES) {
        int r = slot / NT, t = slot % NT, o = o0 + r;
        if (o < n_out && t < T) {
            float s = 0.0f;
            for (int l = 0; l < LANES; l++) s += red[warp][slot][l];
            if (has_bias) s += bias[o];
            y[(size_t)t * n_out + o] = apply_act(s, act);
        }
    }
}

#ifdef XN
// One row of x that is rms_norm(a (+ r)) * g, computed by every work-group into local memory
// before its matrix-vector (decode at batch 1: the norm costs no launch of its own). XN = n_in.
// Work-group 0 also writes h = a + r, the residual stream the next block reads. The grid is
// capped (a few work-groups per compute unit) and each warp loops over rows, so the prologue is
// paid a few hundred times, not once per 4 rows. x is kept as two float4 planes (first and second
// half of each 8-column chunk) so a warp's 16-byte local loads hit distinct banks.
#define NTH (LANES * WARPS)
__kernel __attribute__((reqd_work_group_size(LANES, WARPS, 1)))
void gemv_norm(__global const wtype* restrict w, __global const float* restrict a,
               __global const float* restrict r, __global const float* restrict g,
               __global const float* restrict bias, __global float* restrict y, __global float* restrict h_out,
               const int n_out, const int has_bias, const int act, const int has_res, const float eps,
               const int pair_half, __global float* restrict y_pair) {
    __local float4 xlo[XN / 8], xhi[XN / 8];
    __local float part[NTH];
    const int lane = get_local_id(0), warp = get_local_id(1), tid = warp * LANES + lane;
    const int write_h = has_res && get_group_id(0) == 0;
    float ss = 0.0f;
    for (int c = tid * 4; c < XN; c += NTH * 4) {  // XN % 8 == 0
        float4 v = vload4(0, a + c);
        if (has_res) v += vload4(0, r + c);
        if (write_h) vstore4(v, 0, h_out + c);
        if ((c >> 2) & 1) xhi[c >> 3] = v; else xlo[c >> 3] = v;
        ss += dot(v, v);
    }
    part[tid] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = NTH / 2; s > 0; s >>= 1) {
        if (tid < s) part[tid] += part[tid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float inv = rsqrt(part[0] / XN + eps);
    for (int c = tid * 8; c < XN; c += NTH * 8) {
        xlo[c >> 3] *= inv * vload4(0, g + c);
        xhi[c >> 3] *= inv * vload4(0, g + c + 4);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
#ifdef NV_SHFL
    // NVIDIA (LANES == 32 == the warp): each warp takes R rows at a time on its own and sums its
    // lanes with shfl.sync (inline PTX), so warps never wait for each other inside the loop
    const int step = get_num_groups(0) * WARPS * NV_SHFL;
    for (int o0 = (get_group_id(0) * WARPS + warp) * NV_SHFL; o0 < n_out; o0 += step) {
        float acc[NV_SHFL];
        __global const wtype* wr[NV_SHFL];
#pragma unroll
        for (int rr = 0; rr < NV_SHFL; rr++) {
            acc[rr] = 0.0f;
            wr[rr] = w + (size_t)min(o0 + rr, n_out - 1) * XN;
        }
        for (int k = lane; k < XN / 8; k += LANES) {
            const float4 lo = xlo[k], hi = xhi[k];
#pragma unroll
            for (int rr = 0; rr < NV_SHFL; rr++) {
                const float8 v = loadw8(wr[rr] + 8 * k);
                acc[rr] += dot(v.lo, lo) + dot(v.hi, hi);
            }
        }
#pragma unroll
        for (int rr = 0; rr < NV_SHFL; rr++) {
            float s = acc[rr];
#pragma unroll
            for (int m = 16; m > 0; m >>= 1) {
                float t;
                asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(t) : "f"(s), "r"(m));
                s += t;
            }
            if (lane == 0 && o0 + rr < n_out) y[o0 + rr] = apply_act(s + (has_bias ? bias[o0 + rr] : 0.0f), act);
        }
    }
}
#else
    // rows o0 + warp and o0 + WARPS + warp per pass; every work-item runs every pass (barriers).
    // pair_half > 0 (gate and up of a gated MLP stacked): rows j and j + pair_half per warp, and
    // y_pair[j] is silu(gate + bias) * (up + bias) as well (the silu_mul launch saved)
    __local float sums[2][NTH];
    const int per = pair_half ? WARPS : 2 * WARPS, rows_out = pair_half ? pair_half : n_out;
    const int step = get_num_groups(0) * per;
    for (int o0 = get_group_id(0) * per; o0 < rows_out; o0 += step) {
        const int oa = o0 + warp, ob = pair_half ? oa + pair_half : o0 + WARPS + warp;
        __global const wtype* wa = w + (size_t)min(oa, n_out - 1) * XN;
        __global const wtype* wb = w + (size_t)min(ob, n_out - 1) * XN;
        float acc_a = 0.0f, acc_b = 0.0f;
        for (int k = lane; k < XN / 8; k += LANES) {
            float8 va = loadw8(wa + 8 * k), vb = loadw8(wb + 8 * k);
            float4 lo = xlo[k], hi = xhi[k];
            acc_a += dot(va.lo, lo) + dot(va.hi, hi);
            acc_b += dot(vb.lo, lo) + dot(vb.hi, hi);
        }
        sums[0][tid] = acc_a;
        sums[1][tid] = acc_b;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (pair_half) {
            if (lane == 0 && oa < pair_half) {
                float sa = 0.0f, sb = 0.0f;
                for (int l = 0; l < LANES; l++) {
                    sa += sums[0][warp * LANES + l];
                    sb += sums[1][warp * LANES + l];
                }
                if (has_bias) { sa += bias[oa]; sb += bias[ob]; }
                y[oa] = sa;  // the product itself stays readable
                y[ob] = sb;
                y_pair[oa] = silu(sa) * sb;
            }
        } else if (lane < 2) {  // lane 0 sums row a, lane 1 row b (no subgroup functions in OpenCL 1.2)
            const int o = lane ? ob : oa;
            if (o < n_out) {
                float s = 0.0f;
                for (int l = 0; l < LANES; l++) s += sums[lane][warp * LANES + l];
                if (has_bias) s += bias[o];
                y[o] = apply_act(s, act);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}
#endif
#endif
#endif

#ifdef GEMM
// Tiled matrix-matrix on float32 arithmetic (prefill where no matrix unit is used): a 16x16
// work-group computes a BM x BN tile of y, each work-item TM x TN outputs, k in steps of BK.
#define BM (16 * TM)
#define BN (16 * TN)
#define BK 16
__kernel __attribute__((reqd_work_group_size(16, 16, 1)))
void gemm(__global const wtype* restrict w, __global const float* restrict x,
          __global const float* restrict bias, __global float* restrict y,
          const int T, const int n_in, const int n_out, const int has_bias, const int act) {
    __local float xs[BK][BM + 1];
    __local float ws[BK][BN + 1];
    const int tx = get_local_id(0), ty = get_local_id(1), tid = ty * 16 + tx;
    const int n0 = get_group_id(0) * BN, m0 = get_group_id(1) * BM;
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < n_in; k0 += BK) {
        for (int e = tid; e < BM * BK; e += 256) {
            int row = e / BK, kk = e % BK, gm = m0 + row, gk = k0 + kk;
            xs[kk][row] = (gm < T && gk < n_in) ? x[(size_t)gm * n_in + gk] : 0.0f;
        }
        for (int e = tid; e < BN * BK; e += 256) {
            int row = e / BK, kk = e % BK, gn = n0 + row, gk = k0 + kk;
            ws[kk][row] = (gn < n_out && gk < n_in) ? LOADW(w, (size_t)gn * n_in + gk) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            float a[TM], b[TN];
#pragma unroll
            for (int i = 0; i < TM; i++) a[i] = xs[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < TN; j++) b[j] = ws[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++) acc[i][j] += a[i] * b[j];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#pragma unroll
    for (int i = 0; i < TM; i++) {
        int m = m0 + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < TN; j++) {
            int n = n0 + tx + 16 * j;
            if (m < T && n < n_out) {
                float v = acc[i][j] + (has_bias ? bias[n] : 0.0f);
                y[(size_t)m * n_out + n] = apply_act(v, act);
            }
        }
    }
}
#endif
