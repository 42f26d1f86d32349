"""conv2d / pooling: every backend equals the reference (fwd + bwd, float32/64, awkward
shapes), the reference equals finite differences, the seed example, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import pyml
from pyml.reference import conv as ref

from conftest import assert_close, backend_params

BACKENDS = backend_params(("python", "numba", "cpp"))

# (N, C, H, W), (O, C/groups, KH, KW), stride, padding, dilation, groups
SHAPES = {
    "3x3 pad1": ((2, 3, 7, 9), (5, 3, 3, 3), 1, 1, 1, 1),
    "1x1 gemm": ((3, 7, 5, 4), (2, 7, 1, 1), 1, 0, 1, 1),
    "1x1 stride2": ((1, 3, 7, 5), (4, 3, 1, 1), 2, 0, 1, 1),
    "7x5 stride3": ((1, 3, 13, 11), (2, 3, 7, 5), 3, (2, 1), 1, 1),
    "dilation2": ((2, 2, 9, 10), (3, 2, 3, 3), (1, 2), 2, 2, 1),
    "depthwise": ((2, 4, 6, 7), (4, 1, 3, 3), 1, 1, 1, 4),
    "groups2": ((1, 4, 5, 6), (6, 2, 2, 3), (2, 1), 1, 1, 2),
    "pad > k/2": ((1, 3, 4, 5), (2, 3, 3, 2), 2, (3, 2), 1, 1),
}


def _problem(rng, xs, ws):
    return rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])


def _pairs(v):
    return v if isinstance(v, tuple) else (v, v)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(SHAPES))
def test_conv2d_forward_backward_match_reference(backend, dtype, case, rng):
    xs, ws, s, p, d, g = SHAPES[case]
    x64, w64, b64 = _problem(rng, xs, ws)
    x, w, b = x64.astype(dtype), w64.astype(dtype), b64.astype(dtype)
    x0, w0 = x.copy(), w.copy()
    S, P, D = _pairs(s), _pairs(p), _pairs(d)
    y64 = ref.conv2d(x64, w64, b64, S, P, D, g)
    y = pyml.conv2d(x, w, b, s, p, d, g, backend=backend)
    assert y.dtype == dtype
    assert_close(y, y64, ref.conv2d(x, w, b, S, P, D, g), dtype, f"{case} forward")
    gy64 = rng.standard_normal(y64.shape)
    gy = gy64.astype(dtype)
    want = ref.conv2d_backward(gy64, x64, w64, S, P, D, g)
    naive = ref.conv2d_backward(gy, x, w, S, P, D, g)
    got = pyml.conv2d_backward(gy, x, w, s, p, d, g, backend=backend)
    for name, o, r, n in zip(("input", "weight", "bias"), got, want, naive):
        assert_close(o, r, n, dtype, f"{case} grad {name}")
    np.testing.assert_array_equal(x, x0)  # inputs never modified
    np.testing.assert_array_equal(w, w0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_needs_subset_and_same_padding(backend, rng):
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 4, 3))
    y = pyml.conv2d(x, w, padding="same", backend=backend)
    assert y.shape == (2, 4, 6, 5)
    # odd total padding (K=4): one extra row at the bottom, as an explicit pad shows
    xp = np.pad(x, ((0, 0), (0, 0), (1, 2), (1, 1)))
    np.testing.assert_allclose(y, ref.conv2d(xp, w, None, (1, 1), (0, 0), (1, 1), 1), atol=1e-12)
    gx, gw, gb = pyml.conv2d_backward(np.ones_like(y), x, w, padding="same", needs=("input",),
                                      backend=backend)
    assert gx.shape == x.shape and gw is None and gb is None
    assert pyml.conv2d(x, w, padding="valid", backend=backend).shape == (2, 4, 3, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_example(backend):
    I = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], float).reshape(1, 1, 3, 3)
    K = np.array([[1, 0], [0, -1]], float).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(pyml.conv2d(I, K, backend=backend)[0, 0], [[-4, -4], [-4, -4]])


def test_reference_gradient_matches_finite_differences(rng):
    S, P, D, g = (2, 1), (1, 2), (1, 2), 2
    x, w, b = rng.standard_normal((2, 4, 5, 6)), rng.standard_normal((2, 2, 3, 2)), rng.standard_normal(2)
    y = ref.conv2d(x, w, b, S, P, D, g)
    gy = rng.standard_normal(y.shape)
    dx, dw, db = ref.conv2d_backward(gy, x, w, S, P, D, g)
    loss = lambda x_, w_, b_: float(np.sum(gy * ref.conv2d(x_, w_, b_, S, P, D, g)))
    h = 1e-6
    for arr, grad in ((x, dx), (w, dw), (b, db)):
        for k in rng.choice(arr.size, size=min(arr.size, 12), replace=False):
            i = np.unravel_index(k, arr.shape)
            old = arr[i]
            arr[i] = old + h
            up = loss(x, w, b)
            arr[i] = old - h
            down = loss(x, w, b)
            arr[i] = old
            assert abs((up - down) / (2 * h) - grad[i]) < 1e-6 * max(1.0, abs(grad[i]))


def test_pool_reference_gradients_match_finite_differences(rng):
    x = rng.standard_normal((1, 2, 5, 6))
    z, idx = ref.max_pool2d(x, (3, 2), (2, 2), (1, 1))
    gz = rng.standard_normal(z.shape)
    dx = ref.max_pool2d_backward(gz, idx, x.shape)
    a = ref.avg_pool2d(x, (3, 2), (2, 1), (1, 0))
    ga = rng.standard_normal(a.shape)
    da = ref.avg_pool2d_backward(ga, x.shape, (3, 2), (2, 1), (1, 0))
    h = 1e-6
    for k in range(x.size):
        i = np.unravel_index(k, x.shape)
        e = np.zeros_like(x)
        e[i] = h
        fd_max = np.sum(gz * (ref.max_pool2d(x + e, (3, 2), (2, 2), (1, 1))[0]
                              - ref.max_pool2d(x - e, (3, 2), (2, 2), (1, 1))[0])) / (2 * h)
        fd_avg = np.sum(ga * (ref.avg_pool2d(x + e, (3, 2), (2, 1), (1, 0))
                              - ref.avg_pool2d(x - e, (3, 2), (2, 1), (1, 0)))) / (2 * h)
        assert abs(fd_max - dx[i]) < 1e-6 and abs(fd_avg - da[i]) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 3), (1, 0))])
def test_pooling_matches_reference(backend, dtype, k, s, p, rng):
    x64 = rng.standard_normal((2, 3, 7, 8))
    x = x64.astype(dtype)
    x0 = x.copy()
    K, S, P = _pairs(k), _pairs(k if s is None else s), _pairs(p)
    z, idx = pyml.max_pool2d(x, k, s, p, backend=backend)
    z_ref, idx_ref = ref.max_pool2d(x, K, S, P)
    np.testing.assert_array_equal(z, z_ref)  # a max is exact
    np.testing.assert_array_equal(idx, idx_ref)
    gz = rng.standard_normal(z.shape).astype(dtype)
    np.testing.assert_allclose(pyml.max_pool2d_backward(gz, idx, x.shape, backend=backend),
                               ref.max_pool2d_backward(gz, idx_ref, x.shape), rtol=1e-6)
    a = pyml.avg_pool2d(x, k, s, p, backend=backend)
    assert_close(a, ref.avg_pool2d(x64, K, S, P), ref.avg_pool2d(x, K, S, P), dtype, "avg pool")
    ga64 = rng.standard_normal(a.shape)
    da = pyml.avg_pool2d_backward(ga64.astype(dtype), x.shape, k, s, p, backend=backend)
    assert_close(da, ref.avg_pool2d_backward(ga64, x.shape, K, S, P),
                 ref.avg_pool2d_backward(ga64.astype(dtype), x.shape, K, S, P), dtype, "avg grad")
    np.testing.assert_array_equal(x, x0)


def test_strided_input_and_int_input(rng):
    x = rng.standard_normal((2, 3, 10, 12))[:, :, ::2, ::3]  # not contiguous
    w = rng.standard_normal((2, 3, 2, 2))
    np.testing.assert_allclose(pyml.conv2d(x, w, backend="cpp"),
                               ref.conv2d(x, w, None, (1, 1), (0, 0), (1, 1), 1), atol=1e-12)
    y = pyml.conv2d(np.ones((1, 1, 3, 3), int), np.ones((1, 1, 2, 2), int), backend="cpp")
    assert y.dtype == np.float64 and (y == 4).all()


def test_conv_output_shape():
    assert pyml.conv_output_shape((32, 64, 56, 56), (64, 64, 3, 3), 1, 1) == (32, 64, 56, 56)
    assert pyml.conv_output_shape((1, 3, 28, 28), (6, 3, 5, 5), 2, 0, 2) == (1, 6, 10, 10)


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(x=np.ones((1, 3, 5, 5)), w=np.ones((2, 4, 3, 3))), ValueError, "channel mismatch"),
    (dict(x=np.ones((1, 4, 5, 5)), w=np.ones((3, 2, 3, 3)), groups=2), ValueError, "groups=2 must divide"),
    (dict(x=np.ones((1, 3, 5, 5)), w=np.ones((2, 3, 3, 3)), groups=2), ValueError, "groups=2 must divide"),
    (dict(x=np.ones((1, 1, 3, 3)), w=np.ones((1, 1, 5, 5))), ValueError, "larger than the padded input"),
    (dict(x=np.ones((1, 1, 3, 3)), w=np.ones((1, 1, 2, 2)), stride=0), ValueError, "stride must be >= 1"),
    (dict(x=np.ones((1, 1, 3, 3)), w=np.ones((1, 1, 2, 2)), stride=-2), ValueError, "stride must be >= 1"),
    (dict(x=np.ones((1, 1, 3, 3)), w=np.ones((1, 1, 2, 2)), padding=-1), ValueError, "padding must be >= 0"),
    (dict(x=np.ones((1, 1, 3, 3)), w=np.ones((1, 1, 2, 2)), padding="full"), ValueError, "padding must be"),
    (dict(x=np.ones((3, 3)), w=np.ones((1, 1, 2, 2))), ValueError, "3 or 4-dimensional"),
    (dict(x=np.ones((1, 1, 3, 3)), w=np.ones((1, 1, 2, 2)), bias=np.ones(2)), ValueError, "bias must have shape"),
    (dict(x=np.full((1, 1, 3, 3), np.nan), w=np.ones((1, 1, 2, 2))), ValueError, "NaN"),
    (dict(x=np.ones((1, 1, 3, 3)) * 1j, w=np.ones((1, 1, 2, 2))), TypeError, "complex"),
    (dict(x=np.ones((1, 1, 3, 3)), w=np.ones((1, 1, 2, 2)), stride=1.5), TypeError, "integer"),
])
@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_bad_input(kwargs, exc, msg, backend):
    with pytest.raises(exc, match=msg):
        pyml.conv2d(**kwargs, backend=backend)


def test_bad_backward_and_pool_input():
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2))
    with pytest.raises(ValueError, match="grad_out must have the output shape"):
        pyml.conv2d_backward(np.ones((1, 1, 2, 2)), x, w)
    with pytest.raises(ValueError, match="needs must be"):
        pyml.conv2d_backward(np.ones((1, 1, 3, 3)), x, w, needs=("everything",))
    with pytest.raises(ValueError, match="at most half"):
        pyml.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        pyml.avg_pool2d(x, 5)
    with pytest.raises(ValueError, match="indices must lie"):
        pyml.max_pool2d_backward(np.ones((1, 1, 2, 2)), np.full((1, 1, 2, 2), 99), x.shape)
    with pytest.raises(pyml.BackendUnavailableError):
        pyml.conv2d(x, w, backend="cython")


@pytest.mark.parametrize("backend", ["numba", "cpp"])
def test_verify_rows_pass(backend):
    from pyml._verify.conv import checks

    if pyml.backends()[backend] is not None:
        pytest.skip(f"{backend} unavailable")
    rows = checks(backend, np.random.default_rng(0))
    assert rows and all(err <= tol for _, err, tol in rows), rows


@pytest.mark.gpu
@pytest.mark.parametrize("backend", backend_params(("cuda",)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["3x3 pad1", "7x5 stride3", "dilation2", "depthwise", "groups2"])
def test_cuda_matches_reference_and_stays_on_device(backend, dtype, case, rng):
    cp = pytest.importorskip("cupy")
    xs, ws, s, p, d, g = SHAPES[case]
    x64, w64, b64 = _problem(rng, xs, ws)
    S, P, D = _pairs(s), _pairs(p), _pairs(d)
    x, w, b = (cp.asarray(a.astype(dtype)) for a in (x64, w64, b64))
    y = pyml.conv2d(x, w, b, s, p, d, g)  # auto -> cuda for CuPy input
    assert isinstance(y, cp.ndarray)
    xn, wn, bn = x64.astype(dtype), w64.astype(dtype), b64.astype(dtype)
    y64 = ref.conv2d(x64, w64, b64, S, P, D, g)
    assert_close(y, y64, ref.conv2d(xn, wn, bn, S, P, D, g), dtype, "cuda forward")
    gy64 = rng.standard_normal(y64.shape)
    got = pyml.conv2d_backward(cp.asarray(gy64.astype(dtype)), x, w, s, p, d, g, backend=backend)
    want = ref.conv2d_backward(gy64, x64, w64, S, P, D, g)
    naive = ref.conv2d_backward(gy64.astype(dtype), xn, wn, S, P, D, g)
    for name, o, r, n in zip(("input", "weight", "bias"), got, want, naive):
        assert isinstance(o, cp.ndarray)
        assert_close(o, r, n, dtype, f"cuda grad {name}")


@pytest.mark.parametrize("backend", backend_params(("numba", "cpp")))
def test_random_geometries_match_reference(backend):
    """Property test: any valid geometry (hypothesis draws it) matches the reference."""
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies

    @hyp.settings(max_examples=25, deadline=None, derandomize=True)
    @hyp.given(N=st.integers(1, 3), groups=st.sampled_from([1, 2, 3]), cg=st.integers(1, 3),
               og=st.integers(1, 3), H=st.integers(1, 9), W=st.integers(1, 9),
               KH=st.integers(1, 4), KW=st.integers(1, 4), s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
               p=st.tuples(st.integers(0, 3), st.integers(0, 3)),
               d=st.tuples(st.integers(1, 2), st.integers(1, 2)), seed=st.integers(0, 2**16))
    def check(N, groups, cg, og, H, W, KH, KW, s, p, d, seed):
        hyp.assume(H + 2 * p[0] >= d[0] * (KH - 1) + 1 and W + 2 * p[1] >= d[1] * (KW - 1) + 1)
        r = np.random.default_rng(seed)
        x = r.standard_normal((N, cg * groups, H, W))
        w = r.standard_normal((og * groups, cg, KH, KW))
        y = pyml.conv2d(x, w, None, s, p, d, groups, backend=backend)
        y_ref = ref.conv2d(x, w, None, s, p, d, groups)
        np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
        gy = r.standard_normal(y.shape)
        for o, e in zip(pyml.conv2d_backward(gy, x, w, s, p, d, groups, backend=backend),
                        ref.conv2d_backward(gy, x, w, s, p, d, groups)):
            np.testing.assert_allclose(o, e, rtol=1e-10, atol=1e-10)

    check()


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_parallel_sized_problem_matches_vectorised_numpy(backend, rng):
    """Big enough that the C++ kernels take their OpenMP path (small ones run serially);
    checked against a vectorised NumPy form of the same sums (the loop reference is too slow)."""
    from numpy.lib.stride_tricks import sliding_window_view

    # above the C++ grain of 2^23 multiply-adds (csrc/conv.cpp parallel_worth)
    x, w = rng.standard_normal((4, 16, 40, 36)), rng.standard_normal((16, 16, 3, 3))
    gy = rng.standard_normal((4, 16, 40, 36))
    win = sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    np.testing.assert_allclose(pyml.conv2d(x, w, padding=1, backend=backend),
                               np.einsum("nchwij,ocij->nohw", win, w), rtol=1e-10, atol=1e-10)
    gx, gw, _ = pyml.conv2d_backward(gy, x, w, padding=1, backend=backend)
    np.testing.assert_allclose(gw, np.einsum("nohw,nchwij->ocij", gy, win), rtol=1e-10, atol=1e-9)
    # dX of a stride-1 'same' 3x3 conv is the conv of dY with the flipped, transposed kernel
    gwin = sliding_window_view(np.pad(gy, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    np.testing.assert_allclose(gx, np.einsum("nohwij,ocij->nchw", gwin, w[:, :, ::-1, ::-1]),
                               rtol=1e-10, atol=1e-9)
    xp = rng.standard_normal((4, 16, 128, 128))
    z, idx = pyml.max_pool2d(xp, 3, 1, 1, backend=backend)
    pad = np.pad(xp, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    np.testing.assert_array_equal(z, sliding_window_view(pad, (3, 3), axis=(2, 3)).max(axis=(4, 5)))
    assert pyml.max_pool2d_backward(np.ones_like(z), idx, xp.shape, backend=backend).sum() == z.size
    a = pyml.avg_pool2d(xp, 3, 1, 1, backend=backend)
    zero = np.pad(xp, ((0, 0), (0, 0), (1, 1), (1, 1)))
    np.testing.assert_allclose(a, sliding_window_view(zero, (3, 3), axis=(2, 3)).mean(axis=(4, 5)))
    da = pyml.avg_pool2d_backward(np.ones_like(a), xp.shape, 3, 1, 1, backend=backend)
    np.testing.assert_allclose(da[:, :, 1:-1, 1:-1], 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, p, d, g", [
    ((2, 3, 13, 101), (8, 3, 3, 5), (1, 2), (2, 1), 1),   # wide rows: several slab row blocks
    ((3, 4, 11, 67), (6, 2, 3, 3), (2, 1), (1, 3), 2),    # groups, uneven last row block
    ((2, 2, 9, 40), (3, 2, 2, 3), (3, 0), (1, 1), 1),     # padding > d*(K-1): grad-input falls back
])
def test_cpp_stride1_slab_blocks_match_reference(xs, ws, p, d, g, dtype, rng):
    """The C++ stride-1 path computes row blocks of a padded slab (their count depends on the
    row width); wide inputs give several blocks and a short last one, which the small SHAPES
    above never reach; with padding beyond the kernel extent grad-input takes the GEMM path."""
    if "cpp" not in pyml.backends() or pyml.backends()["cpp"] is not None:
        pytest.skip("cpp backend unavailable")
    def close(o, r, n, what):  # float64: the loop reference's own rounding over these long
        if dtype == np.float32:  # sums exceeds a few ulps, so a relative bound instead
            assert_close(o, r, n, dtype, what)
        else:
            np.testing.assert_allclose(o, r, rtol=1e-11, atol=1e-11 * np.abs(r).max(), err_msg=what)

    x64, w64, b64 = _problem(rng, xs, ws)
    x, w, b = x64.astype(dtype), w64.astype(dtype), b64.astype(dtype)
    y64 = ref.conv2d(x64, w64, b64, (1, 1), p, d, g)
    y = pyml.conv2d(x, w, b, 1, p, d, g, backend="cpp")
    close(y, y64, ref.conv2d(x, w, b, (1, 1), p, d, g), "slab forward")
    gy64 = rng.standard_normal(y64.shape)
    gy = gy64.astype(dtype)
    want = ref.conv2d_backward(gy64, x64, w64, (1, 1), p, d, g)
    naive = ref.conv2d_backward(gy, x, w, (1, 1), p, d, g)
    for needs in (("input", "weight", "bias"), ("weight",)):
        got = pyml.conv2d_backward(gy, x, w, 1, p, d, g, needs=needs, backend="cpp")
        for name, o, r, n in zip(("input", "weight", "bias"), got, want, naive):
            if name in needs:
                close(o, r, n, f"slab grad {name}")
            else:
                assert o is None

