// Max and average pooling (NCHW), forward and backward, float and double.
// Z(i, j) = max / mean of the KH x KW window at (sh*i - ph, sw*j - pw); zero padding never wins
// a max (only in-bounds elements are candidates) and counts in the mean (count_include_pad).
// Max indices are the flat position y*W + x inside the H*W plane (int64), exactly as the CPU
// kernels: the first in-bounds element starts the scan, a later one wins only if strictly
// greater (ties -> first in row-major window order).
// One thread per output element (forward, max backward via atomicAdd) or per input element
// (avg backward, gathering; no atomics). Grid-stride loops with 64-bit flat indices.
// Self-contained for NVRTC: no host headers.

typedef long long i64;

template <typename T>
__device__ void max_fwd(const T *__restrict__ x, T *__restrict__ z, i64 *__restrict__ idx, i64 BC, int H,
                        int W, int OH, int OW, int KH, int KW, int sh, int sw, int ph, int pw) {
    const i64 total = BC * OH * OW;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        const int j = (int)(t % OW), i = (int)((t / OW) % OH);
        const i64 bc = t / ((i64)OW * OH);
        const T *plane = x + bc * H * W;
        T best = T(0);
        i64 arg = -1;
        for (int m = 0; m < KH; ++m) {
            const int yy = sh * i - ph + m;
            if (yy < 0 || yy >= H) continue;
            for (int n = 0; n < KW; ++n) {
                const int xx = sw * j - pw + n;
                if (xx < 0 || xx >= W) continue;
                const i64 k = (i64)yy * W + xx;
                const T v = __ldg(plane + k);
                if (arg < 0 || v > best) {
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

template <typename T>
__device__ void avg_fwd(const T *__restrict__ x, T *__restrict__ z, i64 BC, int H, int W, int OH, int OW,
                        int KH, int KW, int sh, int sw, int ph, int pw) {
    const i64 total = BC * OH * OW;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        const int j = (int)(t % OW), i = (int)((t / OW) % OH);
        const T *plane = x + (t / ((i64)OW * OH)) * H * W;
        double s = 0.0;  // double accumulation for both dtypes (matches the CPU kernels' float64 sum)
        for (int m = 0; m < KH; ++m) {
            const int yy = sh * i - ph + m;
            if (yy < 0 || yy >= H) continue;
            for (int n = 0; n < KW; ++n) {
                const int xx = sw * j - pw + n;
                if (xx >= 0 && xx < W) s += (double)__ldg(plane + (i64)yy * W + xx);
            }
        }
        z[t] = (T)(s / ((double)KH * KW));
    }
}

// dX[yy, xx] = sum over output windows covering (yy, xx) of dZ[i, j] / (KH*KW):
// i in [ceil((yy + ph - KH + 1) / sh), floor((yy + ph) / sh)] intersected with [0, OH).
template <typename T>
__device__ void avg_bwd(const T *__restrict__ dz, T *__restrict__ dx, i64 BC, int H, int W, int OH, int OW,
                        int KH, int KW, int sh, int sw, int ph, int pw) {
    const i64 total = BC * H * W;
    const double inv = 1.0 / ((double)KH * KW);
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        const int xx = (int)(t % W), yy = (int)((t / W) % H);
        const T *g = dz + (t / ((i64)W * H)) * OH * OW;
        const int ylo = yy + ph - KH + 1, xlo = xx + pw - KW + 1;
        const int i0 = ylo <= 0 ? 0 : (ylo + sh - 1) / sh, j0 = xlo <= 0 ? 0 : (xlo + sw - 1) / sw;
        const int i1 = min((yy + ph) / sh, OH - 1), j1 = min((xx + pw) / sw, OW - 1);
        double s = 0.0;
        for (int i = i0; i <= i1; ++i)
            for (int j = j0; j <= j1; ++j) s += (double)__ldg(g + (i64)i * OW + j);
        dx[t] = (T)(s * inv);
    }
}

#define POOL_ENTRIES(T, SFX)                                                                              \
    extern "C" __global__ void max_pool_forward_##SFX(const T *x, T *z, i64 *idx, i64 BC, int H, int W,   \
                                                      int OH, int OW, int KH, int KW, int sh, int sw,     \
                                                      int ph, int pw) {                                   \
        max_fwd<T>(x, z, idx, BC, H, W, OH, OW, KH, KW, sh, sw, ph, pw);                                  \
    }                                                                                                     \
    extern "C" __global__ void max_pool_backward_##SFX(const T *dz, const i64 *idx, T *dx, i64 BC, int H, \
                                                       int W, int OH, int OW) {                           \
        max_bwd<T>(dz, idx, dx, BC, H, W, OH, OW);                                                        \
    }                                                                                                     \
    extern "C" __global__ void avg_pool_forward_##SFX(const T *x, T *z, i64 BC, int H, int W, int OH,     \
                                                      int OW, int KH, int KW, int sh, int sw, int ph,     \
                                                      int pw) {                                           \
        avg_fwd<T>(x, z, BC, H, W, OH, OW, KH, KW, sh, sw, ph, pw);                                       \
    }                                                                                                     \
    extern "C" __global__ void avg_pool_backward_##SFX(const T *dz, T *dx, i64 BC, int H, int W, int OH,  \
                                                       int OW, int KH, int KW, int sh, int sw, int ph,    \
                                                       int pw) {                                          \
        avg_bwd<T>(dz, dx, BC, H, W, OH, OW, KH, KW, sh, sw, ph, pw);                                     \
    }

POOL_ENTRIES(float, f32)
POOL_ENTRIES(double, f64)
