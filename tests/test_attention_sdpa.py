"""torch.nn.functional.scaled_dot_product_attention semantics of pyml.attention on every
backend (cuda where a device exists): 3-d inputs, broadcast batch/head dimensions, grouped-query attention, seeded dropout
(its statistics, the same mask in the backward, finite differences of the reference), and
torch's own OpInfo samples (when torch and expecttest are installed).

Oracle: pyml.reference.attention on explicitly broadcast / repeated float64 arrays; tolerance
rule: tests/conftest.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import pyml
from pyml.reference import attention as ref
from conftest import assert_close, backend_params

BACKENDS = backend_params(("python", "numba", "cpp", "cuda"))  # cuda: gpu-marked, skipped without a device


def _dropout_z(B, H, Nq, Nk, p, seed):
    """The dropout factors Z of every score, from the reference's counter hash."""
    Z = np.ones((B, H, Nq, Nk))
    if p > 0:
        for idx in np.ndindex(Z.shape):
            b, h, i, j = idx
            Z[idx] = 1 / (1 - p) if ref.dropout_keep(seed, ((b * H + h) * Nq + i) * Nk + j, p) else 0.0
    return Z


def _vectorised(q, k, v, do, causal, Z, mask=None):
    """NumPy attention and its gradients in the inputs' dtype, flash-style: the backward
    recomputes P = exp(S - lse) from the lse stored in that dtype (Dao et al. 2022). The
    "naive" of the tolerance rule for float64 (an independent summation order; the loop
    reference is R64 itself) and for torch's samples in float32, whose large logits make the
    stored lse's rounding (eps * |lse| relative in P) the dominant error of any flash kernel."""
    S = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(q.shape[-1]).astype(q.dtype)
    if mask is not None:
        S = S + (np.where(mask, 0, -np.inf) if mask.dtype == bool else mask).astype(q.dtype)
    if causal:
        S = np.where(np.tril(np.ones(S.shape[-2:], bool)), S, -np.inf)
    m = S.max(-1, keepdims=True)
    E = np.exp(S - m)
    P = E / E.sum(-1, keepdims=True)
    lse = (np.log(E.sum(-1)) + m[..., 0]).astype(q.dtype)
    out = (P * Z) @ v
    if do is None:
        return out, lse, None
    P = np.exp(S - lse[..., None])
    dP = (do @ np.swapaxes(v, -1, -2)) * Z
    dS = P * (dP - (do * out).sum(-1, keepdims=True))
    sc = 1 / np.sqrt(q.shape[-1])
    return out, lse, (sc * dS @ k, sc * np.swapaxes(dS, -1, -2) @ q, np.swapaxes(P * Z, -1, -2) @ do)


def _oracle(q, k, v, causal=False, dropout_p=0.0, seed=0, do=None, vectorised=False, mask=None):
    """Reference forward (and backward) of torch-shaped inputs: pad to 4-d, broadcast the
    batch/head dimensions, repeat k/v heads for GQA; gradients summed back to each shape."""
    pad = [a.reshape((1,) * (4 - a.ndim) + a.shape) for a in (q, k, v)]
    B = max(a.shape[0] for a in pad)
    H = max(pad[0].shape[1], pad[1].shape[1], pad[2].shape[1])
    Hk = max(pad[1].shape[1], pad[2].shape[1])
    g = H // Hk
    q4 = np.broadcast_to(pad[0], (B, H) + pad[0].shape[2:]).copy()
    k4, v4 = (np.repeat(np.broadcast_to(a, (B, Hk) + a.shape[2:]), g, axis=1) for a in pad[1:])
    d4 = None if do is None else do.reshape((B, H, q4.shape[2], v4.shape[3]))
    if vectorised:
        Z = _dropout_z(B, H, q4.shape[2], k4.shape[2], dropout_p, seed)
        out, lse, grads = _vectorised(q4, k4, v4, d4, causal, Z, mask)
    else:
        out, lse = ref.attention_forward(q4, k4, v4, mask, causal, None, dropout_p, seed)
        grads = None if do is None else ref.attention_backward(d4, q4, k4, v4, mask, causal, None,
                                                               dropout_p, seed)
    nd = max(a.ndim for a in (q, k, v))
    shape = lambda x: x.reshape(x.shape[4 - nd:])  # noqa: E731
    if do is None:
        return shape(out), shape(lse)
    res = []
    for i, (gr, p4, a) in enumerate(zip(grads, pad, (q, k, v))):
        if i:
            gr = gr.reshape(B, -1, g, *gr.shape[2:]).sum(axis=2)  # sum each group's query heads
        axes = tuple(i for i in (0, 1) if p4.shape[i] == 1 and gr.shape[i] > 1)
        res.append((gr.sum(axis=axes, keepdims=True) if axes else gr).reshape(a.shape))
    return shape(out), shape(lse), res


