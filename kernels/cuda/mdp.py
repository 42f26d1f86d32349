"""CuPy glue for kernels/cuda/mdp.cu: the calling convention of the CPU solve kernels
(pyml._mdp_driver), CuPy arrays in and out. Each sweep is one launch; the sup-norm change is
reduced on the device and read back per sweep for the stopping test (one scalar a sweep).

Compiled with nvcc for sm_80/sm_90 in CI; not yet run on a device (no GPU was available).
"""
from __future__ import annotations

from . import cupy, grid, kernel

WARPS_PER_BLOCK = 8  # 256 threads: one warp per state in the dense kernel
THREADS = 32 * WARPS_PER_BLOCK


def _check_jacobi(gauss_seidel: bool) -> None:
    if gauss_seidel:
        # Gauss-Seidel orders the states one after another; on the GPU it would run one
        # state at a time, so only the Jacobi sweep is offered there.
        raise ValueError("method='gauss-seidel' is not available on the cuda backend; use 'jacobi'")


def _iterate(launch, V, scratch, tol, max_iter, residuals) -> int:
    """Jacobi sweeps ``launch(cur, nxt, diff)`` until the change is below tol; result in V."""
    cp = cupy()
    diff = cp.empty(V.shape[0], cp.float64)
    cur, nxt = V, scratch
    n = 0
    for n in range(1, max_iter + 1):
        launch(cur, nxt, diff)
        delta = float(diff.max())
        residuals[n - 1] = delta
        cur, nxt = nxt, cur
        if delta < tol:
            break
    if cur is not V:
        V[...] = cur
    return n


def value_iteration_dense(P, R, gamma, V, scratch, policy, fixed, gauss_seidel, tol, max_iter,
                          residuals):
    cp = cupy()
    _check_jacobi(gauss_seidel)
    A, S = P.shape[0], P.shape[1]
    sweep = kernel("mdp", "sweep_dense", P.dtype)

    def launch(cur, nxt, diff):  # one warp per state: S warps of 32 lanes
        sweep(grid(32 * S, THREADS), (THREADS,), (P, R, cp.float64(gamma), cur, nxt, policy, diff,
                                                  cp.int32(bool(fixed)), cp.int64(A), cp.int64(S)))
    return _iterate(launch, V, scratch, tol, max_iter, residuals)


def value_iteration_sparse(indptr, indices, data, R, gamma, V, scratch, policy, fixed,
                           gauss_seidel, tol, max_iter, residuals):
    """Action-major CSR (row a*S + s holds P(. | s, a)), int64 indptr, int32 indices."""
    cp = cupy()
    _check_jacobi(gauss_seidel)
    S, A = R.shape
    sweep = kernel("mdp", "sweep_sparse", data.dtype)

    def launch(cur, nxt, diff):
        sweep(grid(S, THREADS), (THREADS,), (indptr, indices, data, cp.int64(A), R, cp.float64(gamma),
                                             cur, nxt, policy, diff, cp.int32(bool(fixed)), cp.int64(S)))
    return _iterate(launch, V, scratch, tol, max_iter, residuals)
