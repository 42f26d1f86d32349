"""k-means and k-medians: ``kmeans_assign``, ``kmeans_plusplus`` and the ``KMeans`` estimator.

API layer: validation and defaults here, iterations in pyml/_kmeans_driver.py, kernels in
kernels/numba/kmeans.py, csrc/kmeans.cpp, csrc/kmeans.pyx and kernels/cuda/kmeans.cu.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _kmeans_driver as drv
from ._backend import BackendUnavailableError, array_module, to_numpy
from ._validation import check_array, check_int, check_random_state, common_float_dtype

__all__ = ["kmeans_assign", "kmeans_plusplus", "KMeans"]


def _check_metric(metric: Any) -> str:
    if metric not in drv.METRICS:
        raise ValueError(f"metric must be one of {drv.METRICS}, got {metric!r}")
    return metric


def _check_weights(sample_weight: Any, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n, np.float64)
    w = check_array(sample_weight, "sample_weight", ndim=1, dtype=np.float64, allow_empty=True)
    w = np.array(to_numpy(w), np.float64)  # always a private copy
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    if (w < 0).any():
        raise ValueError("sample_weight must be non-negative")
    if not w.sum() > 0:
        raise ValueError("sample_weight must have a positive sum (all weights are zero)")
    return w


def kmeans_assign(X, C, metric: str = "euclidean", backend: str = "auto"):
    """Nearest centre of every point: labels and the distance to that centre.

    Parameters
    ----------
    X : array (n, d) of points; C : array (k, d) of centres (NumPy or CuPy).
    metric : "euclidean" (squared L2 distance returned) or "manhattan" (L1 distance).
    backend : "auto", "python", "numba", "cpp", "cython" (euclidean only) or "cuda".

    Returns
    -------
    labels : int32 array (n,), ties go to the smallest centre index.
    dist : array (n,) in the common float dtype of X and C.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> labels, dist = pyml.kmeans_assign(np.array([[0., 0.], [5., 5.]]), np.array([[4., 4.], [0., 1.]]))
    >>> labels.tolist(), dist.tolist()
    ([1, 0], [1.0, 2.0])
    """
    metric = _check_metric(metric)
    X = check_array(X, "X", ndim=2)
    C = check_array(C, "C", ndim=2)
    if C.shape[1] != X.shape[1]:
        raise ValueError(f"C must have {X.shape[1]} features like X, got shape {C.shape}")
    dt = common_float_dtype(X, C)
    X, C = X.astype(dt, copy=False), C.astype(dt, copy=False)
    b = drv.resolve(metric, backend, X, C)
    with drv.blas_single_thread(b):
        return drv.ASSIGN[metric].get(b)(X, C)


def kmeans_plusplus(X, n_clusters: int, sample_weight=None, random_state=None):
    """k-means++ seeding (Arthur & Vassilvitskii; seed 004): each next centre is a point drawn
    with probability proportional to w * D(x)^2, D = distance to the nearest chosen centre.

    Returns ``(centers (n_clusters, d), indices (n_clusters,))``; centers are rows of X.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> X = np.array([[0., 0.], [0., 1.], [10., 10.]])
    >>> centers, idx = pyml.kmeans_plusplus(X, 2, random_state=0)
    >>> sorted(idx.tolist()) in ([0, 2], [1, 2])
    True
    """
    X = check_array(X, "X", ndim=2)
    n = X.shape[0]
    k = check_int(n_clusters, "n_clusters", min_value=1)
    if k > n:
        raise ValueError(f"n_samples={n} should be >= n_clusters={k}")
    w = _check_weights(sample_weight, n)
    rng = check_random_state(random_state)
    idx = _plusplus_indices(np.asarray(to_numpy(X), np.float64), k, w, rng)
    xp = array_module(X)
    return X[xp.asarray(idx)].copy(), idx


def _plusplus_indices(X: np.ndarray, k: int, w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # One uniform per centre inverted through cumsum: the same picks as the reference.
    n = X.shape[0]
    D2 = np.ones(n)
    idx = np.empty(k, np.int64)
    for c in range(k):
        p = w * D2
        cum = np.cumsum(p)
        if not cum[-1] > 0:  # every positive-weight point already chosen (duplicates)
            cum = np.cumsum(w)
        u = rng.random() * cum[-1]
        pick = min(int(np.searchsorted(cum, u, side="right")), n - 1)
        idx[c] = pick
        d2 = ((X - X[pick]) ** 2).sum(axis=1)
        D2 = d2 if c == 0 else np.minimum(D2, d2)
    return idx


from ._kmeans_estimator import KMeans  # noqa: E402  (the estimator uses the functions above)


def _verify(backend: str, rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """Every kmeans kernel of ``backend`` against the reference on small float32/float64
    problems: (check, max error, tolerance) rows for ``pyml verify`` / ``pyml warmup``."""
    from .reference import kmeans as ref

    rows = []
    for metric in drv.METRICS:
        if backend not in drv.ASSIGN[metric].backends:
            continue
        b = drv.resolve(metric, backend)  # raises BackendUnavailableError
        assign = drv.ASSIGN[metric].get(b)
        upd = drv.UPDATE[metric]
        update = upd.get(b) if b in upd.backends else None
        X64 = rng.standard_normal((97, 5)) * 3
        C64 = X64[rng.choice(97, 7, replace=False)] + 0.1
        w = rng.uniform(0.5, 2.0, 97)
        l64, d64 = (ref.kmeans_assign if metric == "euclidean" else ref.kmedians_assign)(X64, C64)
        m64 = (ref.kmeans_update if metric == "euclidean" else ref.kmedians_update)(X64, w, l64, d64, C64)
        for dt in (np.float32, np.float64):
            X, C = X64.astype(dt), C64.astype(dt)
            with drv.blas_single_thread(b):
                labels, dist = assign(X, C)
            dist = to_numpy(dist).astype(np.float64)
            scale = max(1.0, float(np.abs(d64).max()))
            tol = 4 * np.finfo(dt).eps * scale * X.shape[1]
            rows.append((f"{metric} assign {np.dtype(dt).name}", float(np.abs(dist - d64).max()), tol))
            if update is not None:
                m = to_numpy(update(X, w, l64.astype(np.int32), d64.astype(dt), C)).astype(np.float64)
                tol = 4 * np.finfo(dt).eps * max(1.0, float(np.abs(m64).max())) * 8
                rows.append((f"{metric} update {np.dtype(dt).name}", float(np.abs(m - m64).max()), tol))
    if not rows:
        raise BackendUnavailableError(f"kmeans has no {backend!r} kernel")
    return rows
