// Kernels that test the CUDA-on-CPU emulator itself (tests/test_cuda_cpu.py): deliberate out-of-bounds accesses,
// a race the thread reordering must expose, undefined warp collectives, and the primitives pyml's kernels use.
#include <cuda_fp16.h>

extern "C" {

// off by one: the last thread writes x[n]
__global__ void oob_write(float* x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) x[i] = 1.0f;
}

// reads x[-1]
__global__ void oob_read_before(const float* x, float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i - 1];
}

// writes blockDim.x floats of dynamic shared memory, whatever shared_mem the launch gave
__global__ void smem_overrun(float* y) {
    extern __shared__ float buf[];
    buf[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    y[threadIdx.x] = buf[threadIdx.x];
}

// reads a neighbour's shared value without a barrier: the answer depends on the thread order (salt differs
// per launch, so a value left in shared memory by an earlier launch is never the right one)
__global__ void racy_neighbour(int* y, int salt) {
    __shared__ int s[256];
    s[threadIdx.x] = (int)threadIdx.x + salt;
    y[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

__global__ void synced_neighbour(int* y, int salt) {
    __shared__ int s[256];
    s[threadIdx.x] = (int)threadIdx.x + salt;
    __syncthreads();
    y[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

// reads dynamic shared memory nobody wrote (NaN in the emulator, garbage on a GPU)
__global__ void smem_uninitialised(float* y) {
    extern __shared__ float buf[];
    y[threadIdx.x] = buf[threadIdx.x];
}

// lanes 16..31 exit, lanes 0..15 shuffle with the full mask
__global__ void shfl_after_exit(int* y) {
    if (threadIdx.x % 32 >= 16) return;
    y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

// half the warp in a shuffle, the other half at a block barrier: never completes
__global__ void divergent_deadlock(int* y) {
    if (threadIdx.x < 16) y[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
    else __syncthreads();
}

// out[t * 8 + j]: shfl, shfl_xor, shfl_down, shfl_up, ballot, any, all, reduce_add for thread t
__global__ void warp_ops(int* out) {
    const int t = threadIdx.x, lane = t % 32;
    int* o = out + t * 8;
    o[0] = __shfl_sync(0xffffffffu, t * 10, 3);
    o[1] = __shfl_xor_sync(0xffffffffu, t, 5);
    o[2] = __shfl_down_sync(0xffffffffu, t, 4, 8);
    o[3] = __shfl_up_sync(0xffffffffu, t, 2);
    o[4] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
    o[5] = __any_sync(0xffffffffu, t == 37);
    o[6] = __all_sync(0xffffffffu, lane < 31);
    o[7] = (int)__reduce_add_sync(0xffffffffu, (unsigned)lane);
}

// every thread adds into one float, one double, one int; atomicMax of t; atomicCAS counter
__global__ void atomics(float* f, double* d, int* i, int* mx, unsigned long long* cas) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(f, 0.5f);
    atomicAdd(d, 0.25);
    atomicAdd(i, 1);
    atomicMax(mx, t);
    unsigned long long old = *cas, seen;
    do {
        seen = old;
        old = atomicCAS(cas, seen, seen + 2ull);
    } while (old != seen);
}

// float -> half -> float and float -> bfloat16 -> float, and the inline-PTX spelling of the f16 conversion
__global__ void convert16(const float* x, float* h, float* b, float* p, unsigned short* bits, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    h[i] = __half2float(__float2half(x[i]));
    b[i] = __bfloat162float(__float2bfloat16(x[i]));
    unsigned short u;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(u) : "f"(x[i]));
    float back;
    asm("cvt.f32.f16 %0, %1;" : "=f"(back) : "h"(u));
    p[i] = back;
    bits[i] = u;
}

// 2-D grid and block: out[y][x] = linear thread id within its block, + 1000 * linear block id
__global__ void indexing(int* out, int W) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    out[y * W + x] = (int)(threadIdx.y * blockDim.x + threadIdx.x) + 1000 * (int)(blockIdx.y * gridDim.x + blockIdx.x);
}

__global__ void takes_int_and_double(int n, double x, float* y) { y[0] = (float)(n * x); }
}
