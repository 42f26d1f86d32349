"""pyml.dask on a LocalCluster (processes, 2 workers, 1 and 2 threads each): equivalence with
the single-machine estimators on awkward chunkings, a worker killed mid-fit, data larger
than a worker's memory, and bad input."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from scipy import sparse

import pyml

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import pyml.dask as pdask  # noqa: E402


def _cluster(threads: int, **kw):
    return distributed.LocalCluster(n_workers=2, threads_per_worker=threads, processes=True,
                                    dashboard_address=None, silence_logs=40, **kw)


@pytest.fixture(scope="module", params=[1, 2], ids=["1thread", "2threads"])
def client(request):
    with _cluster(request.param) as cluster, distributed.Client(cluster) as c:
        yield c


def _blobs(n=600, d=3, k=4, seed=0, dtype=np.float64):
    X, _, _ = pyml.datasets.make_blobs(n, d, centers=k, dtype=dtype, seed=seed)
    return X


CHUNKINGS = {
    "one-row-chunk": lambda n: (1, n - 1),
    "unequal": lambda n: (7, n // 2, n - 7 - n // 2),
    "many": lambda n: (n // 9,) * 8 + (n - 8 * (n // 9),),
}


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_kmeans_equals_single_machine(client, chunking):
    X = _blobs()
    C0 = X[[0, 100, 200, 300]].copy()
    Xd = da.from_array(X, chunks=(CHUNKINGS[chunking](len(X)), X.shape[1]))
    ours = pdask.KMeans(4, init=C0, max_iter=50).fit(Xd)
    local = pyml.KMeans(4, init=C0, n_init=1, max_iter=50).fit(X)
    np.testing.assert_allclose(ours.cluster_centers_, local.cluster_centers_, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ours.labels_.compute(), local.labels_)
    assert ours.inertia_ == pytest.approx(local.inertia_, rel=1e-12)
    np.testing.assert_array_equal(ours.predict(Xd).compute(), local.predict(X))


def test_kmeans_k_larger_than_a_chunk(client):
    X = _blobs(n=90, k=12, seed=3)
    Xd = da.from_array(X, chunks=10)  # 9 chunks of 10 rows, k = 12
    C0 = X[:12].copy()
    ours = pdask.KMeans(12, init=C0).fit(Xd)
    local = pyml.KMeans(12, init=C0, n_init=1).fit(X)
    np.testing.assert_allclose(ours.cluster_centers_, local.cluster_centers_, atol=1e-12)
    np.testing.assert_array_equal(ours.labels_.compute(), local.labels_)


def test_kmeans_empty_cluster_relocated_like_single_machine(client):
    X = _blobs(n=300, k=3, seed=1)
    C0 = np.vstack([X[:2], np.full((1, X.shape[1]), 1e3)])  # third centre far from all data
    Xd = da.from_array(X, chunks=70)
    ours = pdask.KMeans(3, init=C0).fit(Xd)
    local = pyml.KMeans(3, init=C0, n_init=1).fit(X)
    np.testing.assert_allclose(ours.cluster_centers_, local.cluster_centers_, atol=1e-12)
    np.testing.assert_array_equal(ours.labels_.compute(), local.labels_)


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_kmeans_inits_find_the_blobs(client, init):
    X = _blobs(n=800, k=4, seed=5)
    Xd = da.from_array(X, chunks=150)
    ours = pdask.KMeans(4, init=init, random_state=0).fit(Xd)
    best = min(pyml.KMeans(4, random_state=s).fit(X).inertia_ for s in range(5))
    if init == "k-means||":  # the oversampled seeding finds the blobs from any seed
        assert ours.inertia_ <= 1.05 * best
    else:  # single-candidate seedings may stop in a local minimum, as on one machine
        assert best <= ours.inertia_ < np.inf
    again = pdask.KMeans(4, init=init, random_state=0).fit(Xd)  # seeded: reproducible
    np.testing.assert_array_equal(again.cluster_centers_, ours.cluster_centers_)


def test_kmeans_float32_and_transform(client):
    X = _blobs(dtype=np.float32)
    Xd = da.from_array(X, chunks=100)
    m = pdask.KMeans(4, random_state=0).fit(Xd)
    assert m.cluster_centers_.dtype == np.float32
    T = m.transform(Xd).compute()
    assert T.shape == (len(X), 4)
    np.testing.assert_array_equal(T.argmin(axis=1), m.labels_.compute())


def _kill(client, worker):
    try:
        client.run(os._exit, 1, workers=[worker])
    except Exception:  # the worker dies before it can answer: that is the point
        pass


def _fit_killing_a_worker(client, monkeypatch, X, Xd, from_thread):
    """Fit with one worker killed after the first iteration (from the progress bar's update);
    the result must equal the in-memory fit."""
    import pyml.dask.kmeans as mod

    C0 = X[[0, 1, 2, 3]].copy()
    victim = sorted(client.scheduler_info()["workers"])[0]
    killed = []

    class KillingBar:
        def update(self, n=1):
            if not killed:
                killed.append(victim)
                if from_thread:
                    threading.Thread(target=_kill, args=(client, victim), daemon=True).start()
                else:
                    _kill(client, victim)

        def close(self):
            pass

    monkeypatch.setattr(mod, "progress", lambda *a, **k: KillingBar())
    ours = pdask.KMeans(4, init=C0, tol=0, max_iter=6).fit(Xd)
    local = pyml.KMeans(4, init=C0, n_init=1, tol=0, max_iter=6).fit(X)
    assert killed
    np.testing.assert_allclose(ours.cluster_centers_, local.cluster_centers_, atol=1e-12)
    np.testing.assert_array_equal(ours.labels_.compute(), local.labels_)
    client.wait_for_workers(2, timeout=60)


def test_kmeans_survives_a_worker_killed_mid_fit(client, monkeypatch):
    X = _blobs(n=2000, k=4, seed=7)
    _fit_killing_a_worker(client, monkeypatch, X, da.from_array(X, chunks=200), from_thread=True)


def test_kmeans_threads_at_once(client):
    # several fits submitted concurrently from client threads, each worker running 1-2
    # pyml kernels at once: same answers as one at a time
    X = _blobs(n=1200, k=4, seed=11)
    Xd = da.from_array(X, chunks=100)
    C0 = X[:4].copy()
    want = pdask.KMeans(4, init=C0).fit(Xd).cluster_centers_
    out, errors = [], []

    def fit():
        try:
            out.append(pdask.KMeans(4, init=C0).fit(Xd).cluster_centers_)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fit) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got in out:
        np.testing.assert_array_equal(got, want)


def test_kmeans_bad_input(client):
    X = _blobs()
    Xd = da.from_array(X, chunks=100)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        pdask.KMeans(3).fit(Xd[Xd[:, 0] > -1e9])
    bad = X.copy()
    bad[250, 1] = np.nan
    with pytest.raises(ValueError, match="chunk 2 .*row 50.*column 1"):
        pdask.KMeans(3, init=X[:3]).fit(da.from_array(bad, chunks=100))
    with pytest.raises(ValueError, match="n_clusters"):
        pdask.KMeans(0).fit(Xd)
    with pytest.raises(ValueError, match="n_samples"):
        pdask.KMeans(1000).fit(Xd)
    with pytest.raises(ValueError, match="init"):
        pdask.KMeans(3, init="bogus").fit(Xd)
    with pytest.raises(ValueError, match="shape"):
        pdask.KMeans(3, init=X[:2]).fit(Xd)
    with pytest.raises(ValueError, match="2-D"):
        pdask.KMeans(3).fit(da.ones(10, chunks=5))
    with pytest.raises(TypeError, match="real numbers"):
        pdask.KMeans(3).fit(da.from_array(np.array([["a", "b"]] * 5)))
    with pytest.raises(RuntimeError, match="not fitted"):
        pdask.KMeans(3).predict(Xd)


@pytest.mark.slow
def test_kmeans_data_larger_than_worker_memory():
    # 2 workers with 500 MB each; X is 1.0 GB, generated lazily per chunk and never whole
    # on a worker or on the client
    with _cluster(1, memory_limit="500MB") as cluster, distributed.Client(cluster):
        n, d = 4_000_000, 32
        X = da.random.RandomState(0).standard_normal((n, d), chunks=(100_000, d))
        assert X.nbytes > 2 * 500e6
        C0 = np.asarray(X[:8].compute())
        m = pdask.KMeans(8, init=C0, max_iter=2, tol=0).fit(X)
        assert m.cluster_centers_.shape == (8, d)
        assert np.isfinite(m.inertia_) and m.n_iter_ == 2


# ----------------------------------------------------------------------------- ALS
def _ratings(users=120, items=80, nnz=1500, seed=0):
    R, _ = pyml.datasets.synthetic_ratings(users, items, nnz, implicit=True, seed=seed)
    return R


ALS_KW = dict(factors=6, regularization=0.05, alpha=2.0, iterations=3, cg_steps=3,
              random_state=0)


@pytest.mark.parametrize("n_blocks", [1, 3, 7])
def test_als_sparse_equals_single_machine(client, n_blocks):
    R = _ratings()
    ours = pdask.ALS(implicit=True, n_blocks=n_blocks, compute_loss=True, **ALS_KW).fit(R)
    local = pyml.ALS(implicit=True, compute_loss=True, show_progress=False, **ALS_KW).fit(R)
    np.testing.assert_allclose(ours.user_factors, local.user_factors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.item_factors, local.item_factors, rtol=1e-5, atol=1e-6)
    assert ours.loss_[-1] == pytest.approx(local.loss_[-1], rel=1e-3)
    start = pdask.ALS(implicit=True, n_blocks=n_blocks, **{**ALS_KW, "iterations": 0}).fit(R)
    rng = np.random.default_rng(ALS_KW["random_state"])  # pyml.ALS's start, made per block
    np.testing.assert_array_equal(start.user_factors, (rng.random(start.user_factors.shape)
                                                       * 0.01).astype(np.float32))


def test_als_dataframe_with_duplicates_and_explicit(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    R = _ratings(seed=2)
    C = R.tocoo()
    # the first 50 ratings again: duplicates are summed, as scipy.sparse does
    frame = pd.DataFrame({"u": np.r_[C.row, C.row[:50]], "i": np.r_[C.col, C.col[:50]],
                          "r": np.r_[C.data, C.data[:50]]})
    df = dd.from_pandas(frame.sample(frac=1.0, random_state=0), npartitions=5)
    R2 = (R + sparse.csr_matrix((C.data[:50], (C.row[:50], C.col[:50])), shape=R.shape)).tocsr()
    for implicit in (True, False):
        ours = pdask.ALS(implicit=implicit, n_blocks=3, user_col="u", item_col="i",
                         rating_col="r", **ALS_KW).fit(df, shape=R.shape)
        local = pyml.ALS(implicit=implicit, show_progress=False, **ALS_KW).fit(R2)
        np.testing.assert_allclose(ours.user_factors, local.user_factors, rtol=1e-4, atol=1e-5)


def test_als_survives_a_worker_killed_mid_fit(client, monkeypatch):
    import pyml.dask.mf as mod

    R = _ratings(seed=4)
    victim = sorted(client.scheduler_info()["workers"])[-1]
    killed = []

    class KillingBar:
        def update(self, n=1):
            if not killed:  # after the first iteration the blocks live on both workers
                killed.append(victim)
                _kill(client, victim)

        def close(self):
            pass

    monkeypatch.setattr(mod, "progress", lambda *a, **k: KillingBar())
    ours = pdask.ALS(implicit=True, n_blocks=4, **ALS_KW).fit(R)
    local = pyml.ALS(implicit=True, show_progress=False, **ALS_KW).fit(R)
    assert killed
    np.testing.assert_allclose(ours.user_factors, local.user_factors, rtol=1e-5, atol=1e-6)
    client.wait_for_workers(2, timeout=60)


def test_als_bad_input(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    frame = pd.DataFrame({"user": [0, 1, 2], "item": [0, 5, 1], "rating": [1.0, 2.0, 3.0]})
    df = dd.from_pandas(frame, npartitions=2)
    with pytest.raises(ValueError, match="outside"):
        pdask.ALS(n_blocks=2, **ALS_KW).fit(df, shape=(3, 4))
    with pytest.raises(ValueError, match="no column"):
        pdask.ALS(user_col="uid", **ALS_KW).fit(df)
    with pytest.raises(TypeError, match="integer ids"):
        pdask.ALS(**ALS_KW).fit(df.assign(user=df["user"].astype(float)))
    with pytest.raises(ValueError, match="empty"):
        pdask.ALS(**ALS_KW).fit(dd.from_pandas(frame.iloc[:0], npartitions=1))
    with pytest.raises(ValueError, match="NaN"):
        bad = dd.from_pandas(frame.assign(rating=[1.0, np.nan, 3.0]), npartitions=2)
        pdask.ALS(n_blocks=2, **ALS_KW).fit(bad, shape=(3, 6))
    with pytest.raises(TypeError, match="dask.dataframe"):
        pdask.ALS(**ALS_KW).fit(np.ones((3, 3)))
    with pytest.raises(ValueError, match="factors"):
        pdask.ALS(factors=0).fit(_ratings())


# ----------------------------------------------------------------------------- value iteration
def _sparse_mdp(S=300, A=3, k=4, seed=0):
    rng = np.random.default_rng(seed)
    P = []
    for _ in range(A):
        cols = rng.integers(0, S, (S, k))
        vals = rng.random((S, k))
        vals /= vals.sum(axis=1, keepdims=True)
        P.append(sparse.csr_matrix((vals.ravel(), (np.repeat(np.arange(S), k), cols.ravel())),
                                   shape=(S, S)))
    return P, rng.normal(size=(S, A))


@pytest.mark.parametrize("backend", ["python", "numba", "cpp"])
def test_value_iteration_equals_single_machine(client, backend):
    if pyml.backends()[backend] is not None:
        pytest.skip(f"{backend} unavailable")
    P, R = _sparse_mdp(S=120 if backend == "python" else 300)
    want = pyml.value_iteration(P, R, 0.9, epsilon=1e-8)
    got = pdask.value_iteration(P, R, 0.9, epsilon=1e-8, n_blocks=5, backend=backend)
    np.testing.assert_allclose(got.V, want.V, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got.policy, want.policy)
    assert got.n_iter == want.n_iter


def test_value_iteration_given_row_blocks(client):
    P, R = _sparse_mdp(S=200, seed=1)
    cuts = [0, 1, 90, 200]  # a block of one state, unequal blocks
    blocks = [[Pa[lo:hi] for lo, hi in zip(cuts[:-1], cuts[1:])] for Pa in P]
    want = pyml.value_iteration(P, R, 0.95, epsilon=1e-9)
    got = pdask.value_iteration(blocks, R, 0.95, epsilon=1e-9)
    np.testing.assert_allclose(got.V, want.V, rtol=0, atol=1e-12)


def test_value_iteration_bad_input(client):
    P, R = _sparse_mdp(S=50, seed=2)
    bad = [Pa.copy() for Pa in P]
    bad[1].data[3] += 0.5  # a row no longer sums to 1
    with pytest.raises(ValueError, match=r"P\[1\] row \d+ sums to"):
        pdask.value_iteration(bad, R, 0.9)
    corrupt = [Pa.copy() for Pa in P]
    corrupt[0].indices[5] = 10**6
    # an index past S: refused as corrupt, or (SciPy drops it when slicing the row block)
    # as the row that no longer sums to 1 -- a clear error either way, never a read past V
    with pytest.raises(ValueError, match=r"corrupt CSR|outside|P\[0\] row \d+ sums to"):
        pdask.value_iteration(corrupt, R, 0.9)
    with pytest.raises(ValueError, match="R must have shape"):
        pdask.value_iteration(P, R[:, :2], 0.9)
    with pytest.raises(ValueError, match="gamma"):
        pdask.value_iteration(P, R, 1.5)
    with pytest.raises(TypeError, match="list"):
        pdask.value_iteration(P[0], R, 0.9)
    with pytest.raises(ValueError, match="same row blocks"):
        pdask.value_iteration([[P[0][:10], P[0][10:]], [P[1]], [P[2]]], R, 0.9)


# ----------------------------------------------------------------------------- persisted chunks
def test_kmeans_persisted_one_task_per_worker_thread(client):
    from pyml.dask._placement import ChunkTasks

    X = _blobs(n=900, k=5, seed=13)
    Xd = client.persist(da.from_array(X, chunks=((1, 99) + (100,) * 8, X.shape[1])))
    distributed.wait(Xd)
    plan = ChunkTasks(Xd)
    groups = plan.groups()
    held = client.has_what()
    nthreads = client.nthreads()
    assert sorted(i for idx, _ in groups for i in idx) == list(range(Xd.numblocks[0]))
    # every group's chunks lie on its worker; at most one group per thread of a worker
    keys = [b.key for b in plan.blocks]
    for idx, worker in groups:
        assert worker is not None and all(keys[i] in held[worker] for i in idx)
    for w in nthreads:
        assert sum(g[1] == w for g in groups) <= nthreads[w]
    C0 = X[[0, 150, 300, 450, 600]].copy()
    ours = pdask.KMeans(5, init=C0, max_iter=50).fit(Xd)
    local = pyml.KMeans(5, init=C0, n_init=1, max_iter=50).fit(X)
    np.testing.assert_allclose(ours.cluster_centers_, local.cluster_centers_, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ours.labels_.compute(), local.labels_)
    assert ours.inertia_ == pytest.approx(local.inertia_, rel=1e-12)


def test_kmeans_persisted_survives_a_worker_killed_mid_fit(client, monkeypatch):
    X = _blobs(n=2000, k=4, seed=17)
    Xd = client.persist(da.from_array(X, chunks=200))  # chunks on both workers, with lineage
    distributed.wait(Xd)
    # the chunks held by the victim are recomputed from lineage
    _fit_killing_a_worker(client, monkeypatch, X, Xd, from_thread=False)


def test_kmeans_persisted_kmeans_parallel_init_and_empty_cluster(client):
    X = _blobs(n=800, k=4, seed=19)
    Xd = client.persist(da.from_array(X, chunks=130))
    ours = pdask.KMeans(4, random_state=0).fit(Xd)
    lazy = pdask.KMeans(4, random_state=0).fit(da.from_array(X, chunks=130))
    # the same seeded draws per chunk whether chunks are grouped per worker or not
    np.testing.assert_allclose(ours.cluster_centers_, lazy.cluster_centers_, rtol=0, atol=1e-12)
    C0 = np.vstack([X[:3], np.full((1, X.shape[1]), 1e3)])  # an empty cluster to refill
    got = pdask.KMeans(4, init=C0).fit(Xd)
    want = pyml.KMeans(4, init=C0, n_init=1).fit(X)
    np.testing.assert_allclose(got.cluster_centers_, want.cluster_centers_, atol=1e-12)


@pytest.mark.gpu
def test_kmeans_cupy_chunks_on_a_gpu(client):
    """Real CuPy chunks on the workers (run by benchmarks/gpu_check.sh on a CUDA machine)."""
    import cupy as cp

    X, _, _ = pyml.datasets.make_blobs(3001, 8, 5, seed=8, dtype=np.float32)
    Xd = da.from_array(X, chunks=(700, 8)).map_blocks(cp.asarray, dtype=X.dtype)
    ours = pdask.KMeans(5, init=X[:5].copy(), max_iter=20, tol=0).fit(Xd)
    local = pyml.KMeans(5, init=X[:5].copy(), n_init=1, max_iter=20, tol=0).fit(X)
    np.testing.assert_array_equal(cp.asnumpy(ours.labels_.compute()), local.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, local.cluster_centers_, rtol=1e-4, atol=1e-4)
