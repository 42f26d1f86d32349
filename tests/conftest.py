"""Shared test fixtures and THE tolerance rule.

Tolerance rule (stated once, used by every hot loop): a kernel's output in dtype T is
compared with the float64 reference R64. The allowed error is a small multiple
(FACTOR) of the error that a naive implementation in the same precision T makes
against R64 (for float64 that error is pure rounding), plus a floor of FACTOR ulps of
T at the scale of the result so an exactly-representable case is not held to zero:

    |out - R64|_max  <=  FACTOR * (|naive_T - R64|_max + eps(T) * max(1, |R64|_max))

This is the flash-attention testing scheme: tolerances derived from the precision, not
guessed.
"""
from __future__ import annotations

import numpy as np
import pytest

import pyml

FACTOR = 4.0

AVAILABLE = [b for b in ("python", "numba", "cpp", "cython") if pyml.backends()[b] is None]
GPU = pyml.backends()["cuda"] is None
# CPU backends plus cuda where a device exists; cuda params carry the gpu mark.
ALL_BACKENDS = AVAILABLE + ["cuda"]


def backend_params(supported):
    """pytest params for the backends of one kernel: CPU ones available here, cuda marked gpu."""
    out = []
    for b in supported:
        if b == "cuda":
            out.append(pytest.param("cuda", marks=[pytest.mark.gpu,
                       pytest.mark.skipif(not GPU, reason="needs cupy and a CUDA device")]))
        elif b in AVAILABLE:
            out.append(b)
        else:
            out.append(pytest.param(b, marks=pytest.mark.skip(reason=f"{b} backend unavailable here")))
    return out


def tolerance(ref64, naive, dtype) -> float:
    """Allowed max-abs error for a result of ``dtype`` (see module docstring)."""
    ref64 = np.asarray(ref64, np.float64)
    naive_err = float(np.max(np.abs(np.asarray(naive, np.float64) - ref64))) if ref64.size else 0.0
    scale = max(1.0, float(np.max(np.abs(ref64)))) if ref64.size else 1.0
    return FACTOR * (naive_err + float(np.finfo(dtype).eps) * scale)


def assert_close(out, ref64, naive, dtype, what: str = "") -> None:
    out = pyml._backend.to_numpy(out)
    assert out.shape == np.shape(ref64), f"{what}: shape {out.shape} != reference {np.shape(ref64)}"
    tol = tolerance(ref64, naive, dtype)
    err = float(np.max(np.abs(out.astype(np.float64) - ref64))) if out.size else 0.0
    assert err <= tol, f"{what}: max error {err:.3g} > tolerance {tol:.3g} ({np.dtype(dtype).name})"


def pytest_collection_modifyitems(config, items):
    if GPU:
        return
    skip = pytest.mark.skip(reason="needs cupy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
