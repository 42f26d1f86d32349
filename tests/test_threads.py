"""Every backend is safe to call from several Python threads at once (Dask workers, web
servers and joblib threads do it): 4 concurrent threads per public call and CPU backend
give the sequential result bit for bit, and numba's workqueue layer, which aborts the
process on concurrent entry, is serialised by pyml instead."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import pyml
from public_calls import LAYERS, SPECS, arrays_of

CPU = [b for b in ("python", "numba", "cpp", "cython") if pyml.backends()[b] is None]
THREADS, CALLS_PER_THREAD = 4, 2


def _concurrently(fn, n=THREADS):
    """Run ``fn`` CALLS_PER_THREAD times in each of ``n`` threads released together."""
    start = threading.Barrier(n)
    results, errors = [[] for _ in range(n)], []

    def work(i):
        start.wait()
        try:
            for _ in range(CALLS_PER_THREAD):
                results[i].append(fn())
        except BaseException as exc:  # collected: an error in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [r for rs in results for r in rs]


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("spec", SPECS + LAYERS, ids=lambda s: s.name)
def test_four_threads_equal_the_sequential_result(spec, backend):
    kwargs = spec.build(np.random.default_rng(0))
    try:
        ref = arrays_of(spec.call(backend=backend, **kwargs))
    except pyml.BackendUnavailableError:
        pytest.skip(f"{spec.name} has no {backend} kernel")
    for out in _concurrently(lambda: spec.call(backend=backend, **kwargs)):
        got = arrays_of(out)
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)  # bit for bit, as the sequential call


def test_set_num_threads_holds_in_other_threads():
    """numba and OpenMP keep the thread count per calling thread; pyml applies its own."""
    if pyml.backends()["cpp"] is not None:
        pytest.skip("needs the cpp backend")
    from pyml._cpp import _info

    old = pyml.get_num_threads()
    X = np.random.default_rng(0).random((200, 3))
    try:
        pyml.set_num_threads(1)
        seen = []

        def work():
            pyml.kmeans_assign(X, X[:2].copy(), backend="cpp")
            seen.append(_info.get_num_threads())

        t = threading.Thread(target=work)
        t.start()
        t.join()
        assert seen == [1]
    finally:
        pyml.set_num_threads(old)


_WORKQUEUE = """
import threading, numpy as np, numba, pyml
rng = np.random.default_rng(0)
X, C = rng.random((20000, 16)), rng.random((64, 16))
x, w = rng.random((4, 8, 32, 32)), rng.random((16, 8, 3, 3))
q = rng.random((2, 4, 128, 32))
P = rng.random((4, 200, 200)); P /= P.sum(-1, keepdims=True); R = rng.random((200, 4))
calls = [lambda: pyml.kmeans_assign(X, C, backend="numba")[0],
         lambda: pyml.conv2d(x, w, backend="numba"),
         lambda: pyml.attention(q, q, q, backend="numba"),
         lambda: pyml.value_iteration(P, R, 0.9, backend="numba").V]
refs = [f() for f in calls]
bad = []
def work():
    for _ in range(5):
        for f, r in zip(calls, refs):
            got = f()
            # labels exactly; values to rounding: numba's np.dot (OpenBLAS) rounded conv2d's
            # 72-term dot products differently (1.4e-14) in a non-main thread on an AVX-512
            # Xeon (SkylakeX kernels), deterministically, with any thread count
            same = (np.array_equal(got, r) if got.dtype.kind in "iu"
                    else np.allclose(got, r, rtol=1e-12, atol=0))
            if not same:
                bad.append(1)
ts = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(numba.threading_layer(), len(bad))
"""


@pytest.mark.parametrize("layer", ["workqueue", "default"])
def test_numba_from_four_threads_does_not_abort(layer):
    """Once: SIGABRT "Numba workqueue threading layer is terminating: Concurrent access"."""
    if pyml.backends()["numba"] is not None:
        pytest.skip("needs numba")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    if layer == "workqueue":
        env["NUMBA_THREADING_LAYER"] = "workqueue"
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(_WORKQUEUE)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    got_layer, wrong = r.stdout.split()
    assert wrong == "0"
    if layer == "workqueue":
        assert got_layer == "workqueue"
