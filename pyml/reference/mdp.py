"""Textbook value iteration, policy evaluation and tabular Q-learning / SARSA (the oracle).

Bellman optimality backup (Sutton & Barto 2018, section 4.4, eq. 4.10; Bellman's fixed
point, iterated):

    V(s) = max_a [ R(s, a) + gamma * sum_{s'} P(s' | s, a) V(s') ]

Q-learning update (Sutton & Barto 2018, section 6.5, eq. 6.8; SARSA section 6.4, eq. 6.7;
cliff walking is their Example 6.6):

    y_t = r_t                                   if S_{t+1} is terminal
    y_t = r_t + gamma * max_a q(S_{t+1}, a)     otherwise
    q(S_t, A_t) <- q(S_t, A_t) + alpha * (y_t - q(S_t, A_t))

Plain Python loops over s, a, s'; NumPy only as the container. Never imports a kernel.
"""
from __future__ import annotations

import numpy as np


def value_iteration(P, R, gamma, epsilon=1e-6, max_iter=10_000, V0=None, gauss_seidel=False):
    """Value iteration until sup|V_{k+1} - V_k| < epsilon (1 - gamma) / (2 gamma).

    That threshold makes the greedy policy epsilon-optimal (Puterman 1994, Thm 6.3.1).
    ``P`` is dense (A, S, S) or a list of A scipy.sparse (S, S) matrices (made dense here:
    the oracle has one backup, :func:`sweep_dense`). Jacobi sweeps by default; with
    ``gauss_seidel`` each state sees the new values of the states before it.
    Returns (V, policy, n_iter).
    """
    if isinstance(P, (list, tuple)):
        P = np.stack([np.asarray(Pa.toarray(), dtype=np.float64) for Pa in P])
    A, S = P.shape[0], P.shape[1]
    R = np.asarray(R, dtype=np.float64)
    V = np.zeros(S) if V0 is None else np.array(V0, dtype=np.float64)
    V_out = np.empty(S)
    policy = np.zeros(S, dtype=np.int64)
    threshold = epsilon * (1 - gamma) / (2 * gamma) if gamma < 1 else epsilon
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        delta = sweep_dense(P, R, gamma, V, V_out, policy, False, gauss_seidel)
        V, V_out = V_out, V
        if delta < threshold:
            break
    return V, policy, n_iter


def q_values(P, R, gamma, V):
    """Q(s, a) = R(s, a) + gamma sum_{s'} P(s'|s, a) V(s') for dense or sparse P."""
    sparse = isinstance(P, (list, tuple))
    A, S = len(P) if sparse else P.shape[0], P[0].shape[0]
    Q = np.empty((S, A))
    for s in range(S):
        for a in range(A):
            if sparse:
                Pa = P[a]
                total = sum(Pa.data[k] * V[Pa.indices[k]] for k in range(Pa.indptr[s], Pa.indptr[s + 1]))
            else:
                total = sum(P[a, s, s_next] * V[s_next] for s_next in range(S))
            Q[s, a] = R[s, a] + gamma * total
    return Q


def td_update(Q, s, a, r, s_next, terminal, alpha, gamma, a_next=None):
    """One Q-learning (a_next None) or SARSA (a_next given) update of Q in place (Sutton & Barto eqs. 6.8 / 6.7)."""
    if terminal:
        y = r
    elif a_next is None:
        y = r + gamma * max(Q[s_next, b] for b in range(Q.shape[1]))
    else:
        y = r + gamma * Q[s_next, a_next]
    Q[s, a] = Q[s, a] + alpha * (y - Q[s, a])


# ---------------------------------------------------------------- episode loop (RL oracle)
def _splitmix64(state):
    """The 64-bit SplitMix generator shared by every backend, so runs agree bit for bit."""
    mask = (1 << 64) - 1
    state = (state + 0x9E3779B97F4A7C15) & mask
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return state, z ^ (z >> 31)


def _uniform(state):
    state, z = _splitmix64(state)
    return state, (z >> 11) * (1.0 / 9007199254740992.0)


