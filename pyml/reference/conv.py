"""Reference 2-D convolution and pooling: plain loops over the textbook equations.

Convolution as deep-learning libraries define it is cross-correlation (Goodfellow, Bengio &
Courville, *Deep Learning*, 2016, eq. 9.6):

    S(i, j) = sum_m sum_n I(i + m, j + n) K(m, n)

generalised to channels, stride s, zero padding p, dilation d and groups:

    Y[b, o, i, j] = bias[o] + sum_c sum_m sum_n X[b, g*Cg + c, s*i - p + d*m, s*j - p + d*n] K[o, c, m, n]

with output size W_out = floor((W + 2P - D(K - 1) - 1) / S) + 1 (the textbook form is D = 1).
Max / average pooling follow Goodfellow et al. sec. 9.3 (Z(i, j) = max / mean of the window),
with PyTorch's conventions for ceil_mode, dilation, count_include_pad and divisor_override.
The gradients are the derivatives of these sums (each term contributes its partner factor).
This module never imports a kernel or the backend registry: it is the oracle.
"""
from __future__ import annotations

import numpy as np


def out_size(W: int, K: int, S: int, P: int, D: int) -> int:
    """W_out = floor((W + 2P - D(K-1) - 1) / S) + 1."""
    return (W + 2 * P - D * (K - 1) - 1) // S + 1


def conv2d(X, Kw, bias, stride, padding, dilation, groups):
    """Y = X (*) K + bias, the loop of the equation above; all options as (h, w) pairs."""
    B, C, H, W = X.shape
    O, Cg, KH, KW = Kw.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    OH, OW = out_size(H, KH, sh, ph, dh), out_size(W, KW, sw, pw, dw)
    Og = O // groups
    Y = np.zeros((B, O, OH, OW), dtype=X.dtype)
    for b in range(B):
        for o in range(O):
            g = o // Og
            for i in range(OH):
                for j in range(OW):
                    S = 0.0
                    for c in range(Cg):
                        for m in range(KH):
                            for n in range(KW):
                                y, x = sh * i - ph + dh * m, sw * j - pw + dw * n
                                if 0 <= y < H and 0 <= x < W:
                                    S += X[b, g * Cg + c, y, x] * Kw[o, c, m, n]
                    Y[b, o, i, j] = S + (bias[o] if bias is not None else 0.0)
    return Y


def conv2d_backward(dY, X, Kw, stride, padding, dilation, groups):
    """(dX, dK, dbias): every term X[...] K[o, c, m, n] of Y sends dY to its two factors."""
    B, C, H, W = X.shape
    O, Cg, KH, KW = Kw.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    _, _, OH, OW = dY.shape
    Og = O // groups
    dX = np.zeros_like(X)
    dK = np.zeros_like(Kw)
    dbias = np.zeros(O, dtype=X.dtype)
    for b in range(B):
        for o in range(O):
            g = o // Og
            for i in range(OH):
                for j in range(OW):
                    dy = dY[b, o, i, j]
                    dbias[o] += dy
                    for c in range(Cg):
                        for m in range(KH):
                            for n in range(KW):
                                y, x = sh * i - ph + dh * m, sw * j - pw + dw * n
                                if 0 <= y < H and 0 <= x < W:
                                    dX[b, g * Cg + c, y, x] += dy * Kw[o, c, m, n]
                                    dK[o, c, m, n] += dy * X[b, g * Cg + c, y, x]
    return dX, dK, dbias


def pool_out_size(W: int, K: int, S: int, P: int, D: int, ceil_mode: bool) -> int:
    """W_out of a pooling window: floor (or ceil) of (W + 2P - D(K-1) - 1) / S, plus one; in
    ceil mode the last window must still start inside the input or its left padding."""
    num = W + 2 * P - D * (K - 1) - 1 + (S - 1 if ceil_mode else 0)
    out = num // S + 1
    if ceil_mode and (out - 1) * S >= W + P:
        out -= 1
    return out


