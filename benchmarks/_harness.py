"""The benchmark harness shared by every hot loop and by `pyml bench`.

A hot loop's benchmark module (``benchmarks/bench_<loop>.py``) exposes
``suite(size, backends, peers) -> list[Case]``: each :class:`Case` is one problem with
its FLOP or byte count and a list of :class:`Runner` (pyml backends and installed
peers) that all solve that same problem. :func:`run` times every runner side by side
in one process (median of repeats), measures this machine's roof first (BLAS
sgemm/dgemm GFLOP/s and stream-copy GB/s at the same thread count), and returns rows
with time, throughput, % of roof and speed-up versus the best peer.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class Runner:
    """One contender. ``prepare()`` does untimed setup and returns the callable to time."""

    label: str                      # "pyml[cpp]", "scikit-learn", "torch", ...
    kind: str                       # "pyml" or "peer"
    prepare: Callable[[], Callable[[], Any]]
    device: str = "cpu"             # "cpu" or "gpu" (gpu runs synchronise before the clock stops)
    note: str = ""


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


def run(cases: list[Case], repeat: int = 5, roof: dict[str, float] | None = None,
        progress: bool = True) -> tuple[list[Row], dict[str, float]]:
    """Time every runner of every case; returns (rows, roof)."""
    from tqdm.auto import tqdm

    roof = roof or measure_roof()
    rows: list[Row] = []
    total = sum(len(c.runners) for c in cases)
    bar = tqdm(total=total, disable=not progress, desc="bench", unit="run", leave=False)
    for case in cases:
        case_rows = []
        for r in case.runners:
            bar.set_postfix_str(f"{case.kernel} {r.label}")
            try:
                times = [t / case.calls for t in time_runner(r, repeat)]
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
            case_rows.append(Row(case.kernel, case.problem, r.label, r.kind, r.device, med, rate,
                                 unit, pct, None, times, r.note, case.per, err))
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


def format_table(rows: list[Row], roof: dict[str, float]) -> str:
    head = (f"roof: sgemm {roof['sgemm']:.1f} GFLOP/s, dgemm {roof['dgemm']:.1f} GFLOP/s, "
            f"stream {roof['stream']:.1f} GB/s")
    cols = ("kernel", "problem", "runner", "dev", "time/unit", "rate", "% roof", "vs best peer")
    body = []
    for r in rows:
        t = "failed" if r.error else f"{r.seconds * 1e3:.2f} ms/{r.per}"
        body.append((r.kernel, r.problem, r.label, r.device, t,
                     f"{_fmt(r.rate, '.1f')} {r.unit}".strip(), _fmt(r.roof_pct, ".0f"),
                     (_fmt(r.vs_best_peer, ".2f") + "x") if r.vs_best_peer else "-"))
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [head, line(cols), line(["-" * w for w in widths])] + [line(b) for b in body]
    notes = [f"  {r.kernel} {r.problem} {r.label}: {r.note}" for r in rows if r.note and not r.error]
    if notes:  # e.g. final loss (ALS), sweeps to convergence (value iteration)
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
    """Bar chart of time per unit, one panel per (kernel, problem), pyml vs peers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.kernel, r.problem), []).append(r)
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.2 + 0.45 * max(len(g) for g in groups.values())
                                                      * len(groups)), squeeze=False)
    for ax, ((kernel, problem), g) in zip(axes[:, 0], groups.items()):
        ok = [r for r in g if np.isfinite(r.seconds)]
        colors = ["tab:blue" if r.kind == "pyml" else "tab:gray" for r in ok]
        ax.barh([f"{r.label} ({r.device})" for r in ok], [r.seconds * 1e3 for r in ok], color=colors)
        ax.set_title(f"{kernel}: {problem}", fontsize=9)
        ax.set_xlabel(f"ms per {ok[0].per if ok else 'call'} (lower is better)")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
