"""k-means driver: Lloyd / k-medians iterations, convergence and backend dispatch.

One driver for every backend; only the four kernels differ (see the KernelTables). The
kernels share one contract:

    assign(X, C) -> (labels int32 (n,), dist (n,))    squared L2 or L1 distance to the chosen centre
    update(X, w, labels, dist, C) -> C_new             weighted means / coordinate medians, empty
                                                       clusters refilled by relocate_empty's rule
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterator

import numpy as np

from ._backend import KernelTable, array_module, is_cupy

_REF = "pyml.reference.kmeans"
_NB = "pyml.kernels.numba.kmeans"
_CPP = "pyml._cpp.kmeans"
_CY = "pyml._cython.kmeans"
_CUDA = "pyml._kmeans_cuda"


def _table(name: str, backends: tuple[str, ...]) -> KernelTable:
    where = {"python": _REF, "numba": _NB, "cpp": _CPP, "cython": _CY, "cuda": _CUDA}
    return KernelTable(name, "kmeans", {b: f"{where[b]}:{name}" for b in backends})


ASSIGN = {
    "euclidean": _table("kmeans_assign", ("python", "numba", "cpp", "cython", "cuda")),
    "manhattan": _table("kmedians_assign", ("python", "numba", "cpp")),
}
UPDATE = {
    "euclidean": _table("kmeans_update", ("python", "numba", "cpp", "cuda")),
    "manhattan": _table("kmedians_update", ("python", "numba", "cpp")),
}
METRICS = tuple(ASSIGN)


@lru_cache(maxsize=1)
def _blas_libs() -> tuple:
    # SciPy's BLAS must be loaded before threadpoolctl looks for it; the scan is slow
    # (milliseconds), so it is done once and the library handles are reused.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


@contextlib.contextmanager
def blas_single_thread(backend: str) -> Iterator[None]:
    """The numba/cpp/cython kernels call BLAS once per tile from every parallel thread: keep the
    BLAS itself single-threaded meanwhile so the two thread pools do not oversubscribe."""
    if backend not in ("numba", "cpp", "cython"):
        yield
        return
    libs = _blas_libs()
    old = [lib.get_num_threads() for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, old):
            lib.set_num_threads(n)


def resolve(metric: str, backend: str | None, *arrays: Any) -> str:
    """The concrete backend of the assignment kernel (the one that decides speed)."""
    return ASSIGN[metric].resolve(backend, *arrays)


def _update_backend(metric: str, backend: str, *arrays: Any) -> str:
    # cython has only the assignment kernel: pair it with the fastest available update.
    if backend in UPDATE[metric].backends:
        return backend
    return UPDATE[metric].resolve("auto", *arrays)


@dataclass
class LloydResult:
    centers: Any
    labels: Any
    inertia: float
    n_iter: int
    converged: bool
    history: list[float] = field(default_factory=list)  # objective at each assignment


def lloyd(X, w, C0, *, metric: str = "euclidean", max_iter: int = 300, tol: float = 0.0,
          backend: str | None = None, verbose: int = 0) -> LloydResult:
    """Alternate assignment and centre update until the squared centre shift is <= ``tol``,
    the labels stop changing, or ``max_iter`` updates were made. Inputs are validated by the
    caller (pyml.kmeans); ``w`` is float64, X and C0 share a float dtype."""
    b = resolve(metric, backend, X)
    if b == "cuda" and not is_cupy(X):  # the estimator's NumPy data: iterate on the device
        import cupy

        X, C0 = cupy.asarray(X), cupy.asarray(C0)
    xp = array_module(X)
    w = xp.asarray(w)
    assign = ASSIGN[metric].get(b)
    update = UPDATE[metric].get(_update_backend(metric, b, X))
    C = C0
    prev = None
    history: list[float] = []
    converged, fresh, n_iter = False, False, max_iter
    with blas_single_thread(b):
        for it in range(max_iter):
            labels, dist = assign(X, C)
            history.append(float((w * dist).sum()))
            if verbose:
                print(f"k-means iteration {it}: objective {history[-1]:.6g}")
            if prev is not None and bool(xp.array_equal(labels, prev)):
                converged, fresh, n_iter = True, True, it  # same labels: same centres again
                break
            C_new = update(X, w, labels, dist, C)
            shift = float(((C_new - C) ** 2).sum())
            C, prev = C_new, labels
            if shift <= tol:
                converged, n_iter = True, it + 1
                break
        if not fresh:  # final assignment so that labels_ agree with cluster_centers_
            labels, dist = assign(X, C)
    inertia = float((w * dist).sum())
    if verbose:
        print(f"k-means {'converged' if converged else 'stopped'} after {n_iter} iterations; "
              f"objective {inertia:.6g}")
    return LloydResult(C, labels, inertia, n_iter, converged, history)
