"""The benchmark harness shared by every hot loop and by `pyml bench`.

A hot loop's benchmark module (``benchmarks/bench_<loop>.py``) exposes
``suite(size, backends, peers) -> list[Case]``: each :class:`Case` is one problem with
its FLOP or byte count and a list of :class:`Runner` (pyml backends and installed
peers) that all solve that same problem. :func:`run` times every runner side by side
in one process (median of repeats), measures this machine's roof first (BLAS
sgemm/dgemm GFLOP/s and stream-copy GB/s at the same thread count), and returns rows
with time, throughput, % of roof and speed-up versus the best peer.

Contract for a ``bench_<loop>.py`` module (see also ``pyml.benchmarks``):

- ``suite(size, backends, peers)`` accepts every preset of :data:`SIZES`
  ("default", "small", "large") and only those; :func:`check_size` turns anything
  else into an error listing the presets.
- ``peers`` is None (every installed peer) or a list of names from
  ``pyml.benchmarks.PEERS[loop]``; the CLI refuses any other name before the suite runs.
- End-to-end rows: a :class:`Runner` that times the public call a user writes sets
  ``setup=`` to the seconds spent before the first kernel call (validation and
  conversion), either a number or a zero-argument callable returning seconds (called
  once per repeat after the timed repeats; the median is used). The table prints it under
  ``notes:`` as "setup X ms (Y% of the call)".
- Spread: each row keeps every repeat; the table shows the spread as the inter-quartile
  range relative to the median (min-max with fewer than four repeats) and marks rows whose
  spread exceeds :data:`NOISY` with ``!`` (a noisy row is marked, not quoted).
- Interleaving: a :class:`Case` with ``interleave=True`` prepares every runner first, then
  times them round-robin (one repeat of each per round), so rows whose load varies over
  minutes (several Dask clusters on shared cores) are compared side by side, not minutes
  apart. Other cases time each runner's repeats back to back.
- ``run(..., under_load=True)`` (``pyml bench --under-load``) times every runner twice, side
  by side: quiet, then with a CPU-burning subprocess per core beside it, and reports the
  loaded/unloaded ratio per row.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


SIZES = ("default", "small", "large")  # the one set of --size presets of every loop
NOISY = 0.20                            # relative spread above which a row is marked noisy


def check_size(size: str) -> str:
    """``size`` if it is one of :data:`SIZES`, else a ValueError listing them."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return size



def setup_seconds(call: Callable[[], Any], kernels, python_frames: bool = False) -> float:
    """Seconds from the start of ``call()`` to its first kernel call: the validation and
    conversion a user pays before any kernel work, observed with a profile hook through the
    public call only. A kernel call is a C-level call (pybind11 functions, Numba
    dispatchers) named in ``kernels``; with ``python_frames`` also a Python function of that
    name (the python reference backend)."""
    import sys

    first: list[float] = []

    def hook(frame, event, arg):
        if first:
            return
        if event == "c_call":
            name = getattr(arg, "__name__", "")
        elif event == "call" and python_frames:
            name = frame.f_code.co_name
        else:
            return
        if name in kernels:
            first.append(time.perf_counter())

    t0 = time.perf_counter()
    sys.setprofile(hook)
    try:
        call()
    finally:
        sys.setprofile(None)
    return (first[0] if first else time.perf_counter()) - t0

@dataclass
class Runner:
    """One contender. ``prepare()`` does untimed setup and returns the callable to time.

    ``setup``: for end-to-end rows, the seconds of one call spent before the first kernel
    call (validation + conversion): a number, or a callable returning seconds.
    ``timings``: for times measured elsewhere (fresh processes: the startup suite), a
    callable ``timings(repeat) -> list of seconds`` used instead of timing ``prepare()``.
    """

    label: str                      # "pyml[cpp]", "scikit-learn", "torch", ...
    kind: str                       # "pyml" or "peer"
    prepare: Callable[[], Callable[[], Any]]
    device: str = "cpu"             # "cpu" or "gpu" (gpu runs synchronise before the clock stops)
    note: str = ""
    setup: float | Callable[[], float] | None = None
    timings: Callable[[int], list[float]] | None = None


