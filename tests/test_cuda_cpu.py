"""Every CUDA kernel of pyml executed on the CPU (tests/cuda_cpu: CUDA's execution model for g++ plus a
stand-in for CuPy), through pyml's public API with backend="cuda": the real host glue (grid sizes, argument
types, dtype suffixes, shared-memory sizes) and the real kernels, against the pure-Python reference.

Shapes are small and awkward (1, 7, 37, 113: never a multiple of a tile), threads of a block and blocks run
forward, reverse and in random order. What this proves and what it does not: see tests/cuda_cpu/README.md.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.sparse as sp

import pyml
from conftest import AVAILABLE, assert_close
from test_attention import _naive as attention_naive  # the vectorised NumPy naive of the tolerance rule

pytestmark = [pytest.mark.cuda_cpu,
              pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA-on-CPU emulator needs g++")]

cuda_cpu = pytest.importorskip("cuda_cpu")
DTYPES = [np.float32, np.float64]
OTHER_CPU = next((b for b in AVAILABLE if b != "python"), "python")


@pytest.fixture(scope="module", autouse=True)
def cupy():
    """The stand-in CuPy as ``cupy`` for this module's tests (pyml's caches cleared on the way in and out)."""
    cuda_cpu.install()
    cuda_cpu.set_schedule("cycle")
    import cupy as cp

    yield cp
    cuda_cpu.uninstall()


def _ref(fn, *args, **kw):
    """The python backend on float64 copies of the array arguments."""
    cast = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    return fn(*cast, backend="python", **kw)


def _host(x):
    return x.get() if pyml._backend.is_cupy(x) else np.asarray(x)


# ------------------------------------------------------------------------------------------ k-means
@pytest.mark.parametrize("dtype", DTYPES)
# The shared-memory tile shrinks with d: at d = 1000 it holds 6 (float64) or 12 (float32) centres,
# so k = 13 spans several tiles; at d = 7000 float32 one centre, and float64 none (one centre is
# over 48 KiB, so the kernel reads the centres from global memory).
@pytest.mark.parametrize("n,d,k", [(1, 1, 1), (113, 7, 5), (300, 3, 70), (37, 130, 3), (9, 1000, 13), (4, 7000, 3)])
def test_kmeans_assign(cupy, rng, dtype, n, d, k):
    X = rng.standard_normal((n, d)).astype(dtype)
    C = rng.standard_normal((k, d)).astype(dtype)
    lab_ref, d_ref = pyml.kmeans_assign(X.astype(np.float64), C.astype(np.float64), backend="python")
    for Xi, Ci in ((cupy.asarray(X), cupy.asarray(C)), (X, C)):  # device arrays, and host arrays moved by the glue
        lab, dist = pyml.kmeans_assign(Xi, Ci, backend="cuda")
        assert pyml._backend.is_cupy(lab) == pyml._backend.is_cupy(Xi)
        lab, dist = _host(lab), _host(dist)
        # the chosen centre is a nearest one (float32 may break near-ties differently)
        D = ((X.astype(np.float64)[:, None, :] - C.astype(np.float64)[None]) ** 2).sum(-1)
        tol = 64 * np.finfo(dtype).eps * max(1.0, float(D.max()))
        assert np.all(D[np.arange(n), lab] <= d_ref + tol)
        if dtype == np.float64:
            np.testing.assert_array_equal(lab, lab_ref)
        assert_close(dist, d_ref, d_ref.astype(dtype), dtype, "kmeans_assign distances")


@pytest.mark.parametrize("dtype", DTYPES)
def test_kmeans_fit_update(cupy, rng, dtype):
    """Lloyd iterations on the device: assignment + weighted sums (atomics) + empty-cluster relocation."""
    X = np.concatenate([rng.standard_normal((40, 5)) + 6 * c for c in range(3)]).astype(dtype)
    C0 = np.concatenate([X[:3], X[-1:] + 50]).astype(dtype)  # the far centre ends up empty: relocation path
    w = rng.uniform(0.5, 2.0, len(X))
    ref = pyml.KMeans(4, init=C0.astype(np.float64), n_init=1, max_iter=5, backend="python").fit(
        X.astype(np.float64), sample_weight=w)
    for Xi in (X, cupy.asarray(X)):
        km = pyml.KMeans(4, init=C0, n_init=1, max_iter=5, backend="cuda").fit(Xi, sample_weight=w)
        centres = _host(km.cluster_centers_)
        assert_close(centres, ref.cluster_centers_, ref.cluster_centers_.astype(dtype), dtype, "KMeans centres")
        np.testing.assert_array_equal(_host(km.labels_), ref.labels_)


def test_concurrent_launches_from_threads(cupy, rng):
    """Several host threads launching at once (as Dask workers do): each OS thread runs its own blocks with
    its own shared memory, and the glue shares nothing mutable."""
    from concurrent.futures import ThreadPoolExecutor

    data = [(rng.standard_normal((57 + i, 6)), rng.standard_normal((9, 6))) for i in range(8)]
    want = [pyml.kmeans_assign(X, C, backend="python")[0] for X, C in data]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda xc: pyml.kmeans_assign(cupy.asarray(xc[0]), cupy.asarray(xc[1]), backend="cuda")[0],
                          data))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(_host(g), w)


# ------------------------------------------------------------------------------------------ value iteration
def _mdp(rng, A, S, sparse):
    P = rng.random((A, S, S)) * (rng.random((A, S, S)) < (0.2 if sparse else 1.0))
    P[:, np.arange(S), np.arange(S)] += 1e-3  # every row has a successor
    P /= P.sum(-1, keepdims=True)
    return P, rng.standard_normal((S, A))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("A,S", [(1, 1), (3, 37), (2, 113)])
def test_value_iteration_dense(cupy, rng, dtype, A, S):
    P, R = _mdp(rng, A, S, False)
    ref = pyml.value_iteration(P, R, 0.9, backend="python")
    for Pi, Ri in ((P.astype(dtype), R), (cupy.asarray(P.astype(dtype)), cupy.asarray(R))):
        res = pyml.value_iteration(Pi, Ri, 0.9, backend="cuda")
        V = _host(res.V)
        assert np.max(np.abs(V - ref.V)) <= (1e-9 if dtype == np.float64 else 1e-4) * max(1, np.abs(ref.V).max())
        np.testing.assert_array_equal(_host(res.policy), ref.policy)


@pytest.mark.parametrize("dtype", DTYPES)
def test_value_iteration_sparse(cupy, rng, dtype):
    P, R = _mdp(rng, 3, 57, True)
    mats = [sp.csr_matrix(P[a].astype(dtype)) for a in range(3)]
    ref = pyml.value_iteration([sp.csr_matrix(P[a]) for a in range(3)], R, 0.95, backend="python")
    res = pyml.value_iteration(mats, R, 0.95, backend="cuda")
    assert np.max(np.abs(_host(res.V) - ref.V)) <= (1e-9 if dtype == np.float64 else 1e-4) * np.abs(ref.V).max()
    np.testing.assert_array_equal(_host(res.policy), ref.policy)


@pytest.mark.parametrize("sparse", [False, True])
def test_value_iteration_fixed_policy(cupy, rng, sparse):
    """The policy-evaluation branch of both sweeps (fixed = 1: only policy[s]'s backup, the policy
    left as given), which no public cuda call reaches today: through the driver, against python."""
    from pyml import _mdp_driver as drv
    from pyml.mdp import _model
    A, S = 3, 41
    P, R = _mdp(rng, A, S, sparse)
    policy = rng.integers(0, A, S)
    model = _model([sp.csr_matrix(P[a]) for a in range(A)] if sparse else P, R, True)
    V0 = rng.standard_normal(S)
    want = drv.solve(model, "python", 0.9, V0, 1e-12, 500, False, policy=policy)
    got = drv.solve(model, "cuda", 0.9, V0, 1e-12, 500, False, policy=policy)
    np.testing.assert_allclose(_host(got[0]), want[0], rtol=0, atol=1e-9 * np.abs(want[0]).max())
    np.testing.assert_array_equal(_host(got[1]), policy)  # a fixed policy is not overwritten
    assert got[2] == want[2]


# ------------------------------------------------------------------------------------------ conv2d + pooling
CONV_CASES = [  # (B, C, H, W, O, KH, KW, stride, padding, dilation, groups, bias)
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, False),
    (2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1, True),
    (1, 4, 11, 6, 6, 3, 2, (2, 1), (0, 2), (1, 2), 2, True),
    (3, 2, 13, 13, 5, 5, 5, 3, 2, 1, 1, False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_backward(cupy, rng, dtype, case):
    B, C, H, W, O, KH, KW, stride, padding, dilation, groups, has_bias = case
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C // groups, KH, KW)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype) if has_bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    ref = _ref(pyml.conv2d, x, w, b, **kw)
    naive = pyml.conv2d(x, w, b, backend="python", **kw)
    y = pyml.conv2d(cupy.asarray(x), cupy.asarray(w), None if b is None else cupy.asarray(b), backend="cuda", **kw)
    assert pyml._backend.is_cupy(y)
    assert_close(y, ref, naive, dtype, "conv2d forward")
    gy = rng.standard_normal(ref.shape).astype(dtype)
    refs = _ref(pyml.conv2d_backward, gy, x, w, **kw)
    naives = pyml.conv2d_backward(gy, x, w, backend="python", **kw)
    outs = pyml.conv2d_backward(cupy.asarray(gy), cupy.asarray(x), cupy.asarray(w), backend="cuda", **kw)
    for what, o, r, nv in zip(("grad input", "grad weight", "grad bias"), outs, refs, naives):
        assert_close(o, r, nv, dtype, f"conv2d {what}")


POOL_CASES = [  # (B, C, H, W, kernel, stride, padding)
    (1, 1, 1, 1, 1, 1, 0), (2, 3, 7, 9, 3, 2, 1), (1, 2, 13, 6, (3, 2), (1, 2), (1, 0)), (2, 1, 8, 8, 2, 2, 0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling_forward_backward(cupy, rng, dtype, case):
    B, C, H, W, k, s, p = case
    x = np.round(rng.standard_normal((B, C, H, W)) * 1.5).astype(dtype)  # few values: ties in most windows,
    # where the first in row-major window order must win
    xd = cupy.asarray(x)
    z_ref, i_ref = pyml.max_pool2d(x, k, s, p, backend="python")
    z, idx = pyml.max_pool2d(xd, k, s, p, backend="cuda")
    np.testing.assert_array_equal(_host(z), z_ref)
    np.testing.assert_array_equal(_host(idx), i_ref)
    gz = rng.standard_normal(z_ref.shape).astype(dtype)
    dx_ref = pyml.max_pool2d_backward(gz.astype(np.float64), i_ref, x.shape, backend="python")
    dx = pyml.max_pool2d_backward(cupy.asarray(gz), idx, x.shape, backend="cuda")
    assert_close(dx, dx_ref, pyml.max_pool2d_backward(gz, i_ref, x.shape, backend="python"), dtype, "max pool grad")
    a_ref = _ref(pyml.avg_pool2d, x, k, s, p)
    a = pyml.avg_pool2d(xd, k, s, p, backend="cuda")
    assert_close(a, a_ref, pyml.avg_pool2d(x, k, s, p, backend="python"), dtype, "avg pool")
    da_ref = pyml.avg_pool2d_backward(gz.astype(np.float64), x.shape, k, s, p, backend="python")
    da = pyml.avg_pool2d_backward(cupy.asarray(gz), x.shape, k, s, p, backend="cuda")
    assert_close(da, da_ref, pyml.avg_pool2d_backward(gz, x.shape, k, s, p, backend="python"), dtype, "avg pool grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", [
    dict(dilation=2, ceil_mode=True, count_include_pad=False, divisor_override=None),
    dict(dilation=(1, 2), ceil_mode=False, count_include_pad=True, divisor_override=5),
    dict(dilation=1, ceil_mode=True, count_include_pad=True, divisor_override=None),
])
def test_pooling_options(cupy, rng, dtype, opts):
    """max_pool2d dilation / ceil_mode and avg_pool2d ceil_mode / count_include_pad / divisor_override."""
    x = np.round(rng.standard_normal((2, 3, 11, 8)) * 1.5).astype(dtype)
    k, st, p = (3, 2), 2, 1
    mx = dict(dilation=opts["dilation"], ceil_mode=opts["ceil_mode"])
    av = dict(ceil_mode=opts["ceil_mode"], count_include_pad=opts["count_include_pad"],
              divisor_override=opts["divisor_override"])
    z_ref, i_ref = pyml.max_pool2d(x, k, st, p, backend="python", **mx)
    z, idx = pyml.max_pool2d(cupy.asarray(x), k, st, p, backend="cuda", **mx)
    np.testing.assert_array_equal(_host(z), z_ref)
    np.testing.assert_array_equal(_host(idx), i_ref)
    gz = rng.standard_normal(z_ref.shape).astype(dtype)
    dx_ref = pyml.max_pool2d_backward(gz.astype(np.float64), i_ref, x.shape, backend="python")
    dx = pyml.max_pool2d_backward(cupy.asarray(gz), idx, x.shape, backend="cuda")
    assert_close(dx, dx_ref, pyml.max_pool2d_backward(gz, i_ref, x.shape, backend="python"), dtype, "max grad")
    a_ref = _ref(pyml.avg_pool2d, x, k, st, p, **av)
    a = pyml.avg_pool2d(cupy.asarray(x), k, st, p, backend="cuda", **av)
    assert_close(a, a_ref, pyml.avg_pool2d(x, k, st, p, backend="python", **av), dtype, "avg pool")
    ga = rng.standard_normal(a_ref.shape).astype(dtype)
    da_ref = pyml.avg_pool2d_backward(ga.astype(np.float64), x.shape, k, st, p, backend="python", **av)
    da = pyml.avg_pool2d_backward(cupy.asarray(ga), x.shape, k, st, p, backend="cuda", **av)
    assert_close(da, da_ref, pyml.avg_pool2d_backward(ga, x.shape, k, st, p, backend="python", **av), dtype,
                 "avg pool grad")


# ------------------------------------------------------------------------------------------ attention
ATT_CASES = [  # (B, H, Nq, Nk, D, Dv, causal, mask): every head-dim bucket (64, 128, 256)
    (1, 1, 1, 1, 1, 1, False, None),
    (2, 3, 37, 37, 16, 16, True, None),
    (1, 2, 19, 45, 72, 40, False, "bool"),
    (1, 1, 70, 33, 130, 7, True, "float"),
]


def _att_inputs(rng, case, dtype):
    B, H, Nq, Nk, D, Dv, causal, mask = case
    q, k = rng.standard_normal((B, H, Nq, D)), rng.standard_normal((B, H, Nk, D))
    v = rng.standard_normal((B, H, Nk, Dv))
    m = None
    if mask == "bool":
        m = rng.random((1, H, Nq, Nk)) < 0.8
        m[..., 0] = True
    elif mask == "float":
        m = rng.standard_normal((Nq, Nk))
    return [a.astype(dtype) for a in (q, k, v)], m, causal


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ATT_CASES)
def test_attention_forward_backward(cupy, rng, dtype, case):
    (q, k, v), m, causal = _att_inputs(rng, case, dtype)
    out_ref, lse_ref = _ref(pyml.attention, q, k, v, m, causal, return_lse=True)
    dout = rng.standard_normal(out_ref.shape).astype(dtype)
    naive, lse_naive, naives = attention_naive(q, k, v, dout, m, causal)
    dev = [cupy.asarray(a) for a in (q, k, v)]
    md = None if m is None else cupy.asarray(m)
    out, lse = pyml.attention(*dev, md, causal, return_lse=True, backend="cuda")
    assert pyml._backend.is_cupy(out)
    assert_close(out, out_ref, naive, dtype, "attention out")
    assert_close(lse, lse_ref, lse_naive, dtype, "attention lse")
    refs = pyml.attention_backward(dout.astype(np.float64), *(a.astype(np.float64) for a in (q, k, v)), out_ref,
                                   lse_ref, m, causal, backend="python")
    grads = pyml.attention_backward(cupy.asarray(dout), *dev, out, lse, md, causal, backend="cuda")
    for what, g, r, nv in zip(("dq", "dk", "dv"), grads, refs, naives):
        assert_close(g, r, nv, dtype, f"attention {what}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gqa,dropout_p", [(True, 0.0), (False, 0.3), (True, 0.25)])
def test_attention_gqa_dropout(cupy, rng, dtype, gqa, dropout_p):
    """Grouped-query heads (k/v head h // (H/Hk)) and the seeded dropout mask, forward and backward:
    the same mask as the reference for the same seed."""
    B, H, Hk, Nq, Nk, D = 2, 4, 2 if gqa else 4, 21, 38, 24
    q = rng.standard_normal((B, H, Nq, D)).astype(dtype)
    k, v = (rng.standard_normal((B, Hk, Nk, D)).astype(dtype) for _ in range(2))
    kw = dict(causal=True, dropout_p=dropout_p, seed=20260401, enable_gqa=gqa)
    out_ref, lse_ref = _ref(pyml.attention, q, k, v, return_lse=True, **kw)
    naive_b = "python" if dtype == np.float32 else OTHER_CPU  # float64: another summation order
    naive, _ = pyml.attention(q, k, v, return_lse=True, backend=naive_b, **kw)
    dev = [cupy.asarray(a) for a in (q, k, v)]
    out, lse = pyml.attention(*dev, return_lse=True, backend="cuda", **kw)
    assert_close(out, out_ref, naive, dtype, "attention out")
    dout = rng.standard_normal(out_ref.shape).astype(dtype)
    refs = pyml.attention_backward(dout.astype(np.float64), *(a.astype(np.float64) for a in (q, k, v)), out_ref,
                                   lse_ref, backend="python", **kw)
    naives = pyml.attention_backward(dout, q, k, v, naive, lse_ref.astype(dtype), backend=naive_b, **kw)
    grads = pyml.attention_backward(cupy.asarray(dout), *dev, out, lse, backend="cuda", **kw)
    for what, g, r, nv in zip(("dq", "dk", "dv"), grads, refs, naives):
        assert_close(g, r, nv, dtype, f"attention {what}")


def _half_dtypes():
    out = [np.float16]
    try:
        import ml_dtypes

        out.append(ml_dtypes.bfloat16)
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("half", _half_dtypes(), ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("case", ATT_CASES[1:3])
def test_attention_16_bit(rng, half, case):
    """float16 / bfloat16 kernels (host arrays: CuPy has no bfloat16 dtype), float32 accumulation."""
    (q, k, v), m, causal = _att_inputs(rng, case, np.float64)
    qh, kh, vh = (a.astype(half) for a in (q, k, v))
    q32, k32, v32 = (a.astype(np.float32) for a in (qh, kh, vh))  # what the kernel sees, exactly
    out_ref, lse_ref = pyml.attention(*(a.astype(np.float64) for a in (q32, k32, v32)), m, causal,
                                      return_lse=True, backend="python")
    out, lse = pyml.attention(qh, kh, vh, m, causal, return_lse=True, backend="cuda")
    assert np.dtype(out.dtype) == np.dtype(half)
    # one rounding of the output to the 16-bit type plus float32 accumulation
    eps = float(np.finfo(np.float16).eps) if half == np.float16 else 2.0**-7
    np.testing.assert_allclose(out.astype(np.float64), out_ref, atol=2 * eps * max(1, np.abs(out_ref).max()))
    np.testing.assert_allclose(lse, lse_ref, atol=1e-4 * max(1, np.abs(lse_ref).max()))
    dout = rng.standard_normal(out_ref.shape).astype(half)
    refs = pyml.attention_backward(dout.astype(np.float64), *(a.astype(np.float64) for a in (q32, k32, v32)),
                                   out.astype(np.float64), lse.astype(np.float64), m, causal, backend="python")
    grads = pyml.attention_backward(dout, qh, kh, vh, out, lse, m, causal, backend="cuda")
    for what, g, r in zip(("dq", "dk", "dv"), grads, refs):
        np.testing.assert_allclose(g.astype(np.float64), r, atol=8 * eps * max(1, np.abs(r).max()), err_msg=what)


# ------------------------------------------------------------------------------------------ ALS
def _ratings(rng, n_users=23, n_items=17, density=0.3):
    R = sp.random(n_users, n_items, density=density, random_state=np.random.RandomState(5), format="csr")
    R.data = rng.integers(1, 6, R.nnz).astype(np.float64)
    return R


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("implicit,exact,factors", [(False, False, 5), (True, False, 7), (True, True, 33)])
def test_als_half_steps(cupy, rng, dtype, implicit, exact, factors):
    R = _ratings(rng)
    kw = dict(factors=factors, regularization=0.1, iterations=2, implicit=implicit, alpha=2.0, exact=exact,
              dtype=dtype, random_state=0, show_progress=False)
    ref = pyml.ALS(backend="python", **{**kw, "dtype": np.float64}).fit(R)
    # float64: a compiled CPU backend (another summation order) measures the rounding allowed
    naive = pyml.ALS(backend="python" if dtype == np.float32 else OTHER_CPU, **kw).fit(R)
    m = pyml.ALS(backend="cuda", **kw).fit(R)
    for what in ("user_factors", "item_factors"):
        out = _host(getattr(m, what))
        assert out.dtype == dtype
        assert_close(out, getattr(ref, what), getattr(naive, what), dtype, f"ALS {what}")
