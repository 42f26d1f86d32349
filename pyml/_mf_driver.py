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
from ._validation import check_sparse_header
from .kernels.cuda import cupy

HALF_STEP = Kernel("mf", "als_half_step", ("python", "numba", "cpp", "cython", "cuda"))
SGD_EPOCH = Kernel("mf", "mf_sgd_epoch", ("python", "numba", "cpp"))
# the one read pass over a user's CSR matrix, and the item x user copy in the kernels' layout
CSR_CHECK = Kernel("mf", "csr_check", ("python", "numba", "cpp"))
CSR_TRANSPOSE = Kernel("mf", "csr_transpose", ("python", "numba", "cpp"))
# the gather part of the training loss (sum over the stored entries)
LOSS_TERMS = Kernel("mf", "als_loss_terms", ("python", "numba", "cpp"))
# top-K ranking metrics of pyml.evaluation (sums over the test users)
RANKING_METRICS = Kernel("mf", "ranking_metrics", ("python", "numba"))

INDEX_MAX = 2**31 - 1  # the kernels index users and items with int32 (entries with int64)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _device_module(backend: str):
    """numpy, or cupy for the cuda backend (factors and ratings then stay on the device)."""
    if backend == "cuda":
        return cupy()
    return np


class CSRArrays:
    """indptr (int64), indices (int32) and data of a CSR matrix in the kernels' dtypes.

    Built from a validated scipy matrix (or by :func:`csr_input`); an array already in the
    kernels' layout is used as it is (kernels only read it), any other is converted once."""

    def __init__(self, R, dtype, xp=np):
        self.shape = R.shape
        self.indptr = xp.asarray(np.ascontiguousarray(R.indptr, dtype=np.int64))
        self.indices = xp.asarray(np.ascontiguousarray(R.indices, dtype=np.int32))
        self.data = xp.asarray(np.ascontiguousarray(R.data, dtype=dtype))

    @classmethod
    def of(cls, indptr, indices, data, shape) -> "CSRArrays":
        self = cls.__new__(cls)
        self.indptr, self.indices, self.data, self.shape = indptr, indices, data, tuple(shape)
        return self

    def to(self, xp) -> "CSRArrays":
        """The same matrix with its arrays in ``xp`` (numpy, or cupy for the device)."""
        if xp is np:
            return self
        return CSRArrays.of(xp.asarray(self.indptr), xp.asarray(self.indices),
                            xp.asarray(self.data), self.shape)

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def transpose(self, backend: str | None = None) -> "CSRArrays":
        """The n_cols x n_rows matrix (item x user), one counting-sort pass of a compiled kernel."""
        fn = CSR_TRANSPOSE.get(_host_backend(CSR_TRANSPOSE, backend))
        n_cols = self.shape[1]
        return CSRArrays.of(*fn(self.indptr, self.indices, self.data, n_cols), (n_cols, self.shape[0]))


def _host_backend(kernel: Kernel, backend: str | None) -> str:
    """The fit's own backend when it has this host-side kernel, else the fastest one here."""
    return backend if backend in kernel.backends else kernel.resolve("auto")


