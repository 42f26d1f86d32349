"""conv2d's input contract: the configured default backend, non-finite values (refused in one
read pass, or with check_finite=False equal to the reference at padded borders), clear errors
naming the argument, setup copies only where the layout differs, several threads at once."""
from __future__ import annotations

import numpy as np
import pytest

import pyml
from pyml.reference import conv as ref

from conftest import backend_params

BACKENDS = backend_params(("python", "numba", "cpp"))


PUBLIC = ("conv2d", "conv2d_backward", "conv_output_shape")


@pytest.mark.parametrize("name", PUBLIC[:2])
def test_backend_default_is_the_configured_one(name):
    """backend=None means config_context / set_backend / PYML_BACKEND: a context naming a
    backend without a conv kernel must reach the dispatcher (and be refused there)."""
    import inspect

    f = getattr(pyml, name)
    assert inspect.signature(f).parameters["backend"].default is None
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2))
    args = {"conv2d": (x, w), "conv2d_backward": (np.ones((1, 1, 3, 3)), x, w)}[name]
    with pyml.config_context(backend="cython"):
        with pytest.raises(pyml.BackendUnavailableError, match=f"{name} has no 'cython'"):
            f(*args)
    with pyml.config_context(backend="python"):
        np.testing.assert_array_equal(pyml.conv2d(x, w), pyml.conv2d(x, w, backend="cpp"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride", [1, 2])
def test_non_finite_weights_at_padded_borders_equal_reference(backend, stride, rng):
    """check_finite=False with an infinite weight: the padding contributes no 0 * inf term,
    so every output (inf, -inf, NaN or finite) equals the reference's."""
    x = rng.standard_normal((2, 3, 6, 7))
    w = rng.standard_normal((4, 3, 3, 3))
    w[1, 2, 0, 0], w[3, 0, 2, 1] = np.inf, -np.inf
    S, P, D = (stride, stride), (1, 1), (1, 1)
    want = ref.conv2d(x, w, None, S, P, D, 1)
    got = pyml.conv2d(x, w, None, stride, 1, check_finite=False, backend=backend)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)  # equal infinities pass
    gy = rng.standard_normal(want.shape)
    gx, gw, gb = pyml.conv2d_backward(gy, x, w, stride, 1, check_finite=False, backend=backend)
    for o, r in zip((gx, gw, gb), ref.conv2d_backward(gy, x, w, S, P, D, 1)):
        np.testing.assert_array_equal(np.isnan(o), np.isnan(r))
        np.testing.assert_allclose(o, r, rtol=1e-12, atol=1e-12)
    gy[0, 0, 0, 0] = np.inf  # infinite grad_out at a border output: equal or refused
    try:
        out = pyml.conv2d_backward(gy, x, w, stride, 1, check_finite=False, backend=backend)
    except ValueError as exc:
        assert "grad_out" in str(exc)
    else:
        for o, r in zip(out, ref.conv2d_backward(gy, x, w, S, P, D, 1)):
            np.testing.assert_array_equal(np.isnan(o), np.isnan(r))


def test_same_padding_explicit_row_refuses_non_finite_weights():
    w = np.ones((1, 1, 2, 2))
    w[0, 0, 1, 1] = np.inf
    with pytest.raises(ValueError, match="w contains NaN or infinity"):
        pyml.conv2d(np.ones((1, 1, 4, 4)), w, padding="same", check_finite=False)


@pytest.mark.parametrize("call, exc, msg", [
    (lambda: pyml.conv_output_shape((1, 1, 3.7, 3), (1, 1, 2, 2)), TypeError, "input_shape"),
    (lambda: pyml.conv_output_shape(None, (1, 1, 2, 2)), TypeError, "input_shape"),
    (lambda: pyml.conv_output_shape((1, 1, 3, 3), (1, 1, 2, 0)), ValueError, "weight_shape"),
    (lambda: pyml.conv2d_backward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 4, 4)),
                                  np.ones((1, 1, 2, 2)), needs=None), TypeError, "needs"),
    (lambda: pyml.conv2d(np.ones((2, 3, 7, 7)), np.ones((4, 3, 3, 3)), padding=10**6), ValueError,
     r"GiB, more than this machine.*padding \(1000000, 1000000\)"),
    (lambda: pyml.nn.Conv2d(0, 4, 3), ValueError, "in_channels"),
    (lambda: pyml.nn.Conv2d(3, 0, 3), ValueError, "out_channels"),
    (lambda: pyml.nn.Conv2d(3, 4, 3, groups=2), ValueError, "groups=2 must divide"),
    (lambda: pyml.nn.Conv2d(3, 4, (3, 0)), ValueError, "kernel_size"),
    (lambda: pyml.nn.Conv2d(3, 4, 3, dtype=np.int32), TypeError, "dtype"),
    (lambda: pyml.nn.Conv2d(1, 1, 3).backward(np.ones((1, 1, 1, 1))), ValueError, "before forward"),
    (lambda: pyml.nn.MaxPool2d(2).backward(np.ones((1, 1, 1, 1))), ValueError, "before forward"),
    (lambda: pyml.nn.AvgPool2d(2).backward(np.ones((1, 1, 1, 1))), ValueError, "before forward"),
])
def test_clear_errors_name_the_argument(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


@pytest.mark.parametrize("layout, copies", [("nchw", 0), ("nhwc view", 1), ("float64", 0)])
def test_setup_copies_at_most_the_documented_number(layout, copies, rng):
    """The default call copies x only when its layout or dtype truly differs: traced NumPy
    allocations above the output stay below (copies + 1/10) input sizes (the finiteness check
    allocates nothing of the input's size: a NaN mask would already be 1/4 of float32 x)."""
    import tracemalloc

    if pyml.backends()["cpp"] is not None:
        pytest.skip("the default CPU backend here is not cpp")
    dt = np.float64 if layout == "float64" else np.float32
    x = rng.standard_normal((8, 16, 40, 40)).astype(dt)
    if layout == "nhwc view":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w, b = rng.standard_normal((16, 16, 3, 3)).astype(dt), np.zeros(16, dt)
    y = pyml.conv2d(x, w, b, padding=1)  # warm: caches and compiled paths outside the trace
    tracemalloc.start()
    try:
        y = pyml.conv2d(x, w, b, padding=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - y.nbytes <= (copies + 0.1) * x.nbytes, (peak, y.nbytes, x.nbytes)


@pytest.mark.parametrize("backend", BACKENDS)
def test_four_threads_equal_sequential(backend, rng):
    """Every backend is safe to call from several Python threads (Dask workers do): four
    threads at once give the sequential results (grad-weight up to reduction order)."""
    from concurrent.futures import ThreadPoolExecutor

    small = backend == "python"
    x = rng.standard_normal((2, 3, 6, 6) if small else (4, 16, 24, 24))
    w = rng.standard_normal((4, 3, 3, 3) if small else (16, 16, 3, 3))

    def work(k):
        y = pyml.conv2d(x + k, w, None, 1 + k % 2, 1, backend=backend)
        g = pyml.conv2d_backward(np.ones_like(y), x + k, w, 1 + k % 2, 1, backend=backend)
        z, idx = pyml.max_pool2d(x + k, 3, 2, 1, backend=backend)
        return y, g, z, idx, pyml.avg_pool2d(x + k, 2, backend=backend)

    want = [work(k) for k in range(4)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(work, range(4)))
    for (y, g, z, idx, a), (y0, g0, z0, idx0, a0) in zip(got, want):
        np.testing.assert_array_equal(y, y0)
        np.testing.assert_array_equal(g[0], g0[0])
        np.testing.assert_allclose(g[1], g0[1], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(z, z0)
        np.testing.assert_array_equal(idx, idx0)
        np.testing.assert_array_equal(a, a0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finiteness_check_has_no_false_alarm_on_huge_values(dtype):
    """The one-pass check (x.x finite) overflows on huge finite values; the exact scan then
    accepts them, and a real NaN or inf is still named with its position."""
    big = np.finfo(dtype).max / 4
    x, w = np.full((1, 1, 4, 4), big, dtype), np.full((1, 1, 1, 1), 0.5, dtype)
    for backend in ("python", None, "numba"):  # None: cpp here, x checked inside its kernel
        np.testing.assert_array_equal(pyml.conv2d(x, w, backend=backend), x * dtype(0.5))
        np.testing.assert_array_equal(pyml.conv2d(x, w, stride=2, backend=backend),
                                      x[:, :, ::2, ::2] * dtype(0.5))
    x[0, 0, 2, 1] = np.inf
    for backend, stride in ((None, 1), (None, 2), ("numba", 1), ("python", 1)):
        with pytest.raises(ValueError, match=r"x contains NaN or infinity \(first at index \(0, 0, 2, 1\)\)"):
            pyml.conv2d(x, w, stride=stride, backend=backend)
    with pytest.raises(ValueError, match=r"x contains NaN or infinity \(first at index \(0, 2, 1\)\)"):
        pyml.conv2d(x[0], w)  # unbatched: the position in the (C, H, W) the user passed
    with pytest.raises(ValueError, match="bias contains NaN"):
        pyml.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), np.array([np.nan]))
    with pytest.raises(ValueError, match="grad_out contains NaN"):
        pyml.conv2d_backward(np.full((1, 1, 2, 2), np.nan), np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))