def td_control(next_state, cum_prob, reward, done, start, Q, episodes, alpha, gamma,
               epsilon, max_steps, seed, sarsa):
    """epsilon-greedy Q-learning / SARSA episodes on a tabular model (Sutton & Barto, sections 6.4-6.5).

    The model: outcome k of (s, a) happens with probability cum_prob[s,a,k]-cum_prob[s,a,k-1]
    and leads to next_state[s,a,k] with reward[s,a,k]; done[s,a,k] ends the episode.
    Greedy ties go to the lowest action index. Q is updated in place; returns the
    per-episode undiscounted returns.
    """
    S, A, K = next_state.shape
    state = int(seed) & ((1 << 64) - 1)
    returns = np.zeros(episodes)

    def choose(s, state):
        state, u = _uniform(state)
        if u < epsilon:
            state, u = _uniform(state)
            return state, min(int(u * A), A - 1)
        best = 0
        for b in range(1, A):
            if Q[s, b] > Q[s, best]:
                best = b
        return state, best

    for ep in range(episodes):
        s = int(start)
        state, a = choose(s, state)
        total = 0.0
        for _ in range(max_steps):
            state, u = _uniform(state)
            k = 0
            while k < K - 1 and u >= cum_prob[s, a, k]:
                k += 1
            s_next, r, end = int(next_state[s, a, k]), float(reward[s, a, k]), bool(done[s, a, k])
            total += r
            if sarsa:
                state, a_next = choose(s_next, state)
                td_update(Q, s, a, r, s_next, end, alpha, gamma, a_next)
            else:
                td_update(Q, s, a, r, s_next, end, alpha, gamma)
                state, a_next = choose(s_next, state)
            s, a = s_next, a_next
            if end:
                break
        returns[ep] = total
    return returns


# ---------------------------------------------- sweeps with the compiled kernels' signature
def sweep_dense(P, R, gamma, V, V_out, policy, fixed, gauss_seidel):
    """One backup sweep over dense P (A, S, S), in the calling convention of the kernels.

    Jacobi reads V and writes V_out; Gauss-Seidel writes V[s] in place so that later
    states already see it. ``fixed``: back up only a = policy[s] (policy evaluation),
    else write the greedy action into ``policy``. Returns sup_s |V_new(s) - V(s)|.
    """
    A, S = P.shape[0], P.shape[1]
    delta = 0.0
    for s in range(S):
        actions = [int(policy[s])] if fixed else range(A)
        best, arg = None, None
        for a in actions:
            total = 0.0
            for s_next in range(S):
                total += float(P[a, s, s_next]) * V[s_next]
            q = R[s, a] + gamma * total
            if best is None or q > best:
                best, arg = q, a
        delta = max(delta, abs(best - V[s]))
        V_out[s] = best
        if gauss_seidel:
            V[s] = best
        if not fixed:
            policy[s] = arg
    return delta


def sweep_sparse(indptr, indices, data, R, gamma, V, V_out, policy, fixed, gauss_seidel):
    """:func:`sweep_dense` on A CSR matrices: ``indptr[a]``, ``indices[a]``, ``data[a]`` hold
    P(. | s, a) in row s of matrix a."""
    A, S = len(indptr), V.shape[0]
    delta = 0.0
    for s in range(S):
        actions = [int(policy[s])] if fixed else range(A)
        best, arg = None, None
        for a in actions:
            total = 0.0
            for k in range(indptr[a][s], indptr[a][s + 1]):
                total += float(data[a][k]) * V[indices[a][k]]
            q = R[s, a] + gamma * total
            if best is None or q > best:
                best, arg = q, a
        delta = max(delta, abs(best - V[s]))
        V_out[s] = best
        if gauss_seidel:
            V[s] = best
        if not fixed:
            policy[s] = arg
    return delta


def _iterate(sweep, V, scratch, gauss_seidel, tol, max_iter, residuals):
    """Repeat ``sweep(V_in, V_out)`` until its change is below tol; the result ends in V."""
    cur, nxt = V, scratch
    n = 0
    for n in range(1, max_iter + 1):
        delta = sweep(cur, nxt)
        residuals[n - 1] = delta
        if not gauss_seidel:
            cur, nxt = nxt, cur
        if delta < tol:
            break
    if cur is not V:
        V[:] = cur
    return n


