"""What a new process pays before its first result: the BLAS helpers load SciPy's BLAS without
importing scipy.linalg, `import pyml` pulls in no heavy optional module, and `pyml warmup`
compiles the signatures the public calls use (checked by Numba's own cache statistics)."""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pyml
from pyml import _blas


def _fresh(code: str, **env) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def _gemm(address: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b through the Fortran ?gemm at ``address`` (C-order buffers: C^T = B^T A^T)."""
    fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)(address)
    (m, k), n = a.shape, b.shape[1]
    c = np.full((m, n), np.nan, a.dtype)
    ints = [ctypes.c_int(v) for v in (n, m, k, n, k, n)]  # M, N, K, lda, ldb, ldc (Fortran view)
    one, zero = np.ones(1, a.dtype), np.zeros(1, a.dtype)
    ref = ctypes.byref
    fn(ctypes.c_char_p(b"N"), ctypes.c_char_p(b"N"), ref(ints[0]), ref(ints[1]), ref(ints[2]),
       one.ctypes.data, b.ctypes.data, ref(ints[3]), a.ctypes.data, ref(ints[4]), zero.ctypes.data,
       c.ctypes.data, ref(ints[5]))
    return c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_pointer_is_a_working_gemm_equal_to_scipys(dtype):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 5)).astype(dtype), rng.standard_normal((5, 4)).astype(dtype)
    got = _gemm(_blas.gemm_pointer(dtype), a, b)
    # the same BLAS through scipy.linalg.cython_blas's own export: the very same rounding
    want = _gemm(_blas._capsule_pointer("sgemm" if dtype == np.float32 else "dgemm"), a, b)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-5)


def test_blas_helpers_do_not_import_scipy_linalg():
    """scipy.linalg costs ~0.1-0.2 s to import; the first kmeans / ALS / conv call paid it."""
    out = _fresh("import sys, numpy as np, pyml; from pyml import _blas\n"
                 "_blas.gemm_pointer(np.float32); _blas.gemm_pointer(np.float64)\n"
                 "with _blas.single_thread('cpp'): pass\n"
                 "print(len(_blas._blas_libs()), 'scipy.linalg' in sys.modules)")
    n_libs, imported = out.split()
    assert int(n_libs) >= 1 and imported == "False"


@pytest.mark.parametrize("backend, call", [("cpp", "m.kmeans_assign(X, C, method='blas')"),
                                           ("cython", "m.kmeans_assign(X, C)")])
def test_kmeans_blas_path_does_not_import_scipy_linalg(backend, call):
    """The cpp and cython kmeans_assign BLAS paths take their gemm from _blas.gemm_pointer
    (they imported scipy.linalg.cython_blas before: ~0.1 s of a first KMeans.fit), and still
    equal python."""
    if backend not in pyml.available_backends():
        pytest.skip(f"{backend} backend not built")
    out = _fresh("import sys, importlib, numpy as np, pyml, pyml._cpu as c\n"
                 f"m = importlib.import_module(c.package('{backend}') + '.kmeans')\n"
                 "rng = np.random.default_rng(0); ok = True\n"
                 "for dt in (np.float32, np.float64):\n"
                 "    X = rng.random((700, 40)).astype(dt); C = X[:33].copy()\n"
                 f"    lab, _ = {call}\n"
                 "    ref, _ = pyml.kmeans_assign(X.astype(float), C.astype(float), backend='python')\n"
                 "    ok = ok and bool((lab == ref).all())\n"
                 "print(ok, 'scipy.linalg' in sys.modules)")
    assert out.split() == ["True", "False"]


def test_import_pyml_imports_no_optional_heavy_module():
    mods = json.loads(_fresh("import sys, json, pyml; print(json.dumps(sorted(sys.modules)))"))
    for heavy in ("sklearn", "numba", "scipy.linalg", "tqdm", "threadpoolctl", "torch", "dask"):
        assert heavy not in mods, heavy


def test_progress_bar_costs_a_short_fit_nothing():
    """tqdm's import costs 15-50 ms (tqdm.auto more: asyncio): a fit shorter than BAR_DELAY
    shows no bar and imports no tqdm; a longer one shows the bar, from tqdm.tqdm."""
    code = ("import sys, io, contextlib, pyml, scipy.sparse as sp\n"
            "from pyml import _mf_driver\n"
            "R = sp.random(20, 10, density=0.3, format='csr', random_state=0)\n"
            "err = io.StringIO()\n"
            "_mf_driver.BAR_DELAY = {delay}\n"
            "with contextlib.redirect_stderr(err):\n"
            "    pyml.ALS(factors=2, iterations=2, random_state=0, backend='python').fit(R)\n"
            "print('tqdm' in sys.modules, 'tqdm.auto' in sys.modules, 'ALS (python)' in err.getvalue())")
    assert _fresh(code.format(delay=60.0)).split() == ["False", "False", "False"]
    assert _fresh(code.format(delay=0.0)).split() == ["True", "False", "True"]


_AFTER_WARMUP = """
import json, numpy as np, pyml
from pyml.kernels.numba import attention as kernels
rng = np.random.default_rng(1)
q, k, v = (rng.standard_normal((2, 3, 17, 8)) for _ in range(3))
out, lse = pyml.attention(q, k, v, return_lse=True, backend="numba")
pyml.attention(q, k, v, mask=rng.random((2, 1, 1, 17)) > 0.3, causal=True, backend="numba")
pyml.attention_backward(np.ones_like(out), q, k, v, out, lse, backend="numba")
print(json.dumps({n: [sum(getattr(f.stats, s).values()) for s in ("cache_hits", "cache_misses")]
                  for n, f in (("forward", kernels.attention_forward),
                               ("backward", kernels.attention_backward))}))
"""


@pytest.mark.slow
def test_warmup_compiles_the_signatures_the_public_calls_use(tmp_path):
    """After `pyml warmup attention` into an empty cache, a new process's public calls (with and
    without a mask, forward and backward) load every kernel from the cache: no compile."""
    pytest.importorskip("numba")
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "pyml.cli", "warmup", "attention"], text=True,
                       capture_output=True, timeout=900, env={**os.environ, **env})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["loop", "call", "dtype"] and "compiled and cached" in lines[-1]
    assert {ln.split()[1] for ln in lines[1:-1]} == {"attention", "attention_backward"}
    stats = json.loads(_fresh(_AFTER_WARMUP, **env))
    assert stats == {"forward": [1, 0], "backward": [1, 0]}, stats
