"""pyml.KMeans: scikit-learn compatibility, agreement with scikit-learn, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

import pyml

CPU = [b for b in ("python", "numba", "cpp", "cython") if pyml.backends()[b] is None]


# Integer weights equal repeated rows in distribution, but the check also reorders the rows, so
# k-means++ draws different seeds (scikit-learn marks its own KMeans the same way);
# test_sample_weight_is_repetition checks the equivalence with a fixed initialisation.
XFAIL = {f"check_sample_weight_equivalence_on_{kind}_data":
         "random seeding over reordered, repeated rows draws different initial centres"
         for kind in ("dense", "sparse")}


@parametrize_with_checks([pyml.KMeans(n_clusters=3, n_init=2, random_state=0, backend=b) for b in CPU]
                         + [pyml.KMeans(n_clusters=3, metric="manhattan", random_state=0, backend=b)
                            for b in CPU if b != "cython"],
                         expected_failed_checks=lambda est: XFAIL)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("backend", CPU)
def test_same_as_sklearn(backend):
    from sklearn.cluster import KMeans as SKKMeans

    X, _, _ = pyml.datasets.make_blobs(600, 5, 7, seed=2)
    init = X[::100][:6].copy()
    ours = pyml.KMeans(6, init=init, max_iter=50, tol=0, backend=backend).fit(X)
    theirs = SKKMeans(6, init=init, n_init=1, max_iter=50, tol=0, algorithm="lloyd").fit(X)
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-9, atol=1e-9)
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-9)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.score(X) == pytest.approx(-theirs.inertia_, rel=1e-9)
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_finds_blobs_and_keeps_dtype(dtype):
    X, y, _ = pyml.datasets.make_blobs(900, 3, 4, cluster_std=0.3, dtype=dtype, seed=4)
    km = pyml.KMeans(4, random_state=0, n_init=3).fit(X)
    assert km.cluster_centers_.dtype == dtype and km.labels_.dtype == np.int32
    # same partition as the truth, up to renaming
    pairs = set(zip(km.labels_.tolist(), y.tolist()))
    assert len(pairs) == 4
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    assert km.n_features_in_ == 3 and km.n_iter_ >= 1


def test_kmedians_is_robust_to_outliers():
    X = np.array([[0.0], [1.0], [2.0], [1000.0], [10.0], [11.0], [12.0]])
    init = np.array([[1.0], [11.0]])
    med = pyml.KMeans(2, init=init, metric="manhattan").fit(X)
    assert sorted(med.cluster_centers_[:, 0].tolist()) == [1.0, 11.0]  # medians ignore 1000
    assert med.inertia_ == pytest.approx(2 + (1 + 0 + 1 + 989))
    np.testing.assert_allclose(med.transform(X)[:, 0], np.abs(X[:, 0] - med.cluster_centers_[0, 0]))


def test_sample_weight_is_repetition():
    X, _, _ = pyml.datasets.make_blobs(60, 2, 3, seed=6)
    w = np.random.default_rng(0).integers(1, 4, 60)
    init = X[:3].copy()
    a = pyml.KMeans(3, init=init, tol=0).fit(X, sample_weight=w.astype(float))
    b = pyml.KMeans(3, init=init, tol=0).fit(np.repeat(X, w, axis=0))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-12)
    assert a.inertia_ == pytest.approx(b.inertia_)


def test_no_convergence_warning_at_max_iter():
    # reaching max_iter is a request, not a failure: scikit-learn warns nothing either
    X, _, _ = pyml.datasets.make_blobs(300, 2, 8, cluster_std=3.0, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        km = pyml.KMeans(8, max_iter=1, tol=0, random_state=0).fit(X)
    assert km.n_iter_ == 1


def test_fewer_distinct_points_than_clusters_warns():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]), 4, axis=0)
    with pytest.warns(ConvergenceWarning, match="distinct clusters"):
        pyml.KMeans(5, random_state=0).fit(X)


def test_bad_input_and_not_modified():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 3))
    X0 = X.copy()
    with pytest.raises(ValueError, match="n_clusters=11"):
        pyml.KMeans(11).fit(X)
    with pytest.raises(ValueError, match="n_clusters"):
        pyml.KMeans(0).fit(X)
    with pytest.raises(ValueError, match="init must have shape"):
        pyml.KMeans(2, init=np.ones((3, 3))).fit(X)
    with pytest.raises(ValueError, match="init"):
        pyml.KMeans(2, init="farthest").fit(X)
    with pytest.raises(TypeError, match="complex"):
        pyml.KMeans(2, init=np.ones((2, 3), complex)).fit(X)
    with pytest.raises(ValueError, match="NaN|infinity"):
        pyml.KMeans(2).fit(np.where(np.eye(10, 3) > 0, np.nan, X))
    with pytest.raises(ValueError, match="metric"):
        pyml.KMeans(2, metric="cosine").fit(X)
    with pytest.raises(ValueError):
        pyml.KMeans(2).fit(X[:, 0])
    km = pyml.KMeans(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="3 features"):
        km.predict(X[:, :2])
    np.testing.assert_array_equal(X, X0)
    with pytest.raises(ValueError, match="non-negative"):
        pyml.KMeans(2).fit(X, sample_weight=-np.ones(10))


@pytest.mark.gpu
def test_cuda_fit_matches_cpu():
    import cupy as cp

    X, _, _ = pyml.datasets.make_blobs(2000, 8, 5, seed=8, dtype=np.float32)
    init = X[:5].copy()
    cpu = pyml.KMeans(5, init=init, max_iter=20, backend="cpp").fit(X)
    gpu = pyml.KMeans(5, init=init, max_iter=20, backend="cuda").fit(X)
    np.testing.assert_array_equal(gpu.labels_, cpu.labels_)
    np.testing.assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, rtol=1e-4, atol=1e-4)
    labels, dist = pyml.kmeans_assign(cp.asarray(X), cp.asarray(cpu.cluster_centers_))
    assert isinstance(labels, cp.ndarray) and isinstance(dist, cp.ndarray)  # CuPy in, CuPy out
    np.testing.assert_array_equal(labels.get(), cpu.labels_)


def test_no_sklearn_at_import_or_fit():
    import subprocess
    import sys

    code = ("import sys, numpy as np, pyml; X = np.random.default_rng(0).standard_normal((50, 3)); "
            "km = pyml.KMeans(3, random_state=0).fit(X); km.predict(X); km.transform(X); "
            "pyml.KMeans(3).get_params(); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_strings_refused_like_kmeans_assign():
    X = np.array([["1.0", "2.0"], ["3.0", "4.0"], ["5", "6"]])
    with pytest.raises(TypeError, match="numeric"):
        pyml.kmeans_assign(X, X[:1])
    with pytest.raises(TypeError, match="numeric"):
        pyml.KMeans(2).fit(X)
    with pytest.raises(TypeError, match="numeric"):
        pyml.KMeans(2).fit(X.astype(object))


@pytest.mark.parametrize("backend", CPU)
def test_fit_at_float32_offset(backend):
    # three float32 clusters far from the origin: every backend finds them (no empty cluster)
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    X = (np.repeat(centres, 100, axis=0) + 0.1 * rng.standard_normal((300, 2)) + 1e4).astype(np.float32)
    init = X[[0, 100, 200]] + np.float32(0.5)
    ours = pyml.KMeans(3, init=init, backend=backend).fit(X)
    oracle = pyml.KMeans(3, init=init, backend="python").fit(X)
    assert len(np.unique(ours.labels_)) == 3
    np.testing.assert_array_equal(ours.labels_, oracle.labels_)
    assert ours.inertia_ == pytest.approx(oracle.inertia_, rel=1e-4)
    km = pyml.KMeans(3, random_state=0, backend=backend).fit(X)
    assert km.inertia_ == pytest.approx(oracle.inertia_, rel=1e-3)


def test_feature_names_and_set_output():
    pd = pytest.importorskip("pandas")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, _, _ = pyml.datasets.make_blobs(80, 3, 3, seed=1)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    km = pyml.KMeans(3, random_state=0).fit(df)
    np.testing.assert_array_equal(km.feature_names_in_, ["a", "b", "c"])
    names = km.get_feature_names_out()
    assert names.dtype == object and names.tolist() == ["kmeans0", "kmeans1", "kmeans2"]
    out = km.set_output(transform="pandas").transform(df)
    assert isinstance(out, pd.DataFrame) and out.columns.tolist() == names.tolist()
    np.testing.assert_allclose(out.to_numpy(), pyml.KMeans(3, random_state=0).fit(X).transform(X))
    pipe = make_pipeline(StandardScaler(), pyml.KMeans(3, random_state=0)).set_output(transform="pandas")
    assert isinstance(pipe.fit_transform(df), pd.DataFrame)
    with pytest.raises(ValueError, match="feature names should match"):
        km.predict(df[["c", "b", "a"]])


def test_sparse_input_same_as_dense():
    sp = pytest.importorskip("scipy.sparse")
    X, _, _ = pyml.datasets.make_blobs(120, 6, 3, seed=2)
    X[np.abs(X) < 3] = 0.0
    S = sp.csr_matrix(X)
    a = pyml.KMeans(3, random_state=0).fit(S)
    b = pyml.KMeans(3, random_state=0).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.predict(S), b.predict(X))
    np.testing.assert_allclose(a.transform(S), b.transform(X))


def test_callable_init_copy_x_algorithm():
    X, _, _ = pyml.datasets.make_blobs(90, 2, 3, seed=3)
    seen = {}

    def init(data, k, random_state):
        seen["rs"] = random_state
        return data[:k] + 0.0

    km = pyml.KMeans(3, init=init, n_init=1, copy_x=False, algorithm="lloyd").fit(X)
    assert isinstance(seen["rs"], np.random.RandomState)
    ref = pyml.KMeans(3, init=X[:3].copy()).fit(X)
    np.testing.assert_array_equal(km.labels_, ref.labels_)
    assert pyml.KMeans(3, algorithm="elkan", random_state=0).fit(X).inertia_ > 0
    with pytest.raises(ValueError, match="algorithm"):
        pyml.KMeans(3, algorithm="full").fit(X)
    with pytest.raises(ValueError, match="shape"):
        pyml.KMeans(3, init=lambda d, k, random_state: d[:2]).fit(X)


def test_n_iter_counts_as_sklearn():
    from sklearn.cluster import KMeans as SKKMeans

    X, _, _ = pyml.datasets.make_blobs(400, 2, 4, cluster_std=2.0, seed=9)
    for init in (X[:4].copy(), X[[0, 1, 2, 3]] + 1.0):
        for tol in (0.0, 1e-4, 1e-2):
            ours = pyml.KMeans(4, init=init, tol=tol).fit(X)
            theirs = SKKMeans(4, init=init, n_init=1, tol=tol, algorithm="lloyd").fit(X)
            assert ours.n_iter_ == theirs.n_iter_, (tol, ours.n_iter_, theirs.n_iter_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_setup_makes_no_full_copy(dtype):
    # C-contiguous float input: validation, the tolerance pass, the seeding and the Lloyd loop
    # allocate only O(n) vectors and O(k d) centres -- never a copy of X (documented: none)
    import tracemalloc

    X, _, _ = pyml.datasets.make_blobs(20_000, 32, 8, dtype=dtype, seed=0)
    pyml.KMeans(8, random_state=0, max_iter=3).fit(X)  # warm: imports, caches, compilation
    for call in (lambda: pyml.KMeans(8, random_state=0, max_iter=3).fit(X),
                 lambda: pyml.kmeans_assign(X, X[:8])):
        tracemalloc.start()
        try:
            call()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 0.5 * X.nbytes, (peak, X.nbytes)
