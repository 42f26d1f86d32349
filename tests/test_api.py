"""The backend registry, default-backend configuration, threads and dispatch rules."""
import numpy as np
import pytest

import pyml
from pyml._backend import BACKENDS, AUTO_ORDER, Kernel, resolve_backend


def test_backends_lists_every_backend_with_reason():
    b = pyml.backends()
    assert tuple(b) == BACKENDS
    assert b["python"] is None  # the old form keeps working
    for name, reason in b.items():
        assert reason is None or (isinstance(reason, str) and reason)
        if reason is not None:
            assert reason.available is False and reason.reason == str(reason)
            assert repr(reason).startswith("unavailable: ")
    assert set(pyml.available_backends()) == {k for k, v in b.items() if v is None}
    assert b.available() == pyml.available_backends()
    assert "'python': available" in repr(b) and "python: available" in str(b)


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


def test_kernel_is_found_by_rule_and_reports_broken_targets():
    k = Kernel("mdp", "no_such_kernel", ("python", "numba"))
    assert k.path("numba") == "pyml.kernels.numba.mdp:no_such_kernel"
    with pytest.raises(pyml.BackendUnavailableError, match="cannot load the python kernel"):
        k.get("python")
    with pytest.raises(pyml.BackendUnavailableError, match="has no 'cpp' kernel"):
        k.get("cpp")


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
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n must be"):
            pyml.set_num_threads(bad)
    for bad in (1.5, True, "2", None):
        with pytest.raises(TypeError, match="n must be"):
            pyml.set_num_threads(bad)


@pytest.mark.parametrize("n", [10**6, 2**31, 2**64])
def test_set_num_threads_clamps_huge_counts_before_changing_anything(n):
    """Once SIGSEGV in the cpp kernels (10**6) or a half-applied setting (2**31)."""
    from pyml._backend import max_threads

    old = pyml.get_num_threads()
    try:
        with pytest.warns(RuntimeWarning, match="using"):
            pyml.set_num_threads(n)
        assert pyml.get_num_threads() == max_threads()
        if pyml.backends()["numba"] is None:
            import numba

            assert numba.get_num_threads() == min(max_threads(), numba.config.NUMBA_NUM_THREADS)
        if pyml.backends()["cpp"] is None:
            from pyml._cpp import _info

            assert _info.get_num_threads() == max_threads()
            X = np.random.default_rng(0).random((500, 4))
            labels, _ = pyml.kmeans_assign(X, X[:3].copy(), backend="cpp")  # no crash
            assert labels.shape == (500,)
    finally:
        pyml.set_num_threads(old)


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


def test_numba_gets_the_tbb_layer_from_the_tbb_wheel():
    """pip's tbb puts libtbb in <prefix>/lib where numba does not look; pyml loads it first."""
    pytest.importorskip("numba")
    import importlib.metadata
    import os
    import subprocess
    import sys

    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the tbb wheel is not installed")
    code = ("import numpy as np, pyml, numba; "
            "pyml.conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), backend='numba'); "
            "print(numba.threading_layer())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tbb"


# ------------------------------------------------------------------ backend=None everywhere
def _public_with_backend():
    import inspect

    out = {}
    for name in pyml.__all__:
        if name in ("set_backend", "config_context"):  # these set the default itself
            continue
        obj = getattr(pyml, name)
        if callable(obj) and not isinstance(obj, type(pyml)):
            try:
                params = inspect.signature(obj).parameters
            except (TypeError, ValueError):
                continue
            if "backend" in params:
                out[name] = params["backend"].default
    return out


def test_every_public_backend_parameter_defaults_to_the_configured_default():
    """One rule: backend=None means config_context / set_backend / PYML_BACKEND."""
    found = _public_with_backend()
    assert {"kmeans_assign", "KMeans", "ALS", "conv2d", "attention", "value_iteration"} <= set(found)
    import inspect

    for name in dir(pyml.nn):  # the layers are public too
        obj = getattr(pyml.nn, name)
        if inspect.isclass(obj) and "backend" in inspect.signature(obj).parameters:
            found[f"nn.{name}"] = inspect.signature(obj).parameters["backend"].default
    wrong = {name: d for name, d in found.items() if d is not None}
    assert not wrong, f"backend= must default to None, not: {wrong}"


@pytest.fixture
def resolved(monkeypatch):
    """Records every concrete backend chosen by the registry during a call."""
    import sys

    import pyml._backend as backend_mod

    seen = []
    orig_resolve = backend_mod.resolve_backend

    def recording(backend, *args, **kwargs):
        b = orig_resolve(backend, *args, **kwargs)
        seen.append((backend, b, kwargs.get("kernel") or args[0]))
        return b

    for mod in list(sys.modules.values()):  # modules that imported the function by name too
        if getattr(mod, "__name__", "").startswith("pyml") and \
                getattr(mod, "resolve_backend", None) is orig_resolve:
            monkeypatch.setattr(mod, "resolve_backend", recording)
    return seen


def test_public_functions_exist_in_the_call_table():
    from public_calls import BY_NAME

    missing = set(_public_with_backend()) - set(BY_NAME)
    assert not missing, f"add these to tests/public_calls.py: {missing}"


from public_calls import LAYERS, SPECS  # noqa: E402


@pytest.mark.parametrize("how", ["config_context", "set_backend"])
@pytest.mark.parametrize("spec", SPECS + LAYERS, ids=lambda s: s.name)
def test_config_context_and_set_backend_reach_every_public_function(resolved, spec, how):
    """The README's own example once ran cpp inside config_context(backend="python")."""
    kwargs = spec.build(np.random.default_rng(0))
    if how == "config_context":
        with pyml.config_context(backend="python"):
            spec.call(**kwargs)
    else:
        pyml.set_backend("python")
        try:
            spec.call(**kwargs)
        finally:
            pyml.set_backend("auto")
    # (requested, chosen, kernel) per registry lookup. A call that asks for "auto" itself is a
    # deliberate choice (the mdp model check runs compiled whatever solves); the defaults are
    # the lookups with backend=None, and each must give the configured "python".
    defaults = [r for r in resolved if r[0] is None]
    assert defaults, f"{spec.name}: no kernel was looked up with the default (lookups: {resolved})"
    wrong = [r for r in defaults if r[1] != "python"]
    assert not wrong, f"{spec.name} ran {wrong} under backend='python'"


def test_pyml_backend_environment_variable_is_the_default():
    import os
    import subprocess
    import sys

    code = ("import numpy as np, pyml, pyml._backend as b; X = np.ones((8, 2)); "
            "print(b.resolve_backend(None, 'kmeans', ('python', 'cpp')), "
            "pyml.get_config()['backend'])")
    env = dict(os.environ, PYML_BACKEND="python")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "python"]
    env["PYML_BACKEND"] = "fortran"
    code = "import pyml; pyml.kmeans_assign([[1.0]], [[1.0]])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 1 and "PYML_BACKEND" in out.stderr
