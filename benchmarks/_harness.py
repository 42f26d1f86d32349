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
- ``run(..., under_load=True)`` (``pyml bench --under-load``) times every runner twice, side
  by side: quiet, then with a CPU-burning subprocess per core beside it, and reports the
  loaded/unloaded ratio per row.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
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
        for r in case.runners:
            bar.set_postfix_str(f"{case.kernel} {r.label}")
            loaded = setup = None
            try:
                times = [t / case.calls for t in time_runner(r, repeat)]
                setup = _setup_seconds(r, repeat)
                if under_load:
                    with cpu_load(burners):
                        busy = [t / case.calls for t in time_runner(r, repeat)]
                    loaded = statistics.median(busy) / statistics.median(times)
                err = ""
            except Exception as exc:  # a peer that fails must not hide the others
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


# --------------------------------------------------------------------------- report
def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or not np.isfinite(v) else format(v, spec)


def _spread_cell(r: Row) -> str:
    if r.error or r.spread is None:
        return "-"
    return f"{100 * r.spread:.0f}%" + (" !" if r.noisy else "")


def setup_note(r: Row) -> str:
    """ "setup 3.1 ms (12% of the call)" for an end-to-end row, else ""."""
    if r.setup is None or r.error or not np.isfinite(r.seconds):
        return ""
    call = r.seconds * r.calls
    return f"setup {r.setup * 1e3:.2f} ms ({100 * r.setup / call:.0f}% of the call)"


def format_table(rows: list[Row], roof: dict[str, float]) -> str:
    head = (f"roof: sgemm {roof['sgemm']:.1f} GFLOP/s, dgemm {roof['dgemm']:.1f} GFLOP/s, "
            f"stream {roof['stream']:.1f} GB/s") if roof else "roof: not measured (no rate in these rows)"
    loaded = any(r.loaded is not None for r in rows)
    cols = ("kernel", "problem", "runner", "dev", "time/unit", "spread", "rate", "% roof",
            "vs best peer") + (("loaded/quiet",) if loaded else ())
    body = []
    for r in rows:
        t = "failed" if r.error else f"{r.seconds * 1e3:.2f} ms/{r.per}"
        cells = (r.kernel, r.problem, r.label, r.device, t, _spread_cell(r),
                 f"{_fmt(r.rate, '.1f')} {r.unit}".strip(), _fmt(r.roof_pct, ".0f"),
                 (_fmt(r.vs_best_peer, ".2f") + "x") if r.vs_best_peer else "-")
        if loaded:
            cells += ((_fmt(r.loaded, ".2f") + "x") if r.loaded else "-",)
        body.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [head, line(cols), line(["-" * w for w in widths])] + [line(b) for b in body]
    out.append("spread: inter-quartile range of the repeats (min-max below 4 repeats) / median")
    if any(r.noisy for r in rows):
        out.append(f"! spread above {100 * NOISY:.0f}%: a noisy row, rerun before quoting it")
    notes = []
    for r in rows:  # e.g. final loss (ALS), sweeps to convergence, setup share (end to end)
        text = "; ".join(x for x in (setup_note(r), "" if r.error else r.note) if x)
        if text:
            notes.append(f"  {r.kernel} {r.problem} {r.label}: {text}")
    if notes:
        out += ["notes:"] + notes
    errs = [f"  {r.label} on {r.problem}: {r.error}" for r in rows if r.error]
    if errs:
        out += ["failures:"] + errs
    return "\n".join(out)


def machine_info() -> dict[str, Any]:
    import os
    import platform

    from pyml._backend import get_num_threads

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "threads": get_num_threads(), "numpy": np.__version__}


def write_json(rows: list[Row], roof: dict[str, float], path: str) -> None:
    with open(path, "w") as f:
        json.dump({"machine": machine_info(), "roof": roof, "rows": [asdict(r) for r in rows]},
                  f, indent=2, default=float)


def plot(rows: list[Row], path: str) -> None:
    """Bar chart of time per unit, one panel per (kernel, problem): pyml vs peers, with a
    legend, the median as a value label and the min-max of the repeats as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.kernel, r.problem), []).append(r)
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.2 + 0.45 * max(len(g) for g in groups.values())
                                                      * len(groups)), squeeze=False)
    color = {"pyml": "tab:blue", "peer": "tab:gray"}
    for ax, ((kernel, problem), g) in zip(axes[:, 0], groups.items()):
        ok = [r for r in g if np.isfinite(r.seconds)]
        med = np.array([r.seconds * 1e3 for r in ok])
        lo = np.array([min(r.repeats) * 1e3 for r in ok])
        hi = np.array([max(r.repeats) * 1e3 for r in ok])
        bars = ax.barh([f"{r.label} ({r.device})" for r in ok], med,
                       xerr=np.vstack([med - lo, hi - med]) if ok else None, capsize=3,
                       color=[color.get(r.kind, "tab:orange") for r in ok])
        ax.bar_label(bars, labels=[f"{m:.3g} ms" + (" (noisy)" if r.noisy else "")
                                   for m, r in zip(med, ok)], padding=3, fontsize=7)
        ax.set_title(f"{kernel}: {problem}", fontsize=9)
        ax.set_xlabel(f"ms per {ok[0].per if ok else 'call'} (lower is better; bars: median, "
                      "whiskers: min-max of the repeats)", fontsize=8)
        ax.margins(x=0.25)
        ax.invert_yaxis()
        ax.legend(handles=[Patch(color=color["pyml"], label="pyml"),
                           Patch(color=color["peer"], label="peer")], fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
