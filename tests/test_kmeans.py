"""k-means kernels: every backend against the reference (pyml/reference/kmeans.py), k-means++
sanity, monotone objective, bad input. Estimator tests are in test_kmeans_estimator.py."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
from conftest import AVAILABLE, assert_close, backend_params

import pyml
from pyml import _kmeans_driver as drv
from pyml._blas import single_thread
from pyml._verify.kmeans import checks as verify_checks
from pyml.reference import kmeans as ref

ASSIGN_BACKENDS = backend_params(("python", "numba", "cpp", "cython", "cuda"))
UPDATE_BACKENDS = backend_params(("python", "numba", "cpp", "cuda"))
MEDIAN_BACKENDS = backend_params(("python", "numba", "cpp"))
# (n, k, d): n=1, k=1, k=n, d=1, d=113, n=1023 (not multiples of any tile)
SHAPES = [(1, 1, 3), (7, 1, 4), (9, 9, 2), (50, 6, 1), (40, 5, 113), (1023, 17, 7)]
REF_ASSIGN = {"euclidean": ref.kmeans_assign, "manhattan": ref.kmedians_assign}
REF_UPDATE = {"euclidean": ref.kmeans_update, "manhattan": ref.kmedians_update}


def _xp(backend):
    if backend == "cuda":
        import cupy

        return cupy
    return np


def _problem(rng, n, k, d, dtype, order="C"):
    X = rng.standard_normal((n, d)) * 2 + 5  # offset from 0: the expanded form must not cancel
    C = X[rng.choice(n, k, replace=False)] + 0.05 * rng.standard_normal((k, d))
    Xt = np.asarray(X, dtype=dtype, order=order)
    return Xt, C.astype(dtype), X, C


def _naive_dist(X, C, labels, metric):
    diff = X - C[labels]  # in the test dtype: what a plain implementation at that precision makes
    return (diff * diff).sum(1) if metric == "euclidean" else np.abs(diff).sum(1)


def _all_dists(X, C, metric):
    diff = X[:, None, :] - C[None, :, :]
    return (diff**2).sum(-1) if metric == "euclidean" else np.abs(diff).sum(-1)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,k,d", SHAPES)
@pytest.mark.parametrize("backend", ASSIGN_BACKENDS)
def test_assign_matches_reference(backend, n, k, d, dtype, order, rng):
    if backend == "python" and n * k * d > 20000:
        pytest.skip("the reference is the oracle itself; large shapes only for compiled kernels")
    Xt, Ct, X64, C64 = _problem(rng, n, k, d, dtype, order)
    Xin = Xt.copy(order="A")
    for metric in ("euclidean", "manhattan") if backend in ("python", "numba", "cpp") else ("euclidean",):
        xp = _xp(backend)
        labels, dist = pyml.kmeans_assign(xp.asarray(Xt), xp.asarray(Ct), metric=metric, backend=backend)
        labels, dist = pyml._backend.to_numpy(labels), pyml._backend.to_numpy(dist)
        assert labels.dtype == np.int32 and dist.dtype == dtype
        # the float64 reference on the very values the kernel saw
        Xr, Cr = Xt.astype(np.float64), Ct.astype(np.float64)
        l64, d64 = REF_ASSIGN[metric](Xr, Cr)
        assert_close(dist, d64, _naive_dist(Xt, Ct, l64, metric), dtype, f"{backend} {metric} dist")
        # labels must agree wherever the best centre is clearly better than the second best
        D = _all_dists(Xr, Cr, metric)
        part = np.sort(D, axis=1)
        gap = part[:, 1] - part[:, 0] if k > 1 else np.full(n, np.inf)
        clear = gap > 1e-3 * np.maximum(1.0, part[:, 0])
        assert np.array_equal(labels[clear], l64[clear]), f"{backend} {metric} labels"
        np.testing.assert_array_equal(Xt, Xin)  # input untouched


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
@pytest.mark.parametrize("backend", UPDATE_BACKENDS)
def test_update_matches_reference(backend, metric, dtype, rng):
    if metric == "manhattan" and backend == "cuda":
        pytest.skip("k-medians has no cuda kernel")
    n, k, d = 203, 9, 6
    Xt, Ct, _, _ = _problem(rng, n, k, d, dtype)
    Ct[4] += 1000  # far away: an empty cluster that must be relocated
    w = rng.uniform(0.0, 2.0, n)
    w[:5] = 0.0  # zero weights are allowed (and never relocated)
    Xr, Cr = Xt.astype(np.float64), Ct.astype(np.float64)
    labels, dist = REF_ASSIGN[metric](Xr, Cr)
    assert 4 not in labels
    want = REF_UPDATE[metric](Xr, w, labels, dist, Cr)
    naive = REF_UPDATE[metric](Xt, w, labels, dist.astype(dtype), Ct)
    xp = _xp(backend)
    args = [xp.asarray(a) for a in (Xt, w, labels, dist.astype(dtype), Ct)]
    before = [np.array(pyml._backend.to_numpy(a), copy=True) for a in args]
    got = pyml._backend.to_numpy(drv.UPDATE[metric].get(backend)(*args))
    assert got.dtype == dtype
    assert_close(got, want, naive, dtype, f"{backend} {metric} update")
    far = int(np.argmax(dist * (w > 0)))
    # relocated onto the farthest point (w x / w: exact up to rounding)
    np.testing.assert_allclose(got[4], Xt[far], rtol=4 * np.finfo(dtype).eps)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(pyml._backend.to_numpy(a), b)


@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
@pytest.mark.parametrize("backend", MEDIAN_BACKENDS)
def test_objective_never_increases(backend, metric, rng):
    X, _, _ = pyml.datasets.make_blobs(400, 3, 5, cluster_std=2.0, seed=1)
    w = rng.uniform(0.5, 1.5, 400)
    C0 = X[:6].copy()  # a poor start: many iterations
    res = drv.lloyd(X, w, C0, metric=metric, max_iter=50, tol=0.0, backend=backend)
    h = np.array(res.history + [res.inertia])
    assert len(h) >= 3
    assert np.all(np.diff(h) <= 1e-9 * h[0]), h


def test_all_backends_same_fit(rng):
    X, _, _ = pyml.datasets.make_blobs(500, 4, 6, seed=3)
    C0 = X[rng.choice(500, 6, replace=False)]
    w = np.ones(500)
    results = {b: drv.lloyd(X, w, C0, max_iter=30, backend=b) for b in ("python", "numba", "cpp")
               if pyml.backends()[b] is None}
    base = results.pop("python")
    for b, r in results.items():
        np.testing.assert_array_equal(r.labels, base.labels, err_msg=b)
        np.testing.assert_allclose(r.centers, base.centers, rtol=1e-10, atol=1e-10, err_msg=b)
        assert r.n_iter == base.n_iter


@pytest.mark.parametrize("trials", [None, 1, 4])
@pytest.mark.parametrize("backend", backend_params(("python", "numba", "cpp")))
def test_plusplus_matches_reference_and_weights(backend, trials):
    rng_data = np.random.default_rng(5)
    X = rng_data.standard_normal((60, 3))
    w = rng_data.uniform(0, 2, 60)
    w[::7] = 0.0
    C, idx = pyml.kmeans_plusplus(X, 5, sample_weight=w, random_state=11, n_local_trials=trials,
                                  backend=backend)
    C_ref, idx_ref = ref.kmeans_plusplus(X, 5, w, np.random.default_rng(11),
                                         n_local_trials=2 + int(np.log(5)) if trials is None else trials)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(C, X[idx])
    assert np.all(w[idx] > 0) and len(set(idx.tolist())) == 5


def test_plusplus_distribution():
    # 20 points at 0 and one outlier at distance 10: after a first pick in the bulk the
    # outlier is drawn as 2nd centre with probability 100 / (100 + sum of the bulk's D^2).
    rng = np.random.default_rng(0)
    bulk = rng.standard_normal((20, 1)) * 0.5
    X = np.vstack([bulk, [[10.0]]])
    trials = 2000
    second = np.array([pyml.kmeans_plusplus(X, 2, random_state=s, n_local_trials=1)[1]
                       for s in range(trials)])
    first_bulk = second[:, 0] != 20
    D2 = (X[:20, None, 0] - X[None, :, 0]) ** 2  # row f: squared distances from first pick f
    p_out = np.mean(D2[:, 20] / D2.sum(1))  # averaged over the uniform first pick in the bulk
    freq = np.mean(second[first_bulk, 1] == 20)
    sd = np.sqrt(p_out * (1 - p_out) / first_bulk.sum())
    assert abs(freq - p_out) < 5 * sd, (freq, p_out)
    assert abs(np.mean(second[:, 0] == 20) - 1 / 21) < 5 * np.sqrt(1 / 21 * 20 / 21 / trials)


BAD = [
    (np.array([[1.0, np.nan]]), ValueError, "NaN"),
    (np.array([[1.0, np.inf]]), ValueError, "infinity"),
    (np.ones(3), ValueError, "2-dimensional"),
    (np.ones((0, 2)), ValueError, "empty"),
    (np.ones((2, 2), complex), TypeError, "complex"),
    (np.array([["a", "b"]]), TypeError, "numeric"),
]


@pytest.mark.parametrize("X,exc,msg", BAD)
def test_bad_input(X, exc, msg):
    C = np.ones((1, 2))
    with pytest.raises(exc, match=msg):
        pyml.kmeans_assign(X, C)
    with pytest.raises(exc, match=msg):
        pyml.kmeans_plusplus(X, 1)


def test_bad_arguments(rng):
    X = rng.standard_normal((5, 2))
    with pytest.raises(ValueError, match="features"):
        pyml.kmeans_assign(X, np.ones((2, 3)))
    with pytest.raises(ValueError, match="metric"):
        pyml.kmeans_assign(X, X[:2], metric="cosine")
    with pytest.raises(ValueError, match="n_clusters=6"):
        pyml.kmeans_plusplus(X, 6)
    with pytest.raises(ValueError, match=">= 1"):
        pyml.kmeans_plusplus(X, 0)
    with pytest.raises(ValueError, match="non-negative"):
        pyml.kmeans_plusplus(X, 2, sample_weight=-np.ones(5))
    with pytest.raises(ValueError, match="shape"):
        pyml.kmeans_plusplus(X, 2, sample_weight=np.ones(4))
    with pytest.raises(pyml.BackendUnavailableError):
        pyml.kmeans_assign(X, X[:2], metric="manhattan", backend="cython")


def test_mixed_dtypes_and_ints():
    X = np.arange(12).reshape(6, 2)  # ints -> float64
    labels, dist = pyml.kmeans_assign(X, X[:2].astype(np.float32))
    assert dist.dtype == np.float64 and labels.tolist() == [0, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("backend", [b for b in ("python", "numba", "cpp", "cython")
                                     if pyml.backends()[b] is None])
def test_verify_rows(backend):
    rows = verify_checks(backend, np.random.default_rng(0))
    assert rows and all(err <= tol for _, err, tol in rows), rows


# The C++ kernel has two assignment paths (csrc/kmeans.cpp: use_fused picks one by shape):
# the fused register-blocked kernel (panels of 32 float / 16 double centres, blocks of 6 rows
# with AVX-512, C walked in chunks above 256 KiB) and the BLAS-tile path. Both are reached
# explicitly here on shapes that are not multiples of the panel width, the row block or the
# tile, and that need more than one chunk of C (k=300, d=250; d=2100).
CPP_PATH_SHAPES = [(1, 1, 1), (40, 33, 5), (97, 64, 16), (400, 300, 250), (70, 40, 2100), (37, 7, 1)]


@pytest.mark.skipif("cpp" not in AVAILABLE, reason="cpp backend unavailable here")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,k,d", CPP_PATH_SHAPES)
@pytest.mark.parametrize("method", ["fused", "blas"])
def test_cpp_assign_paths(method, n, k, d, dtype, rng):
    from scipy.spatial.distance import cdist

    ck = importlib.import_module(pyml._backend.backend_package("cpp") + ".kmeans")  # CPU variant in use

    Xt, Ct, _, _ = _problem(rng, n, k, d, dtype)
    with single_thread("cpp"):
        labels, dist = ck.kmeans_assign(Xt, Ct, method=method)
    assert labels.dtype == np.int32 and dist.dtype == dtype
    D = cdist(Xt.astype(np.float64), Ct.astype(np.float64), "sqeuclidean")
    rows = np.arange(n)
    # the distance to the chosen centre, and the chosen centre the best one up to a near-tie
    assert_close(dist, D[rows, labels], _naive_dist(Xt, Ct, labels, "euclidean"), dtype, method)
    assert np.all(D[rows, labels] - D.min(1) <= 1e-3 * np.maximum(1.0, D.min(1))), method
    part = np.sort(D, axis=1)
    gap = part[:, 1] - part[:, 0] if k > 1 else np.full(n, np.inf)
    clear = gap > 1e-3 * np.maximum(1.0, part[:, 0])
    assert np.array_equal(labels[clear], np.argmin(D, axis=1)[clear]), method


@pytest.mark.skipif("cpp" not in AVAILABLE, reason="cpp backend unavailable here")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", ["auto", "fused", "blas"])
def test_cpp_assign_exact_ties_take_first_index(method, dtype, rng):
    # centre 0..9 repeated at 10..19, 40..49 and 70..79: in another lane, the other half of a
    # panel and later panels; every tie must go to the smallest index (the reference's rule)
    ck = importlib.import_module(pyml._backend.backend_package("cpp") + ".kmeans")  # CPU variant in use

    base = rng.standard_normal((10, 3)).astype(dtype)
    C = np.zeros((83, 3), dtype)
    C[20:40] = C[50:70] = 50.0  # far away
    C[80:] = 60.0
    for o in (0, 10, 40, 70):
        C[o:o + 10] = base
    X = base[rng.integers(0, 10, 301)] + (0.2 * rng.standard_normal((301, 3))).astype(dtype)
    labels, _ = ck.kmeans_assign(X, C, method=method)
    assert labels.max() < 10
    D = np.sort(_all_dists(X.astype(np.float64), base.astype(np.float64), "euclidean"), axis=1)
    clear = D[:, 1] - D[:, 0] > 1e-3 * np.maximum(1.0, D[:, 0])
    want = np.argmin(_all_dists(X, base, "euclidean"), axis=1)
    np.testing.assert_array_equal(labels[clear], want[clear])
    with pytest.raises(ValueError, match="method"):
        ck.kmeans_assign(X, C, method="gemm")


# ----------------------------------------------------------------------- cancellation
# ||c||^2 - 2 x.c cancels when the data share an offset large against their spread; the
# kernels shift by the mean of the centres, so the labels stay those of the exact reference.
OFFSETS = [(np.float64, 1e7), (np.float64, 1e8), (np.float32, 1e3), (np.float32, 1e4)]


@pytest.mark.parametrize("dtype,offset", OFFSETS)
@pytest.mark.parametrize("backend", ASSIGN_BACKENDS)
def test_assign_labels_exact_at_large_offsets(backend, dtype, offset, rng):
    n, k, d = (120, 9, 5) if backend == "python" else (1500, 40, 16)
    X = (rng.standard_normal((n, d)) * 3 + offset).astype(dtype)
    C = (X[rng.choice(n, k, replace=False)].astype(np.float64) + rng.standard_normal((k, d))).astype(dtype)
    xp = _xp(backend)
    labels, _ = pyml.kmeans_assign(xp.asarray(X), xp.asarray(C), backend=backend)
    D = _all_dists(X.astype(np.float64), C.astype(np.float64), "euclidean")
    part = np.sort(D, axis=1)
    clear = part[:, 1] - part[:, 0] > 1e-6 * np.maximum(1.0, part[:, 0])  # exact ties excepted
    assert clear.mean() > 0.99
    want = np.argmin(D, axis=1)
    got = pyml._backend.to_numpy(labels)
    assert np.mean(got[clear] != want[clear]) == 0.0, f"{np.mean(got[clear] != want[clear]):.1%} wrong"


@pytest.mark.skipif("cpp" not in AVAILABLE, reason="cpp backend unavailable here")
@pytest.mark.parametrize("method", ["fused", "blas"])
def test_cpp_paths_exact_at_large_offsets(method, rng):
    ck = importlib.import_module(pyml._backend.backend_package("cpp") + ".kmeans")  # CPU variant in use

    X = (rng.standard_normal((700, 12)) * 3 + 1e4).astype(np.float32)
    C = X[rng.choice(700, 33, replace=False)] + np.float32(0.5)
    labels, _ = ck.kmeans_assign(X, C, method=method)
    D = _all_dists(X.astype(np.float64), C.astype(np.float64), "euclidean")
    part = np.sort(D, axis=1)
    clear = part[:, 1] - part[:, 0] > 1e-6 * np.maximum(1.0, part[:, 0])
    np.testing.assert_array_equal(labels[clear], np.argmin(D, axis=1)[clear])


@pytest.mark.parametrize("backend", backend_params(("python", "numba", "cpp", "cython")))
def test_float32_huge_values_labels_exact(backend, rng):
    # |x| ~ 1e19: squared distances overflow float32; the assignment is redone in float64
    X = (rng.standard_normal((60, 4)) * 1e19).astype(np.float32)
    C = X[:5].copy()
    labels, dist = pyml.kmeans_assign(X, C, backend=backend)
    l64, d64 = ref.kmeans_assign(X.astype(np.float64), C.astype(np.float64))
    np.testing.assert_array_equal(labels, l64)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(dist, d64.astype(np.float32))


# ----------------------------------------------------------------------- defaults, input
@pytest.mark.parametrize("backend", AVAILABLE)
def test_configured_backend_is_the_default(backend, monkeypatch):
    # the README example: with config_context(backend="python"): kmeans_assign(...) runs python
    calls = []
    orig_get = pyml._backend.Kernel.get

    def spy(self, b):
        calls.append((self.name, b))
        return orig_get(self, b)
    monkeypatch.setattr(pyml._backend.Kernel, "get", spy)
    X = np.arange(12.0).reshape(6, 2)
    with pyml.config_context(backend=backend):
        pyml.kmeans_assign(X, X[:2])
        pyml.kmeans_plusplus(X, 2, random_state=0)
        pyml.KMeans(2, random_state=0, max_iter=3).fit(X)
    assert calls[0] == ("kmeans_assign", backend)
    seeding = {"kmeans_plusplus_step": drv.PLUSPLUS, "kmeans_plusplus": drv.SEED}
    for name, b in calls:  # every kernel ran on the configured backend where it has one
        if name not in seeding or backend in seeding[name].backends:
            if name != "kmeans_update" or backend in drv.UPDATE["euclidean"].backends:
                assert b == backend, (name, b)


def test_read_only_input(rng):
    X = rng.standard_normal((50, 3))
    X.setflags(write=False)
    C = X[:4].copy()
    C.setflags(write=False)
    want = ref.kmeans_assign(X, C)[0]
    for b in AVAILABLE:
        np.testing.assert_array_equal(pyml.kmeans_assign(X, C, backend=b)[0], want, err_msg=b)


def test_sizes_are_not_narrowed_to_32_bits():
    # n, d and k travel as int64 / Py_ssize_t through every compiled kmeans kernel; only the
    # BLAS calls take Fortran ints, behind an explicit check (issue: silent wrap above 2^31 - 1)
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in ("csrc/kmeans.cpp", "csrc/kmeans_fused.hpp", "csrc/kmeans_seed.hpp",
                 "csrc/kmeans_update.hpp", "csrc/kmeans_plusplus.hpp", "csrc/kmeans_screen.hpp"):
        src = (root / name).read_text()
        assert "static_cast<int>" not in src, name
        assert "int d," not in src and "int k," not in src and "int k_" not in src, name
    pyx = (root / "csrc/kmeans.pyx").read_text()
    assert "<int>X.shape" not in pyx and "<int>C.shape" not in pyx
    assert "2147483647" in pyx  # the BLAS-int check
    cu = (root / "kernels/cuda/kmeans.cu").read_text()
    assert "int n, int k, int d" not in cu and "long long n" in cu
