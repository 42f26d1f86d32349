// The state-major CSR of a sparse MDP, row s*A + a = P(. | s, a) (a state's A rows adjacent), built from the caller's A CSR matrices in the one pass that checks them (the row rules of mdp_check.hpp), and the row dot sum_s' P(s'|s,a) V(s') the sweeps read it with.
// Fast: the state-major offset of (s, a) is sum_a' indptr_a'[s] + sum_{a' < a} len(a', s), so states are copied in parallel with no prefix sum; int32 indices where S and the entry count fit (exact), probabilities in the caller's dtype; row dot: AVX-512 gathers, CSR fetched non-temporally.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <immintrin.h>
#include <omp.h>

#include "mdp_threads.hpp"

namespace mdp {

namespace py = pybind11;

// Every indptr starts at 0, never decreases and ends within its matrix's stored entries, so
// each row [ip[s], ip[s+1]) lies inside the matrix (checked before any row is read).
template <typename I>
bool indptr_ok(const std::vector<const I*>& ip, const std::vector<int64_t>& stored, int64_t S) {
    const int64_t A = static_cast<int64_t>(ip.size());
    for (int64_t a = 0; a < A; ++a)
        if (ip[a][0] != 0 || static_cast<int64_t>(ip[a][S]) > stored[a]) return false;
    int bad = 0;
    const int nt = threads_for(static_cast<double>(S) * A, ONE_SHOT * SPARSE_GRAIN);
#pragma omp parallel for num_threads(nt) schedule(static) reduction(| : bad)
    for (int64_t s = 0; s < S; ++s)
        for (int64_t a = 0; a < A; ++a) bad |= ip[a][s] > ip[a][s + 1];
    return !bad;
}

// Copies every row into the state-major arrays and checks it as check_csr does (columns in
// [0, S), entries finite and >= 0, sum within tol of 1); false when any row fails.
template <typename I, typename J, typename T>
bool fill_state_major(const std::vector<const I*>& ip, const std::vector<const I*>& ix,
                      const std::vector<const T*>& d, int64_t S, int64_t nnz, double tol, J* oip,
                      J* oix, T* od) {
    const int64_t A = static_cast<int64_t>(ip.size());
    const T big = std::numeric_limits<T>::max();
    int bad = 0;
    const int nt = threads_for(static_cast<double>(nnz) + S, ONE_SHOT * SPARSE_GRAIN);
    // dynamic chunks: a thread descheduled on a busy machine holds back one chunk only
#pragma omp parallel for num_threads(nt) schedule(dynamic, 4096) reduction(| : bad)
    for (int64_t s = 0; s < S; ++s) {
        int64_t base = 0;
        for (int64_t a = 0; a < A; ++a) base += ip[a][s];
        for (int64_t a = 0; a < A; ++a) {
            const int64_t lo = ip[a][s], n = ip[a][s + 1] - lo;
            oip[s * A + a] = static_cast<J>(base);
            const I* col = ix[a] + lo;
            const T* val = d[a] + lo;
            J* ocol = oix + base;
            T* oval = od + base;
            int64_t out = 0, nonprob = 0;
            double sum = 0.0;
#pragma omp simd reduction(+ : out, nonprob, sum)
            for (int64_t k = 0; k < n; ++k) {
                const I j = col[k];
                const T v = val[k];
                out += (j < 0) | (j >= S);
                nonprob += !(v >= T(0) && v <= big);  // NaN fails both comparisons
                sum += static_cast<double>(v);
                ocol[k] = static_cast<J>(j);
                oval[k] = v;
            }
            bad |= static_cast<int>(out != 0 || nonprob != 0 || !(std::fabs(sum - 1.0) <= tol));
            base += n;
        }
    }
    oip[S * A] = static_cast<J>(nnz);
    return !bad;
}

template <typename J, typename I, typename T>
py::tuple build_state_major(const std::vector<const I*>& ip, const std::vector<const I*>& ix,
                            const std::vector<const T*>& d, int64_t S, int64_t nnz, double tol) {
    const int64_t A = static_cast<int64_t>(ip.size());
    py::array_t<J> oip(S * A + 1);
    py::array_t<J> oix(nnz);
    py::array_t<T> od(nnz);
    J* pip = oip.mutable_data();
    J* pix = oix.mutable_data();
    T* pd = od.mutable_data();
    bool ok;
    {
        py::gil_scoped_release release;  // the fresh pages are first touched by the threads
        ok = fill_state_major(ip, ix, d, S, nnz, tol, pip, pix, pd);
    }
    if (!ok) return py::make_tuple(false, py::none(), py::none(), py::none());
    return py::make_tuple(true, oip, oix, od);
}

// (ok, indptr (S*A + 1,), indices, data) from A CSR matrices (S, S); ok false (and no arrays)
// when any matrix fails a check: pyml/_mdp_model.py then asks check_csr what is wrong where.
// Indices and indptr are int32 when S and the entry count fit, else int64.
template <typename I, typename T>
py::tuple state_major_csr(std::vector<py::array_t<I, py::array::c_style>> indptr,
                          std::vector<py::array_t<I, py::array::c_style>> indices,
                          std::vector<py::array_t<T, py::array::c_style>> data, int64_t S, double tol) {
    const size_t A = indptr.size();
    if (A < 1 || indices.size() != A || data.size() != A || S < 1)
        throw std::invalid_argument("state_major_csr: A >= 1 indptr, indices and data arrays, S >= 1");
    std::vector<const I*> ip, ix;
    std::vector<const T*> d;
    std::vector<int64_t> stored;
    for (size_t a = 0; a < A; ++a) {
        if (indptr[a].ndim() != 1 || indptr[a].size() != S + 1)
            return py::make_tuple(false, py::none(), py::none(), py::none());
        ip.push_back(indptr[a].data());
        ix.push_back(indices[a].data());
        d.push_back(data[a].data());
        stored.push_back(std::min<int64_t>(indices[a].size(), data[a].size()));
    }
    bool ok;
    {
        py::gil_scoped_release release;
        ok = indptr_ok(ip, stored, S);
    }
    if (!ok) return py::make_tuple(false, py::none(), py::none(), py::none());
    int64_t nnz = 0;
    for (size_t a = 0; a < A; ++a) nnz += static_cast<int64_t>(ip[a][S]);
    constexpr int64_t small = std::numeric_limits<int32_t>::max();
    if (S <= small && nnz <= small) return build_state_major<int32_t>(ip, ix, d, S, nnz, tol);
    return build_state_major<int64_t>(ip, ix, d, S, nnz, tol);
}

// sum_k P_k V[col_k] over entries [k, end) of one CSR row, in float64. Column indices are
// clamped to `last` = S - 1 and masked lanes never touch memory, so a direct call with corrupt
// arrays cannot read outside them (the model's arrays were checked when they were built).
// AVX-512: eight entries per step, one gather of V and one FMA (fewer instructions per entry
// keep more gathers in flight: ~10% per sweep single-threaded), a masked step for the tail.
template <typename J, typename T>
inline double row_dot(const J* ix, const T* d, int64_t k, int64_t end, std::make_unsigned_t<J> last,
                      const double* V) {
    using U = std::make_unsigned_t<J>;
    // the CSR arrays stream through once per sweep: fetch them non-temporally so they do not
    // evict V (the gather target) from the caches
    __builtin_prefetch(d + k + 64, 0, 0);
    __builtin_prefetch(ix + k + 128, 0, 0);
#if defined(__AVX512F__)
    __m512d acc = _mm512_setzero_pd();
    for (; k < end; k += 8) {
        const __mmask8 m = end - k >= 8 ? __mmask8(0xff) : static_cast<__mmask8>((1u << (end - k)) - 1);
        __m512d p, v;
        if constexpr (sizeof(T) == 8) p = _mm512_maskz_loadu_pd(m, d + k);
        else p = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, d + k));
        if constexpr (sizeof(J) == 4) {
            const __m256i j = _mm256_min_epu32(_mm256_maskz_loadu_epi32(m, ix + k),
                                               _mm256_set1_epi32(static_cast<int>(last)));
            v = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), m, j, V, 8);
        } else {
            const __m512i j = _mm512_min_epu64(_mm512_maskz_loadu_epi64(m, ix + k),
                                               _mm512_set1_epi64(static_cast<long long>(last)));
            v = _mm512_mask_i64gather_pd(_mm512_setzero_pd(), m, j, V, 8);
        }
        acc = _mm512_fmadd_pd(p, v, acc);
    }
    return _mm512_reduce_add_pd(acc);
#else
    double t0 = 0.0, t1 = 0.0;  // two partial sums: halves the dependent add chain
    for (; k + 1 < end; k += 2) {
        t0 += static_cast<double>(d[k]) * V[std::min(static_cast<U>(ix[k]), last)];
        t1 += static_cast<double>(d[k + 1]) * V[std::min(static_cast<U>(ix[k + 1]), last)];
    }
    if (k < end) t0 += static_cast<double>(d[k]) * V[std::min(static_cast<U>(ix[k]), last)];
    return t0 + t1;
#endif
}

// The state-major CSR of mdp_layout.hpp: row s*A + a is P(. | s, a), so a sweep reads P as
// one forward stream; row bounds are clamped into the stored entries.
template <typename J, typename T>
struct Csr {
    using U = std::make_unsigned_t<J>;
    const J* ip;
    const J* ix;
    const T* d;
    int64_t nnz, A;
    U last;  // S - 1

    double dot(int64_t s, int64_t a, const double* V) const {
        const int64_t row = s * A + a;
        return row_dot(ix, d, std::max<int64_t>(ip[row], 0), std::min<int64_t>(ip[row + 1], nnz), last, V);
    }
};


}  // namespace mdp
