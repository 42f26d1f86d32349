"""Compiled C++ kernels (pybind11 + OpenMP): one extension module per hot loop."""
