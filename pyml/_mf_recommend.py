"""Serving a fitted factor model the way implicit's models are served: ``recommend`` (one user
or a batch, liked-item filtering, candidate lists), ``recommend_all``, ``similar_items`` and
``similar_users`` (cosine similarity). Ids come back as int32 and scores in the factors' dtype,
so implicit's evaluation functions accept a pyml model.

Fewer than ``N`` candidates left after filtering: the row keeps ``min(N, candidates)`` columns
and the empty slots hold score ``-FLT_MAX`` (as implicit's top-k) and id ``-1`` (implicit leaves
an arbitrary filtered id there)."""
from __future__ import annotations

import numpy as np

from ._mf_driver import csr_input
from ._validation import check_int

_BATCH = 1024  # query rows scored per GEMM: 1024 x n_items scores stay a few MB per 1k items


def check_ids(ids, n: int | None, name: str) -> np.ndarray:
    """Integer ids as a 1-D int64 array, each in [0, n) (any non-negative id when n is None)."""
    arr = np.atleast_1d(np.asarray(ids))
    if arr.size == 0:  # an empty list is float64 to NumPy; its length is what matters
        arr = arr.astype(np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be an integer or a 1-D array of integers, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer or an array of integers, got {arr.dtype}")
    if arr.size and (arr.min() < 0 or (n is not None and arr.max() >= n)):
        bound = f"[0, {n})" if n is not None else "[0, inf)"
        raise ValueError(f"{name} out of range {bound}: got {arr.min()}..{arr.max()}")
    return arr.astype(np.int64)


def _candidates(items, filter_items, n: int, what: str):
    """(sorted candidate ids or None for all, sorted ids to drop or None)."""
    if items is not None and filter_items is not None:
        raise ValueError(f"pass either {what} or filter_{what}, not both")
    cand = None if items is None else np.unique(check_ids(items, n, what))
    drop = None if filter_items is None else np.unique(check_ids(filter_items, n, f"filter_{what}"))
    if cand is not None and cand.size == 0:
        raise ValueError(f"{what} must not be empty")
    return cand, drop


def top_n(queries, factors, N: int, cand, drop, liked=None, norms=None):
    """Best ``N`` columns of ``queries @ factors[cand].T`` per row (``norms``: divide by them).

    ``liked``: CSR rows (one per query) whose items are excluded. Returns (int32 ids, scores)."""
    F = factors if cand is None else factors[cand]
    n_cand = F.shape[0]
    N = min(N, n_cand)
    pos = None
    if cand is not None:  # item id -> column of F
        pos = np.full(factors.shape[0], -1, dtype=np.int64)
        pos[cand] = np.arange(n_cand)
    drop_cols = None
    if drop is not None:
        drop_cols = drop if pos is None else pos[drop][pos[drop] >= 0]
    lowest = np.finfo(F.dtype).min
    out_ids = np.empty((len(queries), N), dtype=np.int32)
    out_scores = np.empty((len(queries), N), dtype=F.dtype)
    for b0 in range(0, len(queries), _BATCH):
        b1 = min(b0 + _BATCH, len(queries))
        S = queries[b0:b1] @ F.T
        if norms is not None:
            S /= norms if cand is None else norms[cand]
        if drop_cols is not None:
            S[:, drop_cols] = -np.inf
        if liked is not None:
            ptr = liked.indptr
            rows = np.repeat(np.arange(b1 - b0), np.diff(ptr[b0:b1 + 1]))
            cols = liked.indices[ptr[b0]:ptr[b1]]
            if pos is not None:
                cols = pos[cols]
                rows, cols = rows[cols >= 0], cols[cols >= 0]
            S[rows, cols] = -np.inf
        if N < n_cand:
            part = np.argpartition(-S, N - 1, axis=1)[:, :N]
        else:
            part = np.broadcast_to(np.arange(n_cand), S.shape)
        order = np.argsort(-np.take_along_axis(S, part, axis=1), axis=1, kind="stable")
        cols = np.take_along_axis(part, order, axis=1)
        best = np.take_along_axis(S, cols, axis=1)
        ids = cols if cand is None else cand[cols]
        empty = ~np.isfinite(best)
        out_ids[b0:b1] = np.where(empty, -1, ids)
        out_scores[b0:b1] = np.where(empty, lowest, best)
    return out_ids, out_scores


class Recommender:
    """Serving methods of a model with ``user_factors`` and ``item_factors`` (mixin)."""

    def recommend(self, userid, user_items=None, N: int = 10, filter_already_liked_items: bool = True,
                  filter_items=None, recalculate_user: bool = False, items=None):
        """Top-``N`` items by score x_u.y_i for one user id or an array of ids (implicit's API).

        ``user_items``: CSR, one row per id, needed to filter the user's liked items and for
        ``recalculate_user=True`` (factors recomputed from those rows). ``items``: rank only these
        ids; ``filter_items``: never return these. Returns ``(ids, scores)``: int32 ids and scores,
        shape (N,) for one id or (n_ids, N) for an array (fewer columns when fewer candidates).
        """
        self._fitted()
        n_items = len(self.item_factors)
        users = check_ids(userid, None if recalculate_user else len(self.user_factors), "userid")
        N = check_int(N, "N", min_value=1)
        cand, drop = _candidates(items, filter_items, n_items, "items")
        liked = None
        if filter_already_liked_items or recalculate_user:
            if user_items is None:
                raise ValueError("user_items (CSR rows of these users) is needed to filter liked "
                                 "items or recalculate users")
            liked, _ = csr_input(user_items, "user_items", shape=(len(users), n_items),
                                 dtype=self.item_factors.dtype, nonneg=bool(self.implicit) and recalculate_user)
        if recalculate_user:
            queries = self._recalculate(users, liked, self.user_factors, self.item_factors)
        else:
            queries = self.user_factors[users]
        ids, scores = top_n(queries, self.item_factors, N, cand, drop,
                            liked if filter_already_liked_items else None)
        if np.ndim(userid) == 0:
            return ids[0], scores[0]
        return ids, scores

    def recommend_all(self, user_items, N: int = 10, filter_already_liked_items: bool = True,
                      filter_items=None, recalculate_user: bool = False, items=None):
        """:meth:`recommend` for every user (row of ``user_items``); returns the (n_users, N) ids."""
        n = getattr(user_items, "shape", (0,))[0]
        ids, _ = self.recommend(np.arange(n), user_items, N, filter_already_liked_items,
                                filter_items, recalculate_user, items)
        return ids

    def _similar(self, query_factors, factors, N, cand, drop, scalar):
        norms = np.linalg.norm(factors, axis=1)
        norms[norms == 0] = 1e-10  # as implicit: a zero factor is similar to nothing
        qn = np.linalg.norm(query_factors, axis=1)
        qn[qn == 0] = 1e-10
        ids, scores = top_n(query_factors, factors, check_int(N, "N", min_value=1), cand, drop,
                            norms=norms.astype(factors.dtype))
        scores /= qn[:, None].astype(scores.dtype)
        return (ids[0], scores[0]) if scalar else (ids, scores)

    def similar_items(self, itemid, N: int = 10, recalculate_item: bool = False, item_users=None,
                      filter_items=None, items=None):
        """The ``N`` items with the largest cosine similarity to each ``itemid`` (itself first);
        shape (N,) for one id, (n_ids, N) for an array."""
        self._fitted()
        n_items = len(self.item_factors)
        ids = check_ids(itemid, None if recalculate_item else n_items, "itemid")
        cand, drop = _candidates(items, filter_items, n_items, "items")
        if recalculate_item:
            if item_users is None:
                raise ValueError("item_users (CSR rows of these items) is needed to recalculate items")
            q = self.recalculate_item(ids, item_users)
        else:
            q = self.item_factors[ids]
        return self._similar(q, self.item_factors, N, cand, drop, np.ndim(itemid) == 0)

    def similar_users(self, userid, N: int = 10, filter_users=None, users=None):
        """The ``N`` users with the largest cosine similarity to each ``userid`` (itself first)."""
        self._fitted()
        n_users = len(self.user_factors)
        ids = check_ids(userid, n_users, "userid")
        cand, drop = _candidates(users, filter_users, n_users, "users")
        return self._similar(self.user_factors[ids], self.user_factors, N, cand, drop,
                             np.ndim(userid) == 0)
