"""pyml.conv2d / max_pool2d / avg_pool2d equal torch.nn.functional on torch's own OpInfo samples
(torch.testing._internal.common_methods_invocations.op_db), outputs and gradients, on every
CPU backend: the arguments of each sample are translated to pyml's (same names and meanings,
unbatched inputs included), float32 held to the tolerance rule of tests/conftest.py against
torch in float64 (torch in float32 is the naive same-precision result).

Runs where torch and expecttest (which op_db imports) are installed; skipped otherwise."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import pyml

from conftest import assert_close, backend_params

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

# torch.nn.functional signature (after the input) of each op, to bind positional arguments
SIGNATURES = {
    "nn.functional.conv2d": ("weight", "bias", "stride", "padding", "dilation", "groups"),
    "nn.functional.max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                 "return_indices"),
    "nn.functional.avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode",
                                 "count_include_pad", "divisor_override"),
}
OPS = {op.name: op for op in op_db if op.name in SIGNATURES and not op.variant_test_name}


def _bind(name, sample) -> dict:
    kw = dict(zip(SIGNATURES[name], sample.args))
    kw.update(sample.kwargs)
    return kw


def _np(t):
    return None if t is None else t.detach().cpu().numpy()


def _torch_run(name, x, kw, grad):
    """torch's output and input (and weight, bias) gradients for the cotangent ``grad``
    (computed after the output shape is known: grad is a callable of that shape)."""
    f = OPS[name].op
    x = x.detach().requires_grad_(True)
    targs = {k: (v.detach().requires_grad_(True) if isinstance(v, torch.Tensor) else v)
             for k, v in kw.items()}
    if name == "nn.functional.max_pool2d":
        targs["return_indices"] = True
    out = f(x, **targs)
    y, idx = out if isinstance(out, tuple) else (out, None)
    g = grad(tuple(y.shape), y.dtype)
    wrt = [x] + [targs[k] for k in ("weight", "bias") if isinstance(targs.get(k), torch.Tensor)]
    grads = torch.autograd.grad(y, wrt, g)
    return _np(y), _np(idx), [_np(a) for a in grads], _np(g)


def _pyml_run(name, x, kw, gy, backend, dev=lambda a: a):
    """pyml's output, indices and gradients for the same sample (pyml returns indices always);
    ``dev`` moves arrays to the device for backend="cuda" (results come back to the host)."""
    host = pyml._backend.to_numpy
    x, gy = dev(x), dev(gy)
    if name == "nn.functional.conv2d":
        w, b = _np(kw["weight"]), _np(kw.get("bias"))
        w, b = dev(w), (None if b is None else dev(b))
        opts = {k: kw[k] for k in ("stride", "padding", "dilation", "groups") if k in kw}
        y = pyml.conv2d(x, w, b, **opts, backend=backend)
        needs = ("input", "weight") + (("bias",) if b is not None else ())
        gx, gw, gb = pyml.conv2d_backward(gy, x, w, **opts, needs=needs, backend=backend)
        return host(y), None, [host(g) for g in (gx, gw, gb) if g is not None]
    opts = {k: v for k, v in kw.items() if k != "return_indices"}
    if name == "nn.functional.max_pool2d":
        y, idx = pyml.max_pool2d(x, **opts, backend=backend)
        return host(y), host(idx), [host(pyml.max_pool2d_backward(gy, idx, x.shape, backend=backend))]
    y = pyml.avg_pool2d(x, **opts, backend=backend)
    k = opts.pop("kernel_size")
    return host(y), None, [host(pyml.avg_pool2d_backward(gy, x.shape, k, **opts, backend=backend))]


@functools.lru_cache(maxsize=None)
def torch_results(name):
    """Per sample: (kwargs, x, torch float32 results, torch float64 results), computed once and
    shared by every backend's test."""
    rng = np.random.default_rng(0)
    out = []
    for s in OPS[name].sample_inputs("cpu", torch.float32, requires_grad=True):
        kw = _bind(name, s)
        cot = {}

        def grad(shape, dtype):  # one float64 cotangent per sample, cast per precision
            if "g" not in cot:
                cot["g"] = rng.standard_normal(shape)
            return torch.from_numpy(cot["g"]).to(dtype)

        r32 = _torch_run(name, s.input, kw, grad)
        kw64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        r64 = _torch_run(name, s.input.double(), kw64, grad)
        out.append((kw, _np(s.input), r32, r64))
    return out


def run_samples(name, backend, dev=lambda a: a):
    """Counts (samples, translated, passed) and the failures of one op on one backend."""
    samples = torch_results(name)
    translated = passed = 0
    failures = []
    for n, (kw, x, (y32, idx32, g32, gy), (y64, _, g64, _)) in enumerate(samples):
        try:
            y, idx, grads = _pyml_run(name, x, kw, gy, backend, dev)
        except (ValueError, TypeError) as exc:  # torch accepted it: an untranslated sample
            failures.append(f"sample {n} {kw}: not translated ({exc})")
            continue
        translated += 1
        try:
            assert_close(y, y64, y32, np.float32, "output")
            if idx32 is not None:
                np.testing.assert_array_equal(idx, idx32, err_msg="indices")
            assert len(grads) == len(g64)
            for k, (o, r, nv) in enumerate(zip(grads, g64, g32)):
                assert_close(o, r, nv, np.float32, f"gradient {k}")
        except AssertionError as exc:
            failures.append(f"sample {n} {kw}: {exc}")
            continue
        passed += 1
    return len(samples), translated, passed, failures


@pytest.mark.parametrize("backend", backend_params(("python", "numba", "cpp")))
@pytest.mark.parametrize("name", list(SIGNATURES))
def test_opinfo_samples_equal_torch(name, backend):
    if name not in OPS:
        pytest.skip(f"this torch has no OpInfo for {name}")
    total, translated, passed, failures = run_samples(name, backend)
    print(f"{name} [{backend}]: samples {total}, translated {translated}, pass {passed}")
    assert total > 0
    assert not failures, "\n".join(failures[:10])
    assert translated == passed == total


@pytest.mark.cuda_cpu
@pytest.mark.parametrize("name", list(SIGNATURES))
def test_opinfo_samples_equal_torch_on_emulated_cuda(name):
    """The CUDA kernels (kernels/cuda/conv.cu through their CuPy glue) on the same samples,
    executed by the CUDA-on-CPU emulator of tests/cuda_cpu (see test_cuda_cpu.py)."""
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("the CUDA-on-CPU emulator needs g++")
    cuda_cpu = pytest.importorskip("cuda_cpu")
    if name not in OPS:
        pytest.skip(f"this torch has no OpInfo for {name}")
    cuda_cpu.install()
    try:
        cuda_cpu.set_schedule("cycle")
        import cupy

        total, translated, passed, failures = run_samples(name, "cuda", cupy.asarray)
    finally:
        cuda_cpu.uninstall()
    print(f"{name} [cuda, emulated]: samples {total}, translated {translated}, pass {passed}")
    assert not failures, "\n".join(failures[:10])
    assert translated == passed == total
