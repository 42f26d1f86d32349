"""Scale-out benchmark: pyml.dask.KMeans against dask-ml's KMeans on one dask array (same
initial centres, 10 Lloyd iterations), the in-memory pyml.KMeans beside them, 1 -> 2 workers;
pyml.dask.ALS on ratings generated per partition against pyml.ALS in one process.
LocalClusters of processes, 1 thread each.

The rows of a case are timed interleaved (one fit of each per round, both clusters up), so
their ratios are side by side, not minutes apart under changing load. Each dask row's note
gives the bytes moved per iteration: worker-to-worker transfers (from the workers' transfer
logs) plus what the client sends and receives (graph and results), and how the chunks lie.
"""
from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import time
from typing import Any

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
    """A LocalCluster of ``workers`` processes x 1 thread (started once, kept up beside the
    others so that interleaved rows can alternate between them, closed at exit)."""
    from distributed import Client, LocalCluster

    if workers not in _clusters:
        logging.getLogger("distributed").setLevel(logging.ERROR)  # no INFO lines at exit
        env = dict(os.environ)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        # A Nanny sets its workers' environment (distributed.nanny.pre-spawn-environ:
        # OMP_NUM_THREADS=1, ...) in this process's os.environ too: OpenMP started after
        # that would run the in-memory row on one thread. This process keeps its own.
        for key in set(os.environ) - set(env):
            del os.environ[key]
        os.environ.update(env)
        client = Client(cluster, set_as_default=False)  # each fit runs under as_current()
        client.wait_for_workers(workers)
        _clusters[workers] = (cluster, client)
    return _clusters[workers][1]


def _close(workers: int) -> None:
    cluster, client = _clusters.pop(workers)
    client.close()
    cluster.close()


atexit.register(lambda: [_close(w) for w in list(_clusters)])


def _on(client, fit):
    """``fit`` run with ``client`` as the current client (dask.compute and pyml.dask use it)."""
    def call():
        with client.as_current():
            return fit()
    return call


def _placement(client, Xd) -> str:
    """Rows per worker of the persisted ``Xd``, e.g. "rows per worker 1000000/1000000"."""
    from distributed import futures_of

    who = client.who_has(futures_of(Xd))
    rows = dict.fromkeys(client.nthreads(), 0)
    for fut, n in zip(futures_of(Xd), Xd.chunks[0]):
        for w in who.get(fut.key, ())[:1]:
            rows[w] += int(n)
    return "rows per worker " + "/".join(str(r) for r in sorted(rows.values(), reverse=True))


def _transferred(client) -> float:
    logs = client.run(lambda dask_worker: sum(e.get("total", 0) for e in
                                              dask_worker.transfer_incoming_log))
    return float(sum(logs.values()))


def _persist_evenly(client, X, chunks_per_worker: int = 4):
    """X as a dask array persisted with the same number of rows on every worker (Dask's own
    placement of ``persist(da.from_array(X))`` may put 5 chunks on one worker and 3 on the
    other, which would blur the 1 -> 2 worker scaling): chunk i is scattered to worker
    i mod W, and the persisted chunks are computed where their data lies."""
    import dask.array as da
    from distributed import wait

    workers = sorted(client.nthreads())
    parts = np.array_split(np.arange(len(X)), chunks_per_worker * len(workers))
    blocks = []
    with client.as_current():
        for i, idx in enumerate(p for p in parts if len(p)):
            fut = client.scatter(X[idx[0]:idx[-1] + 1], workers=[workers[i % len(workers)]])
            blocks.append(da.from_delayed(fut, (len(idx), X.shape[1]), dtype=X.dtype))
        Xd = client.persist(da.concatenate(blocks))
        wait(Xd)  # the chunks in the workers' memory before anything is timed
    return Xd


def _dask_runner(label, kind, workers, make_fit, X, per_iter_result_bytes):
    """``make_fit(Xd)`` -> a callable fitting on the persisted dask array Xd."""
    def prepare():
        client = _client(workers)
        Xd = _persist_evenly(client, X)
        fit = _on(client, make_fit(Xd))
        before = _transferred(client)
        fit()
        moved = (_transferred(client) - before) / ITERS + per_iter_result_bytes(Xd)
        runner.note = (f"{workers} worker(s), {_placement(client, Xd)}; "
                       f"~{moved / 1e6:.2f} MB moved per iteration")
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
    return Case("dask kmeans fit (10 Lloyd iterations)", f"n={n} d={d} k={k} float32", runners,
                flops=2.0 * n * d * k, roof="sgemm", per="iteration", calls=ITERS,
                interleave=True)


