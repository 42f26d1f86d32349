"""CUDA C++ kernels (.cu, shipped as package data) compiled at run time by CuPy/NVRTC."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources


def source(name: str) -> str:
    """The text of ``kernels/cuda/<name>.cu``."""
    return resources.files(__name__).joinpath(f"{name}.cu").read_text()


@lru_cache(maxsize=None)
def module(name: str, options: tuple[str, ...] = ("--std=c++17",)):
    """A compiled ``cupy.RawModule`` for ``<name>.cu`` (NVRTC, cached per process)."""
    import cupy as cp

    return cp.RawModule(code=source(name), options=options)
