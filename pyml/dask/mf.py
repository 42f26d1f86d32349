"""ALS on Dask: the ratings are cut once into user row blocks and item column blocks that stay
on the workers; each half-step ships the other side's factors (one concatenation, then one
copy per worker) and Y^T Y, and solves every block with pyml's ALS half-step kernel inside
its task. Rating blocks never travel again (the block layout of Spark MLlib's ALS).

The random start (that of pyml.ALS) is generated block by block on the workers from the
client's PCG64 state, not shipped. Bytes per iteration, B blocks per side on W workers, f
factors, float32:
~ 4 f (n_users + n_items) (block results gathered) + 4 f W (n_users + n_items) (broadcast)
+ 4 f^2 B (Gram matrix per task) -- independent of the number of ratings.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import _check_backend_name
from .._mf_driver import HALF_STEP, CSRArrays, als_loss
from .._blas import single_thread
from .._validation import check_csr, check_dtype_arg, check_int, check_random_state, check_scalar
from ._common import persist_quietly, progress

__all__ = ["ALS"]


# ----------------------------------------------------------------------------- block tasks
def _csr_block(R, lo: int, hi: int):
    return R[lo:hi]


def _coo_pieces(frame, cols, bounds, axis: int, n_other: int, dtype):
    """One dataframe partition cut into per-block (local row, column, value) pieces."""
    key, other, val = (frame[c].to_numpy() for c in cols)
    if key.size and (key.min() < 0 or other.min() < 0):
        raise ValueError("user and item ids must be non-negative integers")
    if key.size and other.max() >= n_other:
        raise ValueError(f"an {('item', 'user')[axis]} id {int(other.max())} is outside [0, {n_other})")
    if not np.isfinite(val).all():
        raise ValueError("ratings contain NaN or infinity")
    which = np.searchsorted(bounds, key, side="right") - 1
    return [(key[which == b] - bounds[b], other[which == b], val[which == b].astype(dtype))
            for b in range(len(bounds) - 1)]


def _assemble(pieces, b: int, rows: int, n_other: int, dtype):
    """CSR of block b from every partition's piece; duplicates summed as SciPy does."""
    import scipy.sparse as sp

    r = np.concatenate([p[b][0] for p in pieces]) if pieces else np.empty(0, np.int64)
    c = np.concatenate([p[b][1] for p in pieces]) if pieces else np.empty(0, np.int64)
    v = np.concatenate([p[b][2] for p in pieces]) if pieces else np.empty(0, dtype)
    M = sp.csr_matrix((v, (r, c)), shape=(rows, n_other), dtype=dtype)
    M.sum_duplicates()
    return M


def _solve_block(Rb, F, Gram, X0, reg, alpha, cg_steps, implicit, backend):
    X = np.array(X0, copy=True)
    with single_thread(backend):
        A = CSRArrays(Rb, F.dtype)
        HALF_STEP.get(backend)(A.indptr, A.indices, A.data, F, Gram, X, float(reg), float(alpha),
                               int(cg_steps), bool(implicit), False)
    return X


def _start_block(state: dict, offset: int, rows: int, f: int, dtype):
    """Rows [offset / f, offset / f + rows) of pyml.ALS's random start, made on the worker:
    the PCG64 stream of the client's generator advanced past the ``offset`` doubles before
    them (``Generator.random`` takes one 64-bit draw per double), so no start factors travel."""
    bg = np.random.PCG64()
    bg.state = state
    bg.advance(offset)
    return (np.random.Generator(bg).random((rows, f)) * 0.01).astype(dtype)


def _start(rng, shape, f: int, ub, ib, dt):
    """The row blocks of pyml.ALS's start X (n_users x f), then Y: delayed blocks computed on
    the workers where the generator is a PCG64 (the default), else arrays from the client."""
    import dask

    if type(rng.bit_generator) is np.random.PCG64:
        state, n_x = rng.bit_generator.state, shape[0] * f
        rng.bit_generator.advance(n_x + shape[1] * f)  # as if drawn here, as pyml.ALS does
        Xb = [dask.delayed(_start_block, pure=True)(state, int(a) * f, int(b - a), f, dt)
              for a, b in zip(ub[:-1], ub[1:])]
        Yb = [dask.delayed(_start_block, pure=True)(state, n_x + int(a) * f, int(b - a), f, dt)
              for a, b in zip(ib[:-1], ib[1:])]
        return Xb, Yb
    X = (rng.random((shape[0], f)) * 0.01).astype(dt)  # the random start of pyml.ALS
    Y = (rng.random((shape[1], f)) * 0.01).astype(dt)
    return [X[a:b] for a, b in zip(ub[:-1], ub[1:])], [Y[a:b] for a, b in zip(ib[:-1], ib[1:])]


