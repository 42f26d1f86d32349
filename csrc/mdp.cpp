// Value iteration and iterative policy evaluation to convergence, V'(s) = max_a [R(s,a) + gamma sum_s' P(s'|s,a) V(s')] (Sutton & Barto 2018, eq. 4.10), on dense (A,S,S) P or a state-major CSR; model checks, the CSR layout and TD control are in mdp_check.hpp / mdp_layout.hpp / mdp_td.hpp.
// Fast: every sweep and the stopping test inside one OpenMP parallel region (no per-sweep fork or Python round trip; one thread below the grain size); dense: action-major register-blocked GEMV, then the fused max; sparse: one state-major CSR (a state's actions adjacent: one forward stream, max fused), streamed non-temporally so V stays in cache; serial in-place Gauss-Seidel.
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

#include <omp.h>
#include <time.h>

#include "mdp_block.hpp"
#include "mdp_check.hpp"
#include "mdp_layout.hpp"
#include "mdp_td.hpp"
#include "mdp_threads.hpp"

namespace py = pybind11;
template <typename T>
using Arr = py::array_t<T, py::array::c_style | py::array::forcecast>;
// Buffers the kernel writes and CSR arrays it reads in place: never a silent conversion copy.
template <typename T>
using Exact = py::array_t<T, py::array::c_style>;

namespace {

using mdp::Csr;
using mdp::threads_for;

struct Dense {
    template <typename T>
    static double dot(const T* row, const double* V, int64_t S) {
        double total = 0.0;
#pragma omp simd reduction(+ : total)
        for (int64_t j = 0; j < S; ++j) total += static_cast<double>(row[j]) * V[j];
        return total;
    }
    // q[i * ldq] = row_i . V for n rows spaced `stride` apart, four per pass: the four share
    // each load of V and keep independent accumulator chains (one chain stalls on FMA latency
    // for float32 P). Rows of one state's actions: stride S*S; consecutive rows of one
    // matrix: stride S, a register-blocked GEMV reading P as one forward stream, as BLAS does.
    template <typename T>
    static void rows(const T* first, int64_t n, int64_t stride, int64_t S, const double* V,
                     double* q, int64_t ldq) {
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
            const T *r0 = first + i * stride, *r1 = r0 + stride, *r2 = r1 + stride, *r3 = r2 + stride;
            double t0 = 0.0, t1 = 0.0, t2 = 0.0, t3 = 0.0;
#pragma omp simd reduction(+ : t0, t1, t2, t3)
            for (int64_t j = 0; j < S; ++j) {
                const double v = V[j];
                t0 += static_cast<double>(r0[j]) * v;
                t1 += static_cast<double>(r1[j]) * v;
                t2 += static_cast<double>(r2[j]) * v;
                t3 += static_cast<double>(r3[j]) * v;
            }
            q[i * ldq] = t0; q[(i + 1) * ldq] = t1; q[(i + 2) * ldq] = t2; q[(i + 3) * ldq] = t3;
        }
        for (; i < n; ++i) q[i * ldq] = dot(first + i * stride, V, S);
    }
};

// Backs up states [lo, hi) from `cur` into `nxt` (the same array for Gauss-Seidel: a state
// then reads the new values of the states before it) and returns the largest change. Out of
// line on purpose: inlined into the sweep driver, register pressure spilled the inner loop's
// column indices to the stack (seen in objdump; the "code generation" gap of the sparse sweep).
template <bool Fixed, class Matrix>
__attribute__((noinline)) double backup_states(const Matrix& P, int64_t lo, int64_t hi,
                                               int64_t A, const double* R, double gamma,
                                               const double* cur, double* nxt, int64_t* policy) {
    double change = 0.0;
    for (int64_t s = lo; s < hi; ++s) {
        const double* r = R + s * A;
        double best;
        int64_t arg;
        if (Fixed) {
            arg = policy[s];
            best = r[arg] + gamma * P.dot(s, arg, cur);
        } else {
            best = -std::numeric_limits<double>::infinity();
            arg = 0;
            for (int64_t a = 0; a < A; ++a) {
                const double q = r[a] + gamma * P.dot(s, a, cur);
                if (q > best) { best = q; arg = a; }
            }
        }
        change = std::max(change, std::abs(best - cur[s]));
        nxt[s] = best;
        if (!Fixed) policy[s] = arg;
    }
    return change;
}

