"""Compiled Cython kernels (nogil + OpenMP prange): one extension module per hot loop."""
