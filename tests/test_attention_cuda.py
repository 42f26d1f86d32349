"""Attention on the cuda backend (kernels/cuda/attention.cu via its glue kernels/cuda/attention.py) against
the float64 reference: forward and backward, causal and not, masks, awkward sizes, Nq != Nk,
Dv != D, D = 1 .. 256, NumPy and CuPy in/out, float32/float64 and float16/bfloat16.

Tolerance rule: tests/conftest.py. float32/float64 reuse test_attention's check (naive = the
reference run in the kernel's dtype). For float16/bfloat16 the naive is a same-precision
implementation that rounds every tensor it stores (scores, P, out, dP, dS, gradients) to that
dtype, and the float64 reference runs on the same rounded inputs.
GPU tests carry the gpu mark and skip without cupy and a device; the dtype guard, the head-dim
limit, the shared-memory table and the kernel entry points are checked on every machine, and
grouped-query attention and dropout run through the real kernels on the CPU emulator
(tests/cuda_cpu, marker cuda_cpu).
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import numpy as np
import pytest

import pyml
from pyml.kernels.cuda import SUFFIX
from pyml.kernels.cuda import attention as cu
from pyml import _attention_driver as drv
from pyml._backend import to_numpy
from pyml.reference import attention as ref
from conftest import FACTOR, GPU, assert_close
from test_attention import _check, _data

CU_FILE = pathlib.Path(__file__).resolve().parents[1] / "kernels" / "cuda" / "attention.cu"


def gpu(test):
    return pytest.mark.gpu(pytest.mark.skipif(not GPU, reason="needs cupy and a CUDA device")(test))


def _half_dtype(name):
    if name == "bfloat16":
        return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    return np.dtype(np.float16)


# ------------------------------------------------------------------------------ float32 / float64
@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 1), (2, 3, 113, 113, 48, 48), (1, 1, 37, 70, 80, 16),
                                   (1, 6, 70, 37, 1, 5), (2, 1, 9, 130, 20, 130), (1, 2, 65, 7, 64, 64)])
def test_matches_reference(dtype, causal, shape, rng):
    _check("cuda", rng, *shape, dtype, causal)


@gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1023, 1023, 64, 64), (1, 1, 113, 1023, 64, 32),
                                   (1, 1, 1023, 113, 16, 64)])
def test_large_n(causal, shape, rng):
    _check("cuda", rng, *shape, np.float32, causal)


@gpu
@pytest.mark.parametrize("D, Dv", [(256, 256), (256, 3), (129, 200), (128, 128)])
def test_largest_head_dims(D, Dv, rng):
    import cupy as cp

    need = max(cu._smem(kind, D, Dv, cu._bucket(D, Dv)[1], 4) for kind in ("fwd", "dkdv", "dq"))
    if need > cp.cuda.Device().attributes.get("MaxSharedMemoryPerBlockOptin", need):
        with pytest.raises(ValueError, match="shared memory"):  # sm_86/sm_89: 99 KiB
            _check("cuda", rng, 1, 2, 45, 33, D, Dv, np.float32, causal=True)
        return
    _check("cuda", rng, 1, 2, 45, 33, D, Dv, np.float32, causal=True)


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masks(dtype, rng):
    B, H, Nq, Nk = 2, 3, 21, 70
    keep = rng.random((B, 1, 1, Nk)) > 0.3          # key padding, broadcast over H and Nq
    keep[1, 0, 0, :] = False                         # batch 1: every key hidden -> zero rows
    _check("cuda", rng, B, H, Nq, Nk, 8, 8, dtype, mask=keep)
    _check("cuda", rng, B, H, Nq, Nk, 8, 8, dtype, causal=True, mask=keep)
    _check("cuda", rng, B, H, Nq, Nk, 8, 8, dtype, causal=True, mask=rng.standard_normal((H, Nq, Nk)))
    _check("cuda", rng, B, H, Nq, Nk, 40, 8, dtype, mask=rng.random((B, 1, Nq, Nk)) > 0.5)
    _check("cuda", rng, B, H, Nq, Nk, 8, 24, dtype, mask=rng.standard_normal((Nq, Nk)))
    out = pyml.attention(*_data(rng, B, H, Nq, Nk, 8, 8, dtype)[3], mask=keep, backend="cuda")
    assert np.all(out[1] == 0)


@gpu
def test_cupy_in_cupy_out(rng):
    import cupy as cp

    q, k, v = (rng.standard_normal((2, 3, 50, 24)).astype(np.float32) for _ in range(3))
    mask = rng.random((2, 1, 1, 50)) > 0.2
    out, lse = pyml.attention(q, k, v, mask, causal=True, return_lse=True, backend="cuda")
    qd, kd, vd, md = (cp.asarray(a) for a in (q, k, v, mask))
    outd, lsed = pyml.attention(qd, kd, vd, md, causal=True, return_lse=True)  # auto -> cuda
    assert isinstance(outd, cp.ndarray) and isinstance(lsed, cp.ndarray)
    np.testing.assert_array_equal(outd.get(), out)
    np.testing.assert_array_equal(lsed.get(), lse)
    do = rng.standard_normal(out.shape).astype(np.float32)
    grads = pyml.attention_backward(do, q, k, v, out, lse, mask, causal=True, backend="cuda")
    gradsd = pyml.attention_backward(cp.asarray(do), qd, kd, vd, outd, lsed, md, causal=True)
    for g, gd in zip(grads, gradsd):
        assert isinstance(gd, cp.ndarray)
        np.testing.assert_array_equal(gd.get(), g)


@gpu
def test_strided_input_and_inputs_not_modified(rng):
    q, k, v = (rng.standard_normal((1, 2, 9, 8)) for _ in range(3))
    copies = [a.copy() for a in (q, k, v)]
    qs = np.swapaxes(np.swapaxes(q, 2, 3).copy(), 2, 3)
    out = pyml.attention(qs, k, v, backend="cuda")
    np.testing.assert_allclose(out, ref.attention_forward(q, k, v)[0], atol=1e-12)
    for a, c in zip((q, k, v), copies):
        np.testing.assert_array_equal(a, c)


@gpu
def test_head_dim_above_limit_is_refused(rng):
    q = rng.standard_normal((1, 1, 4, cu.MAX_HEAD_DIM + 1)).astype(np.float32)
    with pytest.raises(ValueError, match="head dimensions up to 256"):
        pyml.attention(q, q, q, backend="cuda")
    v = rng.standard_normal((1, 1, 4, cu.MAX_HEAD_DIM + 1)).astype(np.float32)
    with pytest.raises(ValueError, match="head dimensions up to 256"):
        pyml.attention(q[..., :8], q[..., :8], v, backend="cuda")


# ------------------------------------------------------------------------------ float16 / bfloat16
def _naive_lowp(q, k, v, do, mask, causal, dtype):
    """Attention and its gradients in float32 arithmetic with every stored tensor rounded to dtype."""
    r = lambda x: np.asarray(x, np.float32).astype(dtype).astype(np.float32)  # noqa: E731
    q, k, v, do = (a.astype(np.float32) for a in (q, k, v, do))
    scale = np.float32(1 / np.sqrt(q.shape[-1]))
    S = r(np.einsum("bhid,bhjd->bhij", q, k) * scale)
    if mask is not None:
        S = r(S + (np.where(mask, 0, -np.inf) if mask.dtype == bool else mask).astype(np.float32))
    if causal:
        S = np.where(np.tril(np.ones(S.shape[-2:], bool)), S, -np.inf)
    m = S.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    E = np.exp(S - m)
    z = E.sum(-1, keepdims=True)
    P = r(E / np.where(z > 0, z, 1))
    lse = np.where(z[..., 0] > 0, r(m + np.log(np.where(z > 0, z, 1)))[..., 0], -np.inf)
    dP = r(np.einsum("bhid,bhjd->bhij", do, v))
    dS = r(P * (dP - (dP * P).sum(-1, keepdims=True)))
    grads = (r(scale * dS @ k), r(scale * np.swapaxes(dS, -1, -2) @ q), r(np.swapaxes(P, -1, -2) @ do))
    return r(P @ v), lse, grads


def _assert_close_lowp(out, ref64, naive, eps, what):
    out, ref64 = np.asarray(to_numpy(out), np.float64), np.asarray(ref64, np.float64)
    tol = FACTOR * (float(np.max(np.abs(naive - ref64))) + eps * max(1.0, float(np.max(np.abs(ref64)))))
    err = float(np.max(np.abs(out - ref64)))
    assert err <= tol, f"{what}: max error {err:.3g} > tolerance {tol:.3g}"


@gpu
@pytest.mark.parametrize("name", ["float16", "bfloat16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape, masked", [((1, 1, 1, 1, 1, 1), False), ((2, 3, 113, 113, 48, 48), False),
                                           ((1, 2, 37, 70, 80, 16), True), ((1, 1, 1023, 1023, 64, 64), False)])
def test_half_precision(name, causal, shape, masked, rng):
    dtype = _half_dtype(name)
    eps = 2.0 ** -10 if name == "float16" else 2.0 ** -7
    B, H, Nq, Nk, D, Dv = shape
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((B, H, Nq, D), (B, H, Nk, D), (B, H, Nk, Dv)))
    do = rng.standard_normal((B, H, Nq, Dv)).astype(dtype)
    mask = rng.random((B, 1, 1, Nk)) > 0.3 if masked else None
    q64, k64, v64, do64 = (a.astype(np.float64) for a in (q, k, v, do))  # the rounded inputs, exactly
    o64, l64 = ref.attention_forward(q64, k64, v64, mask, causal)
    on, ln, gn = _naive_lowp(q, k, v, do, mask, causal, dtype)
    out, lse = pyml.attention(q, k, v, mask, causal, return_lse=True, backend="cuda")
    assert out.dtype == dtype and lse.dtype == np.float32
    _assert_close_lowp(out, o64, on, eps, "out")
    fin = np.isfinite(l64)
    assert np.array_equal(np.isfinite(lse), fin)
    _assert_close_lowp(lse[fin], l64[fin], ln[fin], eps, "lse")
    g64 = ref.attention_backward(do64, q64, k64, v64, mask, causal)
    g = pyml.attention_backward(do, q, k, v, out, lse, mask, causal, backend="cuda")
    for what, a, r64, n in zip(("dq", "dk", "dv"), g, g64, gn):
        assert a.dtype == dtype
        _assert_close_lowp(a, r64, n, eps, what)


@gpu
def test_half_precision_cupy(rng):
    import cupy as cp

    q, k, v = (cp.asarray(rng.standard_normal((1, 2, 40, 32)).astype(np.float16)) for _ in range(3))
    out, lse = pyml.attention(q, k, v, causal=True, return_lse=True)
    assert isinstance(out, cp.ndarray) and out.dtype == np.float16 and lse.dtype == np.float32
    host = pyml.attention(q.get(), k.get(), v.get(), causal=True, backend="cuda")
    np.testing.assert_array_equal(out.get(), host)


# ------------------------------------------------------------------------------ every machine
def test_cuda_is_registered():
    assert "cuda" in drv.FORWARD.backends and "cuda" in drv.BACKWARD.backends


def test_half_precision_needs_the_cuda_backend(rng):
    q = rng.standard_normal((1, 2, 5, 4)).astype(np.float16)
    for backend in ("python", "numba", "cpp"):
        if pyml.backends()[backend] is None:
            with pytest.raises(TypeError, match="backend='cuda'"):
                pyml.attention(q, q, q, backend=backend)
    with pytest.raises(TypeError, match="share one dtype"):
        pyml.attention(q, q.astype(np.float32), q)
    bad = q.copy()
    bad[0, 1, 2, 3] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinity.*\(0, 1, 2, 3\)"):
        pyml.attention(q, bad, q)


def test_head_dim_buckets_and_shared_memory():
    with pytest.raises(ValueError, match="head dimensions up to 256"):
        cu._bucket(257, 64)
    assert cu._bucket(1, 1) == (64, 8) and cu._bucket(64, 65) == (128, 16) and cu._bucket(200, 3) == (256, 32)
    # opt-in shared memory per block: sm_86/sm_89 (RTX 30/40, L4, L40S), A100, H100/H200
    sm89, sm80, sm90 = 99 * 1024, 163 * 1024, 227 * 1024
    for D in (1, 7, 48, 64, 65, 80, 128, 129, 255, 256):
        for Dv in (1, 5, D, 128, 256):
            _, cpt = cu._bucket(D, Dv)
            small = max(D, Dv) <= 128
            for kind in ("fwd", "dkdv", "dq"):
                f32, f64 = cu._smem(kind, D, Dv, cpt, 4), cu._smem(kind, D, Dv, cpt, 8)
                assert f32 <= (sm89 if small else sm80), (kind, D, Dv)   # float32/float16/bfloat16
                assert f64 <= (sm80 if small else sm90), (kind, D, Dv)   # float64
    assert cu._smem("fwd", 64, 64, 8, 4) <= 48 * 1024  # the common case needs no opt-in in the forward


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_driver_names_every_kernel_entry(tmp_path):
    ptx = tmp_path / "attention.ptx"
    r = subprocess.run(["nvcc", "-ptx", "-std=c++17", "-arch=sm_80", str(CU_FILE), "-o", str(ptx)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = ptx.read_text()
    for entry in ("attention_fwd", "attention_bwd_dkdv", "attention_bwd_dq"):
        for sfx in (*SUFFIX.values(), "bf16"):
            for dmax, _ in cu._BUCKETS:
                assert f".entry {entry}_{sfx}_{dmax}(" in text, f"{entry}_{sfx}_{dmax}"


# ------------------------------------------------------------------------------ CUDA kernels on the CPU
@pytest.fixture
def emulated_cuda():
    """The real attention.cu run by tests/cuda_cpu (CUDA's execution model for g++, a stand-in CuPy)."""
    cuda_cpu = pytest.importorskip("cuda_cpu")
    if shutil.which("g++") is None:
        pytest.skip("the CUDA-on-CPU emulator needs g++")
    cuda_cpu.install()
    cuda_cpu.set_schedule("cycle")
    yield
    cuda_cpu.uninstall()


@pytest.mark.cuda_cpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gqa_dropout_and_torch_shapes_on_the_cuda_kernels(emulated_cuda, dtype, rng):
    """Grouped-query attention (index arithmetic in attention.cu), seeded dropout (the CPU kernels'
    mask, bit for bit, in the forward and both backward kernels) and torch's 3-d / broadcast shapes,
    forward and backward, through the glue and the kernels against the float64 reference."""
    from test_attention_sdpa import _compare

    _compare("cuda", rng, (2, 3, 37, 16), (2, 3, 37, 16), (2, 3, 37, 8), dtype, causal=True,
             dropout_p=0.3, seed=2**64 - 3)
    _compare("cuda", rng, (2, 4, 20, 8), (2, 2, 33, 8), (2, 2, 33, 8), dtype, gqa=True, dropout_p=0.6, seed=11)
    _compare("cuda", rng, (2, 6, 5, 8), (2, 2, 7, 8), (2, 2, 7, 3), dtype, gqa=True, causal=True)
    _compare("cuda", rng, (4, 3, 8), (2, 4, 6, 8), (2, 4, 6, 8), dtype, causal=True)
    q, k, v = (rng.standard_normal((1, 2, 40, 8)).astype(dtype) for _ in range(3))
    on_gpu = pyml.attention(q, k, v, dropout_p=0.5, seed=99, backend="cuda")
    on_cpu = pyml.attention(q, k, v, dropout_p=0.5, seed=99, backend="python")
    np.testing.assert_array_equal(on_gpu == 0, on_cpu == 0)
