"""`pyml bench startup`: what a user waits for before the first result, in fresh processes.

Rows: ``import pyml`` (median of repeats, each a new interpreter), and for each public
hot-loop function and compiled backend the first call's time minus a warm call's, measured
after ``pyml warmup <loop>`` has run (once per loop and bench run, so a signature the warmup
misses shows as a compile here). Numba's own start-up (``import numba``, its compiler
context, its thread pool) is part of every first numba call and no code of pyml's can avoid
it: the row "numba runtime start" measures it alone, and the rows "pyml[numba] runtime
started" time the first call of a process in which only that was done beforehand.
Targets: import <= 0.3 s with scikit-learn installed; first call <= 50 ms above a warm call.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pyml

from ._harness import Case, Runner, check_size

IMPORT_TARGET, FIRST_CALL_TARGET = 0.3, 0.050

# Inputs are tiny on purpose: the warm call is then ~free and first - warm is the one-off cost
# (module imports, extension loading, Numba cache loading) the user pays in a new process.
_DATA = {
    "kmeans": "X = rng.random((1000, 8)); C = X[:16].copy()",
    "conv": "x = rng.random((2, 3, 16, 16)); w = rng.random((4, 3, 3, 3))",
    "attention": "q, k, v = (rng.random((1, 2, 64, 16)) for _ in range(3))",
    "mf": "R = scipy.sparse.random(200, 100, density=0.05, format='csr', random_state=0)",
    "mdp": ("P = rng.random((4, 50, 50)); P /= P.sum(-1, keepdims=True); "
            "Rw = rng.random((50, 4)); env = pyml.envs.maze(6)"),
}

# (loop, name, what the user writes); {b} is the backend. The first per loop is the "small" set.
CALLS = [
    ("kmeans", "kmeans_assign", "pyml.kmeans_assign(X, C, backend={b!r})"),
    ("kmeans", "KMeans.fit", "pyml.KMeans(16, n_init=1, max_iter=5, random_state=0, backend={b!r}).fit(X)"),
    ("conv", "conv2d", "pyml.conv2d(x, w, backend={b!r})"),
    ("conv", "max_pool2d", "pyml.max_pool2d(x, 2, backend={b!r})"),
    ("attention", "attention", "pyml.attention(q, k, v, backend={b!r})"),
    ("mf", "ALS.fit", "pyml.ALS(factors=8, iterations=2, random_state=0, backend={b!r}).fit(R)"),
    ("mf", "mf_sgd", "pyml.mf_sgd(R, epochs=2, backend={b!r})"),
    ("mdp", "value_iteration", "pyml.value_iteration(P, Rw, 0.9, backend={b!r})"),
    ("mdp", "q_learning", "pyml.q_learning(env, episodes=5, backend={b!r})"),
]
CYTHON_CALLS = {"kmeans_assign", "KMeans.fit", "ALS.fit"}  # the calls with a Cython kernel

# Numba's own start-up: the import and the first refresh of its CPU target context (typing and
# lowering registries, which Numba loads before it loads even a cached kernel), paid by the
# first numba call of every process whatever the kernel.
_NUMBA_START = ("import numba; from numba.core.registry import cpu_target; "
                "cpu_target.target_context.refresh()")

_PROGRAM = """
import time
t0 = time.perf_counter()
import pyml
t_import = time.perf_counter() - t0
import json, sys
import numpy as np, scipy.sparse
{pre}
rng = np.random.default_rng(0)
{data}
t0 = time.perf_counter(); {call}; first = time.perf_counter() - t0
warm = float("inf")
for _ in range(3):
    t0 = time.perf_counter(); {call}; warm = min(warm, time.perf_counter() - t0)
