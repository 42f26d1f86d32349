"""`pyml bench value_iteration`: Bellman sweeps on dense and sparse random MDPs, and
convergence (Jacobi vs Gauss-Seidel) on a grid maze.

Timed unit: one Jacobi sweep of ``pyml.value_iteration`` on a ``pyml.mdp.MDP`` built once,
outside the clock (the model validates and converts P once, so these rows are the kernel).
Peers: pymdptoolbox's ValueIteration._bellmanOperator (one BLAS mat-vec per action,
then the max) for dense; for sparse a vectorised SciPy sweep written here (A CSR
mat-vecs, then the max), since pymdptoolbox's input check rejects scipy.sparse under
NumPy 2. Bytes per sweep = bytes of P (values + CSR indices) read once.
"""
from __future__ import annotations

import numpy as np

import pyml
from pyml.mdp import MDP

from ._harness import Case, Runner

GAMMA = 0.95
SWEEPS = 5  # sweeps per timed call

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
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    mats = []
    for _ in range(A):
        cols = rng.integers(0, S, (S, k))
        vals = rng.random((S, k)) + 0.01
        vals /= vals.sum(axis=1, keepdims=True)
        m = sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, S * k + 1, k)), shape=(S, S))
        m.sum_duplicates()
        mats.append(m)
    return mats, rng.standard_normal((S, A))


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


def _scipy_runner(mats, R):
    def prepare():
        V = np.zeros(R.shape[0])
        Rt = np.ascontiguousarray(R.T)
        Q = np.empty_like(Rt)

        def call():
            nonlocal V
            for _ in range(SWEEPS):
                for a, m in enumerate(mats):
                    Q[a] = Rt[a] + GAMMA * (m @ V)
                V = Q.max(axis=0)
        return call
    return Runner("scipy (vectorised)", "peer", prepare)


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
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
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
    del P64
    mats, Rs = random_sparse(Ss, As, k)
    model = MDP(mats, Rs)
    runners = [_sweep_runner(model, b) for b in backends]
    if use("scipy", "scipy"):
        runners.append(_scipy_runner(mats, Rs))
    nbytes = float(sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in mats))
    cases.append(Case("value_iteration sparse", f"S={Ss} A={As} {k} succ float64 CSR", runners,
                      nbytes=nbytes, roof="stream", per="sweep", calls=SWEEPS))
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
