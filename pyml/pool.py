"""Max and average pooling (NCHW or unbatched CHW), forward and backward: the public API of the
conv loop's pooling kernels (one-way: this module uses pyml.conv's argument helpers, never the
reverse).

Z(i, j) = max / mean of the KH x KW window at (s*i - p, s*j - p) (Goodfellow, Bengio &
Courville, *Deep Learning*, sec. 9.3), with torch.nn.functional's options and conventions:
``dilation`` (max), ``ceil_mode``, ``count_include_pad`` and ``divisor_override`` (mean),
``stride=None`` or ``()`` meaning the kernel size; zero padding never wins a max and, by
default, counts in the mean. NumPy in -> NumPy out on the CPU backends; CuPy in -> CuPy out
on the CUDA kernels (kernels/cuda/conv.cu), validated on the device without a host copy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import _conv_driver as drv
from ._backend import array_module, is_cupy
from ._validation import check_array, check_int
from .conv import _pair, _shape


def _flag(v, name: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(v).__name__} {v!r}")
    return bool(v)


def _geometry(hw, kernel_size, stride, padding, dilation, ceil_mode, who):
    """Validated (kernel, stride, padding, dilation) pairs and the output plane (OH, OW)."""
    k = _pair(kernel_size, "kernel_size", 1)
    empty = isinstance(stride, (tuple, list)) and len(stride) == 0
    s = k if stride is None or empty else _pair(stride, "stride", 1)
    p, d = _pair(padding, "padding", 0), _pair(dilation, "dilation", 1)
    ceil_mode = _flag(ceil_mode, "ceil_mode")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:  # torch's rule, dilation or not
        raise ValueError(f"{who}: padding {p} must be at most half the kernel size {k}")
    out = tuple(drv.pool_out_size(n, kk, ss, pp, dd, ceil_mode)
                for n, kk, ss, pp, dd in zip(hw, k, s, p, d))
    if out[0] < 1 or out[1] < 1:
        raise ValueError(f"{who}: kernel_size {k} (the pooling window) is larger than the padded input "
                         f"{hw[0] + 2 * p[0]}x{hw[1] + 2 * p[1]}")
    return k, s, p, d, ceil_mode, out


def _batched(x, name: str, check_finite: bool):
    """(x as NCHW, whether it was unbatched CHW)."""
    x = check_array(x, name, ndim=(3, 4), check_finite=check_finite)
    return (x[None], True) if x.ndim == 3 else (x, False)


def _input_shape(input_shape, ndim: int) -> tuple[int, int, int, int]:
    """input_shape as (N, C, H, W); (C, H, W) when grad_out is unbatched (ndim 3)."""
    shape = tuple(check_int(v, "input_shape", min_value=1) for v in _shape(input_shape, "input_shape"))
    if len(shape) != ndim:
        want = "(C, H, W) for a 3-D grad_out" if ndim == 3 else "(N, C, H, W)"
        raise ValueError(f"input_shape must be {want}, got {shape}")
    return (1,) + shape if ndim == 3 else shape  # type: ignore[return-value]


def _divisor(divisor_override) -> int:
    """divisor_override as the kernels take it: 0 for None, else a nonzero int (as torch)."""
    if divisor_override is None:
        return 0
    v = check_int(divisor_override, "divisor_override")
    if v == 0:
        raise ValueError("divisor_override must be nonzero (or None)")
    return v


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False, *,
               backend: str | None = None, check_finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling; returns (out, indices), indices = flat position y*W + x of each max.

    Parameters as ``torch.nn.functional.max_pool2d(..., return_indices=True)``: x (N, C, H, W)
    or unbatched (C, H, W); stride None or () = kernel_size; padding at most half the
    (dilated) kernel; ceil_mode rounds the output size up (the last window starting inside
    the input or its left padding). A NaN is the max of its window. backend None = the
    configured default (config_context / set_backend / PYML_BACKEND).

    Examples
    --------
    >>> import numpy as np, pyml
    >>> z, idx = pyml.max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)
    >>> z[0, 0], idx[0, 0]
    (array([[ 5.,  7.],
           [13., 15.]]), array([[ 5,  7],
           [13, 15]]))
    """
    x, unbatched = _batched(x, "x", check_finite)
    k, s, p, d, ceil_mode, out = _geometry(x.shape[2:], kernel_size, stride, padding, dilation,
                                           ceil_mode, "max_pool2d")
    b = drv.resolve(backend, "max_pool2d", x)
    z, idx = drv.max_pool2d(x, k, s, p, d, ceil_mode, out, b)
    return (z[0], idx[0]) if unbatched else (z, idx)


