"""The validated MDP and the layouts its kernels read: built in one compiled read pass over P
(finite, non-negative, rows summing to 1, and for CSR a monotonic indptr and indices in
[0, S)), with no copy of P when it is already in a kernel's layout.

Full-size copies of P made while building a model (the documented budget, tested):
- dense float32/float64 C-contiguous P: none (other dtypes or strides: one conversion);
- CSR matrices: one, the state-major CSR the cpp and numba kernels read (row s*A + a =
  P(. | s, a), a state's actions adjacent), written by the same compiled pass that checks
  the matrices; int32 indices where S and the entry count fit (exact), probabilities in the
  caller's dtype (float64 unless every matrix is float32). Other formats, data dtypes or mixed
  index dtypes: one more conversion of the matrices concerned. The python backend reads the
  caller's matrices in place; the cuda backend an action-major CSR built on first use.
The model keeps references to the caller's arrays: do not modify P while it is in use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._backend import is_cupy
from ._mdp_driver import CHECK_CSR, CHECK_DENSE, STATE_MAJOR_CSR
from ._validation import check_array
from .kernels.cuda import cupy

INT32_MAX = np.iinfo(np.int32).max


@dataclass
class Model:
    """A validated MDP: dense P (A, S, S), or A CSR matrices ``csr = (indptr, indices, data)``
    (tuples of A arrays, row s of matrix a = P(. | s, a)) and their state-major CSR ``layout``
    = (indptr (S*A + 1,), indices, data), row s*A + a = P(. | s, a); R (S, A) expected reward."""

    S: int
    A: int
    R: Any                              # (S, A) float64 expected reward
    dtype: np.dtype                     # dtype of P (float32 P halves the bytes per sweep)
    P: Any = None
    csr: tuple | None = None
    layout: tuple | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def sparse(self) -> bool:
        return self.P is None

    def matrix(self, a: int):
        """P_a as a scipy.sparse CSR matrix sharing the model's arrays."""
        import scipy.sparse as sp

        indptr, indices, data = (x[a] for x in self.csr)
        return sp.csr_matrix((data, indices, indptr), shape=(self.S, self.S), copy=False)

    def state_major(self):
        """The state-major CSR (indptr, indices, data) the cpp and numba kernels read: built by
        the check pass, or here with NumPy where no compiled builder is available."""
        if self.layout is None:
            self.layout = _state_major_numpy(*self.csr, self.S)
        return self.layout

    def stacked(self):
        """One action-major CSR (indptr over A*S rows, int64) for the numba and cuda kernels,
        built once (a copy of every matrix) and cached."""
        if "stacked" not in self._cache:
            indptr, indices, data = self.csr
            offsets = np.cumsum([0] + [int(p[-1]) for p in indptr])
            ip = np.concatenate([p[:-1].astype(np.int64) + o for p, o in zip(indptr, offsets)]
                                + [np.array([offsets[-1]], np.int64)])
            ix = np.concatenate([i[: p[-1]] for i, p in zip(indices, indptr)])
            d = np.concatenate([x[: p[-1]] for x, p in zip(data, indptr)])
            self._cache["stacked"] = (ip, ix, d)
        return self._cache["stacked"]

    def on_device(self) -> "Model":
        """This model with its arrays in GPU memory (copied once, cached)."""
        if "device" not in self._cache:
            cp = cupy()
            if self.sparse:
                if self.S > INT32_MAX:
                    raise ValueError(f"the cuda kernel indexes states with 32 bits; S={self.S} is too large")
                ip, ix, d = self.stacked()
                dev = Model(self.S, self.A, cp.asarray(self.R), self.dtype,
                            csr=(cp.asarray(ip), cp.asarray(ix, dtype=cp.int32), cp.asarray(d)))
                dev._cache["stacked"] = dev.csr
            else:
                dev = Model(self.S, self.A, cp.asarray(self.R), self.dtype, P=cp.asarray(self.P))
            self._cache["device"] = dev
        return self._cache["device"]

    def P_policy(self, policy: np.ndarray):
        """P_pi (S, S): row s is P(. | s, policy[s])."""
        if not self.sparse:
            return np.asarray(self.P)[policy, np.arange(self.S), :].astype(np.float64)
        import scipy.sparse as sp

        return sum(sp.diags((policy == a).astype(np.float64)) @ self.matrix(a).astype(np.float64)
                   for a in range(self.A)).tocsr()

    def expected_next(self, V: np.ndarray) -> np.ndarray:
        """sum_s' P(s'|s, a) V(s') as (S, A), vectorised (BLAS / SciPy)."""
        if not self.sparse:
            return np.einsum("ast,t->sa", np.asarray(self.P), V.astype(self.dtype)).astype(np.float64)
        V = V.astype(np.float64)
        return np.stack([self.matrix(a) @ V for a in range(self.A)], axis=1)


def row_tolerance(dtype: np.dtype, S: int) -> float:
    # A validation bound, not the kernel-vs-reference rule of pyml._verify: a distribution
    # normalised in `dtype` sums to 1 within about S roundings of that dtype.
    return 10.0 * float(np.finfo(dtype).eps) * max(S, 10)


