"""`pyml bench mdp` (alias value_iteration): Bellman sweeps on dense and sparse random MDPs,
the public call end to end, and convergence (Jacobi vs Gauss-Seidel) on a grid maze.

Kernel rows: one Jacobi sweep of ``pyml.value_iteration`` on a ``pyml.mdp.MDP`` built once,
outside the clock (the model validates and lays out P once, so these rows are the kernel).
End-to-end rows: ``pyml.value_iteration(P, R, gamma, ...)`` as a user calls it on the arrays
a user builds (float64 NumPy P; COO-built CSR), validation included; the setup share (building
the model: the one check pass over P) is printed under notes.
Peers: pymdptoolbox's ValueIteration (kernel rows: its _bellmanOperator, one BLAS mat-vec per
action then the max; end to end: constructor + run() at its defaults, pyml then runs the same
number of sweeps); for sparse a vectorised SciPy loop written here (A CSR mat-vecs, then the
max), since pymdptoolbox's input check rejects scipy.sparse under NumPy 2. Bytes per sweep =
bytes of P (values + CSR indices) read once.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

import pyml
from pyml.mdp import MDP

from ._harness import Case, Runner, check_size

GAMMA = 0.95
SWEEPS = 5        # sweeps per timed kernel call
E2E_SWEEPS = 60   # sweeps of the sparse end-to-end call

SIZES = {  # dense (S, A), sparse (S, A, successors), maze side
    "default": ((2000, 8), (1_000_000, 4, 8), 300),
    "small": ((500, 4), (50_000, 4, 8), 60),
    "large": ((4000, 8), (2_000_000, 4, 8), 1000),
}


def random_dense(S, A, dtype, seed=0):
    rng = np.random.default_rng(seed)
    P = rng.random((A, S, S), dtype=np.float64)
    P /= P.sum(axis=2, keepdims=True)
    return P.astype(dtype, copy=False), rng.standard_normal((S, A))


def random_sparse(S, A, k, seed=0):
    """A CSR matrices built as a user would: from COO triplets (rows, cols, float64 values)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    mats = []
    rows = np.repeat(np.arange(S), k)
    for _ in range(A):
        vals = rng.random((S, k)) + 0.01
        vals /= vals.sum(axis=1, keepdims=True)
        mats.append(sp.csr_matrix((vals.ravel(), (rows, rng.integers(0, S, S * k))), shape=(S, S)))
    return mats, rng.standard_normal((S, A))


def _setup(P, R, repeat=3):
    """Seconds the public call spends before its first sweep: building the validated model."""
    def once():
        t0 = time.perf_counter()
        MDP(P, R)
        return time.perf_counter() - t0
    return lambda: statistics.median(once() for _ in range(repeat))


def _e2e_runner(P, R, backend, max_iter, note=""):
    def prepare():
        return lambda: pyml.value_iteration(P, R, GAMMA, max_iter=max_iter, backend=backend)
    return Runner(f"pyml[{backend}] end to end", "pyml", prepare, note=note, setup=_setup(P, R))


def _mdptoolbox_e2e_runner(P, R):
    import mdptoolbox.mdp

    def prepare():
        return lambda: mdptoolbox.mdp.ValueIteration(P, R, GAMMA).run()
    return Runner("pymdptoolbox ValueIteration().run()", "peer", prepare)


def _mdptoolbox_sweeps(P, R) -> int:
    import mdptoolbox.mdp

    vi = mdptoolbox.mdp.ValueIteration(P, R, GAMMA)
    vi.run()
    return int(vi.iter)


def _sweeps(model, backend, n, method="jacobi"):
    # epsilon=1e-300: never converged, so exactly n sweeps run
    return pyml.value_iteration(model, None, GAMMA, epsilon=1e-300, max_iter=n, method=method,
                                backend=backend)


def _sweep_runner(model, backend, method="jacobi"):
    def prepare():
        return lambda: _sweeps(model, backend, SWEEPS, method)
    return Runner(f"pyml[{backend}]" + ("" if method == "jacobi" else " gauss-seidel"), "pyml", prepare)


def _mdptoolbox_runner(P, R):
    import mdptoolbox.mdp

    def prepare():
        vi = mdptoolbox.mdp.ValueIteration(P, R, GAMMA, epsilon=1e-6)

        def call():
            for _ in range(SWEEPS):
                vi.V = vi._bellmanOperator()[1]
        return call
    return Runner("pymdptoolbox", "peer", prepare)


def _scipy_runner(mats, R, sweeps=SWEEPS, label="scipy (vectorised)"):
    def prepare():
        V = np.zeros(R.shape[0])
        Rt = np.ascontiguousarray(R.T)
        Q = np.empty_like(Rt)

        def call():
            nonlocal V
            for _ in range(sweeps):
                for a, m in enumerate(mats):
                    Q[a] = Rt[a] + GAMMA * (m @ V)
                V = Q.max(axis=0)
        return call
    return Runner(label, "peer", prepare)


