# ALS half-step: per row solve (Y^T C_u Y + reg I) x_u = Y^T C_u p_u (Cholesky, or CG warm-started), MF-SGD epochs, the
# loss terms, the ratings' check and transpose pass, and top-K ranking metrics.
# Fast: prange over blocks of rows (dynamic-ish balance for power-law rows), per-block scratch allocated once, f innermost;
# CG forms its first residual in one gather pass and the dense YtY products as contiguous axpys.
from __future__ import annotations

import numpy as np
from numba import njit, prange

_BLOCKS_PER_THREAD = 16  # many small blocks so power-law rows balance across threads


@njit(cache=True, inline="always")
def _cholesky_solve(A, b, x):
    f = A.shape[0]
    for i in range(f):  # in-place A = L L^T, lower triangle
        for j in range(i + 1):
            s = A[i, j]
            for k in range(j):
                s -= A[i, k] * A[j, k]
            A[i, j] = np.sqrt(s) if i == j else s / A[j, j]
    for i in range(f):
        s = b[i]
        for k in range(i):
            s -= A[i, k] * x[k]
        x[i] = s / A[i, i]
    for i in range(f - 1, -1, -1):
        s = x[i]
        for k in range(i + 1, f):
            s -= A[k, i] * x[k]
        x[i] = s / A[i, i]


@njit(cache=True, inline="always")
def _implicit_matvec(YtY, Y, indices, data, start, end, reg, alpha, p, out):
    # out = (YtY + reg I) p + sum_i (c_i - 1)(y_i . p) y_i, with c_i - 1 = alpha r; the dense part
    # as axpys over rows of the symmetric YtY (contiguous, no reductions)
    f = p.shape[0]
    for a in range(f):
        out[a] = reg * p[a]
    for d in range(f):
        pd = p[d]
        for a in range(f):
            out[a] += pd * YtY[d, a]
    for k in range(start, end):
        i = indices[k]
        s = (p[0] - p[0])
        for d in range(f):
            s += Y[i, d] * p[d]
        s *= alpha * data[k]
        for d in range(f):
            out[d] += s * Y[i, d]


@njit(cache=True, inline="always")
def _implicit_residual(YtY, Y, indices, data, start, end, reg, alpha, x, r):
    # r = b - A x in one gather of the row's y_i: b = sum c p y, A x as in _implicit_matvec
    f = x.shape[0]
    for a in range(f):
        r[a] = -reg * x[a]
    for d in range(f):
        xd = x[d]
        for a in range(f):
            r[a] -= xd * YtY[d, a]
    for k in range(start, end):
        i = indices[k]
        v = data[k]
        s = (x[0] - x[0])
        for d in range(f):
            s += Y[i, d] * x[d]
        coef = ((1 + alpha * v) if v > 0 else 0 * v) - alpha * v * s
        for d in range(f):
            r[d] += coef * Y[i, d]


