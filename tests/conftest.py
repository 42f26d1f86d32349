"""Shared test fixtures; THE tolerance rule is pyml._verify.tolerance (stated once there,
used by these tests and by `pyml verify` alike):

    |out - R64|_max  <=  FACTOR * (|naive_T - R64|_max + eps(T) * max(1, |R64|_max))

a kernel's output in dtype T against the float64 reference R64 may be off by a small
multiple (FACTOR) of the error a naive same-precision implementation makes, plus a floor of
FACTOR ulps of T at the result's scale (the flash-attention testing scheme).
"""
from __future__ import annotations

import numpy as np
import pytest

import pyml
from pyml._verify import FACTOR, tolerance  # noqa: F401  (the one rule)

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
