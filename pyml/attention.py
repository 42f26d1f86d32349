"""Scaled dot-product attention, forward and backward: the public API.

softmax(Q K^T * scale + M) V with scale = 1/sqrt(d_k) (Vaswani et al. 2017, "Attention Is All
You Need", eq. 1; computed flash-style as in Dao et al. 2022). Validation happens once here; mask handling and dispatch live in
:mod:`pyml._attention_driver`; the loops in kernels/numba/attention.py and csrc/attention.cpp
(flash-style tiles with an online softmax: the Nq x Nk scores are never stored); the
oracle in :mod:`pyml.reference.attention`.
"""
from __future__ import annotations

import math

import numpy as np

from . import _attention_driver as drv
from ._backend import array_module, to_numpy
from ._validation import check_array, check_int, check_scalar, common_float_dtype

_EXPONENT_BITS = {"float16": 0x7C00, "bfloat16": 0x7F80}  # all set: inf or NaN


def _is_half(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and np.dtype(dtype).name in drv.HALF_DTYPES


def _check_half(x, name, dtype=None):
    """check_array for the 16-bit float inputs of the cuda backend (float16, ml_dtypes.bfloat16):
    4-d, not empty, finite, C-contiguous; converted to ``dtype`` when one is given."""
    xp = array_module(x)
    x = xp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-dimensional, got {x.ndim} dimensions (shape {x.shape})")
    if x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    if x.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {x.dtype}")
    x = xp.ascontiguousarray(x.astype(dtype, copy=False) if dtype is not None else x)
    e = _EXPONENT_BITS[x.dtype.name]
    bad = (x.view(np.uint16) & e) == e  # on the bit pattern: needs no float16/bfloat16 ufuncs
    if bool(bad.any()):
        first = tuple(int(i) for i in np.argwhere(to_numpy(bad))[0])
        raise ValueError(f"{name} contains NaN or infinity (first at index {first})")
    return x


def _check_backend_dtype(dtype, backend: str) -> None:
    if np.dtype(dtype).name in drv.HALF_DTYPES and backend != "cuda":
        raise TypeError(f"{np.dtype(dtype).name} inputs need backend='cuda'; the {backend!r} backend "
                        "computes in float32/float64 only (convert with .astype(np.float32))")


def _check_qkv(q, k, v):
    if any(_is_half(a) for a in (q, k, v)):
        dtypes = [str(getattr(a, "dtype", type(a).__name__)) for a in (q, k, v)]
        if len(set(dtypes)) != 1:
            raise TypeError(f"q, k and v must share one dtype when any is float16/bfloat16, got {', '.join(dtypes)}")
        q, k, v = _check_half(q, "q"), _check_half(k, "k"), _check_half(v, "v")
    else:
        q = check_array(q, "q", ndim=4)
        k = check_array(k, "k", ndim=4)
        v = check_array(v, "v", ndim=4)
        dtype = common_float_dtype(q, k, v)
        q, k, v = (a.astype(dtype, copy=False) for a in (q, k, v))
    B, H, Nq, D = q.shape
    if k.shape[:2] != (B, H) or v.shape[:2] != (B, H):
        raise ValueError(f"q, k, v must share batch and head dimensions (B, H), got q {q.shape}, "
                         f"k {k.shape}, v {v.shape}")
    if k.shape[3] != D:
        raise ValueError(f"k must have the head dimension D={D} of q, got k {k.shape}")
    if v.shape[2] != k.shape[2]:
        raise ValueError(f"v must have as many keys as k (Nk={k.shape[2]}), got v {v.shape}")
    return q, k, v


def _check_mask(mask, shape, q):
    if mask is None:
        return None
    xp = array_module(q)
    mask = xp.asarray(mask)
    if mask.dtype.kind == "c" or mask.dtype.kind not in "biuf":
        raise TypeError(f"mask must be boolean (True = keep) or an additive float array, got {mask.dtype}")
    if mask.ndim > 4:
        raise ValueError(f"mask must have at most 4 dimensions, got shape {mask.shape}")
    padded = (1,) * (4 - mask.ndim) + mask.shape
    if any(m not in (1, s) for m, s in zip(padded, shape)):
        raise ValueError(f"mask of shape {mask.shape} is not broadcastable to (B, H, Nq, Nk) = {shape}")
    if mask.dtype != np.bool_:
        mask = mask.astype(drv.acc_dtype(q.dtype))
        if bool(xp.isnan(mask).any()) or bool((mask == np.inf).any()):
            raise ValueError("mask contains NaN or +inf; use -inf (or a boolean False) to hide a key")
    return mask


def _check_scale(scale, D):
    if scale is None:
        return 1.0 / math.sqrt(D)
    return check_scalar(scale, "scale", low=0.0, low_inclusive=False)


def attention(q, k, v, mask=None, causal: bool = False, scale: float | None = None,
              return_lse: bool = False, backend: str | None = None):
    """Scaled dot-product attention softmax(q k^T * scale + mask) v.

    Parameters
    ----------
    q : array (B, H, Nq, D); k : array (B, H, Nk, D); v : array (B, H, Nk, Dv)
    mask : bool (True = keep) or additive float array broadcastable to (B, H, Nq, Nk)
    causal : hide key j from query i when j > i (top-left aligned, as torch's ``is_causal``)
    scale : positive float, default 1/sqrt(D)
    return_lse : also return the row log-sum-exp (B, H, Nq) that the backward needs
    backend : "auto", "python", "numba", "cpp" or "cuda"

    A query whose keys are all masked gets a zero output row and lse = -inf.
    float32 and float64 everywhere; float16 and bfloat16 (``ml_dtypes.bfloat16``) with
    backend "cuda" only: out keeps that dtype, lse is float32. The cuda backend takes
    head dimensions D, Dv <= 256.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> x = np.array([[[[1., 0.], [0., 1.], [1., 1.]]]])
    >>> np.round(pyml.attention(x, x, x)[0, 0, 0], 5)
    array([0.80222, 0.59889])
    """
    q, k, v = _check_qkv(q, k, v)
    B, H, Nq, D = q.shape
    mask = _check_mask(mask, (B, H, Nq, k.shape[2]), q)
    scale = _check_scale(scale, D)
    b = drv.FORWARD.resolve(backend, q, k, v)
    _check_backend_dtype(q.dtype, b)
    out, lse = drv.forward(q, k, v, mask, bool(causal), scale, b)
    return (out, lse) if return_lse else out


def attention_backward(dout, q, k, v, out, lse, mask=None, causal: bool = False,
                       scale: float | None = None, backend: str | None = None):
    """Gradients (dq, dk, dv) of attention given dout = dL/d(out) and the forward's out, lse.

    Scores are recomputed tile by tile from q, k and lse (flash-attention-2), so memory stays
    O(N * D).

    Examples
    --------
    >>> import numpy as np, pyml
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = (rng.standard_normal((1, 2, 5, 4)) for _ in range(3))
    >>> out, lse = pyml.attention(q, k, v, return_lse=True)
    >>> dq, dk, dv = pyml.attention_backward(np.ones_like(out), q, k, v, out, lse)
    >>> dq.shape, dv.shape
    ((1, 2, 5, 4), (1, 2, 5, 4))
    """
    q, k, v = _check_qkv(q, k, v)
    B, H, Nq, D = q.shape
    dt = q.dtype
    if _is_half(q):
        dout, out = _check_half(dout, "dout", dt), _check_half(out, "out", dt)
    else:
        dout = check_array(dout, "dout", ndim=4, dtype=dt)
        out = check_array(out, "out", ndim=4, dtype=dt)
    lse = check_array(lse, "lse", ndim=3, dtype=drv.acc_dtype(dt), check_finite=False)
    want = (B, H, Nq, v.shape[3])
    if dout.shape != want or out.shape != want:
        raise ValueError(f"dout and out must have shape {want}, got {dout.shape} and {out.shape}")
    if lse.shape != (B, H, Nq):
        raise ValueError(f"lse must have shape {(B, H, Nq)}, got {lse.shape}")
    mask = _check_mask(mask, (B, H, Nq, k.shape[2]), q)
    scale = _check_scale(scale, D)
    b = drv.BACKWARD.resolve(backend, q, k, v)
    _check_backend_dtype(dt, b)
    return drv.backward(dout, q, k, v, out, lse, mask, bool(causal), scale, b)


def sinusoidal_positional_encoding(n: int, d: int, dtype=np.float64) -> np.ndarray:
    """PE (n, d) with PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same)
    (Vaswani et al. 2017, section 3.5).

    Examples
    --------
    >>> import pyml
    >>> [round(float(x), 6) for x in pyml.sinusoidal_positional_encoding(2, 4)[1]]
    [0.841471, 0.540302, 0.01, 0.99995]
    """
    n = check_int(n, "n", min_value=1)
    d = check_int(d, "d", min_value=1)
    pos = np.arange(n, dtype=np.float64)[:, None]
    two_i = (np.arange(d) // 2 * 2).astype(np.float64)
    angle = pos / 10000.0 ** (two_i / d)
    pe = np.where(np.arange(d) % 2 == 0, np.sin(angle), np.cos(angle))
    return pe.astype(dtype)

