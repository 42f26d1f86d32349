"""`pyml verify` / `pyml warmup`: every kernel of a backend against the reference, per loop.

Each loop has one module here, ``pyml._verify.<loop>``, with ``checks(backend, rng)``
returning ``(check name, max error, tolerance)`` rows; ``tolerance`` below is THE rule,
shared with ``tests/conftest.py``:

    |out - R64|_max  <=  FACTOR * (|naive_T - R64|_max + eps(T) * max(1, |R64|_max))

a kernel's output in dtype T against the float64 reference R64 may be off by a small
multiple of the error a naive same-precision implementation makes, plus a floor of a few
ulps at the result's scale (the flash-attention testing scheme).
"""
from __future__ import annotations

import importlib
from typing import Callable, Iterator

import numpy as np

from .._backend import LOOPS, BackendUnavailableError

FACTOR = 4.0

Row = tuple[str, float, float]


def tolerance(ref64, naive, dtype) -> float:
    """Allowed max-abs error for a result of ``dtype`` (see the module docstring)."""
    ref64 = np.asarray(ref64, np.float64)
    if ref64.size == 0:
        return FACTOR * float(np.finfo(dtype).eps)
    naive_err = float(np.max(np.abs(np.asarray(naive, np.float64) - ref64)))
    scale = max(1.0, float(np.max(np.abs(ref64))))
    return FACTOR * (naive_err + float(np.finfo(dtype).eps) * scale)


def max_error(out, ref64) -> float:
    out = np.asarray(out, np.float64)
    return float(np.max(np.abs(out - np.asarray(ref64, np.float64)))) if out.size else 0.0


def row(name: str, out, ref64, naive, dtype) -> Row:
    """One check: the max error of ``out`` against ``ref64`` and its tolerance."""
    return (name, max_error(out, ref64), tolerance(ref64, naive, dtype))


def loop_checks(loop: str) -> Callable[[str, np.random.Generator], list[Row]]:
    """``pyml._verify.<loop>.checks`` (explicit registry: the loops of pyml._backend.LOOPS)."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    return importlib.import_module(f"{__name__}.{loop}").checks


def run(loops, backends) -> Iterator[tuple[str, str, str, float | None, float | None, str]]:
    """Yield ``(loop, backend, check, error, tolerance, result)`` as each check finishes."""
    for loop in loops:
        checks = loop_checks(loop)
        for b in backends:
            try:
                rows = checks(b, np.random.default_rng(0))
            except BackendUnavailableError as exc:
                yield (loop, b, "-", None, None, f"skipped: {exc}")
                continue
            for name, err, tol in rows:
                yield (loop, b, name, err, tol, "pass" if err <= tol else "FAIL")
