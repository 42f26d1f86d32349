"""`pyml bench mf` (alias `als`): ALS fit time per iteration, pyml backends vs implicit (CPU),
and the end-to-end fit as a user writes it.

Both sides fit the same synthetic power-law implicit-feedback matrix from the same kind of
start (uniform [0, 0.01) factors), same factors, regularization, alpha (c = 1 + alpha r in
both), cg_steps (an attribute of implicit's model, not a constructor argument) and threads.
One timed call is a whole fit (including the transpose each library makes) divided by the
iterations. After timing, the final objective of each model is evaluated with pyml's loss and
written in the runner's note, so "equal loss within 1%" can be read off the table.

The "als fit end to end" row is the public call exactly as a user writes it: a play-count log
of (user, item, count) events with repeats, turned into a matrix with
``scipy.sparse.csr_matrix((count, (user, item)))`` (float64 values, duplicates summed by SciPy),
then ``pyml.ALS(factors=64, regularization=0.01, alpha=1.0, iterations=5, cg_steps=3,
random_state=0).fit(R)`` at its defaults otherwise (implicit feedback, backend auto, no training
loss) beside implicit's ``AlternatingLeastSquares(...).fit(R)`` on the same matrix. Both run with
``show_progress=False`` only to keep the table readable (the bar costs nothing measurable). The
setup share under notes: is a fit with ``iterations=0`` (validation, conversion, transpose,
random start) over the full fit.
"""
from __future__ import annotations

import time

import numpy as np

import pyml
from pyml.datasets import synthetic_ratings

from ._harness import Case, Runner

SIZES = {  # n_users, n_items, nnz (end to end: events drawn, about 15% are repeats)
    "default": (50_000, 20_000, 2_000_000),
    "small": (5_000, 2_000, 100_000),
    "large": (200_000, 50_000, 10_000_000),
}
FACTORS, REG, ALPHA, CG_STEPS, ITERATIONS = 64, 0.01, 1.0, 3, 5
REG_EXPLICIT = 0.1  # explicit ratings: 0.01 leaves float32 normal equations too ill-conditioned


def _flops(R, f, implicit, exact):
    """FLOP of one iteration (two half-steps), counting the kernels' arithmetic."""
    n_rows, nnz = R.shape[0] + R.shape[1], 2 * R.nnz
    gram = 2.0 * (R.shape[0] + R.shape[1]) * f * f            # Y^T Y per half-step
    rhs = 2.0 * f * nnz
    if implicit and not exact:
        return gram + rhs + (CG_STEPS + 1) * (2.0 * f * f * n_rows + 4.0 * f * nnz)
    return gram + rhs + f * (f + 1) * nnz + n_rows * (f ** 3 / 3.0 + 2.0 * f * f)


def _reg(implicit):
    return REG if implicit else REG_EXPLICIT


def _loss(R, X, Y, implicit):
    """pyml's objective of any factors (implicit's too): a model given those factors."""
    judge = pyml.ALS(FACTORS, _reg(implicit), implicit=implicit, alpha=ALPHA)
    judge.user_factors, judge.item_factors = X, Y
    return judge.loss(R)


def _pyml_runner(R, be, implicit, exact):
    runner = Runner(f"pyml[{be}]", "pyml", None)

    def prepare():
        def fit():
            runner.model = pyml.ALS(FACTORS, _reg(implicit), iterations=ITERATIONS, implicit=implicit, alpha=ALPHA,
                                    cg_steps=CG_STEPS, exact=exact, random_state=0, backend=be,
                                    show_progress=False).fit(R)
        return fit

    runner.prepare = prepare
    return runner


def _implicit_runner(R, use_cg, threads):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    runner = Runner("implicit", "peer", None, note="implicit.cpu.als")

    def prepare():
        def fit():
            m = AlternatingLeastSquares(factors=FACTORS, regularization=REG, alpha=ALPHA,
                                        iterations=ITERATIONS, num_threads=threads, use_cg=use_cg,
                                        calculate_training_loss=False, random_state=0)
            m.cg_steps = CG_STEPS
            # implicit warns that a multi-threaded OpenBLAS slows it down: give it its best setup
            with threadpool_limits(1, "blas"):
                m.fit(R, show_progress=False)
            runner.model = m
        return fit

    runner.prepare = prepare
    return runner


