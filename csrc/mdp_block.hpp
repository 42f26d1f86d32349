// One Bellman optimality backup of a block of states, V_out[s] = max_a [R(s,a) + gamma sum_s' P(s'|s,a) V(s')] (Sutton & Barto 2018, eq. 4.10), rows of A CSR blocks concatenated (the task of pyml.dask.value_iteration).
// Fast: one pass over the block's stored entries with V (all states) read by gather; OpenMP over the block's states only above the sparse grain size.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include <omp.h>

#include "mdp_threads.hpp"

namespace mdp {

namespace py = pybind11;

// indptr (A, n + 1) int64 into indices/data (global state ids / probabilities); R (n, A);
// V (S,) read; V_out (n,), policy (n,) written; returns max_s |V_out[s] - V[offset + s]|.
inline double bellman_backup_sparse(py::array_t<int64_t, py::array::c_style> indptr,
                                    py::array_t<int64_t, py::array::c_style> indices,
                                    py::array_t<double, py::array::c_style> data,
                                    py::array_t<double, py::array::c_style> R, double gamma,
                                    py::array_t<double, py::array::c_style> V,
                                    py::array_t<double, py::array::c_style> V_out,
                                    py::array_t<int64_t, py::array::c_style> policy,
                                    int64_t offset) {
    if (R.ndim() != 2 || indptr.ndim() != 2 || V.ndim() != 1)
        throw std::invalid_argument("bellman_backup_sparse: indptr (A, n+1), R (n, A), V (S,)");
    const int64_t n = R.shape(0), A = R.shape(1), S = V.shape(0), nnz = indices.shape(0);
    if (indptr.shape(0) != A || indptr.shape(1) != n + 1 || data.shape(0) != nnz ||
        V_out.shape(0) != n || policy.shape(0) != n || offset < 0 || offset + n > S)
        throw std::invalid_argument("bellman_backup_sparse: inconsistent shapes");
    const int64_t* ip = indptr.data();
    const int64_t* ix = indices.data();
    const double* p = data.data();
    const double* r = R.data();
    const double* v = V.data();
    // bounds once, before any thread reads through them
    for (int64_t a = 0; a < A; ++a)
        for (int64_t s = 0; s < n; ++s)
            if (ip[a * (n + 1) + s] < 0 || ip[a * (n + 1) + s] > ip[a * (n + 1) + s + 1] ||
                ip[a * (n + 1) + s + 1] > nnz)
                throw std::invalid_argument("bellman_backup_sparse: indptr not monotone or past the data");
    for (int64_t k = 0; k < nnz; ++k)
        if (ix[k] < 0 || ix[k] >= S)
            throw std::invalid_argument("bellman_backup_sparse: a column index is outside [0, S)");
    double* out = V_out.mutable_data();
    int64_t* pol = policy.mutable_data();
    double delta = 0.0;
    {
        py::gil_scoped_release nogil;
        const int nt = threads_for(static_cast<double>(nnz + n * A), SPARSE_GRAIN);
#pragma omp parallel for num_threads(nt) schedule(static) reduction(max : delta)
        for (int64_t s = 0; s < n; ++s) {
            double best = -std::numeric_limits<double>::infinity();
            int64_t arg = 0;
            for (int64_t a = 0; a < A; ++a) {
                double total = 0.0;
                for (int64_t k = ip[a * (n + 1) + s]; k < ip[a * (n + 1) + s + 1]; ++k)
                    total += p[k] * v[ix[k]];
                const double q = r[s * A + a] + gamma * total;
                if (a == 0 || q > best) { best = q; arg = a; }
            }
            out[s] = best;
            pol[s] = arg;
            delta = std::max(delta, std::fabs(best - v[offset + s]));
        }
    }
    return delta;
}

}  // namespace mdp
