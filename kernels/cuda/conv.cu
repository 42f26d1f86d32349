// Computes conv2d forward Y[b,o,i,j] = bias[o] + sum_{c,m,n} X[b,g*Cg+c, s*i-p+d*m, s*j-p+d*n] K[o,c,m,n]
// and its gradients (dX by gathering, dK by a block reduction), and max / average pooling
// forward and backward, NCHW, float and double (the kernels of pyml's "conv" loop).
// Fast by: one thread per output element with coalesced NCHW stores (innermost j), read-only
// loads through __ldg, and a shared-memory tree reduction for dK (no atomics, deterministic).
// Self-contained for NVRTC: no host headers.

struct Geo {
    int B, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups;
};

template <typename T>
__device__ void conv_fwd(const T *__restrict__ x, const T *__restrict__ k, const T *__restrict__ bias,
                         int has_bias, T *__restrict__ y, Geo g) {
    const long total = (long)g.B * g.O * g.OH * g.OW;
    const int Cg = g.C / g.groups, Og = g.O / g.groups;
    for (long t = blockIdx.x * (long)blockDim.x + threadIdx.x; t < total; t += (long)gridDim.x * blockDim.x) {
        const int j = t % g.OW, i = (t / g.OW) % g.OH, o = (t / ((long)g.OW * g.OH)) % g.O;
        const int b = t / ((long)g.OW * g.OH * g.O), grp = o / Og;
        T s = has_bias ? bias[o] : T(0);
        for (int c = 0; c < Cg; ++c) {
            const T *plane = x + ((long)b * g.C + grp * Cg + c) * g.H * g.W;
            const T *kk = k + ((long)o * Cg + c) * g.KH * g.KW;
            for (int m = 0; m < g.KH; ++m) {
                const int yy = g.sh * i - g.ph + g.dh * m;
                if (yy < 0 || yy >= g.H) continue;
                for (int n = 0; n < g.KW; ++n) {
                    const int xx = g.sw * j - g.pw + g.dw * n;
                    if (xx >= 0 && xx < g.W) s += __ldg(plane + yy * g.W + xx) * __ldg(kk + m * g.KW + n);
                }
            }
        }
        y[t] = s;
    }
}

// dX[b, c, yy, xx] = sum over (o in group, m, n) with yy = s*i - p + d*m for an integer i.
template <typename T>
__device__ void conv_bwd_input(const T *__restrict__ gy, const T *__restrict__ k, T *__restrict__ dx, Geo g) {
    const long total = (long)g.B * g.C * g.H * g.W;
    const int Cg = g.C / g.groups, Og = g.O / g.groups;
    for (long t = blockIdx.x * (long)blockDim.x + threadIdx.x; t < total; t += (long)gridDim.x * blockDim.x) {
        const int xx = t % g.W, yy = (t / g.W) % g.H, ch = (t / ((long)g.W * g.H)) % g.C;
        const int b = t / ((long)g.W * g.H * g.C), grp = ch / Cg, c = ch % Cg;
        T s = T(0);
        for (int m = 0; m < g.KH; ++m) {
            const int ny = yy + g.ph - g.dh * m;
            if (ny < 0 || ny % g.sh) continue;
            const int i = ny / g.sh;
            if (i >= g.OH) continue;
            for (int n = 0; n < g.KW; ++n) {
                const int nx = xx + g.pw - g.dw * n;
                if (nx < 0 || nx % g.sw) continue;
                const int j = nx / g.sw;
                if (j >= g.OW) continue;
                for (int oo = 0; oo < Og; ++oo) {
                    const int o = grp * Og + oo;
                    s += __ldg(gy + (((long)b * g.O + o) * g.OH + i) * g.OW + j) *
                         __ldg(k + (((long)o * Cg + c) * g.KH + m) * g.KW + n);
                }
            }
        }
        dx[t] = s;
    }
}

