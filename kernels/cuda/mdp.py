"""CuPy glue for kernels/cuda/mdp.cu: the same calling convention as the CPU sweep kernels,
CuPy arrays in and out (no host round-trip except the scalar residual per sweep).

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


def sweep_dense(P, R, gamma, V, V_out, policy, fixed, gauss_seidel):
    cp = cupy()
    _check_jacobi(gauss_seidel)
    A, S = P.shape[0], P.shape[1]
    diff = cp.empty(S, cp.float64)
    # one warp per state: S warps of 32 lanes
    kernel("mdp", "sweep_dense", P.dtype)(grid(32 * S, THREADS), (THREADS,), (
        P, R, cp.float64(gamma), V, V_out, policy, diff, cp.int32(bool(fixed)), cp.int64(A), cp.int64(S)))
    return float(diff.max())


def sweep_sparse(indptr, indices, data, A, R, gamma, V, V_out, policy, fixed, gauss_seidel):
    cp = cupy()
    _check_jacobi(gauss_seidel)
    S = V.shape[0]
    diff = cp.empty(S, cp.float64)
    kernel("mdp", "sweep_sparse", data.dtype)(grid(S, THREADS), (THREADS,), (
        indptr, indices, data, cp.int64(A), R, cp.float64(gamma), V, V_out, policy, diff,
        cp.int32(bool(fixed)), cp.int64(S)))
    return float(diff.max())
