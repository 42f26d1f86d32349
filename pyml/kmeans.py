"""k-means and k-medians: ``kmeans_assign``, ``kmeans_plusplus`` and the ``KMeans`` estimator.

API layer: validation and defaults here; seeding, iterations and backend dispatch in
pyml/_kmeans_driver.py; kernels in pyml/reference/kmeans.py (the oracle),
kernels/numba/kmeans.py, csrc/kmeans.cpp, csrc/kmeans.pyx and kernels/cuda/kmeans.{cu,py}.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import _kmeans_driver as drv
from ._backend import _check_backend_name, array_module, is_cupy, to_numpy
from ._estimator import Estimator, check_feature_names, convergence_warning, not_fitted_error
from ._validation import assert_finite, check_array, check_int, check_random_state, check_scalar

__all__ = ["kmeans_assign", "kmeans_plusplus", "KMeans"]

# float32 squared distances beyond this are within a few orders of overflow (3.4e38): the
# assignment is redone in float64 so that labels stay exact (pyml.reference's answer).
_F32_SAFE = 1e30


def _check_metric(metric: Any) -> str:
    if metric not in drv.METRICS:
        raise ValueError(f"metric must be one of {drv.METRICS}, got {metric!r}")
    return metric


def _check_backend(backend: Any) -> str | None:
    return None if backend is None else _check_backend_name(backend)


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


def _check_finite_fast(X, name: str):
    """Column means (one read pass, no temporary): NaN/inf propagate into them, so only a
    non-finite mean needs the full check that locates the first bad value. The means are
    only a shift for the tolerance pass, so X's own precision is enough (float32 sums are
    twice as fast as float64 ones here)."""
    xp = array_module(X)
    mu = X.mean(axis=0)
    if not bool(xp.isfinite(mu).all()):
        assert_finite(X, name)  # raises with the position; else the float32 sum overflowed
        mu = X.mean(axis=0, dtype=xp.float64)
    return mu


def _assign(X, C, metric: str, backend: str | None):
    labels, dist = drv.assign(X, C, metric, backend)
    if X.dtype == np.float32 and metric == "euclidean":
        xp = array_module(X)
        Cc = C.astype(np.float64) - C.mean(axis=0, dtype=np.float64)
        if float((Cc * Cc).sum(axis=1).max()) > _F32_SAFE or float(xp.max(dist)) > _F32_SAFE:
            labels, d64 = drv.assign(X.astype(np.float64), C.astype(np.float64), metric, backend)
            with np.errstate(over="ignore"):
                dist = d64.astype(np.float32)  # inf where the true value overflows float32
    return labels, dist


def kmeans_assign(X, C, metric: str = "euclidean", backend: str | None = None):
    """Nearest centre of every point: labels and the distance to that centre.

    Parameters
    ----------
    X : array (n, d) of points; C : array (k, d) of centres (NumPy or CuPy).
    metric : "euclidean" (squared L2 distance returned) or "manhattan" (L1 distance).
    backend : None (the configured default: ``pyml.config_context`` / ``set_backend`` /
        ``PYML_BACKEND``, else "auto"), "auto", "python", "numba", "cpp",
        "cython" (euclidean only) or "cuda".

    Returns
    -------
    labels : int32 array (n,), ties go to the smallest centre index.
    dist : array (n,) in the common float dtype of X and C.

    The compiled kernels rank centres by ||c - m||^2 - 2 (x - m).(c - m) with m the mean of the
    centres, so data with a large common offset keep exact labels.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> labels, dist = pyml.kmeans_assign(np.array([[0., 0.], [5., 5.]]), np.array([[4., 4.], [0., 1.]]))
    >>> labels.tolist(), dist.tolist()
    ([1, 0], [1.0, 2.0])
    """
    metric = _check_metric(metric)
    backend = _check_backend(backend)
    X = check_array(X, "X", ndim=2)
    C = check_array(C, "C", ndim=2)
    if C.shape[1] != X.shape[1]:
        raise ValueError(f"C must have {X.shape[1]} features like X, got shape {C.shape}")
    dt = X.dtype if X.dtype == C.dtype else np.dtype(np.float64)
    return _assign(X.astype(dt, copy=False), C.astype(dt, copy=False), metric, backend)


def kmeans_plusplus(X, n_clusters: int, sample_weight=None, random_state=None,
                    n_local_trials: int | None = None, backend: str | None = None):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, as scikit-learn's): the first
    centre is drawn with probability proportional to w; every next one is the best of
    ``n_local_trials`` points drawn with probability proportional to w * D(x)^2
    (D = distance to the nearest chosen centre), best = the lowest resulting potential
    sum w * D^2. ``n_local_trials=None`` means 2 + floor(ln n_clusters); 1 is the plain
    algorithm of the paper.

    Returns ``(centers (n_clusters, d), indices (n_clusters,))``; centers are rows of X.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> X = np.array([[0., 0.], [0., 1.], [10., 10.]])
    >>> centers, idx = pyml.kmeans_plusplus(X, 2, random_state=0)
    >>> sorted(idx.tolist()) in ([0, 2], [1, 2])
    True
    """
    backend = _check_backend(backend)
    X = check_array(X, "X", ndim=2)
    n = X.shape[0]
    k = check_int(n_clusters, "n_clusters", min_value=1)
    if k > n:
        raise ValueError(f"n_samples={n} should be >= n_clusters={k}")
    trials = drv.default_trials(k) if n_local_trials is None else \
        check_int(n_local_trials, "n_local_trials", min_value=1)
    if trials > n:  # each step draws its candidates among the n samples and scores them all
        raise ValueError(f"n_local_trials must be at most n_samples={n}, got {trials}")
    w = _check_weights(sample_weight, n)
    rng = check_random_state(random_state)
    idx = drv.plusplus(X, k, w, rng, trials, backend)
    xp = array_module(X)
    return X[xp.asarray(idx)].copy(), idx


