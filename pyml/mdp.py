"""Value iteration, policy iteration and policy evaluation on dense or sparse MDPs.

Bellman optimality backup (Sutton & Barto 2018, section 4.4, eq. 4.10):
V(s) = max_a [R(s,a) + gamma sum_s' P(s'|s,a) V(s')]. API layer: validation once, then
the shared driver (:mod:`pyml._mdp_driver`) calls one sweep kernel per backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import _mdp_driver as drv
from ._backend import BackendUnavailableError, is_cupy, to_numpy
from ._validation import check_array, check_csr, check_int, check_scalar

__all__ = ["MDP", "MDPResult", "value_iteration", "policy_iteration", "policy_evaluation", "q_values",
           "greedy_policy", "from_gymnasium"]


@dataclass
class MDPResult:
    """V (S,), greedy policy (S,) int64, sweeps (or improvement steps) done, sup-norm residual per sweep."""

    V: np.ndarray
    policy: np.ndarray
    n_iter: int
    residuals: np.ndarray


def _row_tol(dtype: np.dtype, S: int) -> float:
    # A row normalised in `dtype` sums to 1 within about S rounding errors.
    return 10.0 * float(np.finfo(dtype).eps) * max(S, 10)


def _check_model(P: Any, R: Any, *, check_finite: bool = True) -> drv.Model:
    """Validate P (dense (A,S,S) or list of A CSR (S,S)) and R ((S,A), (S,) or (A,S,S))."""
    if isinstance(P, (list, tuple)):
        if len(P) == 0:
            raise ValueError("P must hold at least one action, got an empty list")
        mats = [check_csr(Pa, f"P[{a}]", check_finite=check_finite) for a, Pa in enumerate(P)]
        S = mats[0].shape[0]
        if S == 0:
            raise ValueError("P must have at least one state, got S=0")
        dtype = np.dtype(np.float32) if all(m.dtype == np.float32 for m in mats) else np.dtype(np.float64)
        for a, m in enumerate(mats):
            if m.shape != (S, S):
                raise ValueError(f"P[{a}] must have shape ({S}, {S}) like P[0], got {m.shape}")
            if m.nnz and m.data.min() < 0:
                raise ValueError(f"P[{a}] has a negative transition probability ({m.data.min():g})")
            sums = np.asarray(m.sum(axis=1)).ravel()
            bad = np.flatnonzero(np.abs(sums - 1.0) > _row_tol(dtype, S))
            if bad.size:
                raise ValueError(f"P[{a}] row {bad[0]} sums to {sums[bad[0]]:.9g}, expected 1 "
                                 f"(tolerance {_row_tol(dtype, S):.1e})")
        A = len(mats)
        import scipy.sparse as sp

        # State-major rows (s*A + a) so one state's actions are adjacent: the max over
        # actions is fused with the backup and each sweep streams the matrix once.
        perm = (np.arange(S)[:, None] + S * np.arange(A)[None, :]).ravel()
        full = sp.vstack([m.astype(dtype) for m in mats], format="csr")[perm]
        model = drv.Model(S, A, np.zeros((S, A)), dtype, indptr=full.indptr.astype(np.int64),
                          indices=full.indices.astype(np.int32), data=np.ascontiguousarray(full.data))
        P_dense = None
    else:
        P_dense = check_array(P, "P", ndim=3, check_finite=check_finite)
        A, S, S2 = P_dense.shape
        if S != S2:
            raise ValueError(f"P must have shape (A, S, S), got {P_dense.shape}")
        if P_dense.min() < 0:
            bad = tuple(int(i) for i in np.argwhere(P_dense < 0)[0])
            raise ValueError(f"P has a negative transition probability at {bad}")
        sums = P_dense.sum(axis=2, dtype=np.float64)
        bad = np.argwhere(np.abs(sums - 1.0) > _row_tol(P_dense.dtype, S))
        if bad.size:
            a, s = (int(i) for i in bad[0])
            raise ValueError(f"P[{a}, {s}, :] sums to {sums[a, s]:.9g}, expected 1 "
                             f"(tolerance {_row_tol(P_dense.dtype, S):.1e})")
        model = drv.Model(S, A, np.zeros((S, A)), P_dense.dtype, P=P_dense)
    R = check_array(R, "R", ndim=(1, 2, 3), dtype=np.float64, check_finite=check_finite)
    if R.ndim == 1:
        if R.shape != (S,):
            raise ValueError(f"R of shape (S,) must have S={S} entries, got {R.shape}")
        model.R = np.repeat(R[:, None], A, axis=1)
    elif R.ndim == 2:
        if R.shape != (S, A):
            raise ValueError(f"R must have shape (S, A) = ({S}, {A}), got {R.shape}")
        model.R = np.ascontiguousarray(R)
    else:
        if R.shape != (A, S, S):
            raise ValueError(f"R of shape (A, S, S) must be ({A}, {S}, {S}), got {R.shape}")
        # Expected reward sum_s' P(s'|s,a) R(a,s,s'), computed once.
        if model.sparse:
            full = _full_csr(model)
            Rr = R.reshape(A * S, S)[np.repeat(np.arange(S) + 0, A) + S * np.tile(np.arange(A), S)]
            model.R = np.asarray(full.multiply(Rr).sum(axis=1)).reshape(S, A)
        else:
            model.R = np.ascontiguousarray(np.einsum("ast,ast->sa", P_dense, R, dtype=np.float64))
    return model


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
        self._model = _check_model(P, R, check_finite=check_finite)

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


def _model(P: Any, R: Any, check_finite: bool = True) -> drv.Model:
    """The validated model of (P, R), or the one an :class:`MDP` already holds."""
    if isinstance(P, MDP):
        if R is not None:
            raise ValueError("R must be None when P is an MDP (the MDP already holds its rewards)")
        return P._model
    return _check_model(P, R, check_finite=check_finite)


def _cpu_backend(model: drv.Model, backend: str, what: str) -> str:
    be = model.table().resolve(backend)
    if be == "cuda":
        raise BackendUnavailableError(f"{what} runs on the CPU backends only; value_iteration has a cuda kernel")
    return be


def _full_csr(model: drv.Model):
    import scipy.sparse as sp

    return sp.csr_matrix((model.data, model.indices, model.indptr), shape=(model.S * model.A, model.S))


def _check_gamma(gamma: Any, max_iter: Any, default_iter: int = 10_000) -> tuple[float, int]:
    gamma = check_scalar(gamma, "gamma", low=0.0, high=1.0)
    if gamma == 1.0 and max_iter is None:
        raise ValueError("gamma=1 needs an explicit max_iter (the undiscounted backup need not converge)")
    max_iter = default_iter if max_iter is None else check_int(max_iter, "max_iter", min_value=1)
    return gamma, max_iter


def _check_V(V: Any, S: int, name: str = "V0") -> np.ndarray:
    V = check_array(V, name, ndim=1, dtype=np.float64)
    if V.shape != (S,):
        raise ValueError(f"{name} must have shape ({S},), got {V.shape}")
    return V


def _check_policy(policy: Any, S: int, A: int) -> np.ndarray:
    pol = np.asarray(policy)
    if pol.shape != (S,) or pol.dtype.kind not in "iu":
        raise ValueError(f"policy must be an integer array of shape ({S},), got {pol.dtype} {pol.shape}")
    if pol.size and (pol.min() < 0 or pol.max() >= A):
        raise ValueError(f"policy entries must be actions in [0, {A}), got range [{pol.min()}, {pol.max()}]")
    return pol.astype(np.int64)


def value_iteration(P: Any, R: Any, gamma: float, epsilon: float = 1e-6, max_iter: int | None = None,
                    V0: Any = None, method: str = "jacobi", backend: str = "auto",
                    check_finite: bool = True) -> MDPResult:
    """Value iteration V <- max_a [R + gamma P V] until the greedy policy is epsilon-optimal.

    Parameters
    ----------
    P : ndarray (A, S, S) or list of A scipy.sparse CSR (S, S)
        P[a][s, s'] = P(s' | s, a). float32 P is read as float32 (half the bytes per
        sweep); sums are accumulated in float64 on every backend.
    R : ndarray (S, A), (S,) or (A, S, S)
        Reward; (A, S, S) is reduced once to the expected reward.
    gamma : float in [0, 1]; gamma=1 needs ``max_iter``.
    epsilon : stop when sup|V_{k+1} - V_k| < epsilon (1 - gamma) / (2 gamma).
    max_iter : most sweeps (default 10 000).
    V0 : initial values (default zeros).
    method : "jacobi" (parallel over states) or "gauss-seidel" (in place, serial over
        states because state s reads the new values of states < s).
    backend : "auto", "python", "numba", "cpp" or "cuda" (Jacobi only; CuPy P stays on the GPU).

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
    model = _model(P, R, check_finite)
    gamma, max_iter = _check_gamma(gamma, max_iter)
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)
    V0 = np.zeros(model.S) if V0 is None else _check_V(V0, model.S)
    on_gpu = is_cupy(model.P)
    be = model.table().resolve(backend, model.P)
    run = model.to_device(be == "cuda")
    V, policy, n, res = drv.sweeps(run, be, gamma, V0, drv.threshold(epsilon, gamma), max_iter,
                                   method == "gauss-seidel")
    if not on_gpu:  # outputs follow inputs: host in, host out
        V, policy = to_numpy(V), to_numpy(policy)
    return MDPResult(V.astype(model.dtype), policy, n, res)


