"""The benchmark harness: timing, roof, ratios, table, JSON and plot."""
import json

import numpy as np
import pytest

from pyml.benchmarks import _harness as h


def _case():
    a = np.ones((64, 64), np.float32)
    fast = h.Runner("pyml[numpy]", "pyml", lambda: (lambda: a @ a))
    slow = h.Runner("peer-slow", "peer", lambda: (lambda: [a @ a for _ in range(3)]))
    broken = h.Runner("peer-broken", "peer", lambda: (lambda: 1 / 0))
    return h.Case("matmul", "64x64", [fast, slow, broken], flops=2 * 64**3)


def test_run_reports_rates_roof_and_peer_ratio(tmp_path):
    roof = {"sgemm": 100.0, "dgemm": 50.0, "stream": 10.0}
    rows, roof_out = h.run([_case()], repeat=3, roof=roof, progress=False)
    assert roof_out is roof
    fast, slow, broken = rows
    assert len(fast.repeats) == 3 and fast.seconds == np.median(fast.repeats)
    assert fast.rate == pytest.approx(fast.roof_pct)  # roof of 100 GFLOP/s: % equals GFLOP/s
    assert slow.vs_best_peer == 1.0 and fast.vs_best_peer > 1.0
    assert broken.error.startswith("ZeroDivisionError") and broken.vs_best_peer is None
    table = h.format_table(rows, roof)
    assert "pyml[numpy]" in table and "failures:" in table and "notes:" not in table
    fast.note = "loss 1.5"
    assert "notes:" in h.format_table(rows, roof) and "loss 1.5" in h.format_table(rows, roof)
    h.write_json(rows, roof, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["rows"][0]["label"] == "pyml[numpy]" and "machine" in data


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")  # a `bench` extra, not a test dependency
    rows, _ = h.run([_case()], repeat=1, roof={"sgemm": 1.0, "dgemm": 1.0, "stream": 1.0},
                    progress=False)
    h.plot(rows, str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_measure_roof_is_positive():
    roof = h.measure_roof(n=256, repeat=1)
    assert set(roof) == {"sgemm", "dgemm", "stream"} and all(v > 0 for v in roof.values())


def test_attention_suite_binds_each_problem():
    """Each case's runners solve that case (regression: closures once saw the last case)."""
    pytest.importorskip("pyml._cpp.attention")
    from pyml.benchmarks import bench_attention

    full, _, causal, _ = bench_attention.suite("small", ["cpp"], [])
    assert "full" in full.problem and "causal" in causal.problem
    a, b = full.runners[0].prepare()(), causal.runners[0].prepare()()
    assert a.shape == b.shape and not np.allclose(a, b)