@dataclass
class Case:
    """One problem solved by every runner."""

    kernel: str                     # "kmeans", "conv2d forward", ...
    problem: str                    # "n=200000 d=32 k=256 float32"
    runners: list[Runner]
    flops: float | None = None      # FLOP per call (compute-bound kernels)
    nbytes: float | None = None     # bytes moved per call (memory-bound kernels)
    roof: str = "sgemm"             # "sgemm", "dgemm" or "stream"
    per: str = "call"               # what one timed call is ("call", "iteration", "sweep")
    calls: int = 1                  # the timed callable performs this many `per` units
    extra: dict[str, Any] = field(default_factory=dict)
    interleave: bool = False        # time the runners round-robin (see the module docstring)


@dataclass
class Row:
    kernel: str
    problem: str
    label: str
    kind: str
    device: str
    seconds: float                  # median time of one `per` unit
    rate: float | None              # GFLOP/s or GB/s
    unit: str
    roof_pct: float | None
    vs_best_peer: float | None      # best peer time / this time (>1 = faster than the peer)
    repeats: list[float]
    note: str = ""
    per: str = "call"
    error: str = ""
    spread: float | None = None     # IQR (min-max below 4 repeats) / median
    setup: float | None = None      # seconds before the first kernel call (end-to-end rows)
    loaded: float | None = None     # median time under load / quiet median (--under-load)
    calls: int = 1                  # `per` units in one timed call (the setup share's basis)

    @property
    def noisy(self) -> bool:
        return self.spread is not None and self.spread > NOISY


# --------------------------------------------------------------------------- roof
def _time_best(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_roof(n: int = 2048, repeat: int = 5) -> dict[str, float]:
    """This machine's sgemm/dgemm GFLOP/s (NumPy BLAS) and stream-copy GB/s, best of ``repeat``."""
    rng = np.random.default_rng(0)
    roof = {}
    for name, dt in (("sgemm", np.float32), ("dgemm", np.float64)):
        a = rng.standard_normal((n, n)).astype(dt)
        b = rng.standard_normal((n, n)).astype(dt)
        c = np.empty((n, n), dt)
        t = _time_best(lambda: np.matmul(a, b, out=c), repeat)
        roof[name] = 2.0 * n**3 / t / 1e9
    src = np.ones(32 * 2**20, np.float64)  # 256 MiB, far beyond any cache
    dst = np.empty_like(src)
    t = _time_best(lambda: np.copyto(dst, src), repeat)
    roof["stream"] = 2.0 * src.nbytes / t / 1e9  # read + write
    return roof


def gpu_sync() -> None:
    import cupy as cp

    cp.cuda.Device().synchronize()


# --------------------------------------------------------------------------- run
def time_runner(runner: Runner, repeat: int, warmup: int = 1) -> list[float]:
    if runner.timings is not None:
        return list(runner.timings(repeat))
    fn = runner.prepare()
    sync = gpu_sync if runner.device == "gpu" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def time_interleaved(runners: list[Runner], repeat: int,
                     warmup: int = 1) -> list[list[float] | Exception]:
    """Per runner, its ``repeat`` times measured round-robin with the others (or the exception
    that stopped it: a runner that fails drops out, the others go on)."""
    out: list[list[float] | Exception] = []
    fns: list[Callable[[], Any] | None] = []
    for r in runners:  # prepare and warm every runner before any is timed
        try:
            if r.timings is not None:
                raise TypeError(f"{r.label}: runners with timings= cannot be interleaved")
            fn = r.prepare()
            for _ in range(warmup):
                fn()
            fns.append(fn)
            out.append([])
        except Exception as exc:
            fns.append(None)
            out.append(exc)
    for _ in range(repeat):
        for i, (r, fn) in enumerate(zip(runners, fns)):
            if fn is None:
                continue
            sync = gpu_sync if r.device == "gpu" else (lambda: None)
            try:
                t0 = time.perf_counter()
                fn()
                sync()
                out[i].append(time.perf_counter() - t0)
            except Exception as exc:
                fns[i], out[i] = None, exc
    return out


def spread(times: list[float]) -> float | None:
    """Inter-quartile range / median (min-max / median below four repeats)."""
    t = sorted(x for x in times if np.isfinite(x))
    if len(t) < 2:
        return None
    med = statistics.median(t)
    if len(t) < 4:
        lo, hi = t[0], t[-1]
    else:
        lo, hi = np.percentile(t, [25, 75])
    return float((hi - lo) / med) if med > 0 else None


def _setup_seconds(runner: Runner, repeat: int) -> float | None:
    if runner.setup is None:
        return None
    if callable(runner.setup):
        return statistics.median(float(runner.setup()) for _ in range(max(1, repeat)))
    return float(runner.setup)


class cpu_load:
    """Context manager: ``n`` CPU-burning subprocesses beside the run (``--under-load``)."""

    def __init__(self, n: int = 1):
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "cpu_load":
        code = "while True:\n    pass"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.n)]
        time.sleep(0.2)  # let the burners start spinning before the clock starts
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []


