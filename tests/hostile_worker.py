"""Worker process of the hostile-input sweep (tests/test_hostile.py).

Reads one JSON case per stdin line -- {"spec", "cls", "u", "k", "backend", "verify"} --
builds the corrupted input deterministically from it, calls the backend (and, once per
case, the python reference) on fresh copies, and answers one line "@@" + JSON: the
outcome ("error" = ValueError/TypeError/FloatingPointError naming the argument, "equal" =
a result equal to the reference's, "skip" = no kernel for that backend, or a failure:
"unclear", "refused", "wrong", "mutated") and a message. A crash kills only this process;
the parent records it and starts a new worker.
"""
from __future__ import annotations

import copy
import json
import re
import sys
import warnings

import numpy as np
import scipy.sparse as sp

import pyml
from public_calls import BY_NAME, arrays_of

# Classes whose input is valid (same values, another layout): refusing them is a failure.
VALID_LAYOUTS = ("strided", "fortran", "negative_stride", "read_only")
ARRAY_CLASSES = ("nan", "inf", "empty", "wrong_ndim", "mismatch", "int", "bool", "complex",
                 "object", "zero_d", "list", "none") + VALID_LAYOUTS
CLASSES = ARRAY_CLASSES + ("hyper", "corrupt")


def _strided(a: np.ndarray) -> np.ndarray:
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype) if a.ndim else a
    if not a.ndim:
        return a
    big[..., ::2] = a
    return big[..., ::2]


def _negative(a: np.ndarray) -> np.ndarray:
    if not a.ndim:
        return a
    return np.flip(np.flip(a).copy())  # same values, negative strides


def _dense(a, cls: str, u: float, k: int, other_len: int | None = None):
    a = np.asarray(a)
    flat = lambda: int(u * a.size) % max(a.size, 1)
    if cls in ("nan", "inf"):
        b = a.astype(np.float64, copy=True)
        b.flat[flat()] = np.nan if cls == "nan" else (np.inf if k % 2 else -np.inf)
        return b
    if cls == "empty":
        return a[:0] if a.ndim else np.zeros(0)
    if cls == "wrong_ndim":
        return a[None] if k % 2 or a.ndim <= 1 else a.reshape(-1)
    if cls == "mismatch":
        axis = k % max(a.ndim, 1)
        return np.concatenate([a, np.take(a, [0], axis=axis)], axis=axis) if a.ndim else a
    if cls == "int":
        return np.round(a * 3).astype(np.int64)
    if cls == "bool":
        return a > np.median(a)
    if cls == "complex":
        return a.astype(np.complex128)
    if cls == "object":
        return a.astype(object)
    if cls == "zero_d":
        return np.float64(a.flat[0]) if k % 2 else np.array(a.flat[0])
    if cls == "list":
        return a.tolist()
    if cls == "strided":
        return _strided(a)
    if cls == "fortran":
        return np.asfortranarray(a)
    if cls == "negative_stride":
        return _negative(a)
    if cls == "read_only":
        b = a.copy()
        b.setflags(write=False)
        return b
    raise AssertionError(cls)


def _sparse(R, cls: str, u: float, k: int):
    R = R.copy()
    if cls in ("nan", "inf"):
        R.data[int(u * R.nnz) % R.nnz] = np.nan if cls == "nan" else np.inf
        return R
    if cls == "empty":
        return sp.csr_matrix((0, R.shape[1])) if k % 2 else sp.csr_matrix((0, 0))
    if cls == "wrong_ndim":
        return R.toarray().ravel()
    if cls == "mismatch":
        return sp.vstack([R, R[:1]]).tocsr() if k % 2 else sp.hstack([R, R[:, :1]]).tocsr()
    if cls == "int":
        return R.astype(np.int64)
    if cls == "bool":
        return R.astype(bool)
    if cls == "complex":
        return R.astype(np.complex128)
    if cls == "object":
        return np.array(R.toarray(), dtype=object)
    if cls == "zero_d":
        return np.float64(1.0)
    if cls == "list":
        return R.toarray().tolist()
    if cls == "strided":  # the sparse counterpart: COO with shuffled entries, as users build it
        C = R.tocoo()
        p = np.random.default_rng(k).permutation(C.nnz)
        return sp.coo_matrix((C.data[p], (C.row[p], C.col[p])), shape=R.shape)
    if cls == "fortran":
        return R.tocsc()
    if cls == "negative_stride":  # unsorted column indices within rows
        C = R.tocoo()
        p = np.argsort(-C.col, kind="stable")
        return sp.csr_matrix((C.data[p], (C.row[p], C.col[p])), shape=R.shape)
    if cls == "read_only":
        for arr in (R.data, R.indices, R.indptr):
            arr.setflags(write=False)
        return R
    if cls == "corrupt":
        R.indices = R.indices.copy()
        R.indptr = R.indptr.copy()
        if k % 3 == 0:
            R.indices[int(u * R.nnz) % R.nnz] = R.shape[1] + 10**6
        elif k % 3 == 1:
            R.indices[int(u * R.nnz) % R.nnz] = -5
        else:
            i = 1 + int(u * (R.shape[0] - 1))
            R.indptr[i] = R.indptr[-1] + 3  # indptr no longer non-decreasing
        return R
    raise AssertionError(cls)


