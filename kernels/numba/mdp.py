# Value iteration / policy evaluation to convergence, V'(s) = max_a [R(s,a) + gamma sum_s' P(s'|s,a) V(s')] (dense (A,S,S), state-major CSR), one-pass model checks, Q-learning/SARSA episodes.
# Fast: the sweep loop and stopping test compiled (no per-sweep Python round trip), max over actions fused so each sweep reads P once, prange over states above the grain size (serial below it), float64 accumulation, serial in-place Gauss-Seidel.
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
def _sparse_state(indptr, indices, data, A, S, R, gamma, V, policy, fixed, s):
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


# Below two grains of work per sweep (a grain is about 100 us on one core: dense multiply-adds
# or sparse gathers) a parallel launch costs more than it saves, and on a busy machine each
# launch can wait for a descheduled worker. The same rule as the C++ kernels.
DENSE_GRAIN = 1 << 18
SPARSE_GRAIN = 1 << 16


@njit(inline="always")
def _update(V_new, V_old, s, v, a, policy, fixed):
    change = abs(v - V_old[s])  # before the write: Gauss-Seidel passes V as both
    V_new[s] = v
    if not fixed:
        policy[s] = a
    return change


@njit(parallel=True, fastmath=False, cache=True)
def value_iteration_dense(P, R, gamma, V, scratch, policy, fixed, gauss_seidel, tol, max_iter,
                          residuals):
    """Sweeps until sup|V' - V| < tol or max_iter; the result ends in V, residuals[:n] per sweep.

    Jacobi reads V and writes scratch (swapped per sweep), Gauss-Seidel updates V in place.
    """
    A, S = P.shape[0], V.shape[0]
    parallel = (1 if fixed else A) * S * S >= 2 * DENSE_GRAIN
    cur, nxt = V, scratch
    diff = np.empty(S)
    n = 0
    for it in range(max_iter):
        delta = 0.0
        if gauss_seidel:
            for s in range(S):
                v, a = _dense_state(P, R, gamma, cur, policy, fixed, s)
                delta = max(delta, _update(cur, cur, s, v, a, policy, fixed))
        elif parallel:
            for s in prange(S):
                v, a = _dense_state(P, R, gamma, cur, policy, fixed, s)
                diff[s] = _update(nxt, cur, s, v, a, policy, fixed)
            delta = diff.max()
        else:
            for s in range(S):
                v, a = _dense_state(P, R, gamma, cur, policy, fixed, s)
                delta = max(delta, _update(nxt, cur, s, v, a, policy, fixed))
        if not gauss_seidel:
            cur, nxt = nxt, cur
        residuals[it] = delta
        n = it + 1
        if delta < tol:
            break
    if n % 2 == 1 and not gauss_seidel:
        V[:] = scratch
    return n


@njit(parallel=True, fastmath=False, cache=True)
def value_iteration_sparse(indptr, indices, data, R, gamma, V, scratch, policy, fixed,
                           gauss_seidel, tol, max_iter, residuals):
    """:func:`value_iteration_dense` on the state-major CSR: row s*A + a holds P(. | s, a)
    (a state's actions adjacent, so a sweep reads the arrays in one forward stream)."""
    S = V.shape[0]
    A = R.shape[1]
    parallel = data.shape[0] // (A if fixed else 1) + S >= 2 * SPARSE_GRAIN
    cur, nxt = V, scratch
    diff = np.empty(S)
    n = 0
    for it in range(max_iter):
        delta = 0.0
        if gauss_seidel:
            for s in range(S):
                v, a = _sparse_state(indptr, indices, data, A, S, R, gamma, cur, policy, fixed, s)
                delta = max(delta, _update(cur, cur, s, v, a, policy, fixed))
        elif parallel:
            for s in prange(S):
                v, a = _sparse_state(indptr, indices, data, A, S, R, gamma, cur, policy, fixed, s)
                diff[s] = _update(nxt, cur, s, v, a, policy, fixed)
            delta = diff.max()
        else:
            for s in range(S):
                v, a = _sparse_state(indptr, indices, data, A, S, R, gamma, cur, policy, fixed, s)
                delta = max(delta, _update(nxt, cur, s, v, a, policy, fixed))
        if not gauss_seidel:
            cur, nxt = nxt, cur
        residuals[it] = delta
        n = it + 1
        if delta < tol:
            break
    if n % 2 == 1 and not gauss_seidel:
        V[:] = scratch
    return n


