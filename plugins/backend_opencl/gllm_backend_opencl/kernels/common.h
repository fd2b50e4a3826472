// Shared definitions, prepended to every program of the gllm OpenCL backend.
// Weights are read as float32 whatever their storage: f16 through vload_half or bit decoding (no
// cl_khr_fp16 needed: NVIDIA's OpenCL lacks it), bf16 as ushort bits (the top half of a float32).

#define ACT_NONE 0
#define ACT_GELU 1
#define ACT_GELU_TANH 2
#define ACT_RELU 3
#define ACT_SILU 4

inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erf(x * 0.70710678118654752f)); }
inline float gelu_tanh(float x) {
    return 0.5f * x * (1.0f + tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}
inline float silu(float x) { return x / (1.0f + exp(-x)); }

inline float apply_act(float v, int act) {
    switch (act) {
        case ACT_GELU: return gelu_erf(v);
        case ACT_GELU_TANH: return gelu_tanh(v);
        case ACT_RELU: return fmax(v, 0.0f);
        case ACT_SILU: return silu(v);
        default: return v;
    }
}

// IEEE half bits (low 16 bits of h) -> float, subnormals, infinities and NaN included.
inline float f16_bits(uint h) {
    uint m = (h & 0x7fffu) << 13;
    uint bits = ((h & 0x7c00u) == 0x7c00u) ? (m + 0x70000000u) : as_uint(as_float(m) * as_float(0x77800000u));
    return as_float(bits | ((h & 0x8000u) << 16));
}

// WDTYPE 0: float32, 1: float16, 2: bfloat16 (bits)
#ifdef WDTYPE
#if WDTYPE == 0
typedef float wtype;
#define LOADW(p, i) ((p)[i])
// 8 weights from an address 16-byte aligned (rows of a multiple of 8 columns)
inline float8 loadw8(__global const wtype* p) {
    __global const float4* q = (__global const float4*)p;
    return (float8)(q[0], q[1]);
}
#elif WDTYPE == 1
typedef half wtype;
#define LOADW(p, i) vload_half((i), (p))
inline float8 loadw8(__global const wtype* p) {
#ifdef F16_VLOAD
    return vload_half8(0, p);
#else
    uint4 u = *(__global const uint4*)p;
    return (float8)(f16_bits(u.x), f16_bits(u.x >> 16), f16_bits(u.y), f16_bits(u.y >> 16),
                    f16_bits(u.z), f16_bits(u.z >> 16), f16_bits(u.w), f16_bits(u.w >> 16));
#endif
}
#else
typedef ushort wtype;
#define LOADW(p, i) as_float(((uint)(p)[i]) << 16)
inline float8 loadw8(__global const wtype* p) {
    uint4 u = *(__global const uint4*)p;
    return (float8)(as_float(u.x << 16), as_float(u.x & 0xffff0000u), as_float(u.y << 16),
                    as_float(u.y & 0xffff0000u), as_float(u.z << 16), as_float(u.z & 0xffff0000u),
                    as_float(u.w << 16), as_float(u.w & 0xffff0000u));
}
#endif
#endif

inline float dot8(float8 a, float8 b) { return dot(a.lo, b.lo) + dot(a.hi, b.hi); }

// a matrix-unit GEMM's accumulators, float acc[MT][NL][4] (MT x NL mma tiles of 16 x 8 per warp),
// declared and zeroed (the same unrolled loops as written out, for kernels that define MT and NL)
#define MMA_ACC_ZEROED(acc)                                                                      \
    float acc[MT][NL][4];                                                                        \
    _Pragma("unroll") for (int i = 0; i < MT; i++)                                               \
    _Pragma("unroll") for (int j = 0; j < NL; j++)                                               \
    _Pragma("unroll") for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f
