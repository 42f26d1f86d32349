"""Multi-head attention built on pyml.attention (Vaswani et al. 2017, section 3.2.2):
MHA(x) = concat_h(Attention(x W_q^h, x W_k^h, x W_v^h)) W_o, heads split from the feature axis.

A module of its own, importing pyml.attention one way: it composes the projections (NumPy
GEMMs) around the attention kernel, a concept separate from the kernel's validation and
torch-semantics layer in attention.py, and keeps both files small.
"""
from __future__ import annotations

import numpy as np

from ._validation import check_array, check_int
from .attention import attention, attention_backward


def _check(x, w_q, w_k, w_v, w_o, num_heads, check_finite):
    x = check_array(x, "x", ndim=3, check_finite=check_finite, finite_hint=True)
    E = x.shape[2]
    ws = [check_array(w, n, ndim=2, dtype=x.dtype, check_finite=check_finite, finite_hint=True)
          for w, n in ((w_q, "w_q"), (w_k, "w_k"), (w_v, "w_v"), (w_o, "w_o"))]
    for w, n in zip(ws, ("w_q", "w_k", "w_v", "w_o")):
        if w.shape != (E, E):
            raise ValueError(f"{n} must have shape (E, E) = {(E, E)}, got {w.shape}")
    num_heads = check_int(num_heads, "num_heads", min_value=1)
    if E % num_heads:
        raise ValueError(f"embedding size {E} is not divisible by num_heads={num_heads}")
    return x, ws, num_heads


def _split(t, H):
    B, N, E = t.shape
    return np.ascontiguousarray(t.reshape(B, N, H, E // H).transpose(0, 2, 1, 3))


def _merge(t):
    B, H, N, Dh = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, N, H * Dh)


def multi_head_attention(x, w_q, w_k, w_v, w_o, num_heads: int, causal: bool = False,
                         backend: str | None = None, *, check_finite: bool = True):
    """Self-attention of x (B, N, E) with projection weights (E, E) and ``num_heads`` heads.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 5, 8)); w = [rng.standard_normal((8, 8)) for _ in range(4)]
    >>> pyml.multi_head_attention(x, *w, num_heads=2).shape
    (2, 5, 8)
    """
    x, (wq, wk, wv, wo), H = _check(x, w_q, w_k, w_v, w_o, num_heads, check_finite)
    q, k, v = _split(x @ wq, H), _split(x @ wk, H), _split(x @ wv, H)
    return _merge(attention(q, k, v, causal=causal, backend=backend, check_finite=check_finite)) @ wo


def multi_head_attention_backward(dy, x, w_q, w_k, w_v, w_o, num_heads: int,
                                  causal: bool = False, backend: str | None = None, *,
                                  check_finite: bool = True):
    """Gradients (dx, dw_q, dw_k, dw_v, dw_o) of multi_head_attention given dy = dL/dy.

    Examples
    --------
    >>> import numpy as np, pyml
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1, 4, 6)); w = [rng.standard_normal((6, 6)) for _ in range(4)]
    >>> [g.shape for g in pyml.multi_head_attention_backward(np.ones((1, 4, 6)), x, *w, num_heads=3)]
    [(1, 4, 6), (6, 6), (6, 6), (6, 6), (6, 6)]
    """
    x, (wq, wk, wv, wo), H = _check(x, w_q, w_k, w_v, w_o, num_heads, check_finite)
    dy = check_array(dy, "dy", ndim=3, dtype=x.dtype, check_finite=check_finite, finite_hint=True)
    if dy.shape != x.shape:
        raise ValueError(f"dy must have the shape of the output {x.shape}, got {dy.shape}")
    q, k, v = _split(x @ wq, H), _split(x @ wk, H), _split(x @ wv, H)
    o, lse = attention(q, k, v, causal=causal, return_lse=True, backend=backend, check_finite=check_finite)
    om = _merge(o)
    E = x.shape[2]
    dwo = om.reshape(-1, E).T @ dy.reshape(-1, E)
    do = _split(dy @ wo.T, H)
    dq, dk, dv = attention_backward(do, q, k, v, o, lse, causal=causal, backend=backend,
                                    check_finite=check_finite)
    dq, dk, dv = _merge(dq), _merge(dk), _merge(dv)
    xf = x.reshape(-1, E)
    dwq, dwk, dwv = (xf.T @ g.reshape(-1, E) for g in (dq, dk, dv))
    dx = dq @ wq.T + dk @ wk.T + dv @ wv.T
    return dx, dwq, dwk, dwv, dwo
