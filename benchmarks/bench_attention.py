"""`pyml bench attention`: flash-style attention forward and backward, pyml backends vs
torch.nn.functional.scaled_dot_product_attention on CPU (same thread count); with a CUDA device
also pyml[cuda] and torch SDPA on cuda, float32 and float16 (GPU_SIZES). Nothing touches a GPU
unless pyml's cuda backend is available.

End to end rows: the call a user writes, ``pyml.attention(q, k, v)`` / ``causal=True`` at its
defaults (backend=None, validation included), on float32 (B, H, N, D) arrays from NumPy and on
the (B, H, N, D) view of a (B, N, H, D) projection (``x.transpose(0, 2, 1, 3)``: one copy);
the setup share (validation and conversion before the first kernel call) goes under notes.

Peer timing: forward under no_grad; backward = autograd's backward of one recorded forward
(retain_graph, so only the backward is timed). FLOPs: forward 4*B*H*Nq*Nk*D (two products),
halved when causal; backward 2.5x the forward (five products), as flash-attention counts.
"""
from __future__ import annotations


import numpy as np

import pyml

from ._harness import Case, Runner, check_size
from ._harness import setup_seconds as _setup_seconds

# name -> (B, H, N, D, causal, with_backward)
SIZES = {
    "default": [(1, 8, 2048, 64, False, True), (1, 8, 2048, 64, True, True),
                (1, 1, 16384, 64, True, False)],
    "small": [(1, 8, 512, 64, False, True), (1, 8, 512, 64, True, True)],
    "large": [(2, 16, 4096, 64, False, True), (2, 16, 4096, 64, True, True),
              (1, 8, 16384, 128, True, False)],
}
KERNELS = ("attention_forward", "attention_backward")  # the compiled kernels' one name


def setup_seconds(call) -> float:
    """_harness.setup_seconds with this loop's kernel names."""
    return _setup_seconds(call, KERNELS)


def _end_to_end_runners(q, k, v, do, causal):
    """pyml.attention / attention_backward as a user calls them: defaults, (B, H, N, D) float32
    from NumPy, and the head-major view of a (B, N, H, D) projection (copied once inside)."""
    qt, kt, vt = (np.ascontiguousarray(a.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3) for a in (q, k, v))
    fwd = []
    for label, args, note in (("pyml end to end", (q, k, v), "pyml.attention(q, k, v) at defaults"),
                              ("pyml end to end (B,N,H,D) view", (qt, kt, vt),
                               "q = x.transpose(0, 2, 1, 3) of a (B, N, H, D) projection: one copy")):
        call = (lambda a=args: pyml.attention(*a, causal=causal))
        fwd.append(Runner(label, "pyml", lambda c=call: c, note=note, setup=lambda c=call: setup_seconds(c)))

    bound = {}

    def prep():  # the forward that gives out and lse is untimed setup of the backward row
        out, lse = pyml.attention(q, k, v, causal=causal, return_lse=True)
        bound["call"] = lambda: pyml.attention_backward(do, q, k, v, out, lse, causal=causal)
        return bound["call"]
    bwd = [Runner("pyml end to end", "pyml", prep, setup=lambda: setup_seconds(bound["call"]),
                  note="pyml.attention_backward(do, q, k, v, out, lse) at defaults")]
    return fwd, bwd
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
    check_size(size)
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
        if "cpp" in bes or "numba" in bes:
            ef, eb = _end_to_end_runners(q, k, v, do, causal)
            fwd += ef
            bwd += eb
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
