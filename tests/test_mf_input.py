"""The mf loop's one read pass over the ratings: corrupt CSR, duplicates, special values, empty
and huge inputs, 64-bit indices, read-only arrays, the configured backend, setup copies."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

import pyml
from pyml import _mf_driver as drv
from pyml.datasets import synthetic_ratings
from pyml.reference import mf as ref

from conftest import backend_params

CHECK_BACKENDS = backend_params(("python", "numba", "cpp"))
FIT = dict(factors=3, iterations=2, random_state=0, show_progress=False)


def _corrupt(kind):
    R = sp.csr_matrix(np.array([[1.0, 0, 2], [0, 3, 0], [4, 0, 5]]))
    data, indices, indptr = R.data.copy(), R.indices.copy(), R.indptr.copy()
    if kind == "index too large":
        indices[2] = 3
    elif kind == "negative index":
        indices[0] = -1
    elif kind == "indptr decreases":
        indptr[1], indptr[2] = 3, 2
    elif kind == "indptr start":
        indptr[0] = 1
    elif kind == "indptr past end":
        indptr[3] = 9
    M = sp.csr_matrix((3, 3))
    M.data, M.indices, M.indptr = data, indices, indptr  # bypasses SciPy's own checks
    return M


@pytest.mark.parametrize("backend", CHECK_BACKENDS)
@pytest.mark.parametrize("kind", ["index too large", "negative index", "indptr decreases",
                                  "indptr start", "indptr past end"])
def test_corrupt_csr_refused_by_the_check_kernel(backend, kind):
    M = _corrupt(kind)
    code = drv.CSR_CHECK.get(backend)(M.indptr, M.indices, M.data, 3, False)[0]
    assert code == ref.csr_check(M.indptr, M.indices, M.data, 3, False)[0] != ref.OK
    with pytest.raises(ValueError, match="corrupt"):
        pyml.ALS(backend=backend if backend != "python" else "python", **FIT).fit(M)
    with pytest.raises(ValueError, match="corrupt"):
        pyml.mf_sgd(M, epochs=1, backend="numba" if backend == "python" else backend)


@pytest.mark.parametrize("backend", CHECK_BACKENDS)
def test_check_and_transpose_kernels_equal_the_reference(backend, rng):
    R = abs(synthetic_ratings(40, 30, 300, seed=1)[0])
    args = (R.indptr.astype(np.int64), R.indices, R.data)
    assert drv.CSR_CHECK.get(backend)(*args, 30, True) == ref.csr_check(*args, 30, True)
    T = R.T.tocsr()
    for got, want in zip(drv.CSR_TRANSPOSE.get(backend)(*args, 30), (T.indptr, T.indices, T.data)):
        assert np.array_equal(got, want)
    unsorted = R.indices.copy()
    unsorted[[0, 1]] = unsorted[[1, 0]]  # row 0 out of order: valid but not canonical
    assert drv.CSR_CHECK.get(backend)(R.indptr, unsorted, R.data, 30, True)[2] is False


def test_duplicates_summed_as_scipy_in_als_and_mf_sgd():
    R, _ = synthetic_ratings(30, 20, 200, implicit=True, dtype=np.float64, seed=3)
    coo = R.tocoo()
    # each entry split in two halves, rows shuffled: what csr_matrix((data, indices, indptr)) keeps
    order = np.random.default_rng(0).permutation(2 * R.nnz)
    rows = np.concatenate([coo.row, coo.row])[order]
    cols = np.concatenate([coo.col, coo.col])[order]
    vals = np.concatenate([coo.data / 2, coo.data / 2])[order]
    by_row = np.argsort(rows, kind="stable")
    D = sp.csr_matrix((vals[by_row], cols[by_row], np.r_[0, np.cumsum(np.bincount(rows, minlength=30))]),
                      shape=R.shape)
    assert not D.has_canonical_format
    before = D.data.copy()
    a = pyml.ALS(dtype=np.float64, **FIT).fit(D)
    b = pyml.ALS(dtype=np.float64, **FIT).fit(R)
    np.testing.assert_allclose(a.user_factors, b.user_factors, rtol=1e-10, atol=1e-12)
    assert np.array_equal(D.data, before)  # the caller's matrix is not summed in place
    kw = dict(factors=2, epochs=3, dtype=np.float64, deterministic=True, random_state=0, backend="cpp")
    np.testing.assert_allclose(pyml.mf_sgd(D, **kw)[0], pyml.mf_sgd(R, **kw)[0], rtol=1e-12)


def test_huge_ratings_raise_floating_point_error():
    R, _ = synthetic_ratings(20, 10, 60, implicit=True, seed=0)
    R.data[:] = 1e30
    with pytest.raises(FloatingPointError, match="alpha"):
        pyml.ALS(**FIT).fit(R)
    with pytest.raises(FloatingPointError):
        pyml.ALS(dtype=np.float64, **FIT).fit(R)


def test_bad_arguments_fail_before_any_iteration():
    R, _ = synthetic_ratings(20, 10, 60, implicit=True, seed=0)
    with pytest.raises(TypeError, match="callback"):
        pyml.ALS(callback=5, **FIT).fit(R)
    with pytest.raises(TypeError, match="callback"):
        pyml.ALS(**FIT).fit(R, callback="x")
    for shape in ((0, 0), (0, 5), (5, 0)):
        with pytest.raises(ValueError, match="empty"):
            pyml.ALS(**FIT).fit(sp.csr_matrix(shape))
        with pytest.raises(ValueError, match="empty"):
            pyml.mf_sgd(sp.csr_matrix(shape))
    with pytest.raises(ValueError, match="GiB"):
        pyml.ALS(factors=10**9, iterations=1, show_progress=False).fit(R)
    with pytest.raises(ValueError, match="GiB"):
        pyml.mf_sgd(R, factors=10**9)
    m = pyml.ALS(**FIT).fit(R)
    with pytest.raises(ValueError, match="GiB"):
        m.partial_fit_users([2**31 - 2], R[[0]])
    with pytest.raises(pyml.BackendUnavailableError, match="mf_sgd"):
        pyml.mf_sgd(R, backend="cython")


def test_64bit_indices_are_checked_not_narrowed():
    # a valid matrix too wide for the kernels' int32 item ids: refused, not wrapped
    wide = sp.csr_matrix((np.ones(2), (np.array([0, 1]), np.array([3, 2**31 + 3]))),
                         shape=(2, 2**31 + 10))
    assert wide.indices.dtype == np.int64
    with pytest.raises(ValueError, match="32-bit"):
        pyml.ALS(**FIT).fit(wide)
    # int64 indptr holding offsets beyond 2^31 (a crafted small matrix): the check pass refuses it
    M = sp.csr_matrix((np.ones(3), np.array([0, 1, 2], dtype=np.int64),
                       np.array([0, 1, 3], dtype=np.int64)), shape=(2, 3))
    M.indptr = np.array([0, 2**31 + 1, 2**31 + 2], dtype=np.int64)
    with pytest.raises(ValueError, match="corrupt"):
        pyml.ALS(**FIT).fit(M)
    # int64 index arrays of a matrix that fits: accepted and equal to the int32 result
    R, _ = synthetic_ratings(20, 10, 60, implicit=True, seed=0)
    R64 = sp.csr_matrix((R.data, R.indices.astype(np.int64), R.indptr.astype(np.int64)), shape=R.shape)
    np.testing.assert_array_equal(pyml.ALS(**FIT).fit(R64).user_factors,
                                  pyml.ALS(**FIT).fit(R).user_factors)


@pytest.mark.parametrize("backend", backend_params(("python", "numba", "cpp", "cython")))
def test_read_only_ratings(backend):
    R, _ = synthetic_ratings(20, 10, 60, implicit=True, seed=0)
    for a in (R.data, R.indices, R.indptr):
        a.setflags(write=False)
    m = pyml.ALS(backend=backend, **FIT).fit(R)
    assert np.isfinite(m.user_factors).all()
    m.recommend(np.arange(3), R[:3])


def test_configured_backend_is_honoured():
    R, _ = synthetic_ratings(20, 10, 60, implicit=True, seed=0)
    with pyml.config_context(backend="python"):
        assert pyml.ALS(**FIT).fit(R).backend_ == "python"
        pyml.mf_sgd(R, epochs=1)  # python has an SGD epoch
    with pyml.config_context(backend="cython"):
        assert pyml.ALS(**FIT).fit(R).backend_ == "cython"
        with pytest.raises(pyml.BackendUnavailableError, match="mf_sgd_epoch has no 'cython'"):
            pyml.mf_sgd(R, epochs=1)


def test_setup_copies_at_most_the_documented_arrays():
    """fit's setup copies the values once (float64 -> float32) and builds the item x user
    transpose once; the user's matrix itself is not copied (COO-built, float64, as users do)."""
    if pyml.backends()["cpp"] is not None:
        pytest.skip("cpp unavailable")  # numba's allocations are invisible to tracemalloc
    rng = np.random.default_rng(0)
    n_u, n_i, draws = 20_000, 5_000, 400_000
    R = sp.csr_matrix((rng.random(draws) + 1, (rng.integers(0, n_u, draws), rng.integers(0, n_i, draws))),
                      shape=(n_u, n_i))
    f = 4
    model = pyml.ALS(factors=f, iterations=0, backend="cpp", show_progress=False, random_state=0)
    model.fit(R)  # warm: imports, kernel loading
    tracemalloc.start()
    model.fit(R)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    nnz = R.nnz
    factors = (n_u + n_i) * f * 4
    budget = (nnz * 4            # values cast to float32
              + nnz * (4 + 4)     # the transpose: int32 indices + float32 values
              + (n_u + n_i + 2) * 8 * 2  # int64 indptrs (and the transpose's counters)
              + factors + 8 * (n_u + n_i) * f  # factors and their float64 random start
              + (1 << 18))  # 256 KiB of slack
    # one more copy of the values (1.6 MB) would not fit the budget
    assert peak <= budget, (peak, budget)


@pytest.mark.parametrize("backend", backend_params(("numba", "cpp", "cython")))
def test_fits_from_four_threads_equal_sequential(backend):
    from concurrent.futures import ThreadPoolExecutor

    R, _ = synthetic_ratings(200, 120, 3000, implicit=True, seed=4)
    def fit(seed):
        return pyml.ALS(factors=8, iterations=2, random_state=seed, backend=backend,
                        show_progress=False).fit(R).user_factors
    sequential = [fit(s) for s in range(4)]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(fit, range(4)))
    for a, b in zip(sequential, concurrent):
        np.testing.assert_array_equal(a, b)
