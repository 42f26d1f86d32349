"""Pooling with torch.nn.functional's options (dilation, ceil_mode, count_include_pad,
divisor_override, stride=() and 1-tuples) and unbatched (C, H, W) input for pooling and conv2d:
every CPU backend equals the reference on awkward shapes, the reference's gradients equal
finite differences, and the corner cases (a window without an in-bounds element) agree."""
from __future__ import annotations

import numpy as np
import pytest

import pyml
from pyml.reference import conv as ref

from conftest import assert_close, backend_params

BACKENDS = backend_params(("python", "numba", "cpp"))

# x shape, kernel, stride, padding, dilation, ceil_mode
MAX_CASES = [
    ((2, 3, 7, 9), 3, 2, 1, 1, True),
    ((1, 2, 6, 11), (3, 2), (2, 3), (1, 1), (2, 3), True),
    ((2, 1, 5, 5), 2, 2, 0, 1, True),           # ceil adds a partial last window
    ((1, 2, 8, 7), (2, 3), 3, (1, 0), (2, 1), False),
    ((1, 1, 13, 4), 4, (3, 1), 2, 1, True),
]
# x shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
AVG_CASES = [
    ((2, 3, 7, 9), 3, 2, 1, True, True, None),
    ((2, 3, 7, 9), 3, 2, 1, True, False, None),
    ((1, 2, 9, 9), (4, 4), (2, 3), 1, True, False, None),
    ((1, 2, 6, 6), 4, 2, 2, True, True, None),
    ((1, 1, 4, 4), 2, (), (0,), False, True, -2),
    ((2, 2, 5, 8), (3, 2), (2, 1), (1, 1), False, False, 5),
]


def _pairs(v, default=None):
    if v is None or (isinstance(v, tuple) and len(v) == 0):
        v = default
    if isinstance(v, tuple):
        return v * 2 if len(v) == 1 else v
    return (v, v)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(MAX_CASES)))
def test_max_pool_options_match_reference(backend, dtype, case, rng):
    xs, k, s, p, d, ceil = MAX_CASES[case]
    x = rng.standard_normal(xs).astype(dtype)
    z, idx = pyml.max_pool2d(x, k, s, p, d, ceil, backend=backend)
    z_ref, idx_ref = ref.max_pool2d(x, _pairs(k), _pairs(s, k), _pairs(p), _pairs(d), ceil)
    np.testing.assert_array_equal(z, z_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    gz = rng.standard_normal(z.shape).astype(dtype)
    np.testing.assert_array_equal(pyml.max_pool2d_backward(gz, idx, xs, backend=backend),
                                  ref.max_pool2d_backward(gz, idx_ref, xs))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(AVG_CASES)))
def test_avg_pool_options_match_reference(backend, dtype, case, rng):
    xs, k, s, p, ceil, include, div = AVG_CASES[case]
    x64 = rng.standard_normal(xs)
    x = x64.astype(dtype)
    K, S, P = _pairs(k), _pairs(s, k), _pairs(p)
    a = pyml.avg_pool2d(x, k, s, p, ceil, include, div, backend=backend)
    assert_close(a, ref.avg_pool2d(x64, K, S, P, ceil, include, div),
                 ref.avg_pool2d(x, K, S, P, ceil, include, div), dtype, "avg forward")
    g64 = rng.standard_normal(a.shape)
    da = pyml.avg_pool2d_backward(g64.astype(dtype), xs, k, s, p, ceil, include, div,
                                  backend=backend)
    assert_close(da, ref.avg_pool2d_backward(g64, xs, K, S, P, ceil, include, div),
                 ref.avg_pool2d_backward(g64.astype(dtype), xs, K, S, P, ceil, include, div),
                 dtype, "avg backward")


@pytest.mark.parametrize("ceil, include, div", [(True, True, None), (True, False, None),
                                                (False, False, 3)])
