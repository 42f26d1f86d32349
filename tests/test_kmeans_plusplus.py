"""The one-call greedy k-means++ seeding kernel (pyml._cpp.kmeans:kmeans_plusplus): the
reference's picks, the step loop's picks, screened == unscreened bit for bit, thread-count
independence, thread safety, bad input. The step kernel and the API are tested in test_kmeans.py."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import AVAILABLE

import pyml
from pyml import _kmeans_driver as drv
from pyml.reference import kmeans as ref

pytestmark = pytest.mark.skipif("cpp" not in AVAILABLE, reason="needs the cpp backend")


def _kernel():
    return drv.SEED.get("cpp")


def _seed(X, k, w, seed, trials, screen=True):
    C, idx, pot = _kernel()(X, k, w, np.random.default_rng(seed), trials, return_potential=True,
                            screen=screen)
    return C, idx, pot


def _clustered(n, d, k, dtype, seed, std=1.0, offset=0.0):
    X, _, _ = pyml.datasets.make_blobs(n, d, k, cluster_std=std, seed=seed)
    return (X + offset).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trials", [1, 3, 7, 20])
def test_matches_reference(dtype, trials):
    # the reference draws and scores in float64 from the same uniforms; data with clear gaps
    rng = np.random.default_rng(3)
    X = _clustered(150, 3, 6, dtype, seed=4, std=0.5)
    w = rng.uniform(0.2, 2.0, 150)
    w[::9] = 0.0
    _, idx, pot = _seed(X, 6, w, 11, trials)
    _, idx_ref = ref.kmeans_plusplus(X.astype(np.float64), 6, w, np.random.default_rng(11), trials)
    np.testing.assert_array_equal(idx, idx_ref)
    assert np.all(w[idx] > 0)
    # potential after each centre: sum w D2 over the chosen prefix
    Xd = X.astype(np.float64)
    D2 = ((Xd[:, None, :] - Xd[None, idx, :]) ** 2).sum(-1)
    want = np.array([(w * D2[:, : c + 1].min(1)).sum() for c in range(6)])
    np.testing.assert_allclose(pot, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["blobs", "offset", "duplicates", "weighted"])
def test_same_picks_as_the_step_loop(dtype, case, monkeypatch):
    # the one-call kernel against the driver's loop over kmeans_plusplus_step (np.cumsum draws,
    # one kernel call per step) on clustered data, same generator: the same centres
    rng = np.random.default_rng(7)
    w = np.ones(3000)
    if case == "blobs":
        X = _clustered(3000, 8, 60, dtype, seed=1, std=0.3)
    elif case == "offset":  # a large common offset: distances from differences, no cancellation
        X = _clustered(3000, 5, 40, dtype, seed=3, std=0.5, offset=1e4)
    elif case == "duplicates":  # 20 distinct rows: D2 = 0 everywhere after 20 centres, then weights
        X = np.repeat(rng.standard_normal((20, 3)), 150, axis=0).astype(dtype)
    else:
        X = _clustered(3000, 6, 50, dtype, seed=5, std=0.4)
        w = rng.uniform(0.0, 3.0, 3000)
        w[rng.random(3000) < 0.3] = 0.0
    for trials in (1, 7, 17):
        _, one = pyml.kmeans_plusplus(X, 60, sample_weight=w, random_state=5, n_local_trials=trials,
                                      backend="cpp")
        with monkeypatch.context() as mp:
            mp.setattr(drv, "SEED_MAX_TRIALS", 0)  # the step loop
            _, steps = pyml.kmeans_plusplus(X, 60, sample_weight=w, random_state=5,
                                            n_local_trials=trials, backend="cpp")
        np.testing.assert_array_equal(one, steps, err_msg=f"{case} trials={trials}")
        assert np.all(w[one] > 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["blobs", "tight", "offset", "duplicates", "weighted", "huge",
                                  "tiny", "mixed", "wide", "one"])
def test_screened_equals_unscreened(dtype, case):
    # the screen skips only pairs a rounding bound proves no closer than D2, and computes the
    # others with the unscreened operations: the same picks and potentials, bit for bit (both
    # screens of kmeans_screen.hpp: the bfloat16 Rows and the Lanes in X's own precision)
    rng = np.random.default_rng(7)
    w = np.ones(3000)
    if case == "blobs":  # many centres: most pairs settled by the bound
        X = _clustered(3000, 8, 60, dtype, seed=1, std=0.3)
    elif case == "tight":  # points almost on top of each other: near ties everywhere
        X = _clustered(3000, 4, 30, dtype, seed=2, std=1e-3)
    elif case == "offset":  # a large common offset: the expanded form cancels, the bound says so
        X = _clustered(3000, 5, 40, dtype, seed=3, std=0.5, offset=1e4)
    elif case == "duplicates":
        X = np.repeat(rng.standard_normal((20, 3)), 150, axis=0).astype(dtype)
    elif case == "huge":  # ||x||^2 overflows float32: the bound proves nothing, all computed
        X = (_clustered(3000, 4, 30, np.float64, seed=4) * (1e18 if dtype == np.float32 else 1e150)).astype(dtype)
    elif case == "tiny":  # the screen's bfloat16 copy holds subnormals
        X = (_clustered(3000, 4, 30, np.float64, seed=4) * (1e-39 if dtype == np.float32 else 1e-300)).astype(dtype)
    elif case == "mixed":  # columns six orders of magnitude apart
        X = (_clustered(3000, 6, 30, np.float64, seed=6) * np.logspace(-3, 3, 6)).astype(dtype)
    elif case == "wide":  # many coordinates (the bound's rounding terms grow with d)
        X = _clustered(3000, 130, 30, dtype, seed=7, std=0.2)
    elif case == "one":  # a single coordinate: near ties between many rows
        X = np.round(_clustered(3000, 1, 30, np.float64, seed=8), 2).astype(dtype)
    else:
        X = _clustered(3000, 6, 50, dtype, seed=5, std=0.4)
        w = rng.uniform(0.0, 3.0, 3000)
        w[rng.random(3000) < 0.3] = 0.0
    for trials in (1, 7, 15, 17):  # 15: the slots fill the AVX-512 float32 lanes (Lanes screen)
        _, i1, p1 = _seed(X, 120, w, 5, trials, screen=True)
        _, i0, p0 = _seed(X, 120, w, 5, trials, screen=False)
        np.testing.assert_array_equal(i1, i0, err_msg=f"{case} trials={trials}")
        np.testing.assert_array_equal(p1, p0, err_msg=f"{case} trials={trials}")
        assert np.all(w[i1] > 0)


def test_same_bits_for_any_thread_count():
    X = _clustered(20_000, 16, 40, np.float32, seed=8, std=2.0)
    w = np.ones(20_000)
    old = pyml.get_num_threads() if hasattr(pyml, "get_num_threads") else None
    try:
        pyml.set_num_threads(1)
        one = _seed(X, 50, w, 1, 5)
        pyml.set_num_threads(2)
        two = _seed(X, 50, w, 1, 5)
    finally:
        if old is not None:
            pyml.set_num_threads(old)
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(one[2], two[2])


def test_uniform_stream_as_the_reference_consumes_it():
    # after seeding, the generator is where the step-by-step driver leaves it (n_init > 1 goes on)
    X = _clustered(500, 3, 5, np.float64, seed=0)
    w = np.ones(500)
    g = np.random.default_rng(4)
    _kernel()(X, 9, w, g, 4)
    g2 = np.random.default_rng(4)
    g2.random(1 + 8 * 4)
    assert g.random() == g2.random()


def test_thread_safe():
    X = _clustered(8000, 8, 20, np.float32, seed=6)
    w = np.ones(8000)
    want = _seed(X, 30, w, 2, 5)[1]
    got = [None] * 4

    def work(i):
        got[i] = _seed(X, 30, w, 2, 5)[1]
    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g in got:
        np.testing.assert_array_equal(g, want)


def test_inputs_not_modified_and_bad_input():
    X = _clustered(100, 3, 4, np.float64, seed=1)
    w = np.ones(100)
    X0, w0 = X.copy(), w.copy()
    _kernel()(X, 5, w, np.random.default_rng(0), 3)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(w, w0)
    g = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_clusters"):
        _kernel()(X, 101, w, g, 3)
    with pytest.raises(ValueError, match="n_local_trials"):
        _kernel()(X, 5, w, g, 0)
    with pytest.raises(ValueError, match="w must have shape"):
        _kernel()(X, 5, w[:50], g, 3)
    with pytest.raises(ValueError, match="positive sum"):
        _kernel()(X, 5, np.zeros(100), g, 3)
    with pytest.raises(ValueError, match=">= 0"):
        _kernel()(X, 5, -w, g, 3)


def test_estimator_uses_the_one_call_kernel(monkeypatch):
    # KMeans' default init runs the whole seeding in one kernel call on the cpp backend
    calls = []
    orig = pyml._backend.Kernel.get

    def spy(self, b):
        calls.append(self.name)
        return orig(self, b)
    monkeypatch.setattr(pyml._backend.Kernel, "get", spy)
    X = _clustered(400, 3, 4, np.float64, seed=2)
    pyml.KMeans(4, random_state=0, max_iter=2, backend="cpp").fit(X)
    assert "kmeans_plusplus" in calls and "kmeans_plusplus_step" not in calls
