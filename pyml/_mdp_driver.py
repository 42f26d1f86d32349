"""Value-iteration driver shared by every backend: the sweep loop, the stopping rule,
policy evaluation/iteration. Only the sweep kernel differs between backends."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._backend import Kernel, is_cupy, to_numpy
from .kernels.cuda import cupy

# The kernels of the mdp loop (value iteration here, tabular TD control for pyml.rl); the
# implementation of backend b is <package of b>.mdp:<name> (see pyml._backend).
SWEEP_DENSE = Kernel("mdp", "sweep_dense", ("python", "numba", "cpp", "cuda"))
SWEEP_SPARSE = Kernel("mdp", "sweep_sparse", ("python", "numba", "cpp", "cuda"))
TD_CONTROL = Kernel("mdp", "td_control", ("python", "numba", "cpp"))


@dataclass
class Model:
    """A validated MDP: dense P (A, S, S) or state-major CSR (row s*A + a = P(.|s, a))."""

    S: int
    A: int
    R: np.ndarray                       # (S, A) float64 expected reward
    dtype: np.dtype                     # dtype of P (float32 P halves the bytes per sweep)
    P: np.ndarray | None = None
    indptr: np.ndarray | None = None
    indices: np.ndarray | None = None
    data: np.ndarray | None = None

    @property
    def sparse(self) -> bool:
        return self.P is None

    def table(self) -> Kernel:
        return SWEEP_SPARSE if self.sparse else SWEEP_DENSE

    def sweep(self, backend, gamma, V, V_out, policy, fixed, gauss_seidel) -> float:
        fn = self.table().get(backend)
        if self.sparse:
            return float(fn(self.indptr, self.indices, self.data, self.A, self.R, gamma, V, V_out,
                            policy, fixed, gauss_seidel))
        return float(fn(self.P, self.R, gamma, V, V_out, policy, fixed, gauss_seidel))

    def to_device(self, on_gpu: bool) -> "Model":
        """The same model with its arrays in CuPy (on_gpu) or NumPy, copied only if needed."""
        import dataclasses

        conv = cupy().asarray if on_gpu else to_numpy
        fields = {f: (None if getattr(self, f) is None else conv(getattr(self, f)))
                  for f in ("R", "P", "indptr", "indices", "data")}
        return dataclasses.replace(self, **fields)

    def P_policy(self, policy: np.ndarray):
        """P_pi (S, S): row s is P(. | s, policy[s])."""
        s = np.arange(self.S)
        if not self.sparse:
            return self.P[policy, s, :].astype(np.float64)
        import scipy.sparse as sp

        rows = s * self.A + policy
        full = sp.csr_matrix((self.data, self.indices, self.indptr), shape=(self.S * self.A, self.S))
        return full[rows].astype(np.float64)

    def expected_next(self, V: np.ndarray) -> np.ndarray:
        """sum_s' P(s'|s, a) V(s') as (S, A), vectorised (BLAS / SciPy)."""
        if not self.sparse:
            return np.einsum("ast,t->sa", self.P, V.astype(self.dtype)).astype(np.float64)
        import scipy.sparse as sp

        full = sp.csr_matrix((self.data, self.indices, self.indptr), shape=(self.S * self.A, self.S))
        return (full @ V.astype(np.float64)).reshape(self.S, self.A)


def threshold(epsilon: float, gamma: float) -> float:
    """Stop when sup|V_{k+1}-V_k| < eps(1-gamma)/(2 gamma): the greedy policy is then eps-optimal."""
    return epsilon * (1.0 - gamma) / (2.0 * gamma) if gamma < 1.0 else epsilon


def sweeps(model: Model, backend: str, gamma: float, V0: np.ndarray, tol: float, max_iter: int,
           gauss_seidel: bool, policy: np.ndarray | None = None):
    """Repeat backups until the sup-norm change is below ``tol``.

    With ``policy`` the backup is for that fixed policy (iterative policy evaluation).
    Jacobi ping-pongs two buffers (no allocation per sweep); Gauss-Seidel works in place.
    Returns V, greedy policy, sweeps done, residual per sweep.
    """
    xp = cupy() if is_cupy(model.R) else np
    V = xp.array(V0, dtype=xp.float64, copy=True)
    V_out = xp.empty_like(V)
    fixed = policy is not None
    pol = xp.array(policy, dtype=xp.int64, copy=True) if fixed else xp.zeros(model.S, xp.int64)
    residuals = []
    for _ in range(max_iter):
        delta = model.sweep(backend, gamma, V, V_out, pol, fixed, gauss_seidel)
        residuals.append(delta)
        V, V_out = V_out, V
        if delta < tol:
            break
    return V, pol, len(residuals), np.asarray(residuals)


def evaluate_exact(model: Model, R: np.ndarray, gamma: float, policy: np.ndarray) -> np.ndarray:
    """Solve (I - gamma P_pi) V = R_pi (LAPACK for dense, SuperLU for sparse)."""
    P_pi = model.P_policy(policy)
    R_pi = R[np.arange(model.S), policy]
    if model.sparse:
        import scipy.sparse as sp
        from scipy.sparse.linalg import spsolve

        return np.asarray(spsolve((sp.identity(model.S, format="csc") - gamma * P_pi).tocsc(), R_pi))
    return np.linalg.solve(np.eye(model.S) - gamma * P_pi, R_pi)


def policy_iteration(model: Model, backend: str, gamma: float, exact: bool, tol: float,
                     max_iter: int):
    """Howard's policy iteration; the improvement step is one greedy sweep of the kernel."""
    policy = np.argmax(model.R, axis=1).astype(np.int64)
    V = np.zeros(model.S)
    scratch = np.empty(model.S)
    n = 0
    for n in range(1, max_iter + 1):
        if exact:
            V = evaluate_exact(model, model.R, gamma, policy)
        else:
            V = sweeps(model, backend, gamma, V, tol, 100_000, False, policy)[0]
        new = np.zeros(model.S, np.int64)
        model.sweep(backend, gamma, V.copy(), scratch, new, False, False)
        # Keep the old action unless the new one is strictly better: no cycling on ties.
        q = model.R + gamma * model.expected_next(V)
        idx = np.arange(model.S)
        keep = q[idx, policy] >= q[idx, new] - 1e-12 * max(1.0, float(np.abs(q).max()))
        new[keep] = policy[keep]
        if np.array_equal(new, policy):
            break
        policy = new
    return V, policy, n
