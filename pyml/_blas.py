"""The one BLAS helper of every driver: keep BLAS single-threaded while pyml's own threads
call it (``single_thread``), and the address of SciPy's single-threaded ?gemm for C++
kernels that call BLAS from inside their OpenMP loops (``gemm_pointer``)."""
from __future__ import annotations

import contextlib
import threading
from functools import lru_cache
from typing import Iterator

import numpy as np

# backends whose kernels run their own thread pool and call BLAS from inside it
_THREADED = ("numba", "cpp", "cython")


@lru_cache(maxsize=1)
def _blas_libs() -> tuple:
    # SciPy's BLAS must be loaded before threadpoolctl looks for it; the scan is slow
    # (milliseconds), so it is done once and the library handles are reused.
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


@lru_cache(maxsize=None)
def gemm_pointer(dtype) -> int:
    """Address of SciPy's Fortran ``sgemm``/``dgemm`` (from ``scipy.linalg.cython_blas``), for
    C++ kernels that call a single-threaded GEMM per OpenMP task."""
    import ctypes

    from scipy.linalg import cython_blas

    name = "sgemm" if np.dtype(dtype) == np.float32 else "dgemm"
    capsule = cython_blas.__pyx_capi__[name]
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    return int(get(capsule, get_name(capsule)))
