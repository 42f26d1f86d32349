// ALS half-step: per row solve (Y^T C_u Y + reg I) x_u = Y^T C_u p_u (Cholesky, or CG warm-started), the loss's
// per-entry terms, MF-SGD epochs, and (mf_csr.hpp) the one read pass over the ratings.
// Fast: one omp parallel region, dynamic schedule over power-law rows, per-thread scratch allocated once, f-contiguous SIMD loops;
// the Gram matrix Y_u^T W Y_u of the exact solves is a register-blocked GEMM over gathered chunks of the row's items.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "mf_csr.hpp"
#include "tile_gemm.hpp"

namespace py = pybind11;

template <class T>
using arr = py::array_t<T, py::array::c_style | py::array::forcecast>;

namespace {

template <class T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t f) {
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t d = 0; d < f; ++d) s += a[d] * b[d];
    return s;
}

// In place: the upper triangle of the symmetric A (row-major f x f) becomes U, U^T U = A, then
// x = A^{-1} b. Right-looking, so every update is a contiguous row axpy that vectorises (a
// dot-product Cholesky runs short, variable-length reductions that stay scalar).
template <class T>
void cholesky_solve(T* A, const T* b, T* x, int64_t f) {
    for (int64_t k = 0; k < f; ++k) {
        T* Uk = A + k * f;
        const T d = std::sqrt(Uk[k]);
        Uk[k] = d;
#pragma omp simd
        for (int64_t j = k + 1; j < f; ++j) Uk[j] /= d;
        for (int64_t i = k + 1; i < f; ++i) {
            const T u = Uk[i];
            T* Ai = A + i * f;
#pragma omp simd
            for (int64_t j = i; j < f; ++j) Ai[j] -= u * Uk[j];
        }
    }
    for (int64_t i = 0; i < f; ++i) x[i] = b[i];
    for (int64_t k = 0; k < f; ++k) {  // U^T y = b
        const T* Uk = A + k * f;
        const T yk = x[k] / Uk[k];
        x[k] = yk;
#pragma omp simd
        for (int64_t j = k + 1; j < f; ++j) x[j] -= yk * Uk[j];
    }
    for (int64_t i = f - 1; i >= 0; --i) {  // U x = y
        const T* Ui = A + i * f;
        x[i] = (x[i] - dot(Ui + i + 1, x + i + 1, f - i - 1)) / Ui[i];
    }
}

constexpr int64_t PREFETCH = 8;  // rows of Y fetched ahead in the gathers (random rows: no HW prefetch)

template <class T>
inline void prefetch_row(const T* Y, const int32_t* idx, int64_t k, int64_t end, int64_t f) {
    if (k + PREFETCH < end) {
        const char* y = reinterpret_cast<const char*>(Y + int64_t(idx[k + PREFETCH]) * f);
        for (int64_t b = 0; b < f * int64_t(sizeof(T)); b += 64) __builtin_prefetch(y + b);
    }
}

