"""Value iteration, policy iteration and policy evaluation on dense or sparse MDPs.

Bellman optimality backup (Sutton & Barto 2018, section 4.4, eq. 4.10):
V(s) = max_a [R(s,a) + gamma sum_s' P(s'|s,a) V(s')]. API layer: argument checks, then the
model (:mod:`pyml._mdp_model`: one compiled check pass; dense P read in place, sparse P laid
out state-major by that same pass) and the shared driver
(:mod:`pyml._mdp_driver`), which runs sweeps and stopping test in one kernel call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _mdp_driver as drv
from ._backend import BackendUnavailableError, is_cupy, to_numpy
from ._mdp_model import Model, build
from ._validation import check_array, check_int, check_scalar
from .reference.mdp import q_values as ref_q_values

__all__ = ["MDP", "MDPResult", "value_iteration", "policy_iteration", "policy_evaluation", "q_values",
           "greedy_policy", "from_gymnasium"]


@dataclass
class MDPResult:
    """V (S,), greedy policy (S,) int64, sweeps (or improvement steps) done, sup-norm residual per sweep."""

    V: np.ndarray
    policy: np.ndarray
    n_iter: int
    residuals: np.ndarray


class MDP:
    """A validated MDP (P, R) in the layout the kernels read, built once and reused.

    Pass it as ``P`` (with ``R=None``) to :func:`value_iteration`, :func:`policy_iteration`,
    :func:`policy_evaluation`, :func:`q_values` or :func:`greedy_policy` to solve the same
    model several times (other discount factors, tolerances, policies) without validating
    and converting P again.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> m = pyml.mdp.MDP(np.array([[[1.0, 0.0], [0.0, 1.0]]]), np.array([[1.0], [0.0]]))
    >>> m.S, m.A, round(float(pyml.value_iteration(m, None, 0.5, epsilon=1e-9).V[0]), 6)
    (2, 1, 2.0)
    """

    def __init__(self, P: Any, R: Any, check_finite: bool = True):
        self._model = build(P, R, check_finite)

    @property
    def S(self) -> int:
        return self._model.S

    @property
    def A(self) -> int:
        return self._model.A

    @property
    def dtype(self) -> np.dtype:
        return self._model.dtype

    def __repr__(self) -> str:
        kind = "sparse" if self._model.sparse else "dense"
        return f"MDP(S={self.S}, A={self.A}, {kind} {np.dtype(self.dtype).name} P)"


def _model(P: Any, R: Any, check_finite: bool = True) -> Model:
    """The validated model of (P, R), or the one an :class:`MDP` already holds."""
    if isinstance(P, MDP):
        if R is not None:
            raise ValueError("R must be None when P is an MDP (the MDP already holds its rewards)")
        return P._model
    return build(P, R, check_finite)


def _solver(model: Model):
    return drv.SOLVE_SPARSE if model.sparse else drv.SOLVE_DENSE


def _cpu_backend(model: Model, backend: str | None, what: str) -> str:
    be = _solver(model).resolve(backend, model.P)
    if be == "cuda":
        raise BackendUnavailableError(f"{what} runs on the CPU backends only; value_iteration has a cuda kernel")
    return be


def _check_gamma(gamma: Any, max_iter: Any, default_iter: int = 10_000) -> tuple[float, int]:
    gamma = check_scalar(gamma, "gamma", low=0.0, high=1.0)
    if gamma == 1.0 and max_iter is None:
        raise ValueError("gamma=1 needs an explicit max_iter (the undiscounted backup need not converge)")
    max_iter = default_iter if max_iter is None else check_int(max_iter, "max_iter", min_value=1)
    return gamma, max_iter


def _check_V(V: Any, S: int, name: str = "V0") -> np.ndarray:
    if V is None:
        raise TypeError(f"{name} must be an array of {S} state values, got None")
    V = check_array(V, name, ndim=1, dtype=np.float64)
    if V.shape != (S,):
        raise ValueError(f"{name} must have shape ({S},), got {V.shape}")
    return V


def _check_policy(policy: Any, S: int, A: int) -> np.ndarray:
    if policy is None:
        raise TypeError(f"policy must be an integer array of shape ({S},), got None")
    pol = np.asarray(policy)
    if pol.shape != (S,) or pol.dtype.kind not in "iu":
        raise ValueError(f"policy must be an integer array of shape ({S},), got {pol.dtype} {pol.shape}")
    if pol.size and (pol.min() < 0 or pol.max() >= A):
        raise ValueError(f"policy entries must be actions in [0, {A}), got range [{pol.min()}, {pol.max()}]")
    return pol.astype(np.int64)


def value_iteration(P: Any, R: Any, gamma: float, epsilon: float = 1e-6, max_iter: int | None = None,
                    V0: Any = None, method: str = "jacobi", backend: str | None = None,
                    check_finite: bool = True) -> MDPResult:
    """Value iteration V <- max_a [R + gamma P V] until the greedy policy is epsilon-optimal
    (Sutton & Barto 2018, section 4.4).

    Parameters
    ----------
    P : ndarray (A, S, S) (or nested lists), list of A scipy.sparse (S, S), or an :class:`MDP`
        P[a][s, s'] = P(s' | s, a). float32 P is read as float32 (half the bytes per
        sweep); sums are accumulated in float64 on every backend. Checked in one compiled
        pass (finite, >= 0, rows sum to 1, CSR structure); dense P is read in place, sparse P
        copied once by that pass into a state-major CSR (a state's actions adjacent; int32
        indices where they fit, values in their own precision), kept on an :class:`MDP`.
    R : ndarray (S, A), (S,) or (A, S, S), or None when P is an MDP
        Reward; (A, S, S) is reduced once to the expected reward.
    gamma : float in [0, 1]; gamma=1 needs ``max_iter``.
    epsilon : stop when sup|V_{k+1} - V_k| < epsilon (1 - gamma) / (2 gamma); the test runs
        inside the compiled loop.
    max_iter : most sweeps (default 10 000).
    V0 : initial values (default zeros).
    method : "jacobi" (parallel over states) or "gauss-seidel" (in place, serial over
        states because state s reads the new values of states < s).
    backend : None (the configured default, see :func:`pyml.config_context`), "auto",
        "python", "numba", "cpp" or "cuda" (Jacobi only; CuPy P stays on the GPU).
    check_finite : refuse NaN/inf in R (P is always checked: probabilities are finite).

    Returns
    -------
    MDPResult with V (dtype of P), policy, n_iter and residuals.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> P = np.array([[[1.0, 0.0], [0.0, 1.0]]])      # one action, two self-loops
    >>> R = np.array([[1.0], [0.0]])
    >>> res = pyml.value_iteration(P, R, gamma=0.9, epsilon=1e-9)
    >>> np.round(res.V, 6).tolist()
    [10.0, 0.0]
    """
    if method not in ("jacobi", "gauss-seidel"):
        raise ValueError(f"method must be 'jacobi' or 'gauss-seidel', got {method!r}")
    gamma, max_iter = _check_gamma(gamma, max_iter)
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)
    model = _model(P, R, check_finite)
    V0 = np.zeros(model.S) if V0 is None else _check_V(V0, model.S)
    be = _solver(model).resolve(backend, model.P)
    if be == "cuda" and method == "gauss-seidel":
        # Gauss-Seidel orders the states one after another; on the GPU it would run one
        # state at a time, so only the Jacobi sweep is offered there.
        raise ValueError("method='gauss-seidel' is not available on the cuda backend; use 'jacobi'")
    V, policy, n, res = drv.solve(model, be, gamma, V0, drv.threshold(epsilon, gamma), max_iter,
                                  method == "gauss-seidel")
    if not is_cupy(model.P):  # outputs follow inputs: host in, host out
        V, policy = to_numpy(V), to_numpy(policy)
    return MDPResult(V.astype(model.dtype), policy, n, res)


def policy_evaluation(P: Any, R: Any, gamma: float, policy: Any, method: str = "exact",
                      epsilon: float = 1e-8, max_iter: int | None = None, backend: str | None = None,
                      check_finite: bool = True) -> np.ndarray:
    """V^pi: solve (I - gamma P_pi) V = R_pi ("exact") or iterate the fixed-policy backup
    (Sutton & Barto 2018, section 4.1).

    Examples
    --------
    >>> import numpy as np, pyml
    >>> P = np.array([[[0.0, 1.0], [0.0, 1.0]]]); R = np.array([[1.0], [2.0]])
    >>> np.round(pyml.policy_evaluation(P, R, 0.5, np.array([0, 0])), 6).tolist()
    [3.0, 4.0]
    """
    if method not in ("exact", "iterative"):
        raise ValueError(f"method must be 'exact' or 'iterative', got {method!r}")
    gamma, max_iter = _check_gamma(gamma, max_iter, 100_000)
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)
    if method == "exact" and gamma == 1.0:
        raise ValueError("exact policy evaluation needs gamma < 1 (I - P_pi is singular)")
    model = _model(P, R, check_finite)
    pol = _check_policy(policy, model.S, model.A)
    if method == "exact":
        return drv.evaluate_exact(model, gamma, pol).astype(model.dtype)
    be = _cpu_backend(model, backend, "policy_evaluation")
    V = drv.solve(model, be, gamma, np.zeros(model.S), drv.threshold(epsilon, gamma), max_iter,
                  False, pol)[0]
    return V.astype(model.dtype)


def policy_iteration(P: Any, R: Any, gamma: float, evaluation: str = "exact", epsilon: float = 1e-8,
                     max_iter: int = 1000, backend: str | None = None,
                     check_finite: bool = True) -> MDPResult:
    """Howard's policy iteration: evaluate the policy, improve greedily, until stable
    (Sutton & Barto 2018, section 4.3).

    Examples
    --------
    >>> import numpy as np, pyml
    >>> P = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    >>> R = np.array([[0.0, 1.0], [2.0, 0.0]])
    >>> pyml.policy_iteration(P, R, 0.9).policy.tolist()
    [1, 0]
    """
    if evaluation not in ("exact", "iterative"):
        raise ValueError(f"evaluation must be 'exact' or 'iterative', got {evaluation!r}")
    gamma = check_scalar(gamma, "gamma", low=0.0, high=1.0, high_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", min_value=1)
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)
    model = _model(P, R, check_finite)
    be = _cpu_backend(model, backend, "policy_iteration")
    V, policy, n = drv.policy_iteration(model, be, gamma, evaluation == "exact",
                                        drv.threshold(epsilon, gamma), max_iter)
    return MDPResult(V.astype(model.dtype), policy, n, np.zeros(0))


def q_values(P: Any, R: Any, gamma: float, V: Any, backend: str | None = None,
             check_finite: bool = True) -> np.ndarray:
    """Q(s, a) = R(s, a) + gamma sum_s' P(s'|s,a) V(s') as (S, A).

    "python" runs the reference loops; other backends one vectorised BLAS/SciPy product.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> P = np.array([[[1.0, 0.0], [0.0, 1.0]]]); R = np.array([[1.0], [0.0]])
    >>> pyml.q_values(P, R, 0.9, np.array([10.0, 0.0])).tolist()
    [[10.0], [0.0]]
    """
    gamma = check_scalar(gamma, "gamma", low=0.0, high=1.0)
    model = _model(P, R, check_finite)
    V = _check_V(V, model.S, "V")
    if _cpu_backend(model, backend, "q_values") == "python":
        Pin = [model.matrix(a) for a in range(model.A)] if model.sparse else model.P
        return ref_q_values(Pin, model.R, gamma, V)
    return model.R + gamma * model.expected_next(V)


def greedy_policy(P: Any, R: Any, gamma: float, V: Any, backend: str | None = None,
                  check_finite: bool = True) -> np.ndarray:
    """argmax_a Q(s, a) (first action on ties), int64 (S,).

    Examples
    --------
    >>> import numpy as np, pyml
    >>> P = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    >>> pyml.greedy_policy(P, np.array([[0.0, 1.0], [2.0, 0.0]]), 0.9, np.zeros(2)).tolist()
    [1, 0]
    """
    return np.argmax(q_values(P, R, gamma, V, backend, check_finite), axis=1).astype(np.int64)


def from_gymnasium(env: Any) -> tuple[np.ndarray, np.ndarray]:
    """(P (A, S, S), R (S, A)) from a toy-text environment's ``env.unwrapped.P``.

    States reached by a transition flagged ``done`` are made absorbing with zero reward
    (the episode has ended there), so value iteration sees a proper MDP.
    """
    table = getattr(getattr(env, "unwrapped", env), "P", None)
    if not isinstance(table, dict) or not table:
        raise TypeError("env must be a gymnasium toy-text environment with a transition table env.unwrapped.P")
    S = len(table)
    A = len(table[0])
    P = np.zeros((A, S, S))
    R = np.zeros((S, A))
    terminal = np.zeros(S, bool)
    for s, actions in table.items():
        for a, outcomes in actions.items():
            for prob, s_next, reward, done in outcomes:
                P[a, s, s_next] += prob
                R[s, a] += prob * reward
                terminal[s_next] |= bool(done)
    for s in np.flatnonzero(terminal):
        P[:, s, :] = 0.0
        P[:, s, s] = 1.0
        R[s, :] = 0.0
    return P, R
