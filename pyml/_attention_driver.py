"""Attention driver: mask preparation, output allocation and backend dispatch, shared by every
backend. Arguments arrive validated (pyml.attention does that once); the kernels fill the
arrays allocated here, so nothing of size Nq x Nk is ever allocated for a compiled backend.

float16 / bfloat16 (cuda backend only) keep out, dq, dk, dv in that dtype; the mask, lse and
delta are float32, the precision the kernel accumulates in (see :func:`acc_dtype`).
"""
from __future__ import annotations

import numpy as np

from ._backend import Kernel, array_module

# One name per kernel in every backend: pyml.reference.attention, pyml.kernels.numba.attention,
# pyml._cpp.attention and pyml.kernels.cuda.attention each define these two functions.
FORWARD = Kernel("attention", "attention_forward", ("python", "numba", "cpp", "cuda"))
BACKWARD = Kernel("attention", "attention_backward", ("python", "numba", "cpp", "cuda"))
HALF_DTYPES = ("float16", "bfloat16")  # storage-only inputs, cuda backend only


def acc_dtype(dtype) -> np.dtype:
    """The dtype of the mask, lse and delta for inputs of ``dtype``: float32 for 16-bit floats."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.name in HALF_DTYPES else dtype


def compact_mask(mask, shape, dtype):
    """An additive mask the kernels index as b*msb + h*msh + i*msq + j, plus the strides.

    Broadcast dimensions (batch, head, query) keep size 1 and get stride 0, so a key-padding
    mask (B,1,1,Nk) stays B*Nk elements; only the key dimension is made explicit.
    Returns (flat_mask, msb, msh, msq, has_mask).
    """
    B, H, Nq, Nk = shape
    xp = array_module(mask)
    if mask is None:
        return xp.zeros(1, dtype), 0, 0, 0, False
    m = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    if m.dtype == np.bool_:
        m = xp.where(m, dtype.type(0), dtype.type(-np.inf)).astype(dtype)
    Bm, Hm, Mq = m.shape[0], m.shape[1], m.shape[2]
    m = xp.ascontiguousarray(xp.broadcast_to(m.astype(dtype, copy=False), (Bm, Hm, Mq, Nk)))
    msq = Nk if Mq > 1 else 0
    msh = Mq * Nk if Hm > 1 else 0
    msb = Hm * Mq * Nk if Bm > 1 else 0
    return m.reshape(-1), msb, msh, msq, True


def forward(q, k, v, mask, causal: bool, scale: float, backend: str):
    """(out, lse) of softmax(q k^T * scale + mask) v on the chosen backend."""
    if backend == "python":
        return FORWARD.get("python")(q, k, v, mask, causal, scale)
    B, H, Nq, _ = q.shape
    xp = array_module(q)
    out = xp.empty((B, H, Nq, v.shape[3]), q.dtype)
    lse = xp.empty((B, H, Nq), acc_dtype(q.dtype))
    m, msb, msh, msq, has = compact_mask(mask, (B, H, Nq, k.shape[2]), acc_dtype(q.dtype))
    FORWARD.get(backend)(q, k, v, m, msb, msh, msq, has, bool(causal), float(scale), out, lse)
    return out, lse


def backward(dout, q, k, v, out, lse, mask, causal: bool, scale: float, backend: str):
    """(dq, dk, dv), recomputing the scores from q, k and lse (flash-attention-2)."""
    if backend == "python":
        return BACKWARD.get("python")(dout, q, k, v, mask, causal, scale)
    B, H, Nq, _ = q.shape
    xp = array_module(q)
    acc = acc_dtype(q.dtype)
    # Delta_i = rowsum(dO * O): O(N*D) work, shared by every backend
    delta = xp.ascontiguousarray((dout.astype(acc, copy=False) * out.astype(acc, copy=False)).sum(axis=-1))
    dq, dk, dv = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)
    m, msb, msh, msq, has = compact_mask(mask, (B, H, Nq, k.shape[2]), acc)
    BACKWARD.get(backend)(dout, q, k, v, lse, delta, m, msb, msh, msq, has, bool(causal),
                          float(scale), dq, dk, dv)
    return dq, dk, dv
