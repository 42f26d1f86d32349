"""The mdp loop's input contract: the one compiled check pass over P (every backend's check
kernel equal to the reference check), corrupt CSR and NaN refused, 64-bit indices kept, clear
errors, the configured backend as default, P read in place (python) or laid out state-major once
(cpp, numba: equal to SciPy's permuted rows), the full-size copy budget, safe direct kernel calls."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import pyml
from pyml import _backend, _mdp_driver as drv
from pyml._mdp_model import row_tolerance
from pyml.mdp import MDP
from pyml.reference import mdp as ref

from conftest import backend_params
from test_mdp import CPU_BACKENDS, random_mdp


# ------------------------------------------------------------------ model check and layout


def corrupt_csr_cases(S=6):
    """(name, indptr, indices, data, expected status) of one (S, S) CSR matrix."""
    ip = np.arange(0, 2 * S + 1, 2)
    ix = np.tile([0, 1], S)
    d = np.full(2 * S, 0.5)
    cases = [("valid", ip, ix, d, 0)]
    big = ix.copy(); big[5] = S
    neg = ix.copy(); neg[3] = -1
    dec = ip.copy(); dec[2] = 1  # row 1 ends before it starts
    start = ip.copy(); start[0] = 1
    past = ip.copy(); past[-1] = 10**6
    nan = d.copy(); nan[4] = np.nan
    minus = d.copy(); minus[6], minus[7] = -0.5, 1.5
    off = d.copy(); off[9] = 0.6
    cases += [("index >= S", ip, big, d, 5), ("negative index", ip, neg, d, 5),
              ("decreasing indptr", dec, ix, d, 4), ("indptr not from 0", start, ix, d, 4),
              ("indptr past the end", past, ix, d, 4), ("NaN", ip, ix, nan, 1),
              ("negative", ip, ix, minus, 2), ("row sum", ip, ix, off, 3)]
    return cases


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("itype", [np.int32, np.int64])
def test_check_csr_kernels_agree_with_reference(backend, itype):
    for name, ip, ix, d, status in corrupt_csr_cases():
        ip, ix = ip.astype(itype), ix.astype(itype)
        want = ref.check_csr(ip, ix, d, 6, 1e-12)
        got = drv.CHECK_CSR.get(backend)(ip, ix, d, 6, 1e-12)
        assert want[0] == status, name
        assert tuple(got) == pytest.approx(tuple(want), nan_ok=True), (name, got, want)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_dense_kernels_agree_with_reference(backend, dtype):
    P, _ = random_mdp(7, 3, dtype, False)
    tol = row_tolerance(np.dtype(dtype), 7)
    for where, value, status in (((0, 0, 0), None, 0), ((2, 3, 4), np.nan, 1), ((1, 6, 0), np.inf, 1),
                                 ((1, 2, 5), -1e-3, 2), ((2, 0, 6), 0.25, 3)):
        bad = P.copy()
        if value is not None:
            bad[where] = value if status != 3 else bad[where] + value
        want = ref.check_dense(bad, tol)
        got = drv.CHECK_DENSE.get(backend)(bad, tol)
        assert want[0] == status
        assert tuple(got) == pytest.approx(tuple(want), nan_ok=True, rel=1e-6)


def _csr(ip, ix, d, S):
    m = sp.csr_matrix((np.full(2 * S, 0.5), np.tile([0, 1], S), np.arange(0, 2 * S + 1, 2)), shape=(S, S))
    m.indptr, m.indices, m.data = ip, ix, d  # corrupt after construction, as a user could
    return m


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_corrupt_csr_is_refused_before_any_kernel(backend):
    S = 6
    R = np.zeros((S, 2))
    for name, ip, ix, d, status in corrupt_csr_cases(S)[1:]:
        ok = _csr(*corrupt_csr_cases(S)[0][1:4], S)
        with pytest.raises(ValueError, match=r"P\[1\]"):
            pyml.value_iteration([ok, _csr(ip, ix, d, S)], R, 0.9, backend=backend,
                                 check_finite=False)


def test_int64_indices_are_kept_and_checked_not_narrowed():
    m = _csr(np.array([0, 1], np.int64), np.array([0], np.int64), np.array([1.0]), 1)
    model = MDP([m], np.zeros((1, 1)))._model
    assert model.csr[0][0].dtype == np.int64 and model.csr[1][0].dtype == np.int64
    # an indptr beyond 2**31 must be seen as such, not wrapped to a negative int32
    m.indptr = np.array([0, 2**31 + 5], np.int64)
    with pytest.raises(ValueError, match="indptr"):
        pyml.value_iteration([m], np.zeros((1, 1)), 0.9)
    m.indptr, m.indices = np.array([0, 1], np.int64), np.array([2**31 + 5], np.int64)
    with pytest.raises(ValueError, match="outside"):
        pyml.value_iteration([m], np.zeros((1, 1)), 0.9)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_nan_in_P_never_passes_the_row_sum_check(sparse):
    P, R = random_mdp(5, 2, np.float64, sparse)
    if sparse:
        P[1].data[2] = np.nan
    else:
        P[1, 2, 3] = np.nan
    for check_finite in (True, False):
        with pytest.raises(ValueError, match="NaN"):
            pyml.value_iteration(P, R, 0.9, check_finite=check_finite)


def test_gamma_zero_nested_lists_and_clear_errors():
    P, R = random_mdp(6, 3, np.float64, False)
    res = pyml.value_iteration(P, R, 0.0)
    np.testing.assert_array_equal(res.V, R.max(axis=1))
    assert res.n_iter == 1
    np.testing.assert_allclose(pyml.policy_iteration(P, R, 0.0).V, R.max(axis=1))
    np.testing.assert_allclose(pyml.value_iteration(P.tolist(), R.tolist(), 0.9).V,
                               pyml.value_iteration(P, R, 0.9).V)
    with pytest.raises(TypeError, match="policy"):
        pyml.policy_evaluation(P, R, 0.9, None)
    with pytest.raises(TypeError, match="V"):
        pyml.q_values(P, R, 0.9, None)
    with pytest.raises(ValueError, match="R must be None"):
        pyml.value_iteration(MDP(P, R), R, 0.9)
    with pytest.raises(TypeError, match="single sparse"):
        pyml.value_iteration(sp.csr_matrix(P[0]), R, 0.9)


class _Recorder:
    """Records the kernels loaded through the registry (pyml._backend._load)."""

    def __init__(self, monkeypatch):
        self.seen = []
        real = _backend._load

        def load(target, backend):
            self.seen.append(target)
            return real(target, backend)
        monkeypatch.setattr(_backend, "_load", load)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_configured_backend_is_the_default(monkeypatch, sparse):
    P, R = random_mdp(8, 2, np.float64, sparse)
    rec = _Recorder(monkeypatch)
    pol = np.zeros(8, np.int64)
    with pyml.config_context(backend="python"):
        pyml.value_iteration(P, R, 0.9, max_iter=3)
        pyml.policy_iteration(P, R, 0.9, evaluation="iterative", max_iter=2)
        pyml.policy_evaluation(P, R, 0.9, pol, method="iterative", max_iter=3)
    solves = [t for t in rec.seen if ":value_iteration_" in t]
    assert len(solves) >= 3 and all(t.startswith("pyml.reference.mdp:") for t in solves), solves
    with pyml.config_context(backend="cuda"):  # q_values / greedy_policy run on the CPU only
        for fn in (pyml.q_values, pyml.greedy_policy):
            with pytest.raises(_backend.BackendUnavailableError):
                fn(P, R, 0.9, np.zeros(8))


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_model_reads_P_in_place(sparse):
    P, R = random_mdp(9, 3, np.float64, sparse)
    model = MDP(P, R)._model
    if sparse:
        assert all(np.shares_memory(model.csr[2][a], P[a].data) for a in range(3))
        assert all(np.shares_memory(model.csr[1][a], P[a].indices) for a in range(3))
    else:
        assert np.shares_memory(model.P, P)
    m = MDP(P, R)
    for b in ("python", "numba", "cpp"):
        if b in CPU_BACKENDS:
            np.testing.assert_allclose(pyml.value_iteration(m, None, 0.9, backend=b).V,
                                       pyml.value_iteration(P, R, 0.9, backend="python").V, atol=1e-9)


def _peak_bytes(fn) -> int:
    import tracemalloc

    fn()  # compile / load outside the trace
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("backend", backend_params(("numba", "cpp")))
def test_setup_makes_the_documented_number_of_full_size_copies(backend):
    # pyml/_mdp_model.py documents: float C-contiguous dense P and scipy-built CSR are read
    # in place (no copy); CSR is laid out state-major once (one copy); int P is converted once.
    rng = np.random.default_rng(0)
    P = rng.random((4, 400, 400)); P /= P.sum(axis=2, keepdims=True)
    R = rng.standard_normal((400, 4))
    run = lambda P: pyml.value_iteration(P, R, 0.9, max_iter=2, backend=backend)
    assert _peak_bytes(lambda: run(P)) < 0.1 * P.nbytes
    Pi = np.zeros((4, 400, 400), np.int64); Pi[:, np.arange(400), np.arange(400)] = 1
    # the conversion copy is seen (so tracemalloc does see NumPy's buffers), and only one
    assert 0.9 * Pi.nbytes < _peak_bytes(lambda: run(Pi)) < 1.1 * Pi.nbytes
    S, k = 100_000, 8
    mats = []
    for _ in range(4):
        vals = rng.random((S, k)) + 0.01
        vals /= vals.sum(axis=1, keepdims=True)
        mats.append(sp.csr_matrix((vals.ravel(), (np.repeat(np.arange(S), k), rng.integers(0, S, S * k))),
                                  shape=(S, S)))
    nbytes = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in mats)
    Rs = rng.standard_normal((S, 4))
    copies = 1  # the state-major CSR, written by the check pass (read by numba and cpp)
    peak = _peak_bytes(lambda: pyml.value_iteration(mats, Rs, 0.9, max_iter=2, backend=backend))
    assert (copies - 0.1) * nbytes < peak < (copies + 0.25) * nbytes, (peak, nbytes)


# ------------------------------------------------------------------ state-major layout


def state_major_oracle(P):
    """Row s*A + a = row s of P[a]: the A matrices stacked, rows permuted by SciPy."""
    A, S = len(P), P[0].shape[0]
    perm = (np.arange(A)[None, :] * S + np.arange(S)[:, None]).ravel()
    return sp.vstack([sp.csr_matrix(m) for m in P], format="csr")[perm]


@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize("dtypes", [(np.float64,), (np.float32,)], ids=["f64", "f32"])
@pytest.mark.parametrize("S,A", [(1, 1), (7, 3), (113, 5)])
def test_state_major_layout_equals_the_permuted_rows(itype, dtypes, S, A):
    P, R = random_mdp(S, A, np.float64, True, seed=5)
    P = [m.astype(dtypes[a % len(dtypes)]) for a, m in enumerate(P)]
    for m in P:
        m.indptr, m.indices = m.indptr.astype(itype), m.indices.astype(itype)
    model = MDP(P, R)._model
    ip, ix, d = model.state_major()
    want = state_major_oracle([m.astype(np.float64) for m in P])
    # exact: indices narrowed to int32 only where they fit, probabilities never rounded
    all32 = all(m.dtype == np.float32 for m in P)
    assert d.dtype == (np.float32 if all32 else np.float64)
    np.testing.assert_array_equal(ip, want.indptr)
    np.testing.assert_array_equal(ix, want.indices)
    np.testing.assert_array_equal(d.astype(np.float64), want.data)
    if model.layout is not None:  # built by the compiled pass: the NumPy fallback agrees
        from pyml._mdp_model import _state_major_numpy

        assert ip.dtype == ix.dtype == np.int32

        for x, y in zip(_state_major_numpy(*model.csr, S), (ip, ix, d)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.skipif(pyml.backends()["cpp"] is not None, reason="needs the cpp backend")
def test_sparse_kernel_never_reads_outside_corrupt_arrays():
    # The model's layout is checked when built; a direct call of the cpp kernel with corrupt
    # arrays must still stay inside them (row bounds and columns are clamped).
    S, A = 50, 2
    kernel = drv.SOLVE_SPARSE.get("cpp")
    ip = np.arange(0, S * A + 1, dtype=np.int32) * 3
    ip[7] = -(2**30)
    ip[-1] = 2**31 - 1
    ix = np.full(S * A * 3, 2**31 - 1, np.int32)
    ix[::2] = -5
    d = np.full(S * A * 3, 1.0 / 3)
    V, scratch = np.zeros(S), np.zeros(S)
    pol, res = np.zeros(S, np.int64), np.zeros(4)
    n = kernel(ip, ix, d, np.ones((S, A)), 0.9, V, scratch, pol, False, False, 0.0, 4, res)
    assert n == 4 and np.isfinite(V).all()
    with pytest.raises(ValueError, match="indptr"):
        kernel(ip[:-1], ix, d, np.ones((S, A)), 0.9, V, scratch, pol, False, False, 0.0, 4, res)
    with pytest.raises(ValueError, match="policy"):
        kernel(ip, ix, d, np.ones((S, A)), 0.9, V, scratch, pol + A, True, False, 0.0, 4, res)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sparse_solves_from_several_threads_agree(backend):
    from concurrent.futures import ThreadPoolExecutor

    P, R = random_mdp(300, 3, np.float64, True, seed=9)
    model = MDP(P, R)
    solve = lambda g: pyml.value_iteration(model, None, g, epsilon=1e-300, max_iter=30,
                                           backend=backend).V
    gammas = [0.5, 0.7, 0.9, 0.95] * 2
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(solve, gammas))
    for g, V in zip(gammas, got):
        np.testing.assert_array_equal(V, solve(g))
