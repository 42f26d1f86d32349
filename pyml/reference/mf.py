"""Matrix factorization, the oracle: plain loops straight from the equations.

Matrix factorization with alternating least squares (Koren, Bell & Volinsky 2009) minimises
J = 1/2 sum_{(i,j) in Omega} (r_ij - u_i^T v_j)^2 + lambda (||U||^2 + ||V||^2). pyml uses the
convention of implicit and Spark: ``reg`` is the lambda of the normal equations
(V_Omega^T V_Omega + reg I) u = V_Omega^T r, i.e. J = 1/2 sum (r - u.v)^2 + 1/2 reg (||U||^2+||V||^2).
Implicit feedback follows Hu, Koren, Volinsky (2008): c = 1 + alpha r, p = 1[r > 0],
(Y^T Y + Y^T (C - I) Y + reg I) x_u = Y^T C p(u).
"""
from __future__ import annotations

import numpy as np


def _cholesky_solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve A x = b for symmetric positive definite A by A = L L^T (textbook loops)."""
    f = A.shape[0]
    L = np.zeros_like(A)
    for i in range(f):
        for j in range(i + 1):
            s = A[i, j]
            for k in range(j):
                s -= L[i, k] * L[j, k]
            L[i, j] = np.sqrt(s) if i == j else s / L[j, j]
    z = np.zeros_like(b)
    for i in range(f):  # L z = b
        s = b[i]
        for k in range(i):
            s -= L[i, k] * z[k]
        z[i] = s / L[i, i]
    x = np.zeros_like(b)
    for i in range(f - 1, -1, -1):  # L^T x = z
        s = z[i]
        for k in range(i + 1, f):
            s -= L[k, i] * x[k]
        x[i] = s / L[i, i]
    return x


def als_half_step(indptr, indices, data, Y, YtY, X, reg, alpha, cg_steps, implicit, exact):
    """Recompute every row x_u of ``X`` (in place) with ``Y`` fixed.

    Row u's interactions are ``indices[indptr[u]:indptr[u+1]]`` with ratings ``data``.
    explicit: A = sum_i y_i y_i^T + reg I, b = sum_i r_ui y_i, x_u = A^{-1} b (exact).
    implicit: A = YtY + sum_i (c_ui - 1) y_i y_i^T + reg I, b = sum_i c_ui p_ui y_i; exact
    solve, or ``cg_steps`` of conjugate gradient warm-started from the current x_u.
    """
    n, f = X.shape
    dt = X.dtype.type
    for u in range(n):
        start, end = indptr[u], indptr[u + 1]
        A = np.zeros((f, f), dtype=X.dtype)
        b = np.zeros(f, dtype=X.dtype)
        for a in range(f):
            A[a, a] = dt(reg)
            if implicit:
                for d in range(f):
                    A[a, d] += YtY[a, d]
        for k in range(start, end):
            i, r = indices[k], data[k]
            c = dt(1) + dt(alpha) * r if implicit else dt(1)
            w = c - dt(1) if implicit else dt(1)   # weight of y_i y_i^T in A
            t = (c if r > 0 else dt(0)) if implicit else r  # weight of y_i in b
            for a in range(f):
                b[a] += t * Y[i, a]
                for d in range(f):
                    A[a, d] += w * Y[i, a] * Y[i, d]
        if not implicit or exact:
            X[u] = _cholesky_solve(A, b)
            continue
        x = X[u].copy()
        r_ = np.array([b[a] - sum(A[a, d] * x[d] for d in range(f)) for a in range(f)],
                      dtype=X.dtype)
        p = r_.copy()
        rs_old = sum(r_[a] * r_[a] for a in range(f))
        for _ in range(cg_steps):
            if rs_old < 1e-20:
                break
            Ap = np.array([sum(A[a, d] * p[d] for d in range(f)) for a in range(f)], dtype=X.dtype)
            step = rs_old / sum(p[a] * Ap[a] for a in range(f))
            for a in range(f):
                x[a] += step * p[a]
                r_[a] -= step * Ap[a]
            rs_new = sum(r_[a] * r_[a] for a in range(f))
            for a in range(f):
                p[a] = r_[a] + (rs_new / rs_old) * p[a]
            rs_old = rs_new
        X[u] = x
    return X


def als_loss(indptr, indices, data, X, Y, reg, alpha, implicit):
    """The objective: explicit 1/2 sum_Omega (r - x.y)^2, implicit 1/2 sum_{all u,i}
    c_ui (p_ui - x_u.y_i)^2 (c = 1, p = 0 off Omega), plus 1/2 reg (||X||^2 + ||Y||^2)."""
    loss = 0.0
    n_rows, n_cols = X.shape[0], Y.shape[0]
    for u in range(n_rows):
        observed = {int(indices[k]): float(data[k]) for k in range(indptr[u], indptr[u + 1])}
        cols = range(n_cols) if implicit else observed.keys()
        for i in cols:
            s = sum(float(X[u, a]) * float(Y[i, a]) for a in range(X.shape[1]))
            if implicit:
                r = observed.get(i, 0.0)
                c, p = 1.0 + alpha * r, 1.0 if r > 0 else 0.0
                loss += 0.5 * c * (p - s) ** 2
            else:
                loss += 0.5 * (observed[i] - s) ** 2
    loss += 0.5 * reg * (float(np.sum(X.astype(np.float64) ** 2)) + float(np.sum(Y.astype(np.float64) ** 2)))
    return loss


def als_loss_terms(indptr, indices, data, X, Y, alpha, implicit):
    """The stored-entry part of :func:`als_loss` with the unobserved cells folded out:
    sum_Omega c (p - s)^2 - s^2 (implicit; the rest is sum_u x_u^T Y^T Y x_u) or
    sum_Omega (r - s)^2 (explicit), s = x_u.y_i."""
    total = 0.0
    for u in range(X.shape[0]):
        for k in range(indptr[u], indptr[u + 1]):
            i, r = indices[k], float(data[k])
            s = float(sum(X[u, a] * Y[i, a] for a in range(X.shape[1])))
            if implicit:
                c, p = 1.0 + alpha * r, 1.0 if r > 0 else 0.0
                total += c * (p - s) ** 2 - s * s
            else:
                total += (r - s) ** 2
    return total


def mf_sgd_epoch(rows, cols, vals, order, U, V, lr, reg, deterministic):
    """One SGD epoch over the observed entries in ``order`` (in place on U, V).

    e = r - u.v; the gradient of 1/2 e^2 + 1/2 reg(|u|^2 + |v|^2) w.r.t. u is -(e v - reg u),
    so u += lr (e v - reg u), v += lr (e u - reg v). An update written u <- u - eta e v has
    the sign wrong (it ascends the error), see the derivation above.
    """
    f = U.shape[1]
    for k in order:
        i, j, r = rows[k], cols[k], vals[k]
        e = r - sum(U[i, a] * V[j, a] for a in range(f))
        for a in range(f):
            u_a, v_a = U[i, a], V[j, a]
            U[i, a] = u_a + lr * (e * v_a - reg * u_a)
            V[j, a] = v_a + lr * (e * u_a - reg * v_a)
    return U, V


# csr_check result codes (the compiled kernels return the same numbers)
OK, INDPTR_START, INDPTR_DECREASES, INDPTR_END, INDEX_RANGE, NOT_FINITE, NEGATIVE = range(7)


def csr_check(indptr, indices, data, n_cols, nonneg):
    """Validate a CSR matrix in one read: returns ``(code, position, canonical, max_abs)``.

    A CSR matrix is valid when indptr starts at 0 and never decreases, every column index is in
    [0, n_cols) and every value is finite (and >= 0 when ``nonneg``); it is canonical when the
    indices of every row strictly increase (sorted, no duplicate entries)."""
    n = len(indptr) - 1
    stored = min(len(indices), len(data))
    canonical, max_abs = True, 0.0
    if n < 0 or indptr[0] != 0:
        return INDPTR_START, 0, canonical, max_abs
    for u in range(n):
        start, end = int(indptr[u]), int(indptr[u + 1])
        if end < start:
            return INDPTR_DECREASES, u, canonical, max_abs
        if end > stored:
            return INDPTR_END, u, canonical, max_abs
        prev = -1
        for k in range(start, end):
            j, v = int(indices[k]), float(data[k])
            if not 0 <= j < n_cols:
                return INDEX_RANGE, k, canonical, max_abs
            if not np.isfinite(v):
                return NOT_FINITE, k, canonical, max_abs
            if nonneg and v < 0:
                return NEGATIVE, k, canonical, max_abs
            canonical = canonical and j > prev
            prev = j
            max_abs = max(max_abs, abs(v))
    return OK, 0, canonical, max_abs


def csr_transpose(indptr, indices, data, n_cols):
    """(indptr, indices, data) of the transpose: entry (u, j, v) becomes (j, u, v), rows sorted."""
    rows = [[] for _ in range(n_cols)]
    for u in range(len(indptr) - 1):
        for k in range(int(indptr[u]), int(indptr[u + 1])):
            rows[int(indices[k])].append((u, data[k]))
    tptr = np.zeros(n_cols + 1, dtype=np.int64)
    tidx, tval = [], []
    for j in range(n_cols):
        tptr[j + 1] = tptr[j] + len(rows[j])
        for u, v in rows[j]:
            tidx.append(u)
            tval.append(v)
    return tptr, np.array(tidx, dtype=np.int32), np.array(tval, dtype=np.asarray(data).dtype)


def ranking_metrics(ids, users, test_indptr, test_indices, n_items):
    """Sums over the test users of the top-K metrics of implicit.evaluation: hits,
    sum min(K, |T_u|), AP@K, nDCG@K (gain 1/log2(rank + 1) over the ideal), limited AUC, and the
    number of users with test items. ``ids[q]`` ranks items for user ``users[q]`` (-1: none)."""
    K = ids.shape[1]
    cg = [1.0 / np.log2(i + 2) for i in range(K)]
    out = [0.0] * 6
    for q, u in enumerate(users):
        test = set(int(i) for i in test_indices[test_indptr[u]:test_indptr[u + 1]])
        if not test:
            continue
        n_pos, n_neg = len(test), n_items - len(test)
        idcg = sum(cg[:min(K, n_pos)])
        hit = miss = ap = auc = 0.0
        for i in range(K):
            if int(ids[q, i]) in test:
                out[0] += 1
                hit += 1
                ap += hit / (i + 1)
                out[3] += cg[i] / idcg
            else:
                miss += 1
                auc += hit
        auc += (hit + n_pos) / 2.0 * (n_neg - miss)
        out[1] += min(K, n_pos)
        out[2] += ap / min(K, n_pos)
        out[4] += auc / (n_pos * n_neg) if n_neg > 0 else 1.0
        out[5] += 1
    return np.array(out)
