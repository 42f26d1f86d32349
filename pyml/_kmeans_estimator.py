"""The scikit-learn compatible ``KMeans`` estimator (k-means or k-medians), API layer only."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from . import _kmeans_driver as drv
from ._backend import _check_backend_name, to_numpy
from ._validation import check_array, check_int, check_random_state, check_scalar

try:
    from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:  # scikit-learn is not a core dependency: the same API on minimal bases
    import inspect

    class ConvergenceWarning(UserWarning):
        """An iterative fit stopped at max_iter without converging."""

    class BaseEstimator:
        def get_params(self, deep: bool = True) -> dict:
            names = inspect.signature(type(self).__init__).parameters
            return {p: getattr(self, p) for p in names if p != "self"}

        def set_params(self, **params):
            for key, value in params.items():
                setattr(self, key, value)
            return self

    class ClusterMixin:
        def fit_predict(self, X, y=None, **kwargs):
            return self.fit(X, **kwargs).labels_

    class TransformerMixin:
        def fit_transform(self, X, y=None, **kwargs):
            return self.fit(X, **kwargs).transform(X)

    def check_is_fitted(estimator) -> None:
        if not hasattr(estimator, "cluster_centers_"):
            raise RuntimeError(f"This {type(estimator).__name__} instance is not fitted yet; call fit first")

    def validate_data(estimator, X, reset: bool, **_):
        X = check_array(X, "X", ndim=2)
        if reset:
            estimator.n_features_in_ = X.shape[1]
        elif X.shape[1] != estimator.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(estimator).__name__} is "
                             f"expecting {estimator.n_features_in_} features as input.")
        return X


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means (Lloyd) or k-medians clustering on pyml kernels, scikit-learn compatible.

    Parameters
    ----------
    n_clusters : int, default 8.
    init : "k-means++", "random" or an array (n_clusters, n_features) of initial centres.
    n_init : "auto" or int. Runs with different seeds; the lowest objective wins.
        "auto" = 1 for "k-means++" and an array, 10 for "random".
    max_iter : int, default 300. Maximum number of centre updates per run.
    tol : float, default 1e-4. Stop when the squared centre shift is at most
        ``tol * mean(var(X, axis=0))`` (scikit-learn's rule), or when labels stop changing.
    metric : "euclidean" (k-means, objective sum w ||x - mu||^2) or "manhattan"
        (k-medians: L1 distance, coordinate-wise weighted median update).
    random_state : None, int or numpy Generator.
    backend : "auto", "python", "numba", "cpp", "cython" or "cuda".
    verbose : int; > 0 prints the objective at every iteration.

    Attributes
    ----------
    cluster_centers_, labels_ (int32), inertia_ (the objective), n_iter_, n_features_in_.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> X = np.array([[0., 0.], [0., 1.], [10., 10.], [10., 11.]])
    >>> km = pyml.KMeans(n_clusters=2, random_state=0).fit(X)
    >>> sorted(km.cluster_centers_.tolist())
    [[0.0, 0.5], [10.0, 10.5]]
    >>> float(km.inertia_)
    1.0
    """

    def __init__(self, n_clusters: int = 8, *, init: Any = "k-means++", n_init: Any = "auto",
                 max_iter: int = 300, tol: float = 1e-4, metric: str = "euclidean",
                 random_state: Any = None, backend: str = "auto", verbose: int = 0):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.metric = metric
        self.random_state = random_state
        self.backend = backend
        self.verbose = verbose

    def __sklearn_tags__(self):  # only scikit-learn calls this
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------ validation
    def _validate_X(self, X, reset: bool):
        # scikit-learn's validate_data keeps n_features_in_/feature_names_in_ and its error
        # messages (the estimator checks look for them); pyml's check_array then fixes layout.
        X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32], order="C",
                          accept_sparse=False)
        return check_array(X, "X", ndim=2)

    def _check_params(self, n_samples: int):
        k = check_int(self.n_clusters, "n_clusters", min_value=1)
        if k > n_samples:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={k}.")
        check_int(self.max_iter, "max_iter", min_value=1)
        check_scalar(self.tol, "tol", low=0.0)
        check_int(self.verbose, "verbose", min_value=0)
        if self.metric not in drv.METRICS:
            raise ValueError(f"metric must be one of {drv.METRICS}, got {self.metric!r}")
        _check_backend_name(self.backend)
        init = self.init
        if isinstance(init, str):
            if init not in ("k-means++", "random"):
                raise ValueError(f"init must be 'k-means++', 'random' or an array, got {init!r}")
            default_n_init = 10 if init == "random" else 1
        else:
            default_n_init = 1
        if self.n_init == "auto":
            n_init = default_n_init
        else:
            n_init = check_int(self.n_init, "n_init", min_value=1)
        if not isinstance(init, str) and n_init != 1:
            warnings.warn(f"explicit initial centres: running 1 initialisation, not n_init={n_init}",
                          RuntimeWarning, stacklevel=3)
            n_init = 1
        return k, n_init

    def _init_centers(self, X, k: int, w, rng):
        if isinstance(self.init, str):
            if self.init == "k-means++":
                from .kmeans import _plusplus_indices

                idx = _plusplus_indices(np.asarray(X, np.float64), k, w, rng)
            else:
                idx = rng.choice(X.shape[0], size=k, replace=False, p=w / w.sum()) \
                    if np.count_nonzero(w) >= k else rng.choice(X.shape[0], size=k, replace=False)
            return X[idx].copy()
        C = check_array(self.init, "init", ndim=2, dtype=X.dtype)
        if C.shape != (k, X.shape[1]):
            raise ValueError(f"init must have shape (n_clusters, n_features) = {(k, X.shape[1])}, "
                             f"got {C.shape}")
        return C.copy()

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, sample_weight=None) -> "KMeans":
        """Cluster ``X`` (n_samples, n_features); ``sample_weight`` (n_samples,) >= 0."""
        from .kmeans import _check_weights

        X = self._validate_X(X, reset=True)
        k, n_init = self._check_params(X.shape[0])
        w = _check_weights(sample_weight, X.shape[0])
        rng = check_random_state(self.random_state)
        # scikit-learn's tolerance: relative to the mean per-feature variance of X
        tol = float(np.mean(np.var(X, axis=0))) * float(self.tol) if self.tol else 0.0
        best = None
        for _ in range(n_init):
            C0 = self._init_centers(X, k, w, rng)
            res = drv.lloyd(X, w, C0, metric=self.metric, max_iter=self.max_iter, tol=tol,
                            backend=self.backend, verbose=self.verbose)
            if best is None or res.inertia < best.inertia:
                best = res
        if not best.converged:
            warnings.warn(f"KMeans did not converge in max_iter={self.max_iter} iterations; "
                          "increase max_iter or tol", ConvergenceWarning, stacklevel=2)
        self.cluster_centers_ = to_numpy(best.centers)  # NumPy in (validate_data), NumPy out
        self.labels_ = to_numpy(best.labels)
        self.inertia_ = best.inertia
        self.n_iter_ = best.n_iter
        return self

    # ------------------------------------------------------------------ use
    def _assign(self, X):
        X = self._validate_X(X, reset=False)
        C = self.cluster_centers_.astype(X.dtype, copy=False)
        b = drv.resolve(self.metric, self.backend, X)
        with drv.blas_single_thread(b):
            return X, drv.ASSIGN[self.metric].get(b)(X, C)

    def predict(self, X):
        """Index (int32) of the nearest centre of every row of ``X``."""
        check_is_fitted(self)
        return self._assign(X)[1][0]

    def transform(self, X):
        """Distances (n_samples, n_clusters) to every centre: L2, or L1 for metric='manhattan'."""
        from scipy.spatial.distance import cdist

        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        kind = "euclidean" if self.metric == "euclidean" else "cityblock"
        return cdist(X, self.cluster_centers_, kind).astype(X.dtype, copy=False)

    def score(self, X, y=None, sample_weight=None) -> float:
        """Minus the objective (sum of weighted distances to the nearest centre) on ``X``."""
        from .kmeans import _check_weights

        check_is_fitted(self)
        X, (_, dist) = self._assign(X)
        w = _check_weights(sample_weight, X.shape[0])
        return -float((w * dist).sum())
