"""CUDA path of max/avg pooling (CuPy in, CuPy out; kernels in kernels/cuda/pool.cu via NVRTC).

Same semantics as the CPU kernels (pyml.reference.conv): max indices are int64 flat positions
y*W + x in the H*W plane, the first in-bounds element of a window starts the scan and a later
one wins only if strictly greater, zero padding never wins a max and counts in the mean.
Forward and max backward: one thread per output element (max backward scatters with atomicAdd);
avg backward: one thread per input element gathering from the windows that cover it.
Written and compile-checked (nvcc -ptx sm_80/sm_90) on a machine without a GPU: this driver
has not been run on a device.
"""
from __future__ import annotations

import numpy as np

from ._conv_driver import out_size

_THREADS = 256
_NAMES = ("max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward")
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def kernel_names() -> list[str]:
    """Every extern "C" entry this driver may request from pool.cu."""
    return [f"{n}_{s}" for n in _NAMES for s in _SUFFIX.values()]


def _kernel(name: str, dtype):
    from .kernels.cuda import module

    return module("pool").get_function(f"{name}_{_SUFFIX[np.dtype(dtype)]}")


def _grid(total: int) -> tuple[int]:
    return (max(1, min((total + _THREADS - 1) // _THREADS, 65535 * 8)),)


def _i32(*vals) -> tuple:
    return tuple(np.int32(v) for v in vals)


def _out_hw(H, W, kernel, stride, padding):
    return (out_size(H, kernel[0], stride[0], padding[0], 1),
            out_size(W, kernel[1], stride[1], padding[1], 1))


def max_pool2d(x, kernel, stride, padding):
    """(z, indices) for a C-contiguous float32/float64 CuPy array x of shape (N, C, H, W)."""
    import cupy as cp

    N, C, H, W = x.shape
    OH, OW = _out_hw(H, W, kernel, stride, padding)
    z = cp.empty((N, C, OH, OW), dtype=x.dtype)
    idx = cp.empty((N, C, OH, OW), dtype=cp.int64)
    _kernel("max_pool_forward", x.dtype)(
        _grid(z.size), (_THREADS,),
        (x, z, idx, np.int64(N * C), *_i32(H, W, OH, OW, *kernel, *stride, *padding)))
    return z, idx


def max_pool2d_backward(gz, idx, shape):
    """dX (zeros plus atomicAdd of gz at each window's argmax); idx: int64 CuPy, gz's shape."""
    import cupy as cp

    N, C, H, W = shape
    dx = cp.zeros(shape, dtype=gz.dtype)
    _kernel("max_pool_backward", gz.dtype)(
        _grid(gz.size), (_THREADS,),
        (gz, idx, dx, np.int64(N * C), *_i32(H, W, gz.shape[2], gz.shape[3])))
    return dx


def avg_pool2d(x, kernel, stride, padding):
    import cupy as cp

    N, C, H, W = x.shape
    OH, OW = _out_hw(H, W, kernel, stride, padding)
    z = cp.empty((N, C, OH, OW), dtype=x.dtype)
    _kernel("avg_pool_forward", x.dtype)(
        _grid(z.size), (_THREADS,),
        (x, z, np.int64(N * C), *_i32(H, W, OH, OW, *kernel, *stride, *padding)))
    return z


def avg_pool2d_backward(gz, shape, kernel, stride, padding):
    import cupy as cp

    N, C, H, W = shape
    dx = cp.empty(shape, dtype=gz.dtype)
    _kernel("avg_pool_backward", gz.dtype)(
        _grid(dx.size), (_THREADS,),
        (gz, dx, np.int64(N * C), *_i32(H, W, gz.shape[2], gz.shape[3], *kernel, *stride, *padding)))
    return dx
