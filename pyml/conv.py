"""2-D convolution (NCHW), forward and backward: the public API (pooling: :mod:`pyml.pool`).

Validation happens once here; the backend contract, method choice and GEMMs live in
:mod:`pyml._conv_driver`; the loops in kernels/numba/conv.py, csrc/conv.cpp and
kernels/cuda/conv.cu; the oracle in :mod:`pyml.reference.conv`: the cross-correlation
S(i,j) = sum_m sum_n I(i+m, j+n) K(m, n) of Goodfellow, Bengio & Courville, *Deep Learning*
(2016), eq. 9.6, with output size W_out = floor((W + 2P - D(K-1) - 1)/S) + 1.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from . import _conv_driver as drv
from ._backend import array_module, is_cupy
from ._validation import check_array, check_int


def _pair(v, name: str, min_value: int) -> tuple[int, int]:
    if type(v) is int and v >= min_value:  # the common case, without the generic checks
        return v, v
    if isinstance(v, (tuple, list)):
        if len(v) not in (1, 2):  # a 1-tuple applies to both axes, as torch's _pair does
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        a = tuple(check_int(e, name, min_value=min_value) for e in v)
        return (a[0], a[0]) if len(a) == 1 else a  # type: ignore[return-value]
    a = check_int(v, name, min_value=min_value)
    return a, a


def conv_output_shape(input_shape: Sequence[int], weight_shape: Sequence[int], stride=1,
                      padding=0, dilation=1) -> tuple[int, int, int, int]:
    """(N, O, H_out, W_out) with W_out = floor((W + 2P - D(K-1) - 1)/S) + 1.

    Examples
    --------
    >>> conv_output_shape((32, 64, 56, 56), (64, 64, 3, 3), padding=1)
    (32, 64, 56, 56)
    >>> conv_output_shape((1, 1, 3, 3), (1, 1, 2, 2))
    (1, 1, 2, 2)
    """
    input_shape, weight_shape = _shape(input_shape, "input_shape"), _shape(weight_shape, "weight_shape")
    if len(input_shape) != 4 or len(weight_shape) != 4:
        raise ValueError(f"input_shape and weight_shape must have 4 entries (NCHW / OCKK), "
                         f"got {tuple(input_shape)} and {tuple(weight_shape)}")
    N, _, H, W = (check_int(v, "input_shape", min_value=1) for v in input_shape)
    O, _, KH, KW = (check_int(v, "weight_shape", min_value=1) for v in weight_shape)
    s, d = _pair(stride, "stride", 1), _pair(dilation, "dilation", 1)
    p = _padding(padding, (KH, KW), d, s)[0]
    return _output_shape(N, H, W, O, KH, KW, s, p, d, names=("input_shape", "weight_shape"))


def _shape(v, name: str) -> tuple:
    """A shape argument as a tuple (a clear TypeError for None or a scalar)."""
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
        raise TypeError(f"{name} must be a sequence of ints, got {type(v).__name__} {v!r}")
    return tuple(v)


def _output_shape(N, H, W, O, KH, KW, s, p, d, itemsize=None, names=("x", "w")):
    """conv_output_shape on validated (stride, padding, dilation) pairs; with ``itemsize``, an
    output larger than this machine's memory is refused before anything is allocated.
    ``names``: the caller's argument names of the input and the weight, for the errors."""
    OH, OW = drv.out_size(H, KH, s[0], p[0], d[0]), drv.out_size(W, KW, s[1], p[1], d[1])
    if OH < 1 or OW < 1:
        raise ValueError(f"the {KH}x{KW} kernel of {names[1]} (dilation {d}) is larger than "
                         f"the padded input {H + 2 * p[0]}x{W + 2 * p[1]} of {names[0]} "
                         f"(padding {p})")
    need = N * O * OH * OW * (itemsize or 0)
    if need > _memory_bytes():
        raise ValueError(f"the output ({N}, {O}, {OH}, {OW}) would need {need / 2**30:.3g} GiB, "
                         f"more than this machine's {_memory_bytes() / 2**30:.3g} GiB: check "
                         f"padding {p}, stride {s} and dilation {d}")
    return N, O, OH, OW


