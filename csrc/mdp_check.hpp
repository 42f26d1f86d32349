// Validation of a transition model in one read pass: every entry finite and >= 0, every row summing to 1, and for CSR monotonic indptr and column indices in [0, S).
// Fast: rows checked in parallel (grain rule) with branch-free SIMD counting; only the first bad row is re-read, serially, to say what is wrong where.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include <omp.h>

#include "mdp_threads.hpp"

namespace mdp {

namespace py = pybind11;

// Status codes shared with the Python side (pyml/_mdp_driver.py: CHECK_MESSAGES).
enum Status : int64_t { OK = 0, NOT_FINITE = 1, NEGATIVE = 2, ROW_SUM = 3, INDPTR = 4, INDEX = 5 };

// (status, row, column, value) of the first problem; row = a * S + s for dense P.
inline py::tuple verdict(int64_t status, int64_t row, int64_t col, double value) {
    return py::make_tuple(status, row, col, value);
}

// Entries k of a row that are not finite or negative (NaN fails both comparisons).
template <typename T>
inline int64_t count_bad(const T* x, int64_t n, double& sum) {
    const T big = std::numeric_limits<T>::max();
    int64_t bad = 0;
    double total = 0.0;
#pragma omp simd reduction(+ : bad, total)
    for (int64_t k = 0; k < n; ++k) {
        bad += !(x[k] >= T(0) && x[k] <= big);
        total += static_cast<double>(x[k]);
    }
    sum = total;
    return bad;
}

// What is wrong with one row whose values x[0..n) sit at columns col(k).
template <typename T, typename Col>
inline py::tuple describe_row(const T* x, int64_t n, int64_t row, double tol, Col col) {
    for (int64_t k = 0; k < n; ++k) {
        if (!std::isfinite(static_cast<double>(x[k]))) return verdict(NOT_FINITE, row, col(k), x[k]);
        if (x[k] < T(0)) return verdict(NEGATIVE, row, col(k), x[k]);
    }
    double sum = 0.0;
    for (int64_t k = 0; k < n; ++k) sum += static_cast<double>(x[k]);
    return verdict(ROW_SUM, row, -1, sum);
}

template <typename T>
py::tuple check_dense(py::array_t<T, py::array::c_style> P, double tol) {
    if (P.ndim() != 3 || P.shape(1) != P.shape(2)) throw std::invalid_argument("P must be (A, S, S)");
    const int64_t rows = P.shape(0) * P.shape(1), S = P.shape(2);
    const T* p = P.data();
    int64_t first = rows;
    {
        py::gil_scoped_release release;
        const int nt = threads_for(static_cast<double>(rows) * S, ONE_SHOT * DENSE_GRAIN);
        // dynamic chunks: a thread descheduled on a busy machine holds back one chunk only
#pragma omp parallel for num_threads(nt) schedule(dynamic, 64) reduction(min : first)
        for (int64_t r = 0; r < rows; ++r) {
            if (r > first) continue;  // a bad row before this one is already known
            double sum;
            if (count_bad(p + r * S, S, sum) || !(std::fabs(sum - 1.0) <= tol)) first = std::min(first, r);
        }
    }
    if (first == rows) return verdict(OK, -1, -1, 0.0);
    return describe_row(p + first * S, S, first, tol, [](int64_t k) { return k; });
}

template <typename I, typename T>
py::tuple check_csr(py::array_t<I, py::array::c_style> indptr, py::array_t<I, py::array::c_style> indices,
                    py::array_t<T, py::array::c_style> data, int64_t S, double tol) {
    if (indptr.ndim() != 1 || indptr.size() != S + 1) return verdict(INDPTR, -1, -1, indptr.size());
    const I* ip = indptr.data();
    const I* ix = indices.data();
    const T* d = data.data();
    const int64_t stored = std::min<int64_t>(indices.size(), data.size());
    if (ip[0] != 0) return verdict(INDPTR, 0, -1, static_cast<double>(ip[0]));
    int64_t first = S;
    {
        py::gil_scoped_release release;
        const int nt = threads_for(static_cast<double>(std::max<int64_t>(ip[S], 0)) + S, ONE_SHOT * SPARSE_GRAIN);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 4096) reduction(min : first)
        for (int64_t r = 0; r < S; ++r) {
            if (r > first) continue;
            const int64_t lo = ip[r], hi = ip[r + 1];
            // indptr first: a row is only read once its bounds are known to be sane
            if (lo > hi || hi > stored) { first = std::min(first, r); continue; }
            int64_t out = 0;
#pragma omp simd reduction(+ : out)
            for (int64_t k = lo; k < hi; ++k) out += (ix[k] < 0) | (ix[k] >= S);
            double sum;
            if (out || count_bad(d + lo, hi - lo, sum) || !(std::fabs(sum - 1.0) <= tol))
                first = std::min(first, r);
        }
    }
    if (first == S) return verdict(OK, -1, -1, 0.0);
    const int64_t lo = ip[first], hi = ip[first + 1];
    if (lo > hi || hi > stored) return verdict(INDPTR, first, -1, static_cast<double>(hi));
    for (int64_t k = lo; k < hi; ++k)
        if (ix[k] < 0 || ix[k] >= S) return verdict(INDEX, first, -1, static_cast<double>(ix[k]));
    return describe_row(d + lo, hi - lo, first, tol, [&](int64_t k) { return static_cast<int64_t>(ix[lo + k]); });
}

}  // namespace mdp
