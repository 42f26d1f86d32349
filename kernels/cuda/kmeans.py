"""CuPy glue of kernels/cuda/kmeans.cu: the cuda backend's ``kmeans_assign`` and ``kmeans_update``
with the same contract as the CPU kernels. CuPy in, CuPy out (NumPy in, NumPy out).

Written and compiled (nvcc -ptx sm_80/sm_90) on a machine without a GPU; the GPU tests
(@pytest.mark.gpu) exercise it where a device exists.
"""
from __future__ import annotations

import numpy as np

from . import cupy, grid, kernel

_THREADS = 128
_TILE = 64                 # centres staged per shared-memory tile, at most
_SMEM = 48 * 1024          # the per-block shared memory every launch gets without opting in


def _tile(d: int, itemsize: int) -> int:
    """Centres per shared-memory tile for rows of d values: as many as fit in 48 KiB, up to 64;
    0 when one row alone does not fit (the kernel then reads the centres from global memory)."""
    return min(_TILE, _SMEM // (max(d, 1) * itemsize))


def _is_host(a) -> bool:
    return isinstance(a, np.ndarray)


def kmeans_assign(X, C):
    """(labels int32, squared distance) of every row of X to its nearest row of C."""
    cp = cupy()
    host = _is_host(X)
    X = cp.ascontiguousarray(cp.asarray(X))
    C = cp.ascontiguousarray(cp.asarray(C, dtype=X.dtype))
    n, d = X.shape
    k = C.shape[0]
    labels = cp.empty(n, cp.int32)
    dist = cp.empty(n, X.dtype)
    kern = kernel("kmeans", "kmeans_assign", X.dtype)
    # A fixed 64-centre tile needed more than the 227 KiB an sm_90 block may have once
    # d > 454 (float64): the tile shrinks with d instead, and stays within the default 48 KiB.
    tile = _tile(d, X.dtype.itemsize)
    kern(grid(n, _THREADS), (_THREADS,),
         (X, C, np.int64(n), np.int64(k), np.int64(d), np.int64(tile), labels, dist),
         shared_mem=tile * d * X.dtype.itemsize)
    return (labels.get(), dist.get()) if host else (labels, dist)


def relocate_empty(w, labels, dist, k: int):
    """pyml.reference.kmeans.relocate_empty on the device: the empty clusters (zero weight,
    ascending) take the positive-weight points in (distance desc, index asc) order."""
    cp = cupy()
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
    cp = cupy()
    host = _is_host(X)
    X, C = cp.ascontiguousarray(cp.asarray(X)), cp.asarray(C)
    w = cp.asarray(w, dtype=cp.float64)
    labels, dist = cp.asarray(labels, dtype=cp.int32), cp.asarray(dist)
    n, d = X.shape
    k = C.shape[0]
    lab = relocate_empty(w, labels, dist, k)
    S = cp.zeros((k, d), cp.float64)
    W = cp.zeros(k, cp.float64)
    threads = 256
    kernel("kmeans", "weighted_sums", X.dtype)(
        grid(n * (d + 1), threads), (threads,), (X, w, lab, np.int64(n), np.int64(d), S, W))
    safe = cp.where(W > 0, W, 1.0)
    mu = cp.where((W > 0)[:, None], S / safe[:, None], C).astype(X.dtype)
    return mu.get() if host else mu
