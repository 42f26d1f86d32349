"""Numba CPU kernels: @njit(parallel=True, fastmath=False, cache=True), one module per hot loop."""
