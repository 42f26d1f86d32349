# k-means / k-medians kernels: argmin_i ||x - mu_i||^2 (= ||c-m||^2 - 2 (x-m).(c-m) + ||x-m||^2, m = mean of C),
# argmin_i ||x - m_i||_1, weighted centre sums / coordinate medians, greedy k-means++ steps.
# Fast: prange over point tiles, BLAS dot per tile + argmin vectorised across points.
from __future__ import annotations

import numpy as np
from numba import njit, prange

# Points per parallel task: enough work to amortise the scheduling, small enough for 2-64 threads.
_BLOCK = 256
# Partial-sum slots of the update (numba.get_num_threads() inside a kernel defeats cache=True).
_SLOTS = 16


@njit(parallel=True, fastmath=False, cache=True)
def kmeans_assign(X, C):
    n, d = X.shape
    k = C.shape[0]
    # Shift by the mean of the centres: ||c||^2 - 2 x.c cancels when the data share a large
    # offset (float32 at 1e4: most labels wrong); (x-m).(c-m) keeps the scale of the spread.
    m = np.zeros(d, np.float64)
    for i in range(k):
        for t in range(d):
            m[t] += C[i, t]
    mt = (m / k).astype(X.dtype)
    Cc = np.empty((k, d), X.dtype)
    cnorm = np.empty(k, X.dtype)
    for i in range(k):
        s = 0.0
        for t in range(d):
            v = C[i, t] - mt[t]
            Cc[i, t] = v
            s += v * v
        cnorm[i] = s
    labels = np.empty(n, np.int32)
    dist = np.empty(n, X.dtype)
    nblocks = (n + _BLOCK - 1) // _BLOCK
    for b in prange(nblocks):
        j0 = b * _BLOCK
        j1 = min(n, j0 + _BLOCK)
        Xc = np.empty((j1 - j0, d), X.dtype)  # the tile, shifted: one pass in cache
        for r in range(j1 - j0):
            for t in range(d):
                Xc[r, t] = X[j0 + r, t] - mt[t]
        # G[i, r] = (c_i - m).(x_r - m) through BLAS (single-threaded meanwhile, pyml._blas)
        G = np.dot(Cc, Xc.T)
        best = np.full(j1 - j0, np.inf, X.dtype)
        besti = np.zeros(j1 - j0, np.int32)
        for i in range(k):
            ci = cnorm[i]
            for r in range(j1 - j0):  # across points: compare + select, vectorised
                v = ci - 2 * G[i, r]
                if v < best[r]:
                    best[r] = v
                    besti[r] = i
        for r in range(j1 - j0):
            j = j0 + r
            # the exact distance to the chosen centre, accumulated in float64
            s = 0.0
            for t in range(d):
                diff = np.float64(X[j, t]) - np.float64(C[besti[r], t])
                s += diff * diff
            labels[j] = besti[r]
            dist[j] = s
    return labels, dist


@njit(parallel=True, fastmath=False, cache=True)
def kmedians_assign(X, C):
    n, d = X.shape
    k = C.shape[0]
    labels = np.empty(n, np.int32)
    dist = np.empty(n, X.dtype)
    for j in prange(n):
        best, best_i = np.inf, 0
        for i in range(k):
            s = 0.0
            for t in range(d):
                s += abs(X[j, t] - C[i, t])
            if s < best:
                best, best_i = s, i
        labels[j] = best_i
        dist[j] = best
    return labels, dist


@njit(parallel=False, fastmath=False, cache=True)
def _relocate_empty(w, labels, dist, k):
    # Same rule as pyml.reference.kmeans.relocate_empty (serial: O(n) per empty cluster, rare).
    n = labels.shape[0]
    W = np.zeros(k, np.float64)
    for j in range(n):
        W[labels[j]] += w[j]
    lab = labels.copy()
    prev_d, prev_j = np.inf, -1
    for i in range(k):
        if W[i] != 0.0:
            continue
        best_d, best_j = -np.inf, -1
        for j in range(n):
            dj = np.float64(dist[j])
            if w[j] > 0.0 and (dj < prev_d or (dj == prev_d and j > prev_j)) and dj > best_d:
                best_d, best_j = dj, j
        if best_j < 0:
            break
        lab[best_j] = i
        prev_d, prev_j = best_d, best_j
    return lab


