"""CPU dispatch for the compiled kernels: which variant of pyml._cpp / pyml._cython to load.

Every hot loop is compiled three times (csrc/_targets.py): ``baseline`` (x86-64-v2: SSE4.2,
POPCNT; the generic default on other architectures), ``avx2`` (x86-64-v3: AVX2, FMA, BMI2)
and ``avx512`` (x86-64-v4: AVX-512F/BW/CD/DQ/VL). At first use pyml asks the CPU (CPUID) and
the OS (XCR0: are the AVX/AVX-512 registers saved on a context switch?) which levels run here,
and loads the widest one that was built. A binary built on one machine therefore runs on
any other x86-64 machine, as NumPy's own dispatch does.

``PYML_CPU=baseline|avx2|avx512`` forces a variant (read once per process, at first use);
a forced variant this CPU cannot run raises :class:`UnsupportedCpuError` naming the missing
level, instead of dying on an illegal instruction.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import platform
from functools import lru_cache
from pathlib import Path

VARIANTS = ("baseline", "avx2", "avx512")  # narrowest first
# The psABI level each variant is compiled for, as csrc/_info.cpp reports it.
LEVELS = {"baseline": "x86-64-v2", "avx2": "x86-64-v3", "avx512": "x86-64-v4"}
WHAT = {"baseline": "SSE4.2, POPCNT", "avx2": "AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE",
        "avx512": "AVX-512F/BW/CD/DQ/VL"}
PACKAGES = {"cpp": "pyml._cpp", "cython": "pyml._cython"}
PROBE = "pyml._cpp._info"


class UnsupportedCpuError(RuntimeError):
    """PYML_CPU names a kernel variant that was not built or that this CPU cannot run."""


def is_x86() -> bool:
    """x86-64, where the three variants are built (csrc/_targets.py decides the same way)."""
    return platform.machine().lower() in ("x86_64", "amd64")


@lru_cache(maxsize=None)
def _probe():
    return importlib.import_module(PROBE)


def features() -> list[str]:
    """SIMD-related CPUID features of this CPU (named as in /proc/cpuinfo); [] off x86."""
    return list(_probe().cpu_features())


def runnable() -> tuple[str, ...]:
    """The variants this CPU and OS can execute, narrowest first."""
    if not is_x86():
        return ("baseline",)  # only the generic build exists there
    levels = set(_probe().cpu_levels())
    return tuple(v for v in VARIANTS if LEVELS[v] in levels)


def built(backend: str) -> tuple[str, ...]:
    """The variants of ``backend`` ("cpp" or "cython") whose extension modules are installed."""
    spec = importlib.util.find_spec(PACKAGES[backend])
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return tuple(v for v in VARIANTS
                 if any(f.name.endswith(suffixes) for r in roots if (r / v).is_dir()
                        for f in (r / v).iterdir()))


def _describe(variant: str) -> str:
    return f"{variant} ({LEVELS[variant]}: {WHAT[variant]})" if is_x86() else variant


@lru_cache(maxsize=None)
def variant(backend: str) -> str:
    """The variant of ``backend``'s kernels used in this process.

    Raises
    ------
    UnsupportedCpuError
        When ``PYML_CPU`` is not a variant name, names a variant that was not built, or one
        this CPU cannot run, or when this CPU runs none of the built variants.
    """
    have, can = built(backend), runnable()
    forced = os.environ.get("PYML_CPU", "").strip().lower()
    if forced:
        if forced not in VARIANTS:
            raise UnsupportedCpuError(f"PYML_CPU must be one of {', '.join(VARIANTS)}, got {forced!r}")
        if forced not in have:
            raise UnsupportedCpuError(
                f"PYML_CPU={forced} but this pyml build has no {forced} {backend} kernels "
                f"(built: {', '.join(have) or 'none'})")
        if forced not in can:
            raise UnsupportedCpuError(
                f"PYML_CPU={forced} asks for the {_describe(forced)} kernels, which this CPU "
                f"cannot run (it runs: {', '.join(can) or 'none'}; CPU features: "
                f"{' '.join(features()) or 'unknown'}); unset PYML_CPU to choose automatically")
        return forced
    usable = [v for v in have if v in can]
    if not have:
        raise UnsupportedCpuError(f"no {backend} kernel variant is installed under {PACKAGES[backend]}")
    if not usable:
        raise UnsupportedCpuError(
            f"this CPU runs none of the built {backend} kernel variants ({', '.join(have) or 'none'}); "
            f"the baseline needs {_describe('baseline')}; use backend='numba' or 'python'")
    return usable[-1]


def package(backend: str) -> str:
    """The package holding the chosen variant's kernels, e.g. ``pyml._cpp.avx512``."""
    return f"{PACKAGES[backend]}.{variant(backend)}"


def summary() -> dict[str, object]:
    """What `pyml info` prints: CPU features, runnable variants and the variant per extension."""
    out: dict[str, object] = {"features": features(), "runnable": list(runnable()),
                              "forced": os.environ.get("PYML_CPU") or None, "variants": {}}
    for backend in PACKAGES:
        try:
            out["variants"][backend] = variant(backend)
        except UnsupportedCpuError as exc:
            out["variants"][backend] = f"none ({exc})"
    return out