def _is_sparse(X: Any) -> bool:
    return type(X).__module__.startswith("scipy.sparse")


class KMeans(Estimator):
    """k-means (Lloyd) or k-medians clustering on pyml kernels, scikit-learn compatible.

    Parameters
    ----------
    n_clusters : int, default 8.
    init : "k-means++" (greedy, as scikit-learn's), "random", an array (n_clusters,
        n_features) of initial centres, or a callable ``init(X, n_clusters, random_state)``
        returning one (``random_state`` is a ``numpy.random.RandomState``).
    n_init : "auto" or int. Runs with different seeds; the lowest objective wins.
        "auto" = 1 for "k-means++" and an array, 10 for "random" and a callable.
    max_iter : int, default 300. Maximum number of centre updates per run; reaching it is not
        a failure (no warning, as in scikit-learn).
    tol : float, default 1e-4. Stop when the squared centre shift is at most
        ``tol * mean(var(X, axis=0))`` (scikit-learn's rule), or when labels stop changing.
    metric : "euclidean" (k-means, objective sum w ||x - mu||^2) or "manhattan"
        (k-medians: L1 distance, coordinate-wise weighted median update).
    random_state : None, int, numpy Generator or RandomState.
    backend : None (the configured default, see ``pyml.config_context``), "auto", "python",
        "numba", "cpp", "cython" or "cuda".
    verbose : int; > 0 prints the objective at every iteration.
    copy_x : bool, accepted for scikit-learn compatibility; X is never modified either way.
    algorithm : "lloyd" (or "elkan", accepted for compatibility: Elkan's method gives the same
        clustering and pyml computes it with Lloyd's iterations).

    Attributes
    ----------
    cluster_centers_, labels_ (int32), inertia_ (the objective), n_iter_ (as scikit-learn
    counts), n_features_in_, feature_names_in_ (DataFrame input with string columns).

    Sparse (scipy.sparse) X is accepted and densified (pyml's kernels are dense).

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
                 random_state: Any = None, backend: str | None = None, verbose: int = 0,
                 copy_x: bool = True, algorithm: str = "lloyd"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.metric = metric
        self.random_state = random_state
        self.backend = backend
        self.verbose = verbose
        self.copy_x = copy_x
        self.algorithm = algorithm

    def __sklearn_tags__(self):  # only scikit-learn calls this, so only here is it imported
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type="clusterer", target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]),
                    input_tags=InputTags(sparse=True))

    # ------------------------------------------------------------------ validation
    def _validate_X(self, X, reset: bool):
        """X as a C-contiguous float32/float64 array (finiteness is checked by the caller)."""
        check_feature_names(self, X, reset=reset)
        if _is_sparse(X):
            X = X.toarray()
        elif not is_cupy(X):
            X = np.asarray(X)
            if X.dtype.kind == "c":
                raise ValueError(f"Complex data not supported: X has dtype {X.dtype}")
            if X.dtype.kind == "O":
                if any(isinstance(v, (str, bytes)) for v in X.flat):
                    raise TypeError("X must be numeric, got strings in an object array")
                X = X.astype(np.float64)  # TypeError naming the bad element otherwise
        if X.ndim != 2:
            raise ValueError(f"X must be 2-dimensional (n_samples, n_features), got {X.ndim} "
                             f"dimensions (shape {X.shape}). Reshape your data with "
                             "X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single sample.")
        if X.shape[1] == 0:  # scikit-learn's wording (its estimator checks look for it)
            raise ValueError(f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
        X = check_array(X, "X", ndim=2, check_finite=False)
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input.")
        return X

    def _check_params(self, n_samples: int):
        k = check_int(self.n_clusters, "n_clusters", min_value=1)
        if k > n_samples:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={k}.")
        check_int(self.max_iter, "max_iter", min_value=1)
        check_scalar(self.tol, "tol", low=0.0)
        check_int(self.verbose, "verbose", min_value=0)
        _check_metric(self.metric)
        _check_backend(self.backend)
        if not isinstance(self.copy_x, (bool, np.bool_)):
            raise TypeError(f"copy_x must be a bool, got {self.copy_x!r}")
        if self.algorithm not in ("lloyd", "elkan"):
            raise ValueError(f"algorithm must be 'lloyd' or 'elkan', got {self.algorithm!r}")
        init = self.init
        if isinstance(init, str):
            if init not in ("k-means++", "random"):
                raise ValueError(f"init must be 'k-means++', 'random', an array or a callable, got {init!r}")
            default_n_init = 1 if init == "k-means++" else 10
        else:
            default_n_init = 10 if callable(init) else 1
        n_init = default_n_init if (isinstance(self.n_init, str) and self.n_init == "auto") else \
            check_int(self.n_init, "n_init", min_value=1)
        if not isinstance(init, str) and not callable(init) and n_init != 1:
            warnings.warn(f"explicit initial centres: running 1 initialisation, not n_init={n_init}",
                          RuntimeWarning, stacklevel=3)
            n_init = 1
        return k, n_init

    def _init_centers(self, X, k: int, w, rng):
        if isinstance(self.init, str):
            if self.init == "k-means++":
                idx = drv.plusplus(X, k, w, rng, drv.default_trials(k), self.backend)
            else:
                idx = rng.choice(X.shape[0], size=k, replace=False, p=w / w.sum()) \
                    if np.count_nonzero(w) >= k else rng.choice(X.shape[0], size=k, replace=False)
            return X[array_module(X).asarray(idx)].copy()
        if callable(self.init):
            init = self.init(to_numpy(X), k, random_state=np.random.RandomState(rng.integers(2**32)))
            name = "init (the callable's result)"
        else:
            init, name = self.init, "init"
        C = check_array(init, name, ndim=2, dtype=X.dtype)
        if C.shape != (k, X.shape[1]):
            raise ValueError(f"{name} must have shape (n_clusters, n_features) = {(k, X.shape[1])}, "
                             f"got {C.shape}")
        return array_module(X).asarray(C).copy()

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, sample_weight=None) -> "KMeans":
        """Cluster ``X`` (n_samples, n_features); ``sample_weight`` (n_samples,) >= 0."""
        X = self._validate_X(X, reset=True)
        k, n_init = self._check_params(X.shape[0])
        w = _check_weights(sample_weight, X.shape[0])
        rng = check_random_state(self.random_state)
        mu = _check_finite_fast(X, "X")  # the one read pass of the setup
        Xfit, tol = X, 0.0
        if self.tol or X.dtype == np.float32:
            # ||x - mean||^2 exactly (assignment to the mean): its mean over the features is
            # scikit-learn's tolerance scale mean(var(X, axis=0)); its max says whether
            # float32 squared distances come near overflow (then the fit runs in float64)
            _, d0 = drv.assign(X, mu[None, :].astype(X.dtype), "euclidean", self.backend)
            tol = float(d0.mean(dtype=np.float64)) / X.shape[1] * float(self.tol)
            if X.dtype == np.float32 and float(d0.max()) > _F32_SAFE / 4:
                Xfit = X.astype(np.float64)
        best = None
        for _ in range(n_init):
            C0 = self._init_centers(Xfit, k, w, rng)
            res = drv.lloyd(Xfit, w, C0, metric=self.metric, max_iter=self.max_iter, tol=tol,
                            backend=self.backend, verbose=self.verbose)
            if best is None or res.inertia < best.inertia:
                best = res
        labels = to_numpy(best.labels)
        distinct = int(np.count_nonzero(np.bincount(labels, minlength=k)))  # O(n), no sort
        if distinct < k:
            warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                          f"({k}). Possibly due to duplicate points in X.", convergence_warning(),
                          stacklevel=2)
        self.cluster_centers_ = to_numpy(best.centers).astype(X.dtype, copy=False)
        self.labels_ = labels
        self.inertia_ = best.inertia
        self.n_iter_ = best.n_iter
        self._n_features_out = k
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit`` then the labels of the training points."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def fit_transform(self, X, y=None, sample_weight=None):
        """``fit`` then ``transform`` of the training points."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    # ------------------------------------------------------------------ use
    def _check_fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise not_fitted_error()(f"This {type(self).__name__} instance is not fitted yet. Call "
                                     "'fit' with appropriate arguments before using this estimator.")

    def _assign_to_centers(self, X):
        X = self._validate_X(X, reset=False)
        assert_finite(X, "X")
        C = array_module(X).asarray(self.cluster_centers_).astype(X.dtype, copy=False)
        return X, _assign(X, C, self.metric, self.backend)

    def predict(self, X):
        """Index (int32) of the nearest centre of every row of ``X``."""
        self._check_fitted()
        return self._assign_to_centers(X)[1][0]

    def transform(self, X):
        """Distances (n_samples, n_clusters) to every centre: L2, or L1 for metric='manhattan'."""
        from scipy.spatial.distance import cdist

        self._check_fitted()
        Xin = X
        X = to_numpy(self._validate_X(X, reset=False))
        assert_finite(X, "X")
        kind = "euclidean" if self.metric == "euclidean" else "cityblock"
        out = cdist(X, self.cluster_centers_, kind).astype(X.dtype, copy=False)
        return self._wrap_output(out, Xin)

    def score(self, X, y=None, sample_weight=None) -> float:
        """Minus the objective (sum of weighted distances to the nearest centre) on ``X``."""
        self._check_fitted()
        X, (_, dist) = self._assign_to_centers(X)
        w = _check_weights(sample_weight, X.shape[0])
        return -float((w * to_numpy(dist)).sum())

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Output feature names of ``transform``: ``kmeans0`` ... ``kmeans{k-1}``."""
        self._check_fitted()
        if input_features is not None:
            names = np.asarray(input_features, dtype=object)
            fitted = getattr(self, "feature_names_in_", None)
            if fitted is not None and (len(fitted) != len(names) or np.any(fitted != names)):
                raise ValueError("input_features is not equal to feature_names_in_")
            if len(names) != self.n_features_in_:
                raise ValueError(f"input_features should have length equal to number of features "
                                 f"({self.n_features_in_}), got {len(names)}")
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self._n_features_out)], dtype=object)
