// Fused k-means assignment: argmin_j (||c_j - m||^2 - 2 (x - m).(c_j - m)) in registers, the n x k
// score matrix is never stored; m = mean of the centres. Included by kmeans.cpp only.
//
// Shift. ||c||^2 - 2 x.c cancels catastrophically when the data share an offset that is large
// against their spread (float32 at 1e4: ~90% wrong labels); shifting x and c by m keeps every
// term at the scale of the spread. The shifted rows of X are written to a per-thread tile
// buffer once per tile (in L2, reused by every panel), so no full copy of X is made.
//
// Layout. C is packed once per call into panels of P = 2 vectors of centres (32 floats /
// 16 doubles with AVX-512): panel p holds, for t = 0..d-1, the P values -2 (c_j[t] - m[t]) of its
// centres side by side, plus a vector pair of ||c_j - m||^2. k is padded up to a multiple of P
// with zero centres whose norm is +inf, so a padded lane never wins a strict <.
// Micro-kernel. A block of MR rows of X (read in place; the last block repeats its last
// row instead of reading past n) runs over the panels: MR x 2 accumulators start at
// ||c||^2 and take d FMAs each (x[r][t] broadcast, the panel row as the other operand).
// After a panel every accumulator is folded lane-wise into the row's running (min, argmin)
// pair with a strict <; panels, and the two halves of a panel, arrive in ascending centre
// order, so every lane keeps the first minimum of its centres. A final horizontal pass
// takes the smallest value and, among lanes that hold it, the smallest index: exactly the
// reference's "first minimum" rule. Centre indices travel as T lanes (exact below 2^24; the
// caller checks k). The returned distance is recomputed exactly from x and the chosen c.
// Registers (AVX-512, MR = 6): 12 accumulators + 6 + 6 running pairs + 2 panel vectors + 2
// index vectors = 28 of 32. Without AVX-512 the same code runs on 32- or 16-byte GCC vectors
// with MR = 3 (16 registers).
// Cache blocking. Rows are processed in tiles of up to 32 MR rows and TILE_BYTES; when the
// packed C is larger than CHUNK_BYTES the panels are walked in chunks (chunk outer, row
// blocks of the tile inner, running pairs kept in a per-tile buffer), so chunk and tile
// both stay in L2. Threads take tiles two at a time (dynamic: a thread that loses its core
// for a while does not hold the call up). The t loop is unrolled 4 times (measured: +10%
// at d = 32 on Zen 5).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace kmfused {

#if defined(__AVX512F__)
constexpr int VBYTES = 64, MR = 6, NV = 2;  // 32 zmm; 6 x 2 measured best of 4x3, 5x2, 8x2, 3x4, 12x1
#elif defined(__AVX__)
constexpr int VBYTES = 32, MR = 3, NV = 2;  // 16 ymm: 6 accumulators + 3 + 3 pairs + 4
#else
constexpr int VBYTES = 16, MR = 3, NV = 2;
#endif
constexpr int TILE_ROWS = 32 * MR;
constexpr size_t TILE_BYTES = 256 * 1024, CHUNK_BYTES = 256 * 1024;

// Exact squared distance of a pair from the differences, accumulated in double (the expanded
// form used for the argmin cancels when ||x|| >> ||x - c||).
template <typename T>
inline double sqdist_d(const T* x, const T* c, int64_t d) {
    int64_t t = 0;
    double s = 0;
#if defined(__AVX512F__)
    __m512d s0 = _mm512_setzero_pd();
    if constexpr (sizeof(T) == 4) {
        for (; t + 8 <= d; t += 8) {
            const __m512d df = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + t)),
                                             _mm512_cvtps_pd(_mm256_loadu_ps(c + t)));
            s0 = _mm512_fmadd_pd(df, df, s0);
        }
    } else {
        for (; t + 8 <= d; t += 8) {
            const __m512d df = _mm512_sub_pd(_mm512_loadu_pd(x + t), _mm512_loadu_pd(c + t));
            s0 = _mm512_fmadd_pd(df, df, s0);
        }
    }
    s = _mm512_reduce_add_pd(s0);
#endif
    for (; t < d; ++t) {
        const double df = (double)x[t] - (double)c[t];
        s += df * df;
    }
    return s;
}

template <typename T>
inline T sqdist(const T* x, const T* c, int64_t d) { return (T)sqdist_d(x, c, d); }

template <typename T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(VBYTES))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(VBYTES))); };

template <typename T>
struct Fused {
    using V = typename VecOf<T>::type;
    static constexpr int W = VBYTES / (int)sizeof(T);  // lanes
    static constexpr int P = NV * W;                    // centres per panel

    int64_t k, d, np;
    std::vector<T> m;   // the shift: mean of the centres, rounded to T
    std::vector<V> cp;  // np panels x d rows x NV vectors: -2 (c - m)
    std::vector<V> cn;  // np x NV vectors: ||c - m||^2, +inf for padding

    Fused(const T* c, int64_t k_, int64_t d_) : k(k_), d(d_), np((k_ + P - 1) / P) {
        std::vector<double> mean(d, 0.0);
        for (int64_t j = 0; j < k; ++j)
            for (int64_t t = 0; t < d; ++t) mean[t] += c[j * d + t];
        m.resize(d);
        for (int64_t t = 0; t < d; ++t) m[t] = (T)(mean[t] / (double)k);
        cp.assign((size_t)np * d * NV, V{});
        cn.assign((size_t)np * NV, V{});
        for (int64_t p = 0; p < np; ++p)
            for (int l = 0; l < P; ++l) {
                const int64_t j = p * P + l;
                double s = std::numeric_limits<double>::infinity();
                if (j < k) {
                    s = 0;
                    const T* cj = c + (size_t)j * d;
                    for (int64_t t = 0; t < d; ++t) {
                        const T v = cj[t] - m[t];
                        s += (double)v * v;
                        cp[((size_t)p * d + t) * NV + l / W][l % W] = -2 * v;
                    }
                }
                cn[(size_t)p * NV + l / W][l % W] = (T)s;
            }
    }

