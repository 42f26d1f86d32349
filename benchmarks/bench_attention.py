"""`pyml bench attention`: flash-style attention forward and backward, pyml backends vs
torch.nn.functional.scaled_dot_product_attention on CPU (same thread count); with a CUDA device
also pyml[cuda] and torch SDPA on cuda, float32 and float16 (GPU_SIZES). Nothing touches a GPU
unless pyml's cuda backend is available.

Peer timing: forward under no_grad; backward = autograd's backward of one recorded forward
(retain_graph, so only the backward is timed). FLOPs: forward 4*B*H*Nq*Nk*D (two products),
halved when causal; backward 2.5x the forward (five products), as flash-attention counts.
"""
from __future__ import annotations

import numpy as np

import pyml

from ._harness import Case, Runner

# name -> (B, H, N, D, causal, with_backward)
SIZES = {
    "default": [(1, 8, 2048, 64, False, True), (1, 8, 2048, 64, True, True),
                (1, 1, 16384, 64, True, False)],
    "small": [(1, 8, 512, 64, False, True), (1, 8, 512, 64, True, True)],
}
GPU_SIZES = [(1, 8, 4096, 64, False, True), (1, 8, 4096, 64, True, True)]  # float16, cuda only


def _torch_runners(q, k, v, do, causal, device="cpu"):
    import torch

    if device == "gpu" and not torch.cuda.is_available():
        raise ImportError("torch has no CUDA")
    torch.set_num_threads(pyml.get_num_threads())
    F = torch.nn.functional.scaled_dot_product_attention
    tq, tk, tv, tdo = (torch.from_numpy(a).to("cuda" if device == "gpu" else "cpu") for a in (q, k, v, do))

    def fwd():
        def call():
            with torch.no_grad():
                return F(tq, tk, tv, is_causal=causal)
        return call

    def bwd():
        leaves = [t.clone().requires_grad_(True) for t in (tq, tk, tv)]
        out = F(*leaves, is_causal=causal)

        def call():
            for t in leaves:
                t.grad = None
            out.backward(tdo, retain_graph=True)
        return call
    return Runner("torch", "peer", fwd, device=device), Runner("torch", "peer", bwd, device=device)


def _cuda_runners(q, k, v, do, causal):
    """pyml[cuda] on device copies made before the clock starts (CuPy in, CuPy out)."""
    def fwd():
        import cupy as cp

        qd, kd, vd = (cp.asarray(a) for a in (q, k, v))
        return lambda: pyml.attention(qd, kd, vd, causal=causal, backend="cuda")

    def bwd():
        import cupy as cp

        qd, kd, vd, dod = (cp.asarray(a) for a in (q, k, v, do))
        out, lse = pyml.attention(qd, kd, vd, causal=causal, return_lse=True, backend="cuda")
        return lambda: pyml.attention_backward(dod, qd, kd, vd, out, lse, causal=causal, backend="cuda")
    return Runner("pyml[cuda]", "pyml", fwd, device="gpu"), Runner("pyml[cuda]", "pyml", bwd, device="gpu")


def _pyml_runners(q, k, v, do, causal, backends):
    """Runners bound to this problem's arrays (a closure in suite()'s loop would see the
    last problem's arrays: Python binds free variables late)."""
    fwd, bwd = [], []
    for be in backends:
        fwd.append(Runner(f"pyml[{be}]", "pyml", lambda be=be: (
            lambda: pyml.attention(q, k, v, causal=causal, backend=be))))

        def prep(be=be):
            out, lse = pyml.attention(q, k, v, causal=causal, return_lse=True, backend=be)
            return lambda: pyml.attention_backward(do, q, k, v, out, lse, causal=causal, backend=be)
        bwd.append(Runner(f"pyml[{be}]", "pyml", prep))
    return fwd, bwd


def suite(size: str = "default", backends=None, peers=None) -> list[Case]:
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    if backends is None:
        backends = [be for be in ("cpp", "numba", "cuda") if pyml.backends()[be] is None]
    gpu = "cuda" in backends and pyml.backends()["cuda"] is None
    rng = np.random.default_rng(0)
    cases = []
    for B, H, N, D, causal, with_bwd in SIZES[size]:
        q, k, v, do = (rng.standard_normal((B, H, N, D), dtype=np.float32) for _ in range(4))
        flops = 4.0 * B * H * N * N * D * (0.5 if causal else 1.0)
        # the scalar Numba kernel takes minutes at N=16384: compiled C++ only there
        bes = [be for be in backends if (N <= 4096 or be != "numba") and be != "cuda"]
        fwd, bwd = _pyml_runners(q, k, v, do, causal, bes)
        if gpu:
            cf, cb = _cuda_runners(q, k, v, do, causal)
            fwd.append(cf)
            bwd.append(cb)
        if peers is None or "torch" in peers:
            try:
                tf, tb = _torch_runners(q, k, v, do, causal)
                fwd.append(tf)
                bwd.append(tb)
            except ImportError:
                pass
        problem = f"B={B} H={H} N={N} D={D} {'causal' if causal else 'full'} float32"
        cases.append(Case("attention forward", problem, fwd, flops=flops, roof="sgemm"))
        if with_bwd:
            cases.append(Case("attention backward", problem, bwd, flops=2.5 * flops, roof="sgemm"))
    for B, H, N, D, causal, with_bwd in GPU_SIZES if gpu else []:
        q, k, v, do = (rng.standard_normal((B, H, N, D), dtype=np.float32).astype(np.float16) for _ in range(4))
        flops = 4.0 * B * H * N * N * D * (0.5 if causal else 1.0)
        cf, cb = _cuda_runners(q, k, v, do, causal)
        fwd, bwd = [cf], [cb]
        if peers is None or "torch" in peers:
            try:
                tf, tb = _torch_runners(q, k, v, do, causal, device="gpu")
                fwd.append(tf)
                bwd.append(tb)
            except ImportError:
                pass
        problem = f"B={B} H={H} N={N} D={D} {'causal' if causal else 'full'} float16 (gpu)"
        cases.append(Case("attention forward", problem, fwd, flops=flops, roof="sgemm"))
        if with_bwd:
            cases.append(Case("attention backward", problem, bwd, flops=2.5 * flops, roof="sgemm"))
    return cases


def _small():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 2, 128, 32), dtype=np.float32) for _ in range(3)]


def test_attention_forward_cpp(benchmark):
    q, k, v = _small()
    out = benchmark(pyml.attention, q, k, v, causal=True, backend="cpp")
    assert out.shape == q.shape and np.isfinite(out).all()


def test_attention_backward_cpp(benchmark):
    q, k, v = _small()
    out, lse = pyml.attention(q, k, v, return_lse=True, backend="cpp")
    dq, dk, dv = benchmark(pyml.attention_backward, out, q, k, v, out, lse, backend="cpp")
    assert dq.shape == q.shape and dv.shape == v.shape
