"""Build and packaging promises: CUDA sources compile (nvcc -ptx), kernels ship as package
data, and the README's test command is the one CI runs."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CU_FILES = sorted((ROOT / "kernels" / "cuda").glob("*.cu"))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("cu", CU_FILES, ids=[p.name for p in CU_FILES])
def test_cuda_kernel_compiles_to_ptx(cu, arch, tmp_path):
    out = tmp_path / (cu.stem + ".ptx")
    r = subprocess.run(["nvcc", "-ptx", "-std=c++17", f"-arch={arch}", str(cu), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert ".entry" in out.read_text(), "no kernel entry point in the PTX"


def test_cuda_sources_are_package_data():
    import pyml.kernels.cuda as kc

    for cu in CU_FILES:
        assert kc.source(cu.stem) == cu.read_text()


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    cmd = next(line.strip() for line in ci.splitlines() if "pytest" in line and "pip install" in line)
    assert cmd in readme


def test_setup_py_is_only_extension_lists():
    lines = [l for l in (ROOT / "setup.py").read_text().splitlines() if l.strip()]
    assert len(lines) < 40
    assert "def " not in (ROOT / "setup.py").read_text()


def test_every_cpp_module_builds_and_imports():
    import importlib
    import re

    import pyml

    if pyml.backends()["cpp"] is not None:
        pytest.skip("C++ extension not built")
    from pyml import _cpu

    text = (ROOT / "setup.py").read_text()
    importlib.import_module(_cpu.PROBE)
    # every CPU variant (pyml._cpu) of every module, as far as this CPU can load it
    for name in re.search(r"CPP_MODULES = \[(.*?)\]", text).group(1).replace('"', "").split(","):
        for v in _cpu.runnable():
            importlib.import_module(f"pyml._cpp.{v}.{name.strip()}")
    for name in filter(None, re.search(r"CYTHON_MODULES = \[(.*?)\]", text).group(1).replace('"', "").split(",")):
        for v in _cpu.runnable():
            importlib.import_module(f"pyml._cython.{v}.{name.strip()}")
