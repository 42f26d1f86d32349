// CSR input pass of the mf loop: csr_check validates a user's CSR matrix in one read (indptr
// monotone, indices in [0, n_cols), values finite / non-negative, rows sorted without duplicates,
// max |value|); csr_transpose builds the item x user matrix in the kernels' layout in one counting
// sort (int64 indptr, int32 indices, rows sorted). Fast: single streaming passes, no temporaries.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace mf_csr {

namespace py = pybind11;

template <class T>
using carr = py::array_t<T, py::array::c_style>;

// Result codes shared with kernels/numba/mf.py and pyml/reference/mf.py (see pyml/_mf_driver.py).
enum Code : int64_t { OK = 0, INDPTR_START = 1, INDPTR_DECREASES = 2, INDPTR_END = 3,
                      INDEX_RANGE = 4, NOT_FINITE = 5, NEGATIVE = 6 };

// Returns (code, position, canonical, max_abs); position is the row (indptr codes) or the stored
// entry (the others) of the first problem. canonical: every row strictly increasing.
template <class P, class I, class T>
py::tuple csr_check(carr<P> indptr_, carr<I> indices_, carr<T> data_, int64_t n_cols, bool nonneg) {
    const int64_t n = indptr_.shape(0) - 1;
    const P* indptr = indptr_.data();
    const I* idx = indices_.data();
    const T* val = data_.data();
    const int64_t stored = std::min<int64_t>(indices_.shape(0), data_.shape(0));
    int64_t code = OK, where = 0;
    bool canonical = true;
    double max_abs = 0.0;
    {
        py::gil_scoped_release nogil;
        if (n < 0 || indptr[0] != 0) {
            code = INDPTR_START;
        } else {
            for (int64_t u = 0; u < n && code == OK; ++u) {
                const int64_t start = int64_t(indptr[u]), end = int64_t(indptr[u + 1]);
                if (end < start) { code = INDPTR_DECREASES; where = u; break; }
                if (end > stored) { code = INDPTR_END; where = u; break; }
                int64_t prev = -1;
                for (int64_t k = start; k < end; ++k) {
                    const int64_t j = int64_t(idx[k]);
                    const double v = double(val[k]);
                    if (j < 0 || j >= n_cols) { code = INDEX_RANGE; where = k; break; }
                    if (!std::isfinite(v)) { code = NOT_FINITE; where = k; break; }
                    if (nonneg && v < 0) { code = NEGATIVE; where = k; break; }
                    canonical = canonical && j > prev;
                    prev = j;
                    max_abs = std::max(max_abs, std::fabs(v));
                }
            }
        }
    }
    return py::make_tuple(code, where, canonical, max_abs);
}

// (indptr, indices, data) of the transpose of a validated n x n_cols CSR matrix.
template <class I, class T>
py::tuple csr_transpose(carr<int64_t> indptr_, carr<I> indices_, carr<T> data_, int64_t n_cols) {
    const int64_t n = indptr_.shape(0) - 1;
    const int64_t* indptr = indptr_.data();
    const I* idx = indices_.data();
    const T* val = data_.data();
    const int64_t nnz = indptr[n];
    if (n >= (int64_t(1) << 31)) throw std::invalid_argument("csr_transpose: more than 2^31 - 1 rows");
    carr<int64_t> tptr_(n_cols + 1);
    carr<int32_t> tidx_(nnz);
    carr<T> tval_(nnz);
    int64_t* tptr = tptr_.mutable_data();
    int32_t* tidx = tidx_.mutable_data();
    T* tval = tval_.mutable_data();
    {
        py::gil_scoped_release nogil;
        std::fill(tptr, tptr + n_cols + 1, int64_t(0));
        for (int64_t k = 0; k < nnz; ++k) ++tptr[int64_t(idx[k]) + 1];
        for (int64_t j = 0; j < n_cols; ++j) tptr[j + 1] += tptr[j];
        std::vector<int64_t> next(tptr, tptr + n_cols);
        for (int64_t u = 0; u < n; ++u)  // rows in order: every transposed row comes out sorted
            for (int64_t k = indptr[u]; k < indptr[u + 1]; ++k) {
                const int64_t dst = next[int64_t(idx[k])]++;
                tidx[dst] = int32_t(u);
                tval[dst] = val[k];
            }
    }
    return py::make_tuple(tptr_, tidx_, tval_);
}

template <class P, class I, class T>
void bind_check(py::module_& m) {
    m.def("csr_check", &csr_check<P, I, T>, py::arg("indptr"), py::arg("indices"), py::arg("data"),
          py::arg("n_cols"), py::arg("nonneg"));
}

inline void bind(py::module_& m) {
    bind_check<int32_t, int32_t, float>(m);
    bind_check<int32_t, int32_t, double>(m);
    bind_check<int64_t, int64_t, float>(m);
    bind_check<int64_t, int64_t, double>(m);
    bind_check<int64_t, int32_t, float>(m);
    bind_check<int64_t, int32_t, double>(m);
    bind_check<int32_t, int64_t, float>(m);
    bind_check<int32_t, int64_t, double>(m);
    m.def("csr_transpose", &csr_transpose<int32_t, float>);
    m.def("csr_transpose", &csr_transpose<int32_t, double>);
}

}  // namespace mf_csr
