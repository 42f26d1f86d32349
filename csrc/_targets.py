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
from pathlib import Path

# The x86-64 micro-architecture levels of the psABI (x86-64-v2: SSE4.2/POPCNT; v3: AVX2, FMA,
# BMI1/2, F16C, LZCNT, MOVBE; v4: AVX-512F/BW/CD/DQ/VL). pyml._cpu checks the same levels
# with CPUID + XCR0 (csrc/_info.cpp), so a variant is only loaded where every instruction it
# may contain exists. -mtune stays generic: side by side in one process, the x86-64-v4 build
# showed no consistent difference from -march=native (Zen 4, GCC 12: znver3 tuning plus
# VNNI/BF16/VBMI) on the default `pyml bench` rows, and generic does not favour one vendor.
X86_TARGETS = {
    "baseline": ["-march=x86-64-v2"],
    "avx2": ["-march=x86-64-v3"],
    "avx512": ["-march=x86-64-v4"],
}
# The CPU probe (pyml._cpp._info) is built for plain x86-64, below the baseline, so that even
# a CPU without x86-64-v2 gets pyml's "this CPU lacks ..." error instead of SIGILL.
X86_PROBE = ["-march=x86-64"]
COMMON = ["-O3", "-fopenmp"]
LINK = ["-fopenmp"]


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def targets() -> dict[str, list[str]]:
    """Variant name -> its compiler flags, for this build machine's architecture.

    Elsewhere (aarch64, ppc64le) only ``baseline`` is built, with the compiler's generic
    default for that architecture.
    """
    all_targets = X86_TARGETS if is_x86_64() else {"baseline": []}
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

