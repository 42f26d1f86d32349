"""CuPy glue of the CUDA ALS half-step (kernels/cuda/mf.cu), same signature as the CPU kernels.
CuPy arrays stay on the device; NumPy arrays are moved there and X is copied back."""
from __future__ import annotations

import numpy as np

from . import cupy, kernel

_MAX_SHARED = 48 * 1024  # default dynamic shared memory limit per block


def als_half_step(indptr, indices, data, Y, YtY, X, reg, alpha, cg_steps, implicit, exact):
    cp = cupy()
    on_host = isinstance(X, np.ndarray)
    dev = [cp.asarray(a) for a in (indptr, indices, data, Y, YtY)]
    Xd = cp.asarray(X) if on_host else X
    n, f = Xd.shape
    if n == 0:
        return
    dt = np.dtype(Xd.dtype)
    block = 32  # one thread per factor, a power of two for the block reduction
    while block < f:
        block *= 2
    if block > 1024:
        raise ValueError(f"the cuda ALS kernel supports factors <= 1024, got {f}")
    shared = (5 * f + block + (f * f if (exact or not implicit) else 0)) * dt.itemsize
    if shared > _MAX_SHARED:
        raise ValueError(f"factors={f} needs {shared} bytes of shared memory for the Cholesky solve "
                         f"on the GPU (limit {_MAX_SHARED}); use implicit CG or float32")
    scalar = dt.type
    grid = (min(n, 65535),)  # one block per row, grid-stride beyond 65535 rows
    kernel("mf", "als_half_step", dt)(
        grid, (block,), (*dev, Xd, np.int32(n), np.int32(f), scalar(reg), scalar(alpha),
                         np.int32(cg_steps), np.int32(bool(implicit)), np.int32(bool(exact))),
        shared_mem=shared)
    if on_host:
        X[...] = Xd.get()
