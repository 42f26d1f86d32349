"""CuPy driver of kernels/cuda/kmeans.cu: the cuda backend's ``kmeans_assign`` and ``kmeans_update``
with the same contract as the CPU kernels. CuPy in, CuPy out (NumPy in, NumPy out).

Written and compiled (nvcc -ptx sm_80/sm_90) on a machine without a GPU; the GPU tests
(@pytest.mark.gpu) exercise it where a device exists.
"""
from __future__ import annotations

import numpy as np

from ._backend import is_cupy

_THREADS = 128
_TILE = 64  # KM_TILE in kmeans.cu


def _cp():
    import cupy

    return cupy


def _suffix(dtype) -> str:
    return "f32" if np.dtype(dtype) == np.float32 else "f64"


def kmeans_assign(X, C):
    """(labels int32, squared distance) of every row of X to its nearest row of C."""
    cp = _cp()
    from .kernels.cuda import module

    host = not is_cupy(X)
    X, C = cp.ascontiguousarray(cp.asarray(X)), cp.ascontiguousarray(cp.asarray(C, dtype=X.dtype))
    n, d = X.shape
    k = C.shape[0]
    labels = cp.empty(n, cp.int32)
    dist = cp.empty(n, X.dtype)
    kern = module("kmeans").get_function(f"kmeans_assign_{_suffix(X.dtype)}")
    kern(((n + _THREADS - 1) // _THREADS,), (_THREADS,),
         (X, C, np.int32(n), np.int32(k), np.int32(d), labels, dist),
         shared_mem=_TILE * d * X.dtype.itemsize)
    return (labels.get(), dist.get()) if host else (labels, dist)


def relocate_empty(w, labels, dist, k: int):
    """pyml.reference.kmeans.relocate_empty on the device: the empty clusters (zero weight,
    ascending) take the positive-weight points in (distance desc, index asc) order."""
    cp = _cp()
    W = cp.bincount(labels, weights=w, minlength=k)
    empty = cp.flatnonzero(W == 0)
    if empty.size == 0:  # the common case: one scalar read, no copy
        return labels
    cand = cp.flatnonzero(w > 0)
    order = cp.lexsort(cp.stack([cand, -dist[cand].astype(cp.float64)]))
    m = min(int(empty.size), int(cand.size))
    lab = labels.copy()
    lab[cand[order[:m]]] = empty[:m].astype(lab.dtype)
    return lab


def kmeans_update(X, w, labels, dist, C):
    """Weighted means of the clusters (float64 atomics), old centre where a cluster has no weight."""
    cp = _cp()
    from .kernels.cuda import module

    host = not is_cupy(X)
    X, C = cp.asarray(X), cp.asarray(C)
    w = cp.asarray(w, dtype=cp.float64)
    labels, dist = cp.asarray(labels, dtype=cp.int32), cp.asarray(dist)
    n, d = X.shape
    k = C.shape[0]
    lab = relocate_empty(w, labels, dist, k)
    S = cp.zeros((k, d), cp.float64)
    W = cp.zeros(k, cp.float64)
    total = n * (d + 1)
    kern = module("kmeans").get_function(f"kmeans_accumulate_{_suffix(X.dtype)}")
    kern(((total + 255) // 256,), (256,), (X, w, lab, np.int32(n), np.int32(d), S, W))
    safe = cp.where(W > 0, W, 1.0)
    mu = cp.where((W > 0)[:, None], S / safe[:, None], C).astype(X.dtype)
    return mu.get() if host else mu
