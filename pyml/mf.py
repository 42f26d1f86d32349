"""Matrix factorization: :class:`ALS` (implicit feedback by default, or explicit ratings) and
:func:`mf_sgd`.

API layer: arguments and defaults here, the one read pass over the ratings and the iteration in
:mod:`pyml._mf_driver`, one half-step kernel per backend (reference: :mod:`pyml.reference.mf`);
serving (recommend, similar items/users) in :mod:`pyml._mf_recommend`.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from . import _mf_driver as drv
from ._mf_recommend import Recommender, check_ids
from ._validation import check_dtype_arg, check_int, check_random_state, check_scalar

__all__ = ["ALS", "mf_sgd"]


def _available_memory() -> int | None:
    """Bytes the kernel could still give this process (MemAvailable), else physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: let the allocator decide
        return None


def _check_memory(nbytes: int, what: str) -> None:
    """Fail before allocating what this machine cannot hold (instead of a 48 GiB malloc)."""
    avail = _available_memory()
    if avail is not None and nbytes > avail:
        raise ValueError(f"{what} needs {nbytes / 2**30:.1f} GiB of memory; "
                         f"{avail / 2**30:.1f} GiB are available")


class ALS(Recommender):
    """Implicit-feedback ALS by default (Hu, Koren & Volinsky 2008) with implicit's defaults (100
    factors); ``implicit=False`` factorises explicit ratings instead.

    Factorises a user x item ``scipy.sparse`` matrix R ~ X Y^T.

    implicit feedback (Hu, Koren & Volinsky 2008): preference p = 1[r > 0] with confidence
    **c = 1 + alpha r**; each half-step solves (Y^T Y + Y^T (C_u - I) Y + lambda I) x_u = Y^T C_u p_u
    by ``cg_steps`` of conjugate gradient warm-started from the current factor (as implicit), or
    exactly (``exact=True``, Cholesky). implicit's current releases use c = alpha r instead:
    ``implicit.als.AlternatingLeastSquares(alpha=a).fit(R)`` solves the equations of
    ``pyml.ALS(alpha=1).fit(R')`` with R' = a R - 1 on the stored entries, and
    ``pyml.ALS(alpha=a).fit(R)`` those of implicit's ``alpha=1`` on 1 + a R.

    explicit ratings: minimises J = 1/2 sum_Omega (r - x_u.y_i)^2 + 1/2 lambda (|X|^2 + |Y|^2) by
    an exact solve per row; ``regularization`` is the lambda of the normal equations
    (Y_Omega^T Y_Omega + lambda I) x = Y_Omega^T r, as implicit and Spark use it.

    The training loss is **off by default**, as implicit's ``calculate_training_loss=False``.
    ``compute_loss=True`` records it in ``loss_`` after every iteration (the objective of
    :func:`pyml.reference.mf.als_loss`, a compiled pass over the stored entries plus two f x f
    Gram matrices; measured at 10-25% of an iteration) and passes it to the callback and the
    progress bar. Setup reads the ratings once (compiled check of structure,
    finiteness, sortedness and duplicates, which are summed as SciPy does) and copies only what
    the kernels need in another layout: the item x user transpose and values in ``dtype``.

    Examples
    --------
    >>> import pyml
    >>> R, _ = pyml.datasets.synthetic_ratings(30, 20, 200, rank=2, implicit=True, seed=0)
    >>> m = pyml.ALS(factors=4, iterations=3, random_state=0, show_progress=False).fit(R)
    >>> m.user_factors.shape, m.item_factors.shape
    ((30, 4), (20, 4))
    >>> ids, scores = m.recommend(0, R[0], N=3)
    >>> ids.dtype, ids.shape
    (dtype('int32'), (3,))
    """

    def __init__(self, factors: int = 100, regularization: float = 0.01, *, alpha: float = 1.0,
                 iterations: int = 15, implicit: bool = True, cg_steps: int = 3, exact: bool = False,
                 dtype: Any = np.float32, random_state: Any = None, backend: str | None = None,
                 callback: Callable[[int, float, float | None], Any] | None = None,
                 show_progress: bool = True, compute_loss: bool = False) -> None:
        self.factors, self.regularization, self.iterations = factors, regularization, iterations
        self.implicit, self.alpha, self.cg_steps, self.exact = implicit, alpha, cg_steps, exact
        self.dtype, self.random_state, self.backend = dtype, random_state, backend
        self.callback, self.show_progress, self.compute_loss = callback, show_progress, compute_loss

    # ------------------------------------------------------------------ helpers
    def _params(self):
        f = check_int(self.factors, "factors", min_value=1)
        reg = check_scalar(self.regularization, "regularization", low=0.0)
        alpha = check_scalar(self.alpha, "alpha", low=0.0)
        it = check_int(self.iterations, "iterations", min_value=0)
        cg = check_int(self.cg_steps, "cg_steps", min_value=1)
        if not isinstance(self.implicit, (bool, np.bool_)):
            raise TypeError(f"implicit must be True or False, got {self.implicit!r}")
        if not self.implicit and reg <= 0.0:
            raise ValueError("regularization must be > 0 for explicit ALS (rows with no ratings)")
        return f, reg, alpha, it, cg, check_dtype_arg(self.dtype)

    def _fitted(self):
        if getattr(self, "user_factors", None) is None:
            raise AttributeError("ALS is not fitted yet; call fit(R) first")

    def _backend(self, *arrays):
        return drv.HALF_STEP.resolve(self.backend, *arrays)

    def _ratings(self, R, name, shape, backend=None):
        """The one read pass (see :func:`pyml._mf_driver.csr_input`)."""
        dt = self.item_factors.dtype if getattr(self, "item_factors", None) is not None else None
        return drv.csr_input(R, name, shape=shape, dtype=dt or check_dtype_arg(self.dtype),
                             nonneg=bool(self.implicit), backend=backend)

    def _recalculate(self, ids, R, F, other):
        """Rows ``ids`` of the factor matrix ``F`` re-solved from ``R`` against fixed ``other``
        (warm start from the current factor where the id exists, else from zero)."""
        X = np.zeros((len(ids), other.shape[1]), dtype=other.dtype)
        known = ids < len(F)
        X[known] = F[ids[known]]
        return drv.solve_rows(self._backend(other), R, other, X, reg=self.regularization,
                              alpha=self.alpha, cg_steps=self.cg_steps,
                              implicit=bool(self.implicit), exact=bool(self.exact))

    # ------------------------------------------------------------------ fit
    def fit(self, user_items, y=None, *, show_progress: bool | None = None,
            callback: Callable[[int, float, float | None], Any] | None = None) -> "ALS":
        """Factorise the user x item matrix ``user_items`` (never modified).

        ``show_progress`` and ``callback(iteration, elapsed_seconds, loss)`` override the
        constructor's settings for this call, as in implicit's ``fit``; ``loss`` is None unless
        ``compute_loss=True``."""
        f, reg, alpha, it, cg, dt = self._params()
        callback = self.callback if callback is None else callback
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be a callable (iteration, elapsed, loss) or None, "
                            f"got {type(callback).__name__}")
        show = self.show_progress if show_progress is None else show_progress
        backend = self._backend()
        R, max_abs = drv.csr_input(user_items, "user_items", dtype=dt, nonneg=bool(self.implicit),
                                   backend=backend)
        n_users, n_items = R.shape
        # c = 1 + alpha r: past 1/eps the 1 is lost and the CG systems are numerically singular
        if self.implicit and alpha * max_abs * np.finfo(dt).eps >= 1.0:
            raise FloatingPointError(
                f"alpha * max(user_items) = {alpha * max_abs:.3g} is beyond the precision of {dt} "
                f"(1/eps = {1 / np.finfo(dt).eps:.3g}): the confidence 1 + alpha r cannot be "
                "represented; scale the ratings (e.g. log1p) or alpha down, or use dtype=float64")
        _check_memory(2 * (n_users + n_items) * f * dt.itemsize,
                      f"factors={f} for {n_users} users and {n_items} items ({dt})")
        rng = check_random_state(self.random_state)
        # small random start (as implicit does) so the first half-step is well conditioned
        # (drawn in float64 whatever the dtype: pyml.dask.ALS starts from the same factors)
        X, Y = rng.random((n_users, f)), rng.random((n_items, f))
        X *= 0.01
        Y *= 0.01
        X, Y = X.astype(dt, copy=False), Y.astype(dt, copy=False)
        X, Y, self.loss_ = drv.als_fit(backend, R, X, Y, reg=reg, alpha=alpha, iterations=it,
                                       cg_steps=cg, implicit=bool(self.implicit),
                                       exact=bool(self.exact), callback=callback,
                                       show_progress=bool(show), compute_loss=bool(self.compute_loss))
        self.user_factors, self.item_factors, self.backend_ = X, Y, backend
        return self

    def loss(self, user_items) -> float:
        """The objective (see the class docstring) of the fitted factors on ``user_items``."""
        self._fitted()
        R, _ = self._ratings(user_items, "user_items", (len(self.user_factors), len(self.item_factors)))
        return drv.als_loss(R, self.user_factors, self.item_factors, self.regularization,
                            self.alpha, bool(self.implicit), getattr(self, "backend_", None))

    # ------------------------------------------------------------------ incremental
    def recalculate_user(self, userid, user_items):
        """Factors of ``userid`` (one id or an array) computed from ``user_items`` (one CSR row per
        id) against the fixed item factors; the model is not changed."""
        self._fitted()
        ids = check_ids(userid, None, "userid")
        R, _ = self._ratings(user_items, "user_items", (len(ids), len(self.item_factors)))
        X = self._recalculate(ids, R, self.user_factors, self.item_factors)
        return X[0] if np.ndim(userid) == 0 else X

    def recalculate_item(self, itemid, item_users):
        """Factors of ``itemid`` (one id or an array) computed from ``item_users`` (one CSR row of
        users per id) against the fixed user factors; the model is not changed."""
        self._fitted()
        ids = check_ids(itemid, None, "itemid")
        R, _ = self._ratings(item_users, "item_users", (len(ids), len(self.user_factors)))
        Y = self._recalculate(ids, R, self.item_factors, self.user_factors)
        return Y[0] if np.ndim(itemid) == 0 else Y

    def _partial_fit(self, attr, ids, rows, name, rows_name, other):
        ids = check_ids(ids, drv.INDEX_MAX, name)
        F = getattr(self, attr)
        R, _ = self._ratings(rows, rows_name, (len(ids), len(other)))
        if ids.size and ids.max() >= len(F):
            new_rows = int(ids.max()) + 1
            _check_memory(new_rows * F.shape[1] * F.dtype.itemsize,
                          f"{name} up to {int(ids.max())} ({new_rows} rows of {F.shape[1]} factors)")
            F = np.concatenate([F, np.zeros((new_rows - len(F), F.shape[1]), F.dtype)])
        F[ids] = self._recalculate(ids, R, F, other)
        setattr(self, attr, F)
        return self

    def partial_fit_users(self, userids, user_items) -> "ALS":
        """Recompute (or add, growing ``user_factors``) the given users from their rows."""
        self._fitted()
        return self._partial_fit("user_factors", userids, user_items, "userids", "user_items",
                                 self.item_factors)

    def partial_fit_items(self, itemids, item_users) -> "ALS":
        """Recompute (or add) the given items from their columns (item x user CSR rows)."""
        self._fitted()
        return self._partial_fit("item_factors", itemids, item_users, "itemids", "item_users",
                                 self.user_factors)

    # ------------------------------------------------------------------ persistence
    _SAVED = ("factors", "regularization", "iterations", "implicit", "alpha", "cg_steps", "exact")

    def save(self, path) -> None:
        """Write the settings and factors to a NumPy ``.npz`` file (NumPy adds the suffix)."""
        self._fitted()
        np.savez(path, user_factors=self.user_factors, item_factors=self.item_factors,
                 loss_=np.asarray(self.loss_, dtype=np.float64),
                 **{k: np.asarray(getattr(self, k)) for k in self._SAVED})

    @classmethod
    def load(cls, path, **kwargs) -> "ALS":
        """Read a model written by :meth:`save` (``path`` with or without ``.npz``) or by implicit's
        ``AlternatingLeastSquares.save`` (its factors; alpha keeps implicit's value, whose
        confidence convention differs, see the class docstring). ``kwargs``: e.g. backend=..."""
        if isinstance(path, (str, os.PathLike)) and not os.path.exists(path) \
                and os.path.exists(os.fspath(path) + ".npz"):
            path = os.fspath(path) + ".npz"
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if not {"user_factors", "item_factors"} <= keys:
                raise ValueError(f"{path} holds no ALS model (keys: {sorted(keys)})")
            params = {k: z[k].item() for k in cls._SAVED if k in keys}
            if "implicit" not in keys:  # implicit's file: implicit feedback, CG unless use_cg=False
                params["implicit"] = True
                params["exact"] = not bool(z["use_cg"].item()) if "use_cg" in keys else False
            params.update(kwargs)
            params.setdefault("dtype", z["user_factors"].dtype)
            model = cls(**params)
            model.user_factors, model.item_factors = z["user_factors"], z["item_factors"]
            model.loss_ = list(z["loss_"]) if "loss_" in keys else []
        return model


