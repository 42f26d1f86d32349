"""The one BLAS helper of every driver: keep BLAS single-threaded while pyml's own threads
call it (``single_thread``), and the address of SciPy's single-threaded ?gemm for C++
kernels that call BLAS from inside their OpenMP loops (``gemm_pointer``).

Both need SciPy's BLAS library loaded, not ``scipy.linalg``: importing that package costs
~60-100 ms (every decomposition module), which a user paid on the first kmeans / ALS / conv
call. The library is opened with ctypes through the ``scipy.linalg.cython_blas`` extension
file (its dependencies are SciPy's BLAS), so the Python package is never executed; where
that does not work (another layout, another platform) the plain import is the fallback.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib.machinery
import importlib.util
import os
import threading
from functools import lru_cache
from typing import Iterator

import numpy as np

# backends whose kernels run their own thread pool and call BLAS from inside it
_THREADED = ("numba", "cpp", "cython")


@lru_cache(maxsize=1)
def _cython_blas_library() -> ctypes.CDLL | None:
    """The shared library of ``scipy.linalg.cython_blas`` opened with ctypes (not imported as
    a module: no ``scipy.linalg`` package code runs), or None where it cannot be found."""
    spec = importlib.util.find_spec("scipy")  # the top-level package: nothing is imported
    for root in (spec.submodule_search_locations or ()) if spec else ():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(root, "linalg", "cython_blas" + suffix)
            if os.path.exists(path):
                try:
                    return ctypes.CDLL(path)
                except OSError:
                    return None
    return None


# The Fortran symbol names SciPy's BLAS may export: scipy-openblas prefixes them.
_GEMM_SYMBOLS = ("scipy_{t}gemm_", "{t}gemm_")

_GEMM_ARGS = [ctypes.c_char_p, ctypes.c_char_p] + [ctypes.c_void_p] * 11


def _works(address: int, dtype: np.dtype) -> bool:
    """A 2x2 GEMM through ``address`` gives the right product (guards the symbol guess)."""
    fn = ctypes.CFUNCTYPE(None, *_GEMM_ARGS)(address)
    a = np.array([[1.0, 2.0], [3.0, 4.0]], dtype)
    b = np.array([[5.0, 6.0], [7.0, 8.0]], dtype)
    c = np.zeros((2, 2), dtype)
    n = ctypes.c_int(2)
    one, zero = (np.ones(1, dtype), np.zeros(1, dtype))
    p = lambda x: x.ctypes.data  # noqa: E731
    ref = ctypes.byref
    # column-major: C^T = B^T A^T, i.e. the Fortran call on the C-order buffers computes a @ b
    fn(b"N", b"N", ref(n), ref(n), ref(n), p(one), p(b), ref(n), p(a), ref(n), p(zero), p(c),
       ref(n))
    return bool(np.array_equal(c, a @ b))


def _capsule_pointer(name: str) -> int:
    """The address exported by ``scipy.linalg.cython_blas`` (imports scipy.linalg)."""
    from scipy.linalg import cython_blas

    capsule = cython_blas.__pyx_capi__[name]
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    return int(get(capsule, get_name(capsule)))


@lru_cache(maxsize=None)
def gemm_pointer(dtype) -> int:
    """Address of SciPy's Fortran ``sgemm``/``dgemm`` (the BLAS behind
    ``scipy.linalg.cython_blas``, LP64), for C++ kernels that call a single-threaded GEMM per
    OpenMP task."""
    dtype = np.dtype(dtype)
    t = "s" if dtype == np.float32 else "d"
    lib = _cython_blas_library()
    if lib is not None:
        for pattern in _GEMM_SYMBOLS:
            try:
                address = ctypes.cast(getattr(lib, pattern.format(t=t)), ctypes.c_void_p).value
            except AttributeError:
                continue
            if address and _works(address, dtype):
                return int(address)
    return _capsule_pointer(t + "gemm")


@lru_cache(maxsize=1)
def _blas_libs() -> tuple:
    # SciPy's BLAS must be loaded before threadpoolctl looks for it; the scan is slow
    # (milliseconds), so it is done once and the library handles are reused.
    if _cython_blas_library() is None:
        import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


_lock = threading.Lock()
_depth = 0
_saved: list[int] = []


@contextlib.contextmanager
def single_thread(backend: str = "cpp") -> Iterator[None]:
    """Hold every loaded BLAS at one thread while a ``backend`` kernel runs (no-op for the
    python and cuda backends). The two thread pools would otherwise oversubscribe the cores.
    Nested and concurrent uses (several Python threads) restore the old count only when
    the last one leaves."""
    global _depth, _saved
    if backend not in _THREADED:
        yield
        return
    libs = _blas_libs()
    with _lock:
        if _depth == 0:
            _saved = [lib.get_num_threads() for lib in libs]
            for lib in libs:
                lib.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, n in zip(libs, _saved):
                    lib.set_num_threads(n)
