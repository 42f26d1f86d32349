"""Attention driver: mask preparation, output allocation and backend dispatch, shared by every
backend. Arguments arrive validated and in the kernels' layout (pyml.attention does that once);
the kernels fill the arrays allocated here, so nothing of size Nq x Nk is ever allocated for a
compiled backend.

Kernel contract (every backend, same names): q (B,H,Nq,D), k (B,Hk,Nk,D), v (B,Hk,Nk,Dv)
C-contiguous with H a multiple of Hk (grouped-query attention: head h reads k/v head
h // (H/Hk)); dropout_p in [0, 1) and a 64-bit seed select the counter-hash dropout mask of
pyml.reference.attention.dropout_keep; outputs out (B,H,Nq,Dv), lse (B,H,Nq), dq (B,H,Nq,D)
and dk, dv per query head (B,H,Nk,.), summed here over each group.

float16 / bfloat16 (cuda backend only) keep out, dq, dk, dv in that dtype; the mask, lse and
delta are float32, the precision the kernel accumulates in (see :func:`acc_dtype`).
"""
from __future__ import annotations

import numpy as np

from ._backend import Kernel, array_module, is_cupy

# One name per kernel in every backend: pyml.reference.attention, pyml.kernels.numba.attention,
# pyml._cpp.attention and pyml.kernels.cuda.attention each define these two functions.
FORWARD = Kernel("attention", "attention_forward", ("python", "numba", "cpp", "cuda"))
BACKWARD = Kernel("attention", "attention_backward", ("python", "numba", "cpp", "cuda"))
HALF_DTYPES = ("float16", "bfloat16")  # storage-only inputs, cuda backend only


