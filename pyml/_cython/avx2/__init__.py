"""pyml._cython kernels compiled for x86-64-v3 (AVX2, FMA, BMI2); pyml._cpu loads them only on a CPU that runs them."""
