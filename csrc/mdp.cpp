// Bellman backup V'(s) = max_a [R(s,a) + gamma sum_s' P(s'|s,a) V(s')] (dense (A,S,S) and state-major CSR), and Q-learning/SARSA episodes.
// Fast: max over actions fused with the backup (P read once per sweep), one omp parallel region over states (Jacobi), dense: four actions per pass sharing V loads; sparse: CSR streamed non-temporally so V stays in cache; serial in-place Gauss-Seidel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include <omp.h>

namespace py = pybind11;
template <typename T>
using Arr = py::array_t<T, py::array::c_style | py::array::forcecast>;

namespace {

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

// Backs up state s over actions [lo, hi); `q_of(a)` is the expected next value for (s, a).
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

// Shared sweep skeleton: Jacobi (parallel over states) or Gauss-Seidel (serial: state s
// must see the new values of states < s, so states cannot run concurrently).
template <typename F>
double sweep(int64_t S, int64_t A, const double* R, double gamma, double* V, double* V_out,
             int64_t* policy, bool fixed, bool gauss_seidel, F q_of_sa) {
    double delta = 0.0;
    if (gauss_seidel) {
        for (int64_t s = 0; s < S; ++s) {
            double v; int64_t arg;
            backup(s, A, R, gamma, policy, fixed, [&](int64_t a) { return q_of_sa(s, a, V); }, v, arg);
            delta = std::max(delta, std::abs(v - V[s]));
            V[s] = v; V_out[s] = v;
            if (!fixed) policy[s] = arg;
        }
        return delta;
    }
// guided, not static: on a shared machine a descheduled thread must not hold the sweep at the barrier.
#pragma omp parallel for schedule(guided, 16) reduction(max : delta)
    for (int64_t s = 0; s < S; ++s) {
        double v; int64_t arg;
        backup(s, A, R, gamma, policy, fixed, [&](int64_t a) { return q_of_sa(s, a, V); }, v, arg);
        delta = std::max(delta, std::abs(v - V[s]));
        V_out[s] = v;
        if (!fixed) policy[s] = arg;
    }
    return delta;
}

template <typename T>
double sweep_dense(Arr<T> P, Arr<double> R, double gamma, py::array_t<double> V,
                   py::array_t<double> V_out, py::array_t<int64_t> policy, bool fixed,
                   bool gauss_seidel) {
    if (P.ndim() != 3 || R.ndim() != 2) throw std::invalid_argument("P must be (A,S,S), R (S,A)");
    const int64_t A = P.shape(0), S = P.shape(1);
    if (P.shape(2) != S || R.shape(0) != S || R.shape(1) != A || V.size() != S ||
        V_out.size() != S || policy.size() != S)
        throw std::invalid_argument("sweep_dense: inconsistent shapes");
    const T* p = P.data();
    const double* r = R.data();
    double* v = V.mutable_data();
    double* vo = V_out.mutable_data();
    int64_t* pol = policy.mutable_data();
    py::gil_scoped_release release;
    if (fixed)  // one action per state: a plain dot
        return sweep(S, A, r, gamma, v, vo, pol, fixed, gauss_seidel,
                     [&](int64_t s, int64_t a, const double* Vc) {
                         return Dense::dot(p + (a * S + s) * S, Vc, S);
                     });
    if (!gauss_seidel) {
        // Jacobi: Q(s, a) for every pair first, matrix by matrix in blocks of four rows, then
        // the fused max per state. P is still read once; Q is only S x A doubles.
        std::vector<double> Q(static_cast<size_t>(S) * A);
        double* q = Q.data();
        const int64_t nb = (S + 3) / 4;
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < A * nb; ++t) {
            const int64_t a = t / nb, s0 = (t % nb) * 4;
            Dense::rows(p + (a * S + s0) * S, std::min<int64_t>(4, S - s0), S, S, v, q + s0 * A + a, A);
        }
        return sweep(S, A, r, gamma, v, vo, pol, fixed, gauss_seidel,
                     [&](int64_t s, int64_t a, const double*) { return q[s * A + a]; });
    }
    // Gauss-Seidel: all actions of a state at once, on the first action's call; each sweep visits a state
    // once, so a per-thread (state, q) cache allocated per call is never stale.
    const int nt = omp_get_max_threads();
    std::vector<double> cache(static_cast<size_t>(nt) * A);
    std::vector<int64_t> cached(nt, -1);
    return sweep(S, A, r, gamma, v, vo, pol, fixed, gauss_seidel,
                 [&](int64_t s, int64_t a, const double* Vc) {
                     const int t = omp_in_parallel() ? omp_get_thread_num() : 0;
                     double* q = cache.data() + static_cast<size_t>(t) * A;
                     if (cached[t] != s) { Dense::rows(p + s * S, A, S * S, S, Vc, q, 1); cached[t] = s; }
                     return q[a];
                 });
}

