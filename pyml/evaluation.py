"""Evaluating recommenders on held-out interactions, as ``implicit.evaluation`` does:
:func:`train_test_split`, :func:`precision_at_k`, :func:`ndcg_at_k`,
:func:`mean_average_precision_at_k`, :func:`AUC_at_k` and :func:`ranking_metrics_at_k`.

Works with any model that has implicit's ``recommend(userids, user_items, N)`` (a pyml
:class:`~pyml.ALS` or an implicit model). The model ranks each test user's items in batches
(liked training items filtered out); the metrics are summed by a compiled kernel
(``ranking_metrics``, binary search in the sorted test rows), with implicit's definitions:
precision@K = sum_u hits_u / sum_u min(K, |T_u|); nDCG@K with gain 1/log2(rank + 1) over the
ideal ranking; MAP@K; AUC limited to the top K; all over the users with test items.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _mf_driver as drv
from ._validation import check_int, check_random_state, check_scalar

__all__ = ["train_test_split", "precision_at_k", "ndcg_at_k", "mean_average_precision_at_k",
           "AUC_at_k", "ranking_metrics_at_k"]

_BATCH = 1000  # users ranked per recommend call


def train_test_split(ratings, train_percentage: float = 0.8, random_state: Any = None):
    """Split the stored entries of ``ratings`` at random: each goes to train with probability
    ``train_percentage``. Returns ``(train, test)`` CSR matrices of the same shape (negative
    test values are dropped, as implicit does)."""
    import scipy.sparse as sp  # on first use: keeps scipy.sparse out of `import pyml`

    frac = check_scalar(train_percentage, "train_percentage", low=0.0, high=1.0)
    if not sp.issparse(ratings):
        raise TypeError(f"ratings must be a scipy.sparse matrix, got {type(ratings).__name__}")
    coo = ratings.tocoo()
    train_mask = check_random_state(random_state).random(coo.nnz) < frac

    def part(mask):
        return sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=coo.shape,
                             dtype=coo.dtype)

    train, test = part(train_mask), part(~train_mask)
    test.data[test.data < 0] = 0
    test.eliminate_zeros()
    return train, test


def ranking_metrics_at_k(model, train_user_items, test_user_items, K: int = 10,
                         show_progress: bool = True, num_threads: int = 1) -> dict[str, float]:
    """precision, map, ndcg and auc at ``K`` of ``model`` (see the module docstring).
    ``num_threads`` is accepted for implicit compatibility (ranking uses the model's threads)."""
    import scipy.sparse as sp  # on first use: keeps scipy.sparse out of `import pyml`

    K = check_int(K, "K", min_value=1)
    check_int(num_threads, "num_threads", min_value=0)
    test, _ = drv.csr_input(test_user_items, "test_user_items", dtype=np.float64)
    n_users, n_items = test.shape
    train, _ = drv.csr_input(train_user_items, "train_user_items", dtype=np.float64,
                             shape=(n_users, n_items))
    train_csr = sp.csr_matrix((train.data, train.indices, train.indptr), shape=train.shape)
    users = np.flatnonzero(np.diff(test.indptr))
    ids = np.full((len(users), K), -1, dtype=np.int32)
    bar = None
    if show_progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(users), desc="ranking")
        except ImportError:  # progress is cosmetic; tqdm is optional
            bar = None
    for b0 in range(0, len(users), _BATCH):
        batch = users[b0:b0 + _BATCH]
        rec, _ = model.recommend(batch, train_csr[batch], N=K)
        rec = np.asarray(rec).reshape(len(batch), -1)
        ids[b0:b0 + len(batch), :rec.shape[1]] = rec[:, :K]
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    kernel = drv.RANKING_METRICS.get(drv.RANKING_METRICS.resolve("auto"))
    hits, pr_div, ap, ndcg, auc, total = kernel(ids, users.astype(np.int64), test.indptr,
                                                test.indices, n_items)
    if total == 0:
        raise ValueError("test_user_items has no stored entries: nothing to evaluate")
    return {"precision": float(hits / pr_div), "map": float(ap / total),
            "ndcg": float(ndcg / total), "auc": float(auc / total)}


def precision_at_k(model, train_user_items, test_user_items, K: int = 10,
                   show_progress: bool = True, num_threads: int = 1) -> float:
    """P@K = sum_u |top-K(u) & T_u| / sum_u min(K, |T_u|) (implicit's definition)."""
    return ranking_metrics_at_k(model, train_user_items, test_user_items, K, show_progress,
                                num_threads)["precision"]


def ndcg_at_k(model, train_user_items, test_user_items, K: int = 10,
              show_progress: bool = True, num_threads: int = 1) -> float:
    """nDCG@K with binary relevance, averaged over the users with test items."""
    return ranking_metrics_at_k(model, train_user_items, test_user_items, K, show_progress,
                                num_threads)["ndcg"]


def mean_average_precision_at_k(model, train_user_items, test_user_items, K: int = 10,
                                show_progress: bool = True, num_threads: int = 1) -> float:
    """MAP@K, averaged over the users with test items."""
    return ranking_metrics_at_k(model, train_user_items, test_user_items, K, show_progress,
                                num_threads)["map"]


def AUC_at_k(model, train_user_items, test_user_items, K: int = 10,  # noqa: N802 (implicit's name)
             show_progress: bool = True, num_threads: int = 1) -> float:
    """AUC limited to the top K, averaged over the users with test items."""
    return ranking_metrics_at_k(model, train_user_items, test_user_items, K, show_progress,
                                num_threads)["auc"]