@njit(parallel=True, fastmath=False, cache=True)
def kmeans_update(X, w, labels, dist, C):
    n, d = X.shape
    k = C.shape[0]
    lab = _relocate_empty(w, labels, dist, k)
    nt = min(_SLOTS, max(1, n // _BLOCK))
    # per-thread float64 partial sums, reduced after the parallel loop (no atomics)
    S = np.zeros((nt, k, d), np.float64)
    W = np.zeros((nt, k), np.float64)
    for p in prange(nt):
        for j in range(p * n // nt, (p + 1) * n // nt):
            i = lab[j]
            wj = w[j]
            W[p, i] += wj
            for t in range(d):
                S[p, i, t] += wj * X[j, t]
    mu = C.copy()
    for i in range(k):
        tw = 0.0
        for p in range(nt):
            tw += W[p, i]
        if tw > 0.0:
            for t in range(d):
                s = 0.0
                for p in range(nt):
                    s += S[p, i, t]
                mu[i, t] = s / tw
    return mu


@njit(parallel=True, fastmath=False, cache=True)
def kmedians_update(X, w, labels, dist, C):
    n, d = X.shape
    k = C.shape[0]
    lab = _relocate_empty(w, labels, dist, k)
    # members of each cluster, contiguous (counting sort by label, stable)
    start = np.zeros(k + 1, np.int64)
    for j in range(n):
        start[lab[j] + 1] += 1
    for i in range(k):
        start[i + 1] += start[i]
    members = np.empty(n, np.int64)
    fill = start[:k].copy()
    for j in range(n):
        members[fill[lab[j]]] = j
        fill[lab[j]] += 1
    m = C.copy()
    for i in prange(k):
        cnt = start[i + 1] - start[i]
        if cnt == 0:
            continue
        idx = members[start[i]:start[i + 1]]
        half = 0.0
        for q in range(cnt):
            half += w[idx[q]]
        if half <= 0.0:
            continue
        half *= 0.5
        vals = np.empty(cnt, X.dtype)
        for t in range(d):
            for q in range(cnt):
                vals[q] = X[idx[q], t]
            order = np.argsort(vals, kind="mergesort")
            acc = 0.0
            med = vals[order[cnt - 1]]
            for q in range(cnt):
                acc += w[idx[order[q]]]
                if acc >= half:
                    med = vals[order[q]]
                    break
            m[i, t] = med
    return m


@njit(parallel=True, fastmath=False, cache=True)
def kmeans_plusplus_step(X, w, D2, candidates):
    n, d = X.shape
    T = candidates.shape[0]
    nblocks = (n + _BLOCK - 1) // _BLOCK
    # per-block partial potentials, summed in block order: the same bits for any thread count
    part = np.zeros((nblocks, T), np.float64)
    for b in prange(nblocks):
        for j in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
            for q in range(T):
                c = candidates[q]
                s = 0.0
                for t in range(d):
                    diff = np.float64(X[j, t]) - np.float64(X[c, t])
                    s += diff * diff
                part[b, q] += w[j] * min(D2[j], s)
    best, best_pot = 0, np.inf
    for q in range(T):
        pot = 0.0
        for b in range(nblocks):
            pot += part[b, q]
        if pot < best_pot:
            best, best_pot = q, pot
    c = candidates[best]
    new = np.empty(n, np.float64)
    for j in prange(n):
        s = 0.0
        for t in range(d):
            diff = np.float64(X[j, t]) - np.float64(X[c, t])
            s += diff * diff
        new[j] = min(D2[j], s)
    return best, best_pot, new