// One row's implicit-feedback system (YtY + reg I + sum_k alpha r_k y_k y_k^T) x = sum_k c_k p_k y_k
// by cg_steps of conjugate gradient from the current x. F > 0: the factor count is a compile-time
// constant, so r, p, Ap live in registers and every f-loop is unrolled; F == 0: any f (scratch).
// The first pass forms the residual b - A x directly (one gather of the row's y_k, not two).
template <class T, int F>
inline void cg_row(const T* __restrict YtY, const T* __restrict Y, const int32_t* __restrict idx,
                   const T* __restrict val, int64_t start, int64_t end, T reg, T alpha, int cg_steps,
                   T* __restrict x, T* __restrict scratch, int64_t f_runtime) {
    const int64_t f = F > 0 ? F : f_runtime;
    alignas(64) T rl[F > 0 ? F : 1], pl[F > 0 ? F : 1], apl[F > 0 ? F : 1];
    T* __restrict r = F > 0 ? rl : scratch;
    T* __restrict p = F > 0 ? pl : scratch + f;
    T* __restrict Ap = F > 0 ? apl : scratch + 2 * f;
    // (YtY + reg I) v as sum_d v_d YtY[d, :] (YtY is symmetric): contiguous axpys, no reductions
    auto dense = [&](const T* __restrict v, T* __restrict out, T sign) {
#pragma omp simd
        for (int64_t a = 0; a < f; ++a) out[a] = sign * reg * v[a];
        for (int64_t d = 0; d < f; ++d) {
            const T vd = sign * v[d];
            const T* __restrict row = YtY + d * f;
#pragma omp simd
            for (int64_t a = 0; a < f; ++a) out[a] += vd * row[a];
        }
    };
    dense(x, r, T(-1));
    for (int64_t k = start; k < end; ++k) {  // r = b - A x, b = sum c p y, c - 1 = alpha r
        prefetch_row(Y, idx, k, end, f);
        const T* __restrict y = Y + int64_t(idx[k]) * f;
        const T v = val[k];
        const T coef = (v > 0 ? T(1) + alpha * v : T(0)) - alpha * v * dot(y, x, f);
#pragma omp simd
        for (int64_t a = 0; a < f; ++a) r[a] += coef * y[a];
    }
    T rs_old = 0;
#pragma omp simd reduction(+ : rs_old)
    for (int64_t a = 0; a < f; ++a) {
        p[a] = r[a];
        rs_old += r[a] * r[a];
    }
    for (int it = 0; it < cg_steps && rs_old >= T(1e-20); ++it) {
        dense(p, Ap, T(1));
        for (int64_t k = start; k < end; ++k) {
            prefetch_row(Y, idx, k, end, f);
            const T* __restrict y = Y + int64_t(idx[k]) * f;
            const T s = alpha * val[k] * dot(y, p, f);
#pragma omp simd
            for (int64_t a = 0; a < f; ++a) Ap[a] += s * y[a];
        }
        const T step = rs_old / dot(p, Ap, f);
        T rs_new = 0;
#pragma omp simd reduction(+ : rs_new)
        for (int64_t a = 0; a < f; ++a) {
            x[a] += step * p[a];
            r[a] -= step * Ap[a];
            rs_new += r[a] * r[a];
        }
        const T beta = rs_new / rs_old;
#pragma omp simd
        for (int64_t a = 0; a < f; ++a) p[a] = r[a] + beta * p[a];
        rs_old = rs_new;
    }
}

// Every row by CG, one parallel region; dynamic schedule because power-law rows differ by 1000x.
template <class T, int F>
void cg_rows(const int64_t* indptr, const T* YtY, const T* Y, const int32_t* idx, const T* val,
             T* X, int64_t n, int64_t f, T reg, T alpha, int cg_steps) {
#pragma omp parallel
    {
        std::vector<T> scratch(F > 0 ? 1 : 3 * f);
#pragma omp for schedule(dynamic, 32)
        for (int64_t u = 0; u < n; ++u)
            cg_row<T, F>(YtY, Y, idx, val, indptr[u], indptr[u + 1], reg, alpha, cg_steps, X + u * f,
                         scratch.data(), f);
    }
}

constexpr int64_t GRAM_CHUNK = 128;  // items gathered per GEMM: 2 x 128 x f values stay in L2