// One block per weight element: threads stride over (b, i, j), then a shared tree reduction.
template <typename T>
__device__ void conv_bwd_weight(const T *__restrict__ gy, const T *__restrict__ x, T *__restrict__ dk, Geo g) {
    extern __shared__ unsigned char smem_raw[];
    T *part = reinterpret_cast<T *>(smem_raw);
    const int Cg = g.C / g.groups, Og = g.O / g.groups;
    const long nk = (long)g.O * Cg * g.KH * g.KW;
    for (long e = blockIdx.x; e < nk; e += gridDim.x) {
        const int n = e % g.KW, m = (e / g.KW) % g.KH, c = (e / ((long)g.KW * g.KH)) % Cg;
        const int o = e / ((long)g.KW * g.KH * Cg), ch = (o / Og) * Cg + c;
        T s = T(0);
        const long P = (long)g.B * g.OH * g.OW;
        for (long q = threadIdx.x; q < P; q += blockDim.x) {
            const int j = q % g.OW, i = (q / g.OW) % g.OH, b = q / ((long)g.OW * g.OH);
            const int yy = g.sh * i - g.ph + g.dh * m, xx = g.sw * j - g.pw + g.dw * n;
            if (yy >= 0 && yy < g.H && xx >= 0 && xx < g.W)
                s += __ldg(gy + (((long)b * g.O + o) * g.OH + i) * g.OW + j) *
                     __ldg(x + (((long)b * g.C + ch) * g.H + yy) * g.W + xx);
        }
        part[threadIdx.x] = s;
        __syncthreads();
        for (int half = blockDim.x / 2; half > 0; half >>= 1) {  // blockDim is a power of two
            if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
            __syncthreads();
        }
        if (threadIdx.x == 0) dk[e] = part[0];
        __syncthreads();
    }
}

#define PYML_CONV_INSTANTIATE(T, SUF)                                                              \
    extern "C" __global__ void conv2d_##SUF(const T *x, const T *k, const T *bias, int has_bias,  \
                                            T *y, Geo g) {                                         \
        conv_fwd<T>(x, k, bias, has_bias, y, g);                                                   \
    }                                                                                              \
    extern "C" __global__ void conv2d_backward_input_##SUF(const T *gy, const T *k, T *dx, Geo g) { \
        conv_bwd_input<T>(gy, k, dx, g);                                                           \
    }                                                                                              \
    extern "C" __global__ void conv2d_backward_weight_##SUF(const T *gy, const T *x, T *dk, Geo g) { \
        conv_bwd_weight<T>(gy, x, dk, g);                                                          \
    }

PYML_CONV_INSTANTIATE(float, f32)
PYML_CONV_INSTANTIATE(double, f64)

// ---------------------------------------------------------------------------------- pooling
// PyTorch's pooling semantics, as the CPU kernels: max over the in-bounds (dilated) taps, a NaN
// wins, ties keep the first in row-major window order, -inf / index -1 for a window without an
// in-bounds tap; indices are the flat position y*W + x inside the H*W plane (int64). Mean: sum
// of the in-bounds elements over the divisor (window size counting padding but not the
// ceil-mode overhang; the in-bounds count without count_include_pad; divisor_override when
// nonzero). One thread per output element (forward, max backward via atomicAdd into a zeroed
// dX) or per input element (avg backward, gathering; no atomics). Grid-stride loops with
// 64-bit flat indices.

typedef long long i64;

template <typename T>
__device__ void max_fwd(const T *__restrict__ x, T *__restrict__ z, i64 *__restrict__ idx, i64 BC, int H,
                        int W, int OH, int OW, int KH, int KW, int sh, int sw, int ph, int pw, int dh,
                        int dw) {
    const i64 total = BC * OH * OW;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        const int j = (int)(t % OW), i = (int)((t / OW) % OH);
        const i64 bc = t / ((i64)OW * OH);
        const T *plane = x + bc * H * W;
        T best = (T)__longlong_as_double(0xfff0000000000000ULL);  // -inf
        i64 arg = -1;
        for (int m = 0; m < KH; ++m) {
            const int yy = sh * i - ph + dh * m;
            if (yy < 0 || yy >= H) continue;
            for (int n = 0; n < KW; ++n) {
                const int xx = sw * j - pw + dw * n;
                if (xx < 0 || xx >= W) continue;
                const i64 k = (i64)yy * W + xx;
                const T v = __ldg(plane + k);
                if (arg < 0 || v > best || v != v) {
                    best = v;
                    arg = k;
                }
            }
        }
        z[t] = best;
        idx[t] = arg;
    }
}

template <typename T>
__device__ void max_bwd(const T *__restrict__ dz, const i64 *__restrict__ idx, T *__restrict__ dx, i64 BC,
                        int H, int W, int OH, int OW) {
    const i64 total = BC * OH * OW, hw = (i64)H * W;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        const i64 k = idx[t], bc = t / ((i64)OW * OH);
        if (k >= 0 && k < hw) atomicAdd(dx + bc * hw + k, dz[t]);
    }
}

struct AvgOpts {
    int KH, KW, sh, sw, ph, pw, include_pad, divisor;  // divisor 0: no divisor_override
};

