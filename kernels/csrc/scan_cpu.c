/*
 * Selective scan forward for CPUs: plain C99, compiled at first use by kernels/native_cpu.py
 * (no Python or torch headers, so it builds in about a second) and called through ctypes.
 *
 * Two entry points, both float32, both forward only (inference; autograd keeps the PyTorch path):
 *
 *   vz_scan_rows    the selective_scan contract on (batch, dim, L) rows: one row at a time, a
 *                   vectorised pass over L for Δ, exp(Δ A) and Δ B u, then the serial recurrence.
 *   vz_scan_routes  K routes through a pixel-major (batch, P, D) map (the fused SS2D core): every
 *                   step of a route reads one pixel's channel vector, runs the recurrence for all
 *                   channels at once (vectorised over channels) and adds the output onto that
 *                   pixel, so the (batch, K, D, L) route copies and their merge never exist.
 *
 * The work is cut into slices (rows; batches, routes or channel blocks) run on OpenMP threads when the
 * build has -fopenmp: the library then links libgomp.so.1, which resolves to the copy torch already
 * loaded, so the slices run on torch's own thread pool (Python threads instead ran against torch's
 * spinning OpenMP workers and were slower on two threads than on one).  Without OpenMP, one thread.  exp and softplus are
 * branch-free polynomials that the compiler vectorises without -ffast-math; decays below e^-87 are
 * flushed to 0 and denormal arithmetic is switched off (FTZ/DAZ) for the duration of a call, as the
 * chunked PyTorch path flushes subnormal decays (x86 computes on subnormals ~100x slower).
 */
#define _POSIX_C_SOURCE 200112L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define VZ_HAS_MXCSR 1
#endif

#define VZ_API __attribute__((visibility("default")))
#define VZ_PREFETCH_AHEAD 8

/* version of this file's ABI; native_cpu.py refuses a library with another one */
VZ_API int vz_abi_version(void) { return 9; }

