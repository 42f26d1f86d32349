// Lloyd / k-medians update steps on raw arrays (pybind-free): the empty-cluster rule, the
// weighted centre sums of k-means and the coordinate-wise weighted medians of k-medians.
// Fast: one pass over the points into per-thread partial sums; medians per cluster in parallel.
// Included by kmeans.cpp only.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace kmupdate {

// Same rule as pyml.reference.kmeans.relocate_empty; serial because it is O(n) per empty cluster.
template <typename T>
inline void relocate_empty(const double* w, const int32_t* labels, const T* dist, int64_t n, int64_t k,
                    std::vector<int32_t>& lab) {
    std::vector<double> W(k, 0.0);
    for (int64_t j = 0; j < n; ++j) W[labels[j]] += w[j];
    lab.assign(labels, labels + n);
    double prev_d = std::numeric_limits<double>::infinity();
    int64_t prev_j = -1;
    for (int64_t i = 0; i < k; ++i) {
        if (W[i] != 0.0) continue;
        double best_d = -std::numeric_limits<double>::infinity();
        int64_t best_j = -1;
        for (int64_t j = 0; j < n; ++j) {
            const double dj = (double)dist[j];
            if (w[j] > 0.0 && (dj < prev_d || (dj == prev_d && j > prev_j)) && dj > best_d) {
                best_d = dj;
                best_j = j;
            }
        }
        if (best_j < 0) break;
        lab[best_j] = (int32_t)i;
        prev_d = best_d;
        prev_j = best_j;
    }
}

// Per-thread weighted sums (k x d) and weights (k) of the points by label, all in one pass
// (labels are range-checked on the way: false if one is out of range, nothing written for it).
template <typename T>
inline bool weighted_sums(const T* x, const double* wp, const int32_t* lab, int64_t n, int64_t k, int64_t d,
                   std::vector<double>& part, int nt) {
    const size_t stride = (size_t)k * (d + 1);  // per thread: k sums of d, then k weights
    part.assign((size_t)nt * stride, 0.0);
    bool ok = true;
#pragma omp parallel num_threads(nt) reduction(&& : ok)
    {
        double* S = part.data() + (size_t)omp_get_thread_num() * stride;
        double* W = S + (size_t)k * d;
#pragma omp for schedule(static)  // static: the same partial sums, so the same bits, every run
        for (int64_t j = 0; j < n; ++j) {
            const int32_t i = lab[j];
            if (i < 0 || i >= k) { ok = false; continue; }
            const double wj = wp[j];
            const T* xj = x + j * d;
            double* Si = S + (size_t)i * d;
            W[i] += wj;
#pragma omp simd
            for (int64_t t = 0; t < d; ++t) Si[t] += wj * (double)xj[t];
        }
    }
    return ok;
}

// m (k x d, holding the old centres) = the weighted coordinate medians of each cluster's members
// (the smallest value whose cumulative weight reaches half the cluster's weight); a cluster of
// no weight keeps its centre. Call without the GIL.
template <typename T>
void medians(const T* x, const double* wp, const int32_t* lab, int64_t n, int64_t k, int64_t d, T* m) {
    // members of each cluster, contiguous and in index order (counting sort)
    std::vector<int64_t> start(k + 1, 0), members(n);
    for (int64_t j = 0; j < n; ++j) ++start[lab[j] + 1];
    for (int64_t i = 0; i < k; ++i) start[i + 1] += start[i];
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t j = 0; j < n; ++j) members[fill[lab[j]]++] = j;
    int64_t maxcnt = 0;
    for (int64_t i = 0; i < k; ++i) maxcnt = std::max(maxcnt, start[i + 1] - start[i]);
#pragma omp parallel
    {
        std::vector<std::pair<T, double>> vw((size_t)maxcnt);  // per thread, sized once
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < k; ++i) {
            const int64_t s0 = start[i], cnt = start[i + 1] - s0;
            double half = 0;
            for (int64_t q = 0; q < cnt; ++q) half += wp[members[s0 + q]];
            if (cnt == 0 || !(half > 0.0)) continue;
            half *= 0.5;
            for (int64_t t = 0; t < d; ++t) {
                for (int64_t q = 0; q < cnt; ++q) {
                    const int64_t j = members[s0 + q];
                    vw[q] = {x[j * d + t], wp[j]};
                }
                // stable: equal values keep index order, as the reference's sorted()
                std::stable_sort(vw.begin(), vw.begin() + cnt,
                                 [](const auto& a, const auto& b) { return a.first < b.first; });
                double acc = 0;
                T med = vw[cnt - 1].first;
                for (int64_t q = 0; q < cnt; ++q) {
                    acc += vw[q].second;
                    if (acc >= half) { med = vw[q].first; break; }
                }
                m[(size_t)i * d + t] = med;
            }
        }
    }
}

}  // namespace kmupdate
