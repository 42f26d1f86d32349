"""A minimal layer library: enough to train a small CNN with pyml kernels and NumPy.

Every layer is a :class:`Module` with ``forward(x)`` (caching what backward needs),
``backward(grad_out) -> grad_in`` (accumulating parameter gradients into ``grads()``),
and ``params()`` / ``grads()`` lists in matching order, consumed by :class:`SGD` / :class:`Adam`.

Examples
--------
>>> import numpy as np
>>> from pyml import nn
>>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, random_state=0), nn.ReLU(),
...                     nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3, random_state=0))
>>> logits = net.forward(np.ones((5, 1, 4, 4), np.float32))
>>> logits.shape
(5, 3)
>>> loss, g = nn.softmax_cross_entropy(logits, np.array([0, 1, 2, 0, 1]))
>>> net.backward(g).shape
(5, 1, 4, 4)
"""
from __future__ import annotations

import numpy as np

from ._validation import check_array, check_dtype_arg, check_int, check_random_state, check_scalar
from .conv import _memory_bytes, _pair, conv2d, conv2d_backward
from .mha import multi_head_attention, multi_head_attention_backward
from .pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward


class Module:
    """Base layer: no parameters, identity gradient bookkeeping."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> list[np.ndarray]:
        return []

    def grads(self) -> list[np.ndarray]:
        return []

    def zero_grad(self) -> None:
        for g in self.grads():
            g[...] = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)


def _forward_first(layer: Module, cached) -> None:
    """Backward pairs grad_out with what forward cached; without a forward there is none."""
    if cached is None:
        raise ValueError(f"{type(layer).__name__}.backward(grad_out) called before forward: "
                         "call forward(x) first, its input is what grad_out refers to")


class Conv2d(Module):
    """2-D convolution layer (pyml.conv2d), He-initialised weight (O, C/groups, KH, KW)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, dtype=np.float32,
                 random_state=None, backend: str | None = None):
        in_channels = check_int(in_channels, "in_channels", min_value=1)
        out_channels = check_int(out_channels, "out_channels", min_value=1)
        groups = check_int(groups, "groups", min_value=1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        kh, kw = _pair(kernel_size, "kernel_size", 1)
        dtype = check_dtype_arg(dtype)
        need = out_channels * in_channels // groups * kh * kw * dtype.itemsize
        if need > _memory_bytes():
            raise ValueError(f"kernel_size {(kh, kw)} with {in_channels} -> {out_channels} "
                             f"channels needs a {need / 2**30:.3g} GiB weight, more than this "
                             f"machine's memory")
        rng = check_random_state(random_state)
        fan_in = in_channels // groups * kh * kw
        self.weight = (rng.standard_normal((out_channels, in_channels // groups, kh, kw))
                       * np.sqrt(2.0 / fan_in)).astype(dtype)
        self.bias = np.zeros(out_channels, dtype) if bias else None
        self.opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        self.backend = backend
        self.grad_weight = np.zeros_like(self.weight)
        self.grad_bias = np.zeros_like(self.bias) if bias else None
        self._x = None

    def forward(self, x):
        self._x = x
        return conv2d(x, self.weight, self.bias, **self.opts, backend=self.backend)

    def backward(self, grad_out):
        _forward_first(self, self._x)
        needs = ("input", "weight", "bias") if self.bias is not None else ("input", "weight")
        gx, gw, gb = conv2d_backward(grad_out, self._x, self.weight, **self.opts, needs=needs,
                                     backend=self.backend)
        self.grad_weight += gw
        if gb is not None:
            self.grad_bias += gb
        return gx

    def params(self):
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def grads(self):
        return [self.grad_weight] + ([self.grad_bias] if self.bias is not None else [])


class MaxPool2d(Module):
    """Max pooling layer (pyml.max_pool2d, torch.nn.MaxPool2d's options); remembers the argmax
    for backward."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
                 backend: str | None = None):
        self.kernel_size, self.backend = kernel_size, backend
        self.opts = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
        self._shape = None

    def forward(self, x):
        self._shape = np.shape(x)
        z, self._idx = max_pool2d(x, self.kernel_size, **self.opts, backend=self.backend)
        return z

    def backward(self, grad_out):
        _forward_first(self, self._shape)
        return max_pool2d_backward(grad_out, self._idx, self._shape, backend=self.backend)


class AvgPool2d(Module):
    """Average pooling layer (pyml.avg_pool2d, torch.nn.AvgPool2d's options)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None,
                 backend: str | None = None):
        self.kernel_size, self.backend = kernel_size, backend
        self.opts = dict(stride=stride, padding=padding, ceil_mode=ceil_mode,
                         count_include_pad=count_include_pad, divisor_override=divisor_override)
        self._shape = None

    def forward(self, x):
        self._shape = np.shape(x)
        return avg_pool2d(x, self.kernel_size, **self.opts, backend=self.backend)

    def backward(self, grad_out):
        _forward_first(self, self._shape)
        return avg_pool2d_backward(grad_out, self._shape, self.kernel_size, **self.opts,
                                   backend=self.backend)


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
        dtype = check_dtype_arg(dtype, "dtype")
        self.w_q, self.w_k, self.w_v, self.w_o = (
            (rng.standard_normal((E, E)) * np.sqrt(1.0 / E)).astype(dtype) for _ in range(4))
        self._grads = [np.zeros_like(w) for w in self.params()]
        self.causal, self.backend = bool(causal), backend
        self._x = None

    def params(self):
        return [self.w_q, self.w_k, self.w_v, self.w_o]

    def grads(self):
        return self._grads

    def forward(self, x):
        E = self.w_q.shape[0]
        if np.ndim(x) < 2 or np.shape(x)[-1] != E:
            raise ValueError(f"x must have shape (..., N, embed_dim) with embed_dim={E}, "
                             f"got shape {np.shape(x)}")
        self._x = x
        return multi_head_attention(x, *self.params(), num_heads=self.num_heads,
                                    causal=self.causal, backend=self.backend)

    def backward(self, grad_out):
        _forward_first(self, self._x)
        dx, *dws = multi_head_attention_backward(grad_out, self._x, *self.params(),
                                                 num_heads=self.num_heads, causal=self.causal,
                                                 backend=self.backend)
        for g, d in zip(self._grads, dws):
            g += d
        return dx


class ReLU(Module):
    _mask = None  # set by forward

    def forward(self, x):
        self._mask = x > 0
        return np.where(self._mask, x, 0).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        _forward_first(self, self._mask)
        return np.where(self._mask, grad_out, 0).astype(grad_out.dtype, copy=False)


class Flatten(Module):
    """(N, ...) -> (N, prod(...))."""

    _shape = None  # set by forward

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out):
        _forward_first(self, self._shape)
        return grad_out.reshape(self._shape)


class Linear(Module):
    """y = x W^T + b (NumPy GEMM), He-initialised."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=np.float32,
                 random_state=None):
        rng = check_random_state(random_state)
        self.weight = (rng.standard_normal((out_features, in_features))
                       * np.sqrt(2.0 / in_features)).astype(dtype)
        self.bias = np.zeros(out_features, dtype) if bias else None
        self.grad_weight = np.zeros_like(self.weight)
        self.grad_bias = np.zeros_like(self.bias) if bias else None
        self._x = None

    def forward(self, x):
        self._x = x
        y = x @ self.weight.T
        return y + self.bias if self.bias is not None else y

    def backward(self, grad_out):
        _forward_first(self, self._x)
        self.grad_weight += grad_out.T @ self._x
        if self.bias is not None:
            self.grad_bias += grad_out.sum(axis=0)
        return grad_out @ self.weight

    def params(self):
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def grads(self):
        return [self.grad_weight] + ([self.grad_bias] if self.bias is not None else [])


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse."""

    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_out):
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out

    def params(self):
        return [p for layer in self.layers for p in layer.params()]

    def grads(self):
        return [g for layer in self.layers for g in layer.grads()]


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) and its gradient with respect to the logits.

    logits (n, C) float; labels (n,) integers in [0, C)."""
    logits = check_array(logits, "logits", ndim=2)
    labels = np.asarray(labels)
    n, C = logits.shape
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match logits {logits.shape}, got {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= C):
        bad = int(np.flatnonzero((labels < 0) | (labels >= C))[0])
        raise ValueError(f"labels must be in [0, {C}) (the columns of logits), got {labels[bad]} at index {bad}")
    z = logits - logits.max(axis=1, keepdims=True)  # shift so exp never overflows
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    loss = float(-np.log(p[np.arange(n), labels] + 1e-12).mean())
    p[np.arange(n), labels] -= 1.0
    return loss, (p / n).astype(logits.dtype, copy=False)


def _check_module(module) -> Module:
    if not isinstance(module, Module):
        raise TypeError(f"module must be a pyml.nn.Module, got {type(module).__name__}")
    return module


class SGD:
    """Plain SGD with momentum: v = mu v - lr g; p += v."""

    def __init__(self, module: Module, lr: float = 0.01, momentum: float = 0.9):
        self.module = _check_module(module)
        self.lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
        self.momentum = check_scalar(momentum, "momentum", low=0.0, high=1.0, high_inclusive=False)
        self.v = [np.zeros_like(p) for p in module.params()]

    def step(self) -> None:
        for p, g, v in zip(self.module.params(), self.module.grads(), self.v):
            v *= self.momentum
            v -= self.lr * g
            p += v


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction."""

    def __init__(self, module: Module, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.module = _check_module(module)
        self.lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(check_scalar(b, f"betas[{i}]", low=0.0, high=1.0, high_inclusive=False)
                           for i, b in enumerate(betas))
        self.eps = check_scalar(eps, "eps", low=0.0, low_inclusive=False)
        self.t = 0
        self.m = [np.zeros_like(p) for p in module.params()]
        self.v = [np.zeros_like(p) for p in module.params()]

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, g, m, v in zip(self.module.params(), self.module.grads(), self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            mhat = m / (1 - b1 ** self.t)
            vhat = v / (1 - b2 ** self.t)
            p -= (self.lr * mhat / (np.sqrt(vhat) + self.eps)).astype(p.dtype, copy=False)