// Backs up state s over its actions (only policy[s] when fixed); `q_of(a)` is the expected
// next value of (s, a).
template <typename F>
inline void backup(int64_t s, int64_t A, const double* R, double gamma, const int64_t* policy,
                   bool fixed, F q_of, double& best, int64_t& arg) {
    const int64_t lo = fixed ? policy[s] : 0, hi = fixed ? policy[s] + 1 : A;
    best = -std::numeric_limits<double>::infinity();
    arg = lo;
    for (int64_t a = lo; a < hi; ++a) {
        const double q = R[s * A + a] + gamma * q_of(a);
        if (q > best) { best = q; arg = a; }
    }
}

// A chunk of about 1/8 of one thread's share: a thread descheduled on a busy machine holds
// back at most one chunk while the others take the rest.
inline int64_t chunk_of(int64_t n, int nt) { return std::max<int64_t>(16, n / (8 * int64_t(nt))); }

inline double thread_cpu_seconds() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Jacobi sweeps until the sup-norm change is below tol (or max_iter sweeps), all inside one
// parallel region: `sweep(cur, nxt)` holds orphaned `omp for nowait` loops and returns its
// thread's largest change; one thread combines them and swaps the buffers. The result ends
// in V; res[it] is the change of sweep it.
//
// Under CPU contention a barrier waits for a descheduled thread for up to a scheduler slice,
// which can make a parallel sweep slower than a serial one (issue: a solve 1000x slower with
// one busy process beside it). So each parallel sweep's wall time is compared with the CPU
// time its threads spent working: when two sweeps in a row (or one by far) took longer than
// that work would take on one thread, the remaining sweeps run serially, outside any
// parallel region.
template <class Sweep>
int64_t jacobi(int nt, int64_t S, int64_t max_iter, double tol, double* res, double* V,
               double* scratch, Sweep sweep) {
    std::vector<double> part(static_cast<size_t>(nt), 0.0), busy(static_cast<size_t>(nt), 0.0);
    double* cur = V;
    double* nxt = scratch;
    int64_t n = 0;
    bool stop = max_iter <= 0;
    auto finish_sweep = [&](double delta) {
        res[n] = delta;
        ++n;
        stop = delta < tol || n >= max_iter;
        std::swap(cur, nxt);
    };
    if (nt > 1 && !stop) {
        bool serial = false;
        int slow = 0;
        double last = omp_get_wtime();
#pragma omp parallel num_threads(nt)
        {
            const int tid = omp_get_thread_num();
            while (!stop && !serial) {
                const double t0 = thread_cpu_seconds();
                part[tid] = sweep(static_cast<const double*>(cur), nxt);
                busy[tid] = thread_cpu_seconds() - t0;
#pragma omp barrier
#pragma omp single
                {
                    double delta = 0.0, work = 0.0;
                    for (int t = 0; t < omp_get_num_threads(); ++t) {
                        delta = std::max(delta, part[t]);
                        work += busy[t];
                    }
                    finish_sweep(delta);
                    const double now = omp_get_wtime(), wall = now - last;
                    slow = wall > work ? slow + 1 : 0;
                    serial = slow >= 2 || wall > 3.0 * work;  // a stall that long: do not wait for a second
                    last = now;
                }  // the implicit barrier publishes cur, nxt, stop and serial to every thread
            }
        }
    }
    while (!stop) finish_sweep(sweep(static_cast<const double*>(cur), nxt));  // orphaned omp for: serial here
    if (cur != V) std::copy(cur, cur + S, V);
    return n;
}

// Gauss-Seidel: state s reads the new values of the states before it, so states run one
// after another (no parallel region at all).
template <class Backup>
int64_t gauss_seidel(int64_t S, int64_t max_iter, double tol, double* res, double* V,
                     int64_t* policy, bool fixed, Backup backup_state) {
    for (int64_t it = 0; it < max_iter; ++it) {
        double delta = 0.0;
        for (int64_t s = 0; s < S; ++s) {
            double v;
            int64_t arg;
            backup_state(s, static_cast<const double*>(V), v, arg);
            delta = std::max(delta, std::abs(v - V[s]));
            V[s] = v;
            if (!fixed) policy[s] = arg;
        }
        res[it] = delta;
        if (delta < tol) return it + 1;
    }
    return max_iter;
}