def _installed(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _maze_runner(P, R, backend, method, gamma, epsilon, record):
    def prepare():
        model = MDP(P, R)

        def call():
            n = pyml.value_iteration(model, None, gamma, epsilon=epsilon, method=method,
                                     backend=backend).n_iter
            record[f"{backend} {method} sweeps"] = n
            runner.note = f"{n} sweeps"
        return call
    runner = Runner(f"pyml[{backend}] {method}", "pyml", prepare)
    return runner


def suite(size: str = "default", backends=None, peers=None) -> list[Case]:
    check_size(size)
    if backends is None:
        backends = [b for b in ("cpp", "numba") if pyml.backends()[b] is None]
    use = lambda name, module: (peers is None or name in peers) and _installed(module)
    (S, A), (Ss, As, k), n_maze = SIZES[size]
    cases = []
    P64, R = random_dense(S, A, np.float64)
    for dtype in (np.float64, np.float32):
        P = P64 if dtype == np.float64 else P64.astype(np.float32)
        model = MDP(P, R)
        runners = [_sweep_runner(model, b) for b in backends]
        if use("pymdptoolbox", "mdptoolbox"):
            # The peer always runs on float64 P: the float32 row shows what halving the bytes buys.
            runners.append(_mdptoolbox_runner(P64, R))
        cases.append(Case("value_iteration dense", f"S={S} A={A} {np.dtype(dtype).name} P",
                          runners, nbytes=float(P.nbytes), roof="stream", per="sweep", calls=SWEEPS))
    # End to end, dense: to the sweep count pymdptoolbox reaches at its defaults.
    if use("pymdptoolbox", "mdptoolbox"):
        n = _mdptoolbox_sweeps(P64, R)
        note = f"{n} sweeps (pymdptoolbox's count at its defaults)"
        runners = [_e2e_runner(P64, R, b, n, note) for b in backends]
        runners.append(_mdptoolbox_e2e_runner(P64, R))
        cases.append(Case("value_iteration dense end to end", f"S={S} A={A} float64 P, {n} sweeps",
                          runners, per="solve"))
    del P64
    mats, Rs = random_sparse(Ss, As, k)
    model = MDP(mats, Rs)
    runners = [_sweep_runner(model, b) for b in backends]
    if use("scipy", "scipy"):
        runners.append(_scipy_runner(mats, Rs))
    nbytes = float(sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in mats))
    cases.append(Case("value_iteration sparse", f"S={Ss} A={As} {k} succ float64 CSR", runners,
                      nbytes=nbytes, roof="stream", per="sweep", calls=SWEEPS))
    runners = [_e2e_runner(mats, Rs, b, E2E_SWEEPS) for b in backends]
    if use("scipy", "scipy"):
        runners.append(_scipy_runner(mats, Rs, E2E_SWEEPS, "scipy loop"))
    cases.append(Case("value_iteration sparse end to end",
                      f"S={Ss} A={As} {k} succ COO-built CSR, {E2E_SWEEPS} sweeps", runners,
                      nbytes=nbytes, roof="stream", per="sweep", calls=E2E_SWEEPS))
    # Maze: goal (+1, 0 per step) in the top-left corner, so Gauss-Seidel's in-order sweep
    # (state 0 first) carries the goal's value forward within one sweep. With -1 per step
    # instead, walled-in cells (pure self-loops) converge at rate gamma whatever the order,
    # and both methods need ln(tol)/ln(gamma) sweeps.
    env = pyml.envs.maze(n_maze, slip=0.1, seed=0)
    layout = [row[::-1] for row in env.layout[::-1]]
    env = pyml.envs.GridWorld(layout, slip=0.1, step_reward=0.0, goal_reward=1.0)
    Pm, Rm = env.to_mdp(sparse=True)
    record: dict = {}
    runners = [_maze_runner(Pm, Rm, b, m, 0.99, 1e-2, record)
               for b in backends for m in ("jacobi", "gauss-seidel")]
    cases.append(Case("value_iteration maze", f"{n_maze}x{n_maze} slip 0.1 gamma 0.99 eps 1e-2",
                      runners, per="solve", extra=record))
    return cases


# ------------------------------------------------------------- pytest-benchmark (small)
def test_dense_sweep_cpp(benchmark):
    model = MDP(*random_dense(300, 4, np.float64))
    benchmark(lambda: _sweeps(model, "cpp", 1))


def test_sparse_sweep_numba(benchmark):
    model = MDP(*random_sparse(20_000, 4, 8))
    benchmark(lambda: _sweeps(model, "numba", 1))
