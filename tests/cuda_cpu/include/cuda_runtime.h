// Stand-in for CUDA's <cuda_runtime.h>: the emulator (cuda_cpu.hpp, force-included) defines what kernels use.
#pragma once
