"""The one validation layer: every public entry point calls these before any kernel runs.

Rules: ints/bools are converted to float, complex and object
arrays are refused, NaN/inf are refused with the position of the first bad value,
empty arrays are refused, non-contiguous arrays are copied (never silently wrong), and
nothing the caller passed is modified in place.
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Iterable

import numpy as np

from ._backend import array_module, is_cupy

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(x: Any) -> str:
    return f"{type(x).__name__} of shape {getattr(x, 'shape', '?')} and dtype {getattr(x, 'dtype', '?')}"


def check_array(x: Any, name: str, *, ndim: int | Iterable[int] | None = None,
                dtype: Any = None, allow_empty: bool = False, check_finite: bool = True,
                order: str = "C", finite_hint: bool = False):
    """Return ``x`` as a contiguous float32/float64 NumPy or CuPy array, or raise.

    dtype=None keeps float32/float64 and converts integer/bool input to float64;
    a dtype forces that dtype. Returns a copy only when conversion is needed. Nested
    lists and other array-likes are accepted wherever arrays are.
    ``finite_hint=True`` (only for callers that have a ``check_finite`` parameter) adds
    "pass check_finite=False to skip this check" to the NaN/inf error.

    >>> check_array([[1, 2]], "X").dtype
    dtype('float64')
    >>> check_array([[1.0, float("nan")]], "X")
    Traceback (most recent call last):
    ...
    ValueError: X contains NaN or infinity (first at index (0, 1))
    >>> check_array([[1.0, float("inf")]], "x", finite_hint=True)
    Traceback (most recent call last):
    ...
    ValueError: x contains NaN or infinity (first at index (0, 1)); pass check_finite=False to skip this check
    """
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    xp = array_module(x)
    if not is_cupy(x):
        if hasattr(x, "toarray") or type(x).__module__.startswith("scipy.sparse"):
            raise TypeError(f"{name} must be a dense array, got a sparse matrix ({type(x).__name__})")
        try:
            x = np.asarray(x)
        except Exception as exc:
            raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc
    kind = x.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {x.dtype}")
    if kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must be {want}-dimensional, got {x.ndim} dimensions (shape {x.shape})")
    if not allow_empty and x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    if dtype is not None:
        target = np.dtype(dtype)
    elif x.dtype in FLOAT_DTYPES:
        target = x.dtype
    else:
        target = np.dtype(np.float64)
    if target.kind != "f":
        raise TypeError(f"{name}: dtype must be a floating type, got {target}")
    if order == "C":
        x = xp.ascontiguousarray(x, dtype=target)
    else:
        x = xp.asfortranarray(x, dtype=target)
    if check_finite:
        assert_finite(x, name, finite_hint=finite_hint)
    return x


def assert_finite(x: Any, name: str, *, finite_hint: bool = False) -> None:
    """Raise ValueError naming ``name`` and the first NaN/inf position, if there is one."""
    xp = array_module(x)
    finite = xp.isfinite(x)
    if not bool(finite.all()):
        bad = tuple(int(i) for i in np.argwhere(~np.asarray(finite.get() if is_cupy(finite) else finite))[0])
        hint = "; pass check_finite=False to skip this check" if finite_hint else ""
        raise ValueError(f"{name} contains NaN or infinity (first at index {bad}){hint}")


def check_not_none(value: Any, name: str, expected: str) -> Any:
    """``value`` unless it is None: a TypeError naming the argument and what it must be
    (instead of "'NoneType' object is not iterable" deep inside)."""
    if value is None:
        raise TypeError(f"{name} must be {expected}, got None")
    return value


def check_int_sequence(value: Any, name: str, *, length: int | Iterable[int] | None = None,
                       min_value: int | None = None) -> tuple[int, ...]:
    """A tuple of integers (e.g. ``input_shape``, ``actions``), each >= ``min_value``."""
    check_not_none(value, name, "a sequence of integers")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence of integers, got {type(value).__name__} {value!r}")
    items = tuple(value.tolist() if isinstance(value, np.ndarray) else value)
    if length is not None:
        allowed = (length,) if isinstance(length, int) else tuple(length)
        if len(items) not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} entries, got {len(items)} ({value!r})")
    return tuple(check_int(v, f"{name}[{i}]", min_value=min_value) for i, v in enumerate(items))


def check_memory(nbytes: float, what: str) -> None:
    """Fail fast, before allocating, when ``what`` needs more memory than this machine has."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    if nbytes > total:
        raise ValueError(f"{what} needs {nbytes / 2**30:.1f} GiB of memory, more than the "
                         f"{total / 2**30:.1f} GiB this machine has")


