# k-means assignment: labels[i] = argmin_j ||x_i - c_j||^2 = argmin_j (||c_j||^2 - 2 x_i.c_j), dist = exact ||x_i - c_label||^2.
# Fast: SciPy's BLAS sgemm/dgemm per (points x centres) tile inside an OpenMP prange, argmin fused and vectorised across points.
# cython: language_level=3
cimport cython
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.math cimport INFINITY
from scipy.linalg.cython_blas cimport dgemm, sgemm

import numpy as np

ctypedef fused floating:
    float
    double

cdef enum:
    ROWS = 256     # points per tile
    KBLOCK = 256   # centres per tile: the score tile (256 KiB in float32) stays in L2


cdef inline void _gemm(floating* x, floating* c, floating* G, int rows, int kk, int d) noexcept nogil:
    # column-major G (rows x kk) = X_tile^T (rows x d) * C_blk (d x kk): G[j * rows + r] = -2 x_r . c_j
    cdef char tr = b'T'
    cdef char nn = b'N'
    cdef floating alpha = -2.0
    cdef floating beta = 0.0
    if floating is float:
        sgemm(&tr, &nn, &rows, &kk, &d, &alpha, x, &d, c, &d, &beta, G, &rows)
    else:
        dgemm(&tr, &nn, &rows, &kk, &d, &alpha, x, &d, c, &d, &beta, G, &rows)


@cython.boundscheck(False)
@cython.wraparound(False)
def kmeans_assign(floating[:, ::1] X, floating[:, ::1] C):
    """(labels int32 (n,), squared distance (n,)) of every row of X to its nearest row of C."""
    cdef Py_ssize_t n = X.shape[0]
    cdef int d = <int>X.shape[1]
    cdef int k = <int>C.shape[0]
    if n < 1 or k < 1 or d < 1 or C.shape[1] != d:
        raise ValueError("kmeans_assign: X (n, d) and C (k, d) with n, k, d >= 1 expected")
    dtype = np.float32 if floating is float else np.float64
    labels_a = np.empty(n, np.int32)
    dist_a = np.empty(n, dtype)
    cnorm_a = np.einsum("ij,ij->i", np.asarray(C), np.asarray(C)).astype(dtype)
    cdef int[::1] labels = labels_a
    cdef floating[::1] dist = dist_a
    cdef floating[::1] cnorm = cnorm_a
    cdef Py_ssize_t ntiles = (n + ROWS - 1) // ROWS
    cdef int kb = min(k, KBLOCK)
    cdef Py_ssize_t tile, r0
    cdef int rows, j0, kk, j, r, t, jj
    cdef floating* G
    cdef floating* bv
    cdef int* bi
    cdef floating v, cj
    cdef double s, diff
    with nogil, parallel():
        # per-thread scratch, allocated once per call (never inside the tile loop)
        G = <floating*>malloc(sizeof(floating) * ROWS * kb)
        bv = <floating*>malloc(sizeof(floating) * ROWS)
        bi = <int*>malloc(sizeof(int) * ROWS)
        for tile in prange(ntiles, schedule="dynamic"):
            r0 = tile * ROWS
            rows = <int>min(<Py_ssize_t>ROWS, n - r0)
            for r in range(rows):
                bv[r] = INFINITY
                bi[r] = 0
            j0 = 0
            while j0 < k:
                kk = min(kb, k - j0)
                _gemm(&X[r0, 0], &C[j0, 0], G, rows, kk, d)
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
                labels[r0 + r] = bi[r]
                dist[r0 + r] = <floating>s
        free(G)
        free(bv)
        free(bi)
    return labels_a, dist_a
