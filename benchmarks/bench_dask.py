"""Scale-out benchmark: pyml.dask.KMeans against dask-ml's KMeans on one dask array (same
initial centres, 10 Lloyd iterations), the in-memory pyml.KMeans beside them, 1 -> 2 workers;
pyml.dask.ALS against pyml.ALS in one process. LocalCluster of processes, 1 thread each.

Each dask row's note gives the bytes moved per iteration: worker-to-worker transfers (from
the workers' transfer logs) plus what the client sends and receives (graph and results).
"""
from __future__ import annotations

import atexit
import importlib.util
import time

import numpy as np

import pyml

try:
    from ._harness import Case, Runner, check_size
except ImportError:  # run as a plain module from the source tree
    from _harness import Case, Runner, check_size

# (n, d, k) for k-means; (users, items, nnz, f) for ALS
KMEANS_SIZES = {"small": (200_000, 32, 64), "default": (2_000_000, 32, 256),
                "large": (8_000_000, 32, 256)}
ALS_SIZES = {"small": (50_000, 20_000, 1_000_000, 32), "default": (200_000, 50_000, 5_000_000, 64),
             "large": (500_000, 100_000, 20_000_000, 64)}
ITERS = 10
_clusters: dict[int, tuple] = {}


def _client(workers: int):
    """A LocalCluster of ``workers`` processes x 1 thread (started once, closed at exit)."""
    from distributed import Client, LocalCluster

    if workers not in _clusters:
        for other in list(_clusters):  # one cluster at a time: they share the 2 cores
            _close(other)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        _clusters[workers] = (cluster, Client(cluster))  # the default client of dask.compute
    return _clusters[workers][1]


def _close(workers: int) -> None:
    cluster, client = _clusters.pop(workers)
    client.close()
    cluster.close()


atexit.register(lambda: [_close(w) for w in list(_clusters)])


def _transferred(client) -> float:
    logs = client.run(lambda dask_worker: sum(e.get("total", 0) for e in
                                              dask_worker.transfer_incoming_log))
    return float(sum(logs.values()))


def _dask_runner(label, kind, workers, make_fit, X, per_iter_result_bytes):
    """``make_fit(Xd)`` -> a callable fitting on the persisted dask array Xd."""
    def prepare():
        import dask.array as da
        from distributed import wait

        client = _client(workers)
        Xd = da.from_array(X, chunks=(max(1, len(X) // (4 * workers)), X.shape[1]))
        client.wait_for_workers(workers)
        Xd = client.persist(Xd)
        wait(Xd)  # the chunks in the workers' memory before anything is timed
        fit = make_fit(Xd)
        before = _transferred(client)
        fit()
        moved = (_transferred(client) - before) / ITERS + per_iter_result_bytes(Xd)
        runner.note = f"{workers} worker(s); ~{moved / 1e6:.2f} MB moved per iteration"
        return fit

    runner = Runner(label, kind, prepare)
    return runner


def _kmeans_case(size, backends, peers):
    n, d, k = KMEANS_SIZES[size]
    X, _, _ = pyml.datasets.make_blobs(n, d, k, cluster_std=4.0, dtype=np.float32, seed=0)
    C0 = X[np.random.default_rng(1).choice(n, k, replace=False)].copy()

    def result_bytes(Xd):  # per chunk: sums k x d + counts k (float64); centres out to each
        return 8.0 * (k * d + k + 1) * Xd.numblocks[0] + 4.0 * k * d * Xd.numblocks[0]

    def task_bytes(Xd):  # pyml.dask: the same per task, one task per worker thread
        from pyml.dask._placement import ChunkTasks

        tasks = len(ChunkTasks(Xd).groups())
        return 8.0 * (k * d + k + 1) * tasks + 4.0 * k * d * tasks

    def pyml_fit(Xd):
        return lambda: pyml.dask.KMeans(k, init=C0, max_iter=ITERS, tol=0).fit(Xd)

    def dask_ml_fit(Xd):
        from dask_ml.cluster import KMeans

        return lambda: KMeans(n_clusters=k, init=C0, max_iter=ITERS, tol=0,
                              random_state=0).fit(Xd)

    def in_memory():
        return lambda: pyml.KMeans(k, init=C0, n_init=1, max_iter=ITERS, tol=0).fit(X)

    runners = [_dask_runner("pyml.dask (2 workers)", "pyml", 2, pyml_fit, X, task_bytes),
               _dask_runner("pyml.dask (1 worker)", "pyml", 1, pyml_fit, X, task_bytes),
               Runner("pyml.KMeans in memory", "pyml", in_memory, note="one process, 2 threads")]
    if (peers is None or "dask-ml" in peers) and importlib.util.find_spec("dask_ml"):
        runners.insert(1, _dask_runner("dask-ml (2 workers)", "peer", 2, dask_ml_fit, X,
                                       result_bytes))
    # 1-worker runs last would restart the 2-worker cluster; order: 2-worker rows first
    runners.sort(key=lambda r: "1 worker" in r.label)
    return Case("dask kmeans fit (10 Lloyd iterations)", f"n={n} d={d} k={k} float32", runners,
                flops=2.0 * n * d * k, roof="sgemm", per="iteration", calls=ITERS)


def _als_case(size, backends, peers):
    users, items, nnz, f = ALS_SIZES[size]
    R, _ = pyml.datasets.synthetic_ratings(users, items, nnz, implicit=True, seed=0)
    kw = dict(factors=f, regularization=0.01, alpha=1.0, iterations=3, cg_steps=3,
              random_state=0)

    def dask_fit():
        _client(2)
        m = pyml.dask.ALS(implicit=True, **kw)
        return lambda: m.fit(R)

    def dask_setup():  # partitioning and persisting the blocks: a fit of 0 iterations
        t0 = time.perf_counter()
        pyml.dask.ALS(implicit=True, **{**kw, "iterations": 0}).fit(R)
        return time.perf_counter() - t0

    def local_fit():
        m = pyml.ALS(implicit=True, show_progress=False, **kw)
        return lambda: m.fit(R)

    moved = 4.0 * f * (users + items) * 3  # gathered blocks + one copy per worker (2 workers)
    return Case("dask ALS fit (implicit CG, 3 iterations)",
                f"{users}x{items} nnz={nnz} f={f} float32",
                [Runner("pyml.dask.ALS (2 workers)", "pyml", dask_fit, setup=dask_setup,
                        note=f"~{moved / 1e6:.1f} MB factors moved per iteration"),
                 Runner("pyml.ALS in memory", "pyml", local_fit, note="one process, 2 threads")],
                per="iteration", calls=3)


def suite(size: str = "default", backends=None, peers=None) -> list[Case]:
    check_size(size)
    import pyml.dask  # noqa: F401  (needs dask[distributed])

    return [_kmeans_case(size, backends, peers), _als_case(size, backends, peers)]
