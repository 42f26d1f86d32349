"""pyml.nn.MultiHeadAttention: self-attention layer on pyml.multi_head_attention (+ backward)."""
from __future__ import annotations

import numpy as np

from ._validation import check_int, check_random_state
from .mha import multi_head_attention, multi_head_attention_backward
from .nn import Module


class MultiHeadAttention(Module):
    """Self-attention over x (B, N, E) with ``num_heads`` heads; Xavier-initialised (E, E) weights.

    Examples
    --------
    >>> import numpy as np
    >>> from pyml import nn
    >>> layer = nn.MultiHeadAttention(8, 2, causal=True, random_state=0)
    >>> y = layer.forward(np.ones((3, 5, 8), np.float32))
    >>> layer.backward(np.ones_like(y)).shape
    (3, 5, 8)
    """

    def __init__(self, embed_dim: int, num_heads: int, causal: bool = False, dtype=np.float32,
                 random_state=None, backend: str | None = None):
        E = check_int(embed_dim, "embed_dim", min_value=1)
        self.num_heads = check_int(num_heads, "num_heads", min_value=1)
        if E % self.num_heads:
            raise ValueError(f"embed_dim {E} is not divisible by num_heads={num_heads}")
        rng = check_random_state(random_state)
        self.w_q, self.w_k, self.w_v, self.w_o = (
            (rng.standard_normal((E, E)) * np.sqrt(1.0 / E)).astype(dtype) for _ in range(4))
        self._grads = [np.zeros_like(w) for w in self.params()]
        self.causal, self.backend = bool(causal), backend

    def params(self):
        return [self.w_q, self.w_k, self.w_v, self.w_o]

    def grads(self):
        return self._grads

    def forward(self, x):
        self._x = x
        return multi_head_attention(x, *self.params(), num_heads=self.num_heads,
                                    causal=self.causal, backend=self.backend)

    def backward(self, grad_out):
        dx, *dws = multi_head_attention_backward(grad_out, self._x, *self.params(),
                                                 num_heads=self.num_heads, causal=self.causal,
                                                 backend=self.backend)
        for g, d in zip(self._grads, dws):
            g += d
        return dx
