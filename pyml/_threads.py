"""Threads: how many pyml's kernels use (numba, OpenMP for C++/Cython, BLAS), applied in
every calling thread, and safe entry to the numba kernels from several Python threads.

The registry (:mod:`pyml._backend`) wraps every compiled kernel it loads with
:func:`numba_entry` or :func:`openmp_entry`, so this holds for every kernel in one place.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import threading
import warnings
from functools import lru_cache
from typing import Callable

import numpy as np

_state: dict[str, int] = {}       # "num_threads" once set_num_threads was called
_local = threading.local()        # per thread: the OpenMP count applied in it

# Numba's workqueue threading layer aborts the process ("Concurrent access has been
# detected") when two Python threads launch parallel kernels at once; TBB and OpenMP do
# not. pyml depends on the `tbb` wheel where it exists, but pip puts libtbb.so.12 in
# <prefix>/lib, which numba's tbbpool extension does not search, so it is loaded here
# first (by soname the loader then finds it). Where TBB still cannot load, entry to the
# numba kernels is serialised by one lock: safe, at the price of no overlap between threads.
_numba_lock = threading.RLock()
_numba_layer: list[str] = []   # the layer numba chose, known after its first parallel launch


@lru_cache(maxsize=None)
def preload_tbb() -> bool:
    # imported here, on the first numba kernel load: importlib.metadata alone costs ~20 ms
    # (100 ms on a busy machine), which `import pyml` should not pay
    import ctypes
    import importlib.metadata

    if "NUMBA_THREADING_LAYER" in os.environ and os.environ["NUMBA_THREADING_LAYER"] != "tbb":
        return False
    try:
        dist = importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    for f in dist.files or ():
        if f.name.startswith("libtbb.so.") and f.name.count(".") == 2:  # libtbb.so.12
            try:
                ctypes.CDLL(str(dist.locate_file(f)), mode=ctypes.RTLD_GLOBAL)
                return True
            except OSError:
                return False
    return False


def _numba_layer_is_thread_safe() -> bool:
    if not _numba_layer:
        try:
            import numba

            _numba_layer.append(numba.threading_layer())
        except (ValueError, ImportError):  # no parallel launch yet: assume the worst
            return False
    return _numba_layer[0] in ("tbb", "omp")


def numba_entry(fn: Callable) -> Callable:
    """``fn`` made safe to call from several threads, with pyml's thread count applied."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        n = _state.get("num_threads")
        if _numba_layer_is_thread_safe():
            if n is not None:
                _numba_threads(n)
            return fn(*args, **kwargs)
        with _numba_lock:
            if n is not None:
                _numba_threads(n)
            return fn(*args, **kwargs)

    return call


def openmp_entry(fn: Callable) -> Callable:
    """OpenMP's thread count is per calling thread: apply pyml's in threads that have not."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        n = _state.get("num_threads")
        if n is not None and getattr(_local, "omp_threads", None) != n:
            _omp_info().set_num_threads(n)
            _local.omp_threads = n
        return fn(*args, **kwargs)

    return call


def _numba_threads(n: int) -> None:
    import numba

    # numba.set_num_threads is per calling thread too; cheap to check each call
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


# --------------------------------------------------------------------------- threads
def max_threads() -> int:
    """The CPUs this process may run on: more threads than that only oversubscribe."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in Numba, OpenMP (C++/Cython) and BLAS kernels, in every thread.

    ``n`` above the CPUs available (:func:`max_threads`) is clamped to them with a warning.
    The value is validated before anything changes, so a bad ``n`` changes nothing.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be a positive integer, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    cap = max_threads()
    if n > cap:
        warnings.warn(f"set_num_threads({n}): this process may use {cap} CPUs; using {cap} threads",
                      RuntimeWarning, stacklevel=2)
        n = cap
    from threadpoolctl import threadpool_limits

    if importlib.util.find_spec("numba") is not None:
        _numba_threads(n)
    info = _omp_info()
    if info is not None:
        info.set_num_threads(n)
        _local.omp_threads = n
    threadpool_limits(limits=n)
    _state["num_threads"] = n


def get_num_threads() -> int:
    """The thread count pyml's kernels use (set_num_threads, else OpenMP's default)."""
    if "num_threads" in _state:
        return _state["num_threads"]
    info = _omp_info()
    return info.get_num_threads() if info is not None else max_threads()


@lru_cache(maxsize=None)
def _omp_info():
    """pyml._cpp._info (the OpenMP knob every C++/Cython module shares), or None if not built."""
    try:
        return importlib.import_module("pyml._cpp._info")
    except ImportError:
        return None


def numba_layer() -> str:
    """The threading layer numba uses (or will pick) here, for ``pyml info``."""
    if _numba_layer or _numba_layer_is_thread_safe():
        return _numba_layer[0]
    preload_tbb()
    env = os.environ.get("NUMBA_THREADING_LAYER")
    if env and env != "default":
        return env
    try:
        importlib.import_module("numba.np.ufunc.tbbpool")
        return "tbb"
    except ImportError:
        return "workqueue"