def mf_sgd(R, factors: int = 16, lr: float = 0.01, regularization: float = 0.01, epochs: int = 20,
           *, dtype: Any = np.float32, deterministic: bool = False, random_state: Any = None,
           backend: str | None = None):
    """Matrix factorization by SGD on the observed entries of the sparse matrix ``R``.

    e = r - u.v, u <- u + lr (e v - lambda u), v <- v + lr (e u - lambda v): the gradient step of
    1/2 e^2 + 1/2 lambda (|u|^2 + |v|^2) (derived from the objective; a step of the opposite sign
    would ascend the error). Duplicate (u, i) entries are summed first, as SciPy does. Compiled
    backends run Hogwild-parallel (Recht et al. 2011); ``deterministic=True`` runs serially in a
    seeded order. Returns ``(U, V)``.

    >>> import pyml
    >>> R, _ = pyml.datasets.synthetic_ratings(20, 10, 100, rank=2, seed=0)
    >>> U, V = pyml.mf_sgd(R, factors=2, epochs=5, random_state=0, backend="python")
    >>> U.shape, V.shape
    ((20, 2), (10, 2))
    """
    f = check_int(factors, "factors", min_value=1)
    lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
    reg = check_scalar(regularization, "regularization", low=0.0)
    epochs = check_int(epochs, "epochs", min_value=0)
    dt = check_dtype_arg(dtype)
    be = drv.SGD_EPOCH.resolve(backend)
    Rc, _ = drv.csr_input(R, "R", dtype=dt, backend=be)
    n_rows, n_cols = Rc.shape
    _check_memory((n_rows + n_cols) * f * dt.itemsize, f"factors={f} for {n_rows} x {n_cols} ({dt})")
    rng = check_random_state(random_state)
    U = (rng.standard_normal((n_rows, f)) * 0.1).astype(dt)
    V = (rng.standard_normal((n_cols, f)) * 0.1).astype(dt)
    rows = np.repeat(np.arange(n_rows, dtype=np.int32), np.diff(Rc.indptr))  # n_rows < 2^31: checked
    drv.sgd_fit(be, rows, Rc.indices, Rc.data, U, V, lr=lr, reg=reg, epochs=epochs,
                deterministic=bool(deterministic), rng=rng)
    return U, V
