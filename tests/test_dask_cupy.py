"""pyml.dask.KMeans on CuPy chunks, with the CUDA kernels executed on the CPU (tests/cuda_cpu:
the stand-in CuPy and CUDA's execution model for g++). A threaded LocalCluster shares this
process's stand-in module, so its worker threads run the GPU-worker path: the cuda backend per
chunk, device partial sums, host (k, d) totals. What this proves and what it does not (no real
GPU, no real CuPy): see tests/cuda_cpu/README.md.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import pyml

pytestmark = [pytest.mark.cuda_cpu,
              pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA-on-CPU emulator needs g++")]

cuda_cpu = pytest.importorskip("cuda_cpu")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
pdask = pytest.importorskip("pyml.dask")


@pytest.fixture(scope="module")
def cupy():
    cuda_cpu.install()
    import cupy as cp

    yield cp
    cuda_cpu.uninstall()


@pytest.fixture(scope="module")
def client(cupy):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _data(dtype=np.float32):
    X, _, _ = pyml.datasets.make_blobs(301, 5, 4, cluster_std=1.5, dtype=dtype, seed=3)
    return X


def _on_device(cupy, X, chunks=(90, 5)):
    import dask.array as da

    return da.from_array(X, chunks=chunks).map_blocks(cupy.asarray, dtype=X.dtype)


def test_a_cupy_chunk_is_assigned_by_the_cuda_backend(cupy):
    from pyml.dask import _kmeans_tasks as tasks

    X = _data()
    for backend in (None, "auto"):
        labels, dist = tasks._labels(cupy.asarray(X), X[:4].copy(), backend)
        assert pyml._backend.is_cupy(labels) and pyml._backend.is_cupy(dist)  # device results
    with pytest.raises((TypeError, ValueError)):  # a CPU backend forced on device data refuses it
        tasks._labels(cupy.asarray(X), X[:4].copy(), "cpp")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("persist", [False, True])
def test_cupy_chunks_equal_single_machine(cupy, client, dtype, persist):
    X = _data(dtype)
    C0 = X[[0, 80, 160, 240]].copy()
    Xd = _on_device(cupy, X)
    if persist:
        Xd = client.persist(Xd)
    ours = pdask.KMeans(4, init=C0, max_iter=20, tol=0).fit(Xd)
    local = pyml.KMeans(4, init=C0, n_init=1, max_iter=20, tol=0).fit(X)
    labels = ours.labels_.compute()
    assert pyml._backend.is_cupy(labels)  # predict follows the chunks onto the device
    np.testing.assert_array_equal(labels.get(), local.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, local.cluster_centers_, rtol=1e-5, atol=1e-5)
    assert ours.inertia_ == pytest.approx(local.inertia_, rel=1e-5)
    assert ours.n_iter_ == local.n_iter_
    d = ours.transform(Xd).compute().get()
    ref = np.sqrt(((X[:, None, :].astype(np.float64) - ours.cluster_centers_[None]) ** 2).sum(-1))
    np.testing.assert_allclose(d, ref, rtol=1e-5, atol=1e-5)


def test_cupy_chunks_kmeans_parallel_init_matches_numpy_chunks(cupy, client):
    """k-means|| draws from per-chunk seeds: the same candidates whether the chunks are NumPy or
    CuPy, hence the same fit."""
    import dask.array as da

    X = _data(np.float64)
    on_host = pdask.KMeans(4, random_state=5, max_iter=10).fit(da.from_array(X, chunks=(90, 5)))
    on_dev = pdask.KMeans(4, random_state=5, max_iter=10).fit(_on_device(cupy, X))
    np.testing.assert_allclose(on_dev.cluster_centers_, on_host.cluster_centers_, rtol=1e-9)
    np.testing.assert_array_equal(on_dev.labels_.compute().get(), on_host.labels_.compute())


def test_cupy_chunk_with_nan_names_the_chunk(cupy, client):
    X = _data(np.float64)
    X[200, 3] = np.nan
    with pytest.raises(ValueError, match=r"chunk 2 .*row 20 .*column 3"):
        pdask.KMeans(4, init=X[:4].copy(), max_iter=3).fit(_on_device(cupy, X))