def _ratings_part(p: int, lo: int, hi: int, n_items: int, nnz: int):
    """Partition ``p``: the ratings of users [lo, hi) as a (user, item, rating) frame, made on
    the worker that reads it (power-law activity and popularity, implicit counts)."""
    import pandas as pd

    R, _ = pyml.datasets.synthetic_ratings(hi - lo, n_items, nnz, implicit=True,
                                             seed=np.random.default_rng([0, p]))
    R = R.tocoo()
    return pd.DataFrame({"user": R.row.astype(np.int64) + lo, "item": R.col.astype(np.int64),
                         "rating": R.data})


def _ratings_frame(users: int, items: int, nnz: int, parts: int):
    """A dask dataframe of ``nnz`` ratings in ``parts`` partitions, generated per partition
    (never whole on the client)."""
    import dask
    import dask.dataframe as dd
    import pandas as pd

    ub = np.linspace(0, users, parts + 1).round().astype(np.int64)
    nb = np.linspace(0, nnz, parts + 1).round().astype(np.int64)
    meta = pd.DataFrame({"user": np.empty(0, np.int64), "item": np.empty(0, np.int64),
                         "rating": np.empty(0, np.float32)})
    return dd.from_delayed([dask.delayed(_ratings_part)(p, int(ub[p]), int(ub[p + 1]), items,
                                                       int(nb[p + 1] - nb[p]))
                            for p in range(parts)], meta=meta, verify_meta=False)


def _als_case(size, backends, peers):
    import scipy.sparse as sp

    users, items, nnz, f = ALS_SIZES[size]
    kw = dict(factors=f, regularization=0.01, alpha=1.0, iterations=3, cg_steps=3,
              random_state=0)
    shape = (users, items)
    lazy = _ratings_frame(users, items, nnz, parts=16)
    held: dict[str, Any] = {}

    def frame():  # generated once on the workers and kept there: fits time ALS, not the data
        if "frame" not in held:
            from distributed import wait

            client = _client(2)
            with client.as_current():
                held["frame"] = client.persist(lazy)
                wait(held["frame"])
        return held["frame"]

    def dask_fit():
        client, df = _client(2), frame()
        m = pyml.dask.ALS(implicit=True, **kw)
        fit = _on(client, lambda: m.fit(df, shape=shape))
        before = _transferred(client)
        fit()  # one fit to read the workers' transfer logs (also the first warm-up)
        logged = (_transferred(client) - before) / kw["iterations"]
        dask_runner.note = (f"ratings generated in 16 partitions on the workers; {logged / 1e6:.1f}"
                            f" MB per iteration between workers (transfer logs; formula "
                            f"4f(n_users + n_items)(1 + W): {moved / 1e6:.1f} MB)")
        return fit

    def dask_setup():  # partitioning the ratings into persisted blocks: a fit of 0 iterations
        t0 = time.perf_counter()
        with _client(2).as_current():
            pyml.dask.ALS(implicit=True, **{**kw, "iterations": 0}).fit(frame(), shape=shape)
        return time.perf_counter() - t0

    def local_fit():  # the same ratings gathered into one process (the largest that fits)
        with _client(2).as_current():
            df = frame().compute()
        R = sp.csr_matrix((df["rating"].to_numpy(), (df["user"].to_numpy(),
                                                     df["item"].to_numpy())), shape=shape)
        del df
        m = pyml.ALS(implicit=True, show_progress=False, **kw)
        return lambda: m.fit(R)

    moved = 4.0 * f * (users + items) * 3  # gathered blocks + one copy per worker (2 workers)
    dask_runner = Runner("pyml.dask.ALS (2 workers)", "pyml", dask_fit, setup=dask_setup)
    return Case("dask ALS fit (implicit CG, 3 iterations)",
                f"{users}x{items} nnz={nnz} f={f} float32",
                [dask_runner,
                 Runner("pyml.ALS in memory", "pyml", local_fit, note="one process, 2 threads")],
                per="iteration", calls=3, interleave=True)


def suite(size: str = "default", backends=None, peers=None) -> list[Case]:
    check_size(size)
    import pyml.dask  # noqa: F401  (needs dask[distributed])

    return [_kmeans_case(size, backends, peers), _als_case(size, backends, peers)]