static inline float vz_bits_to_float(int32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* exp(x), relative error ~2e-7; results below e^-87 are 0, NaN stays NaN (the comparisons pass it on). */
static inline float vz_exp(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    xc = xc > 88.0f ? 88.0f : xc;
    /* n = round(x / ln 2) with the 1.5 * 2^23 trick (no rounding instruction needed) */
    float t = xc * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    /* Cephes expf polynomial on [-ln2/2, ln2/2] */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    float result = p * vz_bits_to_float(((int32_t)n + 127) << 23);
    return x < -87.0f ? 0.0f : result; /* NaN: both clamps keep it, so the result is NaN */
}

/* softplus(x) with threshold 20 (as F.softplus and mamba_ssm): max(x, 0) + log1p(e), e = exp(-|x|) in
 * (0, 1], with log1p(e) = e * P(e), P a degree-7 Chebyshev fit of log1p(e) / e on [0, 1] (relative error
 * below 4e-7 in float32, no division, no cancellation for small e). */
static inline float vz_softplus(float x) {
    float ax = x < 0.0f ? -x : x;
    float e = vz_exp(-ax);
    float p = -8.574675768613815e-3f;
    p = p * e + 4.4214192777872086e-2f;
    p = p * e - 1.0785368084907532e-1f;
    p = p * e + 1.7757023870944977e-1f;
    p = p * e - 2.449961155653e-1f;
    p = p * e + 3.327617645263672e-1f;
    p = p * e - 4.9997448921203613e-1f;
    p = p * e + 9.999998211860657e-1f;
    float y = (x > 0.0f ? x : 0.0f) + e * p;
    return x > 20.0f ? x : y;
}

static inline float vz_silu(float x) { return x / (1.0f + vz_exp(-x)); }

/* Work buffer of n floats on its own cache lines (64-byte aligned, size rounded up to 64 bytes): the
 * buffers of threads running side by side never share a line (false sharing slowed two threads below
 * one).  Free with free(). */
static float *vz_alloc_floats(size_t n) {
    void *p = NULL;
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    return (float *)p;
}

typedef struct { unsigned int saved; } vz_fp_state;

static inline vz_fp_state vz_fp_enter(void) {
    vz_fp_state s = {0};
#ifdef VZ_HAS_MXCSR
    s.saved = _mm_getcsr();
    _mm_setcsr(s.saved | 0x8040); /* flush-to-zero and denormals-are-zero */
#endif
    return s;
}

static inline void vz_fp_leave(vz_fp_state s) {
#ifdef VZ_HAS_MXCSR
    _mm_setcsr(s.saved);
#else
    (void)s;
#endif
}

/*
 * One slice of vz_scan_rows: rows [row_begin, row_end) of the selective scan, row = b * dim + d.
 * All tensors contiguous:
 *   u, delta, z, out: (batch, dim, L); A: (dim, N); B, C: (batch, G, N, L); D, delta_bias: (dim);
 *   h0, last: (batch, dim, N); states: (batch, dim, N, L).  z, D, delta_bias, h0 and last may be NULL;
 *   with states (return_states) the states are written instead of out (C, D and z unused, out may be NULL).
 * Returns 0, or 1 when the work buffers cannot be allocated.
 */
static int rows_slice(int64_t dim, int64_t length, int64_t nstate, int64_t groups,
                      const float *u, const float *delta, const float *A, const float *B, const float *C,
                      const float *D, const float *z, const float *delta_bias, int softplus, int reverse,
                      const float *h0, float *out, float *states, float *last, int64_t row_begin,
                      int64_t row_end) {
    float *work = vz_alloc_floats(3 * (size_t)length);
    if (!work) return 1;
    float *dt = work, *decay = work + length, *drive = work + 2 * length;
    vz_fp_state fp = vz_fp_enter();
    const int64_t per_group = dim / groups;
    for (int64_t row = row_begin; row < row_end; ++row) {
        const int64_t b = row / dim, d = row % dim, g = d / per_group;
        const float *restrict ur = u + row * length;
        const float *restrict dr = delta + row * length;
        float *restrict yr = states ? NULL : out + row * length;
        const float bias = delta_bias ? delta_bias[d] : 0.0f;
        for (int64_t t = 0; t < length; ++t) {
            float v = dr[t] + bias;
            dt[t] = softplus ? vz_softplus(v) : v;
        }
        for (int64_t n = 0; n < nstate; ++n) {
            const float a = A[d * nstate + n];
            const float *restrict Br = B + ((b * groups + g) * nstate + n) * length;
            const float *restrict Cr = C + ((b * groups + g) * nstate + n) * length;
            for (int64_t t = 0; t < length; ++t) {
                decay[t] = vz_exp(dt[t] * a);
                drive[t] = dt[t] * Br[t] * ur[t];
            }
            float h = h0 ? h0[row * nstate + n] : 0.0f;
            if (states) { /* the states themselves, (batch, dim, N, L); no output */
                float *restrict sr = states + (row * nstate + n) * length;
                if (reverse)
                    for (int64_t t = length - 1; t >= 0; --t) { h = decay[t] * h + drive[t]; sr[t] = h; }
                else
                    for (int64_t t = 0; t < length; ++t) { h = decay[t] * h + drive[t]; sr[t] = h; }
            } else if (n == 0) {
                if (reverse)
                    for (int64_t t = length - 1; t >= 0; --t) { h = decay[t] * h + drive[t]; yr[t] = h * Cr[t]; }
                else
                    for (int64_t t = 0; t < length; ++t) { h = decay[t] * h + drive[t]; yr[t] = h * Cr[t]; }
            } else {
                if (reverse)
                    for (int64_t t = length - 1; t >= 0; --t) { h = decay[t] * h + drive[t]; yr[t] += h * Cr[t]; }
                else
                    for (int64_t t = 0; t < length; ++t) { h = decay[t] * h + drive[t]; yr[t] += h * Cr[t]; }
            }
            if (last) last[row * nstate + n] = h;
        }
        if (states) continue;
        if (D) {
            const float skip = D[d];
            for (int64_t t = 0; t < length; ++t) yr[t] += skip * ur[t];
        }
        if (z) {
            const float *restrict zr = z + row * length;
            for (int64_t t = 0; t < length; ++t) yr[t] *= vz_silu(zr[t]);
        }
    }
    vz_fp_leave(fp);
    free(work);
    return 0;
}

/*
 * One slice of vz_scan_routes (arguments in vz_routes_args): routes [k_begin, k_end) through a
 * pixel-major map, for batches [b_begin, b_end) and channels [d_begin, d_end):
 *   x: (batch, P, D) at x + b * x_sb + p * x_sp + d;
 *   delta: Δ before bias and softplus, route k's channel d of pixel p at delta + b * dl_sb + p * dl_sp +
 *   k * dl_sk + d;
 *   A: (K, N, D) contiguous;  B, C: element (b, p, k, n) at
 *   B + b * b_sb + p * b_sp + k * b_sk + n * b_sn (same for C);  D, delta_bias: (K*D) or NULL;
 *   route_index: (K, L) int32, -1 for a padding step (reads zeros; the state still decays);
 *   y: (batch, P, D) at y + b * y_sb + p * y_sp + d; the slice's region (its batches and channels, all
 *   P pixels) is set to the sum of the slice's routes.
 * Slices running side by side must write disjoint regions: whole batches, disjoint routes (each into its
 * own part of y, summed afterwards) or channel blocks (multiples of 16 floats: no shared cache lines).
 * A route may visit a pixel more than once.  Returns 0; 1 when the work buffers cannot be allocated;
 * 2 when route_index holds an entry outside [-1, P) (the slice stops there).
 */
typedef struct { /* the arguments of vz_scan_routes that every slice shares */
    int64_t dim, pixels, length, nstate;
    const float *x;
    int64_t x_sb, x_sp;
    const float *delta;
    int64_t dl_sb, dl_sp, dl_sk;
    const float *A, *B, *C;
    int64_t b_sb, b_sp, b_sk, b_sn, c_sb, c_sp, c_sk, c_sn;
    const float *D, *delta_bias;
    int softplus;
    const int32_t *route_index;
    int64_t y_sb, y_sp;
} vz_routes_args;

static int routes_slice(const vz_routes_args *args, float *y, int64_t b_begin, int64_t b_end, int64_t d_begin,
                        int64_t d_end, int64_t k_begin, int64_t k_end) {
    const int64_t dim = args->dim, pixels = args->pixels, length = args->length, nstate = args->nstate;
    const float *x = args->x, *delta = args->delta, *A = args->A, *B = args->B, *C = args->C;
    const float *D = args->D, *delta_bias = args->delta_bias;
    const int64_t x_sb = args->x_sb, x_sp = args->x_sp, dl_sb = args->dl_sb, dl_sp = args->dl_sp, dl_sk = args->dl_sk;
    const int64_t b_sb = args->b_sb, b_sp = args->b_sp, b_sk = args->b_sk, b_sn = args->b_sn;
    const int64_t c_sb = args->c_sb, c_sp = args->c_sp, c_sk = args->c_sk, c_sn = args->c_sn;
    const int64_t y_sb = args->y_sb, y_sp = args->y_sp;
    const int softplus = args->softplus;
    const int32_t *route_index = args->route_index;
    const int64_t width = d_end - d_begin;
    if (width <= 0) return 0;
    float *work = vz_alloc_floats((size_t)width * (size_t)(nstate + 4));
    if (!work) return 1;
    float *restrict h = work;                       /* (N, width) states */
    float *restrict dt = work + nstate * width;     /* Δ of the step */
    float *restrict acc = dt + width;               /* the step's output */
    float *restrict bias = acc + width;             /* this route's delta_bias */
    float *restrict skip = bias + width;            /* this route's D */
    int status = 0;
    vz_fp_state fp = vz_fp_enter();
    for (int64_t b = b_begin; b < b_end; ++b)  /* this slice's region of y starts at zero */
        for (int64_t p = 0; p < pixels; ++p) memset(y + b * y_sb + p * y_sp + d_begin, 0, sizeof(float) * (size_t)width);
    for (int64_t b = b_begin; b < b_end; ++b) {
        for (int64_t k = k_begin; k < k_end; ++k) {
            const int32_t *restrict steps = route_index + k * length;
            const float *restrict Ak = A + k * nstate * dim + d_begin;
            for (int64_t j = 0; j < width; ++j) {
                bias[j] = delta_bias ? delta_bias[k * dim + d_begin + j] : 0.0f;
                skip[j] = D ? D[k * dim + d_begin + j] : 0.0f;
            }
            memset(h, 0, sizeof(float) * (size_t)(nstate * width));
            for (int64_t s = 0; s < length; ++s) {
                const int64_t p = steps[s];
                if (p < -1 || p >= pixels) { /* not a pixel: stop before reading or writing outside */
                    status = 2;
                    goto done;
                }
                if (s + VZ_PREFETCH_AHEAD < length && steps[s + VZ_PREFETCH_AHEAD] >= 0
                    && steps[s + VZ_PREFETCH_AHEAD] < pixels) {
                    /* column and reversed routes jump between pixels: fetch a later step's lines now */
                    const int64_t q = steps[s + VZ_PREFETCH_AHEAD];
                    const char *xq = (const char *)(x + b * x_sb + q * x_sp + d_begin);
                    const char *dq = (const char *)(delta + b * dl_sb + q * dl_sp + k * dl_sk + d_begin);
                    const char *yq = (const char *)(y + b * y_sb + q * y_sp + d_begin);
                    for (int64_t off = 0; off < width * (int64_t)sizeof(float); off += 64) {
                        __builtin_prefetch(xq + off, 0);
                        __builtin_prefetch(dq + off, 0);
                        __builtin_prefetch(yq + off, 1);
                    }
                }
                if (p < 0) { /* padding: u = 0, Δ = softplus(bias), B = C = 0 */
                    for (int64_t j = 0; j < width; ++j) dt[j] = softplus ? vz_softplus(bias[j]) : bias[j];
                    for (int64_t n = 0; n < nstate; ++n) {
                        float *restrict hn = h + n * width;
                        const float *restrict An = Ak + n * dim;
                        for (int64_t j = 0; j < width; ++j) hn[j] *= vz_exp(dt[j] * An[j]);
                    }
                    continue;
                }
                const float *restrict xp = x + b * x_sb + p * x_sp + d_begin;
                const float *restrict dp = delta + b * dl_sb + p * dl_sp + k * dl_sk + d_begin;
                const float *Bp = B + b * b_sb + p * b_sp + k * b_sk;
                const float *Cp = C + b * c_sb + p * c_sp + k * c_sk;
                float *restrict yp = y + b * y_sb + p * y_sp + d_begin;
                if (nstate == 1) {
                    const float bv = Bp[0], cv = Cp[0];
                    const float *restrict A0 = Ak;
                    for (int64_t j = 0; j < width; ++j) {
                        float v = dp[j] + bias[j];
                        float step = softplus ? vz_softplus(v) : v;
                        float hv = vz_exp(step * A0[j]) * h[j] + step * bv * xp[j];
                        h[j] = hv;
                        yp[j] += hv * cv + skip[j] * xp[j];
                    }
                    continue;
                }
                for (int64_t j = 0; j < width; ++j) {
                    float v = dp[j] + bias[j];
                    dt[j] = softplus ? vz_softplus(v) : v;
                    acc[j] = skip[j] * xp[j];
                }
                for (int64_t n = 0; n < nstate; ++n) {
                    const float bv = Bp[n * b_sn], cv = Cp[n * c_sn];
                    float *restrict hn = h + n * width;
                    const float *restrict An = Ak + n * dim;
                    for (int64_t j = 0; j < width; ++j) {
                        float hv = vz_exp(dt[j] * An[j]) * hn[j] + dt[j] * bv * xp[j];
                        hn[j] = hv;
                        acc[j] += hv * cv;
                    }
                }
                for (int64_t j = 0; j < width; ++j) yp[j] += acc[j];
            }
        }
    }
done:
    vz_fp_leave(fp);
    free(work);
    return status;
}

/* Whether this build runs its slices on OpenMP threads (linked against the libgomp torch loaded, the same
 * soname, so the threads are torch's own: no second pool spinning against it). */
VZ_API int vz_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* The whole selective scan (all batch * dim rows) on up to nthreads threads.  Arguments as rows_slice. */
VZ_API int vz_scan_rows(int64_t batch, int64_t dim, int64_t length, int64_t nstate, int64_t groups,
                        const float *u, const float *delta, const float *A, const float *B, const float *C,
                        const float *D, const float *z, const float *delta_bias, int softplus, int reverse,
                        const float *h0, float *out, float *states, float *last, int nthreads) {
    const int64_t rows = batch * dim;
    int64_t parts = nthreads < 1 ? 1 : nthreads;
    if (parts > rows) parts = rows;
    int failed = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static, 1) reduction(| : failed)
    for (int64_t i = 0; i < parts; ++i)
        failed |= rows_slice(dim, length, nstate, groups, u, delta, A, B, C, D, z, delta_bias, softplus, reverse,
                             h0, out, states, last, rows * i / parts, rows * (i + 1) / parts);
    return failed;
}

