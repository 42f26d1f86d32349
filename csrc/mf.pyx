# ALS half-step: per row solve (Y^T C_u Y + reg I) x_u = Y^T C_u p_u (Cholesky, or CG warm-started).
# Fast: nogil prange over rows (dynamic schedule for power-law rows), per-thread scratch malloc'd once per parallel block;
# CG forms its first residual in one gather pass and the dense YtY products as contiguous axpys.
# cython: language_level=3
cimport cython
from cython.parallel cimport parallel, prange
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memset

ctypedef fused floating:
    float
    double


cdef inline floating _dot(const floating* a, const floating* b, Py_ssize_t f) noexcept nogil:
    cdef floating s = 0
    cdef Py_ssize_t d
    for d in range(f):
        s = s + a[d] * b[d]
    return s


cdef void _cholesky_solve(floating* A, const floating* b, floating* x, Py_ssize_t f) noexcept nogil:
    cdef Py_ssize_t i, j, k
    cdef floating s
    for i in range(f):
        for j in range(i + 1):
            s = A[i * f + j] - _dot(A + i * f, A + j * f, j)
            if i == j:
                A[i * f + j] = sqrt(s)
            else:
                A[i * f + j] = s / A[j * f + j]
    for i in range(f):
        x[i] = (b[i] - _dot(A + i * f, x, i)) / A[i * f + i]
    for i in range(f - 1, -1, -1):
        s = x[i]
        for k in range(i + 1, f):
            s = s - A[k * f + i] * x[k]
        x[i] = s / A[i * f + i]


cdef void _dense_part(const floating* YtY, floating reg, const floating* p, floating* out,
                      floating sign, Py_ssize_t f) noexcept nogil:
    # out = sign (YtY + reg I) p as axpys over rows of the symmetric YtY (contiguous, no reductions)
    cdef Py_ssize_t a, d
    cdef floating pd
    cdef const floating* row
    for a in range(f):
        out[a] = sign * reg * p[a]
    for d in range(f):
        pd = sign * p[d]
        row = YtY + d * f
        for a in range(f):
            out[a] = out[a] + pd * row[a]


cdef void _implicit_matvec(const floating* YtY, const floating* Y, const int* idx,
                           const floating* val, Py_ssize_t start, Py_ssize_t end, floating reg,
                           floating alpha, const floating* p, floating* out, Py_ssize_t f) noexcept nogil:
    # out = (YtY + reg I) p + sum_k alpha r_k (y_k . p) y_k
    cdef Py_ssize_t d, k
    cdef floating s
    cdef const floating* y
    _dense_part(YtY, reg, p, out, 1, f)
    for k in range(start, end):
        y = Y + <Py_ssize_t>idx[k] * f
        s = alpha * val[k] * _dot(y, p, f)
        for d in range(f):
            out[d] = out[d] + s * y[d]


cdef void _implicit_residual(const floating* YtY, const floating* Y, const int* idx,
                             const floating* val, Py_ssize_t start, Py_ssize_t end, floating reg,
                             floating alpha, const floating* x, floating* r, Py_ssize_t f) noexcept nogil:
    # r = b - A x in one gather of the row's y_k (b = sum_k c_k p_k y_k)
    cdef Py_ssize_t d, k
    cdef floating coef, v
    cdef const floating* y
    _dense_part(YtY, reg, x, r, -1, f)
    for k in range(start, end):
        y = Y + <Py_ssize_t>idx[k] * f
        v = val[k]
        coef = ((1 + alpha * v) if v > 0 else 0) - alpha * v * _dot(y, x, f)
        for d in range(f):
            r[d] = r[d] + coef * y[d]


@cython.boundscheck(False)
@cython.wraparound(False)
def als_half_step(const long long[::1] indptr, const int[::1] indices, const floating[::1] data,
                  const floating[:, ::1] Y, const floating[:, ::1] YtY, floating[:, ::1] X,
                  double reg_d, double alpha_d, int cg_steps, bint implicit, bint exact):
    cdef Py_ssize_t n = X.shape[0], f = X.shape[1], m = Y.shape[0], k
    if indptr.shape[0] != n + 1 or Y.shape[1] != f or YtY.shape[0] != f or YtY.shape[1] != f \
            or indices.shape[0] != data.shape[0]:
        raise ValueError("als_half_step: inconsistent shapes")
    if indptr[0] != 0 or indptr[n] > indices.shape[0]:
        raise ValueError("als_half_step: bad indptr")
    for k in range(n):
        if indptr[k + 1] < indptr[k]:
            raise ValueError("als_half_step: indptr not non-decreasing")
    for k in range(indptr[n]):
        if indices[k] < 0 or indices[k] >= m:
            raise ValueError("als_half_step: column index out of range")
    if n == 0:
        return
    cdef floating reg = <floating>reg_d, alpha = <floating>alpha_d
    cdef floating* A
    cdef floating* b
    cdef floating* r
    cdef floating* p
    cdef floating* Ap
    cdef floating* x
    cdef const floating* y
    cdef const floating* Yp = &Y[0, 0]
    cdef const floating* YtYp = &YtY[0, 0]
    cdef const floating* val = &data[0] if data.shape[0] else NULL
    cdef const int* idx = &indices[0] if indices.shape[0] else NULL
    cdef floating t, w, rs_old, rs_new, step, beta
    cdef Py_ssize_t u, a, d, start, end, it
    with nogil, parallel():
        A = <floating*>malloc(sizeof(floating) * (f * f + 4 * f))
        b = A + f * f
        r = b + f
        p = r + f
        Ap = p + f
        for u in prange(n, schedule="dynamic", chunksize=32):
            start = indptr[u]
            end = indptr[u + 1]
            x = &X[u, 0]
            if implicit and not exact:
                _implicit_residual(YtYp, Yp, idx, val, start, end, reg, alpha, x, r, f)
                rs_old = 0
                for a in range(f):
                    p[a] = r[a]
                    rs_old = rs_old + r[a] * r[a]
                for it in range(cg_steps):
                    if rs_old < 1e-20:
                        break
                    _implicit_matvec(YtYp, Yp, idx, val, start, end, reg, alpha, p, Ap, f)
                    step = rs_old / _dot(p, Ap, f)
                    rs_new = 0
                    for a in range(f):
                        x[a] = x[a] + step * p[a]
                        r[a] = r[a] - step * Ap[a]
                        rs_new = rs_new + r[a] * r[a]
                    beta = rs_new / rs_old
                    for a in range(f):
                        p[a] = r[a] + beta * p[a]
                    rs_old = rs_new
            else:
                memset(b, 0, sizeof(floating) * f)
                for k in range(start, end):
                    y = Yp + <Py_ssize_t>idx[k] * f
                    if implicit:
                        t = (1 + alpha * val[k]) if val[k] > 0 else 0
                    else:
                        t = val[k]
                    for d in range(f):
                        b[d] = b[d] + t * y[d]
                for a in range(f):
                    for d in range(a + 1):
                        A[a * f + d] = YtYp[a * f + d] if implicit else 0
                    A[a * f + a] = A[a * f + a] + reg
                for k in range(start, end):
                    y = Yp + <Py_ssize_t>idx[k] * f
                    w = alpha * val[k] if implicit else 1
                    for a in range(f):
                        t = w * y[a]
                        for d in range(a + 1):
                            A[a * f + d] = A[a * f + d] + t * y[d]
                _cholesky_solve(A, b, x, f)
        free(A)