def max_pool2d_backward(grad_out, indices, input_shape: Sequence[int], *,
                        backend: str | None = None) -> np.ndarray:
    """Gradient of :func:`max_pool2d`: each max's gradient goes to the element that won
    (index -1, a window without an in-bounds element, passes nothing).

    >>> import numpy as np, pyml
    >>> z, idx = pyml.max_pool2d(np.arange(4.0).reshape(1, 1, 2, 2), 2)
    >>> pyml.max_pool2d_backward(np.ones_like(z), idx, (1, 1, 2, 2))[0, 0]
    array([[0., 0.],
           [0., 1.]])
    """
    if is_cupy(grad_out) != is_cupy(indices):
        raise TypeError("grad_out and indices must both be NumPy arrays or both CuPy arrays")
    gz = check_array(grad_out, "grad_out", ndim=(3, 4))
    shape = _input_shape(input_shape, gz.ndim)
    xp = array_module(gz)
    idx = xp.asarray(indices)
    if idx.shape != gz.shape or idx.dtype.kind not in "iu":
        raise ValueError(f"indices must be an integer array of shape {gz.shape}, got "
                         f"{idx.dtype} {idx.shape}")
    unbatched = gz.ndim == 3
    if unbatched:
        gz, idx = gz[None], idx[None]
    if gz.shape[:2] != shape[:2]:
        raise ValueError(f"grad_out {gz.shape} does not match input_shape {shape}")
    idx = xp.ascontiguousarray(idx, dtype=np.int64)
    if idx.size and (int(idx.min()) < -1 or int(idx.max()) >= shape[2] * shape[3]):
        raise ValueError(f"indices must lie in [-1, {shape[2] * shape[3]}) (-1: no element)")
    b = drv.resolve(backend, "max_pool2d_backward", gz)
    dx = drv.max_pool2d_backward(gz, idx, shape, b)
    return dx[0] if unbatched else dx


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None, *,
               backend: str | None = None, check_finite: bool = True) -> np.ndarray:
    """Average pooling, as ``torch.nn.functional.avg_pool2d``: the window sum over the window
    size counting zero padding (``count_include_pad=True``, not the ceil-mode overhang), over
    the in-bounds count (False), or over ``divisor_override``.

    >>> import numpy as np, pyml
    >>> pyml.avg_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    x, unbatched = _batched(x, "x", check_finite)
    k, s, p, _, ceil_mode, out = _geometry(x.shape[2:], kernel_size, stride, padding, 1,
                                           ceil_mode, "avg_pool2d")
    include, div = _flag(count_include_pad, "count_include_pad"), _divisor(divisor_override)
    b = drv.resolve(backend, "avg_pool2d", x)
    z = drv.avg_pool2d(x, k, s, p, ceil_mode, include, div, out, b)
    return z[0] if unbatched else z


def avg_pool2d_backward(grad_out, input_shape: Sequence[int], kernel_size, stride=None,
                        padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: int | None = None, *,
                        backend: str | None = None) -> np.ndarray:
    """Gradient of :func:`avg_pool2d`: each in-bounds window element receives grad / divisor.

    >>> import numpy as np, pyml
    >>> pyml.avg_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 1, 2, 2), 2)[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    gz = check_array(grad_out, "grad_out", ndim=(3, 4))
    shape = _input_shape(input_shape, gz.ndim)
    unbatched = gz.ndim == 3
    if unbatched:
        gz = gz[None]
    k, s, p, _, ceil_mode, out = _geometry(shape[2:], kernel_size, stride, padding, 1,
                                           ceil_mode, "avg_pool2d_backward")
    include, div = _flag(count_include_pad, "count_include_pad"), _divisor(divisor_override)
    want = shape[:2] + out
    if gz.shape != want:
        raise ValueError(f"grad_out must have shape {want[1:] if unbatched else want}, got "
                         f"{gz.shape[1:] if unbatched else gz.shape}")
    b = drv.resolve(backend, "avg_pool2d_backward", gz)
    dx = drv.avg_pool2d_backward(gz, shape, k, s, p, ceil_mode, include, div, b)
    return dx[0] if unbatched else dx


__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]
