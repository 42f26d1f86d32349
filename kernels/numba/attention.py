# Flash attention: out = softmax(Q K^T * scale + M) V with lse, and backward (dQ, dK, dV).
# Fast: prange over (batch*head, tile) tasks; keys in tiles with an online softmax, scores never stored whole.
"""Numba kernels behind pyml.attention (driver: pyml/_attention_driver.py).

Shapes: q (B,H,Nq,D), k (B,Hk,Nk,D), v (B,Hk,Nk,Dv) with H a multiple of Hk (grouped-query
attention: query head h reads key/value head h // (H/Hk)), mask (any size; element (b,h,i,j) at
b*msb + h*msh + i*msq + j when has_mask), out (B,H,Nq,Dv), lse/delta (B,H,Nq), dq (B,H,Nq,D),
dk/dv (B,H,Nk,.) per query head (the driver sums a group). Causal hides key j > i; tiles
wholly above the diagonal are skipped. Dropout (dropout_p > 0) multiplies P_ij by 1/(1-p) or 0
from the counter hash of pyml.reference.attention.dropout_keep. Outputs are written in place.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

BQ = 16
BK = 64
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(inline="always")
def _keep(seed, index, threshold):
    """SplitMix64 of the score's counter (same bits as reference.attention.dropout_keep); every
    operand is uint64 so Numba never promotes to float64."""
    z = seed + (np.uint64(index) + np.uint64(1)) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)) >= threshold


@njit(inline="always")
def _drop(seed, threshold, inv, bh, i, j, Nq, Nk):
    """The dropout factor of score (i, j) of head bh: 1 without dropout, else 1/(1-p) or 0."""
    if threshold == 0:
        return 1.0
    return inv if _keep(seed, (bh * Nq + i) * Nk + j, threshold) else 0.0


@njit(inline="always")
def _score(q, k, mask, b, h, hk, i, j, msb, msh, msq, has_mask, causal, scale):
    """S_ij of query head h (key/value head hk)."""
    if causal and j > i:
        return -np.inf
    s = 0.0
    for d in range(q.shape[3]):
        s += q[b, h, i, d] * k[b, hk, j, d]
    s = s * scale
    if has_mask:
        s += mask[b * msb + h * msh + i * msq + j]
    return s


@njit(parallel=True, fastmath=False, cache=True)
def attention_forward(q, k, v, mask, msb, msh, msq, has_mask, causal, scale, dropout_p, seed,
                      out, lse):
    B, H, Nq, D = q.shape
    Nk, Dv, g = k.shape[2], v.shape[3], H // k.shape[1]
    threshold = np.uint64(int(dropout_p * 16777216.0))
    inv = 1.0 / (1.0 - dropout_p)
    seed = np.uint64(seed)
    ntq = (Nq + BQ - 1) // BQ
    for task in prange(B * H * ntq):
        bh, t = divmod(np.int64(task), ntq)
        b, h = divmod(bh, H)
        hk = h // g
        i0 = t * BQ
        i1 = min(Nq, i0 + BQ)
        acc = np.zeros((BQ, Dv), dtype=q.dtype)
        s = np.empty(BK, dtype=q.dtype)
        m = np.full(BQ, -np.inf, dtype=q.dtype)
        l = np.zeros(BQ, dtype=q.dtype)
        kend = min(Nk, i1) if causal else Nk
        for j0 in range(0, kend, BK):
            j1 = min(kend, j0 + BK)
            for i in range(i0, i1):
                r = i - i0
                mx = m[r]
                for j in range(j0, j1):
                    s[j - j0] = _score(q, k, mask, b, h, hk, i, j, msb, msh, msq, has_mask, causal, scale)
                    mx = max(mx, s[j - j0])
                if mx == -np.inf:
                    continue
                alpha = math.exp(m[r] - mx)
                for d in range(Dv):
                    acc[r, d] *= alpha
                tot = 0.0
                if threshold == 0:  # its own loop: a dropout branch per score costs ~9% here
                    for j in range(j0, j1):
                        p = math.exp(s[j - j0] - mx)
                        tot += p
                        for d in range(Dv):
                            acc[r, d] += p * v[b, hk, j, d]
                else:
                    for j in range(j0, j1):
                        p = math.exp(s[j - j0] - mx)
                        tot += p  # the normaliser (and lse) of the undropped weights
                        p *= _drop(seed, threshold, inv, bh, i, j, Nq, Nk)
                        for d in range(Dv):
                            acc[r, d] += p * v[b, hk, j, d]
                l[r] = l[r] * alpha + tot
                m[r] = mx
        for i in range(i0, i1):
            r = i - i0
            if l[r] > 0:
                for d in range(Dv):
                    out[b, h, i, d] = acc[r, d] / l[r]
                lse[b, h, i] = m[r] + math.log(l[r])
            else:
                for d in range(Dv):
                    out[b, h, i, d] = 0.0
                lse[b, h, i] = -np.inf


@njit(inline="always")
def _dscore(q, k, v, dout, lse, delta, mask, b, h, hk, i, j, msb, msh, msq, has_mask, causal, scale,
            z):
    """(P_ij Z_ij, dS_ij) recomputed from the scores and the saved log-sum-exp; z = Z_ij is the
    dropout factor (1 without dropout): dS = P (Z dP~ - Delta) with dP~ = dO V^T."""
    L = lse[b, h, i]
    if L == -np.inf:
        return 0.0, 0.0
    s = _score(q, k, mask, b, h, hk, i, j, msb, msh, msq, has_mask, causal, scale)
    p = math.exp(s - L)
    dp = 0.0
    for d in range(v.shape[3]):
        dp += dout[b, h, i, d] * v[b, hk, j, d]
    return p * z, p * (z * dp - delta[b, h, i])


@njit(parallel=True, fastmath=False, cache=True)
def attention_backward(dout, q, k, v, lse, delta, mask, msb, msh, msq, has_mask, causal, scale,
                       dropout_p, seed, dq, dk, dv):
    B, H, Nq, D = q.shape
    Nk, Dv, g = k.shape[2], v.shape[3], H // k.shape[1]
    threshold = np.uint64(int(dropout_p * 16777216.0))
    inv = 1.0 / (1.0 - dropout_p)
    seed = np.uint64(seed)
    # pass 1: each task owns a key tile, so dK and dV are written without races
    ntk = (Nk + BK - 1) // BK
    for task in prange(B * H * ntk):
        bh, t = divmod(np.int64(task), ntk)
        b, h = divmod(bh, H)
        hk = h // g
        j0 = t * BK
        j1 = min(Nk, j0 + BK)
        for j in range(j0, j1):
            for d in range(D):
                dk[b, h, j, d] = 0.0
            for d in range(Dv):
                dv[b, h, j, d] = 0.0
        istart = j0 if causal else 0
        for i in range(istart, Nq):
            for j in range(j0, j1):
                z = _drop(seed, threshold, inv, bh, i, j, Nq, Nk) if threshold else 1.0
                p, ds = _dscore(q, k, v, dout, lse, delta, mask, b, h, hk, i, j, msb, msh, msq,
                                has_mask, causal, scale, z)
                if p == 0.0 and ds == 0.0:
                    continue
                for d in range(Dv):
                    dv[b, h, j, d] += p * dout[b, h, i, d]
                for d in range(D):
                    dk[b, h, j, d] += ds * scale * q[b, h, i, d]
    # pass 2: each task owns a query tile (dQ)
    ntq = (Nq + BQ - 1) // BQ
    for task in prange(B * H * ntq):
        bh, t = divmod(np.int64(task), ntq)
        b, h = divmod(bh, H)
        hk = h // g
        i0 = t * BQ
        i1 = min(Nq, i0 + BQ)
        for i in range(i0, i1):
            for d in range(D):
                dq[b, h, i, d] = 0.0
            jend = min(Nk, i + 1) if causal else Nk
            for j in range(jend):
                z = _drop(seed, threshold, inv, bh, i, j, Nq, Nk) if threshold else 1.0
                p, ds = _dscore(q, k, v, dout, lse, delta, mask, b, h, hk, i, j, msb, msh, msq,
                                has_mask, causal, scale, z)
                for d in range(D):
                    dq[b, h, i, d] += ds * scale * k[b, hk, j, d]
