"""Every CUDA kernel of pyml executed on the CPU (tests/cuda_cpu: CUDA's execution model for g++ plus a
stand-in for CuPy), through pyml's public API with backend="cuda": the real host glue (grid sizes, argument
types, dtype suffixes, shared-memory sizes) and the real kernels, against the pure-Python reference.

Shapes are small and awkward (1, 7, 37, 113: never a multiple of a tile), threads of a block and blocks run
forward, reverse and in random order. What this proves and what it does not: see tests/cuda_cpu/README.md.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.sparse as sp

import pyml
from conftest import assert_close

pytestmark = [pytest.mark.cuda_cpu,
              pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA-on-CPU emulator needs g++")]

cuda_cpu = pytest.importorskip("cuda_cpu")
DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module", autouse=True)
def cupy():
    """The stand-in CuPy as ``cupy`` for this module's tests (pyml's caches cleared on the way in and out)."""
    cuda_cpu.install()
    cuda_cpu.set_schedule("cycle")
    import cupy as cp

    yield cp
    cuda_cpu.uninstall()


def _ref(fn, *args, **kw):
    """The python backend on float64 copies of the array arguments."""
    cast = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    return fn(*cast, backend="python", **kw)


def _host(x):
    return x.get() if pyml._backend.is_cupy(x) else np.asarray(x)


# ------------------------------------------------------------------------------------------ k-means
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,k", [(1, 1, 1), (113, 7, 5), (300, 3, 70), (37, 130, 3)])
def test_kmeans_assign(cupy, rng, dtype, n, d, k):
    X = rng.standard_normal((n, d)).astype(dtype)
    C = rng.standard_normal((k, d)).astype(dtype)
    lab_ref, d_ref = pyml.kmeans_assign(X.astype(np.float64), C.astype(np.float64), backend="python")
    for Xi, Ci in ((cupy.asarray(X), cupy.asarray(C)), (X, C)):  # device arrays, and host arrays moved by the glue
        lab, dist = pyml.kmeans_assign(Xi, Ci, backend="cuda")
        assert pyml._backend.is_cupy(lab) == pyml._backend.is_cupy(Xi)
        lab, dist = _host(lab), _host(dist)
        # the chosen centre is a nearest one (float32 may break near-ties differently)
        D = ((X.astype(np.float64)[:, None, :] - C.astype(np.float64)[None]) ** 2).sum(-1)
        tol = 64 * np.finfo(dtype).eps * max(1.0, float(D.max()))
        assert np.all(D[np.arange(n), lab] <= d_ref + tol)
        if dtype == np.float64:
            np.testing.assert_array_equal(lab, lab_ref)
        assert_close(dist, d_ref, d_ref.astype(dtype), dtype, "kmeans_assign distances")


@pytest.mark.parametrize("dtype", DTYPES)
def test_kmeans_fit_update(cupy, rng, dtype):
    """Lloyd iterations on the device: assignment + weighted sums (atomics) + empty-cluster relocation."""
    X = np.concatenate([rng.standard_normal((40, 5)) + 6 * c for c in range(3)]).astype(dtype)
    C0 = np.concatenate([X[:3], X[-1:] + 50]).astype(dtype)  # the far centre ends up empty: relocation path
    w = rng.uniform(0.5, 2.0, len(X))
    ref = pyml.KMeans(4, init=C0.astype(np.float64), n_init=1, max_iter=5, backend="python").fit(
        X.astype(np.float64), sample_weight=w)
    for Xi in (X, cupy.asarray(X)):
        km = pyml.KMeans(4, init=C0, n_init=1, max_iter=5, backend="cuda").fit(Xi, sample_weight=w)
        centres = _host(km.cluster_centers_)
        assert_close(centres, ref.cluster_centers_, ref.cluster_centers_.astype(dtype), dtype, "KMeans centres")
        np.testing.assert_array_equal(_host(km.labels_), ref.labels_)


# ------------------------------------------------------------------------------------------ value iteration
def _mdp(rng, A, S, sparse):
    P = rng.random((A, S, S)) * (rng.random((A, S, S)) < (0.2 if sparse else 1.0))
    P[:, np.arange(S), np.arange(S)] += 1e-3  # every row has a successor
    P /= P.sum(-1, keepdims=True)
    return P, rng.standard_normal((S, A))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("A,S", [(1, 1), (3, 37), (2, 113)])
def test_value_iteration_dense(cupy, rng, dtype, A, S):
    P, R = _mdp(rng, A, S, False)
    ref = pyml.value_iteration(P, R, 0.9, backend="python")
    for Pi, Ri in ((P.astype(dtype), R), (cupy.asarray(P.astype(dtype)), cupy.asarray(R))):
        res = pyml.value_iteration(Pi, Ri, 0.9, backend="cuda")
        V = _host(res.V)
        assert np.max(np.abs(V - ref.V)) <= (1e-9 if dtype == np.float64 else 1e-4) * max(1, np.abs(ref.V).max())
        np.testing.assert_array_equal(_host(res.policy), ref.policy)


@pytest.mark.parametrize("dtype", DTYPES)
def test_value_iteration_sparse(cupy, rng, dtype):
    P, R = _mdp(rng, 3, 57, True)
    mats = [sp.csr_matrix(P[a].astype(dtype)) for a in range(3)]
    ref = pyml.value_iteration([sp.csr_matrix(P[a]) for a in range(3)], R, 0.95, backend="python")
    res = pyml.value_iteration(mats, R, 0.95, backend="cuda")
    assert np.max(np.abs(_host(res.V) - ref.V)) <= (1e-9 if dtype == np.float64 else 1e-4) * np.abs(ref.V).max()
    np.testing.assert_array_equal(_host(res.policy), ref.policy)


def test_policy_iteration_fixed_policy_sweeps(cupy, rng):
    """Iterative policy evaluation runs the kernels' fixed-policy branch."""
    P, R = _mdp(rng, 4, 29, False)
    ref = pyml.policy_iteration(P, R, 0.9, backend="python")
    res = pyml.policy_iteration(P, R, 0.9, evaluation="iterative", backend="cuda")
    np.testing.assert_array_equal(_host(res.policy), ref.policy)
    assert np.max(np.abs(_host(res.V) - ref.V)) <= 1e-6 * np.abs(ref.V).max()
