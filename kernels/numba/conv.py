# Computes conv2d as per-image GEMMs on unrolled windows (cols[b] rows X[b, c, s*i-p+d*m, s*j-p+d*n];
# Y[b] = K @ cols[b], dK = sum_b dY[b] @ cols[b]^T, dX = col2im(K^T @ dY[b])) and max/avg pooling.
# Fast by: prange over images with per-thread buffers and single-threaded BLAS np.dot (the driver
# holds BLAS to 1 thread), branch-free contiguous inner loops from a precomputed valid column range.
from __future__ import annotations

import numpy as np
from numba import get_thread_id, njit, prange


@njit(inline="always")
def _valid_range(s, p, d, n, W, OW):
    """[j0, j1): the output columns j whose input column s*j - p + d*n lies in [0, W)."""
    off = d * n - p
    j0 = 0 if off >= 0 else (-off + s - 1) // s
    j1 = 0 if W - off <= 0 else (W - off + s - 1) // s
    return j0, min(max(j1, j0), OW)


@njit(inline="always")
def _im2col_plane(plane, rows, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW):
    """Unroll one (H, W) plane into its KH*KW rows of OH*OW columns."""
    H, W = plane.shape
    for m in range(KH):
        for n in range(KW):
            row = rows[m * KW + n]
            j0, j1 = _valid_range(sw, pw, dw, n, W, OW)
            xo = dw * n - pw
            for i in range(OH):
                y = sh * i - ph + dh * m
                r = row[i * OW:(i + 1) * OW]
                if y < 0 or y >= H:
                    r[:] = 0
                    continue
                r[:j0] = 0
                r[j1:] = 0
                for j in range(j0, j1):
                    r[j] = plane[y, sw * j + xo]


@njit(inline="always")
def _col2im_plane(rows, plane, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW):
    """Scatter-add the KH*KW rows of one channel into its (zeroed here) plane."""
    H, W = plane.shape
    plane[:] = 0
    for m in range(KH):
        for n in range(KW):
            row = rows[m * KW + n]
            j0, j1 = _valid_range(sw, pw, dw, n, W, OW)
            xo = dw * n - pw
            for i in range(OH):
                y = sh * i - ph + dh * m
                if 0 <= y < H:
                    for j in range(j0, j1):
                        plane[y, sw * j + xo] += row[i * OW + j]


