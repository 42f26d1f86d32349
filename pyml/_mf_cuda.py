"""CuPy driver of the CUDA ALS half-step (kernels/cuda/mf.cu): same signature as the CPU
kernels. CuPy arrays stay on the device; NumPy arrays are moved there and X is copied back."""
from __future__ import annotations

import numpy as np

from ._backend import is_cupy

_MAX_SHARED = 48 * 1024  # default dynamic shared memory limit per block


def als_half_step(indptr, indices, data, Y, YtY, X, reg, alpha, cg_steps, implicit, exact):
    import cupy as cp

    from .kernels.cuda import module

    host_X = None if is_cupy(X) else X
    dev = [cp.asarray(a) for a in (indptr, indices, data, Y, YtY)]
    Xd = cp.asarray(X) if host_X is not None else X
    n, f = Xd.shape
    if n == 0:
        return
    dt = np.dtype(Xd.dtype)
    block = 32
    while block < f:
        block *= 2
    if block > 1024:
        raise ValueError(f"the cuda ALS kernel supports factors <= 1024, got {f}")
    shared = (5 * f + block + (f * f if (exact or not implicit) else 0)) * dt.itemsize
    if shared > _MAX_SHARED:
        raise ValueError(f"factors={f} needs {shared} bytes of shared memory for the Cholesky solve "
                         f"on the GPU (limit {_MAX_SHARED}); use implicit CG or float32")
    kernel = module("mf").get_function("als_half_step_f32" if dt == np.float32 else "als_half_step_f64")
    scalar = dt.type
    grid = min(n, 65535)
    kernel((grid,), (block,), (*dev, Xd, np.int32(n), np.int32(f), scalar(reg), scalar(alpha),
                               np.int32(cg_steps), np.int32(bool(implicit)), np.int32(bool(exact))),
           shared_mem=shared)
    if host_X is not None:
        host_X[...] = Xd.get()
