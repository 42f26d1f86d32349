"""The tasks of :class:`pyml.dask.KMeans`. One Lloyd task takes every chunk a worker thread
holds and returns one (sums k x d, counts k, inertia) for all of them: the assignment is
pyml's kernel on the chunk as it lies in the worker's memory (no per-chunk validation, no
copy), and the partial sums are one serial pass over the chunk's rows into float64
accumulators (_accumulate) instead of a one-hot sparse product of the chunk cast to float64.

k-means|| tasks (Bahmani et al. 2012) follow the same pattern: a task per group of chunks,
random draws from per-chunk seeds fixed on the client (a recomputed task draws the same
points).

CuPy chunks (GPU workers) take the same tasks: the assignment runs on the device with the
cuda backend (the backend resolved for a CuPy chunk), the partial sums with CuPy's bincount,
and only the (k, d) sums, counts and scalars come back to the host.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._backend import array_module, is_cupy, to_numpy
from ..kmeans import _assign

__all__ = ["lloyd_stats", "mean_variance", "min_dist", "oversample", "candidate_weights",
           "farthest", "check_chunk"]


@njit(cache=True, nogil=True)
def _accumulate(X, labels, sums, counts):
    """sums[l_j] += x_j, counts[l_j] += 1 over the rows of X (float64 accumulators, in
    place); -1, or the first row whose label is outside [0, k) (nothing added from it on)."""
    k = counts.shape[0]
    d = X.shape[1]
    for j in range(X.shape[0]):
        i = labels[j]
        if i < 0 or i >= k:
            return j
        counts[i] += 1.0
        for t in range(d):
            sums[i, t] += X[j, t]
    return -1


@njit(cache=True, nogil=True)
def _shifted_moments(X, s, s1, s2):
    """s1 += sum_j (x_j - s), s2 += sum_j (x_j - s)^2 per feature (float64, in place): the
    per-feature variance of the data follows from them and the row count."""
    d = X.shape[1]
    for j in range(X.shape[0]):
        for t in range(d):
            v = np.float64(X[j, t]) - s[t]
            s1[t] += v
            s2[t] += v * v


def check_chunk(block, index: int) -> None:
    """A ValueError naming chunk ``index`` and the first non-finite value in it."""
    xp = array_module(block)
    finite = xp.isfinite(block)
    if not bool(finite.all()):
        bad = to_numpy(xp.argwhere(~finite)[0])
        raise ValueError(f"X chunk {index} holds a non-finite value at row {int(bad[0])} of the "
                         f"chunk, column {int(bad[1])}; k-means needs finite data")


def _ready(block, C: np.ndarray):
    # a chunk of the validated dask array: already float32/float64 and usually C-ordered
    # (then this is the chunk itself, no copy); only a chunk that breaks its array's
    # declared dtype or layout is converted. A CuPy chunk stays on its device.
    if block.dtype != C.dtype:
        block = block.astype(C.dtype)
    return array_module(block).ascontiguousarray(block)


def _labels(block, C, backend):
    # "auto" resolves to the cuda backend for a CuPy chunk (C is moved by its glue)
    return _assign(block, C, "euclidean", backend)


def _device_stats(X, labels, out, first, shift) -> int:
    """The CuPy twin of _accumulate (+ _shifted_moments when ``first``): per-centre counts and
    float64 sums by bincount on the device, added into the host totals of ``out``; -1, or a
    row whose label is outside [0, k)."""
    xp = array_module(X)
    k, d = out["sums"].shape
    if X.shape[0] and (int(labels.min()) < 0 or int(labels.max()) >= k):
        return int(to_numpy(xp.flatnonzero((labels < 0) | (labels >= k))[0]))
    X64 = X.astype(np.float64)
    out["counts"] += to_numpy(xp.bincount(labels, minlength=k)).astype(np.float64)
    for t in range(d):  # one weighted bincount per feature: k x d numbers, no one-hot matrix
        out["sums"][:, t] += to_numpy(xp.bincount(labels, weights=X64[:, t], minlength=k))
    if first:
        v = X64 - xp.asarray(shift)
        out["s1"] += to_numpy(v.sum(axis=0))
        out["s2"] += to_numpy((v * v).sum(axis=0))
    return -1


def lloyd_stats(C, backend, first, indices, *blocks):
    """(sums (k, d) float64, counts (k,), inertia) of the chunks ``blocks`` (numbered
    ``indices`` in X) for centres C. ``first`` (the first pass): refuse non-finite chunks,
    and add the moments of the data about C[0] ("s1", "s2": the tolerance's variance)."""
    k, d = C.shape
    out = {"sums": np.zeros((k, d), np.float64), "counts": np.zeros(k, np.float64),
           "inertia": 0.0}
    shift = C[0].astype(np.float64)
    if first:
        out["s1"], out["s2"] = np.zeros(d, np.float64), np.zeros(d, np.float64)
    for index, block in zip(indices, blocks):
        if first:
            check_chunk(block, index)
        X = _ready(block, C)
        labels, dist = _labels(X, C, backend)
        out["inertia"] += float(dist.sum(dtype=np.float64))
        if is_cupy(X):
            bad = _device_stats(X, labels, out, first, shift)
        else:
            bad = _accumulate(X, labels, out["sums"], out["counts"])
            if first:
                _shifted_moments(X, shift, out["s1"], out["s2"])
        if bad >= 0:
            raise RuntimeError(f"the assignment kernel returned label {int(labels[bad])} for "
                               f"row {bad} of X chunk {index}, outside [0, {k})")
    return out


def mean_variance(stats: dict, n: int) -> float:
    """The mean per-feature variance of X (ddof 0) from the first pass's moments."""
    s1, s2 = stats["s1"], stats["s2"]
    return float(np.maximum(s2 - s1 * s1 / n, 0.0).sum() / n / s1.size)


def min_dist(C, backend, check, indices, *blocks):
    """sum over the chunks of min_c ||x - c||^2 (the potential phi of k-means||)."""
    total = 0.0
    for index, block in zip(indices, blocks):
        if check:
            check_chunk(block, index)
        total += float(_labels(_ready(block, C), C, backend)[1].sum(dtype=np.float64))
    return total


def oversample(C, backend, phi, ell, seeds, indices, *blocks):
    """[(chunk number, rows kept)]: each row kept with probability ell * D(x)^2 / phi, one
    seeded draw per chunk (the client orders the candidates by chunk, however grouped)."""
    picked = []
    for index, block in zip(indices, blocks):
        X = _ready(block, C)
        dist = to_numpy(_labels(X, C, backend)[1])
        u = np.random.default_rng(int(seeds[index])).random(X.shape[0])
        keep = np.flatnonzero(u < ell * dist.astype(np.float64) / phi)
        picked.append((index, to_numpy(X[array_module(X).asarray(keep)])))
    return picked


def candidate_weights(C, backend, indices, *blocks):
    """How many rows of the chunks are nearest to each candidate centre (float64, (m,))."""
    w = np.zeros(C.shape[0], np.float64)
    for block in blocks:
        labels = to_numpy(_labels(_ready(block, C), C, backend)[0])
        w += np.bincount(labels, minlength=C.shape[0])
    return w


def farthest(C, backend, m, offsets, indices, *blocks):
    """The m rows of the chunks farthest from their centre: (dist, global index, label, row),
    ordered by distance descending then index ascending (pyml's empty-cluster rule)."""
    out = []
    for index, block in zip(indices, blocks):
        X = _ready(block, C)
        labels, dist = (to_numpy(a) for a in _labels(X, C, backend))
        order = np.lexsort((np.arange(dist.size), -dist.astype(np.float64)))[:m]
        out += [(float(dist[j]), int(offsets[index]) + int(j), int(labels[j]),
                 to_numpy(X[int(j)]).copy()) for j in order]
    return sorted(out, key=lambda t: (-t[0], t[1]))[:m]