def common_float_dtype(*arrays: Any) -> np.dtype:
    """float32 when every array is float32, else float64."""
    if all(a.dtype == np.float32 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def check_dtype_arg(dtype: Any, name: str = "dtype") -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def check_int(value: Any, name: str, *, min_value: int | None = None,
              max_value: int | None = None) -> int:
    """An integer within [min_value, max_value] (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {value}")
    if max_value is not None and value > max_value:
        raise ValueError(f"{name} must be <= {max_value}, got {value}")
    return value


def check_scalar(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    """A finite real number within the given interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {value}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        raise ValueError(f"{name} must be {'<=' if high_inclusive else '<'} {high}, got {value}")
    return value


def check_random_state(seed: Any) -> np.random.Generator:
    """None, an int, a Generator or a RandomState -> a numpy Generator."""
    if seed is None or isinstance(seed, (numbers.Integral, np.random.SeedSequence)):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.RandomState):
        return np.random.default_rng(seed.randint(0, 2**31 - 1))
    raise TypeError(f"random_state must be None, an int or a numpy Generator, got {type(seed).__name__}")


def check_sparse_header(R: Any, name: str,
                        shape: tuple[int | None, int | None] | None = None) -> None:
    """``R`` is a 2-D scipy.sparse matrix of the given shape (None = any size on that axis)."""
    import scipy.sparse as sp

    if not sp.issparse(R):
        raise TypeError(f"{name} must be a scipy.sparse matrix (CSR), got {_describe(R)}")
    if R.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got {R.ndim}")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, R.shape)):
            if want is not None and want != got:
                raise ValueError(f"{name} must have shape {shape} (None = any), got {R.shape} (axis {axis})")


def check_csr(R: Any, name: str, *, shape: tuple[int | None, int | None] | None = None,
              dtype: Any = None, check_finite: bool = True):
    """A scipy.sparse CSR matrix with sorted indices, copied (never modified) if converted."""
    import scipy.sparse as sp

    check_sparse_header(R, name, shape)
    if R.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {R.dtype}")
    if R.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {R.dtype}")
    if R.format == "csr":
        check_csr_structure(R.indptr, R.indices, R.shape, name)
    target = np.dtype(dtype) if dtype is not None else (
        R.dtype if R.dtype in FLOAT_DTYPES else np.dtype(np.float64))
    R = sp.csr_matrix(R, dtype=target, copy=True)
    R.sort_indices()
    if check_finite and R.nnz and not np.isfinite(R.data).all():
        k = int(np.argmin(np.isfinite(R.data)))
        row = int(np.searchsorted(R.indptr, k, side="right") - 1)
        raise ValueError(f"{name} contains NaN or infinity (first at ({row}, {int(R.indices[k])}))")
    return R


def check_csr_structure(indptr: Any, indices: Any, shape: tuple[int, int], name: str) -> None:
    """Refuse a corrupt CSR matrix before a kernel reads out of bounds: ``indptr`` of length
    rows + 1 starting at 0, non-decreasing, ending at len(indices); column indices in
    [0, columns). Index arrays may be int32 or int64; no index is narrowed."""
    n_rows, n_cols = (int(v) for v in shape)
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        raise TypeError(f"{name}: CSR index arrays must be integers, got indptr {indptr.dtype}, "
                        f"indices {indices.dtype}")
    if indptr.ndim != 1 or indptr.shape[0] != n_rows + 1:
        raise ValueError(f"{name}: indptr must have rows + 1 = {n_rows + 1} entries, got shape {indptr.shape}")
    if int(indptr[0]) != 0 or int(indptr[-1]) != indices.shape[0]:
        raise ValueError(f"{name}: indptr must start at 0 and end at nnz = {indices.shape[0]}, "
                         f"got {int(indptr[0])} ... {int(indptr[-1])}")
    if n_rows and (np.diff(indptr) < 0).any():
        row = int(np.argmax(np.diff(indptr) < 0))
        raise ValueError(f"{name}: indptr must be non-decreasing, it decreases after row {row}")
    if indices.size:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= n_cols:
            bad = lo if lo < 0 else hi
            k = int(np.argmax(indices == bad))
            row = int(np.searchsorted(indptr, k, side="right") - 1)
            raise ValueError(f"{name}: column index {bad} in row {row} is outside [0, {n_cols})")
