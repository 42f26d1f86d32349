"""k-means benchmark: the assignment step alone, a 10-iteration Lloyd fit from given centres,
greedy k-means++ seeding alone (pyml beside scikit-learn's ``kmeans_plusplus``)
(every pyml backend against scikit-learn, scikit-learn-intelex and faiss, same data, same
initial centres), and the fit end to end exactly as a user writes it --
``pyml.KMeans(n_clusters=256, random_state=0, max_iter=10).fit(X)`` on float32 and float64
NumPy data, greedy k-means++ seeding and validation included -- beside the peers' own
default calls.

`pyml bench kmeans` runs :func:`suite`; `pytest benchmarks/bench_kmeans.py` runs the small
pytest-benchmark tests at the bottom. Public API only.
"""
from __future__ import annotations

import importlib.util

import numpy as np

import pyml

try:
    from ._harness import Case, Runner, check_size
    from ._harness import setup_seconds as _setup_seconds
except ImportError:  # run as a plain module from the source tree
    from _harness import Case, Runner, check_size
    from _harness import setup_seconds as _setup_seconds

SIZES = {"default": (200_000, 32, 256), "small": (20_000, 32, 64), "large": (1_000_000, 64, 1024)}
ITERS = 10
CPU_BACKENDS = ("numba", "cpp", "cython")
PEER_MODULES = {"scikit-learn": "sklearn", "sklearnex": "sklearnex", "faiss": "faiss"}
# the kernels whose first call ends the setup of a public call (any backend's spelling)
KERNELS = {"kmeans_assign", "kmedians_assign", "kmeans_plusplus_step"}
# backends whose kernel calls a profile hook sees by name (pybind builtins, Python functions);
# numba dispatchers, Cython functions and CUDA launches raise no such event, so those rows
# print no setup (the driver and validation they run are the same as cpp's)
TRACEABLE = ("python", "cpp")


def _problem(size: str, dtype=np.float32):
    n, d, k = SIZES[size]
    X, _, _ = pyml.datasets.make_blobs(n, d, k, cluster_std=4.0, dtype=dtype, seed=0)
    C0 = X[np.random.default_rng(1).choice(n, k, replace=False)].copy()
    return X, C0


def _backends(backends):
    if backends is None:
        backends = [b for b in CPU_BACKENDS + ("cuda",) if pyml.backends()[b] is None]
    return list(backends)


def _peers(peers):
    have = {p: importlib.util.find_spec(m) is not None for p, m in PEER_MODULES.items()}
    return [p for p in (PEER_MODULES if peers is None else peers) if have.get(p)]


def setup_seconds(call) -> float:
    """_harness.setup_seconds with this loop's kernel names."""
    return _setup_seconds(call, KERNELS, python_frames=True)


def _assign_runner(b, X, C0):
    def prepare():
        if b == "cuda":
            import cupy as cp

            Xd, Cd = cp.asarray(X), cp.asarray(C0)
            return lambda: pyml.kmeans_assign(Xd, Cd, backend="cuda")
        return lambda: pyml.kmeans_assign(X, C0, backend=b)
    return Runner(f"pyml[{b}]", "pyml", prepare, device="gpu" if b == "cuda" else "cpu",
                  setup=(lambda: setup_seconds(lambda: pyml.kmeans_assign(X, C0, backend=b)))
                  if b in TRACEABLE else None)


def _fit_runner(b, X, C0):
    def make():
        return pyml.KMeans(C0.shape[0], init=C0, n_init=1, max_iter=ITERS, tol=0.0, backend=b)

    def prepare():
        Xin = X
        if b == "cuda":
            import cupy as cp

            Xin = cp.asarray(X)
        km = make()
        return lambda: km.fit(Xin)
    return Runner(f"pyml[{b}]", "pyml", prepare, device="gpu" if b == "cuda" else "cpu",
                  setup=(lambda: setup_seconds(lambda: make().fit(X))) if b in TRACEABLE else None)


def _peer_assign(p, X, C0):
    if p == "faiss":
        def prepare():
            import faiss

            index = faiss.IndexFlatL2(X.shape[1])
            index.add(C0)
            return lambda: index.search(X, 1)
        note = "faiss IndexFlatL2.search"
    elif p == "sklearnex":
        return None  # sklearnex has no public assignment call besides KMeans.predict
    else:
        def prepare():
            from sklearn.metrics import pairwise_distances_argmin_min

            return lambda: pairwise_distances_argmin_min(X, C0)
        note = "sklearn pairwise_distances_argmin_min"
    return Runner(p, "peer", prepare, note=note)


def _sk_kmeans(p):
    if p == "sklearnex":
        from sklearnex.cluster import KMeans
    else:
        from sklearn.cluster import KMeans
    return KMeans


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
            km = _sk_kmeans(p)(k, init=C0, n_init=1, max_iter=ITERS, tol=0.0, algorithm="lloyd")
            return lambda: km.fit(X)
    return Runner(p, "peer", prepare)