/* Routes through a pixel-major map in nslices slices on up to nthreads threads.  slices: (nslices, 7) of
 * (y part, b_begin, b_end, d_begin, d_end, k_begin, k_end); a slice writes its region of part
 * y + part * y_part_stride (the regions of one part's slices must not overlap).  With nparts > 1 the
 * parts (contiguous (batch, P, D) each) are then summed into part 0.  Other arguments as described above
 * routes_slice. */
VZ_API int vz_scan_routes(int64_t batch, int64_t dim, int64_t pixels, int64_t length, int64_t nstate,
                          const float *x, int64_t x_sb, int64_t x_sp,
                          const float *delta, int64_t dl_sb, int64_t dl_sp, int64_t dl_sk,
                          const float *A,
                          const float *B, int64_t b_sb, int64_t b_sp, int64_t b_sk, int64_t b_sn,
                          const float *C, int64_t c_sb, int64_t c_sp, int64_t c_sk, int64_t c_sn,
                          const float *D, const float *delta_bias, int softplus,
                          const int32_t *route_index,
                          float *y, int64_t y_sb, int64_t y_sp, int64_t y_part_stride,
                          const int64_t *slices, int64_t nslices, int64_t nparts, int nthreads) {
    const vz_routes_args args = {dim, pixels, length, nstate, x, x_sb, x_sp, delta, dl_sb, dl_sp, dl_sk, A, B, C,
                                 b_sb, b_sp, b_sk, b_sn, c_sb, c_sp, c_sk, c_sn, D, delta_bias, softplus,
                                 route_index, y_sb, y_sp};
    int failed = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static, 1) reduction(| : failed)
    for (int64_t i = 0; i < nslices; ++i) {
        const int64_t *sl = slices + 7 * i;
        failed |= routes_slice(&args, y + sl[0] * y_part_stride, sl[1], sl[2], sl[3], sl[4], sl[5], sl[6]);
    }
    if (nparts > 1 && !failed) {
        const int64_t total = batch * pixels * dim, chunk = 4096;
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t start = 0; start < total; start += chunk) {
            const int64_t end = start + chunk < total ? start + chunk : total;
            float *restrict y0 = y;
            for (int64_t part = 1; part < nparts; ++part) {
                const float *restrict yk = y + part * y_part_stride;
                for (int64_t i = start; i < end; ++i) y0[i] += yk[i];
            }
        }
    }
    return failed;
}

