# k-means assignment: labels[i] = argmin_j ||x_i - c_j||^2 = argmin_j (||c_j - m||^2 - 2 (x_i - m).(c_j - m)), m = mean of C
# (against cancellation), dist = exact ||x_i - c_label||^2. Fast: SciPy's BLAS sgemm/dgemm per (points x centres) tile inside an
# OpenMP prange on the shifted tile, argmin fused and vectorised across points.
# cython: language_level=3
cimport cython
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.math cimport INFINITY
from libc.stdint cimport uintptr_t

import numpy as np

ctypedef fused floating:
    float
    double

cdef enum:
    ROWS = 256     # points per tile
    KBLOCK = 256   # centres per tile: the score tile (256 KiB in float32) stays in L2

# BLAS takes Fortran ints: d (and the tile sizes) must fit
cdef Py_ssize_t INT_LIMIT = 2147483647


# SciPy's Fortran sgemm/dgemm (LP64), by address from pyml._blas.gemm_pointer: that opens
# SciPy's BLAS library without importing scipy.linalg, which a cimport of
# scipy.linalg.cython_blas would do at module import (~60-100 ms of a first call).
ctypedef void (*sgemm_t)(const char*, const char*, const int*, const int*, const int*,
                         const float*, const float*, const int*, const float*, const int*,
                         const float*, float*, const int*) noexcept nogil
ctypedef void (*dgemm_t)(const char*, const char*, const int*, const int*, const int*,
                         const double*, const double*, const int*, const double*, const int*,
                         const double*, double*, const int*) noexcept nogil
cdef sgemm_t _sgemm = NULL
cdef dgemm_t _dgemm = NULL


cdef void _load_gemm(bint single) except *:
    # with the GIL held, before any nogil use; a race only stores the same address twice
    global _sgemm, _dgemm
    from pyml._blas import gemm_pointer
    if single and _sgemm == NULL:
        _sgemm = <sgemm_t><uintptr_t>gemm_pointer(np.float32)
    elif not single and _dgemm == NULL:
        _dgemm = <dgemm_t><uintptr_t>gemm_pointer(np.float64)


cdef inline void _gemm(floating* x, floating* c, floating* G, int rows, int kk, int d) noexcept nogil:
    # column-major G (rows x kk) = X_tile^T (rows x d) * C_blk (d x kk): G[j * rows + r] = -2 x_r . c_j
    cdef char tr = b'T'
    cdef char nn = b'N'
    cdef floating alpha = -2.0
    cdef floating beta = 0.0
    if floating is float:
        _sgemm(&tr, &nn, &rows, &kk, &d, &alpha, x, &d, c, &d, &beta, G, &rows)
    else:
        _dgemm(&tr, &nn, &rows, &kk, &d, &alpha, x, &d, c, &d, &beta, G, &rows)


@cython.boundscheck(False)
@cython.wraparound(False)
def kmeans_assign(const floating[:, ::1] X, const floating[:, ::1] C):
    """(labels int32 (n,), squared distance (n,)) of every row of X to its nearest row of C.
    Read-only arrays are fine (const memoryviews)."""
    cdef Py_ssize_t n = X.shape[0]
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t k = C.shape[0]
    if n < 1 or k < 1 or d < 1 or C.shape[1] != d:
        raise ValueError("kmeans_assign: X (n, d) and C (k, d) with n, k, d >= 1 expected")
    if d > INT_LIMIT or k > INT_LIMIT:
        raise ValueError(f"kmeans_assign (cython): d={d} and k={k} must be <= 2^31 - 1 (BLAS ints)")
    dtype = np.float32 if floating is float else np.float64
    if (floating is float and _sgemm == NULL) or (floating is double and _dgemm == NULL):
        _load_gemm(floating is float)
    labels_a = np.empty(n, np.int32)
    dist_a = np.empty(n, dtype)
    C_np = np.asarray(C)
    shift = C_np.mean(axis=0, dtype=np.float64).astype(dtype)
    Cc_a = np.ascontiguousarray(C_np - shift)  # k x d: small next to X
    cnorm_a = np.einsum("ij,ij->i", Cc_a, Cc_a).astype(dtype)
    cdef int[::1] labels = labels_a
    cdef floating[::1] dist = dist_a
    cdef floating[::1] cnorm = cnorm_a
    cdef floating[::1] m = shift
    cdef floating[:, ::1] Cc = Cc_a
    cdef Py_ssize_t ntiles = (n + ROWS - 1) // ROWS
    cdef int kb = <int>min(k, <Py_ssize_t>KBLOCK)
    cdef int di = <int>d
    cdef Py_ssize_t tile, r0, j0, jj, t
    cdef int rows, kk, j, r
    cdef floating* G
    cdef floating* xs
    cdef floating* bv
    cdef Py_ssize_t* bi
    cdef floating v, cj
    cdef double s, diff
    with nogil, parallel():
        # per-thread scratch, allocated once per call (never inside the tile loop)
        G = <floating*>malloc(sizeof(floating) * ROWS * kb)
        xs = <floating*>malloc(sizeof(floating) * ROWS * d)
        bv = <floating*>malloc(sizeof(floating) * ROWS)
        bi = <Py_ssize_t*>malloc(sizeof(Py_ssize_t) * ROWS)
        for tile in prange(ntiles, schedule="dynamic"):
            r0 = tile * ROWS
            rows = <int>min(<Py_ssize_t>ROWS, n - r0)
            for r in range(rows):
                bv[r] = INFINITY
                bi[r] = 0
                for t in range(d):  # the tile shifted by m, in cache
                    xs[r * d + t] = X[r0 + r, t] - m[t]
            j0 = 0
            while j0 < k:
                kk = <int>min(<Py_ssize_t>kb, k - j0)
                _gemm(xs, &Cc[j0, 0], G, rows, kk, di)
                for j in range(kk):
                    cj = cnorm[j0 + j]
                    jj = j0 + j
                    for r in range(rows):  # strict <, ascending j: the smallest index wins a tie
                        v = G[j * rows + r] + cj
                        if v < bv[r]:
                            bv[r] = v
                            bi[r] = jj
                j0 = j0 + kb
            for r in range(rows):
                # exact distance to the chosen centre (the expanded form cancels when ||x|| >> ||x-c||)
                s = 0.0
                for t in range(d):
                    diff = <double>X[r0 + r, t] - <double>C[bi[r], t]
                    s = s + diff * diff
                labels[r0 + r] = <int>bi[r]
                dist[r0 + r] = <floating>s
        free(G)
        free(xs)
        free(bi)
        free(bv)
    return labels_a, dist_a