def policy_evaluation(P: Any, R: Any, gamma: float, policy: Any, method: str = "exact",
                      epsilon: float = 1e-8, max_iter: int | None = None, backend: str = "auto",
                      check_finite: bool = True) -> np.ndarray:
    """V^pi: solve (I - gamma P_pi) V = R_pi ("exact") or iterate the fixed-policy backup.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> P = np.array([[[0.0, 1.0], [0.0, 1.0]]]); R = np.array([[1.0], [2.0]])
    >>> np.round(pyml.policy_evaluation(P, R, 0.5, np.array([0, 0])), 6).tolist()
    [3.0, 4.0]
    """
    model = _model(P, R, check_finite)
    gamma, max_iter = _check_gamma(gamma, max_iter, 100_000)
    pol = _check_policy(policy, model.S, model.A)
    if method == "exact":
        if gamma == 1.0:
            raise ValueError("exact policy evaluation needs gamma < 1 (I - P_pi is singular)")
        return drv.evaluate_exact(model, model.R, gamma, pol).astype(model.dtype)
    if method != "iterative":
        raise ValueError(f"method must be 'exact' or 'iterative', got {method!r}")
    be = _cpu_backend(model, backend, "policy_evaluation")
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)
    V = drv.sweeps(model, be, gamma, np.zeros(model.S), drv.threshold(epsilon, gamma), max_iter,
                   False, pol)[0]
    return V.astype(model.dtype)