/* Depth-wise 3x3 convolution (zero padding 1, stride 1) + bias, optionally followed by SiLU, on a
 * channels-last map: x, y (batch, H, W, C) with channel stride 1 and the given batch/row/column strides,
 * weight (9, C) tap-major (tap = 3 * (dh + 1) + (dw + 1)), bias (C) or NULL.  Vectorised over the
 * channels; rows of the output are spread over nthreads threads.  PyTorch's CPU depth-wise convolution
 * spent about 60 us per call in fixed cost at VMamba's sizes, more than the arithmetic. */
VZ_API int vz_dwconv3x3(int64_t batch, int64_t height, int64_t width, int64_t channels,
                        const float *x, int64_t x_sb, int64_t x_sh, int64_t x_sw,
                        const float *weight, const float *bias, int silu,
                        float *y, int64_t y_sb, int64_t y_sh, int64_t y_sw, int nthreads) {
    const int64_t rows = batch * height;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
        const int64_t b = row / height, h = row % height;
        vz_fp_state fp = vz_fp_enter();
        for (int64_t w = 0; w < width; ++w) {
            float *restrict yp = y + b * y_sb + h * y_sh + w * y_sw;
            for (int64_t c = 0; c < channels; ++c) yp[c] = bias ? bias[c] : 0.0f;
            for (int64_t dh = -1; dh <= 1; ++dh) {
                if (h + dh < 0 || h + dh >= height) continue;
                for (int64_t dw = -1; dw <= 1; ++dw) {
                    if (w + dw < 0 || w + dw >= width) continue;
                    const float *restrict xp = x + b * x_sb + (h + dh) * x_sh + (w + dw) * x_sw;
                    const float *restrict tap = weight + (3 * (dh + 1) + (dw + 1)) * channels;
                    for (int64_t c = 0; c < channels; ++c) yp[c] += tap[c] * xp[c];
                }
            }
            if (silu)
                for (int64_t c = 0; c < channels; ++c) yp[c] = vz_silu(yp[c]);
        }
        vz_fp_leave(fp);
    }
    return 0;
}
