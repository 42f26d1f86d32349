"""pyml.evaluation against implicit.evaluation's numbers, and a pyml ALS served the way implicit
users call their models (recommend / similar_* arguments, return dtypes, save/load)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import pyml
from pyml import _mf_driver as drv
from pyml import evaluation
from pyml.datasets import synthetic_ratings
from pyml.reference import mf as ref


@pytest.fixture(scope="module")
def split():
    R, _ = synthetic_ratings(300, 200, 6000, implicit=True, seed=7)
    train, test = evaluation.train_test_split(R, 0.8, random_state=0)
    model = pyml.ALS(factors=8, iterations=4, random_state=0, show_progress=False).fit(train)
    return model, train, test


def test_train_test_split_partitions_the_entries():
    R, _ = synthetic_ratings(50, 40, 600, implicit=True, seed=1)
    train, test = evaluation.train_test_split(R, 0.75, random_state=3)
    assert train.shape == test.shape == R.shape
    assert abs((train + test) - R).max() == 0
    assert train.multiply(test).nnz == 0
    assert 0.6 < train.nnz / R.nnz < 0.9


@pytest.mark.parametrize("K", [1, 5, 10, 150])  # K > n_items: implicit 0.7.3 reports P > 1
def test_metrics_equal_implicit_evaluation(split, K):
    iev = pytest.importorskip("implicit.evaluation")
    model, train, test = split
    ours = evaluation.ranking_metrics_at_k(model, train, test, K=K, show_progress=False)
    theirs = iev.ranking_metrics_at_k(model, train, test, K=K, show_progress=False)
    for key in ("precision", "map", "ndcg", "auc"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-12, abs=1e-15), key
    assert evaluation.precision_at_k(model, train, test, K=K, show_progress=False) == \
        pytest.approx(iev.precision_at_k(model, train, test, K=K, show_progress=False), rel=1e-12)
    assert evaluation.ndcg_at_k(model, train, test, K=K, show_progress=False) == \
        pytest.approx(iev.ndcg_at_k(model, train, test, K=K, show_progress=False), rel=1e-12)


@pytest.mark.parametrize("backend", ["python", "numba"])
def test_ranking_kernel_equals_reference(split, backend):
    model, train, test = split
    users = np.flatnonzero(np.diff(test.indptr))
    ids, _ = model.recommend(users, train[users], N=7)
    ids[0, 3:] = -1  # rows with fewer than K recommendations
    args = (ids, users.astype(np.int64), test.indptr.astype(np.int64), test.indices, test.shape[1])
    np.testing.assert_allclose(drv.RANKING_METRICS.get(backend)(*args), ref.ranking_metrics(*args),
                               rtol=1e-12)


def test_recommend_like_implicit(split):
    model, train, test = split
    ids, scores = model.recommend(np.arange(5), train[:5], N=6)
    assert ids.dtype == np.int32 and scores.dtype == np.float32 and ids.shape == (5, 6)
    one_ids, one_scores = model.recommend(2, train[2], N=6)
    assert one_ids.shape == (6,) and np.array_equal(one_ids, ids[2])
    # candidate lists and excluded items
    cand = [1, 4, 9, 16, 25, 36]
    got, _ = model.recommend(2, train[2], N=10, items=cand, filter_already_liked_items=False)
    assert len(got) == len(cand) and set(got) == set(cand)
    banned = ids[2][:3]
    got, _ = model.recommend(2, train[2], N=6, filter_items=banned)
    assert not set(got) & set(banned)
    with pytest.raises(ValueError, match="not both"):
        model.recommend(2, train[2], items=cand, filter_items=banned)
    # recalculate_user: factors from the given rows, equal to recalculate_user's
    x = model.recalculate_user(2, train[2])
    got, sc = model.recommend(2, train[2], N=6, recalculate_user=True)
    S = model.item_factors @ x
    S[train[2].indices] = -np.inf
    assert np.array_equal(got, np.argsort(-S, kind="stable")[:6].astype(np.int32))
    # fewer unliked items than N: -FLT_MAX scores (implicit's convention) and id -1
    full = sp.csr_matrix(np.ones((1, train.shape[1])))
    got, sc = model.recommend(0, full, N=5)
    assert np.all(got == -1) and np.all(sc == np.finfo(np.float32).min)
    assert model.recommend(0, train[0], N=10**6)[0].shape == (train.shape[1],)
    assert model.recommend_all(train, N=3).shape == (train.shape[0], 3)


def test_similar_items_and_users_batches(split):
    model, train, _ = split
    ids, sims = model.similar_items(np.array([3, 4]), N=5)
    assert ids.shape == sims.shape == (2, 5) and ids.dtype == np.int32
    for row, item in enumerate((3, 4)):
        one, s = model.similar_items(item, N=5)
        assert one[0] == item and s[0] == pytest.approx(1.0, abs=1e-5)
        assert np.array_equal(one, ids[row])
    got, _ = model.similar_items(3, N=3, items=[3, 7, 8, 11])
    assert got[0] == 3 and set(got) <= {3, 7, 8, 11}
    got, _ = model.similar_items(3, N=4, filter_items=[3])
    assert 3 not in got
    y = model.recalculate_item(3, train.T.tocsr()[[3]])
    got, _ = model.similar_items(3, N=4, recalculate_item=True, item_users=train.T.tocsr()[[3]])
    Yn = model.item_factors / np.linalg.norm(model.item_factors, axis=1, keepdims=True)
    assert np.array_equal(got, np.argsort(-(Yn @ (y / np.linalg.norm(y))), kind="stable")[:4])
    uids, _ = model.similar_users(np.array([0, 1]), N=4)
    assert uids.shape == (2, 4) and list(uids[:, 0]) == [0, 1]


def test_fit_keywords_and_save_load_with_or_without_suffix(split, tmp_path):
    model, train, _ = split
    seen = []
    pyml.ALS(factors=4, iterations=2, random_state=0).fit(
        train, show_progress=False, callback=lambda it, t, loss: seen.append((it, loss)))
    assert seen == [(0, None), (1, None)]  # loss off by default: None, as implicit passes
    model.save(str(tmp_path / "p"))  # NumPy writes p.npz
    back = pyml.ALS.load(str(tmp_path / "p"))
    assert np.array_equal(back.item_factors, model.item_factors) and back.implicit
    assert np.array_equal(pyml.ALS.load(str(tmp_path / "p.npz")).user_factors, model.user_factors)


def test_load_implicit_saved_model(split, tmp_path):
    als = pytest.importorskip("implicit.cpu.als")
    _, train, _ = split
    theirs = als.AlternatingLeastSquares(factors=6, iterations=2, random_state=0)
    theirs.fit(train, show_progress=False)
    theirs.save(str(tmp_path / "theirs"))
    ours = pyml.ALS.load(str(tmp_path / "theirs"))
    assert ours.factors == 6 and ours.implicit and not ours.exact
    assert np.array_equal(ours.user_factors, theirs.user_factors)
    a, _ = ours.recommend(np.arange(4), train[:4], N=5)
    b, _ = theirs.recommend(np.arange(4), train[:4], N=5)
    assert np.array_equal(a, b)