@njit(parallel=True, fastmath=False, cache=True)
def conv_forward_gemm(x, w2, bias, has_bias, y, ws, KH, KW, sh, sw, ph, pw, dh, dw, groups):
    """y (B, O, P) = w2 (O, Kg) @ cols[b] per group (+ bias); ws (threads, C*KH*KW, P)."""
    B, C, H, W = x.shape
    O, Kg = w2.shape
    Og = O // groups
    OH = (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1
    for b in prange(B):
        cols = ws[get_thread_id()]  # this thread's buffer: no allocation per image
        for c in range(C):
            _im2col_plane(x[b, c], cols[c * KH * KW:(c + 1) * KH * KW], KH, KW, sh, sw, ph, pw,
                          dh, dw, OH, OW)
        yb = y[b]
        for g in range(groups):
            np.dot(w2[g * Og:(g + 1) * Og], cols[g * Kg:(g + 1) * Kg], yb[g * Og:(g + 1) * Og])
        if has_bias:
            for o in range(O):
                yb[o] += bias[o]


@njit(parallel=True, fastmath=False, cache=True)
def conv_forward_direct(x, w, bias, has_bias, y, sh, sw, ph, pw, dh, dw, groups):
    """y[b, o] = bias[o] + sum of in-bounds taps only: the equation's loop, vectorised along the
    output row. The driver uses it where zero padding must not meet a non-finite weight."""
    B, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    OH, OW = y.shape[2], y.shape[3]
    Og = O // groups
    for bo in prange(B * O):
        b, o = bo // O, bo % O
        q = o // Og
        out = y[b, o]
        out[:] = bias[o] if has_bias else 0.0
        for c in range(Cg):
            plane = x[b, q * Cg + c]
            for m in range(KH):
                for n in range(KW):
                    k = w[o, c, m, n]
                    j0, j1 = _valid_range(sw, pw, dw, n, W, OW)
                    xo = dw * n - pw
                    for i in range(OH):
                        yy = sh * i - ph + dh * m
                        if 0 <= yy < H:
                            for j in range(j0, j1):
                                out[i, j] += k * plane[yy, sw * j + xo]


@njit(parallel=True, fastmath=False, cache=True)
def conv_backward_gemm(gy, x, w2, dx, dwt, ws, dws, tmp, need_dx, need_dw, KH, KW, sh, sw, ph, pw,
                       dh, dw, groups):
    """dwt[t] += dY[b] @ cols[b]^T per thread t (caller sums); dx[b] = col2im(w2^T @ dY[b])."""
    B, C, H, W = x.shape
    O, Kg = w2.shape
    Og = O // groups
    OH = (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1
    for b in prange(B):
        t = get_thread_id()
        gb = gy[b]
        if need_dw:
            cols = ws[t]
            for c in range(C):
                _im2col_plane(x[b, c], cols[c * KH * KW:(c + 1) * KH * KW], KH, KW, sh, sw, ph,
                              pw, dh, dw, OH, OW)
            for g in range(groups):
                np.dot(gb[g * Og:(g + 1) * Og], cols[g * Kg:(g + 1) * Kg].T, tmp[t])
                dwt[t, g * Og:(g + 1) * Og] += tmp[t]
        if need_dx:
            dcols = dws[t]
            for g in range(groups):
                np.dot(w2[g * Og:(g + 1) * Og].T, gb[g * Og:(g + 1) * Og], dcols[g * Kg:(g + 1) * Kg])
            for c in range(C):
                _col2im_plane(dcols[c * KH * KW:(c + 1) * KH * KW], dx[b, c], KH, KW, sh, sw, ph,
                              pw, dh, dw, OH, OW)


@njit(parallel=True, fastmath=False, cache=True)
def max_pool2d(x, z, idx, KH, KW, sh, sw, ph, pw, dh, dw):
    """z, idx <- max and flat argmax of each (dilated) window; NaN wins, -1 / -inf for a window
    without an in-bounds element."""
    B, C, H, W = x.shape
    OH, OW = z.shape[2], z.shape[3]
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        for i in range(OH):
            for j in range(OW):
                best = -np.inf
                arg = -1
                for m in range(KH):
                    y = sh * i - ph + dh * m
                    if y < 0 or y >= H:
                        continue
                    for n in range(KW):
                        xx = sw * j - pw + dw * n
                        if 0 <= xx < W:
                            v = x[b, c, y, xx]
                            if arg < 0 or v > best or v != v:
                                best = v
                                arg = y * W + xx
                z[b, c, i, j] = best
                idx[b, c, i, j] = arg


@njit(parallel=True, fastmath=False, cache=True)
def max_pool2d_backward(dz, idx, dx):
    B, C, H, W = dx.shape
    OH, OW = dz.shape[2], dz.shape[3]
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        dx[b, c] = 0
        for i in range(OH):
            for j in range(OW):
                k = idx[b, c, i, j]
                if 0 <= k < H * W:  # -1: a window without an in-bounds element
                    dx[b, c, k // W, k % W] += dz[b, c, i, j]


@njit(inline="always")
def _avg_window(i, K, S, P, N):
    """Clipped window [lo, hi) of output i and its size counting padding (not the overhang)."""
    start = S * i - P
    end = min(start + K, N + P)
    return max(start, 0), min(end, N), end - start


@njit(inline="always")
def _avg_divisor(y0, y1, x0, x1, size, count_include_pad, divisor):
    if divisor != 0:
        return divisor
    return size if count_include_pad else (y1 - y0) * (x1 - x0)


@njit(parallel=True, fastmath=False, cache=True)
def avg_pool2d(x, z, KH, KW, sh, sw, ph, pw, count_include_pad, divisor):
    """z <- window sums over the divisor (divisor 0: the window size, see the reference)."""
    B, C, H, W = x.shape
    OH, OW = z.shape[2], z.shape[3]
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        for i in range(OH):
            y0, y1, hs = _avg_window(i, KH, sh, ph, H)
            for j in range(OW):
                x0, x1, ws = _avg_window(j, KW, sw, pw, W)
                s = 0.0
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        s += x[b, c, y, xx]
                if y0 >= y1 or x0 >= x1:
                    z[b, c, i, j] = 0.0
                else:
                    z[b, c, i, j] = s / _avg_divisor(y0, y1, x0, x1, hs * ws,
                                                     count_include_pad, divisor)


@njit(parallel=True, fastmath=False, cache=True)
def avg_pool2d_backward(dz, dx, KH, KW, sh, sw, ph, pw, count_include_pad, divisor):
    B, C, H, W = dx.shape
    OH, OW = dz.shape[2], dz.shape[3]
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        dx[b, c] = 0
        for i in range(OH):
            y0, y1, hs = _avg_window(i, KH, sh, ph, H)
            for j in range(OW):
                x0, x1, ws = _avg_window(j, KW, sw, pw, W)
                if y0 >= y1 or x0 >= x1:
                    continue
                g = dz[b, c, i, j] / _avg_divisor(y0, y1, x0, x1, hs * ws, count_include_pad,
                                                  divisor)
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        dx[b, c, y, xx] += g