def _memory_bytes() -> int:
    """Physical memory of this machine (no bound where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 62


def _padding(padding, k, d, s):
    """Symmetric padding pair and the extra bottom/right padding "same" may need."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if s != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride {s}")
            total = [dd * (kk - 1) for kk, dd in zip(k, d)]
            return (total[0] // 2, total[1] // 2), (total[0] % 2, total[1] % 2)
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    return _pair(padding, "padding", 0), (0, 0)


def _prepare(x, w, bias, stride, padding, dilation, groups, check_finite, check_x=True):
    """Validated (x as NCHW, w, bias, stride, padding, dilation, groups, extra, unbatched) for
    conv2d and its backward; an unbatched (C, H, W) x becomes a batch of one (a view)."""
    if is_cupy(x) != is_cupy(w) or (bias is not None and is_cupy(bias) != is_cupy(x)):
        raise TypeError("x, w and bias must all be NumPy arrays or all CuPy arrays")
    xp = array_module(x)
    x = check_array(x, "x", ndim=(3, 4), check_finite=False)
    w = check_array(w, "w", ndim=4, check_finite=False)
    if check_finite:
        if check_x:
            drv.assert_finite_fast(x, "x")
        drv.assert_finite_fast(w, "w")
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    if x.dtype != w.dtype:
        dt = np.result_type(x.dtype, w.dtype)
        x, w = x.astype(dt, copy=False), w.astype(dt, copy=False)
    dt = x.dtype
    groups = check_int(groups, "groups", min_value=1)
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    if C % groups or O % groups:
        raise ValueError(f"groups={groups} must divide both input channels {C} and output channels {O}")
    if Cg * groups != C:
        raise ValueError(f"channel mismatch: x has {C} channels, w expects {Cg} per group x "
                         f"{groups} groups = {Cg * groups} (w shape {w.shape})")
    if bias is not None:
        bias = check_array(bias, "bias", ndim=1, dtype=dt, check_finite=False)
        if check_finite:
            drv.assert_finite_fast(bias, "bias")
        if bias.shape != (O,):
            raise ValueError(f"bias must have shape ({O},), got {bias.shape}")
    s, d = _pair(stride, "stride", 1), _pair(dilation, "dilation", 1)
    p, extra = _padding(padding, (KH, KW), d, s)
    if extra != (0, 0):  # odd total 'same' padding: the extra row/column goes bottom/right
        if not check_finite and not bool(xp.isfinite(w).all()):
            raise ValueError("w contains NaN or infinity and padding='same' with an even kernel "
                             "extent pads an explicit zero row/column (0 * inf = NaN there); "
                             "pass an explicit padding or finite weights")
        x = xp.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
    _output_shape(x.shape[0], x.shape[2], x.shape[3], O, KH, KW, s, p, d, x.itemsize)  # or raise
    return x, w, bias, s, p, d, groups, extra, unbatched


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups: int = 1, *,
           backend: str | None = None, check_finite: bool = True) -> np.ndarray:
    """2-D cross-correlation of NCHW ``x`` with ``w`` (O, C/groups, KH, KW), plus ``bias``.

    Parameters
    ----------
    x : array (N, C, H, W), or unbatched (C, H, W);  w : array (O, C/groups, KH, KW)
    bias : array (O,) or None
    stride, dilation : int, (int,) or (int, int), >= 1
    padding : int, (int,), (int, int), "valid" or "same" (zero padding)
    groups : int dividing C and O (groups=C is depthwise)
    backend : None (the configured default: config_context / set_backend / PYML_BACKEND),
        "auto", "python", "numba", "cpp" or "cuda" (CuPy arrays in and out)
    check_finite : refuse NaN / infinity in the inputs (a ValueError naming the first position);
        it costs at most one read pass, none for x on the cpp stride-1 kernel, which checks x
        while copying it (the output is then discarded). With False, non-finite weights still
        give the reference's result at padded borders (no 0 * inf terms)

    Returns
    -------
    y : array (N, O, H_out, W_out) ((O, H_out, W_out) for unbatched x),
        W_out = floor((W + 2P - D(K-1) - 1)/S) + 1

    Examples
    --------
    A 3x3 image cross-correlated with K = [[1, 0], [0, -1]]:

    >>> import numpy as np, pyml
    >>> I = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    >>> K = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    >>> pyml.conv2d(I, K, backend="python")[0, 0]
    array([[-4., -4.],
           [-4., -4.]])
    """
    # x's finiteness is the driver's: the cpp stride-1 kernel checks it while copying its row
    # slabs (no separate read pass); an unbatched x is checked here, so errors name (c, h, w)
    unbatched = np.ndim(x) == 3
    x, w, bias, s, p, d, groups, _, unbatched = _prepare(x, w, bias, stride, padding, dilation,
                                                         groups, check_finite, check_x=unbatched)
    b = drv.resolve(backend, "conv2d", x, w)
    y = drv.conv2d(x, w, bias, s, p, d, groups, b, finite=check_finite,
                   check_x=check_finite and not unbatched)
    return y[0] if unbatched else y


def conv2d_backward(grad_out, x, w, stride=1, padding=0, dilation=1, groups: int = 1,
                    needs: Sequence[str] = ("input", "weight", "bias"), *,
                    backend: str | None = None, check_finite: bool = True):
    """Gradients (grad_input, grad_weight, grad_bias) of :func:`conv2d`; None where not in ``needs``.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = pyml.conv2d_backward(np.ones((1, 1, 2, 2)), x, w, backend="python")
    >>> gx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> float(gb[0])
    4.0
    """
    needs = _shape(needs, "needs")
    bad = [n for n in needs if n not in ("input", "weight", "bias")]
    if bad:
        raise ValueError(f"needs must be a subset of ('input', 'weight', 'bias'), got {needs!r}")
    x, w, _, s, p, d, groups, extra, unbatched = _prepare(x, w, None, stride, padding, dilation,
                                                          groups, check_finite)
    shape = _output_shape(x.shape[0], x.shape[2], x.shape[3], w.shape[0], *w.shape[2:], s, p, d)
    gy = check_array(grad_out, "grad_out", ndim=3 if unbatched else 4, dtype=x.dtype,
                     check_finite=False)
    if check_finite:
        drv.assert_finite_fast(gy, "grad_out")
    if unbatched:
        gy = gy[None]
    if gy.shape != shape:
        raise ValueError(f"grad_out must have the output shape {shape[1:] if unbatched else shape}, "
                         f"got {gy.shape[1:] if unbatched else gy.shape}")
    b = drv.resolve(backend, "conv2d_backward", x, w, gy)
    gx, gw, gb = drv.conv2d_backward(gy, x, w, s, p, d, groups, needs, b, finite=check_finite)
    if gx is not None and extra != (0, 0):
        gx = array_module(gx).ascontiguousarray(gx[:, :, :gx.shape[2] - extra[0], :gx.shape[3] - extra[1]])
    return (gx[0] if unbatched and gx is not None else gx), gw, gb


__all__ = ["conv2d", "conv2d_backward", "conv_output_shape"]
