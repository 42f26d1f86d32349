"""`pyml verify` / `pyml warmup` for the mdp loop: value iteration (dense and sparse P, Jacobi
and Gauss-Seidel, float32 and float64) and tabular Q-learning / SARSA of one backend against
the reference (pyml/reference/mdp.py), through the public calls."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import envs
from .._backend import BackendUnavailableError
from .._mdp_driver import SOLVE_DENSE, TD_CONTROL
from ..mdp import value_iteration
from ..reference import mdp as ref
from ..rl import q_learning, sarsa
from . import Row, row

S, A, GAMMA, SWEEPS = 23, 3, 0.9, 5


def naive_sweeps(P, R, gamma, n, dtype, gauss_seidel):
    """The same-precision 'naive' result of the tolerance rule: every sum in ``dtype``."""
    dense = np.stack([m.toarray() for m in P]) if isinstance(P, list) else P
    dense = dense.astype(dtype)
    V = np.zeros(R.shape[0], dtype)
    Rd, g = R.astype(dtype), dtype(gamma)
    for _ in range(n):
        if gauss_seidel:
            for s in range(V.shape[0]):
                V[s] = (Rd[s] + g * (dense[:, s, :] @ V)).max()
        else:
            V = (Rd + g * np.einsum("ast,t->sa", dense, V)).max(axis=1).astype(dtype)
    return V


def random_mdp(rng: np.random.Generator, dtype):
    P = rng.random((A, S, S))
    P /= P.sum(axis=2, keepdims=True)
    P = P.astype(dtype)
    R = rng.standard_normal((S, A))
    Ps = [sp.csr_matrix(np.where(P[a] > np.quantile(P[a], 0.7), P[a], 0)) for a in range(A)]
    Ps = [sp.csr_matrix(m.multiply(1.0 / m.sum(axis=1)).astype(dtype)) for m in Ps]
    return P, Ps, R


def checks(backend: str, rng: np.random.Generator) -> list[Row]:
    SOLVE_DENSE.resolve(backend)  # BackendUnavailableError when the backend cannot run here
    rows: list[Row] = []
    methods = ("jacobi",) if backend == "cuda" else ("jacobi", "gauss-seidel")
    for dtype in (np.float32, np.float64):
        P, Ps, R = random_mdp(rng, dtype)
        for kind, Pin in (("dense", P), ("sparse", Ps)):
            P64 = [m.astype(np.float64) for m in Pin] if kind == "sparse" else Pin.astype(np.float64)
            for method in methods:
                gs = method == "gauss-seidel"
                got = value_iteration(Pin, R, GAMMA, epsilon=1e-300, max_iter=SWEEPS, method=method,
                                      backend=backend).V
                want = ref.value_iteration(P64, R, GAMMA, epsilon=1e-300, max_iter=SWEEPS,
                                           gauss_seidel=gs)[0]
                rows.append(row(f"{kind} {method} {np.dtype(dtype).name}", got, want,
                                naive_sweeps(Pin, R, GAMMA, SWEEPS, dtype, gs), dtype))
    try:
        TD_CONTROL.resolve(backend)
    except BackendUnavailableError:
        return rows
    return rows + td_checks(backend)


def td_checks(backend: str) -> list[Row]:
    """Q-learning / SARSA share one random stream and avoid fused multiply-adds on every
    backend, so Q must equal the reference bit for bit: the tolerance is 0, not the rule."""
    env = envs.CliffWalking()
    out = []
    for name, fn in (("q_learning", q_learning), ("sarsa", sarsa)):
        want = fn(env, episodes=3, seed=1, backend="python").Q
        got = fn(env, episodes=3, seed=1, backend=backend).Q
        out.append((f"{name} cliff walking", float(np.abs(got - want).max()), 0.0))
    return out
