"""The one validation layer: every public entry point calls these before any kernel runs.

Rules (DESIGN.md, "Bad input"): ints/bools are converted to float, complex and object
arrays are refused, NaN/inf are refused with the position of the first bad value,
empty arrays are refused, non-contiguous arrays are copied (never silently wrong), and
nothing the caller passed is modified in place.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable

import numpy as np

from ._backend import array_module, is_cupy

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(x: Any) -> str:
    return f"{type(x).__name__} of shape {getattr(x, 'shape', '?')} and dtype {getattr(x, 'dtype', '?')}"


def check_array(x: Any, name: str, *, ndim: int | Iterable[int] | None = None,
                dtype: Any = None, allow_empty: bool = False, check_finite: bool = True,
                order: str = "C"):
    """Return ``x`` as a contiguous float32/float64 NumPy or CuPy array, or raise.

    dtype=None keeps float32/float64 and converts integer/bool input to float64;
    a dtype forces that dtype. Returns a copy only when conversion is needed.

    >>> check_array([[1, 2]], "X").dtype
    dtype('float64')
    >>> check_array([[1.0, float("nan")]], "X")
    Traceback (most recent call last):
    ...
    ValueError: X contains NaN or infinity (first at index (0, 1)); pass check_finite=False to skip this check
    """
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
        assert_finite(x, name)
    return x


def assert_finite(x: Any, name: str) -> None:
    xp = array_module(x)
    finite = xp.isfinite(x)
    if not bool(finite.all()):
        bad = tuple(int(i) for i in np.argwhere(~np.asarray(finite.get() if is_cupy(finite) else finite))[0])
        raise ValueError(f"{name} contains NaN or infinity (first at index {bad}); "
                         "pass check_finite=False to skip this check")


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


def check_csr(R: Any, name: str, *, shape: tuple[int | None, int | None] | None = None,
              dtype: Any = None, check_finite: bool = True):
    """A scipy.sparse CSR matrix with sorted indices, copied (never modified) if converted."""
    import scipy.sparse as sp

    if not sp.issparse(R):
        raise TypeError(f"{name} must be a scipy.sparse matrix (CSR), got {_describe(R)}")
    if R.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got {R.ndim}")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, R.shape)):
            if want is not None and want != got:
                raise ValueError(f"{name} must have shape {shape} (None = any), got {R.shape} (axis {axis})")
    if R.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {R.dtype}")
    target = np.dtype(dtype) if dtype is not None else (
        R.dtype if R.dtype in FLOAT_DTYPES else np.dtype(np.float64))
    R = sp.csr_matrix(R, dtype=target, copy=True)
    R.sort_indices()
    if check_finite and R.nnz and not np.isfinite(R.data).all():
        k = int(np.argmin(np.isfinite(R.data)))
        row = int(np.searchsorted(R.indptr, k, side="right") - 1)
        raise ValueError(f"{name} contains NaN or infinity (first at ({row}, {int(R.indices[k])}))")
    return R
