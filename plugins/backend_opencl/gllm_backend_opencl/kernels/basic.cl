// Small ops: elementwise math, row norms, softmax, gathers and scatters, RoPE, embedding lookup.
// RED: work-group size of the row kernels (a power of two), set by the host.

__kernel void fill_zero(__global float* y, const int n) {
    int i = get_global_id(0);
    if (i < n) y[i] = 0.0f;
}

// mode 0: b has a's shape; 1: b is a [d] row broadcast; 2: b is a [n/d, 1] column
__kernel void add(__global const float* a, __global const float* b, __global float* y,
                  const int n, const int d, const int mode) {
    int i = get_global_id(0);
    if (i >= n) return;
    float bv = mode == 0 ? b[i] : (mode == 1 ? b[i % d] : b[i / d]);
    y[i] = a[i] + bv;
}

__kernel void mul(__global const float* a, __global const float* b, __global float* y,
                  const int n, const int d, const int mode) {
    int i = get_global_id(0);
    if (i >= n) return;
    float bv = mode == 0 ? b[i] : (mode == 1 ? b[i % d] : b[i / d]);
    y[i] = a[i] * bv;
}

__kernel void activation(__global const float* x, __global float* y, const int n, const int act) {
    int i = get_global_id(0);
    if (i < n) y[i] = apply_act(x[i], act);
}

// gate and up may be column views of one [t, stride] array (the fused gate/up projection)
__kernel void silu_mul(__global const float* g, __global const float* u, __global float* y, const int n,
                       const int d, const int g_stride, const int g_off, const int u_stride, const int u_off) {
    int i = get_global_id(0);
    if (i >= n) return;
    int t = i / d, c = i % d;
    y[i] = silu(g[(size_t)t * g_stride + g_off + c]) * u[(size_t)t * u_stride + u_off + c];
}

// rows of a [n_rows, d] array (32-bit elements of any type) picked by rows[t]
__kernel void gather_rows(__global const uint* x, __global const int* rows, __global uint* y,
                          const int d, const int t_count) {
    int c = get_global_id(0), t = get_global_id(1);
    if (c < d && t < t_count) y[(size_t)t * d + c] = x[(size_t)rows[t] * d + c];
}

// dst_p[rows[t]] (+)= src_p[t] for p = get_global_id(2): one pair, or two sharing rows (the keys and
// values of a KV-cache write) in one launch; src may be a column view (row stride, offset)
__kernel void scatter_rows(__global float* dst0, __global float* dst1, __global const int* rows,
                           __global const float* src0, __global const float* src1, const int d,
                           const int t_count, const int accumulate, const int s0_stride, const int s0_off,
                           const int s1_stride, const int s1_off) {
    int c = get_global_id(0), t = get_global_id(1), p = get_global_id(2);
    if (c >= d || t >= t_count) return;
    __global float* dst = p ? dst1 : dst0;
    size_t o = (size_t)rows[t] * d + c;
    float v = p ? src1[(size_t)t * s1_stride + s1_off + c] : src0[(size_t)t * s0_stride + s0_off + c];
    dst[o] = accumulate ? dst[o] + v : v;
}

// columns [col0, col0 + w0 + w1 + w2) of a [t, d] array into up to three contiguous parts (Q/K/V,
// gate/up): one launch however many parts
__kernel void split3(__global const float* x, __global float* y0, __global float* y1, __global float* y2,
                     const int d, const int col0, const int w0, const int w1, const int w2, const int t_count) {
    int c = get_global_id(0), t = get_global_id(1);
    if (c >= w0 + w1 + w2 || t >= t_count) return;
    float v = x[(size_t)t * d + col0 + c];
    if (c < w0) y0[(size_t)t * w0 + c] = v;
    else if (c < w0 + w1) y1[(size_t)t * w1 + c - w0] = v;
    else y2[(size_t)t * w2 + c - w0 - w1] = v;
}

#define EMBEDDING(NAME, TYPE, LOAD)                                                                  \
__kernel void NAME(__global const TYPE* table, __global const int* ids, __global float* y,          \
                   const int v, const int d, const int t_count) {                                   \
    int c = get_global_id(0), t = get_global_id(1);                                                  \
    if (c >= d || t >= t_count) return;                                                              \
    int id = clamp(ids[t], 0, v - 1);                                                                \
    y[(size_t)t * d + c] = LOAD(table, (size_t)id * d + c);                                          \
}
#define LOAD_F32(p, i) ((p)[i])
#define LOAD_F16(p, i) vload_half((i), (p))
#define LOAD_BF16(p, i) as_float(((uint)(p)[i]) << 16)
EMBEDDING(embedding_f32, float, LOAD_F32)
EMBEDDING(embedding_f16, half, LOAD_F16)
EMBEDDING(embedding_bf16, ushort, LOAD_BF16)