    // Panels [p0, p1) for the MR rows xr[]; running pairs loaded from / stored to bv, bi.
    void block(const T* const* xr, int64_t p0, int64_t p1, V* bv, V* bi) const {
        V v[MR], ix[MR], jv[NV];
        for (int r = 0; r < MR; ++r) { v[r] = bv[r]; ix[r] = bi[r]; }
        for (int h = 0; h < NV; ++h)
            for (int l = 0; l < W; ++l) jv[h][l] = (T)(p0 * P + h * W + l);
        const T* x[MR];
        for (int r = 0; r < MR; ++r) x[r] = xr[r];
        for (int64_t p = p0; p < p1; ++p) {
            const V* c = cp.data() + (size_t)p * d * NV;
            V a[MR][NV];
            for (int r = 0; r < MR; ++r)
                for (int h = 0; h < NV; ++h) a[r][h] = cn[NV * p + h];
#pragma GCC unroll 4
            for (int64_t t = 0; t < d; ++t) {
                V cv[NV];
                for (int h = 0; h < NV; ++h) cv[h] = c[NV * t + h];
                for (int r = 0; r < MR; ++r) {
                    const T s = x[r][t];
                    for (int h = 0; h < NV; ++h)
                        a[r][h] += s * cv[h];  // one FMA (-O3, GCC's default -ffp-contract=fast)
                }
            }
            for (int r = 0; r < MR; ++r)
                for (int h = 0; h < NV; ++h) {
                    auto m = a[r][h] < v[r];
                    v[r] = m ? a[r][h] : v[r];
                    ix[r] = m ? jv[h] : ix[r];
                }
            for (int h = 0; h < NV; ++h) jv[h] += (T)P;
        }
        for (int r = 0; r < MR; ++r) { bv[r] = v[r]; bi[r] = ix[r]; }
    }

    // The smallest value of v and, among its lanes holding that value, the smallest index.
    static int32_t first_min(const V& v, const V& ix) {
#if defined(__AVX512F__)
        if constexpr (sizeof(T) == 4) {
            const float m = _mm512_reduce_min_ps((__m512)v);
            const __mmask16 eq = _mm512_cmp_ps_mask((__m512)v, _mm512_set1_ps(m), _CMP_EQ_OQ);
            return (int32_t)_mm512_mask_reduce_min_ps(eq, (__m512)ix);
        } else {
            const double m = _mm512_reduce_min_pd((__m512d)v);
            const __mmask8 eq = _mm512_cmp_pd_mask((__m512d)v, _mm512_set1_pd(m), _CMP_EQ_OQ);
            return (int32_t)_mm512_mask_reduce_min_pd(eq, (__m512d)ix);
        }
#else
        T m = v[0], i = ix[0];
        for (int l = 1; l < W; ++l)
            if (v[l] < m || (v[l] == m && ix[l] < i)) { m = v[l]; i = ix[l]; }
        return (int32_t)i;
#endif
    }

    // labels and exact squared distances of the n rows of x (row-major n x d) to the centres
    // c (row-major k x d, the ones packed); call without the GIL.
    void assign(const T* x, int64_t n, const T* c, int32_t* labels, T* dist) const {
        const int64_t cpanels = std::max<int64_t>(1, (int64_t)(CHUNK_BYTES / ((size_t)d * P * sizeof(T))));
        const int tr = MR * (int)std::clamp<size_t>(TILE_BYTES / ((size_t)d * MR * sizeof(T)), 1, TILE_ROWS / MR);
        const int64_t ntiles = (n + tr - 1) / tr;
#pragma omp parallel
        {
            std::vector<V> sv(TILE_ROWS), si(TILE_ROWS);
            std::vector<T> xs((size_t)tr * d);  // the tile's rows minus m
            const T* mp = m.data();
#pragma omp for schedule(dynamic, 2)
            for (int64_t tile = 0; tile < ntiles; ++tile) {
                const int64_t r0 = tile * tr;
                const int rows = (int)std::min<int64_t>(tr, n - r0);
                const int nb = (rows + MR - 1) / MR;
                for (int r = 0; r < nb * MR; ++r) {
                    sv[r] = V{} + std::numeric_limits<T>::infinity();
                    si[r] = V{};
                }
                for (int r = 0; r < rows; ++r) {
                    const T* xi = x + (r0 + r) * d;
                    T* xo = xs.data() + (size_t)r * d;
#pragma omp simd
                    for (int64_t t = 0; t < d; ++t) xo[t] = xi[t] - mp[t];
                }
                for (int64_t q0 = 0; q0 < np; q0 += cpanels) {
                    const int64_t q1 = std::min(np, q0 + cpanels);
                    for (int b = 0; b < nb; ++b) {
                        const T* xr[MR];
                        for (int r = 0; r < MR; ++r)  // past the end: repeat the last row
                            xr[r] = xs.data() + (size_t)std::min(b * MR + r, rows - 1) * d;
                        block(xr, q0, q1, sv.data() + b * MR, si.data() + b * MR);
                    }
                }
                // two loops: the label chains of many rows overlap before the distances need them
                for (int r = 0; r < rows; ++r) labels[r0 + r] = first_min(sv[r], si[r]);
                for (int r = 0; r < rows; ++r)
                    dist[r0 + r] = sqdist(x + (r0 + r) * d, c + (int64_t)labels[r0 + r] * d, d);
            }
        }
    }
};

}  // namespace kmfused