def max_pool2d(X, kernel, stride, padding, dilation=(1, 1), ceil_mode=False):
    """Z(i, j) = max over the window's in-bounds elements (padding never wins; a NaN is the
    max, as in IEEE maxNum's propagating form); also the flat argmax y*W + x in H*W, -1 for a
    window with no in-bounds element (possible with dilation), whose Z is -inf."""
    B, C, H, W = X.shape
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    OH, OW = pool_out_size(H, KH, sh, ph, dh, ceil_mode), pool_out_size(W, KW, sw, pw, dw, ceil_mode)
    Z = np.empty((B, C, OH, OW), dtype=X.dtype)
    idx = np.empty((B, C, OH, OW), dtype=np.int64)
    for b in range(B):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    best, arg = -np.inf, -1
                    for m in range(KH):
                        for n in range(KW):
                            y, x = sh * i - ph + dh * m, sw * j - pw + dw * n
                            if 0 <= y < H and 0 <= x < W:
                                v = X[b, c, y, x]
                                if arg < 0 or v > best or np.isnan(v):
                                    best, arg = v, y * W + x
                    Z[b, c, i, j], idx[b, c, i, j] = best, arg
    return Z, idx


def max_pool2d_backward(dZ, idx, shape):
    """dX[argmax] += dZ: the max passes its gradient to the element that won (none for -1)."""
    B, C, H, W = shape
    dX = np.zeros(shape, dtype=dZ.dtype)
    for b in range(B):
        for c in range(C):
            for i in range(dZ.shape[2]):
                for j in range(dZ.shape[3]):
                    k = idx[b, c, i, j]
                    if k >= 0:
                        dX[b, c, k // W, k % W] += dZ[b, c, i, j]
    return dX


def _avg_window(i, K, S, P, N):
    """The window [start, end) of output i clipped to the input, and its extent counting
    padding but not the ceil-mode overhang beyond it (PyTorch's count_include_pad size)."""
    start = S * i - P
    end = min(start + K, N + P)
    size = end - start
    return max(start, 0), min(end, N), size


def _avg_divisor(y0, y1, x0, x1, size, count_include_pad, divisor_override):
    if divisor_override is not None:
        return divisor_override
    return size if count_include_pad else (y1 - y0) * (x1 - x0)


def avg_pool2d(X, kernel, stride, padding, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Z(i, j) = (1 / divisor) * sum over the window's in-bounds elements; the divisor is the
    window size with padding (count_include_pad, PyTorch's default), the in-bounds count, or
    divisor_override. A window with no in-bounds element gives 0."""
    B, C, H, W = X.shape
    (KH, KW), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = pool_out_size(H, KH, sh, ph, 1, ceil_mode), pool_out_size(W, KW, sw, pw, 1, ceil_mode)
    Z = np.zeros((B, C, OH, OW), dtype=X.dtype)
    for b in range(B):
        for c in range(C):
            for i in range(OH):
                y0, y1, hs = _avg_window(i, KH, sh, ph, H)
                for j in range(OW):
                    x0, x1, ws = _avg_window(j, KW, sw, pw, W)
                    if y0 >= y1 or x0 >= x1:
                        continue
                    S = 0.0
                    for y in range(y0, y1):
                        for x in range(x0, x1):
                            S += X[b, c, y, x]
                    Z[b, c, i, j] = S / _avg_divisor(y0, y1, x0, x1, hs * ws, count_include_pad,
                                                     divisor_override)
    return Z


def avg_pool2d_backward(dZ, shape, kernel, stride, padding, ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    """Each in-bounds window element receives dZ / divisor (the forward's divisor)."""
    B, C, H, W = shape
    (KH, KW), (sh, sw), (ph, pw) = kernel, stride, padding
    dX = np.zeros(shape, dtype=dZ.dtype)
    for b in range(B):
        for c in range(C):
            for i in range(dZ.shape[2]):
                y0, y1, hs = _avg_window(i, KH, sh, ph, H)
                for j in range(dZ.shape[3]):
                    x0, x1, ws = _avg_window(j, KW, sw, pw, W)
                    if y0 >= y1 or x0 >= x1:
                        continue
                    g = dZ[b, c, i, j] / _avg_divisor(y0, y1, x0, x1, hs * ws, count_include_pad,
                                                      divisor_override)
                    for y in range(y0, y1):
                        for x in range(x0, x1):
                            dX[b, c, y, x] += g
    return dX
