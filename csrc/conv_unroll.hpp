// conv_unroll.hpp: the im2col / col2im loops of the unroll+GEMM conv2d path in csrc/conv.cpp
// (used where the stride-1 slab path of conv_slab.hpp does not apply), on raw NCHW planes.
#pragma once

#include <algorithm>

namespace conv_unroll {

// [j0, j1): the output columns j with 0 <= s*j + off < W.
inline void valid_range(long s, long off, long W, long OW, long &j0, long &j1) {
    j0 = off >= 0 ? 0 : (-off + s - 1) / s;
    j1 = W - off <= 0 ? 0 : (W - off + s - 1) / s;
    j1 = std::min(std::max(j1, j0), OW);
    j0 = std::min(j0, j1);
}

// Unroll one (image, channel) plane into its KH*KW rows of OH*OW columns.
template <typename T>
void im2col_plane(const T *plane, T *rows, long H, long W, long KH, long KW, long sh, long sw,
                  long ph, long pw, long dh, long dw, long OH, long OW) {
    for (long m = 0; m < KH; ++m)
        for (long n = 0; n < KW; ++n) {
            T *row = rows + (m * KW + n) * OH * OW;
            const long xo = dw * n - pw;
            long j0, j1;
            valid_range(sw, xo, W, OW, j0, j1);
            for (long i = 0; i < OH; ++i) {
                T *r = row + i * OW;
                const long y = sh * i - ph + dh * m;
                if (y < 0 || y >= H) {
                    std::fill(r, r + OW, T(0));
                    continue;
                }
                std::fill(r, r + j0, T(0));
                std::fill(r + j1, r + OW, T(0));
                const T *src = plane + y * W + xo;
                if (sw == 1) {
#pragma omp simd
                    for (long j = j0; j < j1; ++j) r[j] = src[j];
                } else {
#pragma omp simd
                    for (long j = j0; j < j1; ++j) r[j] = src[sw * j];
                }
            }
        }
}

// Scatter-add the KH*KW rows of one channel back into its (zeroed here) input plane.
template <typename T>
void col2im_plane(const T *rows, T *plane, long H, long W, long KH, long KW, long sh, long sw,
                  long ph, long pw, long dh, long dw, long OH, long OW) {
    std::fill(plane, plane + H * W, T(0));
    for (long m = 0; m < KH; ++m)
        for (long n = 0; n < KW; ++n) {
            const T *row = rows + (m * KW + n) * OH * OW;
            const long xo = dw * n - pw;
            long j0, j1;
            valid_range(sw, xo, W, OW, j0, j1);
            for (long i = 0; i < OH; ++i) {
                const long y = sh * i - ph + dh * m;
                if (y < 0 || y >= H) continue;
                T *dst = plane + y * W + xo;
                const T *r = row + i * OW;
                // Distinct j hit distinct columns (s >= 1), so the loop is vectorisable.
#pragma omp simd
                for (long j = j0; j < j1; ++j) dst[sw * j] += r[j];
            }
        }
}

}  // namespace conv_unroll
