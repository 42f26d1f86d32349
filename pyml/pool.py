"""Max and average pooling (NCHW), forward and backward: the public API of the conv loop's
pooling kernels (one-way: this module uses pyml.conv's argument helpers, never the reverse).

Z(i, j) = max / mean of the KH x KW window at (s*i - p, s*j - p) (Goodfellow, Bengio &
Courville, *Deep Learning*, sec. 9.3); zero padding never wins a max and counts in the mean
(as PyTorch's count_include_pad). NumPy in -> NumPy out on the CPU backends; CuPy in -> CuPy
out on the CUDA kernels (kernels/cuda/conv.cu), validated on the device without a host copy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import _conv_driver as drv
from ._backend import array_module, is_cupy
from ._validation import check_array, check_int
from .conv import _pair, _shape


def _options(x, kernel_size, stride, padding, check_finite):
    x = check_array(x, "x", ndim=4, check_finite=check_finite)
    k = _pair(kernel_size, "kernel_size", 1)
    s = k if stride is None else _pair(stride, "stride", 1)
    p = _pair(padding, "padding", 0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"padding {p} must be at most half the kernel size {k}")
    OH = drv.out_size(x.shape[2], k[0], s[0], p[0], 1)
    OW = drv.out_size(x.shape[3], k[1], s[1], p[1], 1)
    if OH < 1 or OW < 1:
        raise ValueError(f"pooling window {k} is larger than the padded input "
                         f"{x.shape[2] + 2 * p[0]}x{x.shape[3] + 2 * p[1]}")
    return x, k, s, p, (x.shape[0], x.shape[1], OH, OW)


def _input_shape(input_shape) -> tuple[int, int, int, int]:
    shape = tuple(check_int(v, "input_shape", min_value=1) for v in _shape(input_shape, "input_shape"))
    if len(shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {tuple(input_shape)}")
    return shape  # type: ignore[return-value]


def max_pool2d(x, kernel_size, stride=None, padding=0, *, backend: str | None = None,
               check_finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling; returns (out, indices), indices = flat position y*W + x of each max.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> z, idx = pyml.max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)
    >>> z[0, 0], idx[0, 0]
    (array([[ 5.,  7.],
           [13., 15.]]), array([[ 5,  7],
           [13, 15]]))
    """
    x, k, s, p, out = _options(x, kernel_size, stride, padding, check_finite)
    b = drv.resolve(backend, "max_pool2d", x)
    return drv.max_pool2d(x, k, s, p, out[2:], b)


def max_pool2d_backward(grad_out, indices, input_shape: Sequence[int], *,
                        backend: str | None = None) -> np.ndarray:
    """Gradient of :func:`max_pool2d`: each max's gradient goes to the element that won.

    >>> import numpy as np, pyml
    >>> z, idx = pyml.max_pool2d(np.arange(4.0).reshape(1, 1, 2, 2), 2)
    >>> pyml.max_pool2d_backward(np.ones_like(z), idx, (1, 1, 2, 2))[0, 0]
    array([[0., 0.],
           [0., 1.]])
    """
    if is_cupy(grad_out) != is_cupy(indices):
        raise TypeError("grad_out and indices must both be NumPy arrays or both CuPy arrays")
    shape = _input_shape(input_shape)
    gz = check_array(grad_out, "grad_out", ndim=4)
    xp = array_module(gz)
    idx = xp.asarray(indices)
    if idx.shape != gz.shape or idx.dtype.kind not in "iu":
        raise ValueError(f"indices must be an integer array of shape {gz.shape}, got "
                         f"{idx.dtype} {idx.shape}")
    if gz.shape[:2] != shape[:2]:
        raise ValueError(f"grad_out {gz.shape} does not match input_shape {shape}")
    idx = xp.ascontiguousarray(idx, dtype=np.int64)
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= shape[2] * shape[3]):
        raise ValueError(f"indices must lie in [0, {shape[2] * shape[3]})")
    b = drv.resolve(backend, "max_pool2d_backward", gz)
    return drv.max_pool2d_backward(gz, idx, shape, b)


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, backend: str | None = None,
               check_finite: bool = True) -> np.ndarray:
    """Average pooling (zero padding counted in the mean).

    >>> import numpy as np, pyml
    >>> pyml.avg_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    x, k, s, p, out = _options(x, kernel_size, stride, padding, check_finite)
    b = drv.resolve(backend, "avg_pool2d", x)
    return drv.avg_pool2d(x, k, s, p, out[2:], b)


def avg_pool2d_backward(grad_out, input_shape: Sequence[int], kernel_size, stride=None,
                        padding=0, *, backend: str | None = None) -> np.ndarray:
    """Gradient of :func:`avg_pool2d`: each window element receives grad / (KH*KW).

    >>> import numpy as np, pyml
    >>> pyml.avg_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 1, 2, 2), 2)[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    shape = _input_shape(input_shape)
    gz = check_array(grad_out, "grad_out", ndim=4)
    probe = np.empty((1, 1, shape[2], shape[3]))
    _, k, s, p, out = _options(probe, kernel_size, stride, padding, False)
    want = shape[:2] + out[2:]
    if gz.shape != want:
        raise ValueError(f"grad_out must have shape {want}, got {gz.shape}")
    b = drv.resolve(backend, "avg_pool2d_backward", gz)
    return drv.avg_pool2d_backward(gz, shape, k, s, p, b)


__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]
