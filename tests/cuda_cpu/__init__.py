"""CUDA kernels run on the CPU: cuda_cpu.hpp (CUDA's execution model for g++), build.py (source -> shared
library), runtime.py and fake_cupy.py (the slice of CuPy pyml's glue uses). ``install()`` puts the stand-in in
place of ``cupy`` for this process, ``uninstall()`` restores what was there."""
from __future__ import annotations

import sys

from . import fake_cupy
from .build import CompileError, compile_source, sanitize  # noqa: F401
from .runtime import CUDADriverError, KernelFault, set_schedule  # noqa: F401

_saved: list[dict] = []


def _clear_pyml_caches() -> None:
    # pyml caches probes (is cuda usable?), compiled modules and device limits with functools caches;
    # they must not outlive the stand-in, nor predate it.
    for name, mod in list(sys.modules.items()):
        if name == "pyml" or name.startswith("pyml."):
            for attr in list(vars(mod).values()):
                clear = getattr(attr, "cache_clear", None)
                if callable(clear) and getattr(attr, "__module__", None) == name:
                    clear()


def install() -> None:
    _saved.append({k: sys.modules.get(k) for k in ("cupy", "cupy.cuda", "cupy.linalg")})
    sys.modules["cupy"] = fake_cupy
    sys.modules["cupy.cuda"] = fake_cupy.cuda
    sys.modules["cupy.linalg"] = fake_cupy.linalg
    _clear_pyml_caches()


def uninstall() -> None:
    for k, v in _saved.pop().items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v
    _clear_pyml_caches()
