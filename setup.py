"""Extension lists only: pyml._cpp.* (pybind11, C++17, OpenMP) and pyml._cython.* (Cython, OpenMP).

Each hot loop is compiled once per CPU variant (baseline x86-64-v2, avx2 = x86-64-v3,
avx512 = x86-64-v4) into pyml._cpp.<variant>.<loop>; csrc/_targets.py holds the variants
and pyml/_cpu.py chooses one at import; nothing is tuned to the build machine.
"""
import os
import sys
from glob import glob

from setuptools import setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc"))
import _targets  # noqa: E402  (the build helper beside the sources it describes)

# One extension per hot loop so that a change to one kernel rebuilds only that module.
CPP_MODULES = ["conv", "kmeans", "mf", "attention", "mdp"]
CYTHON_MODULES = ["kmeans", "mf"]
HEADERS = sorted(glob("csrc/*.hpp"))  # shared micro-kernels: a change rebuilds their users

cpp = _targets.cpp_extensions("_info", CPP_MODULES, HEADERS)
cython = _targets.cython_extensions(
    CYTHON_MODULES,
    {"boundscheck": False, "wraparound": False, "cdivision": True, "initializedcheck": False},
)

setup(ext_modules=cpp + cython)
