# Bellman backup V'(s) = max_a [R(s,a) + gamma sum_s' P(s'|s,a) V(s')] (dense (A,S,S) and state-major CSR), and Q-learning/SARSA episodes.
# Fast: max over actions fused with the backup so each sweep reads P once; prange over states (Jacobi), float64 accumulation, serial Gauss-Seidel in place.
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always")
def _dot(row, V, S):
    # Four independent partial sums: without fastmath LLVM keeps the summation order, so
    # the split is written out to give it vector lanes (the C++ kernel uses omp simd).
    t0 = t1 = t2 = t3 = 0.0
    n4 = S - S % 4
    for j in range(0, n4, 4):
        t0 += row[j] * V[j]
        t1 += row[j + 1] * V[j + 1]
        t2 += row[j + 2] * V[j + 2]
        t3 += row[j + 3] * V[j + 3]
    for j in range(n4, S):
        t0 += row[j] * V[j]
    return (t0 + t1) + (t2 + t3)


@njit(inline="always")
def _dense_state(P, R, gamma, V, policy, fixed, s):
    A, S = P.shape[0], P.shape[2]
    lo, hi = (policy[s], policy[s] + 1) if fixed else (0, A)
    best, arg = -np.inf, lo
    for a in range(lo, hi):
        q = R[s, a] + gamma * _dot(P[a, s], V, S)
        if q > best:
            best, arg = q, a
    return best, arg


@njit(inline="always")
def _sparse_state(indptr, indices, data, A, R, gamma, V, policy, fixed, s):
    lo, hi = (policy[s], policy[s] + 1) if fixed else (0, A)
    best, arg = -np.inf, lo
    for a in range(lo, hi):
        row = s * A + a
        total = 0.0
        for k in range(indptr[row], indptr[row + 1]):
            total += data[k] * V[indices[k]]
        q = R[s, a] + gamma * total
        if q > best:
            best, arg = q, a
    return best, arg


@njit(parallel=True, fastmath=False, cache=True)
def sweep_dense(P, R, gamma, V, V_out, policy, fixed, gauss_seidel):
    """One sweep; Jacobi writes V_out in parallel, Gauss-Seidel updates V in place serially."""
    S = V.shape[0]
    if gauss_seidel:
        delta = 0.0
        for s in range(S):
            v, a = _dense_state(P, R, gamma, V, policy, fixed, s)
            delta = max(delta, abs(v - V[s]))
            V[s] = v
            V_out[s] = v
            if not fixed:
                policy[s] = a
        return delta
    diff = np.empty(S)
    for s in prange(S):
        v, a = _dense_state(P, R, gamma, V, policy, fixed, s)
        diff[s] = abs(v - V[s])
        V_out[s] = v
        if not fixed:
            policy[s] = a
    return diff.max()


@njit(parallel=True, fastmath=False, cache=True)
def sweep_sparse(indptr, indices, data, A, R, gamma, V, V_out, policy, fixed, gauss_seidel):
    S = V.shape[0]
    if gauss_seidel:
        delta = 0.0
        for s in range(S):
            v, a = _sparse_state(indptr, indices, data, A, R, gamma, V, policy, fixed, s)
            delta = max(delta, abs(v - V[s]))
            V[s] = v
            V_out[s] = v
            if not fixed:
                policy[s] = a
        return delta
    diff = np.empty(S)
    for s in prange(S):
        v, a = _sparse_state(indptr, indices, data, A, R, gamma, V, policy, fixed, s)
        diff[s] = abs(v - V[s])
        V_out[s] = v
        if not fixed:
            policy[s] = a
    return diff.max()


# ------------------------------------------------------------------ TD control
@njit(inline="always")
def _uniform(state):
    # SplitMix64 (same stream as the reference and the C++ kernel).
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return state, float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(inline="always")
def _choose(Q, s, state, epsilon):
    A = Q.shape[1]
    state, u = _uniform(state)
    if u < epsilon:
        state, u = _uniform(state)
        return state, min(int(u * A), A - 1)
    best = 0
    for b in range(1, A):
        if Q[s, b] > Q[s, best]:
            best = b
    return state, best


@njit(parallel=False, fastmath=False, cache=True)
def td_control(next_state, cum_prob, reward, done, start, Q, episodes, alpha, gamma,
               epsilon, max_steps, seed, sarsa):
    """epsilon-greedy Q-learning / SARSA; episodes are sequential (each reads the last Q)."""
    K = next_state.shape[2]
    A = Q.shape[1]
    state = np.uint64(seed)
    returns = np.zeros(episodes)
    for ep in range(episodes):
        s = start
        state, a = _choose(Q, s, state, epsilon)
        total = 0.0
        for _ in range(max_steps):
            state, u = _uniform(state)
            k = 0
            while k < K - 1 and u >= cum_prob[s, a, k]:
                k += 1
            s_next = next_state[s, a, k]
            r = reward[s, a, k]
            end = done[s, a, k]
            total += r
            if sarsa:
                state, a_next = _choose(Q, s_next, state, epsilon)
                y = r if end else r + gamma * Q[s_next, a_next]
            else:
                if end:
                    y = r
                else:
                    m = Q[s_next, 0]
                    for b in range(1, A):
                        m = max(m, Q[s_next, b])
                    y = r + gamma * m
            Q[s, a] = Q[s, a] + alpha * (y - Q[s, a])
            if not sarsa:
                state, a_next = _choose(Q, s_next, state, epsilon)
            s, a = s_next, a_next
            if end:
                break
        returns[ep] = total
    return returns
