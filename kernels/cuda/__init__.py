"""CUDA C++ kernels (``<loop>.cu``, shipped as package data) compiled at run time by
CuPy/NVRTC, each beside its CuPy glue ``<loop>.py``. The helpers below are shared by every
glue module: the compiled module, the dtype suffix of a kernel name and a 1-D grid."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

# dtype -> suffix of the kernel's name in the .cu file (``kmeans_assign_f32``)
SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64",
          np.dtype(np.float16): "f16"}


def cupy():
    """The cupy module (imported on first use: the cuda backend is optional)."""
    import cupy as cp

    return cp


def source(name: str) -> str:
    """The text of ``kernels/cuda/<name>.cu``."""
    return resources.files(__name__).joinpath(f"{name}.cu").read_text()


@lru_cache(maxsize=None)
def module(name: str, options: tuple[str, ...] = ("--std=c++17",)):
    """A compiled ``cupy.RawModule`` for ``<name>.cu`` (NVRTC, cached per process)."""
    return cupy().RawModule(code=source(name), options=options)


def suffix(dtype) -> str:
    """The kernel-name suffix of ``dtype``: f32, f64, f16, or bf16 (CuPy has no bfloat16 dtype
    of its own; ml_dtypes' bfloat16 is recognised by name)."""
    dt = np.dtype(dtype)
    if dt.name == "bfloat16":
        return "bf16"
    try:
        return SUFFIX[dt]
    except KeyError:
        raise TypeError(f"no CUDA kernel for dtype {dt}") from None


def kernel(name: str, func: str, dtype=None):
    """``func`` (with the dtype suffix when ``dtype`` is given) from ``<name>.cu``."""
    return module(name).get_function(func if dtype is None else f"{func}_{suffix(dtype)}")


def grid(total: int, threads: int) -> tuple[int]:
    """A 1-D grid of enough blocks of ``threads`` for ``total`` threads (at least one block)."""
    return (max(1, (int(total) + threads - 1) // threads),)