def test_avg_reference_gradient_matches_finite_differences(ceil, include, div, rng):
    x = rng.standard_normal((1, 2, 6, 7))
    args = ((3, 2), (2, 2), (1, 1), ceil, include, div)
    a = ref.avg_pool2d(x, *args)
    ga = rng.standard_normal(a.shape)
    da = ref.avg_pool2d_backward(ga, x.shape, *args)
    h = 1e-6
    for k in range(x.size):
        e = np.zeros_like(x)
        e[np.unravel_index(k, x.shape)] = h
        fd = np.sum(ga * (ref.avg_pool2d(x + e, *args) - ref.avg_pool2d(x - e, *args))) / (2 * h)
        assert abs(fd - da[np.unravel_index(k, x.shape)]) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_window_without_in_bounds_element(backend):
    """H = 1, kernel 2 dilated by 2, padding 1: output row 0 taps rows -1 and 1, both
    outside; torch gives -inf there, pyml index -1 and no gradient."""
    x = np.arange(1.0, 6.0).reshape(1, 1, 1, 5)
    z, idx = pyml.max_pool2d(x, (2, 1), 1, (1, 0), (2, 1), backend=backend)
    z_ref, idx_ref = ref.max_pool2d(x, (2, 1), (1, 1), (1, 0), (2, 1))
    np.testing.assert_array_equal(z, z_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    assert (idx == -1).any() and np.isneginf(z[idx == -1]).all()
    dx = pyml.max_pool2d_backward(np.ones_like(z), idx, x.shape, backend=backend)
    np.testing.assert_array_equal(dx, ref.max_pool2d_backward(np.ones_like(z), idx_ref, x.shape))


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool_nan_is_the_max_without_check_finite(backend):
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, 1, 2] = np.nan
    z, idx = pyml.max_pool2d(x, 2, check_finite=False, backend=backend)
    assert np.isnan(z[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 6 and z[0, 0, 0, 0] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_input_equals_batch_of_one(backend, rng):
    x, w, b = rng.standard_normal((3, 7, 6)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    y = pyml.conv2d(x, w, b, 2, 1, backend=backend)
    np.testing.assert_array_equal(y, pyml.conv2d(x[None], w, b, 2, 1, backend=backend)[0])
    gy = rng.standard_normal(y.shape)
    got = pyml.conv2d_backward(gy, x, w, 2, 1, backend=backend)
    want = pyml.conv2d_backward(gy[None], x[None], w, 2, 1, backend=backend)
    assert got[0].shape == x.shape
    for o, r in zip(got, (want[0][0],) + want[1:]):
        np.testing.assert_array_equal(o, r)
    z, idx = pyml.max_pool2d(x, 3, 2, 1, ceil_mode=True, backend=backend)
    z4, idx4 = pyml.max_pool2d(x[None], 3, 2, 1, ceil_mode=True, backend=backend)
    np.testing.assert_array_equal(z, z4[0])
    np.testing.assert_array_equal(idx, idx4[0])
    np.testing.assert_array_equal(pyml.max_pool2d_backward(z, idx, x.shape, backend=backend),
                                  pyml.max_pool2d_backward(z4, idx4, (1,) + x.shape, backend=backend)[0])
    a = pyml.avg_pool2d(x, 2, (), (1,), backend=backend)
    np.testing.assert_array_equal(a, pyml.avg_pool2d(x[None], 2, 2, 1, backend=backend)[0])
    np.testing.assert_array_equal(pyml.avg_pool2d_backward(a, x.shape, 2, (), (1,), backend=backend),
                                  pyml.avg_pool2d_backward(a[None], (1,) + x.shape, 2, 2, 1,
                                                           backend=backend)[0])


@pytest.mark.parametrize("call, exc, msg", [
    (lambda x: pyml.max_pool2d(x, 2, padding=(1, 2, 3)), ValueError, "padding must be"),
    (lambda x: pyml.max_pool2d(x, 3, padding=2, dilation=1), ValueError, "max_pool2d: padding"),
    (lambda x: pyml.max_pool2d(x, 2, ceil_mode=1), TypeError, "ceil_mode"),
    (lambda x: pyml.max_pool2d(x, 2, dilation=0), ValueError, "dilation"),
    (lambda x: pyml.avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda x: pyml.avg_pool2d(x, 2, divisor_override=1.5), TypeError, "divisor_override"),
    (lambda x: pyml.avg_pool2d(x, 2, count_include_pad="yes"), TypeError, "count_include_pad"),
    (lambda x: pyml.avg_pool2d(x, 9), ValueError, "avg_pool2d: kernel_size"),
    (lambda x: pyml.avg_pool2d(x[0, 0], 2), ValueError, "3 or 4-dimensional"),
    (lambda x: pyml.max_pool2d_backward(np.ones((1, 2, 2)), np.zeros((1, 2, 2), int),
                                        (1, 1, 4, 4)), ValueError, "input_shape must be"),
    (lambda x: pyml.max_pool2d(x, 2, backend="cython"), pyml.BackendUnavailableError,
     "max_pool2d has no 'cython'"),
    (lambda x: pyml.avg_pool2d_backward(np.ones((1, 1, 2, 2)), (1, 1, 4, 4), 2, backend="cython"),
     pyml.BackendUnavailableError, "avg_pool2d_backward has no 'cython'"),
])
def test_pool_bad_options(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call(np.ones((1, 1, 4, 4)))


@pytest.mark.parametrize("name", ["max_pool2d", "max_pool2d_backward", "avg_pool2d",
                                  "avg_pool2d_backward"])
def test_pool_backend_default_is_the_configured_one(name):
    import inspect

    assert inspect.signature(getattr(pyml, name)).parameters["backend"].default is None
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    z, idx = pyml.max_pool2d(x, 2)
    args = {"max_pool2d": (x, 2), "avg_pool2d": (x, 2),
            "max_pool2d_backward": (z, idx, x.shape),
            "avg_pool2d_backward": (z, x.shape, 2)}[name]
    with pyml.config_context(backend="cython"):
        with pytest.raises(pyml.BackendUnavailableError, match=f"{name} has no 'cython'"):
            getattr(pyml, name)(*args)


def test_pool_layers_take_torch_options(rng):
    """nn.MaxPool2d / nn.AvgPool2d forward their options (torch.nn's names) to the functions."""
    x = rng.standard_normal((2, 3, 7, 9))
    layer = pyml.nn.MaxPool2d(3, 2, 1, dilation=(1, 2), ceil_mode=True)
    z = layer.forward(x)
    np.testing.assert_array_equal(z, pyml.max_pool2d(x, 3, 2, 1, (1, 2), True)[0])
    g = layer.backward(np.ones_like(z))
    assert g.shape == x.shape and g.sum() == z.size
    avg = pyml.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
    a = avg.forward(x)
    np.testing.assert_array_equal(a, pyml.avg_pool2d(x, 3, 2, 1, True, False))
    np.testing.assert_array_equal(avg.backward(np.ones_like(a)),
                                  pyml.avg_pool2d_backward(np.ones_like(a), x.shape, 3, 2, 1, True, False))
