"""Compiled Cython kernels (nogil + OpenMP prange): one extension module per hot loop and CPU
variant, in ``pyml._cython.baseline``, ``.avx2`` and ``.avx512``; ``pyml._cpu`` chooses one.
"""
