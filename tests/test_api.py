"""The backend registry, default-backend configuration, threads and dispatch rules."""
import numpy as np
import pytest

import pyml
from pyml._backend import BACKENDS, AUTO_ORDER, KernelTable, resolve_backend


def test_backends_lists_every_backend_with_reason():
    b = pyml.backends()
    assert tuple(b) == BACKENDS
    assert b["python"] is None
    for name, reason in b.items():
        assert reason is None or (isinstance(reason, str) and reason)
    assert set(pyml.available_backends()) == {k for k, v in b.items() if v is None}


def test_unavailable_backend_raises_with_install_hint():
    if pyml.backends()["cuda"] is None:
        pytest.skip("a CUDA device is present")
    with pytest.raises(pyml.BackendUnavailableError, match=r"pyml\[cuda1[23]\]"):
        resolve_backend("cuda", "kmeans", ("python", "cuda"))


def test_kernel_without_backend_raises():
    with pytest.raises(pyml.BackendUnavailableError, match="has no 'numba' kernel"):
        resolve_backend("numba", "kmeans", ("python",))


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend must be"):
        resolve_backend("fortran", "kmeans", ("python",))
    with pytest.raises(TypeError):
        pyml.set_backend(3)


def test_auto_picks_first_available_in_measured_order():
    for family, order in AUTO_ORDER.items():
        assert order[-1] == "python"
        got = resolve_backend("auto", family, BACKENDS)
        expected = next(b for b in order if pyml.backends()[b] is None)
        assert got == expected


def test_config_context_and_set_backend_restore():
    assert pyml.get_config()["backend"] == "auto"
    with pyml.config_context(backend="python"):
        assert resolve_backend(None, "kmeans", ("python", "numba")) == "python"
        with pyml.config_context(backend="auto"):
            assert pyml.get_config()["backend"] == "auto"
        assert pyml.get_config()["backend"] == "python"
    assert pyml.get_config()["backend"] == "auto"
    pyml.set_backend("python")
    try:
        assert pyml.get_config()["backend"] == "python"
    finally:
        pyml.set_backend("auto")


def test_kernel_table_loads_lazily_and_reports_broken_targets():
    t = KernelTable("demo", "kmeans", {"python": "math:hypot", "numba": "pyml.no_such_module:f"})
    assert t.backends == ("python", "numba")
    assert t.get("python")(3.0, 4.0) == 5.0
    with pytest.raises(pyml.BackendUnavailableError, match="cannot load the numba kernel"):
        t.get("numba")


def test_set_num_threads_applies_everywhere():
    old = pyml.get_num_threads()
    try:
        pyml.set_num_threads(1)
        assert pyml.get_num_threads() == 1
        if pyml.backends()["numba"] is None:
            import numba

            assert numba.get_num_threads() == 1
        if pyml.backends()["cpp"] is None:
            from pyml._cpp import _info

            assert _info.get_num_threads() == 1
        from threadpoolctl import threadpool_info

        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    finally:
        pyml.set_num_threads(old)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError):
            pyml.set_num_threads(bad)


def test_cupy_input_needs_cuda_backend():
    class FakeCupy:  # only the module name matters for the dispatch rule
        pass

    FakeCupy.__module__ = "cupy._core.core"
    if pyml.backends()["cuda"] is None:
        pytest.skip("a CUDA device is present")
    with pytest.raises(pyml.BackendUnavailableError):
        resolve_backend("auto", "kmeans", ("python", "cuda"), FakeCupy())
    with pytest.raises(ValueError, match="CuPy input needs backend='cuda'"):
        resolve_backend("python", "kmeans", ("python",), np.zeros(1), FakeCupy())


def test_numba_avoids_the_openmp_threading_layer():
    """Numba's OpenMP pool and torch's spin against each other; pyml asks for tbb/workqueue."""
    pytest.importorskip("numba")
    import os
    import subprocess
    import sys

    code = ("import numpy as np, pyml, numba; "
            "pyml.kmeans_assign(np.ones((64, 3)), np.ones((2, 3)), backend='numba'); "
            "print(numba.threading_layer())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("tbb", "workqueue")
