"""Reference 2-D convolution and pooling: plain loops over the textbook equations.

Convolution as the seeds define it is cross-correlation (seed 000, sec. "Convolutional
Layer", and seed 002, sec. 16.1):

    S(i, j) = sum_m sum_n I(i + m, j + n) K(m, n)

generalised to channels, stride s, zero padding p, dilation d and groups:

    Y[b, o, i, j] = bias[o] + sum_c sum_m sum_n X[b, g*Cg + c, s*i - p + d*m, s*j - p + d*n] K[o, c, m, n]

with output size W_out = floor((W + 2P - D(K - 1) - 1) / S) + 1 (seed 004 gives D = 1).
Max / average pooling follow seed 002 sec. 16.3 (Z(i, j) = max / mean of the window).
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


def max_pool2d(X, kernel, stride, padding):
    """Z(i, j) = max over the window (padding never wins); also the flat argmax in H*W."""
    B, C, H, W = X.shape
    (KH, KW), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = out_size(H, KH, sh, ph, 1), out_size(W, KW, sw, pw, 1)
    Z = np.empty((B, C, OH, OW), dtype=X.dtype)
    idx = np.empty((B, C, OH, OW), dtype=np.int64)
    for b in range(B):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    best, arg = -np.inf, -1
                    for m in range(KH):
                        for n in range(KW):
                            y, x = sh * i - ph + m, sw * j - pw + n
                            if 0 <= y < H and 0 <= x < W and (arg < 0 or X[b, c, y, x] > best):
                                best, arg = X[b, c, y, x], y * W + x
                    Z[b, c, i, j], idx[b, c, i, j] = best, arg
    return Z, idx


def max_pool2d_backward(dZ, idx, shape):
    """dX[argmax] += dZ: the max passes its gradient to the element that won."""
    B, C, H, W = shape
    dX = np.zeros(shape, dtype=dZ.dtype)
    for b in range(B):
        for c in range(C):
            for i in range(dZ.shape[2]):
                for j in range(dZ.shape[3]):
                    k = idx[b, c, i, j]
                    dX[b, c, k // W, k % W] += dZ[b, c, i, j]
    return dX


def avg_pool2d(X, kernel, stride, padding):
    """Z(i, j) = (1 / (KH*KW)) * sum over the window (zero padding counted, as PyTorch does)."""
    B, C, H, W = X.shape
    (KH, KW), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = out_size(H, KH, sh, ph, 1), out_size(W, KW, sw, pw, 1)
    Z = np.zeros((B, C, OH, OW), dtype=X.dtype)
    for b in range(B):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    S = 0.0
                    for m in range(KH):
                        for n in range(KW):
                            y, x = sh * i - ph + m, sw * j - pw + n
                            if 0 <= y < H and 0 <= x < W:
                                S += X[b, c, y, x]
                    Z[b, c, i, j] = S / (KH * KW)
    return Z


def avg_pool2d_backward(dZ, shape, kernel, stride, padding):
    """Each window element receives dZ / (KH*KW)."""
    B, C, H, W = shape
    (KH, KW), (sh, sw), (ph, pw) = kernel, stride, padding
    dX = np.zeros(shape, dtype=dZ.dtype)
    for b in range(B):
        for c in range(C):
            for i in range(dZ.shape[2]):
                for j in range(dZ.shape[3]):
                    for m in range(KH):
                        for n in range(KW):
                            y, x = sh * i - ph + m, sw * j - pw + n
                            if 0 <= y < H and 0 <= x < W:
                                dX[b, c, y, x] += dZ[b, c, i, j] / (KH * KW)
    return dX
