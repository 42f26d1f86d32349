"""The benchmark harness: timing, roof, ratios, table, JSON and plot."""
import json

import numpy as np
import pytest

from pyml.benchmarks import _harness as h
from pyml.benchmarks import _report as rep


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
    table = rep.format_table(rows, roof)
    assert "pyml[numpy]" in table and "failures:" in table and "notes:" not in table
    fast.note = "loss 1.5"
    assert "notes:" in rep.format_table(rows, roof) and "loss 1.5" in rep.format_table(rows, roof)
    rep.write_json(rows, roof, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["rows"][0]["label"] == "pyml[numpy]" and "machine" in data


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")  # a `bench` extra, not a test dependency
    rows, _ = h.run([_case()], repeat=1, roof={"sgemm": 1.0, "dgemm": 1.0, "stream": 1.0},
                    progress=False)
    rep.plot(rows, str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_measure_roof_is_positive():
    roof = h.measure_roof(n=256, repeat=1)
    assert set(roof) == {"sgemm", "dgemm", "stream"} and all(v > 0 for v in roof.values())


def test_attention_suite_binds_each_problem():
    """Each case's runners solve that case (regression: closures once saw the last case)."""
    import pyml

    if pyml.backends()["cpp"] is not None:
        pytest.skip("cpp backend unavailable")
    from pyml.benchmarks import bench_attention

    full, _, causal, _ = bench_attention.suite("small", ["cpp"], [])
    assert "full" in full.problem and "causal" in causal.problem
    a, b = full.runners[0].prepare()(), causal.runners[0].prepare()()
    assert a.shape == b.shape and not np.allclose(a, b)


def test_spread_marks_noisy_rows_and_setup_share_is_a_note():
    roof = {"sgemm": 100.0, "dgemm": 50.0, "stream": 10.0}
    assert h.spread([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert h.spread([1.0, 2.0]) == pytest.approx(1 / 1.5)  # min-max below four repeats
    assert h.spread([1.0]) is None
    a = np.ones((32, 32))
    quiet = h.Runner("pyml[e2e]", "pyml", lambda: (lambda: a @ a), setup=lambda: 1e-3)
    fixed = h.Runner("pyml[fixed]", "pyml", lambda: (lambda: a @ a), setup=2e-3)
    rows, _ = h.run([h.Case("mm", "32", [quiet, fixed], calls=2)], repeat=4, roof=roof,
                    progress=False)
    assert rows[0].setup == pytest.approx(1e-3) and rows[1].setup == 2e-3
    assert rows[0].spread is not None
    rows[0].spread, rows[1].spread = 0.5, 0.05
    table = rep.format_table(rows, roof)
    assert "50% !" in table and "noisy row" in table and "5%" in table
    share = 100 * 1e-3 / (rows[0].seconds * 2)
    assert f"setup 1.00 ms ({share:.0f}% of the call)" in table.split("notes:")[1]


def test_sizes_are_one_set_and_checked():
    assert h.SIZES == ("default", "small", "large")
    assert h.check_size("large") == "large"
    with pytest.raises(ValueError, match="default, small, large"):
        h.check_size("huge")


def test_under_load_reports_loaded_over_quiet_ratio():
    a = np.ones((128, 128))
    r = h.Runner("pyml[mm]", "pyml", lambda: (lambda: a @ a))
    rows, _ = h.run([h.Case("mm", "128", [r])], repeat=2, progress=False, under_load=True,
                    roof={"sgemm": 1.0, "dgemm": 1.0, "stream": 1.0})
    assert rows[0].loaded is not None and rows[0].loaded > 0
    assert "loaded/quiet" in rep.format_table(rows, {"sgemm": 1.0, "dgemm": 1.0, "stream": 1.0})


def test_interleaved_case_times_runners_round_robin():
    """interleave=True: every runner prepared and warmed first, then one timed call of each per
    round, so a change of load lands on all rows alike; a failing runner drops out alone."""
    log = []

    def runner(name, fail_at=None):
        def prepare():
            log.append(f"prep {name}")
            count = [0]

            def call():
                count[0] += 1
                log.append(name)
                if fail_at is not None and count[0] >= fail_at:
                    raise RuntimeError(f"{name} broke")
            return call
        return h.Runner(name, "pyml", prepare)

    case = h.Case("x", "p", [runner("a"), runner("b"), runner("c", fail_at=3)], interleave=True)
    rows, _ = h.run([case], repeat=3, roof={}, progress=False)
    assert log[:6] == ["prep a", "a", "prep b", "b", "prep c", "c"]  # prepare + warm-up each
    assert log[6:] == ["a", "b", "c", "a", "b", "c", "a", "b"]    # rounds; c failed in round 2
    a, b, c = rows
    assert len(a.repeats) == len(b.repeats) == 3 and not a.error and not b.error
    assert c.error.startswith("RuntimeError") and "c broke" in c.error


def test_dask_bench_small_runs_interleaved_on_even_chunks():
    """`pyml bench dask --size small` end to end (no dask-ml): every row runs, both clusters
    stay up for the interleaved rounds, and the chunks lie evenly on the two workers."""
    pytest.importorskip("distributed")
    pytest.importorskip("dask.dataframe")
    import os

    from pyml.benchmarks import bench_dask

    before = os.environ.get("OMP_NUM_THREADS")
    try:
        cases = bench_dask.suite("small", peers=[])
        assert all(c.interleave for c in cases)
        rows, _ = h.run(cases, repeat=2, roof={"sgemm": 1.0, "dgemm": 1.0, "stream": 1.0},
                        progress=False)
    finally:
        for w in list(bench_dask._clusters):
            bench_dask._close(w)
    assert not [r.error for r in rows if r.error]
    assert os.environ.get("OMP_NUM_THREADS") == before  # the Nannies' setting stays theirs
    by = {r.label: r for r in rows}
    assert "rows per worker 100000/100000" in by["pyml.dask (2 workers)"].note
    assert "rows per worker 200000" in by["pyml.dask (1 worker)"].note
    assert all(len(r.repeats) == 2 and r.seconds > 0 for r in rows)
    assert by["pyml.dask.ALS (2 workers)"].setup > 0
    assert "MB per iteration between workers (transfer logs" in by["pyml.dask.ALS (2 workers)"].note
