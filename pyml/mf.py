"""Matrix factorization: :class:`ALS` (explicit and implicit feedback) and :func:`mf_sgd`.

API layer: validation and defaults here, iteration in :mod:`pyml._mf_driver`, one
half-step kernel per backend (reference: :mod:`pyml.reference.mf`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _mf_driver as drv
from ._validation import check_csr, check_dtype_arg, check_int, check_random_state, check_scalar

__all__ = ["ALS", "mf_sgd"]


def _check_ratings(R, name, *, shape=None, dtype=None, nonneg=False):
    R = check_csr(R, name, shape=shape, dtype=dtype)
    if nonneg and R.nnz and (R.data < 0).any():
        raise ValueError(f"{name}: implicit feedback needs non-negative values (confidence c = 1 + alpha r)")
    return R


class ALS:
    """Alternating least squares matrix factorization R ~ X Y^T on a user x item CSR matrix.

    explicit: minimises J = 1/2 sum_Omega (r - x_u.y_i)^2 + 1/2 lambda (|X|^2 + |Y|^2), an
    exact Cholesky solve per row. Seed 004 writes lambda without the 1/2; ``regularization``
    is the lambda of the normal equations (Y_Omega^T Y_Omega + lambda I) x = Y_Omega^T r, as
    implicit and Spark use it. implicit (Hu, Koren, Volinsky 2008): confidence c = 1 + alpha r,
    preference p = 1[r > 0], (Y^T Y + Y^T (C - I) Y + lambda I) x_u = Y^T C p(u), solved by
    ``cg_steps`` of conjugate gradient warm-started from the current factor, or exactly
    (``exact=True``).

    Examples
    --------
    >>> import pyml
    >>> R, _ = pyml.datasets.synthetic_ratings(30, 20, 200, rank=2, seed=0)
    >>> m = pyml.ALS(factors=4, iterations=3, random_state=0, show_progress=False,
    ...              compute_loss=True).fit(R)
    >>> m.user_factors.shape, m.item_factors.shape, len(m.loss_)
    ((30, 4), (20, 4), 3)
    """

    def __init__(self, factors: int = 64, regularization: float = 0.01, iterations: int = 15,
                 implicit: bool = False, alpha: float = 1.0, cg_steps: int = 3, exact: bool = False,
                 dtype: Any = np.float32, random_state: Any = None, backend: str = "auto",
                 callback: Callable[[int, float, float], Any] | None = None,
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
        if not self.implicit and reg <= 0.0:
            raise ValueError("regularization must be > 0 for explicit ALS (rows with no ratings)")
        return f, reg, alpha, it, cg, check_dtype_arg(self.dtype)

    def _fitted(self):
        if not hasattr(self, "user_factors"):
            raise AttributeError("ALS is not fitted yet; call fit(R) first")

    def _solve_rows(self, R, Y, X):
        """Solve the rows of R against fixed Y with the fitted settings (X warm start)."""
        return drv.solve_rows(drv.HALF_STEP.resolve(self.backend, Y), R, Y, X,
                              reg=self.regularization, alpha=self.alpha, cg_steps=self.cg_steps,
                              implicit=bool(self.implicit), exact=bool(self.exact))

    # ------------------------------------------------------------------ fit
    def fit(self, R, y=None) -> "ALS":
        """Factorise the user x item CSR matrix ``R`` (never modified)."""
        f, reg, alpha, it, cg, dt = self._params()
        R = _check_ratings(R, "R", dtype=dt, nonneg=self.implicit)
        backend = drv.HALF_STEP.resolve(self.backend)
        rng = check_random_state(self.random_state)
        n_users, n_items = R.shape
        # small random start (as implicit does) so the first half-step is well conditioned
        X = (rng.random((n_users, f)) * 0.01).astype(dt)
        Y = (rng.random((n_items, f)) * 0.01).astype(dt)
        X, Y, self.loss_ = drv.als_fit(backend, R, X, Y, reg=reg, alpha=alpha, iterations=it,
                                       cg_steps=cg, implicit=bool(self.implicit),
                                       exact=bool(self.exact), callback=self.callback,
                                       show_progress=self.show_progress,
                                       compute_loss=self.compute_loss)
        self.user_factors, self.item_factors, self.backend_ = X, Y, backend
        return self

    def loss(self, R) -> float:
        """The objective (see class docstring) of the fitted factors on ``R``."""
        self._fitted()
        R = _check_ratings(R, "R", shape=(len(self.user_factors), len(self.item_factors)),
                           dtype=self.user_factors.dtype)
        return drv.als_loss(drv.CSRArrays(R, R.dtype), self.user_factors, self.item_factors,
                            self.regularization, self.alpha, bool(self.implicit))

    # ------------------------------------------------------------------ serving
    def _ids(self, ids, n, name):
        arr = np.atleast_1d(np.asarray(ids))
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer or an array of integers, got {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"{name} out of range [0, {n}): got {arr.min()}..{arr.max()}")
        return arr

    def recommend(self, userid, user_items=None, N: int = 10, filter_already_liked_items: bool = True):
        """Top-``N`` items by score x_u.y_i for one user id or an array of ids.

        ``user_items`` holds the rows of those users (CSR, one row per id) used for filtering.
        Returns ``(ids, scores)``, each (N,) for one id or (n_ids, N) for an array.
        """
        self._fitted()
        n_users, n_items = len(self.user_factors), len(self.item_factors)
        users = self._ids(userid, n_users, "userid")
        N = min(check_int(N, "N", min_value=1), n_items)
        scores = (self.user_factors[users] @ self.item_factors.T).astype(np.float64)
        if filter_already_liked_items:
            if user_items is None:
                raise ValueError("user_items (CSR rows of these users) is needed to filter liked items")
            ui = _check_ratings(user_items, "user_items", shape=(len(users), n_items))
            for row in range(len(users)):
                scores[row, ui.indices[ui.indptr[row]:ui.indptr[row + 1]]] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :N]
        best = np.take_along_axis(scores, top, axis=1)
        keep = np.isfinite(best)
        ids = np.where(keep, top, -1)  # fewer than N unliked items: padded with -1 / -inf
        if np.ndim(userid) == 0:
            return ids[0], best[0]
        return ids, best

    def similar_items(self, itemid, N: int = 10):
        """The ``N`` items with the largest cosine similarity to ``itemid`` (itself first)."""
        self._fitted()
        item = int(self._ids(itemid, len(self.item_factors), "itemid")[0])
        Y = self.item_factors.astype(np.float64)
        norms = np.linalg.norm(Y, axis=1)
        norms[norms == 0] = 1.0
        sim = (Y @ Y[item]) / (norms * norms[item])
        N = min(check_int(N, "N", min_value=1), len(Y))
        top = np.argsort(-sim, kind="stable")[:N]
        return top, sim[top]

    def recalculate_user(self, userid, user_items):
        """Factor of a user computed from ``user_items`` (1 x n_items CSR) against fixed items
        (CG warm-starts from the user's current factor; the model is not changed)."""
        self._fitted()
        u = int(self._ids(userid, len(self.user_factors), "userid")[0])
        R = _check_ratings(user_items, "user_items", shape=(1, len(self.item_factors)),
                           dtype=self.item_factors.dtype, nonneg=self.implicit)
        x = self.user_factors[u:u + 1].copy()
        return self._solve_rows(R, self.item_factors, x)[0]

    def partial_fit_users(self, userids, user_items) -> "ALS":
        """Recompute (or add, growing ``user_factors``) the given users from their rows."""
        self._fitted()
        ids = self._ids(userids, np.iinfo(np.int32).max, "userids")
        R = _check_ratings(user_items, "user_items", shape=(len(ids), len(self.item_factors)),
                           dtype=self.item_factors.dtype, nonneg=self.implicit)
        self.user_factors = self._grow(self.user_factors, ids)
        X = self.user_factors[ids].copy()
        self.user_factors[ids] = self._solve_rows(R, self.item_factors, X)
        return self

    def partial_fit_items(self, itemids, item_users) -> "ALS":
        """Recompute (or add) the given items from their columns (item x user CSR rows)."""
        self._fitted()
        ids = self._ids(itemids, np.iinfo(np.int32).max, "itemids")
        R = _check_ratings(item_users, "item_users", shape=(len(ids), len(self.user_factors)),
                           dtype=self.user_factors.dtype, nonneg=self.implicit)
        self.item_factors = self._grow(self.item_factors, ids)
        Y = self.item_factors[ids].copy()
        self.item_factors[ids] = self._solve_rows(R, self.user_factors, Y)
        return self

    @staticmethod
    def _grow(F, ids):
        if ids.size and ids.max() >= len(F):
            F = np.concatenate([F, np.zeros((int(ids.max()) + 1 - len(F), F.shape[1]), F.dtype)])
        return F

    # ------------------------------------------------------------------ persistence
    _SAVED = ("factors", "regularization", "iterations", "implicit", "alpha", "cg_steps", "exact")

    def save(self, path) -> None:
        """Write the settings and factors to a NumPy ``.npz`` file."""
        self._fitted()
        np.savez(path, user_factors=self.user_factors, item_factors=self.item_factors,
                 loss_=np.asarray(self.loss_), **{k: np.asarray(getattr(self, k)) for k in self._SAVED})

    @classmethod
    def load(cls, path, **kwargs) -> "ALS":
        """Read a model written by :meth:`save` (``kwargs`` e.g. backend=...)."""
        with np.load(path, allow_pickle=False) as z:
            params = {k: z[k].item() for k in cls._SAVED}
            model = cls(**params, dtype=z["user_factors"].dtype, **kwargs)
            model.user_factors, model.item_factors = z["user_factors"], z["item_factors"]
            model.loss_ = list(z["loss_"])
        return model


def mf_sgd(R, factors: int = 16, lr: float = 0.01, regularization: float = 0.01, epochs: int = 20,
           *, dtype: Any = np.float32, deterministic: bool = False, random_state: Any = None,
           backend: str = "auto"):
    """Matrix factorization by SGD on the observed entries of the CSR matrix ``R``.

    e = r - u.v, u <- u + lr (e v - lambda u), v <- v + lr (e u - lambda v) (seed 004 has the
    sign of the step wrong). Compiled backends run Hogwild-parallel; ``deterministic=True``
    runs serially in a seeded order. Returns ``(U, V)``.

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
    R = _check_ratings(R, "R", dtype=dt)
    be = drv.SGD_EPOCH.resolve(backend)
    rng = check_random_state(random_state)
    U = (rng.standard_normal((R.shape[0], f)) * 0.1).astype(dt)
    V = (rng.standard_normal((R.shape[1], f)) * 0.1).astype(dt)
    coo = R.tocoo()
    rows, cols = coo.row.astype(np.int32), coo.col.astype(np.int32)
    drv.sgd_fit(be, rows, cols, np.ascontiguousarray(coo.data, dtype=dt), U, V, lr=lr, reg=reg,
                epochs=epochs, deterministic=bool(deterministic), rng=rng)
    return U, V

