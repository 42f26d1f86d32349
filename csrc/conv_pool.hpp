// conv_pool.hpp: max and average pooling forward / backward on raw NCHW planes (the pooling
// kernels of pyml's conv loop, bound in csrc/conv.cpp), PyTorch's semantics: dilation for max,
// ceil_mode through the output size, count_include_pad and divisor_override for the mean.
// Fast by: one OpenMP loop over (image, channel) planes no other thread writes, the window's
// clipped row/column range computed once per output so the inner loops carry no bounds tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace conv_pool {

struct Plane {  // one call's geometry: BC planes of H x W in, OH x OW out
    long BC, H, W, OH, OW, KH, KW, sh, sw, ph, pw;
};

// Max of each window's in-bounds (dilated) taps and its flat index y*W + x; a NaN wins (as
// torch), ties keep the first in window order; -inf / -1 when no tap is in bounds.
template <typename T>
void max_forward(const Plane &g, long dh, long dw, const T *x, T *z, int64_t *idx, bool par) {
#pragma omp parallel for schedule(static) if (par)
    for (long bc = 0; bc < g.BC; ++bc) {
        const T *plane = x + bc * g.H * g.W;
        for (long i = 0; i < g.OH; ++i)
            for (long j = 0; j < g.OW; ++j) {
                T best = -std::numeric_limits<T>::infinity();
                int64_t arg = -1;
                for (long m = 0; m < g.KH; ++m) {
                    const long y = g.sh * i - g.ph + dh * m;
                    if (y < 0 || y >= g.H) continue;
                    for (long n = 0; n < g.KW; ++n) {
                        const long xx = g.sw * j - g.pw + dw * n;
                        if (xx < 0 || xx >= g.W) continue;
                        const T v = plane[y * g.W + xx];
                        if (arg < 0 || v > best || std::isnan(v)) {
                            best = v;
                            arg = y * g.W + xx;
                        }
                    }
                }
                z[(bc * g.OH + i) * g.OW + j] = best;
                idx[(bc * g.OH + i) * g.OW + j] = arg;
            }
    }
}

// dX = 0, then each output's gradient added at its argmax (indices outside the plane, such
// as -1, pass nothing: an index is never trusted blindly).
template <typename T>
void max_backward(long BC, long HW, long P, const T *dz, const int64_t *idx, T *dx, bool par) {
#pragma omp parallel for schedule(static) if (par)
    for (long bc = 0; bc < BC; ++bc) {
        T *plane = dx + bc * HW;
        std::fill(plane, plane + HW, T(0));
        for (long k = 0; k < P; ++k) {
            const int64_t a = idx[bc * P + k];
            if (a >= 0 && a < HW) plane[a] += dz[bc * P + k];
        }
    }
}

// Output i's window clipped to [0, N) as [lo, hi), and its size counting the padding but not
// the ceil-mode overhang beyond it (PyTorch's count_include_pad divisor).
inline void window(long i, long K, long S, long P, long N, long &lo, long &hi, long &size) {
    const long start = S * i - P, end = std::min(start + K, N + P);
    size = end - start;
    lo = std::max(start, 0L);
    hi = std::min(end, N);
}

struct Divisor {
    bool include_pad;
    long override_;  // 0: none
    long operator()(long y0, long y1, long x0, long x1, long size) const {
        if (override_ != 0) return override_;
        return include_pad ? size : (y1 - y0) * (x1 - x0);
    }
};

template <typename T>
void avg_forward(const Plane &g, Divisor div, const T *x, T *z, bool par) {
#pragma omp parallel for schedule(static) if (par)
    for (long bc = 0; bc < g.BC; ++bc) {
        const T *plane = x + bc * g.H * g.W;
        for (long i = 0; i < g.OH; ++i) {
            long y0, y1, hs;
            window(i, g.KH, g.sh, g.ph, g.H, y0, y1, hs);
            for (long j = 0; j < g.OW; ++j) {
                long x0, x1, ws;
                window(j, g.KW, g.sw, g.pw, g.W, x0, x1, ws);
                T s = T(0);
                for (long y = y0; y < y1; ++y)
                    for (long xx = x0; xx < x1; ++xx) s += plane[y * g.W + xx];
                z[(bc * g.OH + i) * g.OW + j] =
                    (y0 >= y1 || x0 >= x1) ? T(0) : s / T(div(y0, y1, x0, x1, hs * ws));
            }
        }
    }
}

template <typename T>
void avg_backward(const Plane &g, Divisor div, const T *dz, T *dx, bool par) {
#pragma omp parallel for schedule(static) if (par)
    for (long bc = 0; bc < g.BC; ++bc) {
        T *plane = dx + bc * g.H * g.W;
        std::fill(plane, plane + g.H * g.W, T(0));
        for (long i = 0; i < g.OH; ++i) {
            long y0, y1, hs;
            window(i, g.KH, g.sh, g.ph, g.H, y0, y1, hs);
            for (long j = 0; j < g.OW; ++j) {
                long x0, x1, ws;
                window(j, g.KW, g.sw, g.pw, g.W, x0, x1, ws);
                if (y0 >= y1 || x0 >= x1) continue;
                const T gr = dz[(bc * g.OH + i) * g.OW + j] / T(div(y0, y1, x0, x1, hs * ws));
                for (long y = y0; y < y1; ++y)
#pragma omp simd
                    for (long xx = x0; xx < x1; ++xx) plane[y * g.W + xx] += gr;
            }
        }
    }
}

}  // namespace conv_pool
