"""`pyml warmup`: compile and cache every Numba kernel at the argument types the public API
passes it, by calling the public functions once on tiny inputs with ``backend="numba"`` (no
reference and no checks: that is `pyml verify`). Later processes then load the kernels from
Numba's cache (``cache=True``) instead of compiling them.

Dtypes: each call is compiled for the dtype the public API computes in by default -- the
input's, and arrays NumPy builds are float64 (kmeans, conv, attention, mdp); ALS and mf_sgd
compute in their ``dtype=`` argument, float32 by default (mf). ``dtypes`` (``pyml warmup
--dtype float32 float64``) compiles others too. Calls with a non-default option (k-medians,
the ALS training loss, 64-bit CSR indices) only with ``everything`` (``pyml warmup --all``,
every option in both dtypes); whatever is not warmed up is compiled, once, on first use.

The work is split into jobs that run in worker processes, one per CPU. A Numba function
must be compiled by one process only: Numba saves a function's cache index by read-modify-
write without a lock, so two processes adding signatures of one function at once lose
entries (or leave an entry naming the other's data file). Each job below therefore owns the
kernels its calls reach, and no two jobs reach the same one.

Not compiled here (compiled and cached on first use instead): the direct conv2d forward of
numba (taken only with check_finite=False and a non-finite weight), the Dask block backup
(pyml.dask) and readonly input arrays (Numba types them apart from writable ones).
"""
from __future__ import annotations

import multiprocessing
import queue as queue_module
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator

import numpy as np

DTYPES = (np.float32, np.float64)  # a call compiled per dtype
EXTRA = (np.float32, np.float64)   # the same, for a non-default option: only with everything=True
ONE = (np.float64,)                # a call whose kernels do not depend on the dtype
DEFAULT_DTYPE = {"kmeans": np.float64, "conv": np.float64, "attention": np.float64,
                 "mf": np.float32, "mdp": np.float64}
NB = "numba"

# job -> its hot loop; longest first (measured from an empty cache), so the workers end together
JOBS = {"mf": "mf", "conv:backward": "conv", "kmeans": "kmeans", "mdp:solve": "mdp",
        "attention:backward": "attention", "conv:pool": "conv", "attention:forward": "attention",
        "conv:forward": "conv", "mdp:td": "mdp"}

Call = tuple[str, tuple, Callable]


def _kmeans(job: str, g: np.random.Generator) -> list[Call]:
    import pyml

    X = g.standard_normal((64, 3))

    def fit(metric):
        return lambda dt: pyml.KMeans(4, n_init=1, max_iter=2, metric=metric, random_state=0,
                                      backend=NB).fit(X.astype(dt))

    return [("kmeans_assign", DTYPES,
             lambda dt: pyml.kmeans_assign(X.astype(dt), X[:4].astype(dt), backend=NB)),
            ("KMeans.fit", DTYPES, fit("euclidean")),
            ("KMeans.fit metric=manhattan", EXTRA, fit("manhattan"))]


def _conv(job: str, g: np.random.Generator) -> list[Call]:
    import pyml

    x, w = g.standard_normal((2, 3, 6, 5)), g.standard_normal((4, 3, 3, 3))
    gy, gz = g.standard_normal((2, 4, 6, 5)), g.standard_normal((2, 3, 3, 2))
    if job == "conv:forward":
        return [("conv2d", DTYPES, lambda dt: pyml.conv2d(
            x.astype(dt), w.astype(dt), w[:, 0, 0, 0].astype(dt), padding=1, backend=NB))]
    if job == "conv:backward":
        return [("conv2d_backward", DTYPES, lambda dt: pyml.conv2d_backward(
            gy.astype(dt), x.astype(dt), w.astype(dt), padding=1, backend=NB))]
    idx = np.zeros(gz.shape, np.int64)
    return [("max_pool2d", DTYPES, lambda dt: pyml.max_pool2d(x.astype(dt), 2, backend=NB)),
            ("max_pool2d_backward", DTYPES,
             lambda dt: pyml.max_pool2d_backward(gz.astype(dt), idx, x.shape, backend=NB)),
            ("avg_pool2d", DTYPES, lambda dt: pyml.avg_pool2d(x.astype(dt), 2, backend=NB)),
            ("avg_pool2d_backward", DTYPES,
             lambda dt: pyml.avg_pool2d_backward(gz.astype(dt), x.shape, 2, backend=NB))]


def _attention(job: str, g: np.random.Generator) -> list[Call]:
    import pyml

    q = g.standard_normal((1, 2, 5, 4))
    if job == "attention:forward":
        return [("attention", DTYPES, lambda dt: pyml.attention(*(q.astype(dt),) * 3, backend=NB))]

    def backward(dt):  # out and lse of the reference: the forward kernel is the other job's
        a = q.astype(dt)
        out, lse = pyml.attention(a, a, a, return_lse=True, backend="python")
        return pyml.attention_backward(a, a, a, a, out.astype(dt), lse.astype(dt), backend=NB)

    return [("attention_backward", DTYPES, backward)]


