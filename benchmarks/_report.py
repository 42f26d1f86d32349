"""The report side of the benchmark harness: the text table of `pyml bench`, its JSON and
its bar chart, from the :class:`~._harness.Row` list that :func:`._harness.run` returns."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

from ._harness import NOISY, Row


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
