"""Value iteration / policy iteration: every backend against the reference (pyml/reference/mdp.py)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import scipy.sparse as sp

import pyml
from pyml.reference import mdp as ref

from conftest import assert_close, backend_params

BACKENDS = backend_params(("python", "numba", "cpp", "cuda"))
CPU_BACKENDS = backend_params(("python", "numba", "cpp"))
GAMMA, SWEEPS = 0.8, 25


def random_mdp(S, A, dtype, sparse, seed=0):
    rng = np.random.default_rng(seed + 7 * S + A)
    P = rng.random((A, S, S))
    if sparse:  # about 3 successors per (s, a), always at least one
        P = np.where(rng.random((A, S, S)) < 3.0 / S, P, 0.0)
        P[:, np.arange(S), rng.integers(0, S, S)] += 0.5
    P /= P.sum(axis=2, keepdims=True)
    R = rng.standard_normal((S, A))
    if sparse:
        return [sp.csr_matrix(P[a].astype(dtype)) for a in range(A)], R
    return P.astype(dtype), R


def as64(P):
    return [m.astype(np.float64) for m in P] if isinstance(P, list) else P.astype(np.float64)


def numpy_sweeps(P, R, gamma, n, dtype):
    """The 'naive' implementation in precision dtype: one vectorised product per sweep."""
    V = np.zeros(R.shape[0], dtype)
    for _ in range(n):
        PV = np.stack([m @ V for m in P], axis=1) if isinstance(P, list) else np.einsum("ast,t->sa", P, V)
        V = (R.astype(dtype) + dtype(gamma) * PV).max(axis=1).astype(dtype)
    return V


@lru_cache(maxsize=None)
def expected(S, A, dtype, sparse):
    P, R = random_mdp(S, A, dtype, sparse)
    V64, pol64, _ = ref.value_iteration(as64(P), R, GAMMA, epsilon=1e-300, max_iter=SWEEPS)
    return V64, pol64, numpy_sweeps(P, R, GAMMA, SWEEPS, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("S,A", [(1, 1), (7, 5), (113, 1), (113, 5)])
def test_value_iteration_matches_reference(backend, sparse, dtype, S, A):
    if backend == "python" and S == 113 and A == 5 and sparse is False and dtype == np.float32:
        pytest.skip("python backend: one dense 113x5 case is enough")
    P, R = random_mdp(S, A, dtype, sparse)
    V64, pol64, naive = expected(S, A, dtype, sparse)
    res = pyml.value_iteration(P, R, GAMMA, epsilon=1e-300, max_iter=SWEEPS, backend=backend)
    assert res.n_iter == SWEEPS and res.residuals.shape == (SWEEPS,)
    assert res.V.dtype == dtype
    assert_close(res.V, V64, naive, dtype, f"V {backend}")
    if dtype == np.float64:
        np.testing.assert_array_equal(res.policy, pol64)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_gauss_seidel_and_policy_iteration_agree(backend, sparse):
    P, R = random_mdp(40, 4, np.float64, sparse, seed=3)
    jac = pyml.value_iteration(P, R, 0.9, epsilon=1e-9, backend=backend)
    gs = pyml.value_iteration(P, R, 0.9, epsilon=1e-9, method="gauss-seidel", backend=backend)
    pi = pyml.policy_iteration(P, R, 0.9, backend=backend)
    pi_it = pyml.policy_iteration(P, R, 0.9, evaluation="iterative", backend=backend)
    assert gs.n_iter < jac.n_iter
    for other in (gs, pi, pi_it):
        np.testing.assert_allclose(other.V, jac.V, atol=1e-8)
        np.testing.assert_array_equal(other.policy, jac.policy)
    V_exact = pyml.policy_evaluation(P, R, 0.9, pi.policy)
    V_iter = pyml.policy_evaluation(P, R, 0.9, pi.policy, method="iterative", backend=backend)
    np.testing.assert_allclose(V_iter, V_exact, atol=1e-7)
    np.testing.assert_allclose(V_exact, pi.V, atol=1e-10)
    Q = pyml.q_values(P, R, 0.9, pi.V, backend=backend)
    np.testing.assert_allclose(Q.max(axis=1), pi.V, atol=1e-9)
    np.testing.assert_array_equal(pyml.greedy_policy(P, R, 0.9, pi.V, backend=backend), pi.policy)


def test_q_values_reference_matches_vectorised():
    P, R = random_mdp(9, 3, np.float64, True)
    V = np.arange(9.0)
    np.testing.assert_allclose(pyml.q_values(P, R, 0.7, V, backend="python"),
                               pyml.q_values(P, R, 0.7, V, backend="numba"), atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_two_state_self_loop_converges_to_ten(backend):
    P = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    R = np.array([[1.0], [0.0]])
    res = pyml.value_iteration(P, R, 0.9, epsilon=1e-10, backend=backend)
    np.testing.assert_allclose(res.V, [10.0, 0.0], atol=1e-9)
    assert np.all(np.diff(res.residuals) <= 0)


def test_reward_shapes_are_equivalent():
    P, R_sa = random_mdp(6, 3, np.float64, False)
    R_sas = np.broadcast_to(R_sa.T[:, :, None], (3, 6, 6)).copy()
    a = pyml.value_iteration(P, R_sa, 0.9).V
    np.testing.assert_allclose(pyml.value_iteration(P, R_sas, 0.9).V, a, atol=1e-12)
    Ps = [sp.csr_matrix(P[i]) for i in range(3)]
    np.testing.assert_allclose(pyml.value_iteration(Ps, R_sas, 0.9).V, a, atol=1e-12)
    r = np.arange(6.0)
    np.testing.assert_allclose(pyml.value_iteration(P, r, 0.9).V,
                               pyml.value_iteration(P, np.repeat(r[:, None], 3, 1), 0.9).V)


def test_epsilon_optimal_stopping_rule():
    P, R = random_mdp(30, 3, np.float64, False)
    eps, gamma = 1e-3, 0.95
    res = pyml.value_iteration(P, R, gamma, epsilon=eps)
    assert res.residuals[-1] < eps * (1 - gamma) / (2 * gamma) <= res.residuals[-2]
    V_star = pyml.policy_iteration(P, R, gamma).V
    V_pi = pyml.policy_evaluation(P, R, gamma, res.policy)
    assert np.max(V_star - V_pi) <= eps


def test_gamma_one_needs_max_iter():
    P, R = random_mdp(5, 2, np.float64, False)
    with pytest.raises(ValueError, match="max_iter"):
        pyml.value_iteration(P, R, 1.0)
    assert pyml.value_iteration(P, R, 1.0, max_iter=3).n_iter == 3


def test_bad_input_and_no_mutation():
    P, R = random_mdp(5, 2, np.float64, False)
    P0, R0 = P.copy(), R.copy()
    pyml.value_iteration(P, R, 0.9, method="gauss-seidel")
    pyml.policy_iteration(P, R, 0.9)
    np.testing.assert_array_equal(P, P0)
    np.testing.assert_array_equal(R, R0)
    neg = P.copy(); neg[0, 1, 0] -= 2.0; neg[0, 1, 1] += 2.0
    with pytest.raises(ValueError, match="negative"):
        pyml.value_iteration(neg, R, 0.9)
    bad = P.copy(); bad[1, 2, 3] += 1e-3
    with pytest.raises(ValueError, match=r"P\[1, 2, :\] sums to"):
        pyml.value_iteration(bad, R, 0.9)
    with pytest.raises(ValueError, match="shape"):
        pyml.value_iteration(P, R[:4], 0.9)
    with pytest.raises(ValueError, match=r"\(A, S, S\)"):
        pyml.value_iteration(P[:, :, :4], R, 0.9)
    for g in (-0.1, 1.5):
        with pytest.raises(ValueError, match="gamma"):
            pyml.value_iteration(P, R, g)
    Rn = R.copy(); Rn[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pyml.value_iteration(P, Rn, 0.9)
    with pytest.raises(ValueError, match="empty"):
        pyml.value_iteration(np.zeros((1, 0, 0)), np.zeros((0, 1)), 0.9)
    with pytest.raises(ValueError, match="method"):
        pyml.value_iteration(P, R, 0.9, method="sor")
    with pytest.raises(ValueError, match="policy"):
        pyml.policy_evaluation(P, R, 0.9, np.array([0, 1, 2, 0, 0]))
    Ps = [sp.csr_matrix(P[0]), sp.csr_matrix(P[1][:4, :4])]
    with pytest.raises(ValueError, match="shape"):
        pyml.value_iteration(Ps, R, 0.9)
    with pytest.raises(TypeError):
        pyml.value_iteration(P.astype(complex), R, 0.9)


def test_float32_tolerance_is_stated_for_rows():
    P, R = random_mdp(50, 2, np.float32, False)
    assert pyml.value_iteration(P, R, 0.9).V.dtype == np.float32


def test_from_gymnasium_frozenlake_matches_value_iteration():
    gym = pytest.importorskip("gymnasium")
    env = gym.make("FrozenLake-v1", is_slippery=True)
    P, R = pyml.mdp.from_gymnasium(env)
    assert P.shape == (4, 16, 16) and R.shape == (16, 4)
    np.testing.assert_allclose(P.sum(axis=2), 1.0)
    res = pyml.value_iteration(P, R, 0.99, epsilon=1e-8)
    # The goal (15) and holes are absorbing with zero value; the start has a known value.
    assert res.V[15] == 0.0 and 0.5 < res.V[14] <= 1.0 and 0.0 < res.V[0] < 1.0
    pi = pyml.policy_iteration(P, R, 0.99)
    np.testing.assert_allclose(pi.V, res.V, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not pyml.backends()["cuda"] is None, reason="needs cupy and a CUDA device")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_value_iteration_cupy_in_cupy_out(dtype):
    import cupy as cp

    P, R = random_mdp(113, 5, dtype, False)
    want = pyml.value_iteration(P, R, GAMMA, epsilon=1e-300, max_iter=SWEEPS, backend="cpp")
    got = pyml.value_iteration(cp.asarray(P), R, GAMMA, epsilon=1e-300, max_iter=SWEEPS)
    assert isinstance(got.V, cp.ndarray)
    V64, _, naive = expected(113, 5, dtype, False)
    assert_close(got.V, V64, naive, dtype, "V cuda")
    np.testing.assert_array_equal(cp.asnumpy(got.policy), want.policy)
    with pytest.raises(ValueError, match="gauss-seidel"):
        pyml.value_iteration(cp.asarray(P), R, GAMMA, method="gauss-seidel")

