"""k-means on a row-chunked ``dask.array``: pyml's assignment kernel runs inside each chunk's
task and only (sums k x d, weights k, inertia) per chunk travel, combined by a tree reduction.

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
from .._backend import _check_backend_name
from .._validation import check_int, check_random_state, check_scalar
from ..kmeans import KMeans as _LocalKMeans
from ._common import as_dask_rows, progress, tree_sum

__all__ = ["KMeans"]

_ROUNDS = 5  # k-means|| rounds; Bahmani et al. find ~5 rounds enough for l ~ 2k


# ----------------------------------------------------------------------------- chunk tasks
def _chunk_check(block: np.ndarray, index: int) -> None:
    if not np.isfinite(block).all():
        bad = np.argwhere(~np.isfinite(block))[0]
        raise ValueError(f"X chunk {index} holds a non-finite value at row {int(bad[0])} of the "
                         f"chunk, column {int(bad[1])}; k-means needs finite data")


def _chunk_stats(block: np.ndarray, C: np.ndarray, backend: str | None):
    """(sums (k, d) float64, weights (k,), inertia, labels, dist) of one chunk for centres C."""
    labels, dist = kmeans_assign(block, C, backend=backend)
    k, n = C.shape[0], block.shape[0]
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    # one-hot(labels)^T @ block as a sparse product: one pass over the chunk
    from scipy import sparse

    onehot = sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
    sums = np.asarray(onehot @ block.astype(np.float64, copy=False))
    return sums, counts, float(dist.astype(np.float64).sum()), labels, dist


def _partial(block, C, backend, index, check):
    if check:
        _chunk_check(block, index)
    sums, counts, inertia, _, _ = _chunk_stats(block, C, backend)
    return {"sums": sums, "counts": counts, "inertia": inertia}


def _farthest(block, C, backend, offset, m):
    """The m points of a chunk farthest from their centre: (dist, global index, label, row)."""
    labels, dist = kmeans_assign(block, C, backend=backend)
    order = np.lexsort((np.arange(dist.size), -dist.astype(np.float64)))[:m]
    return [(float(dist[j]), offset + int(j), int(labels[j]), block[j].copy()) for j in order]


def _min_dist(block, C, backend, index, check):
    if check:
        _chunk_check(block, index)
    return float(kmeans_assign(block, C, backend=backend)[1].astype(np.float64).sum())


def _oversample(block, C, backend, phi, ell, seed):
    _, dist = kmeans_assign(block, C, backend=backend)
    u = np.random.default_rng(seed).random(block.shape[0])
    return block[u < ell * dist.astype(np.float64) / phi].copy()


def _candidate_weights(block, C, backend):
    labels, _ = kmeans_assign(block, C, backend=backend)
    return np.bincount(labels, minlength=C.shape[0]).astype(np.float64)


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

    Given the same initial centres, the result equals ``pyml.KMeans(...).fit(X.compute())``
    (same labels, centres up to float summation order). The same code runs against a
    ``dask.distributed.Client`` of any size: every iteration moves k x d numbers per chunk.
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
    def _init(self, X, blocks, k: int, rng: np.random.Generator) -> np.ndarray:
        import dask

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
            return np.asarray(X[idx].compute())
        if init == "k-means++":
            Xl = np.asarray(X.compute())
            return kmeans_plusplus(Xl, k, random_state=rng)[0]
        # k-means||
        b = self.backend
        C = np.asarray(X[int(rng.integers(X.shape[0]))].compute())[None, :]
        ell = float(self.oversampling_factor) * k
        phi = sum(dask.compute(*[dask.delayed(_min_dist)(blk, C, b, i, True)
                                 for i, blk in enumerate(blocks)]))
        for _ in range(_ROUNDS):
            if not phi > 0:
                break
            seeds = rng.integers(0, 2**63 - 1, size=len(blocks))
            picked = dask.compute(*[dask.delayed(_oversample)(blk, C, b, phi, ell, int(s))
                                    for blk, s in zip(blocks, seeds)])
            new = [p for p in picked if p.shape[0]]
            if new:
                C = np.vstack([C] + new)
            phi = sum(dask.compute(*[dask.delayed(_min_dist)(blk, C, b, i, False)
                                     for i, blk in enumerate(blocks)]))
        if C.shape[0] < k:  # too few candidates (tiny or duplicated data): add random rows
            extra = np.sort(rng.choice(X.shape[0], size=k - C.shape[0], replace=False))
            C = np.vstack([C, np.asarray(X[extra].compute())])
        w = tree_sum([dask.delayed(_candidate_weights)(blk, C, b) for blk in blocks]).compute()
        if C.shape[0] == k:
            return C
        seeds = kmeans_plusplus(C, k, sample_weight=np.maximum(w, 1e-12), random_state=rng)[0]
        local = _LocalKMeans(k, init=seeds, n_init=1, max_iter=30,
                             **({} if b is None else {"backend": b}))
        return local.fit(C, sample_weight=np.maximum(w, 1e-12)).cluster_centers_.astype(X.dtype)

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None) -> "KMeans":
        """Cluster the rows of ``X`` (a dask array chunked by rows, or anything array-like)."""
        import dask

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
        blocks = list(X.to_delayed().ravel())
        offsets = np.concatenate([[0], np.cumsum(X.chunks[0])])[:-1]
        # scikit-learn's tolerance: relative to the mean per-feature variance of X
        tol = float(X.var(axis=0).mean().compute()) * float(self.tol) if self.tol else 0.0
        C = self._init(X, blocks, k, rng)
        b = self.backend
        converged, n_iter = False, max_iter
        bar = progress(max_iter, "pyml.dask.KMeans", self.show_progress)
        for it in range(max_iter):
            Cd = dask.delayed(C)  # one key for the centres, shared by every chunk's task
            parts = [dask.delayed(_partial)(blk, Cd, b, i, it == 0) for i, blk in enumerate(blocks)]
            tot = tree_sum(parts).compute()
            sums, counts = tot["sums"], tot["counts"]
            empty = np.flatnonzero(counts == 0)
            if empty.size:
                self._relocate(blocks, offsets, Cd, C, empty, sums, counts)
            safe = np.where(counts > 0, counts, 1.0)
            C_new = np.where((counts > 0)[:, None], sums / safe[:, None], C).astype(X.dtype)
            shift = float(((C_new.astype(np.float64) - C) ** 2).sum())
            C = C_new
            bar.update(1)
            if shift <= tol:
                converged, n_iter = True, it + 1
                break
        bar.close()
        Cd = dask.delayed(C)
        final = tree_sum([dask.delayed(_partial)(blk, Cd, b, i, False)
                          for i, blk in enumerate(blocks)]).compute()
        self.cluster_centers_ = C
        self.inertia_ = float(final["inertia"])
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.n_features_in_ = d
        self.labels_ = self.predict(X)
        return self

    def _relocate(self, blocks, offsets, Cd, C, empty, sums, counts) -> None:
        """pyml's empty-cluster rule: the empty clusters (ascending) take the points farthest
        from their centre (distance desc, index asc), moving them out of their own cluster."""
        import dask

        m = int(empty.size)
        cands = dask.compute(*[dask.delayed(_farthest)(blk, Cd, self.backend, int(off), m)
                               for blk, off in zip(blocks, offsets)])
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
        from scipy.spatial.distance import cdist

        self._check_fitted()
        X = as_dask_rows(X, "X", n_features=self.n_features_in_)
        C = self.cluster_centers_
        return X.map_blocks(lambda blk: cdist(blk, C).astype(blk.dtype),
                            chunks=(X.chunks[0], (C.shape[0],)), dtype=X.dtype)

    def fit_predict(self, X, y=None):
        return self.fit(X).labels_

