"""Sparse value iteration on Dask: the states are cut into row blocks whose transition rows
(one CSR block per action) stay on the workers; each sweep broadcasts V (S numbers), runs
pyml's sparse Bellman backup kernel on every block, and gathers the new values and each
block's sup-norm change -- S + 2 numbers per block on the wire, never the matrices.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import Kernel, _check_backend_name
from .._mdp_driver import threshold
from .._validation import check_int, check_scalar
from ..mdp import MDPResult
from ._common import progress, put

__all__ = ["value_iteration"]

# V_out[s] = max_a R[s, a] + gamma sum_s' P_a[s, s'] V[s'] for the rows of one block of states;
# indptr (A, rows + 1) into the concatenated indices/data of the A CSR row blocks
BACKUP = Kernel("mdp", "bellman_backup_sparse", ("python", "numba", "cpp"))


def _block(P, lo: int, hi: int):
    return [Pa[lo:hi] for Pa in P]


def _check_block(rows, R, S: int, index: int, lo: int):
    """Validate one block on its worker: CSR structure, probabilities, rewards."""
    for a, Pa in enumerate(rows):
        Pa.sort_indices()
        if Pa.shape != (R.shape[0], S):
            raise ValueError(f"P block {index}, action {a}: shape {Pa.shape}, expected "
                             f"{(R.shape[0], S)}")
        if np.any(np.diff(Pa.indptr) < 0) or (Pa.nnz and (Pa.indices.min() < 0
                                                           or Pa.indices.max() >= S)):
            raise ValueError(f"P block {index}, action {a}: corrupt CSR (indptr not monotone "
                             f"or column indices outside [0, {S}))")
        data = Pa.data
        if not np.isfinite(data).all() or (data < 0).any():
            raise ValueError(f"P block {index}, action {a}: probabilities must be finite and >= 0")
        sums = np.add.reduceat(data, Pa.indptr[:-1]) if Pa.nnz else np.zeros(Pa.shape[0])
        sums[np.diff(Pa.indptr) == 0] = 0.0
        bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-8 * max(1, S) ** 0.5 + 1e-10)
        if bad.size:
            raise ValueError(f"P[{a}] row {lo + int(bad[0])} sums to {sums[bad[0]]:.6g}, not 1")
    if not np.isfinite(R).all():
        raise ValueError(f"R holds a non-finite value in block {index}")
    # the kernel's layout: the A CSR blocks concatenated; indptr[a, s] indexes the flat arrays
    base = np.cumsum([0] + [Pa.nnz for Pa in rows])[:-1]
    indptr = np.stack([Pa.indptr.astype(np.int64) + b for Pa, b in zip(rows, base)])
    indices = np.concatenate([Pa.indices for Pa in rows]).astype(np.int64)
    data = np.concatenate([Pa.data for Pa in rows]).astype(np.float64)
    return indptr, indices, data, np.ascontiguousarray(R, np.float64)


def _backup(block, gamma, V, lo, backend):
    indptr, indices, data, R = block
    n = R.shape[0]
    V_out = np.empty(n)
    policy = np.empty(n, np.int64)
    delta = BACKUP.get(backend)(indptr, indices, data, R, float(gamma), V, V_out, policy, int(lo))
    return V_out, policy, float(delta)


def _as_blocks(P, S: int, A: int, n_blocks: int):
    """(bounds, per-block list of A CSR row blocks) from A (S, S) matrices or A lists of
    row blocks with the same row boundaries for every action."""
    import scipy.sparse as sp

    if all(sp.issparse(Pa) for Pa in P):
        bounds = np.linspace(0, S, min(n_blocks, S) + 1).round().astype(np.int64)
        return bounds, None
    sizes = [[Pb.shape[0] for Pb in Pa] for Pa in P]
    if any(s != sizes[0] for s in sizes):
        raise ValueError("P: every action must be cut into the same row blocks")
    bounds = np.concatenate([[0], np.cumsum(sizes[0])]).astype(np.int64)
    if bounds[-1] != S:
        raise ValueError(f"P: the row blocks of each action must cover the S={S} states")
    return bounds, [[sp.csr_matrix(P[a][b]) for a in range(A)] for b in range(len(sizes[0]))]


def value_iteration(P: Any, R: Any, gamma: float, epsilon: float = 1e-6,
                    max_iter: int | None = None, V0: Any = None, n_blocks: int | None = None,
                    backend: str | None = None, show_progress: bool = False) -> MDPResult:
    """Jacobi value iteration of a sparse MDP on Dask, blocks of states per task.

    ``P`` is a list of A ``scipy.sparse`` (S, S) matrices (cut into ``n_blocks`` row blocks,
    default 2 per worker) or a list of A lists of CSR row blocks (the same cuts for every
    action); ``R`` is (S, A). Stops as :func:`pyml.value_iteration` does (sup-norm change
    below epsilon (1 - gamma) / (2 gamma)) and returns the same values (to float summation
    order: 1e-12) in a :class:`pyml.mdp.MDPResult`.
    """
    import dask
    import scipy.sparse as sp

    if not isinstance(P, (list, tuple)) or not P:
        raise TypeError("P must be a non-empty list of A scipy.sparse matrices (one per action) "
                        "or of A lists of CSR row blocks")
    A = len(P)
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[1] != A:
        raise ValueError(f"R must have shape (S, {A}), got {R.shape}")
    S = R.shape[0]
    gamma = check_scalar(gamma, "gamma", low=0.0, high=1.0)
    if gamma == 1.0 and max_iter is None:
        raise ValueError("gamma = 1 needs max_iter (the undiscounted backup need not converge)")
    max_iter = check_int(10_000 if max_iter is None else max_iter, "max_iter", min_value=1)
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, low_inclusive=False)
    if backend is not None:
        _check_backend_name(backend)
    be = BACKUP.resolve(backend)
    if n_blocks is None:
        try:
            from distributed import get_client

            n_blocks = max(2, 2 * len(get_client().scheduler_info()["workers"]))
        except (ImportError, ValueError):
            n_blocks = 2
    n_blocks = check_int(n_blocks, "n_blocks", min_value=1)
    for a, Pa in enumerate(P):
        if sp.issparse(Pa) and Pa.shape != (S, S):
            raise ValueError(f"P[{a}] must have shape {(S, S)}, got {Pa.shape}")
    bounds, given = _as_blocks(P, S, A, n_blocks)
    if given is None:
        Pd = put([sp.csr_matrix(Pa) for Pa in P])
        rows = [dask.delayed(_block)(Pd, int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    else:
        rows = [dask.delayed(b) for b in given]
    blocks = [dask.delayed(_check_block)(r, R[lo:hi], S, i, int(lo))
              for i, (r, lo, hi) in enumerate(zip(rows, bounds[:-1], bounds[1:]))]
    blocks = list(dask.persist(*blocks))  # validated, in the kernel's layout, on the workers
    V = np.zeros(S) if V0 is None else np.array(V0, dtype=np.float64)
    if V.shape != (S,):
        raise ValueError(f"V0 must have shape ({S},), got {V.shape}")
    tol = threshold(epsilon, gamma)
    residuals: list[float] = []
    policy = np.zeros(S, np.int64)
    bar = progress(max_iter, "pyml.dask.value_iteration", show_progress)
    for _ in range(max_iter):
        Vd = dask.delayed(V)  # one key: sent once per worker
        parts = dask.compute(*[dask.delayed(_backup)(blk, gamma, Vd, int(lo), be)
                               for blk, lo in zip(blocks, bounds[:-1])])
        V = np.concatenate([p[0] for p in parts])
        policy = np.concatenate([p[1] for p in parts])
        residuals.append(max(p[2] for p in parts))
        bar.update(1)
        if residuals[-1] < tol:
            break
    bar.close()
    return MDPResult(V, policy, len(residuals), np.asarray(residuals))