def _mf(job: str, g: np.random.Generator) -> list[Call]:
    import pyml

    R = abs(pyml.datasets.synthetic_ratings(12, 9, 50, rank=2, seed=0)[0])  # implicit: r >= 0
    R64 = R.copy()  # SciPy's index dtype for matrices past 2**31 entries
    R64.indptr, R64.indices = R.indptr.astype(np.int64), R.indices.astype(np.int64)

    def als(M, **kw):
        return lambda dt: pyml.ALS(factors=3, iterations=1, random_state=0, dtype=dt, backend=NB,
                                   show_progress=False, **kw).fit(M)

    def ranking(dt):
        train, test = pyml.evaluation.train_test_split(R, 0.7, random_state=0)
        model = als(train)(dt)
        return pyml.evaluation.ranking_metrics_at_k(model, train, test, K=3, show_progress=False)

    return [("ALS.fit", DTYPES, als(R)),
            ("ALS.fit int64 indices", EXTRA, als(R64)),
            ("ALS.fit compute_loss=True", EXTRA, als(R, compute_loss=True)),
            ("mf_sgd", DTYPES, lambda dt: pyml.mf_sgd(R, factors=3, epochs=1, dtype=dt, backend=NB)),
            ("evaluation.ranking_metrics_at_k", ONE, ranking)]


def _mdp(job: str, g: np.random.Generator) -> list[Call]:
    import scipy.sparse as sp

    import pyml

    if job == "mdp:td":
        env = pyml.envs.CliffWalking()
        return [("q_learning", ONE, lambda dt: pyml.q_learning(env, episodes=2, backend=NB)),
                ("sarsa", ONE, lambda dt: pyml.sarsa(env, episodes=2, backend=NB))]
    P = g.random((2, 5, 5))
    P /= P.sum(axis=2, keepdims=True)
    R = g.standard_normal((5, 2))

    def vi(sparse):
        return lambda dt: pyml.value_iteration(
            [sp.csr_matrix(p.astype(dt)) for p in P] if sparse else P.astype(dt), R.astype(dt),
            0.9, max_iter=3, backend=NB)

    return [("value_iteration dense", DTYPES, vi(False)),
            ("value_iteration sparse", DTYPES, vi(True))]


_CALLS = {"kmeans": _kmeans, "conv": _conv, "attention": _attention, "mf": _mf, "mdp": _mdp}


def jobs(loops) -> list[str]:
    return [j for j, loop in JOBS.items() if loop in loops]


def _compiles(call: Callable, dt) -> int:
    """Run ``call(dt)``; the number of Numba compilations it caused (0: all from the cache)."""
    from numba.core import event

    with event.install_recorder("numba:compile") as rec:
        call(dt)
    return sum(1 for _, ev in rec.buffer if ev.is_start)


def rows(job: str, dtypes=None, everything: bool = False
         ) -> Iterator[tuple[str, str, str, float, str]]:
    """``(loop, call, dtype, seconds, result)`` as each warmup call of ``job`` finishes, for
    ``dtypes`` (default: the loop's default dtype, see the module doc), with ``everything``
    also the non-default options and both dtypes; result is "compiled N" (kernels compiled),
    "loaded" (all from the cache) or "FAIL: error"."""
    loop = JOBS[job]
    chosen = (DTYPES if everything else
              tuple(dtypes) if dtypes else (DEFAULT_DTYPE[loop],))
    for what, kinds, call in _CALLS[loop](job, np.random.default_rng(0)):
        if kinds is EXTRA and not everything:
            continue
        for dt in (ONE if kinds is ONE else chosen):
            t0 = time.perf_counter()
            try:
                n = _compiles(call, dt)
                result = f"compiled {n}" if n else "loaded"
            except Exception as exc:  # reported, and the exit status says so
                result = f"FAIL: {type(exc).__name__}: {exc}"
            name = "-" if kinds is ONE else np.dtype(dt).name
            yield loop, what, name, time.perf_counter() - t0, result


_queue = None  # a worker's channel to the parent


def _start_worker(q) -> None:
    global _queue
    _queue = q


def _run_job(job: str, dtypes, everything: bool) -> None:
    for row in rows(job, dtypes, everything):
        _queue.put(row)
    _queue.put(None)  # this job is done


def run(loops, workers: int, dtypes=None, everything: bool = False
        ) -> Iterator[tuple[str, str, str, float, str]]:
    """Every row of the jobs of ``loops``, as they finish, from ``workers`` processes (in this
    process when ``workers`` is 1)."""
    todo = jobs(loops)
    if workers <= 1 or len(todo) == 1:
        for job in todo:
            yield from rows(job, dtypes, everything)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may run threads
    q = ctx.Queue()
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx, initializer=_start_worker,
                             initargs=(q,)) as pool:
        futures = [pool.submit(_run_job, job, dtypes, everything) for job in todo]
        pending = len(todo)
        while pending:
            try:
                row = q.get(timeout=0.5)
            except queue_module.Empty:
                for f in futures:  # a worker that died never sends its end mark
                    if f.done() and f.exception() is not None:
                        raise f.exception()
                continue
            if row is None:
                pending -= 1
            else:
                yield row
