"""Reference scaled dot-product attention: literally Q K^T, softmax, times V.

Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V  (Vaswani et al. 2017, "Attention Is All You
Need", eq. 1), with an optional additive
mask M (boolean masks are turned into 0 / -inf) and a causal mask (key j visible from
query i only when j <= i, top-left aligned as in torch's ``is_causal``).

Backward (chain rule through the softmax, as derived by Dao et al. 2022, FlashAttention):
dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)), dQ = scale dS K,
dK = scale dS^T Q.

Dropout of the attention weights (Srivastava et al. 2014) with a counter-based mask, and
grouped-query attention (Ainslie et al. 2023: H query heads share H/g key/value heads).

Positional encoding (Vaswani et al. 2017, section 3.5): PE(pos, 2i) = sin(pos / 10000^(2i/d)),
PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).

The oracle: slow and obvious, NumPy only as the array container and for the two
matrix products the equation names.
"""
from __future__ import annotations

import math

import numpy as np


MASK64 = (1 << 64) - 1


def dropout_keep(seed, index, p):
    """Whether dropout keeps score ``index`` = ((b*H + h)*Nq + i)*Nk + j: a SplitMix64 hash
    (Steele, Lea & Flood 2014) of the counter, so every backend and the backward draw the same
    mask without storing it (as FlashAttention does with Philox). Kept when the hash's top 24
    bits are >= floor(p * 2^24): probability 1 - p up to 2^-24."""
    z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return (z >> 40) >= int(p * 16777216.0)


def _scores(Q, K, M, scale, causal, b, h):
    """S = Q K^T * scale + M for one (batch, head), with -inf where causal hides a key."""
    S = (Q @ K.T) * scale
    Nq, Nk = S.shape
    for i in range(Nq):
        for j in range(Nk):
            if M is not None:
                S[i, j] = S[i, j] + M[b, h, i, j]
            if causal and j > i:
                S[i, j] = -math.inf
    return S


def _softmax_rows(S):
    """Row softmax; a row whose scores are all -inf gives all-zero weights and lse -inf."""
    P = np.zeros_like(S)
    lse = np.full(S.shape[0], -np.inf, dtype=S.dtype)
    for i in range(S.shape[0]):
        m = max(S[i])
        if m == -math.inf:
            continue
        e = [math.exp(s - m) for s in S[i]]
        z = sum(e)
        for j in range(S.shape[1]):
            P[i, j] = e[j] / z
        lse[i] = m + math.log(z)
    return P, lse


def _dropout(P, p, seed, b, h, H):
    """Z with Z_ij = 1/(1-p) where dropout keeps score (i, j) of head (b, h), else 0."""
    Nq, Nk = P.shape
    Z = np.ones_like(P)
    if p > 0:
        for i in range(Nq):
            for j in range(Nk):
                keep = dropout_keep(seed, ((b * H + h) * Nq + i) * Nk + j, p)
                Z[i, j] = 1.0 / (1.0 - p) if keep else 0.0
    return Z


def _additive(mask, shape, dtype):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        mask = np.where(mask, 0.0, -np.inf)
    return np.broadcast_to(mask.astype(dtype), shape)


def attention_forward(q, k, v, mask=None, causal=False, scale=None, dropout_p=0.0, seed=0):
    """out, lse for q (B,H,Nq,D), k (B,Hk,Nk,D), v (B,Hk,Nk,Dv), computed in q's dtype.

    Grouped-query attention when Hk < H: query head h reads key/value head h // (H/Hk).
    Dropout (Srivastava et al. 2014) of the attention weights: out = (P * Z) V with Z from
    :func:`dropout_keep`; lse is that of the undropped P."""
    B, H, Nq, D = q.shape
    Nk, Dv, g = k.shape[2], v.shape[3], H // k.shape[1]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    M = _additive(mask, (B, H, Nq, Nk), q.dtype)
    out = np.zeros((B, H, Nq, Dv), q.dtype)
    lse = np.zeros((B, H, Nq), q.dtype)
    for b in range(B):
        for h in range(H):
            S = _scores(q[b, h], k[b, h // g], M, scale, causal, b, h)
            P, lse[b, h] = _softmax_rows(S)
            out[b, h] = (P * _dropout(P, dropout_p, seed, b, h, H)) @ v[b, h // g]
    return out, lse


def attention_backward(dout, q, k, v, mask=None, causal=False, scale=None, dropout_p=0.0, seed=0):
    """(dq, dk, dv) of sum(out * dout) with respect to q, k, v (dk, dv summed over the query
    heads that share a key/value head)."""
    B, H, Nq, D = q.shape
    Nk, g = k.shape[2], H // k.shape[1]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    M = _additive(mask, (B, H, Nq, Nk), q.dtype)
    dq = np.zeros(q.shape, q.dtype)
    dk, dv = np.zeros(k.shape, q.dtype), np.zeros(v.shape, q.dtype)
    for b in range(B):
        for h in range(H):
            K, V = k[b, h // g], v[b, h // g]
            S = _scores(q[b, h], K, M, scale, causal, b, h)
            P, _ = _softmax_rows(S)
            Z = _dropout(P, dropout_p, seed, b, h, H)
            dO = dout[b, h]
            dv[b, h // g] += (P * Z).T @ dO
            dP = (dO @ V.T) * Z
            dS = np.zeros_like(P)
            for i in range(Nq):
                Di = sum(dP[i, j] * P[i, j] for j in range(Nk))
                for j in range(Nk):
                    dS[i, j] = P[i, j] * (dP[i, j] - Di)
            dq[b, h] = scale * (dS @ K)
            dk[b, h // g] += scale * (dS.T @ q[b, h])
    return dq, dk, dv


def sinusoidal_positional_encoding(n, d):
    """PE (n, d): PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same angle)."""
    PE = np.zeros((n, d))
    for pos in range(n):
        for c in range(d):
            two_i = c - (c % 2)
            angle = pos / 10000.0 ** (two_i / d)
            PE[pos, c] = math.sin(angle) if c % 2 == 0 else math.cos(angle)
    return PE