def _checker(kernel):
    # The check runs on the fastest compiled backend here whatever backend the solve uses:
    # it is part of building the model, not a kernel the user chooses.
    return kernel.get(kernel.resolve("auto"))


def _refuse_dense(verdict, S: int, tol: float) -> None:
    status, row, col, value = verdict
    if status == 0:
        return
    a, s = divmod(int(row), S)
    if status == 1:
        raise ValueError(f"P contains NaN or infinity (first at index ({a}, {s}, {col})); "
                         "transition probabilities must be finite")
    if status == 2:
        raise ValueError(f"P has a negative transition probability at ({a}, {s}, {col}) ({value:g})")
    raise ValueError(f"P[{a}, {s}, :] sums to {value:.9g}, expected 1 (tolerance {tol:.1e})")


def _refuse_csr(verdict, a: int, S: int, stored: int, tol: float) -> None:
    status, row, col, value = verdict
    if status == 0:
        return
    name = f"P[{a}]"
    if status == 4:
        raise ValueError(f"{name} has a corrupt indptr at row {row}: it must have S+1={S + 1} entries, "
                         f"start at 0, never decrease and end within the {stored} stored entries")
    if status == 5:
        raise ValueError(f"{name} row {row} has column index {int(value)} outside [0, {S})")
    if status == 1:
        raise ValueError(f"{name} contains NaN or infinity (first at ({row}, {col})); "
                         "transition probabilities must be finite")
    if status == 2:
        raise ValueError(f"{name} has a negative transition probability ({value:g}) at ({row}, {col})")
    raise ValueError(f"{name} row {row} sums to {value:.9g}, expected 1 (tolerance {tol:.1e})")


def dense_P(P: Any):
    """Dense P (A, S, S) as float32/float64 C-contiguous, checked in one pass."""
    if is_cupy(P):
        return _dense_P_gpu(P)
    P = check_array(P, "P", ndim=3, check_finite=False)  # no copy for float C-contiguous input
    A, S, S2 = P.shape
    if S != S2:
        raise ValueError(f"P must have shape (A, S, S), got {P.shape}")
    tol = row_tolerance(P.dtype, S)
    _refuse_dense(_checker(CHECK_DENSE)(P, tol), S, tol)
    return P


def _dense_P_gpu(P):
    cp = cupy()
    P = check_array(P, "P", ndim=3, check_finite=False)
    A, S, S2 = P.shape
    if S != S2:
        raise ValueError(f"P must have shape (A, S, S), got {P.shape}")
    tol = row_tolerance(P.dtype, S)
    sums = P.sum(axis=2, dtype=cp.float64)
    bad_entry = ~((P >= 0) & cp.isfinite(P)).all(axis=2)
    bad = (bad_entry | ~(cp.abs(sums - 1.0) <= tol)).ravel()
    if bool(bad.any()):  # describe the first bad row on the host (one row only)
        row = int(cp.argmax(bad))
        a, s = divmod(row, S)
        values = cp.asnumpy(P[a, s]).astype(np.float64)
        finite = np.isfinite(values)
        if not finite.all():
            j = int(np.argmin(finite))
            verdict = (1, row, j, values[j])
        elif (values < 0).any():
            j = int(np.argmax(values < 0))
            verdict = (2, row, j, values[j])
        else:
            verdict = (3, row, -1, float(sums[a, s]))
        _refuse_dense(verdict, S, tol)
    return P


def _state_major_numpy(indptr, indices, data, S: int):
    """The state-major CSR of checked matrices, by NumPy (used only without the cpp backend)."""
    A = len(indptr)
    counts = np.stack([np.diff(p.astype(np.int64)) for p in indptr], axis=1)  # (S, A)
    ip = np.zeros(S * A + 1, np.int64)
    np.cumsum(counts.ravel(), out=ip[1:])
    starts = ip[:-1].reshape(S, A)
    ix = np.empty(int(ip[-1]), indices[0].dtype)
    d = np.empty(int(ip[-1]), data[0].dtype)
    for a in range(A):
        n = int(indptr[a][-1])
        dest = np.repeat(starts[:, a] - indptr[a][:-1], counts[:, a]) + np.arange(n)
        ix[dest] = indices[a][:n]
        d[dest] = data[a][:n]
    return ip, ix, d


def _check_and_lay_out(indptr, indices, data, S: int, tol: float):
    """One compiled pass: check every matrix and write the state-major CSR; on a failure the
    per-matrix check says what is wrong where. None when no compiled builder is available
    (the matrices are then checked here and laid out on first use)."""
    be = STATE_MAJOR_CSR.resolve("auto")
    ok = False
    if be in STATE_MAJOR_CSR.backends:
        build = STATE_MAJOR_CSR.get(be)
        ok, ip, ix, d = build(list(indptr), list(indices), list(data), S, tol)
        if ok:
            return ip, ix, d
    check = _checker(CHECK_CSR)
    for a in range(len(indptr)):
        _refuse_csr(check(indptr[a], indices[a], data[a], S, tol), a, S,
                    min(indices[a].size, data[a].size), tol)
    if be not in STATE_MAJOR_CSR.backends:
        return None
    # every row passed check_csr: only a sum on the tolerance's edge, summed in another
    # order, can have failed the fused pass; lay out without the sum test
    ok, ip, ix, d = build(list(indptr), list(indices), list(data), S, float("inf"))
    if not ok:
        raise RuntimeError("pyml: the state-major CSR check disagrees with check_csr (a bug)")
    return ip, ix, d


