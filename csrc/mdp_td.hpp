// Tabular Q-learning / SARSA episodes (Sutton & Barto 2018, eqs. 6.8 / 6.7) with epsilon-greedy behaviour on a model of (S, A, K) outcome tables.
// Fast: the whole episode loop in C++ with the GIL released; the tables are validated in pyml/rl.py before this runs (every next state in [0, S)).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

namespace mdp {

namespace py = pybind11;

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

template <typename T>
using In = py::array_t<T, py::array::c_style | py::array::forcecast>;

inline py::array_t<double> td_control(In<int64_t> next_state, In<double> cum_prob, In<double> reward,
                               In<bool> done, int64_t start, py::array_t<double> Q,
                               int64_t episodes, double alpha, double gamma, double epsilon,
                               int64_t max_steps, uint64_t seed, bool sarsa) {
    if (next_state.ndim() != 3 || Q.ndim() != 2) throw std::invalid_argument("bad model shapes");
    const int64_t S = next_state.shape(0), A = next_state.shape(1), K = next_state.shape(2);
    if (Q.shape(0) != S || Q.shape(1) != A || cum_prob.size() != S * A * K ||
        reward.size() != S * A * K || done.size() != S * A * K || K < 1 || start < 0 || start >= S)
        throw std::invalid_argument("td_control: inconsistent shapes");
    // The Python layer validates the tables; this scan keeps a direct call from writing
    // outside Q all the same (the tables are small: S * A * K entries).
    for (int64_t i = 0; i < S * A * K; ++i)
        if (next_state.data()[i] < 0 || next_state.data()[i] >= S)
            throw std::invalid_argument("td_control: next_state outside [0, S)");
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

}  // namespace mdp