template <class T>
void als_half_step(arr<int64_t> indptr_, arr<int32_t> indices_, arr<T> data_, arr<T> Y_, arr<T> YtY_,
                   py::array_t<T, py::array::c_style> X_, double reg_d, double alpha_d, int cg_steps,
                   bool implicit, bool exact) {
    const int64_t n = X_.shape(0), f = X_.shape(1), m = Y_.shape(0);
    if (indptr_.shape(0) != n + 1 || Y_.shape(1) != f || YtY_.shape(0) != f || YtY_.shape(1) != f ||
        indices_.shape(0) != data_.shape(0))
        throw std::invalid_argument("als_half_step: inconsistent shapes");
    const int64_t* indptr = indptr_.data();
    const int32_t* idx = indices_.data();
    const T* val = data_.data();
    const T* Y = Y_.data();
    const T* YtY = YtY_.data();
    T* X = X_.mutable_data();
    const T reg = T(reg_d), alpha = T(alpha_d);
    if (indptr[0] != 0 || indptr[n] > indices_.shape(0)) throw std::invalid_argument("als_half_step: bad indptr");
    for (int64_t u = 0; u < n; ++u)
        if (indptr[u + 1] < indptr[u]) throw std::invalid_argument("als_half_step: indptr not non-decreasing");
    for (int64_t k = 0; k < indptr[n]; ++k)
        if (idx[k] < 0 || idx[k] >= m) throw std::invalid_argument("als_half_step: column index out of range");
    py::gil_scoped_release nogil;
    if (implicit && !exact) {
        switch (f) {  // the common factor counts get register-resident, unrolled vectors
            case 16: return cg_rows<T, 16>(indptr, YtY, Y, idx, val, X, n, f, reg, alpha, cg_steps);
            case 32: return cg_rows<T, 32>(indptr, YtY, Y, idx, val, X, n, f, reg, alpha, cg_steps);
            case 64: return cg_rows<T, 64>(indptr, YtY, Y, idx, val, X, n, f, reg, alpha, cg_steps);
            case 128: return cg_rows<T, 128>(indptr, YtY, Y, idx, val, X, n, f, reg, alpha, cg_steps);
            default: return cg_rows<T, 0>(indptr, YtY, Y, idx, val, X, n, f, reg, alpha, cg_steps);
        }
    }
#pragma omp parallel
    {
        std::vector<T> A(f * f), b(f);
        std::vector<T> Yg, Zg;  // gathered y_k and w_k y_k of one chunk (exact solves only)
#pragma omp for schedule(dynamic, 32)
        for (int64_t u = 0; u < n; ++u) {
            const int64_t start = indptr[u], end = indptr[u + 1];
            T* x = X + u * f;
            std::fill(b.begin(), b.end(), T(0));
            for (int64_t k = start; k < end; ++k) {
                const T* y = Y + int64_t(idx[k]) * f;
                const T t = implicit ? (val[k] > 0 ? T(1) + alpha * val[k] : T(0)) : val[k];
#pragma omp simd
                for (int64_t d = 0; d < f; ++d) b[d] += t * y[d];
            }
            for (int64_t a = 0; a < f; ++a)
                for (int64_t d = 0; d < f; ++d) A[a * f + d] = (implicit ? YtY[a * f + d] : T(0)) + (a == d ? reg : T(0));
            // A += sum_k w_k y_k y_k^T as (W Y_I)^T Y_I, GRAM_CHUNK items at a time. The full
            // square costs twice the triangle's flops but runs at GEMM speed.
            if (Yg.empty() && end > start) { Yg.resize(GRAM_CHUNK * f); Zg.resize(GRAM_CHUNK * f); }
            for (int64_t k0 = start; k0 < end; k0 += GRAM_CHUNK) {
                const int64_t nk = std::min<int64_t>(GRAM_CHUNK, end - k0);
                for (int64_t j = 0; j < nk; ++j) {
                    const T* y = Y + int64_t(idx[k0 + j]) * f;
                    const T w = implicit ? alpha * val[k0 + j] : T(1);
                    T* yg = Yg.data() + j * f;
                    T* zg = Zg.data() + j * f;
#pragma omp simd
                    for (int64_t d = 0; d < f; ++d) { yg[d] = y[d]; zg[d] = w * y[d]; }
                }
                tile_gemm::gemm<T>(int(f), int(f), int(nk), Zg.data(), 1, f, Yg.data(), f, A.data(), f, true);
            }
            cholesky_solve(A.data(), b.data(), x, f);  // reads A's upper triangle
        }
    }
}

