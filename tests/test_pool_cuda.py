"""CUDA pooling (kernels/cuda/conv.py + conv.cu): CuPy in -> CuPy out, equal to the
reference forward/backward on awkward shapes (float32/float64), and the driver's kernel
names exist in the compiled PTX. The GPU tests are skipped where no device exists."""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import numpy as np
import pytest

import pyml
from pyml.kernels.cuda import conv as cu
from pyml.reference import conv as ref

from conftest import assert_close, backend_params

CU_FILE = pathlib.Path(__file__).resolve().parents[1] / "kernels" / "cuda" / "conv.cu"

# (N, C, H, W), kernel, stride (None = kernel), padding
CASES = {
    "2x2 s2": ((2, 3, 8, 8), 2, None, 0),
    "3x3 s2 pad1 odd": ((2, 3, 7, 9), 3, 2, 1),
    "3x2 s(2,1) pad(1,0)": ((1, 4, 5, 6), (3, 2), (2, 1), (1, 0)),
    "overlap s1": ((3, 2, 6, 5), 3, 1, 1),
    "5x5 s3 pad2": ((1, 2, 13, 11), 5, 3, 2),
    "1x1": ((2, 3, 4, 5), 1, 1, 0),
    "window = input": ((2, 2, 3, 4), (3, 4), None, 0),
}


def _pairs(v, default=None):
    if v is None:
        v = default
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


GPU_PARAMS = [pytest.mark.gpu, pytest.mark.parametrize("backend", backend_params(("cuda",))),
              pytest.mark.parametrize("dtype", [np.float32, np.float64]),
              pytest.mark.parametrize("case", list(CASES))]


def _gpu(f):
    for m in reversed(GPU_PARAMS):
        f = m(f)
    return f


@_gpu
def test_cuda_max_pool_matches_reference(backend, dtype, case, rng):
    cp = pytest.importorskip("cupy")
    xs, k, s, p = CASES[case]
    K, S, P = _pairs(k), _pairs(s, k), _pairs(p)
    x64 = rng.standard_normal(xs)
    x64[0, 0, :2, :2] = 1.5  # a tie: the first element in window order must win, as on the CPU
    xn = x64.astype(dtype)
    z, idx = pyml.max_pool2d(cp.asarray(xn), k, s, p)  # auto -> cuda for CuPy input
    assert isinstance(z, cp.ndarray) and isinstance(idx, cp.ndarray) and idx.dtype == cp.int64
    z_ref, idx_ref = ref.max_pool2d(xn, K, S, P)
    np.testing.assert_array_equal(idx.get(), idx_ref)  # same argmax encoding y*W + x
    np.testing.assert_array_equal(z.get(), z_ref)  # a max is exact
    gz64 = rng.standard_normal(z_ref.shape)
    dx = pyml.max_pool2d_backward(cp.asarray(gz64.astype(dtype)), idx, xs, backend=backend)
    assert isinstance(dx, cp.ndarray) and dx.dtype == dtype
    assert_close(dx, ref.max_pool2d_backward(gz64, idx_ref, xs),
                 ref.max_pool2d_backward(gz64.astype(dtype), idx_ref, xs), dtype, "cuda max bwd")


@_gpu
def test_cuda_avg_pool_matches_reference(backend, dtype, case, rng):
    cp = pytest.importorskip("cupy")
    xs, k, s, p = CASES[case]
    K, S, P = _pairs(k), _pairs(s, k), _pairs(p)
    x64 = rng.standard_normal(xs)
    xn = x64.astype(dtype)
    z = pyml.avg_pool2d(cp.asarray(xn), k, s, p, backend=backend)
    assert isinstance(z, cp.ndarray) and z.dtype == dtype
    z64 = ref.avg_pool2d(x64, K, S, P)
    assert_close(z, z64, ref.avg_pool2d(xn, K, S, P), dtype, "cuda avg fwd")
    gz64 = rng.standard_normal(z64.shape)
    dx = pyml.avg_pool2d_backward(cp.asarray(gz64.astype(dtype)), xs, k, s, p)
    assert isinstance(dx, cp.ndarray) and dx.dtype == dtype
    assert_close(dx, ref.avg_pool2d_backward(gz64, xs, K, S, P),
                 ref.avg_pool2d_backward(gz64.astype(dtype), xs, K, S, P), dtype, "cuda avg bwd")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", backend_params(("cuda",)))
def test_cuda_pool_validation_and_layers(backend, rng):
    cp = pytest.importorskip("cupy")
    x = cp.asarray(rng.standard_normal((2, 3, 6, 6)))
    bad = x.copy()
    bad[0, 1, 2, 3] = cp.nan
    with pytest.raises(ValueError, match="NaN"):
        pyml.max_pool2d(bad, 2)
    with pytest.raises(ValueError, match="CuPy input"):
        pyml.avg_pool2d(x, 2, backend="python")
    z, idx = pyml.max_pool2d(x, 2)
    with pytest.raises(TypeError, match="both"):
        pyml.max_pool2d_backward(z, idx.get(), x.shape)
    with pytest.raises(ValueError, match="indices must lie"):
        pyml.max_pool2d_backward(z, idx + 100, x.shape)
    from pyml import nn

    for layer in (nn.MaxPool2d(2), nn.AvgPool2d(3, 1, 1)):
        y = layer.forward(x)
        g = layer.backward(cp.ones_like(y))
        assert isinstance(y, cp.ndarray) and isinstance(g, cp.ndarray) and g.shape == x.shape


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_driver_names_every_kernel_entry(tmp_path):
    ptx = tmp_path / "conv.ptx"
    r = subprocess.run(["nvcc", "-ptx", "-std=c++17", "-arch=sm_80", str(CU_FILE), "-o", str(ptx)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = ptx.read_text()
    names = cu.kernel_names()
    assert len(names) == 14  # 3 convolution + 4 pooling entries, float32 and float64
    for name in names:
        assert f".entry {name}(" in text, name


def test_numpy_pooling_unchanged_and_cuda_refused_for_numpy(rng):
    x = rng.standard_normal((1, 2, 4, 4))
    z, idx = pyml.max_pool2d(x, 2)
    np.testing.assert_array_equal(z, ref.max_pool2d(x, (2, 2), (2, 2), (0, 0))[0])
    assert isinstance(z, np.ndarray) and idx.dtype == np.int64
    with pytest.raises(Exception, match="cuda"):
        pyml.max_pool2d(x, 2, backend="cuda")  # NumPy input: no cuda pooling kernel, as before
