"""k-means on a row-chunked ``dask.array``: pyml's assignment kernel runs inside the tasks and
only (sums k x d, weights k, inertia) per task travel, combined by a tree reduction. A
persisted array gets one task per worker thread over the chunks that worker holds
(:class:`._placement.ChunkTasks`); a lazy one, one task per chunk.

Initialisation is k-means|| (Bahmani, Moseley, Vattani, Kumar & Vassilvitskii, "Scalable
K-Means++", VLDB 2012): a few rounds each keep every point with probability
l * D(x)^2 / phi (l = oversampling_factor * k), then the candidates, weighted by the number
of points nearest to them, are reduced to k centres by weighted k-means++ and a short Lloyd
run on the client. Every random draw of a chunk comes from a seed fixed on the client
before the tasks are built, so a task that Dask recomputes after losing a worker draws the
same points: no state lives only on a worker.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import kmeans_assign, kmeans_plusplus
from .._backend import _check_backend_name, array_module, is_cupy, to_numpy
from .._validation import check_int, check_random_state, check_scalar
from ..kmeans import KMeans as _LocalKMeans
from . import _kmeans_tasks as tasks
from ._common import as_dask_rows, progress
from ._placement import ChunkTasks

__all__ = ["KMeans"]

_ROUNDS = 5  # k-means|| rounds; Bahmani et al. find ~5 rounds enough for l ~ 2k


def _distances(blk, C):
    """Euclidean distances of the rows of one chunk to every centre, in the chunk's dtype:
    SciPy's cdist for NumPy; for a CuPy chunk one exact difference pass per centre on the
    device (no n x k x d temporary, no cancelling expanded form)."""
    if not is_cupy(blk):
        from scipy.spatial.distance import cdist

        return cdist(blk, C).astype(blk.dtype)
    xp = array_module(blk)
    X, Cd = blk.astype(np.float64), xp.asarray(C, dtype=np.float64)
    out = xp.empty((blk.shape[0], C.shape[0]), np.float64)
    for j in range(C.shape[0]):
        diff = X - Cd[j]
        out[:, j] = xp.sqrt((diff * diff).sum(axis=1))
    return out.astype(blk.dtype)


# ----------------------------------------------------------------------------- estimator
class KMeans:
    """k-means (Lloyd) on a ``dask.array`` chunked by rows, with pyml kernels in the tasks.

    Parameters
    ----------
    n_clusters : int, default 8.
    init : "k-means||" (default), "k-means++" (on the client, needs X to fit there),
        "random", or an array (n_clusters, n_features) of initial centres.
    oversampling_factor : float, default 2. k-means|| keeps ~oversampling_factor * k points
        per round.
    max_iter : int, default 300. tol : float, default 1e-4, relative to the mean per-feature
        variance of X (scikit-learn's rule): stop when the squared centre shift is <= it.
    random_state : None, int or numpy Generator. backend : pyml backend of the chunk tasks
        (None: the configured default).

    Attributes
    ----------
    cluster_centers_ (NumPy), labels_ (lazy dask array), inertia_, n_iter_, n_features_in_.

    X's chunks may be NumPy or CuPy arrays (GPU workers): a CuPy chunk is assigned with the
    cuda backend on its device and only the (k, d) partial sums leave it; ``predict`` then
    returns CuPy chunks too.

    Given the same initial centres, the result equals ``pyml.KMeans(...).fit(X.compute())``
    (same labels, centres up to float summation order). The same code runs against a
    ``dask.distributed.Client`` of any size: every iteration moves k x d numbers per task.
    Persist X (``client.persist``) when it fits in the cluster's memory: each iteration then
    runs one task per worker thread on the chunks in place; a lazy X is rebuilt chunk by
    chunk every iteration (one task per chunk, for data larger than memory).
    """

    def __init__(self, n_clusters: int = 8, *, init: Any = "k-means||",
                 oversampling_factor: float = 2.0, max_iter: int = 300, tol: float = 1e-4,
                 random_state: Any = None, backend: str | None = None, show_progress: bool = False):
        self.n_clusters = n_clusters
        self.init = init
        self.oversampling_factor = oversampling_factor
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.backend = backend
        self.show_progress = show_progress

    # ------------------------------------------------------------------ init
    def _init(self, X, chunks: ChunkTasks, k: int, rng: np.random.Generator) -> np.ndarray:
        init = self.init
        if not isinstance(init, str):
            C = np.array(init, dtype=X.dtype)
            if C.shape != (k, X.shape[1]):
                raise ValueError(f"init must have shape (n_clusters, n_features) = "
                                 f"{(k, X.shape[1])}, got {C.shape}")
            if not np.isfinite(C).all():
                raise ValueError("init holds non-finite values")
            return C
        if init == "random":
            idx = np.sort(rng.choice(X.shape[0], size=k, replace=False))
            return to_numpy(X[idx].compute())
        if init == "k-means++":
            Xl = to_numpy(X.compute())
            return kmeans_plusplus(Xl, k, random_state=rng)[0]
        # k-means||
        b = self.backend
        C = to_numpy(X[int(rng.integers(X.shape[0]))].compute())[None, :]
        ell = float(self.oversampling_factor) * k
        phi = chunks.sum(tasks.min_dist, C, b, True, name="kmeans-phi")
        for _ in range(_ROUNDS):
            if not phi > 0:
                break
            seeds = rng.integers(0, 2**63 - 1, size=len(chunks.blocks))
            picked = chunks.gather(tasks.oversample, C, b, phi, ell, seeds,
                                   name="kmeans-oversample")
            new = [rows for _, rows in sorted((p for part in picked for p in part),
                                              key=lambda p: p[0]) if rows.shape[0]]
            if new:
                C = np.vstack([C] + new)
            phi = chunks.sum(tasks.min_dist, C, b, False, name="kmeans-phi")
        if C.shape[0] < k:  # too few candidates (tiny or duplicated data): add random rows
            extra = np.sort(rng.choice(X.shape[0], size=k - C.shape[0], replace=False))
            C = np.vstack([C, to_numpy(X[extra].compute())])
        w = chunks.sum(tasks.candidate_weights, C, b, name="kmeans-weights")
        if C.shape[0] == k:
            return C
        seeds = kmeans_plusplus(C, k, sample_weight=np.maximum(w, 1e-12), random_state=rng)[0]
        local = _LocalKMeans(k, init=seeds, n_init=1, max_iter=30,
                             **({} if b is None else {"backend": b}))
        return local.fit(C, sample_weight=np.maximum(w, 1e-12)).cluster_centers_.astype(X.dtype)

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None) -> "KMeans":
        """Cluster the rows of ``X`` (a dask array chunked by rows, or anything array-like)."""
        X = as_dask_rows(X, "X")
        n, d = X.shape
        k = check_int(self.n_clusters, "n_clusters", min_value=1)
        if k > n:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}")
        max_iter = check_int(self.max_iter, "max_iter", min_value=1)
        check_scalar(self.tol, "tol", low=0.0)
        check_scalar(self.oversampling_factor, "oversampling_factor", low=0.0, low_inclusive=False)
        if isinstance(self.init, str) and self.init not in ("k-means||", "k-means++", "random"):
            raise ValueError(f"init must be 'k-means||', 'k-means++', 'random' or an array, "
                             f"got {self.init!r}")
        if self.backend is not None:
            _check_backend_name(self.backend)
        rng = check_random_state(self.random_state)
        chunks = ChunkTasks(X)  # one task per worker thread over its chunks, where persisted
        offsets = np.concatenate([[0], np.cumsum(X.chunks[0])])[:-1].astype(np.int64)
        C = self._init(X, chunks, k, rng)
        b = self.backend
        converged, n_iter = False, max_iter
        bar = progress(max_iter, "pyml.dask.KMeans", self.show_progress)
        for it in range(max_iter):
            tot = chunks.sum(tasks.lloyd_stats, C, b, it == 0, name="kmeans-lloyd")
            if it == 0:  # scikit-learn's tolerance: relative to the mean per-feature variance
                tol = tasks.mean_variance(tot, n) * float(self.tol)
            sums, counts = tot["sums"], tot["counts"]
            empty = np.flatnonzero(counts == 0)
            if empty.size:
                self._relocate(chunks, offsets, C, empty, sums, counts)
            safe = np.where(counts > 0, counts, 1.0)
            C_new = np.where((counts > 0)[:, None], sums / safe[:, None], C).astype(X.dtype)
            shift = float(((C_new.astype(np.float64) - C) ** 2).sum())
            C = C_new
            bar.update(1)
            if shift <= tol:
                converged, n_iter = True, it + 1
                break
        bar.close()
        final = chunks.sum(tasks.lloyd_stats, C, b, False, name="kmeans-inertia")
        self.cluster_centers_ = C
        self.inertia_ = float(final["inertia"])
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.n_features_in_ = d
        self.labels_ = self.predict(X)
        return self

    def _relocate(self, chunks, offsets, C, empty, sums, counts) -> None:
        """pyml's empty-cluster rule: the empty clusters (ascending) take the points farthest
        from their centre (distance desc, index asc), moving them out of their own cluster."""
        m = int(empty.size)
        cands = chunks.gather(tasks.farthest, C, self.backend, m, offsets, name="kmeans-farthest")
        best = sorted((c for part in cands for c in part), key=lambda t: (-t[0], t[1]))[:m]
        for cluster, (_, _, label, row) in zip(empty, best):
            x = row.astype(np.float64)
            sums[label] -= x
            counts[label] -= 1.0
            sums[cluster] += x
            counts[cluster] += 1.0

    # ------------------------------------------------------------------ use
    def _check_fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("This KMeans instance is not fitted yet; call fit first")

    def predict(self, X):
        """Index (int32) of the nearest centre of every row, as a lazy dask array."""
        self._check_fitted()
        X = as_dask_rows(X, "X", n_features=self.n_features_in_)
        C, b = self.cluster_centers_.astype(X.dtype), self.backend
        return X.map_blocks(lambda blk: kmeans_assign(blk, C, backend=b)[0], drop_axis=1,
                            dtype=np.int32)

    def transform(self, X):
        """Euclidean distances (n_samples, n_clusters) to every centre, lazily."""
        self._check_fitted()
        X = as_dask_rows(X, "X", n_features=self.n_features_in_)
        C = self.cluster_centers_
        return X.map_blocks(lambda blk: _distances(blk, C),
                            chunks=(X.chunks[0], (C.shape[0],)), dtype=X.dtype)

    def fit_predict(self, X, y=None):
        return self.fit(X).labels_

