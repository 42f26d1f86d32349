"""`pyml verify` / `pyml warmup` for matrix factorization: every half-step variant (explicit
Cholesky, implicit CG, implicit Cholesky), the SGD epoch, the ratings' check/transpose pass and
the ranking metrics of one backend against the reference, in float32 and float64 (which also
compiles every Numba signature a fit uses)."""
from __future__ import annotations

import numpy as np

from .. import _mf_driver as drv
from ..datasets import synthetic_ratings
from ..reference import mf as ref
from . import row


def dense_half_step(indptr, indices, data, Y, YtY, X, reg, alpha, cg_steps, implicit, exact):
    """The half-step again with NumPy dense algebra (LAPACK solve, vector CG): an independent
    implementation whose rounding differs from the loop reference, so that its distance to
    the reference measures the float64 rounding error of the problem (the "naive" error of
    the tolerance rule, which would be zero if the reference were compared with itself)."""
    f = X.shape[1]
    for u in range(X.shape[0]):
        sl = slice(indptr[u], indptr[u + 1])
        Yu, r = Y[indices[sl]], data[sl]
        w = alpha * r if implicit else np.ones_like(r)
        t = np.where(r > 0, 1 + alpha * r, 0) if implicit else r
        A = (YtY if implicit else 0) + (Yu.T * w) @ Yu + reg * np.eye(f)
        b = Yu.T @ t
        if exact or not implicit:
            X[u] = np.linalg.solve(A, b)
            continue
        x = X[u].copy()
        res = b - A @ x
        p, rs = res.copy(), res @ res
        for _ in range(cg_steps):
            if rs < 1e-20:
                break
            Ap = A @ p
            step = rs / (p @ Ap)
            x, res = x + step * p, res - step * Ap
            rs_new = res @ res
            p, rs = res + (rs_new / rs) * p, rs_new
        X[u] = x
    return X


def checks(backend: str, rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """Return [(check, max_error, tolerance)] for ``backend``; raises BackendUnavailableError."""
    backend = drv.HALF_STEP.resolve(backend)
    kernel = drv.HALF_STEP.get(backend)
    rows = []
    R, _ = synthetic_ratings(23, 11, 90, rank=3, seed=int(rng.integers(1 << 31)))
    f = 5
    Y64 = rng.standard_normal((11, f))
    X064 = rng.standard_normal((23, f)) * 0.1
    for name, implicit, exact in (("explicit", False, True), ("implicit_cg", True, False),
                                  ("implicit_cholesky", True, True)):
        Rv = abs(R) if implicit else R
        results = {}
        for dt in (np.float64, np.float32):
            for be, k in (("ref", ref.als_half_step), ("out", kernel)):
                X = X064.astype(dt)
                drv.half_step(k, drv.CSRArrays(Rv, dt), Y64.astype(dt), X, 0.1, 2.0, 3, implicit, exact)
                results[(be, dt)] = X
        ref64 = results[("ref", np.float64)]
        X = X064.copy()
        drv.half_step(dense_half_step, drv.CSRArrays(Rv, np.float64), Y64, X, 0.1, 2.0, 3, implicit, exact)
        results[("ref", np.float64)] = X  # naive float64 (see dense_half_step)
        for dt in (np.float32, np.float64):
            rows.append(row(f"als_half_step {name} {np.dtype(dt).name}", results[("out", dt)],
                            ref64, results[("ref", dt)], dt))
    if backend in drv.SGD_EPOCH.backends:
        sgd = drv.SGD_EPOCH.get(backend)
        coo = R.tocoo()
        order = rng.permutation(R.nnz).astype(np.int64)
        out = {}
        for dt in (np.float64, np.float32):
            for be, k in (("ref", ref.mf_sgd_epoch), ("out", sgd)):
                U, V = (X064.astype(dt), (Y64 * 0.1).astype(dt))
                k(coo.row.astype(np.int32), coo.col.astype(np.int32), coo.data.astype(dt), order,
                  U, V, 0.05, 0.01, True)
                out[(be, dt)] = np.concatenate([U, V])
        for dt in (np.float32, np.float64):
            rows.append(row(f"mf_sgd_epoch deterministic {np.dtype(dt).name}", out[("out", dt)],
                            out[("ref", np.float64)], out[("ref", dt)], dt))
    rows += _input_checks(backend, abs(R), rng)
    return rows


def _input_checks(backend, R, rng):
    """csr_check / csr_transpose (exact: integer results), als_loss_terms and ranking_metrics
    where ``backend`` has them, on the index dtypes SciPy produces (int32 and int64)."""
    rows = []
    n_cols = R.shape[1]
    if backend in drv.CSR_CHECK.backends:
        check, transpose = drv.CSR_CHECK.get(backend), drv.CSR_TRANSPOSE.get(backend)
        for it in (np.int32, np.int64):
            for dt in (np.float32, np.float64):
                args = (R.indptr.astype(it), R.indices.astype(it), R.data.astype(dt))
                got = np.array(check(*args, n_cols, True), dtype=np.float64)
                want = np.array(ref.csr_check(*args, n_cols, True), dtype=np.float64)
                rows.append(row(f"csr_check {np.dtype(it).name} {np.dtype(dt).name}", got, want, want, dt))
        for dt in (np.float32, np.float64):
            tp = (R.indptr.astype(np.int64), R.indices.astype(np.int32), R.data.astype(dt))
            got = np.concatenate([np.asarray(a, np.float64) for a in transpose(*tp, n_cols)])
            want = np.concatenate([np.asarray(a, np.float64) for a in ref.csr_transpose(*tp, n_cols)])
            rows.append(row(f"csr_transpose {np.dtype(dt).name}", got, want, want, dt))
    if backend in drv.LOSS_TERMS.backends:
        X = rng.standard_normal((R.shape[0], 5))
        Y = rng.standard_normal((n_cols, 5))
        ip, ix = R.indptr.astype(np.int64), R.indices.astype(np.int32)
        for dt in (np.float32, np.float64):
            want = ref.als_loss_terms(ip, ix, R.data.astype(np.float64), X, Y, 2.0, True)
            naive = ref.als_loss_terms(ip, ix, R.data.astype(dt), X.astype(dt), Y.astype(dt), 2.0, True)
            got = drv.LOSS_TERMS.get(backend)(ip, ix, R.data.astype(dt), X.astype(dt), Y.astype(dt),
                                              2.0, True)
            rows.append(row(f"als_loss_terms {np.dtype(dt).name}", got, want, naive, dt))
    if backend in drv.RANKING_METRICS.backends:
        users = np.arange(R.shape[0], dtype=np.int64)
        ids = np.argsort(rng.random((R.shape[0], n_cols)), axis=1)[:, :4].astype(np.int32)
        ids[0, 2:] = -1
        args = (ids, users, R.indptr.astype(np.int64), R.indices, n_cols)
        want = ref.ranking_metrics(*args)
        rows.append(row("ranking_metrics", drv.RANKING_METRICS.get(backend)(*args), want, want,
                        np.float64))
    return rows