def _compare(backend, rng, qs, ks, vs, dtype=np.float64, **kw):
    q64, k64, v64 = (rng.standard_normal(s) for s in (qs, ks, vs))
    q, k, v = (a.astype(dtype) for a in (q64, k64, v64))
    extra = {key: kw[key] for key in ("dropout_p", "seed", "causal") if key in kw}
    out, lse = pyml.attention(q, k, v, return_lse=True, backend=backend, enable_gqa=kw.get("gqa", False),
                              **extra)
    vec = dtype == np.float64
    o64, l64 = _oracle(q64, k64, v64, **extra)
    on, _ = _oracle(q, k, v, vectorised=vec, **extra)
    assert out.shape == o64.shape and lse.shape == l64.shape
    assert_close(out, o64, on, dtype, "out")
    do64 = rng.standard_normal(o64.shape)
    grads = pyml.attention_backward(do64.astype(dtype), q, k, v, out, lse, backend=backend,
                                    enable_gqa=kw.get("gqa", False), **extra)
    g64 = _oracle(q64, k64, v64, do=do64, **extra)[2]
    gn = _oracle(q, k, v, do=do64.astype(dtype), vectorised=vec, **extra)[2]
    for name, a, r, n in zip(("dq", "dk", "dv"), grads, g64, gn):
        assert a.shape == r.shape, name
        assert_close(a, r, n, dtype, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("qs, ks, vs, gqa", [
    ((4, 3, 8), (4, 6, 8), (4, 6, 5), False),                   # 3-d (B, N, D)
    ((3, 5, 8), (1, 6, 8), (1, 6, 8), False),                   # 3-d, k/v broadcast
    ((4, 3, 8), (2, 4, 6, 8), (2, 4, 6, 8), False),             # q lacks the batch dimension
    ((2, 4, 3, 8), (1, 4, 6, 8), (2, 1, 6, 8), False),          # k batch and v heads broadcast
    ((2, 6, 5, 8), (2, 2, 7, 8), (2, 2, 7, 3), True),           # GQA: 3 query heads per k/v head
    ((1, 4, 9, 8), (1, 1, 9, 8), (1, 1, 9, 8), True),           # GQA with one k/v head (MQA)
])
def test_torch_shapes(backend, dtype, qs, ks, vs, gqa, rng):
    _compare(backend, rng, qs, ks, vs, dtype, gqa=gqa, causal=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gqa_equals_repeated_heads_and_needs_the_flag(backend, rng):
    q = rng.standard_normal((2, 4, 7, 8))
    k, v = rng.standard_normal((2, 2, 9, 8)), rng.standard_normal((2, 2, 9, 8))
    out = pyml.attention(q, k, v, enable_gqa=True, backend=backend)
    rep = pyml.attention(q, np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1), backend=backend)
    np.testing.assert_allclose(out, rep, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="enable_gqa"):
        pyml.attention(q, k, v, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_statistics(backend, p, rng):
    """With q = 0 every weight is 1/Nk and v = I exposes the weights: out = Z / Nk with
    Z in {0, 1/(1-p)}. The dropped share is p (within 5 binomial standard deviations), the
    kept weights are exactly 1/((1-p) Nk), the mean weight stays 1/Nk (dropout is unbiased),
    the same seed gives the same mask and another seed another one."""
    B, H, N = 2, 3, 64
    q = np.zeros((B, H, N, 4))
    k = rng.standard_normal((B, H, N, 4))
    v = np.broadcast_to(np.eye(N), (B, H, N, N)).copy()
    out, lse = pyml.attention(q, k, v, return_lse=True, dropout_p=p, seed=7, backend=backend)
    np.testing.assert_allclose(lse, np.log(N), rtol=1e-12)       # lse of the undropped weights
    dropped = out == 0
    n = out.size
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(out[~dropped], 1 / ((1 - p) * N), rtol=1e-12)
    assert abs(out.mean() - 1 / N) < 5 * np.sqrt(p / (1 - p) / n) / N
    again = pyml.attention(q, k, v, dropout_p=p, seed=7, backend=backend)
    np.testing.assert_array_equal(again, out)
    other = pyml.attention(q, k, v, dropout_p=p, seed=8, backend=backend)
    assert (other == 0).mean() != pytest.approx(0) and np.any((other == 0) != dropped)
    np.testing.assert_array_equal(dropped, ref.attention_forward(q, k, v, None, False, None, p, 7)[0] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_matches_reference_with_the_same_mask_in_backward(backend, dtype, rng):
    _compare(backend, rng, (2, 3, 70, 16), (2, 3, 70, 16), (2, 3, 70, 8), dtype, causal=True,
             dropout_p=0.3, seed=2**64 - 3)
    _compare(backend, rng, (2, 4, 20, 8), (2, 2, 33, 8), (2, 2, 33, 8), dtype, gqa=True,
             dropout_p=0.6, seed=11)


def test_reference_dropout_backward_finite_differences(rng):
    """With a fixed seed the dropout mask is a constant, so the forward is differentiable and
    the reference backward must match its central differences."""
    q, k, v = (rng.standard_normal((1, 2, 5, 3)) for _ in range(3))
    do = rng.standard_normal((1, 2, 5, 3))
    kw = dict(mask=None, causal=True, scale=None, dropout_p=0.4, seed=5)
    grads = ref.attention_backward(do, q, k, v, **kw)
    h = 1e-6
    for which, g in enumerate(grads):
        num = np.zeros_like(g)
        for idx in np.ndindex(g.shape):
            p, m = [a.copy() for a in (q, k, v)], [a.copy() for a in (q, k, v)]
            p[which][idx] += h
            m[which][idx] -= h
            num[idx] = (np.sum(ref.attention_forward(*p, **kw)[0] * do)
                        - np.sum(ref.attention_forward(*m, **kw)[0] * do)) / (2 * h)
        np.testing.assert_allclose(g, num, atol=1e-7, rtol=1e-6)


def test_dropout_arguments(rng):
    q = rng.standard_normal((1, 1, 4, 2))
    for p in (-0.1, 1.0, np.nan):
        with pytest.raises(ValueError, match="dropout_p"):
            pyml.attention(q, q, q, dropout_p=p)
    for seed in (-1, 2**64, 1.5, "1"):
        with pytest.raises(TypeError, match="seed"):
            pyml.attention(q, q, q, dropout_p=0.5, seed=seed)
    with pytest.raises(ValueError, match="output .* can overflow float32"):
        q32 = q.astype(np.float32)
        pyml.attention(q32, q32, (q * 1e37).astype(np.float32), dropout_p=1 - 1e-7, seed=1)
    out, lse = pyml.attention(q, q, q, return_lse=True, dropout_p=0.5)   # fresh entropy: fine
    with pytest.raises(ValueError, match="seed"):
        pyml.attention_backward(out, q, q, q, out, lse, dropout_p=0.5)


# ------------------------------------------------------------------ torch's own OpInfo samples
_TRANSLATE = {"is_causal": "causal", "attn_mask": "mask", "scale": "scale", "enable_gqa": "enable_gqa",
              "dropout_p": "dropout_p"}


def _opinfo_samples():
    """(id, q, k, v, kwargs) of torch's OpInfo samples for scaled_dot_product_attention, in
    float64 rounded to float32 values (so the float64 results are the exact reference of the
    float32 inputs too), or an empty list without torch."""
    try:
        import expecttest  # noqa: F401  (common_methods_invocations needs it)
        import torch
        from torch.testing._internal.common_methods_invocations import op_db
    except Exception:
        return []
    torch.manual_seed(0)
    (op,) = [o for o in op_db if o.name == "nn.functional.scaled_dot_product_attention"]
    out = []
    for n, s in enumerate(op.sample_inputs("cpu", torch.float64, requires_grad=False)):
        f32 = lambda t: t.detach().numpy().astype(np.float32).astype(np.float64)  # noqa: E731
        kw = {key: (f32(val) if isinstance(val, torch.Tensor) else val) for key, val in s.kwargs.items()}
        out.append((f"sample{n}", f32(s.input), *(f32(a) for a in s.args), kw))
    return out


SAMPLES = _opinfo_samples()


def translate(kwargs):
    """torch's SDPA keyword arguments -> pyml.attention's, or raise KeyError for one pyml lacks.
    Samples with dropout_p > 0 are compared at dropout_p = 0: random masks cannot match."""
    out = {}
    for key, val in kwargs.items():
        out[_TRANSLATE[key]] = val
    out["dropout_p"] = 0.0
    return out


def _torch(q, k, v, do, dtype, kw):
    import torch

    t = [torch.tensor(a.astype(dtype), requires_grad=True) for a in (q, k, v)]
    tkw = {key: (torch.tensor(val.astype(dtype)) if isinstance(val, np.ndarray) and val.dtype != bool
                 else torch.tensor(val) if isinstance(val, np.ndarray) else val) for key, val in kw.items()}
    tkw["dropout_p"] = 0.0
    out = torch.nn.functional.scaled_dot_product_attention(*t, **tkw)
    out.backward(torch.tensor(do.astype(dtype)))
    return out.detach().numpy(), [a.grad.numpy() for a in t]


@pytest.mark.skipif(not SAMPLES, reason="needs torch and expecttest (pip install expecttest)")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sample", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_torch_opinfo_samples(backend, sample, rng):
    """pyml equals torch on every OpInfo sample: outputs and the gradients of q, k, v (torch
    also differentiates a float attn_mask; pyml's mask is a constant, so that one is not
    compared). float32 within the tolerance rule (R64 = torch float64 of the same values,
    naive = flash-style NumPy in float32); float64 to 1e-10."""
    _, q, k, v, kw = sample
    pkw = translate(kw)
    do = rng.standard_normal(_shape_of(q, k, v))
    o64, g64 = _torch(q, k, v, do, np.float64, kw)
    for dtype in (np.float32, np.float64):
        args = [a.astype(dtype) for a in (q, k, v)]
        mk = dict(pkw)
        if isinstance(mk.get("mask"), np.ndarray) and mk["mask"].dtype != bool:
            mk["mask"] = mk["mask"].astype(dtype)
        out, lse = pyml.attention(*args, return_lse=True, backend=backend, **mk)
        grads = pyml.attention_backward(do.astype(dtype), *args, out, lse, backend=backend, **mk)
        if dtype == np.float32:
            # naive: flash-style NumPy in float32 (see _vectorised), torch's shapes via _oracle
            _, _, gn = _oracle(*args, mk.get("causal", False), do=do.astype(dtype), vectorised=True,
                               mask=mk.get("mask"))
            on = _oracle(*args, mk.get("causal", False), vectorised=True, mask=mk.get("mask"))[0]
            assert_close(out, o64, on, dtype, "out")
            for name, a, r, n in zip(("dq", "dk", "dv"), grads, g64, gn):
                assert_close(a, r, n, dtype, name)
        else:
            np.testing.assert_allclose(out, o64, rtol=1e-10, atol=1e-12)
            for a, r in zip(grads, g64):
                np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-12)


def _shape_of(q, k, v):
    nd = max(a.ndim for a in (q, k, v))
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    return batch[-(nd - 2):] + (q.shape[-2], v.shape[-1])
