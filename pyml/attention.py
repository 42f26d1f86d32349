"""Scaled dot-product attention, forward and backward, and the sinusoidal positional encoding:
the public API.

softmax(Q K^T * scale + M) V with scale = 1/sqrt(d_k) (Vaswani et al. 2017, "Attention Is All
You Need", eq. 1), computed flash-style (Dao et al. 2022): the loops in
kernels/numba/attention.py, csrc/attention.cpp and kernels/cuda/attention.cu tile queries and
keys with an online softmax, so the Nq x Nk scores are never stored. torch's
``scaled_dot_product_attention`` semantics: 3-d (B, N, D) or 4-d (B, H, N, D) inputs,
broadcast batch dimensions, grouped-query attention (``enable_gqa``) and dropout of the
attention weights (``dropout_p``, seeded). Validation happens once here; the kernels' layout,
mask handling and dispatch live in :mod:`pyml._attention_driver`; the oracle in
:mod:`pyml.reference.attention`.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _attention_driver as drv
from ._backend import array_module, to_numpy
from ._validation import (assert_finite, check_array, check_dtype_arg, check_int, check_scalar,
                          common_float_dtype)

_EXPONENT_BITS = {"float16": 0x7C00, "bfloat16": 0x7F80}  # all set: inf or NaN
_NDIM = (3, 4)


def _is_half(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and np.dtype(dtype).name in drv.HALF_DTYPES


def _first(bad) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(to_numpy(bad))[0])


def _check_half(x, name, dtype=None):
    """check_array for the 16-bit float inputs of the cuda backend (float16, ml_dtypes.bfloat16):
    3- or 4-d, not empty, finite, C-contiguous; converted to ``dtype`` when one is given."""
    xp = array_module(x)
    x = xp.asarray(x)
    if x.ndim not in _NDIM:
        raise ValueError(f"{name} must be 3- or 4-dimensional, got {x.ndim} dimensions (shape {x.shape})")
    if x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    if x.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {x.dtype}")
    x = xp.ascontiguousarray(x.astype(dtype, copy=False) if dtype is not None else x)
    e = _EXPONENT_BITS[x.dtype.name]
    bad = (x.view(np.uint16) & e) == e  # on the bit pattern: needs no float16/bfloat16 ufuncs
    if bool(bad.any()):
        raise ValueError(f"{name} contains NaN or infinity (first at index {_first(bad)})")
    return x


def _row_norm(x, name: str, check_finite: bool) -> float:
    """max_i ||x_i|| over the rows (last axis) of x, from one read pass that is also the
    finiteness check (NaN or inf anywhere makes a squared norm non-finite)."""
    if _is_half(x):
        return 0.0  # checked on the bit pattern; the cuda kernel accumulates in float32
    xp = array_module(x)
    n2 = xp.einsum("...d,...d->...", x, x)
    if not bool(xp.isfinite(n2).all()):
        if check_finite:
            assert_finite(x, name, finite_hint=True)  # raises with the position of the first NaN or inf
        x64 = x.astype(np.float64)  # finite x whose squares overflow its dtype
        n2 = xp.einsum("...d,...d->...", x64, x64)
    return math.sqrt(float(n2.max()))


def _check_bound(bound: float, dtype, what: str) -> None:
    """Refuse inputs whose products could overflow: each backend then either equals the
    reference or raises (an overflowing score would be NaN in one summation order and finite
    in another). ``bound`` is a Cauchy-Schwarz bound on |what|; a quarter of the largest
    float leaves room for rounding and the additive mask. A NaN bound comes from NaN inputs let
    through by check_finite=False: the caller chose to get what the arithmetic gives."""
    if bound >= float(np.finfo(dtype).max) / 4:
        raise ValueError(f"{what} can overflow {np.dtype(dtype).name} (bound {bound:.3g}); scale the "
                         "inputs down, lower scale or compute in float64")


def _check_qkv(q, k, v, check_finite: bool):
    """q, k, v as arrays of one float dtype (copied only when converted) and their row norms."""
    if any(_is_half(a) for a in (q, k, v)):
        dtypes = [str(getattr(a, "dtype", type(a).__name__)) for a in (q, k, v)]
        if len(set(dtypes)) != 1:
            raise TypeError(f"q, k and v must share one dtype when any is float16/bfloat16, got {', '.join(dtypes)}")
        q, k, v = _check_half(q, "q"), _check_half(k, "k"), _check_half(v, "v")
    else:
        q, k, v = (check_array(a, n, ndim=_NDIM, check_finite=False) for a, n in ((q, "q"), (k, "k"), (v, "v")))
        dtype = common_float_dtype(q, k, v)
        q, k, v = (a.astype(dtype, copy=False) for a in (q, k, v))
    norms = [_row_norm(a, n, check_finite) for a, n in ((q, "q"), (k, "k"), (v, "v"))]
    return q, k, v, norms


def _check_mask(mask, shape, q):
    """The mask as bool or additive float, and the largest |finite value| of an additive one."""
    if mask is None:
        return None, 0.0
    xp = array_module(q)
    mask = xp.asarray(mask)
    if mask.dtype.kind == "c" or mask.dtype.kind not in "biuf":
        raise TypeError(f"mask must be boolean (True = keep) or an additive float array, got {mask.dtype}")
    if mask.ndim > 4:
        raise ValueError(f"mask must have at most 4 dimensions, got shape {mask.shape}")
    padded = (1,) * (4 - mask.ndim) + mask.shape
    if any(m not in (1, s) for m, s in zip(padded, shape)):
        raise ValueError(f"mask of shape {mask.shape} is not broadcastable to (B, H, Nq, Nk) = {shape}")
    if mask.dtype == np.bool_:
        return mask, 0.0
    mask = mask.astype(drv.acc_dtype(q.dtype))
    bad = xp.isnan(mask) | (mask == np.inf)
    if bool(bad.any()):
        raise ValueError(f"mask contains NaN or +inf (first at index {_first(bad)}); use -inf (or a "
                         "boolean False) to hide a key")
    finite = mask[mask != -np.inf]
    return mask, float(xp.abs(finite).max()) if finite.size else 0.0


def _check_options(scale, D, dropout_p, seed, need_seed: bool):
    scale = 1.0 / math.sqrt(D) if scale is None else check_scalar(scale, "scale", low=0.0, low_inclusive=False)
    dropout_p = check_scalar(dropout_p, "dropout_p", low=0.0, high=1.0, high_inclusive=False)
    if seed is None:
        if dropout_p > 0 and need_seed:
            raise ValueError("dropout_p > 0 needs the seed= the forward used, to redraw its dropout mask")
        seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0]) if dropout_p > 0 else 0
    elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**64:
        raise TypeError(f"seed must be None or an integer in [0, 2**64), got {seed!r}")
    return scale, dropout_p, int(seed)


def attention(q, k, v, mask=None, causal: bool = False, scale: float | None = None,
              return_lse: bool = False, backend: str | None = None, *, dropout_p: float = 0.0,
              seed: int | None = None, enable_gqa: bool = False, check_finite: bool = True):
    """Scaled dot-product attention softmax(q k^T * scale + mask) v (Vaswani et al. 2017).

    Parameters
    ----------
    q : array (B, H, Nq, D) or (B, Nq, D)
    k : array (B, Hk, Nk, D) or (B, Nk, D); v : array (B, Hk, Nk, Dv) or (B, Nk, Dv)
        Batch and head dimensions broadcast against each other as in torch's
        ``scaled_dot_product_attention`` (a 3-d array is a 4-d one with B = 1).
    mask : bool (True = keep) or additive float array broadcastable to (B, H, Nq, Nk)
    causal : hide key j from query i when j > i (top-left aligned, as torch's ``is_causal``)
    scale : positive float, default 1/sqrt(D)
    return_lse : also return the row log-sum-exp (B, H, Nq) that the backward needs
    backend : None (the configured default, see ``pyml.config_context``), "auto", "python",
        "numba", "cpp" or "cuda"
    dropout_p : drop each attention weight with this probability and scale the kept ones by
        1/(1 - dropout_p) (Srivastava et al. 2014); the mask is a hash of ``seed`` and the
        score's index, the same on every backend and redrawn by ``attention_backward``
    seed : int in [0, 2**64) selecting the dropout mask (default: fresh entropy)
    enable_gqa : grouped-query attention (Ainslie et al. 2023): H query heads share Hk key/value
        heads, query head h reading head h // (H/Hk)
    check_finite : refuse NaN/inf in q, k, v (one pass over each)

    A query whose keys are all masked gets a zero output row and lse = -inf. Scores that
    could overflow the dtype (a bound from the row norms of q and k) are refused.
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
    q, k, v, (qn, kn, vn) = _check_qkv(q, k, v, check_finite)
    lay = drv.Layout(q.shape, k.shape, v.shape, bool(enable_gqa))
    mask, mmax = _check_mask(mask, lay.scores, q)
    scale, dropout_p, seed = _check_options(scale, lay.D, dropout_p, seed, need_seed=False)
    _check_bound(qn * kn * max(1.0, scale) + mmax, q.dtype, "the scores q k^T * scale")
    _check_bound(vn / (1.0 - dropout_p), q.dtype, "the output (P v / (1 - dropout_p))")
    b = drv.FORWARD.resolve(backend, q, k, v)
    _check_backend(q.dtype, b)
    out, lse = drv.forward(*lay.inputs(q, k, v), mask, bool(causal), scale, dropout_p, seed, b)
    out, lse = lay.output(out), lay.output(lse)
    return (out, lse) if return_lse else out


def _check_backend(dtype, backend: str) -> None:
    if np.dtype(dtype).name in drv.HALF_DTYPES and backend != "cuda":
        raise TypeError(f"{np.dtype(dtype).name} inputs need backend='cuda'; the {backend!r} backend "
                        "computes in float32/float64 only (convert with .astype(np.float32))")


def attention_backward(dout, q, k, v, out, lse, mask=None, causal: bool = False,
                       scale: float | None = None, backend: str | None = None, *,
                       dropout_p: float = 0.0, seed: int | None = None, enable_gqa: bool = False,
                       check_finite: bool = True):
    """Gradients (dq, dk, dv) of attention given dout = dL/d(out) and the forward's out, lse.

    The arguments after ``lse`` are those of the forward call (the same ``seed`` redraws its
    dropout mask); dq, dk, dv have the shapes of q, k, v (summed over broadcast dimensions
    and over the query heads of a group). Scores are recomputed tile by tile from q, k and
    lse (flash-attention-2, Dao 2023), so memory stays O(N * D).

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
    q, k, v, (qn, kn, vn) = _check_qkv(q, k, v, check_finite)
    lay = drv.Layout(q.shape, k.shape, v.shape, bool(enable_gqa))
    dt = q.dtype
    if _is_half(q):
        dout, out = _check_half(dout, "dout", dt), _check_half(out, "out", dt)
    else:
        dout = check_array(dout, "dout", ndim=_NDIM, dtype=dt, check_finite=False)
        out = check_array(out, "out", ndim=_NDIM, dtype=dt, check_finite=check_finite, finite_hint=True)
    dn = _row_norm(dout, "dout", check_finite)
    lse = check_array(lse, "lse", ndim=(2, 3), dtype=drv.acc_dtype(dt), check_finite=False)
    if dout.shape != lay.out_shape or out.shape != lay.out_shape:
        raise ValueError(f"dout and out must have the output's shape {lay.out_shape}, got {dout.shape} "
                         f"and {out.shape}")
    if lse.shape != lay.lse_shape:
        raise ValueError(f"lse must have shape {lay.lse_shape}, got {lse.shape}")
    xp = array_module(lse)
    bad = xp.isnan(lse) | (lse == np.inf)  # -inf is a fully masked row; NaN/+inf come from nowhere
    if bool(bad.any()):
        raise ValueError(f"lse contains NaN or +inf (first at index {_first(bad)}); pass the lse "
                         "that attention(..., return_lse=True) returned")
    mask, mmax = _check_mask(mask, lay.scores, q)
    scale, dropout_p, seed = _check_options(scale, lay.D, dropout_p, seed, need_seed=True)
    _check_bound(qn * kn * max(1.0, scale) + mmax, dt, "the scores q k^T * scale")
    # |dP| <= |dO| |v| / (1-p); |dS_i.|_1 <= 2 max|dP|; dq, dk, dv by the triangle inequality
    dp = dn * vn / (1.0 - dropout_p)
    nq = lay.scores[2]
    _check_bound(dp * max(1.0, 2 * scale * max(kn, nq * qn)) + nq * dn / (1.0 - dropout_p), dt,
                 "the gradients")
    b = drv.BACKWARD.resolve(backend, q, k, v)
    _check_backend(dt, b)
    grads = drv.backward(lay.grad_output(dout), *lay.inputs(q, k, v), lay.grad_output(out),
                         lay.grad_output(lse), mask, bool(causal), scale, dropout_p, seed, b)
    return lay.input_grads(*grads)


def sinusoidal_positional_encoding(n: int, d: int, dtype=np.float64) -> np.ndarray:
    """PE (n, d) with PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same)
    (Vaswani et al. 2017, section 3.5); ``dtype`` float32 or float64.

    Examples
    --------
    >>> import pyml
    >>> [round(float(x), 6) for x in pyml.sinusoidal_positional_encoding(2, 4)[1]]
    [0.841471, 0.540302, 0.01, 0.99995]
    """
    n = check_int(n, "n", min_value=1)
    d = check_int(d, "d", min_value=1)
    dtype = check_dtype_arg(dtype, "dtype")
    pos = np.arange(n, dtype=np.float64)[:, None]
    two_i = (np.arange(d) // 2 * 2).astype(np.float64)
    angle = pos / 10000.0 ** (two_i / d)
    pe = np.where(np.arange(d) % 2 == 0, np.sin(angle), np.cos(angle))
    return pe.astype(dtype)
