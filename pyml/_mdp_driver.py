"""Value-iteration driver shared by every backend: the solve (sweeps and stopping test inside
one kernel call), policy evaluation and Howard's policy iteration. Only the kernels differ
between backends; the validated model and its layouts are in :mod:`pyml._mdp_model`."""
from __future__ import annotations

import numpy as np

from ._backend import Kernel
from .kernels.cuda import cupy

# The kernels of the mdp loop (value iteration here, the model checks for pyml._mdp_model,
# tabular TD control for pyml.rl); backend b's implementation is <package of b>.mdp:<name>.
SOLVE_DENSE = Kernel("mdp", "value_iteration_dense", ("python", "numba", "cpp", "cuda"))
SOLVE_SPARSE = Kernel("mdp", "value_iteration_sparse", ("python", "numba", "cpp", "cuda"))
CHECK_DENSE = Kernel("mdp", "check_dense", ("python", "numba", "cpp"))
CHECK_CSR = Kernel("mdp", "check_csr", ("python", "numba", "cpp"))
# the model's check pass fused with writing the state-major CSR (pyml._mdp_model)
STATE_MAJOR_CSR = Kernel("mdp", "state_major_csr", ("cpp",))
TD_CONTROL = Kernel("mdp", "td_control", ("python", "numba", "cpp"))

# cpp and numba read the model's state-major CSR (row s*A + a: a state's actions adjacent, one
# forward stream per sweep, written by the check pass); cuda an action-major CSR (row a*S + s)
# copied to the device once; python the caller's A matrices in place.
STATE_MAJOR = ("numba", "cpp")
CHUNK = 10_000  # sweeps per kernel call (the residual buffer of one call)


def threshold(epsilon: float, gamma: float) -> float:
    """Stop when sup|V_{k+1}-V_k| < eps(1-gamma)/(2 gamma): the greedy policy is then
    eps-optimal (Puterman 1994, Thm 6.3.1). gamma = 0: the first sweep is exact."""
    if gamma == 0.0:
        return float("inf")
    return epsilon * (1.0 - gamma) / (2.0 * gamma) if gamma < 1.0 else epsilon


def solve(model, backend: str, gamma: float, V0, tol: float, max_iter: int, gauss_seidel: bool,
          policy: np.ndarray | None = None):
    """Backups until the sup-norm change is below ``tol`` (at most ``max_iter``), in one call
    of the backend's kernel. With ``policy`` the backup is for that fixed policy (iterative
    policy evaluation). Returns V, greedy policy, sweeps done, residual per sweep (NumPy)."""
    on_gpu = backend == "cuda"
    m = model.on_device() if on_gpu else model
    xp = cupy() if on_gpu else np
    V = xp.array(V0, dtype=xp.float64, copy=True)
    scratch = xp.empty_like(V)
    fixed = policy is not None
    pol = xp.array(policy, dtype=xp.int64, copy=True) if fixed else xp.zeros(model.S, xp.int64)
    if m.sparse:
        if backend in STATE_MAJOR:
            indptr, indices, data = m.state_major()
        else:
            indptr, indices, data = m.stacked() if backend == "cuda" else m.csr
        kernel = SOLVE_SPARSE.get(backend)
        run = lambda k, buf: kernel(indptr, indices, data, m.R, gamma, V, scratch, pol, fixed,
                                    gauss_seidel, tol, k, buf)
    else:
        kernel = SOLVE_DENSE.get(backend)
        run = lambda k, buf: kernel(m.P, m.R, gamma, V, scratch, pol, fixed, gauss_seidel, tol, k, buf)
    # At most CHUNK sweeps per kernel call, so the residual buffer stays small whatever
    # max_iter is; V and the policy carry over from one call to the next.
    done: list[np.ndarray] = []
    total = 0
    while total < max_iter:
        k = min(CHUNK, max_iter - total)
        buf = np.zeros(k)
        n = int(run(k, buf))
        done.append(buf[:n])
        total += n
        if n < k or (n and buf[n - 1] < tol):
            break
    residuals = done[0] if len(done) == 1 else np.concatenate(done)
    return V, pol, total, residuals


def evaluate_exact(model, gamma: float, policy: np.ndarray) -> np.ndarray:
    """Solve (I - gamma P_pi) V = R_pi (LAPACK for dense, SuperLU for sparse)."""
    P_pi = model.P_policy(policy)
    R_pi = model.R[np.arange(model.S), policy]
    if model.sparse:
        import scipy.sparse as sp
        from scipy.sparse.linalg import spsolve

        return np.asarray(spsolve((sp.identity(model.S, format="csc") - gamma * P_pi).tocsc(), R_pi))
    return np.linalg.solve(np.eye(model.S) - gamma * P_pi, R_pi)


def policy_iteration(model, backend: str, gamma: float, exact: bool, tol: float, max_iter: int):
    """Howard's policy iteration (Sutton & Barto 2018, section 4.3); the improvement step is
    one greedy sweep of the kernel."""
    policy = np.argmax(model.R, axis=1).astype(np.int64)
    V = np.zeros(model.S)
    n = 0
    for n in range(1, max_iter + 1):
        if exact:
            V = evaluate_exact(model, gamma, policy)
        else:
            V = solve(model, backend, gamma, V, tol, 100_000, False, policy)[0]
        new = solve(model, backend, gamma, V, 0.0, 1, False)[1]
        # Keep the old action unless the new one is strictly better: no cycling on ties.
        q = model.R + gamma * model.expected_next(V)
        idx = np.arange(model.S)
        keep = q[idx, policy] >= q[idx, new] - 1e-12 * max(1.0, float(np.abs(q).max()))
        new[keep] = policy[keep]
        if np.array_equal(new, policy):
            break
        policy = new
    return V, policy, n
