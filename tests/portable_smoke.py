"""Smoke test of the compiled kernels on whatever CPU runs it: every hot loop once on the
cpp backend (and kmeans, mf on cython), small shapes, each compared with the reference
backend. Run by tests/test_portable.py (each CPU variant, the installed wheel) and by
.ci/run under qemu-x86_64 -cpu Haswell / EPYC-Rome:

    python tests/portable_smoke.py [--expect avx2]

``--expect`` asserts which kernel variant pyml._cpu chose for both extensions. It exits
non-zero on any mismatch and prints one line per check.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import scipy.sparse as sp

import pyml
from pyml import _cpu


def close(name: str, got, want, rtol: float) -> bool:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = float(np.max(np.abs(got - want) / (1.0 + np.abs(want)))) if want.size else 0.0
    ok = got.shape == want.shape and err <= rtol
    print(f"{'ok  ' if ok else 'FAIL'} {name:34s} max rel err {err:.2e} (tol {rtol:.0e})")
    return ok


def checks(rng: np.random.Generator) -> list[bool]:
    out = []
    X = rng.standard_normal((300, 7)).astype(np.float32)
    C = X[rng.choice(300, 13, replace=False)] + 0.01
    _, d_ref = pyml.kmeans_assign(X.astype(np.float64), C.astype(np.float64), backend="python")
    for b in ("cpp", "cython"):
        _, d = pyml.kmeans_assign(X, C, backend=b)
        out.append(close(f"kmeans_assign {b} float32", d, d_ref, 1e-4))

    x = rng.standard_normal((2, 3, 11, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    out.append(close("conv2d cpp float64", pyml.conv2d(x, w, padding=1, backend="cpp"),
                     pyml.conv2d(x, w, padding=1, backend="python"), 1e-10))

    q, k, v = (rng.standard_normal((1, 2, 37, 16)) for _ in range(3))
    out.append(close("attention causal cpp float64", pyml.attention(q, k, v, causal=True, backend="cpp"),
                     pyml.attention(q, k, v, causal=True, backend="python"), 1e-10))

    R = sp.random(23, 17, density=0.3, format="csr", random_state=1, dtype=np.float64)
    R.data = np.round(R.data * 4 + 1)

    def als(b, implicit):
        m = pyml.ALS(factors=4, iterations=2, implicit=implicit, dtype=np.float64, random_state=0,
                     backend=b, show_progress=False)
        m.fit(R)
        return m.user_factors @ m.item_factors.T

    for b in ("cpp", "cython"):
        out.append(close(f"ALS explicit {b} float64", als(b, False), als("python", False), 1e-8))
        out.append(close(f"ALS implicit (CG) {b} float64", als(b, True), als("python", True), 1e-8))

    S, A = 19, 3
    P = rng.random((A, S, S))
    P /= P.sum(axis=2, keepdims=True)
    Rw = rng.standard_normal((S, A))
    out.append(close("value_iteration dense cpp", pyml.value_iteration(P, Rw, 0.9, backend="cpp").V,
                     pyml.value_iteration(P, Rw, 0.9, backend="python").V, 1e-8))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--expect", choices=_cpu.VARIANTS, help="the variant pyml must choose")
    args = p.parse_args(argv)
    chosen = {b: _cpu.variant(b) for b in _cpu.PACKAGES}
    print(f"variants: {chosen}; CPU runs {', '.join(_cpu.runnable())}")
    ok = checks(np.random.default_rng(0))
    if args.expect and set(chosen.values()) != {args.expect}:
        print(f"FAIL expected the {args.expect} variant, got {chosen}")
        ok.append(False)
    print(f"{sum(ok)}/{len(ok)} smoke checks passed")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