def _corrupt_env(env, u: float, k: int):
    env = copy.deepcopy(env)
    S = env.n_states
    if k % 4 == 0:
        env.next_state = env.next_state.copy()
        env.next_state.flat[int(u * env.next_state.size)] = 10**6
    elif k % 4 == 1:
        env.next_state = env.next_state.copy()
        env.next_state.flat[int(u * env.next_state.size)] = -5
    elif k % 4 == 2:
        env.start = S + 999
    else:
        env.reward = env.reward.copy()
        env.reward.flat[int(u * env.reward.size)] = np.nan
    return env


def build(case: dict) -> tuple[dict, str | None]:
    """The corrupted keyword arguments and the argument name an error must mention."""
    spec = BY_NAME[case["spec"]]
    kw = spec.build(np.random.default_rng(0))
    cls, u, k = case["cls"], case["u"], case["k"]
    if case.get("base"):  # the valid call itself (warm-up)
        return kw, None
    if cls == "hyper":
        items = [(n, v) for n, vs in spec.params.items() for v in vs]
        if not items:
            return kw, None
        name, value = items[k % len(items)]
        kw[name] = value
        return kw, name
    if cls == "corrupt":
        if "env" in kw:
            kw["env"] = _corrupt_env(kw["env"], u, k)
            return kw, "env"
        sparse = [n for n in spec.arrays if sp.issparse(kw[n]) or
                  (isinstance(kw[n], list) and kw[n] and sp.issparse(kw[n][0]))]
        if not sparse:
            return kw, None
        name = sparse[k % len(sparse)]
        kw[name] = (_sparse(kw[name], cls, u, k) if sp.issparse(kw[name])
                    else [_sparse(kw[name][0], cls, u, k)] + kw[name][1:])
        return kw, name
    VALUE_CHANGING = ("int", "bool")
    pool = [n for n in spec.arrays if n not in spec.derived] if cls in VALUE_CHANGING else spec.arrays
    name = pool[k % len(pool)]
    v = kw[name]
    if cls == "none":
        kw[name] = None
    elif sp.issparse(v):
        kw[name] = _sparse(v, cls, u, k)
    elif isinstance(v, list) and v and sp.issparse(v[0]):  # list of CSR per action
        kw[name] = [_sparse(v[0], cls, u, k)] + v[1:] if cls not in ("list", "zero_d") else \
            _sparse(v[0], cls, u, k)
    else:
        kw[name] = _dense(v, cls, u, k)
    if cls in VALUE_CHANGING and spec.rederive is not None:
        kw = spec.rederive(kw)
    return kw, name


def snapshot(kw: dict) -> list:
    """Copies of every array the call receives (to prove none was modified)."""
    out = []
    for n, v in sorted(kw.items()):
        if isinstance(v, np.ndarray):
            out.append((n, v.copy()))
        elif sp.issparse(v):
            out.append((n, v.copy()))
        elif isinstance(v, list) and v and sp.issparse(v[0]):
            out.append((n, [m.copy() for m in v]))
        elif hasattr(v, "next_state"):
            out.append((n, (v.next_state.copy(), v.reward.copy(), v.start)))
    return out