struct Buffers {
    double* V;
    double* scratch;
    int64_t* policy;
    double* res;
};

Buffers buffers(int64_t S, int64_t max_iter, Exact<double>& V, Exact<double>& scratch,
                Exact<int64_t>& policy, Exact<double>& residuals) {
    if (max_iter < 0 || V.size() != S || scratch.size() != S || policy.size() != S ||
        residuals.size() < max_iter)
        throw std::invalid_argument("value_iteration: V, scratch and policy need S entries, residuals max_iter");
    return {V.mutable_data(), scratch.mutable_data(), policy.mutable_data(), residuals.mutable_data()};
}

template <typename T>
int64_t value_iteration_dense(Exact<T> P, Arr<double> R, double gamma, Exact<double> V,
                              Exact<double> scratch, Exact<int64_t> policy, bool fixed,
                              bool gauss_seidel_order, double tol, int64_t max_iter,
                              Exact<double> residuals) {
    if (P.ndim() != 3 || P.shape(1) != P.shape(2)) throw std::invalid_argument("P must be (A, S, S)");
    const int64_t A = P.shape(0), S = P.shape(1);
    if (R.size() != S * A) throw std::invalid_argument("R must be (S, A)");
    const Buffers b = buffers(S, max_iter, V, scratch, policy, residuals);
    const T* p = P.data();
    const double* r = R.data();
    int64_t* pol = b.policy;
    py::gil_scoped_release release;
    if (gauss_seidel_order) {
        std::vector<double> q(static_cast<size_t>(A));
        return gauss_seidel(S, max_iter, tol, b.res, b.V, pol, fixed,
                            [&](int64_t s, const double* Vc, double& v, int64_t& arg) {
                                if (fixed) {
                                    q[pol[s]] = Dense::dot(p + (pol[s] * S + s) * S, Vc, S);
                                } else {
                                    Dense::rows(p + s * S, A, S * S, S, Vc, q.data(), 1);
                                }
                                backup(s, A, r, gamma, pol, fixed, [&](int64_t a) { return q[a]; }, v, arg);
                            });
    }
    const int nt = threads_for(static_cast<double>(fixed ? 1 : A) * S * S, mdp::DENSE_GRAIN);
    if (fixed) {  // one action per state: a plain dot per state
        const int64_t chunk = chunk_of(S, nt);
        return jacobi(nt, S, max_iter, tol, b.res, b.V, b.scratch, [&](const double* cur, double* nxt) {
            double local = 0.0;
#pragma omp for schedule(dynamic, chunk) nowait
            for (int64_t s = 0; s < S; ++s) {
                const int64_t a = pol[s];
                nxt[s] = r[s * A + a] + gamma * Dense::dot(p + (a * S + s) * S, cur, S);
                local = std::max(local, std::abs(nxt[s] - cur[s]));
            }
            return local;
        });
    }
    // Q(s, a) for every pair first, matrix by matrix in blocks of four rows (each chunk one
    // forward stream through P), then the fused max per state; Q is only S x A doubles.
    std::vector<double> Q(static_cast<size_t>(S) * A);
    double* q = Q.data();
    const int64_t nb = (S + 3) / 4, qchunk = chunk_of(A * nb, nt), schunk = chunk_of(S, nt);
    return jacobi(nt, S, max_iter, tol, b.res, b.V, b.scratch, [&](const double* cur, double* nxt) {
#pragma omp for schedule(dynamic, qchunk)
        for (int64_t t = 0; t < A * nb; ++t) {
            const int64_t a = t / nb, s0 = (t % nb) * 4;
            Dense::rows(p + (a * S + s0) * S, std::min<int64_t>(4, S - s0), S, S, cur, q + s0 * A + a, A);
        }  // barrier: Q complete
        double local = 0.0;
#pragma omp for schedule(dynamic, schunk) nowait
        for (int64_t s = 0; s < S; ++s) {
            double v;
            int64_t arg;
            backup(s, A, r, gamma, pol, false, [&](int64_t a) { return q[s * A + a]; }, v, arg);
            local = std::max(local, std::abs(v - cur[s]));
            nxt[s] = v;
            pol[s] = arg;
        }
        return local;
    });
}

