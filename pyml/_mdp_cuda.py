"""CuPy driver for kernels/cuda/mdp.cu: same calling convention as the CPU sweep kernels,
CuPy arrays in and out (no host round-trip except the scalar residual per sweep).

Compiled with nvcc for sm_80/sm_90 in CI; not yet run on a device (no GPU was available).
"""
from __future__ import annotations

from .kernels.cuda import module

WARPS_PER_BLOCK = 8  # 256 threads: one warp per state in the dense kernel


def _suffix(dtype) -> str:
    return "f32" if dtype.itemsize == 4 else "f64"


def _check_jacobi(gauss_seidel: bool) -> None:
    if gauss_seidel:
        # Gauss-Seidel orders the states one after another; on the GPU it would run one
        # state at a time, so only the Jacobi sweep is offered there.
        raise ValueError("method='gauss-seidel' is not available on the cuda backend; use 'jacobi'")


def sweep_dense(P, R, gamma, V, V_out, policy, fixed, gauss_seidel):
    import cupy as cp

    _check_jacobi(gauss_seidel)
    A, S = P.shape[0], P.shape[1]
    diff = cp.empty(S, cp.float64)
    kern = module("mdp").get_function(f"sweep_dense_{_suffix(P.dtype)}")
    threads = 32 * WARPS_PER_BLOCK
    blocks = (S + WARPS_PER_BLOCK - 1) // WARPS_PER_BLOCK
    kern((blocks,), (threads,), (P, R, cp.float64(gamma), V, V_out, policy, diff,
                                 cp.int32(bool(fixed)), cp.int64(A), cp.int64(S)))
    return float(diff.max())


def sweep_sparse(indptr, indices, data, A, R, gamma, V, V_out, policy, fixed, gauss_seidel):
    import cupy as cp

    _check_jacobi(gauss_seidel)
    S = V.shape[0]
    diff = cp.empty(S, cp.float64)
    kern = module("mdp").get_function(f"sweep_sparse_{_suffix(data.dtype)}")
    kern(((S + 255) // 256,), (256,), (indptr, indices, data, cp.int64(A), R, cp.float64(gamma), V,
                                      V_out, policy, diff, cp.int32(bool(fixed)), cp.int64(S)))
    return float(diff.max())
