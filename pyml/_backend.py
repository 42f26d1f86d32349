"""Backend registry: which backends exist, which are usable here and why not, the
"auto" choice per kernel, the default backend (config_context / set_backend) and threads.

Registry by rule: a driver declares each kernel once as ``Kernel(loop, name, backends)``
and the implementation of backend ``b`` is always the attribute ``name`` of the module
``<PACKAGES[b]>.<loop>``, e.g. ``pyml._cpp.kmeans:kmeans_assign`` or
``pyml.kernels.cuda.kmeans:kmeans_assign`` -- so grepping a kernel's name finds every
backend's implementation and every caller. Imports are lazy, so a missing compiler, CuPy
or GPU only matters to the backend that needs it.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import importlib.metadata
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator

import numpy as np

from . import _cpu

# Numba's OpenMP threading layer and PyTorch's OpenMP pool slow each other down when both run
# in one process (measured: torch SDPA 5-20x slower after a Numba prange kernel had run; the
# pools spin against each other on 2 cores). TBB or the workqueue layer do not spin, so pyml
# asks Numba for those first, unless the user chose a layer. Must happen before the first
# parallel Numba launch; if numba was imported earlier the config attribute still applies.
if "NUMBA_THREADING_LAYER" not in os.environ and "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
    os.environ["NUMBA_THREADING_LAYER_PRIORITY"] = "tbb workqueue omp"
    if "numba" in sys.modules:
        sys.modules["numba"].config.THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]

BACKENDS = ("python", "numba", "cpp", "cython", "cuda")

# The one name of each hot loop: API module pyml/<loop>.py, driver pyml/_<loop>_driver.py,
# kernels <PACKAGES[backend]>.<loop>, tests/test_<loop>.py, benchmarks/bench_<loop>.py,
# pyml/_verify/<loop>.py and the `pyml bench` / `pyml verify` argument.
LOOPS = ("kmeans", "conv", "attention", "mf", "mdp")

# Where each backend's kernels live: <package>.<loop>:<kernel name>.
PACKAGES = {
    "python": "pyml.reference",
    "numba": "pyml.kernels.numba",
    "cpp": "pyml._cpp",
    "cython": "pyml._cython",
    "cuda": "pyml.kernels.cuda",
}

# Fastest CPU backend first, per hot loop: decided by `pyml bench` on the 2-core
# development machine (figures in the issue notes). "python" is always last.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "kmeans": ("cpp", "cython", "numba", "python"),
    "conv": ("cpp", "numba", "python"),
    "attention": ("cpp", "numba", "python"),
    "mf": ("cpp", "cython", "numba", "python"),
    "mdp": ("cpp", "numba", "python"),
}

INSTALL_HINT = {
    "numba": "the numba backend needs numba (pip install numba)",
    "cpp": "the cpp backend needs the compiled extension pyml._cpp (reinstall pyml with a C++17 compiler and OpenMP)",
    "cython": "the cython backend needs the compiled extension pyml._cython (reinstall pyml with Cython and a C compiler)",
    "cuda": "the cuda backend needs cupy and a CUDA device; install pyml[cuda12] or pyml[cuda13]",
}


class BackendUnavailableError(RuntimeError):
    """Raised when a backend was asked for explicitly but cannot run here."""


# --------------------------------------------------------------------------- probes
@lru_cache(maxsize=None)
def _probe(backend: str) -> str | None:
    """Return None when ``backend`` is usable, else the reason it is not."""
    try:
        if backend == "python":
            return None
        if backend == "numba":
            importlib.import_module("numba")
            return None
        if backend == "cpp":
            importlib.import_module(_cpu.PROBE)
            backend_package("cpp")  # the CPU variant; raises UnsupportedCpuError
            return None
        if backend == "cython":
            for loop in ("kmeans", "mf"):  # the loops that have a Cython kernel
                importlib.import_module(f"{backend_package('cython')}.{loop}")
            return None
        if backend == "cuda":
            cp = importlib.import_module("cupy")
            if cp.cuda.runtime.getDeviceCount() < 1:
                return "no CUDA device found; " + INSTALL_HINT["cuda"]
            return None
    except _cpu.UnsupportedCpuError as exc:  # PYML_CPU forced a variant this CPU cannot run
        return str(exc)
    except Exception as exc:  # ImportError, CUDARuntimeError, ...
        return f"{INSTALL_HINT[backend]} ({type(exc).__name__}: {exc})"
    return f"unknown backend {backend!r}"


class Unavailable(str):
    """Why a backend cannot run here. A ``str`` (the reason) so that code written for the
    old ``{name: None | reason}`` form keeps working; ``.available`` is False."""

    available = False

    @property
    def reason(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"unavailable: {str(self)}"


class BackendReport(dict):
    """``pyml.backends()``: backend name -> None when it runs here, else :class:`Unavailable`
    (a str giving the reason). Prints as ``name: available`` / ``name: unavailable: why``."""

    def available(self) -> list[str]:
        return [b for b, why in self.items() if why is None]

    def reason(self, backend: str) -> str | None:
        """None when ``backend`` is available, else why not."""
        return self[backend]

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{b!r}: {'available' if why is None else repr(why)}"
                               for b, why in self.items()) + "}"

    def __str__(self) -> str:
        return "\n".join(f"{b}: {'available' if why is None else repr(why)}"
                         for b, why in self.items())


def backends() -> BackendReport:
    """Every backend name -> None if it is available here, else the reason why not.

    Examples
    --------
    >>> import pyml
    >>> pyml.backends()["python"] is None
    True
    >>> "python" in pyml.backends().available()
    True
    """
    return BackendReport((b, None if _probe(b) is None else Unavailable(_probe(b)))
                         for b in BACKENDS)


def available_backends() -> list[str]:
    """The backends that run here, in :data:`BACKENDS` order."""
    return [b for b in BACKENDS if _probe(b) is None]


# --------------------------------------------------------------------------- config
_local = threading.local()
_global_config: dict[str, Any] = {"backend": os.environ.get("PYML_BACKEND", "auto")}


def _check_backend_name(backend: str | None, *, allow_none: bool = True) -> str | None:
    """``backend`` if it is None (the configured default), "auto" or a backend name."""
    if backend is None and allow_none:
        return None
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string or None, got {type(backend).__name__}")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be None, 'auto' or one of {BACKENDS}, got {backend!r}")
    return backend


def get_config() -> dict[str, Any]:
    return dict(getattr(_local, "config", None) or _global_config)


def set_backend(backend: str) -> None:
    """Set the process-wide default backend ("auto", "python", "numba", "cpp", "cython", "cuda")."""
    _global_config["backend"] = _check_backend_name(backend, allow_none=False)


@contextlib.contextmanager
def config_context(*, backend: str | None = None) -> Iterator[None]:
    """Temporarily change the default backend in this thread.

    Examples
    --------
    >>> import pyml
    >>> with pyml.config_context(backend="python"):
    ...     pyml.get_config()["backend"]
    'python'
    """
    old = getattr(_local, "config", None)
    new = get_config()
    if backend is not None:
        new["backend"] = _check_backend_name(backend, allow_none=False)
    _local.config = new
    try:
        yield
    finally:
        _local.config = old


# --------------------------------------------------------------------------- arrays
def is_cupy(x: Any) -> bool:
    return type(x).__module__.startswith("cupy")


def array_module(*arrays: Any):
    """numpy, or cupy when any argument is a CuPy array (outputs follow inputs)."""
    if any(is_cupy(a) for a in arrays):
        return importlib.import_module("cupy")
    return np


def to_numpy(x: Any) -> np.ndarray:
    return x.get() if is_cupy(x) else np.asarray(x)


# --------------------------------------------------------------------------- dispatch
def resolve_backend(backend: str | None, loop: str, supported: tuple[str, ...],
                    *arrays: Any, kernel: str | None = None) -> str:
    """Turn a user's ``backend=`` into a concrete backend that supports this kernel.

    None means the configured default (config_context / set_backend / PYML_BACKEND)."""
    if backend is None:
        backend = get_config()["backend"]
        try:
            backend = _check_backend_name(backend, allow_none=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the configured default backend (PYML_BACKEND or set_backend) "
                             f"is invalid: {exc}") from None
    else:
        backend = _check_backend_name(backend)
    gpu_input = any(is_cupy(a) for a in arrays)
    if backend == "auto":
        if gpu_input:
            backend = "cuda"
        else:
            for b in AUTO_ORDER.get(loop, ("python",)):
                if b in supported and _probe(b) is None:
                    return b
            return "python"
    if backend not in supported:
        raise BackendUnavailableError(
            f"{kernel or loop} has no {backend!r} kernel; available kernels: {', '.join(supported)}")
    reason = _probe(backend)
    if reason is not None:
        raise BackendUnavailableError(reason)
    if gpu_input and backend != "cuda":
        raise ValueError(f"CuPy input needs backend='cuda' or 'auto', got {backend!r}; "
                         "move the data to the host with .get() for a CPU backend")
    return backend


def backend_package(backend: str) -> str:
    """The package that holds ``backend``'s kernel modules (one module per loop).

    The compiled backends exist once per CPU variant: for "cpp" and "cython" this is the
    variant this CPU runs (or PYML_CPU forces), e.g. ``pyml._cpp.avx512`` (see pyml._cpu).
    """
    if backend in _cpu.PACKAGES:
        return _cpu.package(backend)
    return PACKAGES[backend]


@dataclass(frozen=True)
class Kernel:
    """One kernel of one hot loop, with the backends that implement it.

    The implementation for backend ``b`` is ``<backend_package(b)>.<loop>:<name>``.

    >>> k = Kernel("kmeans", "kmeans_assign", ("python",))
    >>> k.path("python")
    'pyml.reference.kmeans:kmeans_assign'
    """

    loop: str
    name: str
    backends: tuple[str, ...]

    def path(self, backend: str) -> str:
        return f"{backend_package(backend)}.{self.loop}:{self.name}"

    def resolve(self, backend: str | None, *arrays: Any) -> str:
        return resolve_backend(backend, self.loop, self.backends, *arrays, kernel=self.name)

    def get(self, backend: str) -> Callable:
        if backend not in self.backends:
            raise BackendUnavailableError(f"{self.name} has no {backend!r} kernel; "
                                          f"available kernels: {', '.join(self.backends)}")
        return _load(self.path(backend), backend)


@lru_cache(maxsize=None)
def _load(target: str, backend: str) -> Callable:
    module, _, attr = target.partition(":")
    if backend == "numba":
        _preload_tbb()  # before the module's first parallel launch picks a threading layer
    try:
        fn = getattr(importlib.import_module(module), attr)
    except Exception as exc:
        raise BackendUnavailableError(
            f"cannot load the {backend} kernel {target} "
            f"({type(exc).__name__}: {exc}); {INSTALL_HINT.get(backend, '')}") from exc
    if backend == "numba":
        return _numba_entry(fn)
    if backend in ("cpp", "cython"):
        return _openmp_entry(fn)
    return fn


# TEMPORARY during the issue-10 move; deleted once every driver uses Kernel.
@dataclass(frozen=True)
class KernelTable:
    name: str
    family: str
    impls: dict[str, str]

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(b for b in BACKENDS if b in self.impls)

    def resolve(self, backend: str | None, *arrays: Any) -> str:
        fam = {"conv2d": "conv", "als": "mf"}.get(self.family, self.family)
        return resolve_backend(backend, fam, self.backends, *arrays)

    def get(self, backend: str) -> Callable:
        target = self.impls[backend]
        if backend in _cpu.PACKAGES:  # the compiled kernels live in the CPU variant's package
            target = target.replace(PACKAGES[backend], backend_package(backend), 1)
        return _load(target, backend)


# --------------------------------------------------------------------------- thread safety
# Numba's workqueue threading layer aborts the process ("Concurrent access has been
# detected") when two Python threads launch parallel kernels at once; TBB and OpenMP do
# not. pyml depends on the `tbb` wheel where it exists, but pip puts libtbb.so.12 in
# <prefix>/lib, which numba's tbbpool extension does not search, so it is loaded here
# first (by soname the loader then finds it). Where TBB still cannot load, entry to the
# numba kernels is serialised by one lock: safe, at the price of no overlap between threads.
_numba_lock = threading.RLock()
_numba_layer: list[str] = []   # the layer numba chose, known after its first parallel launch


@lru_cache(maxsize=None)
def _preload_tbb() -> bool:
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


def _numba_entry(fn: Callable) -> Callable:
    """``fn`` made safe to call from several threads, with pyml's thread count applied."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        n = _global_config.get("num_threads")
        if _numba_layer_is_thread_safe():
            if n is not None:
                _numba_threads(n)
            return fn(*args, **kwargs)
        with _numba_lock:
            if n is not None:
                _numba_threads(n)
            return fn(*args, **kwargs)

    return call


def _openmp_entry(fn: Callable) -> Callable:
    """OpenMP's thread count is per calling thread: apply pyml's in threads that have not."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        n = _global_config.get("num_threads")
        if n is not None and getattr(_local, "omp_threads", None) != n:
            importlib.import_module(_cpu.PROBE).set_num_threads(n)
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

    if _probe("numba") is None:
        _numba_threads(n)
    if _probe("cpp") is None:
        importlib.import_module(_cpu.PROBE).set_num_threads(n)
        _local.omp_threads = n
    threadpool_limits(limits=n)
    _global_config["num_threads"] = n


def get_num_threads() -> int:
    """The thread count pyml's kernels use (set_num_threads, else OpenMP's default)."""
    if "num_threads" in _global_config:
        return _global_config["num_threads"]
    if _probe("cpp") is None:
        return importlib.import_module(_cpu.PROBE).get_num_threads()
    return max_threads()