// indptr (S*A + 1,), indices, data: the state-major CSR (mdp_layout.hpp); R (S, A).
template <typename J, typename T>
int64_t value_iteration_sparse(Exact<J> indptr, Exact<J> indices, Exact<T> data, Arr<double> R,
                               double gamma, Exact<double> V, Exact<double> scratch,
                               Exact<int64_t> policy, bool fixed, bool gauss_seidel_order,
                               double tol, int64_t max_iter, Exact<double> residuals) {
    const int64_t S = V.size();
    if (R.ndim() != 2 || R.shape(0) != S || R.shape(1) < 1 || indptr.ndim() != 1 ||
        indptr.size() != S * R.shape(1) + 1)
        throw std::invalid_argument("value_iteration_sparse: R (S, A) and a state-major indptr of S*A + 1 entries");
    const int64_t A = R.shape(1);
    const Buffers b = buffers(S, max_iter, V, scratch, policy, residuals);
    int64_t* pol = b.policy;
    if (fixed)
        for (int64_t s = 0; s < S; ++s)
            if (pol[s] < 0 || pol[s] >= A) throw std::invalid_argument("value_iteration_sparse: policy outside [0, A)");
    using U = typename Csr<J, T>::U;
    const uint64_t last = std::min<uint64_t>(static_cast<uint64_t>(std::max<int64_t>(S, 1) - 1),
                                             std::numeric_limits<U>::max());
    const Csr<J, T> P{indptr.data(), indices.data(), data.data(),
                      std::min<int64_t>(indices.size(), data.size()), A, static_cast<U>(last)};
    const double nnz = static_cast<double>(P.nnz);
    const double* r = R.data();
    py::gil_scoped_release release;
    auto states = [&](int64_t lo, int64_t hi, const double* cur, double* nxt) {
        return fixed ? backup_states<true>(P, lo, hi, A, r, gamma, cur, nxt, pol)
                     : backup_states<false>(P, lo, hi, A, r, gamma, cur, nxt, pol);
    };
    if (gauss_seidel_order) {  // in place, state after state
        for (int64_t it = 0; it < max_iter; ++it) {
            b.res[it] = states(0, S, b.V, b.V);
            if (b.res[it] < tol) return it + 1;
        }
        return max_iter;
    }
    const int nt = threads_for(fixed ? nnz / A + S : nnz + S, mdp::SPARSE_GRAIN);
    const int64_t chunk = chunk_of(S, nt), chunks = (S + chunk - 1) / chunk;
    return jacobi(nt, S, max_iter, tol, b.res, b.V, b.scratch, [&](const double* cur, double* nxt) {
        double local = 0.0;
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t c = 0; c < chunks; ++c)
            local = std::max(local, states(c * chunk, std::min(S, (c + 1) * chunk), cur, nxt));
        return local;
    });
}


}  // namespace

PYBIND11_MODULE(mdp, m) {
    m.doc() = "value iteration / policy evaluation to convergence, model checks, tabular TD control";
    m.def("value_iteration_dense", &value_iteration_dense<float>);
    m.def("value_iteration_dense", &value_iteration_dense<double>);
    m.def("value_iteration_sparse", &value_iteration_sparse<int32_t, float>);
    m.def("value_iteration_sparse", &value_iteration_sparse<int32_t, double>);
    m.def("value_iteration_sparse", &value_iteration_sparse<int64_t, float>);
    m.def("value_iteration_sparse", &value_iteration_sparse<int64_t, double>);
    m.def("check_dense", &mdp::check_dense<float>);
    m.def("check_dense", &mdp::check_dense<double>);
    m.def("check_csr", &mdp::check_csr<int32_t, float>);
    m.def("check_csr", &mdp::check_csr<int32_t, double>);
    m.def("check_csr", &mdp::check_csr<int64_t, float>);
    m.def("check_csr", &mdp::check_csr<int64_t, double>);
    m.def("state_major_csr", &mdp::state_major_csr<int32_t, float>);
    m.def("state_major_csr", &mdp::state_major_csr<int32_t, double>);
    m.def("state_major_csr", &mdp::state_major_csr<int64_t, float>);
    m.def("state_major_csr", &mdp::state_major_csr<int64_t, double>);
    m.def("td_control", &mdp::td_control);
    m.def("bellman_backup_sparse", &mdp::bellman_backup_sparse);
}
