"""CUDA path of conv2d (CuPy in, CuPy out; kernels in kernels/cuda/conv.cu via NVRTC).

Direct convolution, one thread per output element; dX by gathering (no atomics), dK by one
block per weight element with a shared-memory reduction. Written and compile-checked
(nvcc -ptx sm_80/sm_90) on a machine without a GPU: this driver has not been run on a device.
"""
from __future__ import annotations

import ctypes

import numpy as np

from ._conv_driver import out_size

_THREADS = 256


class _Geo(ctypes.Structure):
    # Mirrors `struct Geo` in conv.cu (16 ints, passed by value as a kernel argument).
    _fields_ = [(n, ctypes.c_int) for n in
                ("B", "C", "H", "W", "O", "KH", "KW", "OH", "OW", "sh", "sw", "ph", "pw", "dh", "dw",
                 "groups")]


def _geo(x, w, stride, padding, dilation, groups) -> _Geo:
    B, C, H, W = x.shape
    O, _, KH, KW = w.shape
    OH, OW = out_size(H, KH, stride[0], padding[0], dilation[0]), out_size(W, KW, stride[1], padding[1], dilation[1])
    return _Geo(B, C, H, W, O, KH, KW, OH, OW, *stride, *padding, *dilation, groups)


def _kernel(name: str, dtype):
    from .kernels.cuda import module

    return module("conv").get_function(f"{name}_{'f32' if dtype == np.float32 else 'f64'}")


def _grid(total: int) -> tuple[int]:
    return (max(1, min((total + _THREADS - 1) // _THREADS, 65535 * 8)),)


def conv2d(x, w, bias, stride, padding, dilation, groups):
    import cupy as cp

    g = _geo(x, w, stride, padding, dilation, groups)
    y = cp.empty((g.B, g.O, g.OH, g.OW), dtype=x.dtype)
    b = bias if bias is not None else cp.empty(1, dtype=x.dtype)
    _kernel("conv2d_forward", x.dtype)(_grid(y.size), (_THREADS,),
                                       (x, w, b, np.int32(bias is not None), y, g))
    return y


def conv2d_backward(gy, x, w, stride, padding, dilation, groups):
    """(dX, dK, dbias), all on the device."""
    import cupy as cp

    g = _geo(x, w, stride, padding, dilation, groups)
    dx = cp.empty_like(x)
    dk = cp.empty_like(w)
    _kernel("conv2d_backward_input", x.dtype)(_grid(dx.size), (_THREADS,), (gy, w, dx, g))
    _kernel("conv2d_backward_weight", x.dtype)((min(w.size, 65535 * 8),), (_THREADS,), (gy, x, dk, g),
                                               shared_mem=_THREADS * x.itemsize)
    return dx, dk, gy.sum(axis=(0, 2, 3))
