"""k-means benchmark: the assignment step alone and a 10-iteration Lloyd fit, every pyml
backend against scikit-learn and faiss, all from the same data and the same initial centres.

`pyml bench kmeans` runs :func:`suite`; `pytest benchmarks/bench_kmeans.py` runs the small
pytest-benchmark tests at the bottom.
"""
from __future__ import annotations

import importlib.util
import warnings

import numpy as np

import pyml
from pyml._kmeans_estimator import ConvergenceWarning  # scikit-learn's when installed

try:
    from ._harness import Case, Runner
except ImportError:  # run as a plain module from the source tree
    from _harness import Case, Runner

SIZES = {"default": (200_000, 32, 256), "small": (20_000, 32, 64), "tiny": (2_000, 8, 16)}
ITERS = 10
CPU_BACKENDS = ("numba", "cpp", "cython")


def _problem(size: str):
    n, d, k = SIZES[size]
    X, _, _ = pyml.datasets.make_blobs(n, d, k, cluster_std=4.0, dtype=np.float32, seed=0)
    C0 = X[np.random.default_rng(1).choice(n, k, replace=False)].copy()
    return X, C0


def _backends(backends):
    if backends is None:
        backends = [b for b in CPU_BACKENDS + ("cuda",) if pyml.backends()[b] is None]
    return list(backends)


def _peers(peers):
    have = {"scikit-learn": importlib.util.find_spec("sklearn") is not None,
            "faiss": importlib.util.find_spec("faiss") is not None}
    if peers is None:
        return [p for p, ok in have.items() if ok]
    return [p for p in peers if have.get(p)]


def _assign_runner(b, X, C0):
    def prepare():
        if b == "cuda":
            import cupy as cp

            Xd, Cd = cp.asarray(X), cp.asarray(C0)
            return lambda: pyml.kmeans_assign(Xd, Cd, backend="cuda")
        return lambda: pyml.kmeans_assign(X, C0, backend=b)
    return Runner(f"pyml[{b}]", "pyml", prepare, device="gpu" if b == "cuda" else "cpu")


def _fit_runner(b, X, C0):
    def prepare():
        Xin, Cin = X, C0
        if b == "cuda":
            import cupy as cp

            Xin = cp.asarray(X)
        km = pyml.KMeans(C0.shape[0], init=Cin, n_init=1, max_iter=ITERS, tol=0.0, backend=b)

        def fit():
            with warnings.catch_warnings():  # 10 iterations on purpose: not converged
                warnings.simplefilter("ignore", ConvergenceWarning)
                return km.fit(Xin)
        return fit
    return Runner(f"pyml[{b}]", "pyml", prepare, device="gpu" if b == "cuda" else "cpu")


def _peer_assign(p, X, C0):
    if p == "faiss":
        def prepare():
            import faiss

            index = faiss.IndexFlatL2(X.shape[1])
            index.add(C0)
            return lambda: index.search(X, 1)
    else:
        def prepare():
            from sklearn.metrics import pairwise_distances_argmin_min

            return lambda: pairwise_distances_argmin_min(X, C0)
    return Runner(p, "peer", prepare, note="faiss IndexFlatL2.search" if p == "faiss"
                  else "sklearn pairwise_distances_argmin_min")


def _peer_fit(p, X, C0):
    k, d = C0.shape
    if p == "faiss":
        def prepare():
            import faiss

            # every point every iteration (faiss subsamples to 256 points/centroid by default)
            km = faiss.Kmeans(d, k, niter=ITERS, max_points_per_centroid=X.shape[0], seed=1)
            return lambda: km.train(X, init_centroids=C0)
    else:
        def prepare():
            from sklearn.cluster import KMeans

            km = KMeans(k, init=C0, n_init=1, max_iter=ITERS, tol=0.0, algorithm="lloyd")
            return lambda: km.fit(X)
    return Runner(p, "peer", prepare)


def suite(size: str = "default", backends=None, peers=None) -> list[Case]:
    """The assignment step and a 10-iteration fit on n x d float32 data, k centres."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {tuple(SIZES)}, got {size!r}")
    X, C0 = _problem(size)
    n, d = X.shape
    k = C0.shape[0]
    bs, ps = _backends(backends), _peers(peers)
    problem = f"n={n} d={d} k={k} float32"
    flops = 2.0 * n * k * d
    assign = Case("kmeans assign", problem,
                  [_assign_runner(b, X, C0) for b in bs] + [_peer_assign(p, X, C0) for p in ps],
                  flops=flops, roof="sgemm")
    # a fit = ITERS assignment + update steps (+ pyml's and sklearn's final assignment)
    fit = Case(f"kmeans fit ({ITERS} Lloyd iterations)", problem,
               [_fit_runner(b, X, C0) for b in bs] + [_peer_fit(p, X, C0) for p in ps],
               flops=flops * ITERS, roof="sgemm", per="fit")
    return [assign, fit]


# ----------------------------------------------------------------------- pytest-benchmark
def test_assign_small(benchmark):
    X, C0 = _problem("tiny")
    labels, _ = benchmark(pyml.kmeans_assign, X, C0)
    assert labels.shape == (X.shape[0],)


def test_fit_small(benchmark):
    X, C0 = _problem("tiny")
    km = pyml.KMeans(C0.shape[0], init=C0, max_iter=ITERS, tol=0.0)
    benchmark(km.fit, X)
    assert km.cluster_centers_.shape == C0.shape