def acc_dtype(dtype) -> np.dtype:
    """The dtype of the mask, lse and delta for inputs of ``dtype``: float32 for 16-bit floats."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.name in HALF_DTYPES else dtype


class Layout:
    """torch SDPA shapes -> the kernels' (B, H, N, D) layout, and results back.

    3-d arrays (B, N, D) are 4-d with batch 1 (left padding, as broadcasting pads); batch and
    head dimensions of q, k, v broadcast (torch's semantics); with ``enable_gqa`` the head
    dimension of k/v may divide q's instead. Errors name the arrays and their shapes.
    """

    def __init__(self, q_shape, k_shape, v_shape, enable_gqa: bool):
        pad = lambda s: (1,) * (4 - len(s)) + tuple(s)  # noqa: E731
        self.ndim = max(len(q_shape), len(k_shape), len(v_shape))
        self.q4, self.k4, self.v4 = pad(q_shape), pad(k_shape), pad(v_shape)
        self.shapes = (tuple(q_shape), tuple(k_shape), tuple(v_shape))
        (Bq, Hq, Nq, D), (Bk, Hk, Nk, Dk), (Bv, Hv, Nv, Dv) = self.q4, self.k4, self.v4
        if Dk != D:
            raise ValueError(f"k must have the head dimension D={D} of q, got k {k_shape}")
        if Nv != Nk:
            raise ValueError(f"v must have as many keys as k (Nk={Nk}), got v {v_shape}")
        try:
            Bkv, Hkv = np.broadcast_shapes((Bk, Hk), (Bv, Hv))
            if enable_gqa:
                (B,) = np.broadcast_shapes((Bq,), (Bkv,))
                if Hq % Hkv:
                    raise ValueError(f"enable_gqa needs the query heads ({Hq}) to be a multiple of the "
                                     f"key/value heads ({Hkv}), got q {q_shape}, k {k_shape}, v {v_shape}")
                H = Hq
            else:
                B, H = np.broadcast_shapes((Bq, Hq), (Bkv, Hkv))
                Hkv = H
        except ValueError as exc:
            if "enable_gqa" in str(exc):
                raise
            raise ValueError(f"q, k, v must share batch and head dimensions (B, H) or broadcast "
                             f"(a 3-d array has B = 1), got q {q_shape}, k {k_shape}, v {v_shape}"
                             + ("" if enable_gqa else "; fewer key/value heads need enable_gqa=True")) from None
        self.B, self.H, self.Hk, self.D, self.Dv = B, H, Hkv, D, Dv
        self.scores = (B, H, Nq, Nk)
        batch = (B, H)[4 - self.ndim:]
        self.out_shape = batch + (Nq, Dv)
        self.lse_shape = batch + (Nq,)

    def inputs(self, q, k, v):
        """q (B,H,Nq,D), k (B,Hk,Nk,D), v (B,Hk,Nk,Dv), C-contiguous: a broadcast dimension is
        materialised (a copy), an already conforming input is passed as it is."""
        xp = array_module(q)
        B, H, Hk = self.B, self.H, self.Hk
        return tuple(xp.ascontiguousarray(xp.broadcast_to(a.reshape(s), (B, h) + s[2:]))
                     for a, s, h in ((q, self.q4, H), (k, self.k4, Hk), (v, self.v4, Hk)))

    def output(self, x):
        """A (B, H, ...) result in the caller's dimensions (3-d in, 3-d out)."""
        return x.reshape(x.shape[4 - self.ndim:]) if self.ndim < 4 else x

    def grad_output(self, x):
        """dout, out or lse of the output's shape, in the kernels' (B, H, ...) layout."""
        return array_module(x).ascontiguousarray(x.reshape((1,) * (4 - self.ndim) + x.shape))

    def input_grads(self, dq, dk, dv):
        """(dq, dk, dv) of shape (B, H or Hk, ...) summed over the dimensions each input was
        broadcast along, in the shapes of q, k, v."""
        out = []
        for g, s4, s in zip((dq, dk, dv), (self.q4, self.k4, self.v4), self.shapes):
            axes = tuple(a for a in (0, 1) if s4[a] == 1 and g.shape[a] > 1)
            out.append((g.sum(axis=axes, keepdims=True) if axes else g).reshape(s))
        return tuple(out)


def compact_mask(mask, shape, dtype):
    """An additive mask the kernels index as b*msb + h*msh + i*msq + j, plus the strides.

    Broadcast dimensions (batch, head, query) keep size 1 and get stride 0, so a key-padding
    mask (B,1,1,Nk) stays B*Nk elements; only the key dimension is made explicit.
    Returns (flat_mask, msb, msh, msq, has_mask).
    """
    B, H, Nq, Nk = shape
    xp = array_module(mask)
    if mask is None:
        return _readonly(xp.zeros(1, dtype)), 0, 0, 0, False
    m = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    if m.dtype == np.bool_:
        m = xp.where(m, dtype.type(0), dtype.type(-np.inf)).astype(dtype)
    Bm, Hm, Mq = m.shape[0], m.shape[1], m.shape[2]
    m = xp.ascontiguousarray(xp.broadcast_to(m.astype(dtype, copy=False), (Bm, Hm, Mq, Nk)))
    msq = Nk if Mq > 1 else 0
    msh = Mq * Nk if Hm > 1 else 0
    msb = Hm * Mq * Nk if Bm > 1 else 0
    return _readonly(m.reshape(-1)), msb, msh, msq, True


def _readonly(m):
    """A read-only view of a host mask: the kernels only read it, and one array type for every
    mask (a broadcast view is read-only, a fresh array is not) keeps Numba from compiling a
    second specialisation of each attention kernel for the other."""
    if is_cupy(m):
        return m
    m = m.view()
    m.flags.writeable = False
    return m


def _int64(seed: int) -> int:
    """The 64-bit seed as the signed integer with the same bits: every kernel takes an int64
    (a plain int in pybind11's and Numba's overload resolution) and reinterprets it."""
    return seed - (1 << 64) if seed >= 1 << 63 else seed


def forward(q, k, v, mask, causal: bool, scale: float, dropout_p: float, seed: int, backend: str):
    """(out, lse) of softmax(q k^T * scale + mask) v on the chosen backend.

    q (B, H, Nq, D), k (B, Hk, Nk, D), v (B, Hk, Nk, Dv) C-contiguous, H a multiple of Hk."""
    if backend == "python":
        return FORWARD.get("python")(q, k, v, mask, causal, scale, dropout_p, seed)
    B, H, Nq, _ = q.shape
    xp = array_module(q)
    out = xp.empty((B, H, Nq, v.shape[3]), q.dtype)
    lse = xp.empty((B, H, Nq), acc_dtype(q.dtype))
    m, msb, msh, msq, has = compact_mask(mask, (B, H, Nq, k.shape[2]), acc_dtype(q.dtype))
    FORWARD.get(backend)(q, k, v, m, msb, msh, msq, has, bool(causal), float(scale), float(dropout_p),
                         _int64(seed), out, lse)
    return out, lse


def _sum_groups(g, Hk):
    """dK or dV per query head (B, H, N, .) -> per key/value head (B, Hk, N, .): the sum over
    the H/Hk query heads of each group (grouped-query attention)."""
    B, H, N, D = g.shape
    return g if H == Hk else g.reshape(B, Hk, H // Hk, N, D).sum(axis=2)


def backward(dout, q, k, v, out, lse, mask, causal: bool, scale: float, dropout_p: float, seed: int,
             backend: str):
    """(dq, dk, dv), recomputing the scores from q, k and lse (flash-attention-2); dk and dv
    have the shapes of k and v."""
    if backend == "python":
        return BACKWARD.get("python")(dout, q, k, v, mask, causal, scale, dropout_p, seed)
    B, H, Nq, _ = q.shape
    Nk, Hk = k.shape[2], k.shape[1]
    xp = array_module(q)
    acc = acc_dtype(q.dtype)
    # Delta_i = rowsum(dO * O): O(N*D) work, shared by every backend (with dropout too: O = (P Z) V);
    # einsum reads both once without an N x D temporary, 16-bit inputs are widened first
    if np.dtype(acc) == dout.dtype:
        delta = xp.ascontiguousarray(xp.einsum("...d,...d->...", dout, out))
    else:
        delta = xp.ascontiguousarray((dout.astype(acc) * out.astype(acc)).sum(axis=-1))
    dq = xp.empty_like(q)
    # the kernels write dK, dV per query head, so heads of one group never race on a row
    dk = xp.empty((B, H, Nk, k.shape[3]), k.dtype)
    dv = xp.empty((B, H, Nk, v.shape[3]), v.dtype)
    m, msb, msh, msq, has = compact_mask(mask, (B, H, Nq, Nk), acc)
    BACKWARD.get(backend)(dout, q, k, v, lse, delta, m, msb, msh, msq, has, bool(causal),
                          float(scale), float(dropout_p), _int64(seed), dq, dk, dv)
    return dq, _sum_groups(dk, Hk), _sum_groups(dv, Hk)
