"""Kernel sources installed as ``pyml.kernels``: Numba CPU kernels and CUDA C++ sources."""