// Sum (op 0) or max (op 1) of one value per work-item over the work-group; every item gets it.
inline float group_reduce(float v, __local float* scratch, int op) {
    int lid = get_local_id(0);
    barrier(CLK_LOCAL_MEM_FENCE);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = RED / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] = op ? fmax(scratch[lid], scratch[lid + s]) : scratch[lid] + scratch[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return scratch[0];
}

// Row norms: one work-group per row. Each work-item keeps its first NPT values of h = x (+ res) in
// registers between the passes (rows up to NPT * RED long are read once); longer rows re-read.
#define NPT 8

// LayerNorm of h = x (+ res) over rows of d; bias optional.
__kernel __attribute__((reqd_work_group_size(RED, 1, 1)))
void layer_norm(__global const float* x, __global const float* res, __global const float* w,
                __global const float* b, __global float* y, const int d, const float eps,
                const int has_res, const int has_bias) {
    __local float scratch[RED];
    size_t base = (size_t)get_group_id(0) * d;
    int lid = get_local_id(0);
    float hv[NPT];
    float s = 0.0f;
#pragma unroll
    for (int u = 0; u < NPT; u++) {
        int c = lid + u * RED;
        float h = c < d ? x[base + c] + (has_res ? res[base + c] : 0.0f) : 0.0f;
        hv[u] = h;
        s += h;
    }
    for (int c = lid + NPT * RED; c < d; c += RED) s += x[base + c] + (has_res ? res[base + c] : 0.0f);
    float mean = group_reduce(s, scratch, 0) / d;
    float q = 0.0f;
#pragma unroll
    for (int u = 0; u < NPT; u++) {
        float h = hv[u] - mean;
        q += lid + u * RED < d ? h * h : 0.0f;
    }
    for (int c = lid + NPT * RED; c < d; c += RED) {
        float h = x[base + c] + (has_res ? res[base + c] : 0.0f) - mean;
        q += h * h;
    }
    float inv = rsqrt(group_reduce(q, scratch, 0) / d + eps);
#pragma unroll
    for (int u = 0; u < NPT; u++) {
        int c = lid + u * RED;
        if (c < d) y[base + c] = (hv[u] - mean) * inv * w[c] + (has_bias ? b[c] : 0.0f);
    }
    for (int c = lid + NPT * RED; c < d; c += RED) {
        float h = x[base + c] + (has_res ? res[base + c] : 0.0f);
        y[base + c] = (h - mean) * inv * w[c] + (has_bias ? b[c] : 0.0f);
    }
}

// RMSNorm of h = x (+ res); with has_res, h is also written to h_out (pre-norm residual stream).
__kernel __attribute__((reqd_work_group_size(RED, 1, 1)))
void rms_norm(__global const float* x, __global const float* res, __global const float* w,
              __global float* y, __global float* h_out, const int d, const float eps, const int has_res) {
    __local float scratch[RED];
    size_t base = (size_t)get_group_id(0) * d;
    int lid = get_local_id(0);
    float hv[NPT];
    float q = 0.0f;
#pragma unroll
    for (int u = 0; u < NPT; u++) {
        int c = lid + u * RED;
        float h = c < d ? x[base + c] + (has_res ? res[base + c] : 0.0f) : 0.0f;
        hv[u] = h;
        q += h * h;
    }
    for (int c = lid + NPT * RED; c < d; c += RED) {
        float h = x[base + c] + (has_res ? res[base + c] : 0.0f);
        q += h * h;
    }
    float inv = rsqrt(group_reduce(q, scratch, 0) / d + eps);
#pragma unroll
    for (int u = 0; u < NPT; u++) {
        int c = lid + u * RED;
        if (c < d) {
            y[base + c] = hv[u] * inv * w[c];
            if (has_res) h_out[base + c] = hv[u];
        }
    }
    for (int c = lid + NPT * RED; c < d; c += RED) {
        float h = x[base + c] + (has_res ? res[base + c] : 0.0f);
        y[base + c] = h * inv * w[c];
        if (has_res) h_out[base + c] = h;
    }
}