template <typename T>
double sweep_sparse(Arr<int64_t> indptr, Arr<int32_t> indices, Arr<T> data, int64_t A,
                    Arr<double> R, double gamma, py::array_t<double> V, py::array_t<double> V_out,
                    py::array_t<int64_t> policy, bool fixed, bool gauss_seidel) {
    const int64_t S = V.size();
    if (A < 1 || indptr.size() != S * A + 1 || R.size() != S * A || V_out.size() != S ||
        policy.size() != S || indices.size() != data.size())
        throw std::invalid_argument("sweep_sparse: inconsistent shapes");
    const int64_t* ip = indptr.data();
    const int32_t* ix = indices.data();
    const T* d = data.data();
    const double* r = R.data();
    double* v = V.mutable_data();
    double* vo = V_out.mutable_data();
    int64_t* pol = policy.mutable_data();
    py::gil_scoped_release release;
    return sweep(S, A, r, gamma, v, vo, pol, fixed, gauss_seidel,
                 [&](int64_t s, int64_t a, const double* Vc) {
                     const int64_t row = s * A + a;
                     // two partial sums: halves the dependent add chain of a short row
                     double t0 = 0.0, t1 = 0.0;
                     int64_t k = ip[row];
                     const int64_t end = ip[row + 1];
                     // the CSR arrays stream through once per sweep: fetch them non-temporally
                     // so they do not evict V (the gather target) from the shared L3
                     __builtin_prefetch(d + k + 64, 0, 0);
                     __builtin_prefetch(ix + k + 128, 0, 0);
                     for (; k + 1 < end; k += 2) {
                         t0 += static_cast<double>(d[k]) * Vc[ix[k]];
                         t1 += static_cast<double>(d[k + 1]) * Vc[ix[k + 1]];
                     }
                     if (k < end) t0 += static_cast<double>(d[k]) * Vc[ix[k]];
                     return t0 + t1;
                 });
}

// No fused multiply-add in the TD loop: its Q must match the reference bit for bit, or
// greedy choices (and so whole trajectories) could diverge between backends.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

// SplitMix64, the same stream as the reference and the Numba kernel.
inline double uniform(uint64_t& state) {
    state += 0x9E3779B97F4A7C15ULL;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

inline int64_t choose(const double* Q, int64_t A, int64_t s, uint64_t& state, double epsilon) {
    if (uniform(state) < epsilon) return std::min(static_cast<int64_t>(uniform(state) * A), A - 1);
    int64_t best = 0;
    for (int64_t b = 1; b < A; ++b)
        if (Q[s * A + b] > Q[s * A + best]) best = b;
    return best;
}

py::array_t<double> td_control(Arr<int64_t> next_state, Arr<double> cum_prob, Arr<double> reward,
                               Arr<bool> done, int64_t start, py::array_t<double> Q,
                               int64_t episodes, double alpha, double gamma, double epsilon,
                               int64_t max_steps, uint64_t seed, bool sarsa) {
    if (next_state.ndim() != 3 || Q.ndim() != 2) throw std::invalid_argument("bad model shapes");
    const int64_t S = next_state.shape(0), A = next_state.shape(1), K = next_state.shape(2);
    if (Q.shape(0) != S || Q.shape(1) != A || cum_prob.size() != S * A * K ||
        reward.size() != S * A * K || done.size() != S * A * K || start < 0 || start >= S)
        throw std::invalid_argument("td_control: inconsistent shapes");
    py::array_t<double> returns(episodes);
    const int64_t* ns = next_state.data();
    const double* cp = cum_prob.data();
    const double* rw = reward.data();
    const bool* dn = done.data();
    double* q = Q.mutable_data();
    double* ret = returns.mutable_data();
    py::gil_scoped_release release;
    uint64_t state = seed;
    for (int64_t ep = 0; ep < episodes; ++ep) {
        int64_t s = start;
        int64_t a = choose(q, A, s, state, epsilon);
        double total = 0.0;
        for (int64_t t = 0; t < max_steps; ++t) {
            const double u = uniform(state);
            const int64_t base = (s * A + a) * K;
            int64_t k = 0;
            while (k < K - 1 && u >= cp[base + k]) ++k;
            const int64_t s_next = ns[base + k];
            const double r = rw[base + k];
            const bool end = dn[base + k];
            total += r;
            int64_t a_next = 0;
            double y;
            if (sarsa) {
                a_next = choose(q, A, s_next, state, epsilon);
                y = end ? r : r + gamma * q[s_next * A + a_next];
            } else if (end) {
                y = r;
            } else {
                double m = q[s_next * A];
                for (int64_t b = 1; b < A; ++b) m = std::max(m, q[s_next * A + b]);
                y = r + gamma * m;
            }
            q[s * A + a] = q[s * A + a] + alpha * (y - q[s * A + a]);
            if (!sarsa) a_next = choose(q, A, s_next, state, epsilon);
            s = s_next;
            a = a_next;
            if (end) break;
        }
        ret[ep] = total;
    }
    return returns;
}

#pragma GCC pop_options

}  // namespace

PYBIND11_MODULE(mdp, m) {
    m.doc() = "value iteration sweeps and tabular TD control";
    m.def("sweep_dense", &sweep_dense<float>);
    m.def("sweep_dense", &sweep_dense<double>);
    m.def("sweep_sparse", &sweep_sparse<float>);
    m.def("sweep_sparse", &sweep_sparse<double>);
    m.def("td_control", &td_control);
}