def _same(a, b) -> bool:
    if sp.issparse(a):
        if a.format != b.format or a.shape != b.shape:
            return False
        parts = ("data", "row", "col") if a.format == "coo" else ("data", "indices", "indptr")
        return all(np.array_equal(getattr(a, p), getattr(b, p), equal_nan=p == "data") for p in parts)
    if isinstance(a, list):
        return all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            return a.shape == b.shape and all(x == y or (x != x and y != y) for x, y in zip(a.flat, b.flat))
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    return a == b


def unchanged(before: list, kw: dict) -> bool:
    now = dict(snapshot(kw))
    return all(_same(v, now[n]) for n, v in before)


def names(message: str, name: str | None) -> bool:
    if name is None:
        return True
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message) is not None


def close(got: list, ref: list) -> tuple[bool, str]:
    if len(got) != len(ref):
        return False, f"{len(got)} outputs, the reference gives {len(ref)}"
    for i, (a, b) in enumerate(zip(got, ref)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False, f"output {i}: shape {a.shape}, reference {b.shape}"
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            fin = np.isfinite(b64)
            scale = max(1.0, float(np.max(np.abs(b64[fin]))) if fin.any() else 1.0)
            # Loose on purpose (10 sqrt(eps) of the scale): the loop tests hold the tight
            # tolerance rule; this sweep looks for garbage, not for the last ulps.
            eps = np.finfo(np.float32 if np.float32 in (a.dtype, b.dtype) else np.float64).eps
            if not np.allclose(a64, b64, rtol=0, atol=10 * np.sqrt(eps) * scale, equal_nan=True):
                err = np.nanmax(np.abs(a64 - b64)) if a.size else 0
                return False, f"output {i}: max error {err:.3g} (scale {scale:.3g})"
        elif not np.array_equal(a, b):
            return False, f"output {i}: {int(np.sum(a != b))} of {a.size} entries differ"
    return True, ""


CLEAR = (ValueError, TypeError, FloatingPointError)


def call(spec, backend: str, case: dict):
    kw, name = build(case)
    before = snapshot(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = spec.call(backend=backend, **kw)
        except pyml.BackendUnavailableError as exc:
            return ("skip", str(exc)) if "has no" in str(exc) else ("unclear", str(exc)), None, name
        except CLEAR as exc:
            status = "mutated" if not unchanged(before, kw) else "error"
            return (status, f"{type(exc).__name__}: {exc}"), exc, name
        except BaseException as exc:  # noqa: BLE001 - any other exception is a finding
            return ("unclear", f"{type(exc).__name__}: {exc}"), exc, name
    if not unchanged(before, kw):
        return ("mutated", "an input was modified"), None, name
    return ("ok", arrays_of(out)), None, name


_REF: dict[str, tuple] = {}  # the reference's answer for the current case (one entry)


def reference(case: dict):
    key = json.dumps({k: v for k, v in case.items() if k != "backend"}, sort_keys=True)
    if key not in _REF:
        _REF.clear()
        spec = BY_NAME[case["spec"]]
        (kind, val), _, _ = call(spec, "python", case)
        _REF[key] = (kind, val)
    return _REF[key]


def run_case(case: dict) -> tuple[str, str]:
    """(outcome, message) of ``case["backend"]`` on the case; ``case["verify"]`` False means
    the reference itself failed (its outcome is reported on the python row), so a result
    cannot be checked: "unverified"."""
    spec, b = BY_NAME[case["spec"]], case["backend"]
    (kind, val), _, name = call(spec, b, case)
    if kind == "error":
        if case["cls"] in VALID_LAYOUTS:
            return "refused", val[:300]  # a valid input in another layout must be accepted
        if not names(val, name) and not (case["cls"] == "mismatch" and
                                         any(names(val, n) for n in spec.arrays)):
            return "unclear", val[:300]
        return "error", val[:300]
    if kind != "ok":
        return kind, str(val)[:300]
    if not case.get("verify", True):
        return "unverified", ""
    ref_kind, ref = reference(case) if b != "python" else ("ok", val)
    if ref_kind == "ok":
        same, why = close(val, ref)
        return ("equal", "") if same else ("wrong", why)
    if ref_kind == "error":
        return "wrong", f"returned a result where the reference raised {ref[:200]}"
    return "unverified", f"reference: {ref_kind}"


def main() -> None:
    for line in sys.stdin:
        case = json.loads(line)
        print("@@" + json.dumps(run_case(case)), flush=True)


if __name__ == "__main__":
    main()