def _e2e_pyml(X, k, init="k-means++"):
    """The default call, or (``init="random"``) the like-for-like of faiss's random seeding."""
    opt = {} if init == "k-means++" else {"init": init, "n_init": 1}  # faiss: one run

    def call():
        return pyml.KMeans(n_clusters=k, random_state=0, max_iter=ITERS, **opt).fit(X)

    def prepare():
        return call
    what = ("greedy k-means++ included" if init == "k-means++" else
            f"init={init!r}, the seeding faiss uses (not the default)")
    args = "" if init == "k-means++" else f", init={init!r}, n_init=1"
    return Runner("pyml" if init == "k-means++" else f"pyml init={init!r}", "pyml", prepare,
                  setup=lambda: setup_seconds(call),
                  note=f"pyml.KMeans(n_clusters, random_state=0, max_iter=10{args}).fit(X): {what}")


def _e2e_peer(p, X, k):
    d = X.shape[1]
    if p == "faiss":
        def prepare():
            import faiss

            # faiss seeds with random points (no k-means++) and needs float32
            def call():
                km = faiss.Kmeans(d, k, niter=ITERS, seed=0, max_points_per_centroid=X.shape[0])
                km.train(np.ascontiguousarray(X, dtype=np.float32))
                return km
            return call
        note = "faiss.Kmeans(d, k, niter=10).train(X): random seeding, float32 only"
    else:
        def prepare():
            return lambda: _sk_kmeans(p)(n_clusters=k, random_state=0, max_iter=ITERS).fit(X)
        seeding = "greedy k-means++" if p == "scikit-learn" else "oneDAL k-means++"
        note = f"{p} KMeans(n_clusters, random_state=0, max_iter=10).fit(X): {seeding}"
    return Runner(p, "peer", prepare, note=note)


def _seeding(X, k, ps):
    """Greedy k-means++ alone (2 + ln k local trials), pyml's public call beside scikit-learn's."""
    n, d = X.shape
    trials = 2 + int(np.log(k))
    runners = [Runner("pyml", "pyml", lambda: (lambda: pyml.kmeans_plusplus(X, k, random_state=0)),
                      note="pyml.kmeans_plusplus(X, k, random_state=0)")]
    if "scikit-learn" in ps:
        def prepare():
            from sklearn.cluster import kmeans_plusplus

            return lambda: kmeans_plusplus(X, k, random_state=0)
        runners.append(Runner("scikit-learn", "peer", prepare,
                              note="sklearn.cluster.kmeans_plusplus(X, k, random_state=0)"))
    # per step: every point against every candidate (subtract, multiply, add per coordinate)
    return Case("kmeans++ seeding", f"n={n} d={d} k={k} float32", runners,
                flops=3.0 * n * d * (k - 1) * trials, roof="sgemm")


def suite(size: str = "default", backends=None, peers=None) -> list[Case]:
    """The assignment step, a 10-iteration fit from given centres, and the fit end to end
    (float32 and float64) on n x d data with k centres."""
    check_size(size)
    X, C0 = _problem(size)
    n, d = X.shape
    k = C0.shape[0]
    bs, ps = _backends(backends), _peers(peers)
    problem = f"n={n} d={d} k={k} float32"
    flops = 2.0 * n * k * d
    assign = Case("kmeans assign", problem,
                  [_assign_runner(b, X, C0) for b in bs]
                  + [r for r in (_peer_assign(p, X, C0) for p in ps) if r is not None],
                  flops=flops, roof="sgemm")
    # a fit = ITERS assignment + update steps (+ pyml's and sklearn's final assignment)
    fit = Case(f"kmeans fit ({ITERS} Lloyd iterations)", problem,
               [_fit_runner(b, X, C0) for b in bs] + [_peer_fit(p, X, C0) for p in ps],
               flops=flops * ITERS, roof="sgemm", per="fit")
    cases = [assign, fit, _seeding(X, k, ps)]
    for dt, roof in ((np.float32, "sgemm"), (np.float64, "dgemm")):
        Xu = X if dt == np.float32 else X.astype(dt)  # as a user has it: NumPy, C order
        cases.append(Case("kmeans fit end to end", f"n={n} d={d} k={k} {np.dtype(dt).name}",
                          [_e2e_pyml(Xu, k)]
                          + ([_e2e_pyml(Xu, k, "random")] if "faiss" in ps and dt == np.float32
                             else [])
                          + [_e2e_peer(p, Xu, k) for p in ps],
                          flops=flops * ITERS, roof=roof, per="fit"))
    return cases


# ----------------------------------------------------------------------- pytest-benchmark
def test_assign_small(benchmark):
    X, C0 = _problem("small")
    labels, _ = benchmark(pyml.kmeans_assign, X, C0)
    assert labels.shape == (X.shape[0],)


def test_fit_small(benchmark):
    X, C0 = _problem("small")
    km = pyml.KMeans(C0.shape[0], init=C0, max_iter=ITERS, tol=0.0)
    benchmark(km.fit, X)
    assert km.cluster_centers_.shape == C0.shape
