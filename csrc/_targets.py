"""Build targets for pyml's compiled kernels: which instruction-set variants exist and the
extension modules that compile each hot-loop translation unit once per variant.

A binary that may be copied to another machine (a wheel, a shared venv, a Dask worker on an
older node) must never assume the build machine's CPU, so nothing here uses -march=native.
Each hot loop's source is compiled into one module per variant,
``pyml._cpp.<variant>.<loop>`` and ``pyml._cython.<variant>.<loop>``, and ``pyml._cpu``
picks the best variant the running CPU (and its OS) supports at import time. The GCC vector
extensions in csrc/*.hpp read their width from the target macros (__AVX512F__, __AVX__),
so the same source gives 16-, 32- and 64-byte vectors.

``PYML_TARGETS=baseline,avx512`` (comma separated) builds only some variants: a quicker
developer build; a build that may be copied should build them all (the default).
"""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sysconfig
from functools import lru_cache
from pathlib import Path

# The x86-64 micro-architecture levels of the psABI (x86-64-v2: SSE4.2/POPCNT; v3: AVX2, FMA,
# BMI1/2, F16C, LZCNT, MOVBE; v4: AVX-512F/BW/CD/DQ/VL). pyml._cpu checks the same levels
# with CPUID + XCR0 (csrc/_info.cpp), so a variant is only loaded where every instruction it
# may contain exists. -mtune stays generic (it does not favour one vendor), with two of its
# decisions overridden for the avx512 variant (TUNING below).
X86_TARGETS = {
    "baseline": ["-march=x86-64-v2"],
    "avx2": ["-march=x86-64-v3"],
    "avx512": ["-march=x86-64-v4"],
}
# GCC's generic tuning (GCC 12) never emits gathers and, with AVX-512 enabled, vectorises plain
# loops 512 bits wide. Side by side on an Intel Xeon with AVX-512 (one thread, CPU time, min of
# 5), that made the x86-64-v4 build 20-30% slower than -march=native on the compiler-vectorised
# kernels (the Cython k-means argmin and exact-distance loops, ALS's CG and Cholesky loops),
# while the hand-vectorised micro-kernels (csrc/*.hpp, fixed widths) were level: gathers
# recovered the k-means loops, the 256-bit preference the ALS ones. Both are what GCC's own
# tuning for AVX-512 cores chooses (Intel's, and znver3's, which -march=native picked on the
# Zen 4 machine where the v4 build had measured level with native). The tuning knobs are
# GCC's; a compiler that refuses one (clang has no -mtune-ctrl) builds without it.
TUNING = {
    "avx512": ["-mprefer-vector-width=256",
               "-mtune-ctrl=use_gather_2parts,use_gather_4parts,use_gather"],
}
# The CPU probe (pyml._cpp._info) is built for plain x86-64, below the baseline, so that even
# a CPU without x86-64-v2 gets pyml's "this CPU lacks ..." error instead of SIGILL.
X86_PROBE = ["-march=x86-64"]
COMMON = ["-O3", "-fopenmp"]
LINK = ["-fopenmp"]


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


@lru_cache(maxsize=None)
def _accepts(compiler: str, flag: str) -> bool:
    """Does ``compiler`` accept ``flag`` (preprocessing an empty C file, warnings as errors)?"""
    try:
        r = subprocess.run(shlex.split(compiler) + ["-Werror", flag, "-x", "c", "-E", "-"],
                           input=b"", capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def _compiler() -> str:
    """The C compiler setuptools will call (CC, else Python's configured one)."""
    return os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"


def targets() -> dict[str, list[str]]:
    """Variant name -> its compiler flags, for this build machine's architecture.

    Elsewhere (aarch64, ppc64le) only ``baseline`` is built, with the compiler's generic
    default for that architecture.
    """
    if is_x86_64():
        cc = _compiler()
        all_targets = {v: f + [t for t in TUNING.get(v, []) if _accepts(cc, t)]
                       for v, f in X86_TARGETS.items()}
    else:
        all_targets = {"baseline": []}
    wanted = os.environ.get("PYML_TARGETS", "").strip()
    if not wanted:
        return dict(all_targets)
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [n for n in names if n not in all_targets]
    if unknown or "baseline" not in names:
        raise ValueError(f"PYML_TARGETS must list 'baseline' and only names from "
                         f"{sorted(all_targets)}, got {wanted!r}")
    return {n: all_targets[n] for n in all_targets if n in names}


def _variant_source(kind: str, variant: str, name: str, text: str) -> str:
    """Write ``text`` to build/<kind>/<variant>/<name> unless it is already there.

    Every variant needs its own source path: setuptools names an object file after its
    source, so one csrc/<loop>.cpp compiled three times would share (and, with -j, race
    on) one .o. The unchanged file keeps its mtime, so an unchanged kernel is not rebuilt.
    """
    path = Path("build") / kind / variant / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return str(path)


def cpp_extensions(info: str, loops: list[str], headers: list[str]):
    """``pyml._cpp.<info>`` once (it probes the CPU, so it must run on any machine), and
    ``pyml._cpp.<variant>.<loop>`` for every loop and variant.

    Each variant compiles a one-line wrapper that includes csrc/<loop>.cpp; PYBIND11_MODULE
    takes the last component of the module name, so the kernel source itself is the same
    for every variant.
    """
    from pybind11.setup_helpers import Pybind11Extension

    def ext(name: str, src: str, flags: list[str], depends: list[str]):
        return Pybind11Extension(name, [src], cxx_std=17, extra_compile_args=COMMON + flags,
                                 extra_link_args=LINK, depends=depends)

    exts = [ext(f"pyml._cpp.{info}", f"csrc/{info}.cpp", X86_PROBE if is_x86_64() else [], [])]
    for variant, flags in targets().items():
        for m in loops:
            # relative to build/cpp/<variant>/, so the tree can be moved (sdist, CI copy)
            src = _variant_source("cpp", variant, f"{m}.cpp", f'#include "../../../csrc/{m}.cpp"\n')
            exts.append(ext(f"pyml._cpp.{variant}.{m}", src, flags, [f"csrc/{m}.cpp"] + headers))
    return exts


def cython_extensions(loops: list[str], directives: dict[str, bool]):
    """``pyml._cython.<variant>.<loop>`` for every loop and variant.

    Cython writes the full module name into the generated C (PyInit_<name>, __module__ of
    every function), so each variant is translated from its own copy of the .pyx under
    build/cython/<variant>/.
    """
    from Cython.Build import cythonize
    from setuptools import Extension

    exts = []
    for variant, flags in targets().items():
        for m in loops:
            src = _variant_source("cython", variant, f"{m}.pyx", (Path("csrc") / f"{m}.pyx").read_text())
            exts.append(Extension(f"pyml._cython.{variant}.{m}", [src],
                                  extra_compile_args=COMMON + flags, extra_link_args=LINK))
    return cythonize(exts, language_level=3, compiler_directives=directives)