def csr_input(R, name: str, *, dtype, nonneg: bool = False, shape=None,
              backend: str | None = None) -> tuple[CSRArrays, float]:
    """Validate and convert a user's ratings matrix in one read pass; returns the kernels'
    arrays and max |value|.

    Any scipy.sparse matrix is accepted (other formats go through SciPy's ``tocsr``, which sums
    duplicate entries). The compiled :data:`CSR_CHECK` pass refuses corrupt structure (indptr not
    starting at 0 or decreasing, indices outside [0, n_cols)), NaN/inf and, for implicit
    feedback, negative values, and finds whether the rows are sorted and free of duplicates.
    Copies: unsorted or duplicate rows are summed as SciPy does (one copy, only then); data in
    another dtype is cast (one copy of the values); int64 indices are narrowed (after the check,
    so nothing wraps); indptr becomes int64 (n_rows + 1 values). Nothing else is copied and the
    caller's arrays are never written."""
    import scipy.sparse as sp

    check_sparse_header(R, name, shape)
    if 0 in R.shape:
        raise ValueError(f"{name} must not be empty, got shape {R.shape}")
    if max(R.shape) > INDEX_MAX:
        raise ValueError(f"{name} has shape {R.shape}: the kernels index users and items with "
                         f"32-bit integers (at most {INDEX_MAX} of each)")
    if R.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {R.dtype}")
    if R.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {R.dtype}")
    if R.format != "csr":
        R = R.tocsr()
    n_rows, n_cols = R.shape
    indptr, indices, data = R.indptr, R.indices, R.data
    if indptr.dtype not in (np.int32, np.int64):
        indptr = indptr.astype(np.int64)
    if indices.dtype not in (np.int32, np.int64):
        indices = indices.astype(np.int64)
    if data.dtype not in FLOAT_DTYPES:  # bool / int ratings: the cast is needed anyway
        data = data.astype(dtype)
    if indptr.shape[0] != n_rows + 1:
        raise ValueError(f"{name}.indptr has {indptr.shape[0]} entries, a {n_rows}-row CSR matrix needs {n_rows + 1}")
    code, where, canonical, max_abs = CSR_CHECK.get(_host_backend(CSR_CHECK, backend))(
        indptr, indices, data, n_cols, bool(nonneg))
    if code:
        raise ValueError(_csr_error(name, code, where, indptr, indices, data, n_cols))
    if not canonical:  # unsorted rows or duplicate (u, i) entries: SciPy's semantics sum them
        R = sp.csr_matrix((data, indices, indptr), shape=R.shape, copy=True)
        R.sum_duplicates()
        indptr, indices, data = R.indptr, R.indices, R.data
        if not np.isfinite(data).all():
            raise ValueError(f"{name}: summing duplicate entries overflowed to infinity")
    nnz = int(indptr[-1])
    out = CSRArrays.of(np.ascontiguousarray(indptr, dtype=np.int64),
                       np.ascontiguousarray(indices[:nnz], dtype=np.int32),
                       np.ascontiguousarray(data[:nnz], dtype=dtype), R.shape)
    return out, float(max_abs)


def _csr_error(name, code, where, indptr, indices, data, n_cols) -> str:
    def row_of(k):
        return int(np.searchsorted(indptr, k, side="right") - 1)

    if code == 1:
        return f"{name}.indptr must start at 0, got {int(indptr[0])} (corrupt CSR matrix)"
    if code == 2:
        return (f"{name}.indptr decreases at row {where} ({int(indptr[where])} -> "
                f"{int(indptr[where + 1])}): corrupt CSR matrix")
    if code == 3:
        return (f"{name}.indptr[{where + 1}] = {int(indptr[where + 1])} points past the "
                f"{min(len(indices), len(data))} stored entries: corrupt CSR matrix")
    if code == 4:
        return (f"{name}.indices[{where}] = {int(indices[where])} (row {row_of(where)}) is outside "
                f"[0, {n_cols}): corrupt CSR matrix")
    if code == 5:
        return f"{name} contains NaN or infinity (first at ({row_of(where)}, {int(indices[where])}))"
    return (f"{name}: implicit feedback needs non-negative values (confidence c = 1 + alpha r), "
            f"got {float(data[where])} at ({row_of(where)}, {int(indices[where])})")


def half_step(kernel: Callable, R: CSRArrays, Y, X, reg: float, alpha: float, cg_steps: int,
              implicit: bool, exact: bool) -> None:
    """Recompute X (in place) from Y: the one place that forms Y^T Y for a half-step."""
    YtY = Y.T @ Y  # BLAS gemm once per half-step, shared by every row
    kernel(R.indptr, R.indices, R.data, Y, array_module(Y).ascontiguousarray(YtY), X,
           float(reg), float(alpha), int(cg_steps), bool(implicit), bool(exact))