def _with_loss_note(runner, R, implicit):
    """prepare() fits once untimed, writes the final objective into the note (the harness
    reads notes after timing), and doubles as the warm-up (Numba compilation, page faults)."""
    inner, base = runner.prepare, runner.note

    def prepare():
        fn = inner()
        fn()
        m = runner.model
        runner.note = f"{base} loss {_loss(R, m.user_factors, m.item_factors, implicit):.6g}".strip()
        return fn

    runner.prepare = prepare
    return runner


def user_matrix(n_users, n_items, events, seed=0):
    """A play-count matrix built the way users build one: power-law (Zipf 0.8) users and items,
    one (user, item, count) event per draw, repeats summed by SciPy's COO -> CSR."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)

    def zipf(n):
        w = 1.0 / np.arange(1, n + 1) ** 0.8
        return rng.permutation(w / w.sum())

    users = rng.choice(n_users, events, p=zipf(n_users))
    items = rng.choice(n_items, events, p=zipf(n_items))
    counts = 1.0 + rng.poisson(1.0, events)  # float64, as np.ones / log parsing give
    return sp.csr_matrix((counts, (users, items)), shape=(n_users, n_items))


def _end_to_end(R, threads, with_peer):
    kw = dict(factors=FACTORS, regularization=REG, alpha=ALPHA, iterations=ITERATIONS,
              cg_steps=CG_STEPS, random_state=0)

    def setup():
        t0 = time.perf_counter()
        pyml.ALS(**{**kw, "iterations": 0}).fit(R, show_progress=False)
        return time.perf_counter() - t0

    runner = Runner("pyml", "pyml", None, setup=setup)

    def prepare():
        def fit():
            runner.model = pyml.ALS(**kw).fit(R, show_progress=False)
        return fit

    runner.prepare = prepare
    runners = [runner]
    if with_peer:
        try:
            runners.append(_implicit_runner(R, True, threads))
        except ImportError:
            pass
    return [_with_loss_note(r, R, True) for r in runners]


def suite(size: str = "default", backends=None, peers=None) -> list[Case]:
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    if backends is None:
        backends = [b for b in ("cpp", "cython", "numba") if pyml.backends()[b] is None]
    if peers is None:
        peers = ["implicit"]
    n_u, n_i, nnz = SIZES[size]
    threads = pyml.get_num_threads()
    cases = []
    for label, implicit, exact in (("implicit cg", True, False), ("explicit cholesky", False, True)):
        # implicit: play counts; explicit: real-valued ratings (same users, items, pattern)
        R, _ = synthetic_ratings(n_u, n_i, nnz, rank=8, implicit=implicit, dtype=np.float32, seed=0)
        runners = [_pyml_runner(R, be, implicit, exact) for be in backends]
        if "implicit" in peers and implicit:
            try:
                runners.append(_implicit_runner(R, True, threads))
            except ImportError:
                pass
        runners = [_with_loss_note(r, R, implicit) for r in runners]
        cases.append(Case(f"als {label}", f"{n_u}x{n_i} nnz={nnz} f={FACTORS} "
                          f"{'cg=%d ' % CG_STEPS if implicit and not exact else ''}float32",
                          runners, flops=_flops(R, FACTORS, implicit, exact), roof="sgemm",
                          per="iteration", calls=ITERATIONS))
    R = user_matrix(n_u, n_i, nnz)
    cases.append(Case("als fit end to end", f"{n_u}x{n_i} nnz={R.nnz} f={FACTORS} cg={CG_STEPS} "
                      f"float64 COO-built, {ITERATIONS} iterations",
                      _end_to_end(R, threads, "implicit" in peers),
                      flops=ITERATIONS * _flops(R, FACTORS, True, False), roof="sgemm", per="fit"))
    return cases


# ---------------------------------------------------------------- pytest-benchmark (small)
def _small():
    R, _ = synthetic_ratings(2000, 800, 40_000, rank=8, implicit=True, seed=0)
    return R


def test_als_implicit_cg_cpp(benchmark):
    R = _small()
    m = benchmark(lambda: pyml.ALS(32, iterations=2, implicit=True, backend="cpp", random_state=0,
                                   show_progress=False).fit(R))
    assert np.isfinite(m.user_factors).all()


def test_als_explicit_numba(benchmark):
    R = _small()
    m = benchmark(lambda: pyml.ALS(32, iterations=2, implicit=False, backend="numba", random_state=0,
                                   show_progress=False, compute_loss=True).fit(R))
    assert m.loss_[-1] <= m.loss_[0]