def run(cases: list[Case], repeat: int = 5, roof: dict[str, float] | None = None,
        progress: bool = True, under_load: bool = False,
        burners: int = 1) -> tuple[list[Row], dict[str, float]]:
    """Time every runner of every case; returns (rows, roof).

    ``under_load``: time each runner again right after its quiet run with ``burners``
    CPU-burning subprocesses beside it; ``Row.loaded`` is loaded median / quiet median.
    """
    from tqdm import tqdm

    if roof is None:  # the roof takes seconds to measure: only when a case is held against it
        needs = any(c.flops is not None or c.nbytes is not None for c in cases)
        roof = measure_roof() if needs else {}
    rows: list[Row] = []
    total = sum(len(c.runners) for c in cases)
    bar = tqdm(total=total, disable=not progress, desc="bench", unit="run", leave=False)
    for case in cases:
        case_rows = []
        if case.interleave:
            bar.set_postfix_str(f"{case.kernel} (interleaved)")
            together = time_interleaved(case.runners, repeat)
            if under_load:
                with cpu_load(burners):
                    together_busy = time_interleaved(case.runners, repeat)
        for j, r in enumerate(case.runners):
            bar.set_postfix_str(f"{case.kernel} {r.label}")
            loaded = setup = None
            try:  # a peer that fails must not hide the others
                if case.interleave:
                    if isinstance(together[j], Exception):
                        raise together[j]
                    times = [t / case.calls for t in together[j]]
                else:
                    times = [t / case.calls for t in time_runner(r, repeat)]
                setup = _setup_seconds(r, repeat)
                if under_load:
                    if case.interleave:
                        if isinstance(together_busy[j], Exception):
                            raise together_busy[j]
                        busy = [t / case.calls for t in together_busy[j]]
                    else:
                        with cpu_load(burners):
                            busy = [t / case.calls for t in time_runner(r, repeat)]
                    loaded = statistics.median(busy) / statistics.median(times)
                err = ""
            except Exception as exc:
                times, err = [float("nan")], f"{type(exc).__name__}: {exc}"[:200]
            med = statistics.median(times)
            if case.flops is not None:
                rate, unit = case.flops / med / 1e9, "GFLOP/s"
            elif case.nbytes is not None:
                rate, unit = case.nbytes / med / 1e9, "GB/s"
            else:
                rate, unit = None, ""
            pct = 100.0 * rate / roof[case.roof] if rate is not None and case.roof in roof else None
            row_ = Row(case.kernel, case.problem, r.label, r.kind, r.device, med, rate,
                       unit, pct, None, times, r.note, case.per, err, spread(times), setup, loaded,
                       case.calls)
            case_rows.append(row_)
            bar.update(1)
        peers = [x.seconds for x in case_rows if x.kind == "peer" and np.isfinite(x.seconds)]
        if peers:
            best = min(peers)
            for x in case_rows:
                x.vs_best_peer = best / x.seconds if np.isfinite(x.seconds) else None
        rows.extend(case_rows)
    bar.close()
    return rows, roof