def sparse_P(mats) -> tuple[int, np.dtype, tuple, tuple | None]:
    """A list of A scipy.sparse (S, S) matrices as CSR arrays in the kernels' dtypes, checked
    in one compiled pass that also writes their state-major CSR; returns
    (S, dtype, (indptr, indices, data), state-major (indptr, indices, data) or None)."""
    import scipy.sparse as sp

    if len(mats) == 0:
        raise ValueError("P must hold at least one action, got an empty list")
    csr = []
    for a, m in enumerate(mats):
        if not sp.issparse(m):
            raise TypeError(f"P[{a}] must be a scipy.sparse matrix like P[0], got {type(m).__name__}")
        if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape != mats[0].shape:
            raise ValueError(f"P[{a}] must have shape (S, S) like P[0] {mats[0].shape}, got {m.shape}")
        if m.dtype.kind == "c":
            raise TypeError(f"P[{a}] must be real, got complex dtype {m.dtype}")
        if m.dtype.kind not in "biuf":
            raise TypeError(f"P[{a}] must be numeric, got dtype {m.dtype}")
        if m.format != "csr":
            m = m.tocsr()  # the layout truly differs: one conversion
        csr.append(m)
    S = csr[0].shape[0]
    if S == 0:
        raise ValueError("P must have at least one state, got S=0")
    dtype = np.dtype(np.float32) if all(m.dtype == np.float32 for m in csr) else np.dtype(np.float64)
    for a, m in enumerate(csr):
        if m.indptr.dtype.kind not in "iu" or m.indices.dtype.kind not in "iu":
            raise TypeError(f"P[{a}] must have integer indptr and indices")
    # SciPy keeps indptr and indices in one dtype; widen (never narrow) when they differ
    small = all(m.indptr.dtype == np.int32 and m.indices.dtype == np.int32 for m in csr)
    itype = np.dtype(np.int32) if small else np.dtype(np.int64)
    indptr = tuple(np.ascontiguousarray(m.indptr, dtype=itype) for m in csr)
    indices = tuple(np.ascontiguousarray(m.indices, dtype=itype) for m in csr)
    data = tuple(np.ascontiguousarray(m.data, dtype=dtype) for m in csr)
    tol = row_tolerance(dtype, S)
    layout = _check_and_lay_out(indptr, indices, data, S, tol)
    return S, dtype, (indptr, indices, data), layout


def expected_reward(R: Any, S: int, A: int, model: Model, check_finite: bool):
    """R as (S, A) float64: from (S, A), (S,) or (A, S, S) (reduced once with P)."""
    R = check_array(R, "R", ndim=(1, 2, 3), dtype=np.float64, check_finite=check_finite)
    if R.ndim == 1:
        if R.shape != (S,):
            raise ValueError(f"R of shape (S,) must have S={S} entries, got {R.shape}")
        return np.repeat(R[:, None], A, axis=1)
    if R.ndim == 2:
        if R.shape != (S, A):
            raise ValueError(f"R must have shape (S, A) = ({S}, {A}), got {R.shape}")
        return R
    if R.shape != (A, S, S):
        raise ValueError(f"R of shape (A, S, S) must be ({A}, {S}, {S}), got {R.shape}")
    # Expected reward sum_s' P(s'|s,a) R(a,s,s'), computed once.
    if model.sparse:
        Rh = np.asarray(R.get() if is_cupy(R) else R)
        return np.stack([np.asarray(model.matrix(a).multiply(Rh[a]).sum(axis=1)).ravel()
                         for a in range(A)], axis=1)
    xp = cupy() if is_cupy(model.P) else np
    return xp.ascontiguousarray(xp.einsum("ast,ast->sa", model.P, R, dtype=xp.float64))


def build(P: Any, R: Any, check_finite: bool = True) -> Model:
    """Validate P (dense (A, S, S), nested lists, or a list of A scipy.sparse (S, S)) and R.

    P is always checked (a probability must be finite); ``check_finite`` applies to R.
    """
    import scipy.sparse as sp

    if sp.issparse(P):
        raise TypeError("P must be a dense (A, S, S) array or a list of A sparse (S, S) matrices, "
                        "got a single sparse matrix")
    if isinstance(P, (list, tuple)) and any(sp.issparse(m) for m in P):
        S, dtype, csr, layout = sparse_P(P)
        model = Model(S, len(csr[0]), None, dtype, csr=csr, layout=layout)
    else:
        Pd = dense_P(P)
        model = Model(Pd.shape[1], Pd.shape[0], None, Pd.dtype, P=Pd)
    if model.S == 0:
        raise ValueError("P must have at least one state, got S=0")
    model.R = expected_reward(R, model.S, model.A, model, check_finite)
    return model