// sum over the stored entries of c (p - s)^2 - s^2 (implicit) or (r - s)^2 (explicit), s = x_u.y_i:
// the part of the ALS objective that needs the gathers; double accumulation, rows in parallel.
template <class T>
double als_loss_terms(arr<int64_t> indptr_, arr<int32_t> indices_, arr<T> data_, arr<T> X_, arr<T> Y_,
                      double alpha, bool implicit) {
    const int64_t n = X_.shape(0), f = X_.shape(1), m = Y_.shape(0);
    if (indptr_.shape(0) != n + 1 || Y_.shape(1) != f || indices_.shape(0) != data_.shape(0))
        throw std::invalid_argument("als_loss_terms: inconsistent shapes");
    const int64_t* indptr = indptr_.data();
    const int32_t* idx = indices_.data();
    const T* val = data_.data();
    const T* X = X_.data();
    const T* Y = Y_.data();
    if (indptr[0] != 0 || indptr[n] > indices_.shape(0)) throw std::invalid_argument("als_loss_terms: bad indptr");
    for (int64_t u = 0; u < n; ++u)
        if (indptr[u + 1] < indptr[u]) throw std::invalid_argument("als_loss_terms: indptr not non-decreasing");
    for (int64_t k = 0; k < indptr[n]; ++k)
        if (idx[k] < 0 || idx[k] >= m) throw std::invalid_argument("als_loss_terms: column index out of range");
    double total = 0.0;
    py::gil_scoped_release nogil;
#pragma omp parallel for schedule(dynamic, 64) reduction(+ : total)
    for (int64_t u = 0; u < n; ++u) {
        const T* x = X + u * f;
        for (int64_t k = indptr[u]; k < indptr[u + 1]; ++k) {
            prefetch_row(Y, idx, k, indptr[u + 1], f);
            const double s = double(dot(x, Y + int64_t(idx[k]) * f, f)), r = double(val[k]);
            if (implicit) {
                const double c = 1.0 + alpha * r, p = r > 0 ? 1.0 : 0.0;
                total += c * (p - s) * (p - s) - s * s;
            } else {
                total += (r - s) * (r - s);
            }
        }
    }
    return total;
}

template <class T>
void mf_sgd_epoch(arr<int32_t> rows_, arr<int32_t> cols_, arr<T> vals_, arr<int64_t> order_,
                  py::array_t<T, py::array::c_style> U_, py::array_t<T, py::array::c_style> V_,
                  double lr_d, double reg_d, bool deterministic) {
    const int64_t n = order_.shape(0), f = U_.shape(1), nu = U_.shape(0), nv = V_.shape(0);
    const int64_t nnz = vals_.shape(0);
    if (V_.shape(1) != f || rows_.shape(0) != nnz || cols_.shape(0) != nnz)
        throw std::invalid_argument("mf_sgd_epoch: inconsistent shapes");
    const int32_t* rows = rows_.data();
    const int32_t* cols = cols_.data();
    const T* vals = vals_.data();
    const int64_t* order = order_.data();
    for (int64_t q = 0; q < n; ++q) {
        const int64_t k = order[q];
        if (k < 0 || k >= nnz || rows[k] < 0 || rows[k] >= nu || cols[k] < 0 || cols[k] >= nv)
            throw std::invalid_argument("mf_sgd_epoch: index out of range");
    }
    T* U = U_.mutable_data();
    T* V = V_.mutable_data();
    const T lr = T(lr_d), reg = T(reg_d);
    py::gil_scoped_release nogil;
    // Hogwild (Recht et al. 2011): unsynchronised updates; deterministic runs one thread in order.
#pragma omp parallel if (!deterministic)
    {
#pragma omp for schedule(static)
        for (int64_t q = 0; q < n; ++q) {
            const int64_t k = order[q];
            T* u = U + int64_t(rows[k]) * f;
            T* v = V + int64_t(cols[k]) * f;
            const T e = vals[k] - dot(u, v, f);
#pragma omp simd
            for (int64_t a = 0; a < f; ++a) {
                const T ua = u[a], va = v[a];
                u[a] = ua + lr * (e * va - reg * ua);
                v[a] = va + lr * (e * ua - reg * va);
            }
        }
    }
}

}  // namespace

PYBIND11_MODULE(mf, m) {
    m.doc() = "ALS half-step (Cholesky / conjugate gradient) and MF-SGD epochs, OpenMP";
    m.def("als_half_step", &als_half_step<float>);
    m.def("als_half_step", &als_half_step<double>);
    m.def("als_loss_terms", &als_loss_terms<float>);
    m.def("als_loss_terms", &als_loss_terms<double>);
    m.def("mf_sgd_epoch", &mf_sgd_epoch<float>);
    m.def("mf_sgd_epoch", &mf_sgd_epoch<double>);
    mf_csr::bind(m);
}
