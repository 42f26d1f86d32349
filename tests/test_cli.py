"""`pyml info | verify | warmup | bench` end to end (small problems only)."""
import json
import subprocess
import sys

import pytest

from pyml.cli import main


def test_info_lists_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for b in ("python", "numba", "cpp", "cython", "cuda"):
        assert b in out
    assert "threads:" in out and "gpu:" in out


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
