"""Matrix factorization: every half-step kernel equals the reference; ALS/SGD behaviour; bad input."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import pyml
from pyml import _mf_driver as drv
from pyml._verify.mf import dense_half_step
from pyml.datasets import synthetic_ratings
from pyml.reference import mf as ref

from conftest import assert_close, backend_params

BACKENDS = backend_params(("python", "numba", "cpp", "cython", "cuda"))
SGD_BACKENDS = backend_params(("numba", "cpp"))


def _ratings_with_edge_rows(rng, n_rows=9, n_cols=13):
    """Rows with 0, 1 and very many (all) interactions, plus random ones."""
    dense = np.where(rng.random((n_rows, n_cols)) < 0.3, rng.standard_normal((n_rows, n_cols)), 0)
    dense[0] = 0                       # no interaction
    dense[1] = 0
    dense[1, 4] = 1.5                  # a single one
    dense[2] = rng.random(n_cols) + 0.1  # every column
    return sp.csr_matrix(dense)


def _run(kernel, R, Y, X0, dt, implicit, exact, cg_steps=3, reg=0.1, alpha=2.0):
    if kernel == "cuda":
        import cupy as cp

        Rd = drv.CSRArrays(R, dt, cp)
        X = cp.asarray(X0.astype(dt))
        drv.half_step(drv.HALF_STEP.get("cuda"), Rd, cp.asarray(Y.astype(dt)), X, reg, alpha,
                      cg_steps, implicit, exact)
        return X.get()
    X = X0.astype(dt)
    drv.half_step(kernel, drv.CSRArrays(R, dt), Y.astype(dt), X, reg, alpha, cg_steps, implicit, exact)
    return X


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["explicit", "implicit_cg", "implicit_cholesky"])
def test_half_step_matches_reference(backend, dtype, mode, rng):
    implicit, exact = mode != "explicit", mode != "implicit_cg"
    R = _ratings_with_edge_rows(rng)
    if implicit:
        R = abs(R)
    f = 6
    Y = rng.standard_normal((R.shape[1], f))
    X0 = rng.standard_normal((R.shape[0], f)) * 0.1
    ref64 = _run(ref.als_half_step, R, Y, X0, np.float64, implicit, exact)
    naive = (_run(ref.als_half_step, R, Y, X0, np.float32, implicit, exact) if dtype == np.float32
             else _run(dense_half_step, R, Y, X0, np.float64, implicit, exact))
    kernel = "cuda" if backend == "cuda" else drv.HALF_STEP.get(backend)
    out = _run(kernel, R, Y, X0, dtype, implicit, exact)
    assert out.dtype == dtype
    assert_close(out, ref64, naive, dtype, f"{backend} {mode}")
    if not implicit:
        assert np.all(out[0] == 0)  # no ratings: (reg I) x = 0


@pytest.mark.parametrize("backend", backend_params(("numba", "cpp", "cython")))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["explicit", "implicit_cg", "implicit_cholesky"])
@pytest.mark.parametrize("f", [37, 16, 64])
def test_half_step_long_rows_wide_factors(backend, dtype, mode, f, rng):
    """Rows longer than the kernels' gather chunks (300 items); f=37 (vector remainders) and
    f=16/64 (the cpp CG solver's compile-time factor counts), against the dense NumPy
    half-step in float64 (LAPACK solve) as the oracle."""
    implicit, exact = mode != "explicit", mode != "implicit_cg"
    R = _ratings_with_edge_rows(rng, n_rows=6, n_cols=300)
    if implicit:
        R = abs(R)
    Y = rng.standard_normal((R.shape[1], f)) * 0.3
    X0 = rng.standard_normal((R.shape[0], f)) * 0.1
    ref64 = _run(dense_half_step, R, Y, X0, np.float64, implicit, exact)
    # float64: the loop reference is the independent same-precision implementation
    naive = _run(dense_half_step if dtype == np.float32 else ref.als_half_step, R, Y, X0, dtype,
                 implicit, exact)
    out = _run(drv.HALF_STEP.get(backend), R, Y, X0, dtype, implicit, exact)
    assert_close(out, ref64, naive, dtype, f"{backend} {mode}")


@pytest.mark.parametrize("backend", SGD_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_epoch_deterministic_matches_reference(backend, dtype, rng):
    R = _ratings_with_edge_rows(rng).tocoo()
    order = rng.permutation(R.nnz).astype(np.int64)
    args = (R.row.astype(np.int32), R.col.astype(np.int32))
    U0, V0 = rng.standard_normal((R.shape[0], 4)) * 0.3, rng.standard_normal((R.shape[1], 4)) * 0.3

    def run(k, dt):
        U, V = U0.astype(dt), V0.astype(dt)
        k(*args, R.data.astype(dt), order, U, V, 0.05, 0.02, True)
        return np.concatenate([U, V])

    ref64 = run(ref.mf_sgd_epoch, np.float64)
    naive = run(ref.mf_sgd_epoch, np.float32) if dtype == np.float32 else ref64 + 1e-15 * np.abs(ref64)
    assert_close(run(drv.SGD_EPOCH.get(backend), dtype), ref64, naive, dtype, backend)


@pytest.mark.parametrize("backend", ["numba", "cpp"])
def test_explicit_objective_never_increases(backend):
    if pyml.backends()[backend] is not None:
        pytest.skip(f"{backend} unavailable")
    R, _ = synthetic_ratings(60, 40, 800, rank=4, noise=0.2, dtype=np.float64, seed=1)
    m = pyml.ALS(factors=6, regularization=0.5, iterations=8, dtype=np.float64, random_state=0, implicit=False,
                 backend=backend, show_progress=False, compute_loss=True).fit(R)
    loss = np.array(m.loss_)
    assert np.all(np.diff(loss) <= 1e-9 * np.abs(loss[:-1])), loss
    assert m.loss(R) == pytest.approx(loss[-1])


def test_cg_approaches_exact_solve(rng):
    R = abs(_ratings_with_edge_rows(rng, 20, 30))
    f = 8
    Y = rng.standard_normal((30, f))
    X0 = np.zeros((20, f))
    exact = _run(drv.HALF_STEP.get("numba"), R, Y, X0, np.float64, True, True)
    errs = [np.abs(_run(drv.HALF_STEP.get("numba"), R, Y, X0, np.float64, True, False, cg_steps=s)
                   - exact).max() for s in (1, 2, 4, 8)]
    assert all(b <= a * 1.0001 for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-6 * max(1.0, np.abs(exact).max()), errs  # f steps: exact in exact arithmetic


def test_planted_rank8_heldout_rmse():
    noise = 0.1
    R, _ = synthetic_ratings(400, 300, 36000, rank=8, noise=noise, popularity="uniform",
                             dtype=np.float64, seed=3)
    coo = R.tocoo()
    test = np.random.default_rng(0).random(R.nnz) < 0.1
    train = sp.csr_matrix((coo.data[~test], (coo.row[~test], coo.col[~test])), shape=R.shape)
    m = pyml.ALS(factors=8, regularization=0.05, iterations=15, dtype=np.float64, random_state=0, implicit=False,
                 show_progress=False).fit(train)
    pred = np.einsum("kf,kf->k", m.user_factors[coo.row[test]], m.item_factors[coo.col[test]])
    rmse = np.sqrt(np.mean((pred - coo.data[test]) ** 2))
    assert rmse <= 1.1 * noise, rmse


@pytest.fixture(scope="module")
def fitted():
    R, _ = synthetic_ratings(50, 30, 500, rank=4, implicit=True, seed=2)
    m = pyml.ALS(factors=5, iterations=4, implicit=True, alpha=2.0, random_state=0,
                 show_progress=False, compute_loss=True).fit(R)
    return m, R


def test_implicit_loss_decreases_and_matches_reference(fitted):
    m, R = fitted
    assert m.loss_[-1] < m.loss_[0]
    Rd = drv.CSRArrays(R, np.float32)
    assert m.loss(R) == pytest.approx(ref.als_loss(Rd.indptr, Rd.indices, Rd.data, m.user_factors,
                                                   m.item_factors, m.regularization, 2.0, True), rel=1e-4)


def test_recommend_filters_liked_items(fitted):
    m, R = fitted
    users = np.arange(10)
    ids, scores = m.recommend(users, R[users], N=8)
    assert ids.shape == (10, 8)
    for u in users:
        liked = set(R[u].indices)
        assert not liked & set(ids[u][ids[u] >= 0])
        assert np.all(np.diff(scores[u][np.isfinite(scores[u])]) <= 0)
    one, _ = m.recommend(3, R[3], N=5)
    assert one.shape == (5,) and np.array_equal(one, ids[3][:5])
    unfiltered, _ = m.recommend(3, N=30, filter_already_liked_items=False)
    assert sorted(unfiltered) == list(range(30))


def test_similar_recalculate_partial_fit_save_load(fitted, tmp_path):
    m, R = fitted
    items, sims = m.similar_items(7, N=4)
    assert items[0] == 7 and sims[0] == pytest.approx(1.0, abs=1e-6)
    x = m.recalculate_user(0, R[0])
    m2 = pyml.ALS.load(_save(m, tmp_path), show_progress=False)
    assert np.array_equal(m2.user_factors, m.user_factors) and m2.implicit
    m2.partial_fit_users([0, 55], R[[0, 1]])
    assert m2.user_factors.shape == (56, 5)
    np.testing.assert_allclose(m2.user_factors[0], x, rtol=1e-5, atol=1e-6)
    col = R.T.tocsr()[[2]]
    col.resize((1, 56))  # the model now has 56 users
    m2.partial_fit_items([30], col)
    assert m2.item_factors.shape == (31, 5)


def _save(m, tmp_path):
    path = tmp_path / "als.npz"
    m.save(path)
    return path


def test_mf_sgd_fits_and_deterministic_repeats():
    R, _ = synthetic_ratings(80, 60, 2000, rank=3, noise=0.05, dtype=np.float64, seed=4)
    U, V = pyml.mf_sgd(R, factors=3, lr=0.05, regularization=0.001, epochs=60, dtype=np.float64,
                       deterministic=True, random_state=0, backend="numba")
    U2, V2 = pyml.mf_sgd(R, factors=3, lr=0.05, regularization=0.001, epochs=60, dtype=np.float64,
                         deterministic=True, random_state=0, backend="cpp")
    np.testing.assert_allclose(U, U2, rtol=1e-9, atol=1e-12)
    coo = R.tocoo()
    rmse = np.sqrt(np.mean((np.einsum("kf,kf->k", U[coo.row], V[coo.col]) - coo.data) ** 2))
    assert rmse < 0.3 * np.std(coo.data), rmse


def test_bad_input_and_input_not_modified():
    R, _ = synthetic_ratings(20, 10, 60, seed=0)
    before = (R.data.copy(), R.indices.copy(), R.indptr.copy())
    pyml.ALS(factors=3, iterations=2, show_progress=False, random_state=0, implicit=False).fit(R)
    pyml.mf_sgd(R, factors=2, epochs=2, random_state=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, (R.data, R.indices, R.indptr)))
    with pytest.raises(TypeError, match="scipy.sparse"):
        pyml.ALS(show_progress=False, implicit=False).fit(R.toarray())
    bad = R.copy()
    bad.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pyml.ALS(show_progress=False, implicit=False).fit(bad)
    with pytest.raises(ValueError, match="alpha"):
        pyml.ALS(implicit=True, alpha=-1.0, show_progress=False).fit(abs(R))
    with pytest.raises(ValueError, match="non-negative"):
        pyml.ALS(implicit=True, show_progress=False).fit(R)
    with pytest.raises(ValueError, match="factors"):
        pyml.ALS(factors=0, show_progress=False).fit(R)
    m = pyml.ALS(factors=3, iterations=1, show_progress=False, implicit=False).fit(R)
    with pytest.raises(ValueError, match="out of range"):
        m.recommend(20, R[0])
    with pytest.raises(ValueError, match="shape"):
        m.recommend([0, 1], R[0])
    with pytest.raises(ValueError, match="out of range"):
        m.similar_items(-1)
    with pytest.raises(ValueError, match="shape"):
        m.loss(R[:, :5])
    with pytest.raises(AttributeError, match="not fitted"):
        pyml.ALS().recommend(0, R[0])


def test_progress_and_callback():
    R, _ = synthetic_ratings(20, 10, 60, seed=0)
    seen = []
    pyml.ALS(factors=2, iterations=3, show_progress=True, backend="cpp", compute_loss=True, implicit=False,
             callback=lambda it, t, loss: seen.append((it, loss))).fit(R)
    assert [s[0] for s in seen] == [0, 1, 2] and all(np.isfinite(s[1]) for s in seen)


@pytest.mark.gpu
@pytest.mark.skipif(pyml.backends()["cuda"] is not None, reason="needs cupy and a CUDA device")
@pytest.mark.parametrize("implicit", [False, True])
def test_cuda_fit_matches_cpu(implicit):
    R, _ = synthetic_ratings(60, 40, 600, rank=4, implicit=implicit, dtype=np.float64, seed=5)
    kw = dict(factors=6, regularization=0.5, iterations=3, implicit=implicit, dtype=np.float64,
              random_state=0, show_progress=False, compute_loss=True)
    gpu = pyml.ALS(backend="cuda", **kw).fit(R)
    cpu = pyml.ALS(backend="numba", **kw).fit(R)
    assert isinstance(gpu.user_factors, np.ndarray)  # scipy (host) input -> host factors
    np.testing.assert_allclose(gpu.user_factors, cpu.user_factors, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gpu.loss_, cpu.loss_, rtol=1e-9)


def test_defaults_do_not_compute_the_loss():
    """ALS() at its defaults records no training loss (as implicit's calculate_training_loss=False);
    asked for, the loss after the last iteration is the reference objective."""
    import inspect

    assert inspect.signature(pyml.ALS).parameters["compute_loss"].default is False
    R, _ = synthetic_ratings(40, 25, 300, rank=3, implicit=True, seed=6)
    assert pyml.ALS(factors=4, iterations=2, random_state=0, show_progress=False).fit(R).loss_ == []
    m = pyml.ALS(factors=4, iterations=2, random_state=0, show_progress=False,
                 compute_loss=True).fit(R)
    Rd = drv.CSRArrays(R, np.float32)
    assert len(m.loss_) == 2
    assert m.loss_[-1] == pytest.approx(ref.als_loss(Rd.indptr, Rd.indices, Rd.data, m.user_factors,
                                                     m.item_factors, m.regularization, m.alpha, True),
                                        rel=1e-4)


@pytest.mark.parametrize("backend", backend_params(("python", "numba", "cpp")))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("implicit", [False, True])
def test_loss_terms_kernel_matches_reference(backend, dtype, implicit, rng):
    R = _ratings_with_edge_rows(rng, 9, 40)
    if implicit:
        R = abs(R)
    Rd = drv.CSRArrays(R, dtype)
    X = rng.standard_normal((9, 64)).astype(dtype)
    Y = rng.standard_normal((40, 64)).astype(dtype)
    want = ref.als_loss_terms(Rd.indptr, Rd.indices, Rd.data.astype(np.float64), X.astype(np.float64),
                              Y.astype(np.float64), 2.0, implicit)
    naive = ref.als_loss_terms(Rd.indptr, Rd.indices, Rd.data, X, Y, 2.0, implicit)
    got = drv.LOSS_TERMS.get(backend)(Rd.indptr, Rd.indices, Rd.data, X, Y, 2.0, implicit)
    assert_close(np.array([got]), np.array([want]), np.array([naive]), dtype, backend)