// Output i's window clipped to [0, N) as [lo, hi) and its size counting the padding only.
__device__ inline void avg_window(int i, int K, int S, int P, int N, int &lo, int &hi, int &size) {
    const int start = S * i - P, end = min(start + K, N + P);
    size = end - start;
    lo = max(start, 0);
    hi = min(end, N);
}

__device__ inline double avg_divisor(const AvgOpts &o, int y0, int y1, int x0, int x1, int size) {
    if (o.divisor != 0) return (double)o.divisor;
    return (double)(o.include_pad ? size : (y1 - y0) * (x1 - x0));
}

template <typename T>
__device__ void avg_fwd(const T *__restrict__ x, T *__restrict__ z, i64 BC, int H, int W, int OH, int OW,
                        AvgOpts o) {
    const i64 total = BC * OH * OW;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        const int j = (int)(t % OW), i = (int)((t / OW) % OH);
        const T *plane = x + (t / ((i64)OW * OH)) * H * W;
        int y0, y1, hs, x0, x1, ws;
        avg_window(i, o.KH, o.sh, o.ph, H, y0, y1, hs);
        avg_window(j, o.KW, o.sw, o.pw, W, x0, x1, ws);
        double s = 0.0;  // double accumulation for both dtypes
        for (int yy = y0; yy < y1; ++yy)
            for (int xx = x0; xx < x1; ++xx) s += (double)__ldg(plane + (i64)yy * W + xx);
        z[t] = (y0 >= y1 || x0 >= x1) ? T(0) : (T)(s / avg_divisor(o, y0, y1, x0, x1, hs * ws));
    }
}

// dX[yy, xx] = sum over the windows whose clipped range covers (yy, xx) of dZ[i, j] / divisor:
// i in [ceil((yy + ph - KH + 1) / sh), floor((yy + ph) / sh)] intersected with [0, OH).
template <typename T>
__device__ void avg_bwd(const T *__restrict__ dz, T *__restrict__ dx, i64 BC, int H, int W, int OH, int OW,
                        AvgOpts o) {
    const i64 total = BC * H * W;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        const int xx = (int)(t % W), yy = (int)((t / W) % H);
        const T *g = dz + (t / ((i64)W * H)) * OH * OW;
        const int ylo = yy + o.ph - o.KH + 1, xlo = xx + o.pw - o.KW + 1;
        const int i0 = ylo <= 0 ? 0 : (ylo + o.sh - 1) / o.sh, j0 = xlo <= 0 ? 0 : (xlo + o.sw - 1) / o.sw;
        const int i1 = min((yy + o.ph) / o.sh, OH - 1), j1 = min((xx + o.pw) / o.sw, OW - 1);
        double s = 0.0;
        for (int i = i0; i <= i1; ++i) {
            int y0, y1, hs;
            avg_window(i, o.KH, o.sh, o.ph, H, y0, y1, hs);
            for (int j = j0; j <= j1; ++j) {
                int x0, x1, ws;
                avg_window(j, o.KW, o.sw, o.pw, W, x0, x1, ws);
                s += (double)__ldg(g + (i64)i * OW + j) / avg_divisor(o, y0, y1, x0, x1, hs * ws);
            }
        }
        dx[t] = (T)s;
    }
}

#define POOL_ENTRIES(T, SFX)                                                                              \
    extern "C" __global__ void max_pool2d_##SFX(const T *x, T *z, i64 *idx, i64 BC, int H, int W, int OH, \
                                                int OW, int KH, int KW, int sh, int sw, int ph, int pw,   \
                                                int dh, int dw) {                                         \
        max_fwd<T>(x, z, idx, BC, H, W, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw);                          \
    }                                                                                                     \
    extern "C" __global__ void max_pool2d_backward_##SFX(const T *dz, const i64 *idx, T *dx, i64 BC,      \
                                                         int H, int W, int OH, int OW) {                  \
        max_bwd<T>(dz, idx, dx, BC, H, W, OH, OW);                                                        \
    }                                                                                                     \
    extern "C" __global__ void avg_pool2d_##SFX(const T *x, T *z, i64 BC, int H, int W, int OH, int OW,   \
                                                AvgOpts o) {                                              \
        avg_fwd<T>(x, z, BC, H, W, OH, OW, o);                                                            \
    }                                                                                                     \
    extern "C" __global__ void avg_pool2d_backward_##SFX(const T *dz, T *dx, i64 BC, int H, int W,        \
                                                         int OH, int OW, AvgOpts o) {                     \
        avg_bwd<T>(dz, dx, BC, H, W, OH, OW, o);                                                          \
    }

POOL_ENTRIES(float, f32)
POOL_ENTRIES(double, f64)
