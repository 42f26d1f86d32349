"""Backend registry: which backends exist, which are usable here and why not, the
"auto" choice per kernel and the default backend (config_context / set_backend); threads
are in :mod:`pyml._threads` (every compiled kernel loaded here is wrapped there).

Registry by rule: a driver declares each kernel once as ``Kernel(loop, name, backends)``
and the implementation of backend ``b`` is always the attribute ``name`` of the module
``<backend_package(b)>.<loop>``, e.g. ``pyml._cpp.avx512.kmeans:kmeans_assign`` (the
CPU variant in use, see pyml._cpu) or
``pyml.kernels.cuda.kmeans:kmeans_assign`` -- so grepping a kernel's name finds every
backend's implementation and every caller. Imports are lazy, so a missing compiler, CuPy
or GPU only matters to the backend that needs it.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator

import numpy as np

from . import _cpu
from ._threads import (get_num_threads, max_threads, numba_entry, openmp_entry,  # noqa: F401
                       preload_tbb, set_num_threads)

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
            # One module of the extension proves it was built for this CPU variant (the
            # smaller one). A kernel module that still fails raises BackendUnavailableError
            # when its kernel is loaded (see _load).
            importlib.import_module(f"{backend_package('cython')}.mf")
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
        preload_tbb()  # before the module's first parallel launch picks a threading layer
    try:
        fn = getattr(importlib.import_module(module), attr)
    except Exception as exc:
        raise BackendUnavailableError(
            f"cannot load the {backend} kernel {target} "
            f"({type(exc).__name__}: {exc}); {INSTALL_HINT.get(backend, '')}") from exc
    if backend == "numba":
        return numba_entry(fn)  # thread-safe entry, pyml's thread count in every thread
    if backend in ("cpp", "cython"):
        return openmp_entry(fn)
    return fn
