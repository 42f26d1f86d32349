"""pyml._cpp kernels compiled for x86-64-v4 (AVX-512F/BW/CD/DQ/VL); pyml._cpu loads them only on a CPU that runs them."""
