"""Attention: every backend against the reference (forward, backward), the seed vectors,
finite differences of the reference, masks, awkward sizes, memory and bad input.

Oracle: the float64 reference (pyml.reference.attention) on every shape; it does the two
matrix products with NumPy, so it stays fast enough even at N=1023 (kept to B*H=1 there).
Tolerance rule: tests/conftest.py (naive = the reference run in the kernel's dtype).
"""
from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyml
from pyml.reference import attention as ref
from conftest import AVAILABLE, assert_close, backend_params

# CPU backends; the cuda backend has its own file, tests/test_attention_cuda.py (half types, GPU-only)
BACKENDS = backend_params(("python", "numba", "cpp"))
COMPILED = backend_params(("numba", "cpp"))
X = np.array([[[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]])


def _data(rng, B, H, Nq, Nk, D, Dv, dtype):
    q64 = rng.standard_normal((B, H, Nq, D))
    k64 = rng.standard_normal((B, H, Nk, D))
    v64 = rng.standard_normal((B, H, Nk, Dv))
    return q64, k64, v64, [a.astype(dtype) for a in (q64, k64, v64)]


def _naive(q, k, v, do, mask, causal):
    """Vectorised NumPy attention (forward, lse, backward) in the inputs' dtype.

    It is the "naive" of the tolerance rule: for float64 the loop reference run in float64
    *is* R64, so its error would be zero; this independent summation order measures the
    float64 rounding a correct kernel is allowed."""
    S = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(q.shape[-1]).astype(q.dtype)
    if mask is not None:
        S = S + (np.where(mask, 0, -np.inf) if mask.dtype == bool else mask).astype(q.dtype)
    if causal:
        S = np.where(np.tril(np.ones(S.shape[-2:], bool)), S, -np.inf)
    m = S.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    E = np.exp(S - m)
    z = E.sum(-1, keepdims=True)
    P = E / np.where(z > 0, z, 1)
    lse = np.where(z[..., 0] > 0, (m + np.log(np.where(z > 0, z, 1)))[..., 0], -np.inf)
    dP = np.einsum("bhid,bhjd->bhij", do, v)
    dS = P * (dP - (dP * P).sum(-1, keepdims=True))
    sc = 1 / np.sqrt(q.shape[-1])
    grads = (sc * dS @ k, sc * np.swapaxes(dS, -1, -2) @ q, np.swapaxes(P, -1, -2) @ do)
    return P @ v, lse, grads


def _check(backend, rng, B, H, Nq, Nk, D, Dv, dtype, causal=False, mask=None, bwd=True):
    q64, k64, v64, (q, k, v) = _data(rng, B, H, Nq, Nk, D, Dv, dtype)
    o64, l64 = ref.attention_forward(q64, k64, v64, mask, causal)
    do64 = rng.standard_normal((B, H, Nq, Dv))
    if dtype == np.float64:
        on, ln, gn = _naive(q, k, v, do64, mask, causal)
    else:
        on, ln = ref.attention_forward(q, k, v, mask, causal)
        gn = ref.attention_backward(do64.astype(dtype), q, k, v, mask, causal) if bwd else None
    out, lse = pyml.attention(q, k, v, mask, causal, return_lse=True, backend=backend)
    assert out.dtype == dtype
    assert_close(out, o64, on, dtype, "out")
    fin = np.isfinite(l64)
    assert np.array_equal(np.isfinite(pyml._backend.to_numpy(lse)), fin)
    assert_close(pyml._backend.to_numpy(lse)[fin], l64[fin], ln[fin], dtype, "lse")
    if not bwd:
        return
    g64 = ref.attention_backward(do64, q64, k64, v64, mask, causal)
    g = pyml.attention_backward(do64.astype(dtype), q, k, v, out, lse, mask, causal, backend=backend)
    for name, a, r, n in zip(("dq", "dk", "dv"), g, g64, gn):
        assert_close(a, r, n, dtype, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 1), (2, 3, 113, 113, 48, 48),
                                   (1, 1, 37, 70, 80, 16), (1, 6, 70, 37, 1, 5)])