__kernel __attribute__((reqd_work_group_size(RED, 1, 1)))
void softmax(__global const float* x, __global float* y, const int d) {
    __local float scratch[RED];
    size_t base = (size_t)get_group_id(0) * d;
    int lid = get_local_id(0);
    float m = -INFINITY;
    for (int c = lid; c < d; c += RED) m = fmax(m, x[base + c]);
    m = group_reduce(m, scratch, 1);
    float s = 0.0f;
    for (int c = lid; c < d; c += RED) s += exp(x[base + c] - m);
    float inv = 1.0f / group_reduce(s, scratch, 0);
    for (int c = lid; c < d; c += RED) y[base + c] = exp(x[base + c] - m) * inv;
}

// RoPE of x [t, h, d]: the first 2*half dims rotate (neox: halves; interleaved: pairs), the rest
// pass through. Angles are positions * inv_freq in float32, as the reference computes them.
// x may be a column view (rows x_stride apart from x_off). Two tensors side by side in x (the
// queries and keys of a fused QKV projection: hd0 and hd1 values per token) rotate in one launch
// into y0 and y1; hd1 = 0 for one.
// the rotated value of column cc (c = cc % d within its head) of one row xr
inline float rope_value(__global const float* xr, const int cc, const int c, const float p,
                        __global const float* inv_freq, const int half_rot, const float scale, const int interleaved) {
    float v = xr[cc];
    if (c < 2 * half_rot) {
        int f, partner;
        float sign;
        if (interleaved) { f = c >> 1; partner = (c & 1) ? cc - 1 : cc + 1; sign = (c & 1) ? 1.0f : -1.0f; }
        else if (c < half_rot) { f = c; partner = cc + half_rot; sign = -1.0f; }
        else { f = c - half_rot; partner = cc - half_rot; sign = 1.0f; }
        float a = p * inv_freq[f];
        float cs = cos(a) * scale, sn = sin(a) * scale;
        v = v * cs + sign * xr[partner] * sn;
    }
    return v;
}

__kernel void rope(__global const float* x, __global float* y0, __global float* y1, __global const int* pos,
                   __global const float* inv_freq, const int d, const int half_rot, const float scale,
                   const int interleaved, const int hd0, const int hd1, const int n, const int x_stride,
                   const int x_off) {
    int i = get_global_id(0);
    if (i >= n) return;
    int hd = hd0 + hd1;
    int t = i / hd, cc = i % hd;
    float v = rope_value(x + (size_t)t * x_stride + x_off, cc, cc % d, (float)pos[t], inv_freq, half_rot, scale,
                         interleaved);
    if (cc < hd0) y0[(size_t)t * hd0 + cc] = v;
    else y1[(size_t)t * hd1 + cc - hd0] = v;
}

// A decode step's RoPE of queries and keys (as rope, two tensors) and its KV-cache writes in one
// launch: work-items [0, n) rotate into y0 / y1; the next t * hd1 write the rotated keys into rows
// of kc (rotating again: y1 is being written by this same launch); the next t * dvw copy v (a
// column view) into rows of vc.
__kernel void rope_store(__global const float* x, __global float* y0, __global float* y1, __global const int* pos,
                         __global const float* inv_freq, const int d, const int half_rot, const float scale,
                         const int interleaved, const int hd0, const int hd1, const int t_count, const int x_stride,
                         const int x_off, __global float* kc, __global float* vc, __global const int* rows,
                         __global const float* v, const int dvw, const int v_stride, const int v_off) {
    const int i = get_global_id(0), hd = hd0 + hd1, n = t_count * hd, nk = t_count * hd1;
    if (i < n) {
        int t = i / hd, cc = i % hd;
        float val = rope_value(x + (size_t)t * x_stride + x_off, cc, cc % d, (float)pos[t], inv_freq, half_rot,
                               scale, interleaved);
        if (cc < hd0) y0[(size_t)t * hd0 + cc] = val;
        else y1[(size_t)t * hd1 + cc - hd0] = val;
    } else if (i < n + nk) {
        int j = i - n, t = j / hd1, ck = j % hd1;
        kc[(size_t)rows[t] * hd1 + ck] = rope_value(x + (size_t)t * x_stride + x_off, hd0 + ck, ck % d, (float)pos[t],
                                                    inv_freq, half_rot, scale, interleaved);
    } else if (i < n + nk + t_count * dvw) {
        int j = i - n - nk, t = j / dvw, c = j % dvw;
        vc[(size_t)rows[t] * dvw + c] = v[(size_t)t * v_stride + v_off + c];
    }
}
