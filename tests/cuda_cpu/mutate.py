"""Mutation check of the emulated CUDA tests: each mutation (an off-by-one in a loop bound, a dropped barrier,
a wrong tie rule, ...) is applied to the kernel source *in memory* (pyml.kernels.cuda.source is patched; no
file changes), the tests of that kernel run, and the mutation must make at least one of them fail.

    python tests/cuda_cpu/mutate.py            # every mutation; exit status 1 if one survives
    python tests/cuda_cpu/mutate.py attention  # the mutations of one kernel file
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
# (kernel file, kernel function, text in the source, its mutation, -k expression of the tests that must catch it)
MUTATIONS = [
    ("kmeans", "kmeans_assign", "for (long long j = 0; j < kk; ++j)", "for (long long j = 0; j < kk - 1; ++j)",
     "kmeans_assign"),
    ("kmeans", "weighted_sums", "atomicAdd(W + j, w[i])", "atomicAdd(W + j, 1.0)", "kmeans_fit"),
    ("mdp", "sweep_dense", "for (int off = 16; off > 0; off >>= 1)", "for (int off = 16; off > 1; off >>= 1)",
     "value_iteration_dense"),
    ("mdp", "sweep_sparse", "k < indptr[row + 1]", "k + 1 < indptr[row + 1]", "value_iteration_sparse"),
    ("conv", "conv2d", "for (int n = 0; n < g.KW; ++n) {\n                    const int xx = g.sw * j",
     "for (int n = 0; n < g.KW - 1; ++n) {\n                    const int xx = g.sw * j", "conv2d"),
    ("conv", "conv2d_backward_input", "for (int oo = 0; oo < Og; ++oo)", "for (int oo = 1; oo < Og; ++oo)", "conv2d"),
    ("conv", "conv2d_backward_weight", "for (int half = blockDim.x / 2; half > 0; half >>= 1)",
     "for (int half = blockDim.x / 2; half > 1; half >>= 1)", "conv2d"),
    ("conv", "max_pool2d", "if (arg < 0 || v > best || v != v)", "if (arg < 0 || v >= best || v != v)", "pooling"),
    ("conv", "max_pool2d_backward", "if (k >= 0 && k < hw) atomicAdd(dx + bc * hw + k, dz[t]);",
     "if (k > 0 && k < hw) atomicAdd(dx + bc * hw + k, dz[t]);", "pooling"),
    ("conv", "avg_pool2d", "for (int xx = x0; xx < x1; ++xx)", "for (int xx = x0 + 1; xx < x1; ++xx)", "pooling"),
    ("conv", "avg_pool2d_backward", "for (int j = j0; j <= j1; ++j)", "for (int j = j0; j < j1; ++j)", "pooling"),
    ("attention", "attention_fwd", "    for (int off = LANES / 2; off > 0; off >>= 1) {\n        const A y",
     "    for (int off = LANES / 2; off > 1; off >>= 1) {\n        const A y", "attention_forward"),
    ("attention", "attention_fwd (barrier)", "__syncthreads();  // the previous tile's sK, sV, sP are no longer read",
     "", "attention_forward"),
    ("attention", "attention_bwd_dkdv", "prod_nn<RPT, CPT>(gv, sP, ldp, r0, sO, ldv, lane, Dv, ni);",
     "prod_nn<RPT, CPT>(gv, sP, ldp, r0, sO, ldv, lane, Dv, ni - 1);", "attention_forward"),
    ("attention", "attention_bwd_dq", "prod_nn<RPT, CPT>(g, sS, ldp, r0, sK, ldk, lane, D, nk);",
     "prod_nn<RPT, CPT>(g, sS, ldp, r0, sK, ldk, lane, D, nk - 1);", "attention_forward"),
    ("mf", "als_half_step (block_sum)", "for (int s = blockDim.x / 2; s > 0; s >>= 1)",
     "for (int s = blockDim.x / 2; s > 1; s >>= 1)", "als"),
    ("mf", "als_half_step (Cholesky)", "for (int k = 0; k < j; ++k) s -= A[a * f + k] * A[j * f + k];",
     "for (int k = 1; k < j; ++k) s -= A[a * f + k] * A[j * f + k];", "als"),
]


def run(selected: list[str]) -> int:
    sys.path.insert(0, str(TESTS))
    import pyml.kernels.cuda as kc

    original = kc.source
    survivors = []
    for loop, func, old, new, k in MUTATIONS:
        if selected and loop not in selected:
            continue
        text = original(loop)
        if text.count(old) != 1:
            print(f"SKIP  {loop}.cu {func}: the text to mutate is not (once) in the source")
            survivors.append(f"{loop}:{func} (not applied)")
            continue
        kc.source = lambda name, _l=loop, _t=text.replace(old, new): _t if name == _l else original(name)
        kc.module.cache_clear()
        rc = pytest.main(["-q", "-x", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=",
                          str(TESTS / "test_cuda_cpu.py"), "-k", k])
        kc.source = original
        kc.module.cache_clear()
        caught = rc == pytest.ExitCode.TESTS_FAILED
        print(f"{'CAUGHT' if caught else 'SURVIVED'}  {loop}.cu {func}: {old.strip()[:60]!r} -> {new.strip()[:60]!r}")
        if not caught:
            survivors.append(f"{loop}:{func}")
    print("survivors:", survivors or "none")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
