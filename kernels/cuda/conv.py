"""CuPy glue of the conv loop (kernels in conv.cu, compiled by NVRTC): conv2d forward/backward
and max/avg pooling forward/backward, CuPy in, CuPy out.

Convolution: direct, one thread per output element; dX by gathering (no atomics), dK by one
block per weight element with a shared-memory reduction. Pooling: the same output-argument
signatures as the numba and cpp kernels (the driver allocates z / indices / dX); max indices
are int64 flat positions y*W + x. Written and compile-checked (nvcc -ptx sm_80/sm_90) on a
machine without a GPU: this glue has not been run on a device.
"""
from __future__ import annotations

import ctypes

import numpy as np

from . import cupy, grid, kernel, suffix

_THREADS = 256
_POOL = ("max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward")
_CONV = ("conv2d", "conv2d_backward_input", "conv2d_backward_weight")


def kernel_names() -> list[str]:
    """Every extern "C" entry this glue may request from conv.cu."""
    return [f"{n}_{suffix(t)}" for n in _CONV + _POOL for t in (np.float32, np.float64)]


class _Geo(ctypes.Structure):
    # Mirrors `struct Geo` in conv.cu (16 ints, passed by value as a kernel argument).
    _fields_ = [(n, ctypes.c_int) for n in
                ("B", "C", "H", "W", "O", "KH", "KW", "OH", "OW", "sh", "sw", "ph", "pw", "dh", "dw",
                 "groups")]


def _by_value(s: ctypes.Structure) -> np.ndarray:
    # CuPy passes a struct by value only as a NumPy array of size one (a ctypes.Structure is a
    # TypeError "Unsupported type" in its launcher); the kernel receives its bytes.
    return np.frombuffer(bytes(s), dtype=np.dtype((np.void, ctypes.sizeof(s))))


def _geo(x, w, stride, padding, dilation, groups) -> _Geo:
    B, C, H, W = x.shape
    O, _, KH, KW = w.shape
    OH = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    return _Geo(B, C, H, W, O, KH, KW, OH, OW, *stride, *padding, *dilation, groups)


def conv2d(x, w, bias, stride, padding, dilation, groups):
    """Y = K (*) X + bias on the device (the reference's signature)."""
    cp = cupy()
    g = _geo(x, w, stride, padding, dilation, groups)
    y = cp.empty((g.B, g.O, g.OH, g.OW), dtype=x.dtype)
    b = bias if bias is not None else cp.empty(1, dtype=x.dtype)
    kernel("conv", "conv2d", x.dtype)(grid(y.size, _THREADS), (_THREADS,),
                                      (x, w, b, np.int32(bias is not None), y, _by_value(g)))
    return y


def conv2d_backward(gy, x, w, stride, padding, dilation, groups):
    """(dX, dK, dbias), all on the device."""
    cp = cupy()
    g = _geo(x, w, stride, padding, dilation, groups)
    dx = cp.empty_like(x)
    dk = cp.empty_like(w)
    kernel("conv", "conv2d_backward_input", x.dtype)(grid(dx.size, _THREADS), (_THREADS,),
                                                     (gy, w, dx, _by_value(g)))
    # one block per weight element (the grid-stride loop covers any excess)
    kernel("conv", "conv2d_backward_weight", x.dtype)((min(w.size, 65535 * 8),), (_THREADS,),
                                                      (gy, x, dk, _by_value(g)),
                                                      shared_mem=_THREADS * x.itemsize)
    return dx, dk, gy.sum(axis=(0, 2, 3))


def _i32(*vals) -> tuple:
    return tuple(np.int32(v) for v in vals)


class _AvgOpts(ctypes.Structure):
    # Mirrors `struct AvgOpts` in conv.cu (8 ints by value; divisor 0 = no divisor_override).
    _fields_ = [(n, ctypes.c_int) for n in
                ("KH", "KW", "sh", "sw", "ph", "pw", "include_pad", "divisor")]


def max_pool2d(x, z, idx, KH, KW, sh, sw, ph, pw, dh, dw):
    """z, idx (N, C, OH, OW) <- max pooling of the C-contiguous CuPy array x (N, C, H, W)."""
    N, C, H, W = x.shape
    kernel("conv", "max_pool2d", x.dtype)(
        grid(z.size, _THREADS), (_THREADS,),
        (x, z, idx, np.int64(N * C),
         *_i32(H, W, z.shape[2], z.shape[3], KH, KW, sh, sw, ph, pw, dh, dw)))


def max_pool2d_backward(gz, idx, dx):
    """dx <- zeros plus atomicAdd of gz at each window's argmax (idx: int64, gz's shape)."""
    N, C, H, W = dx.shape
    dx.fill(0)
    kernel("conv", "max_pool2d_backward", gz.dtype)(
        grid(gz.size, _THREADS), (_THREADS,),
        (gz, idx, dx, np.int64(N * C), *_i32(H, W, gz.shape[2], gz.shape[3])))


def avg_pool2d(x, z, KH, KW, sh, sw, ph, pw, count_include_pad, divisor):
    N, C, H, W = x.shape
    opts = _AvgOpts(KH, KW, sh, sw, ph, pw, int(count_include_pad), divisor)
    kernel("conv", "avg_pool2d", x.dtype)(
        grid(z.size, _THREADS), (_THREADS,),
        (x, z, np.int64(N * C), *_i32(H, W, z.shape[2], z.shape[3]), _by_value(opts)))


def avg_pool2d_backward(gz, dx, KH, KW, sh, sw, ph, pw, count_include_pad, divisor):
    N, C, H, W = dx.shape
    opts = _AvgOpts(KH, KW, sh, sw, ph, pw, int(count_include_pad), divisor)
    kernel("conv", "avg_pool2d_backward", gz.dtype)(
        grid(dx.size, _THREADS), (_THREADS,),
        (gz, dx, np.int64(N * C), *_i32(H, W, gz.shape[2], gz.shape[3]), _by_value(opts)))
