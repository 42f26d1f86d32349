// Greedy k-means++ step (Arthur & Vassilvitskii 2007; the greedy variant of scikit-learn):
// phi_q = sum_j w_j min(D2_j, ||x_j - x_cand_q||^2) per candidate q, and D2_new for the best q.
// Fast: points in lanes. A tile of W points (one vector of lanes) is transposed into an L1
// buffer once and every candidate then costs d subtract+FMA vector steps with no horizontal
// reduction; distances come from differences (no ||x||^2 - 2 x.c cancellation) in T, the
// min / weight / potential arithmetic in double vectors. Included by kmeans.cpp only.
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
    static constexpr int W = kmfused::VBYTES / (int)sizeof(T);
    using VD = typename DoublesOf<T>::type;
    static constexpr int64_t TILE = W;   // points per tile
    static constexpr int64_t BLOCK = 64 * W;  // points per partial sum (fixed: same bits for any threads)

    const T* x;
    int64_t n, d;

    // xt[t] = the tile's coordinate t for its W points (the last point repeated past n)
    void transpose(int64_t j0, V* xt) const {
        const int rows = (int)std::min<int64_t>(TILE, n - j0);
        T* out = reinterpret_cast<T*>(xt);  // xt as a (d x W) matrix of T
        for (int l = 0; l < W; ++l) {  // row by row: contiguous reads
            const T* xr = x + (j0 + std::min(l, rows - 1)) * d;
            for (int64_t t = 0; t < d; ++t) out[t * W + l] = xr[t];
        }
    }

    // squared distances of the tile's W points to centre c (d values)
    V dist(const V* xt, const T* c) const {
        V acc = V{};
        for (int64_t t = 0; t < d; ++t) {
            const V df = xt[t] - c[t];
            acc += df * df;
        }
        return acc;
    }

    static VD load_d(const double* p, int rows) {
        VD v = VD{};
        for (int l = 0; l < rows; ++l) v[l] = p[l];
        return v;
    }

    // potentials pot[q] of the candidates cand (nc rows of d values, contiguous); call without the GIL
    // (and, when keep is not null, every candidate's distances: keep[q * n + j] = ||x_j - cand_q||^2)
    void potentials(const double* w, const double* D2, const T* cand, int64_t nc, double* pot, T* keep) const {
        const int64_t nb = (n + BLOCK - 1) / BLOCK;
        std::vector<double> part((size_t)nb * nc, 0.0);
#pragma omp parallel
        {
            std::vector<V> xt((size_t)d);
            std::vector<VD> acc((size_t)nc);
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < nb; ++b) {
                std::fill(acc.begin(), acc.end(), VD{});
                for (int64_t j0 = b * BLOCK; j0 < std::min(n, (b + 1) * BLOCK); j0 += TILE) {
                    const int rows = (int)std::min<int64_t>(TILE, n - j0);
                    transpose(j0, xt.data());
                    const VD dv = load_d(D2 + j0, rows), wv = load_d(w + j0, rows);  // w = 0 past n
                    for (int64_t q = 0; q < nc; ++q) {
                        const V sv = dist(xt.data(), cand + q * d);
                        if (keep)
                            for (int l = 0; l < rows; ++l) keep[q * n + j0 + l] = sv[l];
                        const VD s = __builtin_convertvector(sv, VD);
                        const VD m = s < dv ? s : dv;
                        acc[q] += wv > 0.0 ? wv * m : VD{};  // 0 * inf would be NaN
                    }
                }
                for (int64_t q = 0; q < nc; ++q) {
                    double s = 0;
                    for (int l = 0; l < W; ++l) s += acc[q][l];
                    part[(size_t)b * nc + q] = s;
                }
            }
        }
        for (int64_t q = 0; q < nc; ++q) {
            double s = 0;
            for (int64_t b = 0; b < nb; ++b) s += part[(size_t)b * nc + q];
            pot[q] = s;
        }
    }

    // out = min(D2, ||x - c||^2); call without the GIL
    void update(const double* D2, const T* c, double* out) const {
        const int64_t ntiles = (n + TILE - 1) / TILE;
#pragma omp parallel
        {
            std::vector<V> xt((size_t)d);
#pragma omp for schedule(static)
            for (int64_t tile = 0; tile < ntiles; ++tile) {
                const int64_t j0 = tile * TILE;
                const int rows = (int)std::min<int64_t>(TILE, n - j0);
                transpose(j0, xt.data());
                const V s = dist(xt.data(), c);
                for (int l = 0; l < rows; ++l) out[j0 + l] = std::min(D2[j0 + l], (double)s[l]);
            }
        }
    }
};

}  // namespace kmseed