# ------------------------------------------------------------------ model checks
@njit(inline="always")
def _row_status(x, lo, hi, tol):
    """0 when x[lo:hi] is finite, >= 0 and sums to 1 within tol; else 1 (bad entry) or 3 (sum)."""
    total = 0.0
    bad = 0
    for k in range(lo, hi):
        v = x[k]
        if not (v >= 0.0 and v < np.inf):  # NaN fails both comparisons
            bad += 1
        total += v
    if bad:
        return 1
    return 0 if abs(total - 1.0) <= tol else 3


@njit(inline="always")
def _describe(x, lo, hi, row, cols, tol):
    for k in range(lo, hi):
        v = float(x[k])
        if not np.isfinite(v):
            return 1, row, cols[k - lo] if cols.shape[0] else k - lo, v
        if v < 0.0:
            return 2, row, cols[k - lo] if cols.shape[0] else k - lo, v
    total = 0.0
    for k in range(lo, hi):
        total += x[k]
    return 3, row, -1, total


@njit(parallel=True, cache=True)
def check_dense(P, tol):
    """(status, row a*S + s, column, value) of the first bad row of P (A, S, S); status 0: valid."""
    A, S = P.shape[0], P.shape[1]
    flat = P.reshape(A * S * S)
    rows = A * S
    status = np.zeros(rows, np.int8)
    for r in prange(rows):
        status[r] = _row_status(flat, r * S, (r + 1) * S, tol)
    bad = np.flatnonzero(status)
    if bad.shape[0] == 0:
        return 0, -1, -1, 0.0
    r = bad[0]
    return _describe(flat, r * S, (r + 1) * S, r, np.empty(0, np.int64), tol)


@njit(parallel=True, cache=True)
def check_csr(indptr, indices, data, S, tol):
    """The CSR version of :func:`check_dense`: also monotonic indptr (4) and indices in [0, S) (5)."""
    if indptr.shape[0] != S + 1:
        return 4, -1, -1, float(indptr.shape[0])
    if indptr[0] != 0:
        return 4, 0, -1, float(indptr[0])
    stored = min(indices.shape[0], data.shape[0])
    status = np.zeros(S, np.int8)
    for r in prange(S):
        lo, hi = indptr[r], indptr[r + 1]
        if lo > hi or hi > stored:
            status[r] = 4
            continue
        out = 0
        for k in range(lo, hi):
            if indices[k] < 0 or indices[k] >= S:
                out += 1
        status[r] = 5 if out else _row_status(data, lo, hi, tol)
    bad = np.flatnonzero(status)
    if bad.shape[0] == 0:
        return 0, -1, -1, 0.0
    r = bad[0]
    lo, hi = indptr[r], indptr[r + 1]
    if status[r] == 4:
        return 4, r, -1, float(hi)
    if status[r] == 5:
        for k in range(lo, hi):
            if indices[k] < 0 or indices[k] >= S:
                return 5, r, -1, float(indices[k])
    return _describe(data, lo, hi, r, indices[lo:hi].astype(np.int64), tol)


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


@njit(parallel=True, fastmath=False, cache=True)
def bellman_backup_sparse(indptr, indices, data, R, gamma, V, V_out, policy, offset):
    """pyml.reference.mdp.bellman_backup_sparse: one backup of a block of states (the Dask
    value iteration's task), prange over the block's states."""
    n, A = R.shape
    deltas = np.zeros(n)
    for s in prange(n):
        best = -np.inf
        arg = 0
        for a in range(A):
            total = 0.0
            for k in range(indptr[a, s], indptr[a, s + 1]):
                total += data[k] * V[indices[k]]
            q = R[s, a] + gamma * total
            if a == 0 or q > best:
                best = q
                arg = a
        V_out[s] = best
        policy[s] = arg
        deltas[s] = abs(best - V[offset + s])
    return deltas.max() if n > 0 else 0.0
