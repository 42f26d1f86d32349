"""Hostile-input sweep: every public call (tests/public_calls.py) x every CPU backend x
{NaN, inf, empty, wrong ndim, mismatched shapes, int/bool/complex/object dtypes, strided,
Fortran, negative-stride, read-only, 0-d, lists, None, extreme hyper-parameters, corrupt
CSR / environment tables}. Also the nn layers and the backend-free public functions (shapes, environments, data,
optimisers), called once. Each call must give a ValueError/TypeError (FloatingPointError
for ill-conditioned data) naming the argument, or a result equal to the python reference;
no input may change; nothing may crash. Calls run in a worker process
(tests/hostile_worker.py), so a crash is recorded, not fatal; hypothesis draws which
argument, which position and which value. A totals table is printed at the end (and written
to $PYML_HOSTILE_REPORT as JSON when set).
"""
from __future__ import annotations

import collections
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import pyml
from hostile_worker import ARRAY_CLASSES
from public_calls import FREE, LAYERS, SPECS

ALL = SPECS + LAYERS + FREE

CPU = [b for b in ("python", "numba", "cpp", "cython") if pyml.backends()[b] is None]
HERE = pathlib.Path(__file__).resolve().parent
CALL_TIMEOUT = 30.0  # seconds for one call (~10 ms normally, a Numba compile of a new layout
#                      takes seconds on a busy 2-core machine); more is a hang
WARMUP_TIMEOUT = 600.0  # the first call of each kernel in the worker (loading or compiling)
FAILURES = ("unclear", "refused", "wrong", "mutated", "crash")

# Findings in code owned elsewhere, reported to the owners: (spec, class) -> reason.
# strict=True: once fixed, the xfail fails and the entry must go.
KNOWN: dict[tuple[str, str], str] = {
}

TOTALS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
FINDINGS: list[dict] = []


class Worker:
    """A persistent ``hostile_worker.py`` process; restarted after a crash."""

    def __init__(self):
        self.proc = None
        self.timeout = CALL_TIMEOUT
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)

    def start(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, str(HERE / "hostile_worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1, env=env)

    def ask(self, case: dict) -> tuple[str, str]:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while True:
            if not sel.select(timeout=self.timeout):
                self.stop()
                return "crash", f"no answer in {self.timeout:.0f} s (hang)"
            line = self.proc.stdout.readline()
            if not line:  # the worker died: this backend crashed on this case
                code = self.proc.wait()
                self.proc = None
                return "crash", f"worker died with exit status {code} ({self._tail()})"
            if line.startswith("@@"):
                return tuple(json.loads(line[2:]))

    def _tail(self) -> str:
        self.log.flush()
        text = pathlib.Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return text[-1][:200] if text else "no output"

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker(request):
    w = Worker()
    # Load (and if need be compile) every kernel once, untimed and uncounted, also for
    # read-only input (a separate Numba signature), so that CALL_TIMEOUT only meets hangs.
    w.timeout = WARMUP_TIMEOUT
    for spec in ALL:
        for b in (["python"] if spec.backend_free else CPU):
            w.ask({"spec": spec.name, "cls": "hyper", "u": 0.0, "k": 0, "backend": b,
                   "verify": False, "base": True})
            if spec.arrays and b == "numba":
                w.ask({"spec": spec.name, "cls": "read_only", "u": 0.0, "k": 0, "backend": b,
                       "verify": False})
    w.timeout = CALL_TIMEOUT
    yield w
    w.stop()
    _report(request.config)


def _report(config):
    cols = ("calls", "clear errors", "equal results", "wrong results", "unclear errors",
            "refused valid", "mutated", "crashes", "unverified", "skipped (no kernel)")
    keys = ("calls", "error", "equal", "wrong", "unclear", "refused", "mutated", "crash",
            "unverified", "skip")
    lines = ["", "hostile-input sweep totals", "backend  " + "  ".join(cols)]
    for b in CPU + ["all"]:
        c = TOTALS[b]
        lines.append(f"{b:8s} " + "  ".join(f"{c[k]:>{len(name)}d}" for k, name in zip(keys, cols)))
    tr = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if tr is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown even without -s
            tr.write_line("\n".join(lines))
    path = os.environ.get("PYML_HOSTILE_REPORT")
    if path:
        pathlib.Path(path).write_text(json.dumps({"totals": {b: dict(c) for b, c in TOTALS.items()},
                                                  "findings": FINDINGS}, indent=1))


def _xfail(*key):
    return [pytest.mark.xfail(strict=True, reason=KNOWN[key])] if key in KNOWN else []


def _corruptible(spec) -> int:
    """How many structural corruptions apply: environment tables (4) or CSR arrays (3)."""
    if spec.name in ("q_learning", "sarsa"):
        return 4
    return 3 if spec.loop == "mf" or spec.name == "value_iteration[sparse]" else 0


ARRAY_CASES = [pytest.param(s, c, id=f"{s.name}-{c}", marks=_xfail(s.name, c))
               for s in ALL for c in ARRAY_CLASSES if s.arrays]
HYPER_CASES = [pytest.param(s, i, id=f"{s.name}-{name}={value!r}", marks=_xfail(s.name, f"{name}={value!r}"))
               for s in ALL
               for i, (name, value) in enumerate((n, v) for n, vs in s.params.items() for v in vs)]
CORRUPT_CASES = [pytest.param(s, k, id=f"{s.name}-corrupt{k}", marks=_xfail(s.name, f"corrupt{k}"))
                 for s in SPECS for k in range(_corruptible(s))]


def _check(worker, spec, case: dict) -> None:
    """Ask every CPU backend (python first: the reference) and fail on any finding."""
    results = {"python": worker.ask({**case, "backend": "python"})}
    verify = results["python"][0] in ("equal", "error")  # else nothing to compare with
    hung = results["python"][1].endswith("(hang)")
    for b in ([] if spec.backend_free else CPU):
        if b != "python":  # after a hang of the reference, the others are not run (time bound)
            results[b] = ("unverified", "not run: the reference hung") if hung else \
                worker.ask({**case, "backend": b, "verify": verify})
    bad = {}
    for b, (kind, msg) in results.items():
        TOTALS[b][kind] += 1
        TOTALS["all"][kind] += 1
        if kind != "skip":
            TOTALS[b]["calls"] += 1
            TOTALS["all"]["calls"] += 1
        if kind in FAILURES:
            bad[b] = (kind, msg)
            FINDINGS.append({**case, "backend": b, "kind": kind, "message": msg})
    assert not bad, f"{case}: {bad}"


@pytest.mark.parametrize("spec, cls", ARRAY_CASES)
@settings(max_examples=2, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
@given(u=st.floats(0.0, 0.999), k=st.integers(0, 11))
def test_hostile_input(worker, spec, cls, u, k):
    """hypothesis draws the argument (k), the position (u) and the variant (k)."""
    _check(worker, spec, {"spec": spec.name, "cls": cls, "u": u, "k": k})


@pytest.mark.parametrize("spec, index", HYPER_CASES)
def test_extreme_hyper_parameter(worker, spec, index):
    _check(worker, spec, {"spec": spec.name, "cls": "hyper", "u": 0.5, "k": index})


@pytest.mark.parametrize("spec, variant", CORRUPT_CASES)
def test_corrupt_csr_or_environment_tables(worker, spec, variant):
    """Out-of-range CSR indices, decreasing indptr; next_state 10**6 / -5, start 999, NaN reward."""
    _check(worker, spec, {"spec": spec.name, "cls": "corrupt", "u": 0.37, "k": variant})
