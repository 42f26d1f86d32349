"""Extension lists only: pyml._cpp.* (pybind11, C++17, OpenMP) and pyml._cython.* (Cython, OpenMP)."""
from glob import glob

from Cython.Build import cythonize
from pybind11.setup_helpers import Pybind11Extension
from setuptools import Extension, setup

# One extension per hot loop so that a change to one kernel rebuilds only that module.
CPP_MODULES = ["_info", "conv", "kmeans", "mf", "attention", "mdp"]
CYTHON_MODULES = ["kmeans", "mf"]

OPT = ["-O3", "-march=native", "-fopenmp"]
HEADERS = sorted(glob("csrc/*.hpp"))  # shared micro-kernels: a change rebuilds their users

cpp = [
    Pybind11Extension(f"pyml._cpp.{m}", [f"csrc/{m}.cpp"], cxx_std=17,
                      extra_compile_args=OPT, extra_link_args=["-fopenmp"], depends=HEADERS)
    for m in CPP_MODULES
]
cython = cythonize(
    [Extension(f"pyml._cython.{m}", [f"csrc/{m}.pyx"],
               extra_compile_args=OPT, extra_link_args=["-fopenmp"]) for m in CYTHON_MODULES],
    language_level=3,
    compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                         "initializedcheck": False},
)

setup(ext_modules=cpp + cython)
