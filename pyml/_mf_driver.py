"""Matrix-factorization driver shared by every backend: ALS alternating half-steps (users,
then items) with Y^T Y formed once per half-step, the loss, callback and progress; MF-SGD
epochs in seeded shuffles. Backends differ only in the kernels declared below; where the
factors live (host or device) is decided here, not in the API layer."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ._backend import Kernel, array_module, is_cupy
from ._blas import single_thread
from .kernels.cuda import cupy

HALF_STEP = Kernel("mf", "als_half_step", ("python", "numba", "cpp", "cython", "cuda"))
SGD_EPOCH = Kernel("mf", "mf_sgd_epoch", ("python", "numba", "cpp"))


def _device_module(backend: str):
    """numpy, or cupy for the cuda backend (factors and ratings then stay on the device)."""
    if backend == "cuda":
        return cupy()
    return np


class CSRArrays:
    """indptr (int64), indices (int32) and data of a CSR matrix in the kernels' dtypes.

    Copies are made from the caller's matrix, so kernels never see (or modify) it."""

    def __init__(self, R, dtype, xp=np):
        self.shape = R.shape
        self.indptr = xp.asarray(np.ascontiguousarray(R.indptr, dtype=np.int64))
        self.indices = xp.asarray(np.ascontiguousarray(R.indices, dtype=np.int32))
        self.data = xp.asarray(np.ascontiguousarray(R.data, dtype=dtype))


def half_step(kernel: Callable, R: CSRArrays, Y, X, reg: float, alpha: float, cg_steps: int,
              implicit: bool, exact: bool) -> None:
    """Recompute X (in place) from Y: the one place that forms Y^T Y for a half-step."""
    YtY = Y.T @ Y  # BLAS gemm once per half-step, shared by every row
    kernel(R.indptr, R.indices, R.data, Y, array_module(Y).ascontiguousarray(YtY), X,
           float(reg), float(alpha), int(cg_steps), bool(implicit), bool(exact))


def solve_rows(backend: str, R, Y, X, *, reg: float, alpha: float, cg_steps: int,
               implicit: bool, exact: bool):
    """Rows of the CSR matrix ``R`` solved against fixed ``Y`` (X: warm start, updated)."""
    with single_thread(backend):
        half_step(HALF_STEP.get(backend), CSRArrays(R, Y.dtype), Y, X, reg, alpha, cg_steps,
                  implicit, exact)
    return X


def als_loss(R: CSRArrays, X, Y, reg: float, alpha: float, implicit: bool,
             chunk: int = 1 << 18) -> float:
    """The objective of pyml.reference.mf.als_loss, vectorised (float64 accumulation).

    implicit: 1/2 [sum_u x_u^T YtY x_u + sum_Omega (c (p - s)^2 - s^2)] + 1/2 reg (|X|^2+|Y|^2)."""
    xp = array_module(X)
    # row of every stored entry (searchsorted works for NumPy and CuPy alike)
    rows = xp.searchsorted(R.indptr, xp.arange(R.data.shape[0], dtype=np.int64), side="right") - 1
    total = 0.0
    if implicit:
        YtY = (Y.T @ Y).astype(np.float64)
        X64 = X.astype(np.float64)
        total += float(xp.sum((X64 @ YtY) * X64))
    for s0 in range(0, int(R.data.shape[0]), chunk):
        s1 = s0 + chunk
        u, i, r = rows[s0:s1], R.indices[s0:s1], R.data[s0:s1].astype(np.float64)
        s = xp.einsum("kf,kf->k", X[u], Y[i]).astype(np.float64)
        if implicit:
            c = 1.0 + alpha * r
            p = (r > 0).astype(np.float64)
            total += float(xp.sum(c * (p - s) ** 2 - s * s))
        else:
            total += float(xp.sum((r - s) ** 2))
    norms = float(xp.sum(X.astype(np.float64) ** 2) + xp.sum(Y.astype(np.float64) ** 2))
    return 0.5 * total + 0.5 * reg * norms


def als_fit(backend: str, R, X, Y, *, reg: float, alpha: float, iterations: int, cg_steps: int,
            implicit: bool, exact: bool, callback: Callable[[int, float, float], Any] | None = None,
            show_progress: bool = False, compute_loss: bool = True):
    """``iterations`` of ALS on the validated CSR matrix ``R`` from the host factors X (users)
    and Y (items); returns ``(X, Y, losses)`` as host arrays (losses: one per iteration when
    ``compute_loss``, else empty; the callback then gets ``loss=None``, as implicit's does)."""
    xp = _device_module(backend)
    dt = X.dtype
    X, Y = xp.asarray(X), xp.asarray(Y)
    Rui, Riu = CSRArrays(R, dt, xp), CSRArrays(R.T.tocsr(), dt, xp)
    # Y^T Y is the only BLAS call; a multi-threaded BLAS pool left spinning next to the
    # kernel's own threads oversubscribes the cores (implicit warns about the same thing)
    with single_thread(backend):
        losses = _als_iterations(backend, Rui, Riu, X, Y, reg=reg, alpha=alpha,
                                 iterations=iterations, cg_steps=cg_steps, implicit=implicit,
                                 exact=exact, callback=callback, show_progress=show_progress,
                                 compute_loss=compute_loss)
    if xp is not np:  # the input was a host (scipy) matrix: outputs follow inputs
        X, Y = X.get(), Y.get()
    return X, Y, losses


def _als_iterations(backend, Rui, Riu, X, Y, *, reg, alpha, iterations, cg_steps, implicit, exact,
                    callback, show_progress, compute_loss) -> list[float]:
    kernel = HALF_STEP.get(backend)
    losses: list[float] = []
    bar = None
    if show_progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=iterations, desc=f"ALS ({backend})")
        except ImportError:  # progress is cosmetic; tqdm is optional
            bar = None
    for it in range(iterations):
        t0 = time.perf_counter()
        half_step(kernel, Rui, Y, X, reg, alpha, cg_steps, implicit, exact)
        half_step(kernel, Riu, X, Y, reg, alpha, cg_steps, implicit, exact)
        if is_cupy(X):
            X.device.synchronize()
        elapsed = time.perf_counter() - t0
        if not (np.isfinite(X).all() and np.isfinite(Y).all()):
            raise FloatingPointError(
                f"ALS produced non-finite factors at iteration {it}: a normal-equation matrix was "
                "not positive definite in this precision (ill-conditioned); use dtype=float64 or a "
                "larger regularization")
        loss = None
        if compute_loss:
            loss = als_loss(Rui, X, Y, reg, alpha, implicit)
            losses.append(loss)
        if bar is not None:
            bar.update(1)
            if loss is not None:
                bar.set_postfix(loss=f"{loss:.5g}")
        if callback is not None:
            callback(it, elapsed, loss)
    if bar is not None:
        bar.close()
    return losses


def sgd_fit(backend: str, rows, cols, vals, U, V, *, lr: float, reg: float, epochs: int,
            deterministic: bool, rng: np.random.Generator) -> None:
    """``epochs`` passes of SGD over the observed entries, each in a fresh seeded shuffle."""
    kernel = SGD_EPOCH.get(backend)
    for _ in range(epochs):
        order = rng.permutation(vals.shape[0]).astype(np.int64)
        kernel(rows, cols, vals, order, U, V, float(lr), float(reg), bool(deterministic))