def test_matches_reference(backend, dtype, causal, shape, rng):
    _check(backend, rng, *shape, dtype, causal)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masks(backend, dtype, rng):
    B, H, Nq, Nk = 2, 3, 21, 30
    keep = rng.random((B, 1, 1, Nk)) > 0.3         # key padding, broadcast over H and Nq
    keep[1, 0, 0, :] = False                        # batch 1: every key hidden -> zero rows
    _check(backend, rng, B, H, Nq, Nk, 8, 8, dtype, mask=keep)
    additive = rng.standard_normal((H, Nq, Nk))     # broadcast over batch
    _check(backend, rng, B, H, Nq, Nk, 8, 8, dtype, causal=True, mask=additive)
    out = pyml.attention(*_data(rng, B, H, Nq, Nk, 8, 8, dtype)[3], mask=keep, backend=backend)
    assert np.all(pyml._backend.to_numpy(out)[1] == 0)


@pytest.mark.skipif("cpp" not in AVAILABLE, reason="cpp backend unavailable")
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_cpp_tiles_and_schedules(threads, rng):
    """Shapes spanning several 64 x 64 tiles of the C++ kernel: a mask that varies per query
    and key (tile offsets), a dead query row in a later tile, causal with Nq != Nk, D and Dv
    that leave vector remainders. With 1, 2 and 3 OpenMP threads and B*H in (2, 3) this takes
    both backward schedules (threads split whole heads / the key tiles of one head)."""
    old = pyml.get_num_threads()
    try:
        pyml.set_num_threads(threads)
        additive = rng.standard_normal((3, 150, 200))
        _check("cpp", rng, 1, 3, 150, 200, 24, 40, np.float64, causal=True, mask=additive)
        _check("cpp", rng, 2, 1, 200, 70, 64, 64, np.float32, causal=True)
        keep = rng.random((1, 1, 130, 150)) > 0.3
        keep[..., 70, :] = False
        _check("cpp", rng, 1, 3, 130, 150, 17, 33, np.float32, mask=keep)
    finally:
        pyml.set_num_threads(old)


@pytest.mark.skipif("cpp" not in AVAILABLE, reason="cpp backend unavailable")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpp_vector_exp(dtype):
    """The C++ kernel's polynomial exp (vexp in csrc/attention.cpp) is within 2 ulp of exp
    from its underflow cut (x < -87.3 / -708.3 gives 0) up to the x <= 0 range softmax uses
    and a little beyond; 0 -> 1 exactly, -inf -> 0, NaN -> NaN. Odd lengths reach the tail."""
    cpp = importlib.import_module(pyml._backend.backend_package("cpp") + ".attention")  # CPU variant in use

    lo = -87.3 if dtype == np.float32 else -708.3
    x = np.concatenate([np.linspace(lo, 0, 200_003), -np.geomspace(1e-30, 1, 10_001),
                        np.linspace(0, 10, 1001)]).astype(dtype)
    y = cpp._exp(x)
    assert y.dtype == dtype and y.shape == x.shape
    exact = np.exp(x.astype(np.longdouble))
    ulps = np.abs(y.astype(np.longdouble) - exact) / np.spacing(exact.astype(dtype)).astype(np.longdouble)
    assert float(ulps.max()) <= 2.0
    special = cpp._exp(np.array([-np.inf, lo - 0.5, -1e30, 0.0, -0.0, np.nan], dtype))
    np.testing.assert_array_equal(special[:5], [0, 0, 0, 1, 1])
    assert np.isnan(special[5])


@pytest.mark.parametrize("backend", COMPILED)
def test_large_n(backend, rng):
    _check(backend, rng, 1, 1, 1023, 1023, 64, 64, np.float32, causal=True)


