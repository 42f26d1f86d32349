"""Compiled C++ kernels (pybind11 + OpenMP): one extension module per hot loop and CPU variant.

``pyml._cpp._info`` (plain x86-64, runs anywhere) probes the CPU and sets OpenMP threads; the kernels
live in ``pyml._cpp.baseline``, ``pyml._cpp.avx2`` and ``pyml._cpp.avx512``, of which
``pyml._cpu`` chooses one (see ``pyml info``; ``PYML_CPU`` forces one).
"""
