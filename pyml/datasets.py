"""Synthetic data generators for tests and benchmarks (no data set is downloaded)."""
from __future__ import annotations

import numpy as np

from ._validation import check_dtype_arg, check_int, check_random_state, check_scalar


def make_blobs(n_samples: int = 1000, n_features: int = 2, centers: int = 3,
               cluster_std: float = 1.0, dtype=np.float64, seed=None):
    """Gaussian blobs around ``centers`` random centres in [-10, 10]^d.

    Returns ``(X, labels, true_centers)``.

    >>> X, y, c = make_blobs(10, 2, 3, seed=0)
    >>> X.shape, y.shape, c.shape
    ((10, 2), (10,), (3, 2))
    """
    n = check_int(n_samples, "n_samples", min_value=1)
    d = check_int(n_features, "n_features", min_value=1)
    k = check_int(centers, "centers", min_value=1)
    std = check_scalar(cluster_std, "cluster_std", low=0.0)
    dt = check_dtype_arg(dtype)
    rng = check_random_state(seed)
    C = rng.uniform(-10.0, 10.0, size=(k, d))
    y = rng.integers(0, k, size=n)
    X = C[y] + std * rng.standard_normal((n, d))
    return X.astype(dt), y.astype(np.int32), C.astype(dt)


def synthetic_ratings(n_users: int, n_items: int, nnz: int, rank: int = 8,
                      popularity: str = "powerlaw", noise: float = 0.1, implicit: bool = False,
                      dtype=np.float32, seed=None):
    """A sparse user x item rating matrix with a planted rank-``rank`` signal.

    Which (user, item) pairs are observed follows power-law (Zipf, exponent 0.8) user activity
    and item popularity (``popularity="powerlaw"``) or is uniform (``"uniform"``), as in real
    interaction logs. explicit: r = u.v + noise * N(0, 1) with u, v ~ N(0, 1/sqrt(rank)) so
    the signal has unit variance; implicit: positive counts r = 1 + Poisson(exp(u.v)).

    Returns ``(R, (U, V))``: a ``scipy.sparse.csr_matrix`` with sorted indices and exactly
    ``nnz`` stored entries, and the planted factors.

    >>> R, (U, V) = synthetic_ratings(100, 50, 500, rank=4, seed=0)
    >>> R.shape, R.nnz, U.shape, V.shape
    ((100, 50), 500, (100, 4), (50, 4))
    """
    import scipy.sparse as sp

    n_u = check_int(n_users, "n_users", min_value=1)
    n_i = check_int(n_items, "n_items", min_value=1)
    k = check_int(nnz, "nnz", min_value=0, max_value=n_u * n_i)
    f = check_int(rank, "rank", min_value=1)
    sigma = check_scalar(noise, "noise", low=0.0)
    dt = check_dtype_arg(dtype)
    if popularity not in ("powerlaw", "uniform"):
        raise ValueError(f"popularity must be 'powerlaw' or 'uniform', got {popularity!r}")
    rng = check_random_state(seed)

    def weights(n):
        if popularity == "uniform":
            return np.full(n, 1.0 / n)
        w = 1.0 / np.arange(1, n + 1) ** 0.8
        return rng.permutation(w / w.sum())

    pu, pi = weights(n_u), weights(n_i)
    keys = np.empty(0, dtype=np.int64)
    while keys.size < k:  # rejection of duplicate pairs; the head saturates, so draw extra
        m = int((k - keys.size) * 1.3) + 16
        new = rng.choice(n_u, m, p=pu).astype(np.int64) * n_i + rng.choice(n_i, m, p=pi)
        keys = np.unique(np.concatenate([keys, new]))
        if keys.size >= k:
            keys = np.sort(rng.choice(keys, k, replace=False))
        elif popularity == "powerlaw" and keys.size > 0.5 * n_u * n_i:
            pu, pi = np.full(n_u, 1.0 / n_u), np.full(n_i, 1.0 / n_i)  # dense corner: finish uniformly
    rows, cols = keys // n_i, keys % n_i
    U = rng.standard_normal((n_u, f)) / np.sqrt(np.sqrt(f))
    V = rng.standard_normal((n_i, f)) / np.sqrt(np.sqrt(f))
    signal = np.einsum("kf,kf->k", U[rows], V[cols]) if k else np.zeros(0)
    if implicit:
        vals = 1.0 + rng.poisson(np.exp(np.minimum(signal, 5.0)))
    else:
        vals = signal + sigma * rng.standard_normal(k)
    R = sp.csr_matrix((vals.astype(dt), (rows, cols)), shape=(n_u, n_i))
    R.sort_indices()
    return R, (U.astype(dt), V.astype(dt))