@njit(parallel=True, cache=True)
def als_half_step(indptr, indices, data, Y, YtY, X, reg, alpha, cg_steps, implicit, exact):
    n, f = X.shape
    dt = X.dtype
    reg = X.dtype.type(reg)
    alpha = X.dtype.type(alpha)
    n_blocks = min(n, 64 * _BLOCKS_PER_THREAD)
    for blk in prange(n_blocks):
        A = np.empty((f, f), dtype=dt)
        b = np.empty(f, dtype=dt)
        r = np.empty(f, dtype=dt)
        p = np.empty(f, dtype=dt)
        Ap = np.empty(f, dtype=dt)
        for u in range(blk * n // n_blocks, (blk + 1) * n // n_blocks):
            start, end = indptr[u], indptr[u + 1]
            if implicit and not exact:
                x = X[u]
                _implicit_residual(YtY, Y, indices, data, start, end, reg, alpha, x, r)
                rs_old = (reg - reg)
                for a in range(f):
                    p[a] = r[a]
                    rs_old += r[a] * r[a]
                for _ in range(cg_steps):
                    if rs_old < 1e-20:
                        break
                    _implicit_matvec(YtY, Y, indices, data, start, end, reg, alpha, p, Ap)
                    pAp = (reg - reg)
                    for a in range(f):
                        pAp += p[a] * Ap[a]
                    step = rs_old / pAp
                    rs_new = (reg - reg)
                    for a in range(f):
                        x[a] += step * p[a]
                        r[a] -= step * Ap[a]
                        rs_new += r[a] * r[a]
                    for a in range(f):
                        p[a] = r[a] + (rs_new / rs_old) * p[a]
                    rs_old = rs_new
                continue
            b[:] = 0
            for k in range(start, end):
                i = indices[k]
                t = data[k] if not implicit else ((1 + alpha * data[k]) if data[k] > 0 else 0 * data[k])
                for a in range(f):
                    b[a] += t * Y[i, a]
            for a in range(f):
                for d in range(a + 1):
                    A[a, d] = YtY[a, d] if implicit else 0
                A[a, a] += reg
            for k in range(start, end):
                i = indices[k]
                w = alpha * data[k] if implicit else 1 + 0 * data[k]
                for a in range(f):
                    wa = w * Y[i, a]
                    for d in range(a + 1):
                        A[a, d] += wa * Y[i, d]
            _cholesky_solve(A, b, X[u])


@njit(parallel=True, cache=True)
def mf_sgd_epoch(rows, cols, vals, order, U, V, lr, reg, deterministic):
    # Hogwild: chunks of the shuffled order run in parallel without locks; deterministic -> 1 chunk.
    f = U.shape[1]
    lr = U.dtype.type(lr)
    reg = U.dtype.type(reg)
    n = order.shape[0]
    n_chunks = 1 if deterministic else min(n, 64)
    for c in prange(n_chunks):
        for q in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            k = order[q]
            i, j = rows[k], cols[k]
            e = vals[k]
            for a in range(f):
                e -= U[i, a] * V[j, a]
            for a in range(f):
                u_a = U[i, a]
                v_a = V[j, a]
                U[i, a] = u_a + lr * (e * v_a - reg * u_a)
                V[j, a] = v_a + lr * (e * u_a - reg * v_a)


# Result codes of csr_check, shared with csrc/mf_csr.hpp and pyml/reference/mf.py.
@njit(cache=True)
def csr_check(indptr, indices, data, n_cols, nonneg):
    # One read of a user's CSR matrix: (code, position, canonical, max |value|).
    n = indptr.shape[0] - 1
    stored = min(indices.shape[0], data.shape[0])
    canonical = True
    max_abs = 0.0
    if n < 0 or indptr[0] != 0:
        return 1, 0, canonical, max_abs
    for u in range(n):
        start, end = indptr[u], indptr[u + 1]
        if end < start:
            return 2, u, canonical, max_abs
        if end > stored:
            return 3, u, canonical, max_abs
        prev = -1
        for k in range(start, end):
            j = indices[k]
            v = float(data[k])
            if j < 0 or j >= n_cols:
                return 4, k, canonical, max_abs
            if not np.isfinite(v):
                return 5, k, canonical, max_abs
            if nonneg and v < 0:
                return 6, k, canonical, max_abs
            canonical = canonical and j > prev
            prev = j
            max_abs = max(max_abs, abs(v))
    return 0, 0, canonical, max_abs


@njit(cache=True)
def csr_transpose(indptr, indices, data, n_cols):
    # Counting sort by column; rows visited in order, so every transposed row comes out sorted.
    n = indptr.shape[0] - 1
    nnz = indptr[n]
    tptr = np.zeros(n_cols + 1, dtype=np.int64)
    tidx = np.empty(nnz, dtype=np.int32)
    tval = np.empty(nnz, dtype=data.dtype)
    for k in range(nnz):
        tptr[indices[k] + 1] += 1
    for j in range(n_cols):
        tptr[j + 1] += tptr[j]
    nxt = tptr[:n_cols].copy()
    for u in range(n):
        for k in range(indptr[u], indptr[u + 1]):
            dst = nxt[indices[k]]
            nxt[indices[k]] += 1
            tidx[dst] = u
            tval[dst] = data[k]
    return tptr, tidx, tval


@njit(cache=True)
def _in_sorted(a, lo, end, x):
    hi = end
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and a[lo] == x


@njit(cache=True)
def ranking_metrics(ids, users, test_indptr, test_indices, n_items):
    # Sums over the test users of (hits, min(K, |test|), AP, nDCG, AUC) and the user count;
    # test rows are sorted, so membership is a binary search.
    K = ids.shape[1]
    cg = np.empty(K)
    for i in range(K):
        cg[i] = 1.0 / np.log2(i + 2.0)
    cg_sum = np.cumsum(cg)
    out = np.zeros(6)
    for q in range(users.shape[0]):
        u = users[q]
        lo, hi = test_indptr[u], test_indptr[u + 1]
        n_pos = hi - lo
        if n_pos == 0:
            continue
        n_neg = n_items - n_pos
        out[1] += min(K, n_pos)
        idcg = cg_sum[min(K, n_pos) - 1]
        hit = 0.0
        miss = 0.0
        ap = 0.0
        auc = 0.0
        for i in range(K):
            if ids[q, i] >= 0 and _in_sorted(test_indices, lo, hi, ids[q, i]):
                out[0] += 1.0
                hit += 1.0
                ap += hit / (i + 1)
                out[3] += cg[i] / idcg
            else:
                miss += 1.0
                auc += hit
        auc += ((hit + n_pos) / 2.0) * (n_neg - miss)
        out[2] += ap / min(K, n_pos)
        out[4] += auc / (n_pos * n_neg) if n_neg > 0 else 1.0
        out[5] += 1.0
    return out


@njit(parallel=True, cache=True)
def als_loss_terms(indptr, indices, data, X, Y, alpha, implicit):
    # sum over stored entries of c (p - s)^2 - s^2 (implicit) or (r - s)^2, s = x_u.y_i (float64)
    n, f = X.shape
    total = 0.0
    for u in prange(n):
        acc = 0.0
        for k in range(indptr[u], indptr[u + 1]):
            i = indices[k]
            s = X[u, 0] - X[u, 0]
            for a in range(f):
                s += X[u, a] * Y[i, a]
            s64 = float(s)
            r = float(data[k])
            if implicit:
                p = 1.0 if r > 0 else 0.0
                acc += (1.0 + alpha * r) * (p - s64) ** 2 - s64 * s64
            else:
                acc += (r - s64) ** 2
        total += acc
    return total
