"""pyml._cython kernels compiled for the portable baseline (x86-64-v2: SSE4.2, POPCNT; the generic default on other architectures); pyml._cpu loads them only on a CPU that runs them."""