def _stack(*blocks):
    return np.vstack(blocks)


def _gram(F):
    return np.ascontiguousarray(F.T @ F)


def _block_loss(Rb, Xb, Y, alpha, implicit):
    # the data term of pyml's ALS objective for one user block (regularisation added once)
    return als_loss(CSRArrays(Rb, Y.dtype), Xb, Y, 0.0, alpha, implicit)


# ----------------------------------------------------------------------------- estimator
class ALS:
    """Alternating least squares on Dask, with pyml's half-step kernel in every task.

    Parameters are those of :class:`pyml.ALS` (same meaning, same random start), plus
    ``n_blocks`` (blocks per side; default 2 per worker of the current client, at least 2)
    and the column names of a dataframe input.

    ``fit(interactions)`` takes a ``dask.dataframe`` with integer user and item ids and a
    rating column, or a ``scipy.sparse`` matrix (users x items). With the same seed, data and
    iterations the factors equal ``pyml.ALS``'s up to float summation order.
    ``user_factors``/``item_factors`` are NumPy arrays (``compute=False`` in ``fit`` keeps
    them as lists of dask futures/delayed blocks in ``user_blocks_``/``item_blocks_``).
    """

    def __init__(self, factors: int = 100, regularization: float = 0.01, *, iterations: int = 15,
                 implicit: bool = True, alpha: float = 1.0, cg_steps: int = 3,
                 dtype: Any = np.float32, random_state: Any = None, backend: str | None = None,
                 n_blocks: int | None = None, user_col: str = "user", item_col: str = "item",
                 rating_col: str = "rating", show_progress: bool = False,
                 compute_loss: bool = False):
        self.factors, self.regularization, self.iterations = factors, regularization, iterations
        self.implicit, self.alpha, self.cg_steps = implicit, alpha, cg_steps
        self.dtype, self.random_state, self.backend = dtype, random_state, backend
        self.n_blocks = n_blocks
        self.user_col, self.item_col, self.rating_col = user_col, item_col, rating_col
        self.show_progress, self.compute_loss = show_progress, compute_loss

    # ------------------------------------------------------------------ input
    def _n_blocks(self) -> int:
        if self.n_blocks is not None:
            return check_int(self.n_blocks, "n_blocks", min_value=1)
        try:
            from distributed import get_client

            return max(2, 2 * len(get_client().scheduler_info()["workers"]))
        except (ImportError, ValueError):
            return 2

    @staticmethod
    def _bounds(n: int, B: int) -> np.ndarray:
        return np.linspace(0, n, min(B, n) + 1).round().astype(np.int64)

    def _blocks_from_sparse(self, R, dt, B):
        import dask

        R = check_csr(R, "interactions", dtype=dt)
        if R.shape[0] == 0 or R.shape[1] == 0:
            raise ValueError(f"interactions must not be empty, got shape {R.shape}")
        if self.implicit and R.nnz and (R.data < 0).any():
            raise ValueError("interactions: implicit feedback needs non-negative ratings")
        ub, ib = self._bounds(R.shape[0], B), self._bounds(R.shape[1], B)
        Rd, Td = dask.delayed(R), dask.delayed(R.T.tocsr())
        users = [dask.delayed(_csr_block)(Rd, int(a), int(b)) for a, b in zip(ub[:-1], ub[1:])]
        items = [dask.delayed(_csr_block)(Td, int(a), int(b)) for a, b in zip(ib[:-1], ib[1:])]
        return R.shape, ub, ib, users, items

    def _blocks_from_frame(self, df, dt, B, shape):
        import dask

        cols = [self.user_col, self.item_col, self.rating_col]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"interactions has no column(s) {missing}; columns are "
                             f"{list(df.columns)} (set user_col/item_col/rating_col)")
        for c in cols[:2]:
            if df[c].dtype.kind not in "iu":
                raise TypeError(f"interactions[{c!r}] must hold integer ids, got {df[c].dtype}")
        if shape is None:
            mx = dask.compute(df[cols[0]].max(), df[cols[1]].max(), df[cols[0]].count())
            if int(mx[2]) == 0:
                raise ValueError("interactions is empty (no ratings)")
            shape = (int(mx[0]) + 1, int(mx[1]) + 1)
        n_users, n_items = (check_int(s, "shape", min_value=1) for s in shape)
        ub, ib = self._bounds(n_users, B), self._bounds(n_items, B)
        parts = df.to_delayed()
        up = [dask.delayed(_coo_pieces)(p, cols, ub, 0, n_items, dt) for p in parts]
        ip = [dask.delayed(_coo_pieces)(p, [cols[1], cols[0], cols[2]], ib, 1, n_users, dt)
              for p in parts]
        users = [dask.delayed(_assemble)(up, b, int(ub[b + 1] - ub[b]), n_items, dt)
                 for b in range(len(ub) - 1)]
        items = [dask.delayed(_assemble)(ip, b, int(ib[b + 1] - ib[b]), n_users, dt)
                 for b in range(len(ib) - 1)]
        return (n_users, n_items), ub, ib, users, items

    # ------------------------------------------------------------------ fit
    def fit(self, interactions, shape: tuple[int, int] | None = None, compute: bool = True):
        """Factorise ``interactions`` (dask dataframe of (user, item, rating) or scipy.sparse)."""
        import dask
        import scipy.sparse as sp

        f = check_int(self.factors, "factors", min_value=1)
        reg = check_scalar(self.regularization, "regularization", low=0.0)
        alpha = check_scalar(self.alpha, "alpha", low=0.0)
        iters = check_int(self.iterations, "iterations", min_value=0)
        cg = check_int(self.cg_steps, "cg_steps", min_value=1)
        dt = check_dtype_arg(self.dtype)
        if self.backend is not None:
            _check_backend_name(self.backend)
        backend = HALF_STEP.resolve(self.backend)
        if backend == "cuda":
            raise ValueError("pyml.dask.ALS runs NumPy blocks: use a CPU backend")
        if not self.implicit and reg <= 0.0:
            raise ValueError("regularization must be > 0 for explicit ALS (rows with no ratings)")
        B = self._n_blocks()
        if sp.issparse(interactions):
            shape, ub, ib, users, items = self._blocks_from_sparse(interactions, dt, B)
        elif hasattr(interactions, "to_delayed") and hasattr(interactions, "columns"):
            shape, ub, ib, users, items = self._blocks_from_frame(interactions, dt, B, shape)
        else:
            raise TypeError("interactions must be a dask.dataframe with user/item/rating columns "
                            f"or a scipy.sparse matrix, got {type(interactions).__name__}")
        users, items = list(persist_quietly(*users)), list(persist_quietly(*items))  # on workers
        Xb, Yb = _start(check_random_state(self.random_state), shape, f, ub, ib, dt)
        self.loss_: list[float] = []
        bar = progress(iters, "pyml.dask.ALS", self.show_progress)
        opts = (reg, alpha, cg, bool(self.implicit), backend)
        for _ in range(iters):
            Xb = self._half_step(users, Yb, Xb, opts)
            Yb = self._half_step(items, Xb, Yb, opts)
            if self.compute_loss:
                self.loss_.append(self._loss(users, Xb, Yb, reg, alpha))
            bar.update(1)
        bar.close()
        self.shape_, self.backend_ = shape, backend
        self.user_blocks_, self.item_blocks_ = Xb, Yb
        if compute:
            Xs, Ys = dask.compute(dask.delayed(_stack)(*Xb), dask.delayed(_stack)(*Yb))
            self.user_factors, self.item_factors = Xs, Ys
        return self

    @staticmethod
    def _half_step(blocks, other, mine, opts):
        import dask

        F = dask.delayed(_stack)(*other)   # the other side's factors, gathered once
        G = dask.delayed(_gram)(F)         # and their Gram matrix, shared by every task
        new = [dask.delayed(_solve_block)(Rb, F, G, X0, *opts) for Rb, X0 in zip(blocks, mine)]
        return list(dask.persist(*new))    # new factor blocks stay where they were computed

    def _loss(self, users, Xb, Yb, reg, alpha) -> float:
        import dask

        Y = dask.delayed(_stack)(*Yb)
        parts = [dask.delayed(_block_loss)(Rb, X, Y, alpha, bool(self.implicit))
                 for Rb, X in zip(users, Xb)]
        sq = [dask.delayed(lambda a: float((a.astype(np.float64) ** 2).sum()))(b) for b in Xb + Yb]
        data, norms = dask.compute(parts, sq)
        return float(sum(data) + 0.5 * reg * sum(norms))