def test_seed_vectors():
    out = ref.attention_forward(X, X, X, scale=1 / np.sqrt(2))[0]
    np.testing.assert_allclose(out[0, 0], [[0.80222, 0.59889], [0.59889, 0.80222], [0.75174, 0.75174]], atol=1e-5)
    causal = ref.attention_forward(X, X, X, causal=True, scale=1 / np.sqrt(2))[0]
    np.testing.assert_allclose(causal[0, 0], [[1, 0], [0.33024, 0.66976], [0.75174, 0.75174]], atol=1e-5)
    S = X[0, 0] @ X[0, 0].T / np.sqrt(2)
    w = np.exp(S[0]) / np.exp(S[0]).sum()
    np.testing.assert_allclose(w, [0.40111, 0.19778, 0.40111], atol=1e-5)
    pe = pyml.sinusoidal_positional_encoding(2, 4)
    np.testing.assert_allclose(pe[1], [0.841471, 0.540302, 0.010000, 0.999950], atol=1e-6)
    np.testing.assert_allclose(pe, ref.sinusoidal_positional_encoding(2, 4), atol=1e-12)
    np.testing.assert_allclose(pyml.sinusoidal_positional_encoding(9, 7),
                               ref.sinusoidal_positional_encoding(9, 7), atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_reference_backward_finite_differences(causal, rng):
    q, k, v = (rng.standard_normal((1, 2, 4, 3)) for _ in range(3))
    mask = rng.standard_normal((4, 4))
    do = rng.standard_normal((1, 2, 4, 3))
    grads = ref.attention_backward(do, q, k, v, mask, causal)
    h = 1e-6
    for which, g in enumerate(grads):
        args = [q, k, v]
        num = np.zeros_like(g)
        for idx in np.ndindex(g.shape):
            p, m = [a.copy() for a in args], [a.copy() for a in args]
            p[which][idx] += h
            m[which][idx] -= h
            num[idx] = (np.sum(ref.attention_forward(*p, mask, causal)[0] * do)
                        - np.sum(ref.attention_forward(*m, mask, causal)[0] * do)) / (2 * h)
        np.testing.assert_allclose(g, num, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_not_modified_and_strided(backend, rng):
    q, k, v = (rng.standard_normal((1, 2, 9, 8)) for _ in range(3))
    copies = [a.copy() for a in (q, k, v)]
    qs = np.swapaxes(np.swapaxes(q, 2, 3).copy(), 2, 3)   # non-contiguous view, same values
    out = pyml.attention(qs, k, v, backend=backend)
    np.testing.assert_allclose(pyml._backend.to_numpy(out), ref.attention_forward(q, k, v)[0], atol=1e-12)
    for a, c in zip((q, k, v), copies):
        np.testing.assert_array_equal(a, c)


def test_bad_input(rng):
    q = rng.standard_normal((1, 2, 5, 4))
    k3 = rng.standard_normal((1, 3, 5, 4))
    with pytest.raises(ValueError, match="batch and head"):
        pyml.attention(q, k3, k3)                       # 2 query heads, 3 key heads: no broadcast
    with pytest.raises(ValueError, match="multiple of the key/value heads"):
        pyml.attention(q, k3, k3, enable_gqa=True)
    with pytest.raises(ValueError, match="head dimension"):
        pyml.attention(q, q[..., :3], q)
    with pytest.raises(ValueError, match="3 or 4-dimensional"):
        pyml.attention(q[0, 0], q[0, 0], q[0, 0])
    with pytest.raises(ValueError, match="not broadcastable"):
        pyml.attention(q, q, q, mask=np.ones((3, 5), bool))
    bad = q.copy()
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\(0, 1, 2, 3\)"):
        pyml.attention(bad, q, q)
    for s in (0.0, -1.0):
        with pytest.raises(ValueError, match="scale"):
            pyml.attention(q, q, q, scale=s)
    with pytest.raises(TypeError):
        pyml.attention(q, q, q, mask=np.ones((5, 5), complex))
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        pyml.attention(q, q, q, mask=np.full((5, 5), np.nan))


def test_multi_head_attention(rng):
    x = rng.standard_normal((2, 7, 6))
    w = [rng.standard_normal((6, 6)) * 0.5 for _ in range(4)]
    y = pyml.multi_head_attention(x, *w, num_heads=3, causal=True)
    # oracle: heads by hand with the reference
    q, k, v = (np.stack(np.split(x @ wi, 3, axis=-1), axis=1) for wi in w[:3])
    o = ref.attention_forward(q, k, v, causal=True)[0]
    np.testing.assert_allclose(y, np.concatenate(list(np.moveaxis(o, 1, 0)), axis=-1) @ w[3], atol=1e-10)
    dy = rng.standard_normal(y.shape)
    grads = pyml.multi_head_attention_backward(dy, x, *w, num_heads=3, causal=True)
    h = 1e-6
    for which in (0, 1, 4):  # dx, dw_q, dw_o by central differences
        args = [x] + w
        idx = (0,) * (args[which].ndim - 1) + (1,)
        p, m = [a.copy() for a in args], [a.copy() for a in args]
        p[which][idx] += h
        m[which][idx] -= h
        num = (np.sum(pyml.multi_head_attention(*p, num_heads=3, causal=True) * dy)
               - np.sum(pyml.multi_head_attention(*m, num_heads=3, causal=True) * dy)) / (2 * h)
        assert abs(grads[which][idx] - num) < 1e-5


@pytest.mark.parametrize("backend", COMPILED)
def test_memory_is_linear_in_n(backend):
    """Peak RSS growth of one forward+backward at Nq=Nk=8192, D=64 (float32), measured in a
    fresh process: it must stay below the size of q+k+v+out (8 MiB); scores would be 256 MiB."""
    code = textwrap.dedent(f"""
        import resource, numpy as np, pyml
        rng = np.random.default_rng(0)
        q, k, v = (rng.standard_normal((1, 1, 8192, 64)).astype(np.float32) for _ in range(3))
        small = [a[:, :, :64] for a in (q, k, v)]
        o, l = pyml.attention(*small, causal=True, return_lse=True, backend="{backend}")
        pyml.attention_backward(o, *small, o, l, causal=True, backend="{backend}")
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out, lse = pyml.attention(q, k, v, causal=True, return_lse=True, backend="{backend}")
        peak_fwd = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        del out, lse
        print((peak_fwd - base) * 1024)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    grown = int(res.stdout.split()[-1])
    qkvo = 4 * 8192 * 64 * 4
    assert grown < qkvo, f"peak RSS grew by {grown / 2**20:.1f} MiB at N=8192"


def test_nn_layer(rng):
    layer = pyml.nn.MultiHeadAttention(6, 3, causal=True, dtype=np.float64, random_state=0)
    x = rng.standard_normal((2, 5, 6))
    y = layer.forward(x)
    np.testing.assert_allclose(y, pyml.multi_head_attention(x, *layer.params(), num_heads=3,
                                                            causal=True), atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    ref_grads = pyml.multi_head_attention_backward(dy, x, *layer.params(), num_heads=3, causal=True)
    np.testing.assert_allclose(dx, ref_grads[0], atol=1e-12)
    for g, r in zip(layer.grads(), ref_grads[1:]):
        np.testing.assert_allclose(g, r, atol=1e-12)


# ------------------------------------------------------------------ hostile input, settings
@pytest.mark.parametrize("backend", BACKENDS)
def test_overflowing_scores_are_refused(backend, rng):
    """Scores that can overflow give NaN in one summation order and finite values in another:
    every backend refuses them before any kernel, as the bound from the row norms says."""
    q = rng.standard_normal((1, 2, 9, 8))
    with pytest.raises(ValueError, match="scores .* can overflow float64"):
        pyml.attention(q, q, q, scale=1e308, backend=backend)
    big = (q * 1e19).astype(np.float32)
    with pytest.raises(ValueError, match="can overflow float32"):
        pyml.attention(big, big, big.astype(np.float32), backend=backend)
    with pytest.raises(ValueError, match="can overflow"):
        pyml.attention_backward(q, q, q, q, q, np.zeros((1, 2, 9)), scale=1e308, backend=backend)
    # the same values in float64 cannot overflow: they equal the reference (one-hot softmax)
    _check_values = (q * 1e19, q, q)
    out = pyml.attention(*_check_values, backend=backend)
    ref64 = ref.attention_forward(*_check_values)[0]
    assert_close(out, ref64, ref64, np.float64, "out")


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_refuses_nan_and_plus_inf_lse(backend, rng):
    q = rng.standard_normal((1, 2, 6, 4))
    out, lse = pyml.attention(q, q, q, return_lse=True, backend=backend)
    for bad in (np.nan, np.inf):
        broken = lse.copy()
        broken[0, 1, 3] = bad
        with pytest.raises(ValueError, match=r"lse contains NaN or \+inf \(first at index \(0, 1, 3\)\)"):
            pyml.attention_backward(out, q, q, q, out, broken, backend=backend)
    keep = np.ones((6, 6), bool)
    keep[2] = False                                     # a fully masked query: lse = -inf is valid
    out, lse = pyml.attention(q, q, q, mask=keep, return_lse=True, backend=backend)
    assert np.isneginf(lse[..., 2]).all()
    dq, _, _ = pyml.attention_backward(out, q, q, q, out, lse, mask=keep, backend=backend)
    assert np.all(dq[..., 2, :] == 0)


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the inf let through on purpose
def test_check_finite_is_a_real_parameter(rng):
    """The NaN error advises check_finite=False: every attention entry point takes it."""
    q = rng.standard_normal((1, 1, 4, 2))
    bad = q.copy()
    bad[0, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="check_finite=False"):
        pyml.attention(bad, q, q)
    assert np.isnan(pyml.attention(bad, q, q, check_finite=False)).any()
    out, lse = pyml.attention(q, q, q, return_lse=True)
    with pytest.raises(ValueError, match="check_finite=False"):
        pyml.attention_backward(bad, q, q, q, out, lse)
    pyml.attention_backward(bad, q, q, q, out, lse, check_finite=False)
    x, w = rng.standard_normal((1, 4, 2)), [np.eye(2)] * 4
    xb = x.copy()
    xb[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="check_finite=False"):
        pyml.multi_head_attention(xb, *w, num_heads=1)
    pyml.multi_head_attention(xb, *w, num_heads=1, check_finite=False)
    with pytest.raises(ValueError, match="check_finite=False"):
        pyml.multi_head_attention_backward(xb, x, *w, num_heads=1)


def test_default_backend_is_the_configured_one(rng):
    """backend=None (the default everywhere here) follows config_context: attention has no
    cython kernel, so asking for it by configuration must fail in every entry point."""
    q = rng.standard_normal((1, 1, 4, 2))
    out, lse = pyml.attention(q, q, q, return_lse=True)
    x, w = rng.standard_normal((1, 4, 2)), [np.eye(2)] * 4
    layer = pyml.nn.MultiHeadAttention(2, 1, dtype=np.float64, random_state=0)
    calls = [lambda: pyml.attention(q, q, q),
             lambda: pyml.attention_backward(out, q, q, q, out, lse),
             lambda: pyml.multi_head_attention(x, *w, num_heads=1),
             lambda: pyml.multi_head_attention_backward(x, x, *w, num_heads=1),
             lambda: layer.forward(x)]
    with pyml.config_context(backend="cython"):
        for call in calls:
            with pytest.raises(pyml.BackendUnavailableError, match="no 'cython' kernel"):
                call()
    with pyml.config_context(backend="python"):
        np.testing.assert_array_equal(pyml.attention(q, q, q), ref.attention_forward(q, q, q)[0])


def test_positional_encoding_refuses_non_float_dtypes():
    for dtype in (np.int32, np.int64, bool, np.complex128, "float16x"):
        with pytest.raises(TypeError, match="dtype must be float32 or float64"):
            pyml.sinusoidal_positional_encoding(4, 6, dtype=dtype)
    pe = pyml.sinusoidal_positional_encoding(4, 6, dtype=np.float32)
    assert pe.dtype == np.float32
    np.testing.assert_allclose(pe, ref.sinusoidal_positional_encoding(4, 6), atol=1e-7)


@pytest.mark.parametrize("layout, copies", [("contiguous", 0), ("(B,N,H,D) view", 3)])
def test_setup_makes_no_more_than_the_documented_copies(layout, copies, rng):
    """Validation and conversion read each input once and copy only what the kernels cannot
    read: nothing for C-contiguous float32 (B, H, N, D), one copy of each of q, k, v for the
    head-major view of a (B, N, H, D) projection. Traced NumPy allocations of one call beyond
    its outputs (out; dq, dk, dv) must stay under copies + 1/4 of one input."""
    import tracemalloc

    B, H, N, D = 1, 4, 1024, 64
    qkv = [rng.standard_normal((B, H, N, D), dtype=np.float32) for _ in range(3)]
    if copies:
        qkv = [np.ascontiguousarray(a.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3) for a in qkv]
    out, lse = pyml.attention(*qkv, return_lse=True)                  # warm: kernels loaded
    do = rng.standard_normal(out.shape, dtype=np.float32)
    size = qkv[0].nbytes
    for outputs, call in ((1, lambda: pyml.attention(*qkv)),
                          (3, lambda: pyml.attention_backward(do, *qkv, out, lse))):
        tracemalloc.start()
        try:
            call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < (outputs + copies + 0.25) * size, f"{peak / size:.2f} inputs' worth allocated"


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_threads_match_sequential_results(backend, rng):
    """Four Python threads calling forward and backward at once (as Dask workers or a web
    server do) get exactly the results of sequential calls."""
    from concurrent.futures import ThreadPoolExecutor

    problems = [[rng.standard_normal((1, 2, 40, 16)) for _ in range(4)] for _ in range(4)]

    def work(p):
        q, k, v, do = p
        out, lse = pyml.attention(q, k, v, causal=True, return_lse=True, backend=backend)
        return (out,) + pyml.attention_backward(do, q, k, v, out, lse, causal=True, backend=backend)

    sequential = [work(p) for p in problems]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            for got, want in zip(pool.map(work, problems), sequential):
                for a, b in zip(got, want):
                    np.testing.assert_array_equal(a, b)
