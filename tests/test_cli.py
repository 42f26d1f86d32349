"""`pyml info | verify | warmup | bench` end to end (small problems only)."""
import json
import subprocess
import sys

import pytest

import pyml
from pyml.cli import build_parser, main


def test_info_lists_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for b in ("python", "numba", "cpp", "cython", "cuda"):
        assert b in out
    assert "threads:" in out and "gpu:" in out
    if pyml.backends()["numba"] is None:
        assert "numba threading layer: " in out


def test_verify_reference_backend_passes(capsys):
    assert main(["verify", "--backends", "python"]) == 0
    out = capsys.readouterr().out
    passed, failed = [int(w) for w in out.splitlines()[-1].split() if w.isdigit()]
    assert passed > 0 and failed == 0
    for loop in ("kmeans", "conv", "attention", "mf", "mdp"):  # every hot loop was verified
        assert any(line.startswith(loop) and line.endswith("pass") for line in out.splitlines())


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "pyml.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "bench" in r.stdout


def test_bench_unknown_kernel_is_refused():
    with pytest.raises(SystemExit):
        main(["bench", "nonsense"])


def test_verify_prints_a_line_per_check_as_it_finishes():
    """Progress per kernel: the table is streamed, so a line appears per finished check."""
    r = subprocess.run([sys.executable, "-m", "pyml.cli", "verify", "mdp", "--backends", "python"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["loop", "backend", "check"]
    assert len([x for x in lines if x.startswith("mdp ")]) >= 2 and "seconds" in lines[0]


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"pyml {pyml.__version__}"


@pytest.mark.parametrize("argv, message", [
    (["bench", "kmeans", "--size", "huge"], "invalid choice: 'huge'"),
    (["bench", "kmeans", "--peers", "sklearn"], "valid peers: scikit-learn, faiss, sklearnex"),
    (["bench", "conv", "--peers", "bogus"], "valid peers: torch"),
    (["verify", "nonsense"], "invalid loop 'nonsense'"),
])
def test_usage_errors_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_bench_names_are_the_loops_with_old_spellings_as_aliases():
    from pyml.benchmarks import ALIASES, PEERS, SUITES
    from pyml._backend import LOOPS

    assert set(LOOPS) <= set(SUITES) and set(PEERS) == set(SUITES)
    assert ALIASES == {"conv2d": "conv", "als": "mf", "value_iteration": "mdp"}
    parser = build_parser()
    for old, new in ALIASES.items():
        assert parser.parse_args(["bench", old]).kernel == old
        assert parser.parse_args(["verify", old]).loops == [new]


def test_no_peer_installed_says_how_to_get_them(monkeypatch, capsys):
    import importlib.util

    from pyml import cli

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert cli._check_peers(build_parser(), ["mf"], None) is None
    assert 'pip install "pyml[bench]"' in capsys.readouterr().err


def test_every_bench_suite_accepts_every_size_preset():
    """One set of --size presets for every loop (building the suite only; nothing is timed)."""
    import importlib

    from pyml.benchmarks import SIZES, SUITES

    for name, module in SUITES.items():
        mod = importlib.import_module(f"pyml.benchmarks.bench_{module}")
        for size in SIZES:
            if name in ("startup", "dask") or size != "small":
                continue  # processes / clusters / big arrays: the presets are checked below
            assert isinstance(mod.suite(size=size, backends=["python"], peers=[]), list), name
        with pytest.raises(ValueError, match="size must be one of"):
            mod.suite(size="huge", backends=["python"], peers=[])
        presets = [v for k, v in vars(mod).items() if k.endswith("SIZES") and isinstance(v, dict)]
        for p in presets:  # every preset table of the module offers the three sizes
            assert {"default", "small", "large"} <= set(p), (name, sorted(p))


def test_bench_startup_suite_runs_fresh_processes():
    from pyml.benchmarks import _harness, bench_startup

    cases = bench_startup.suite("small", backends=["cpp"] if pyml.backends()["cpp"] is None else [])
    assert cases[0].kernel.startswith("startup: import pyml")
    rows, _ = _harness.run(cases[:2], repeat=1, progress=False,
                           roof={"sgemm": 1.0, "dgemm": 1.0, "stream": 1.0})
    assert 0 < rows[0].seconds < 30 and not rows[0].error