def solve_rows(backend: str, R: CSRArrays, Y, X, *, reg: float, alpha: float, cg_steps: int,
               implicit: bool, exact: bool):
    """Rows of ``R`` (from :func:`csr_input`) solved against fixed ``Y`` (X: warm start, updated)."""
    with single_thread(backend):
        half_step(HALF_STEP.get(backend), R, Y, X, reg, alpha, cg_steps, implicit, exact)
    return X


def als_loss(R: CSRArrays, X, Y, reg: float, alpha: float, implicit: bool,
             backend: str | None = None, chunk: int = 1 << 18) -> float:
    """The objective of pyml.reference.mf.als_loss (float64 accumulation) without visiting the
    unobserved cells: implicit 1/2 [sum_u x_u^T YtY x_u + sum_Omega (c (p - s)^2 - s^2)],
    explicit 1/2 sum_Omega (r - s)^2, plus 1/2 reg (|X|^2 + |Y|^2). On the host the stored-entry
    sum is the compiled :data:`LOSS_TERMS` kernel (one pass, no gathered copies); on the device
    it is CuPy gathers in chunks."""
    xp = array_module(X)
    # sum_u x_u^T YtY x_u = <XtX, YtY> and |X|^2 = trace(XtX): two f x f Gram matrices in
    # float64 instead of an n x f product
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    XtX, YtY = X64.T @ X64, Y64.T @ Y64
    total = float(xp.sum(XtX * YtY)) if implicit else 0.0
    if xp is np:
        fn = LOSS_TERMS.get(_host_backend(LOSS_TERMS, backend))
        total += float(fn(R.indptr, R.indices, R.data, X, Y, float(alpha), bool(implicit)))
    else:
        # row of every stored entry (searchsorted works for NumPy and CuPy alike)
        rows = xp.searchsorted(R.indptr, xp.arange(R.data.shape[0], dtype=np.int64), side="right") - 1
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
    norms = float(xp.trace(XtX) + xp.trace(YtY))
    return 0.5 * total + 0.5 * reg * norms


def als_fit(backend: str, Rui: CSRArrays, X, Y, *, reg: float, alpha: float, iterations: int,
            cg_steps: int, implicit: bool, exact: bool, Riu: CSRArrays | None = None,
            callback: Callable[[int, float, float], Any] | None = None,
            show_progress: bool = False, compute_loss: bool = False):
    """``iterations`` of ALS on the user x item matrix ``Rui`` (from :func:`csr_input`; its
    transpose ``Riu`` is built here unless given) from the host factors X (users) and Y (items);
    returns ``(X, Y, losses)`` as host arrays (losses: one per iteration when ``compute_loss``,
    else empty; the callback then gets ``loss=None``, as implicit's does)."""
    xp = _device_module(backend)
    if Riu is None:
        Riu = Rui.transpose(backend)
    X, Y = xp.asarray(X), xp.asarray(Y)
    Rui, Riu = Rui.to(xp), Riu.to(xp)
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


# A fit shorter than this shows no progress bar (tqdm's `delay`), and does not import tqdm
# (15-50 ms: tqdm reads its version from the package metadata at import).
BAR_DELAY = 0.25


def _progress_bar(total: int, backend: str, done: int):
    """A tqdm bar with ``done`` of ``total`` iterations already made (None without tqdm)."""
    try:
        from tqdm import tqdm
    except ImportError:  # progress is cosmetic; tqdm is optional
        return None
    return tqdm(total=total, initial=done, desc=f"ALS ({backend})")


def _als_iterations(backend, Rui, Riu, X, Y, *, reg, alpha, iterations, cg_steps, implicit, exact,
                    callback, show_progress, compute_loss) -> list[float]:
    kernel = HALF_STEP.get(backend)
    losses: list[float] = []
    bar = None
    start = time.perf_counter()
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
            loss = als_loss(Rui, X, Y, reg, alpha, implicit, backend)
            losses.append(loss)
        if show_progress and bar is None and time.perf_counter() - start >= BAR_DELAY:
            bar = _progress_bar(iterations, backend, done=it)
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
