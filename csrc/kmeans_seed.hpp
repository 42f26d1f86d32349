// Greedy k-means++ step (Arthur & Vassilvitskii 2007; the greedy variant of scikit-learn):
// phi_q = sum_j w_j min(D2_j, ||x_j - x_cand_q||^2) per candidate q, and D2_new for the best q.
// Fast: candidates in lanes. The candidates are packed once into panels of W (one vector per
// coordinate), so every point costs d subtract+FMA vector steps for up to W candidates at
// once, reads its row in place and needs no horizontal reduction; distances come from
// differences (no ||x||^2 - 2 x.c cancellation) in T, min / weight / potential in double
// vectors. Included by kmeans.cpp only.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "kmeans_fused.hpp"

namespace kmseed {

// a vector of doubles with as many lanes as VecOf<T> (the attribute needs a non-dependent size)
template <typename T> struct DoublesOf;
template <> struct DoublesOf<float> { typedef double type __attribute__((vector_size(2 * kmfused::VBYTES))); };
template <> struct DoublesOf<double> { typedef double type __attribute__((vector_size(kmfused::VBYTES))); };

template <typename T>
struct Seed {
    using V = typename kmfused::VecOf<T>::type;
    using VD = typename DoublesOf<T>::type;
    static constexpr int W = kmfused::VBYTES / (int)sizeof(T);  // candidates per panel (lanes)
    static constexpr int R = 4;             // rows per micro-step
    static constexpr int64_t BLOCK = 1024;  // points per partial sum (fixed: same bits for any threads)

    const T* x;
    int64_t n, d;

    // potentials pot[q] of the nc candidates (rows of d values, contiguous); call without the GIL
    void potentials(const double* w, const double* D2, const T* cand, int64_t nc, double* pot) const {
        const int64_t np = (nc + W - 1) / W, nb = (n + BLOCK - 1) / BLOCK;
        // panel p, coordinate t: the W candidates' values side by side (padding repeats the last)
        std::vector<V> panel((size_t)np * d);
        for (int64_t p = 0; p < np; ++p)
            for (int l = 0; l < W; ++l) {
                const int64_t q = std::min<int64_t>(p * W + l, nc - 1);
                for (int64_t t = 0; t < d; ++t) panel[(size_t)p * d + t][l] = cand[q * d + t];
            }
        std::vector<VD> part((size_t)nb * np);
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t b = 0; b < nb; ++b) {
            for (int64_t p = 0; p < np; ++p) {
                const V* c = panel.data() + (size_t)p * d;
                VD acc = VD{};
                const int64_t j1 = std::min(n, (b + 1) * BLOCK);
                for (int64_t j0 = b * BLOCK; j0 < j1; j0 += R) {
                    // R rows at once: independent FMA chains (one row alone is latency-bound)
                    const int rows = (int)std::min<int64_t>(R, j1 - j0);
                    const T* xr[R];
                    for (int r = 0; r < R; ++r) xr[r] = x + (j0 + std::min(r, rows - 1)) * d;
                    V s[R] = {};
                    for (int64_t t = 0; t < d; ++t) {
                        const V ct = c[t];
                        for (int r = 0; r < R; ++r) {
                            const V df = xr[r][t] - ct;
                            s[r] += df * df;
                        }
                    }
                    for (int r = 0; r < rows; ++r) {
                        const int64_t j = j0 + r;
                        if (!(w[j] > 0.0)) continue;  // no weight: adds nothing (and 0 * inf is NaN)
                        const VD sd = __builtin_convertvector(s[r], VD);
                        const VD dj = VD{} + D2[j];
                        acc += w[j] * (sd < dj ? sd : dj);
                    }
                }
                part[(size_t)b * np + p] = acc;
            }
        }
        for (int64_t q = 0; q < nc; ++q) {
            double sum = 0;
            for (int64_t b = 0; b < nb; ++b) sum += part[(size_t)b * np + q / W][q % W];
            pot[q] = sum;
        }
    }

    // out = min(D2, ||x - c||^2), serial: one distance per point, memory-bound, cheaper than
    // waking the thread team once more per step (which stalls when the cores are busy)
    void update(const double* D2, const T* c, double* out) const {
        for (int64_t j = 0; j < n; ++j) out[j] = std::min(D2[j], (double)kmfused::sqdist(x + j * d, c, d));
    }
};

}  // namespace kmseed