def policy_iteration(P: Any, R: Any, gamma: float, evaluation: str = "exact", epsilon: float = 1e-8,
                     max_iter: int = 1000, backend: str = "auto",
                     check_finite: bool = True) -> MDPResult:
    """Howard's policy iteration: evaluate the policy, improve greedily, until stable.

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
    model = _model(P, R, check_finite)
    gamma = check_scalar(gamma, "gamma", low=0.0, high=1.0, high_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", min_value=1)
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)
    be = _cpu_backend(model, backend, "policy_iteration")
    V, policy, n = drv.policy_iteration(model, be, gamma, evaluation == "exact",
                                        drv.threshold(epsilon, gamma), max_iter)
    return MDPResult(V.astype(model.dtype), policy, n, np.zeros(0))


def q_values(P: Any, R: Any, gamma: float, V: Any, backend: str = "auto") -> np.ndarray:
    """Q(s, a) = R(s, a) + gamma sum_s' P(s'|s,a) V(s') as (S, A).

    "python" runs the reference loops; other backends one vectorised BLAS/SciPy product.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> P = np.array([[[1.0, 0.0], [0.0, 1.0]]]); R = np.array([[1.0], [0.0]])
    >>> pyml.q_values(P, R, 0.9, np.array([10.0, 0.0])).tolist()
    [[10.0], [0.0]]
    """
    model = _model(P, R)
    gamma = check_scalar(gamma, "gamma", low=0.0, high=1.0)
    V = _check_V(V, model.S, "V")
    if model.table().resolve(backend) == "python":
        from .reference.mdp import q_values as ref

        Pin = [_full_csr(model)[a::model.A] for a in range(model.A)] if model.sparse else model.P
        return ref(Pin, model.R, gamma, V)
    return model.R + gamma * model.expected_next(V)


def greedy_policy(P: Any, R: Any, gamma: float, V: Any, backend: str = "auto") -> np.ndarray:
    """argmax_a Q(s, a) (first action on ties), int64 (S,).

    Examples
    --------
    >>> import numpy as np, pyml
    >>> P = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    >>> pyml.greedy_policy(P, np.array([[0.0, 1.0], [2.0, 0.0]]), 0.9, np.zeros(2)).tolist()
    [1, 0]
    """
    return np.argmax(q_values(P, R, gamma, V, backend), axis=1).astype(np.int64)


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
