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