print(json.dumps({{"import": t_import, "first": first, "warm": warm}}))
"""


def _fresh(code: str) -> dict[str, float]:
    """Run ``code`` in a new interpreter; its last stdout line is a JSON dict of seconds."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip()
                           else f"exit status {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def import_seconds(repeat: int) -> list[float]:
    """``import pyml`` in ``repeat`` fresh interpreters."""
    code = "import time; t = time.perf_counter(); import pyml, json; " \
           "print(json.dumps({'import': time.perf_counter() - t}))"
    _fresh(code)  # untimed: the first process after an install also writes .pyc files
    return [_fresh(code)["import"] for _ in range(repeat)]


def numba_start_seconds(repeat: int) -> list[float]:
    """Numba's own start-up (see _NUMBA_START) in ``repeat`` fresh interpreters."""
    code = f"import time, json; t = time.perf_counter(); {_NUMBA_START}; " \
           "print(json.dumps({'start': time.perf_counter() - t}))"
    _fresh(code)
    return [_fresh(code)["start"] for _ in range(repeat)]


_warmed: set[str] = set()


def warmup(loop: str) -> None:
    """``pyml warmup <loop>`` once per bench run: the numba rows are "after warmup", and a
    signature the warmup does not compile then shows as a compile in the first call."""
    if loop not in _warmed:
        out = subprocess.run([sys.executable, "-m", "pyml.cli", "warmup", loop],
                             capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(f"pyml warmup {loop} failed: {out.stdout[-300:]}{out.stderr[-300:]}")
        _warmed.add(loop)


def first_call_seconds(loop: str, call: str, backend: str, repeat: int,
                       numba_started: bool = False) -> list[float]:
    """First call minus the best of three warm calls, in ``repeat`` fresh processes (with
    ``numba_started``, Numba's own start-up is done before the clock)."""
    code = _PROGRAM.format(data=_DATA[loop], call=call.format(b=backend),
                           pre=_NUMBA_START if numba_started else "")
    if backend == "numba":
        warmup(loop)
    _fresh(code)  # untimed: .pyc files and the page cache, as any earlier run leaves them
    return [max(0.0, r["first"] - r["warm"]) for r in (_fresh(code) for _ in range(repeat))]


def _sklearn_note() -> str:
    import importlib.util

    have = importlib.util.find_spec("sklearn") is not None
    return f"scikit-learn {'installed' if have else 'not installed'}"


def _backends(backends) -> list[str]:
    if backends is None:
        return [b for b in ("numba", "cpp", "cython") if pyml.backends()[b] is None]
    return [b for b in backends if b != "cuda"]  # CUDA start-up is not a CPU process cost


def suite(size: str = "default", backends=None, peers=None) -> list[Case]:
    """``import pyml`` and first-call overheads; "small": one function per loop, "large":
    also the python reference backend."""
    check_size(size)
    seen: set[str] = set()
    calls = []
    for loop, name, call in CALLS:
        if size != "small" or loop not in seen:
            calls.append((loop, name, call))
        seen.add(loop)
    bs = _backends(backends) + (["python"] if size == "large" else [])
    cases = [Case(f"startup: import pyml (target <= {IMPORT_TARGET} s)", "fresh interpreter",
                  [Runner("pyml", "pyml", None, note=_sklearn_note(), timings=import_seconds)])]
    if "numba" in bs:
        cases.append(Case("startup: numba runtime start (in every first numba call)",
                          "import numba + CPU target context",
                          [Runner("numba", "pyml", None, note="not pyml code: numba's own",
                                  timings=numba_start_seconds)]))
    for loop, name, call in calls:
        runners = [Runner(f"pyml[{b}]", "pyml", None,
                          timings=lambda r, lp=loop, c=call, b=b: first_call_seconds(lp, c, b, r))
                   for b in bs if b != "cython" or name in CYTHON_CALLS]
        if "numba" in bs:
            runners.append(Runner("pyml[numba] runtime started", "pyml", None,
                                  note="numba runtime start done before the clock",
                                  timings=lambda r, lp=loop, c=call: first_call_seconds(
                                      lp, c, "numba", r, numba_started=True)))
        cases.append(Case(f"startup: first - warm call (target <= {FIRST_CALL_TARGET * 1e3:.0f} ms)",
                          f"{name}, after warmup", runners))
    return cases