def value_iteration_dense(P, R, gamma, V, scratch, policy, fixed, gauss_seidel, tol, max_iter,
                          residuals):
    """Sweeps of :func:`sweep_dense` until sup|V' - V| < tol (at most max_iter), in the calling
    convention of the compiled kernels: V holds the start and, on return, the result;
    residuals[:n] the change per sweep; returns n."""
    return _iterate(lambda cur, nxt: sweep_dense(P, R, gamma, cur, nxt, policy, fixed, gauss_seidel),
                    V, scratch, gauss_seidel, tol, max_iter, residuals)


def value_iteration_sparse(indptr, indices, data, R, gamma, V, scratch, policy, fixed,
                           gauss_seidel, tol, max_iter, residuals):
    """:func:`value_iteration_dense` with :func:`sweep_sparse` (A CSR matrices)."""
    return _iterate(lambda cur, nxt: sweep_sparse(indptr, indices, data, R, gamma, cur, nxt, policy,
                                                  fixed, gauss_seidel),
                    V, scratch, gauss_seidel, tol, max_iter, residuals)


# ------------------------------------------------ model checks (the compiled checks' oracle)
def _describe_row(values, columns, row, tol):
    """Status of one row of transition probabilities: 0 valid, 1 not finite, 2 negative,
    3 not summing to 1 within tol; as (status, row, column, value)."""
    for v, j in zip(values, columns):
        if not np.isfinite(v):
            return 1, row, int(j), float(v)
        if v < 0:
            return 2, row, int(j), float(v)
    total = 0.0
    for v in values:
        total += float(v)
    return (0, -1, -1, 0.0) if abs(total - 1.0) <= tol else (3, row, -1, total)


def check_dense(P, tol):
    """The first row a*S + s of P (A, S, S) that is not a probability distribution."""
    A, S = P.shape[0], P.shape[1]
    for a in range(A):
        for s in range(S):
            verdict = _describe_row(P[a, s], range(S), a * S + s, tol)
            if verdict[0]:
                return verdict
    return 0, -1, -1, 0.0


def check_csr(indptr, indices, data, S, tol):
    """:func:`check_dense` for one CSR matrix (S, S), which must also have an indptr that starts
    at 0 and never decreases within the stored entries (status 4) and columns in [0, S) (5)."""
    if len(indptr) != S + 1:
        return 4, -1, -1, float(len(indptr))
    if indptr[0] != 0:
        return 4, 0, -1, float(indptr[0])
    stored = min(len(indices), len(data))
    for s in range(S):
        lo, hi = int(indptr[s]), int(indptr[s + 1])
        if lo > hi or hi > stored:
            return 4, s, -1, float(hi)
        for k in range(lo, hi):
            if not 0 <= indices[k] < S:
                return 5, s, -1, float(indices[k])
        verdict = _describe_row(data[lo:hi], indices[lo:hi], s, tol)
        if verdict[0]:
            return verdict
    return 0, -1, -1, 0.0


def bellman_backup_sparse(indptr, indices, data, R, gamma, V, V_out, policy, offset):
    """One Bellman optimality backup (Sutton & Barto 2018, eq. 4.10) for a block of states:
    V_out[s] = max_a [R(s, a) + gamma sum_s' P(s' | s, a) V(s')] for the block's rows s, the
    block's state offset + s being the global state; P(. | s, a) is stored at
    data[indptr[a, s]:indptr[a, s + 1]] (columns: global states). Returns
    max_s |V_out[s] - V[offset + s]| (0 for an empty block)."""
    n, A = R.shape
    delta = 0.0
    for s in range(n):
        best, arg = None, 0
        for a in range(A):
            total = 0.0
            for k in range(int(indptr[a, s]), int(indptr[a, s + 1])):
                total += float(data[k]) * float(V[indices[k]])
            q = float(R[s, a]) + gamma * total
            if best is None or q > best:
                best, arg = q, a
        V_out[s] = best
        policy[s] = arg
        delta = max(delta, abs(best - float(V[offset + s])))
    return delta
