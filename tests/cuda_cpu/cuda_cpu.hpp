// CUDA's execution model on the CPU, so that g++ compiles kernels/cuda/*.cu unchanged and runs them:
// blocks one after another (in a chosen order), the threads of a block as cooperative fibers sharing its
// __shared__ memory, __syncthreads() a barrier over the block, 32-lane warps for shuffles and votes.
// Not fast, and not meant to be: it proves indexing, barrier placement, reductions and the host glue.
//
// The device-side vocabulary (qualifiers, builtin variables, intrinsics, atomics, 16-bit floats) is here;
// the scheduler is cuda_cpu_sched.hpp and the host launcher cuda_cpu_launch.hpp. Where the hardware leaves
// a result undefined (a shuffle from a lane outside the mask, a lane that exited while its warp waits for
// it, a barrier not every thread reaches) the emulator stops the launch and says so instead of guessing.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

// ------------------------------------------------------------------------------------------ qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One OS thread runs all fibers of a block, so thread_local storage is exactly "one copy per block in
// flight": block-scope `__shared__ T x[N]` becomes a static thread_local, and `extern __shared__ T s[]`
// names the dynamic shared memory the launcher defines (see cuda_cpu.build).
#define __shared__ thread_local
#define __constant__

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace cuda_cpu {
struct Fiber;
extern thread_local Fiber* tl_fiber;
const uint3& thread_index();
[[noreturn]] void fail(const char* fmt, ...);
}  // namespace cuda_cpu

#define threadIdx (::cuda_cpu::thread_index())
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// ------------------------------------------------------------------------------------------ math
// CUDA's min/max are overloaded for every arithmetic pair; std::min needs equal types.
template <class A, class B>
inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)b < (C)a ? (C)b : (C)a;
}
template <class A, class B>
inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)a < (C)b ? (C)b : (C)a;
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
template <class T>
inline T __ldg(const T* p) { return *p; }

template <class To, class From>
inline To bitcast_(From v) {
    static_assert(sizeof(To) == sizeof(From), "bit cast of different sizes");
    To t;
    memcpy(&t, &v, sizeof t);
    return t;
}
inline unsigned __float_as_uint(float x) { return bitcast_<unsigned>(x); }
inline int __float_as_int(float x) { return bitcast_<int>(x); }
inline float __uint_as_float(unsigned x) { return bitcast_<float>(x); }
inline float __int_as_float(int x) { return bitcast_<float>(x); }
inline long long __double_as_longlong(double x) { return bitcast_<long long>(x); }
inline double __longlong_as_double(long long x) { return bitcast_<double>(x); }

inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// ------------------------------------------------------------------------------------------ atomics
// Fibers of one block never preempt each other, but blocks of concurrent launches (several host threads)
// may run at once, so these are real atomics.
template <class T>
inline T atomic_cas_loop_(T* addr, T (*op)(T, T), T val) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomics on 4- or 8-byte words");
    typedef typename std::conditional<sizeof(T) == 4, unsigned, unsigned long long>::type W;
    W* w = reinterpret_cast<W*>(addr);
    W old = __atomic_load_n(w, __ATOMIC_RELAXED);
    for (;;) {
        const W nw = bitcast_<W>(op(bitcast_<T>(old), val));
        if (__atomic_compare_exchange_n(w, &old, nw, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            return bitcast_<T>(old);
    }
}
template <class T>
inline typename std::enable_if<std::is_integral<T>::value, T>::type atomicAdd(T* a, T v) {
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);
}
inline float atomicAdd(float* a, float v) {
    return atomic_cas_loop_<float>(a, [](float x, float y) { return x + y; }, v);
}
inline double atomicAdd(double* a, double v) {
    return atomic_cas_loop_<double>(a, [](double x, double y) { return x + y; }, v);
}
template <class T>
inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); }
template <class T>
inline T atomicExch(T* a, T v) {
    if constexpr (std::is_floating_point<T>::value)
        return atomic_cas_loop_<T>(a, [](T, T y) { return y; }, v);
    else
        return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);
}
template <class T>
inline T atomicMax(T* a, T v) {
    return atomic_cas_loop_<T>(a, [](T x, T y) { return x < y ? y : x; }, v);
}
template <class T>
inline T atomicMin(T* a, T v) {
    return atomic_cas_loop_<T>(a, [](T x, T y) { return y < x ? y : x; }, v);
}
template <class T>
inline T atomicCAS(T* a, T compare, T val) {
    static_assert(std::is_integral<T>::value, "atomicCAS on integer words");
    __atomic_compare_exchange_n(a, &compare, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;  // the old value, whether or not the swap happened
}
template <class T>
inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); }
template <class T>
inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); }

// ------------------------------------------------------------------------------------------ 16-bit floats
// IEEE binary16 and bfloat16 by bit manipulation, round to nearest even (as cvt.rn / __float2half_rn),
// so the emulator does not depend on the host compiler's _Float16 support.
namespace cuda_cpu {
inline unsigned short float_to_half_bits(float f) {
    const unsigned x = __float_as_uint(f), sign = (x >> 16) & 0x8000u;
    const unsigned ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (unsigned short)(sign | 0x7e00u);            // NaN
    if (ax >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);           // overflow -> inf
    if (ax < 0x38800000u) {                                                  // subnormal half or zero
        if (ax < 0x33000000u) return (unsigned short)sign;                   // below half the smallest
        const unsigned e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        const unsigned shift = 126 - e;                                      // 14..24 bits dropped
        unsigned h = m >> shift;
        const unsigned rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
        return (unsigned short)(sign | h);
    }
    unsigned h = ((ax >> 13) - (112u << 10));
    const unsigned rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;                  // may carry into the exponent
    return (unsigned short)(sign | h);
}
inline float half_bits_to_float(unsigned short h) {
    const unsigned sign = (unsigned)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return __uint_as_float(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        if (m == 0) return __uint_as_float(sign);
        return (sign ? -1.0f : 1.0f) * ldexpf((float)m, -24);
    }
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}
inline unsigned short float_to_bf16_bits(float f) {
    const unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_bits_to_float(unsigned short b) { return __uint_as_float((unsigned)b << 16); }
}  // namespace cuda_cpu

struct __half {
    unsigned short __x;
    __half() = default;
    __half(float f) : __x(cuda_cpu::float_to_half_bits(f)) {}
    __half(double f) : __x(cuda_cpu::float_to_half_bits((float)f)) {}
    operator float() const { return cuda_cpu::half_bits_to_float(__x); }
};
struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(cuda_cpu::float_to_bf16_bits(f)) {}
    __nv_bfloat16(double f) : __x(cuda_cpu::float_to_bf16_bits((float)f)) {}
    operator float() const { return cuda_cpu::bf16_bits_to_float(__x); }
};
typedef __half half;
inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return (float)h; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return (float)b; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short x) { __half h; h.__x = x; return h; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x) { __nv_bfloat16 h; h.__x = x; return h; }

// ------------------------------------------------------------------------------------------ inline PTX
// cuda_cpu.build rewrites each `asm("template" : outs : ins)` of a kernel into cuda_cpu::ptx("template",
// outs..., ins...); the instructions pyml's kernels use are implemented, any other stops the build.
namespace cuda_cpu {
inline bool same_(const char* a, const char* b) { return strcmp(a, b) == 0; }
inline void ptx(const char* t, float& out, unsigned short in) {
    if (!same_(t, "cvt.f32.f16 %0, %1;")) fail("inline PTX '%s' is not emulated", t);
    out = half_bits_to_float(in);
}
inline void ptx(const char* t, unsigned short& out, float in) {
    if (same_(t, "cvt.rn.f16.f32 %0, %1;")) out = float_to_half_bits(in);
    else if (same_(t, "cvt.rn.bf16.f32 %0, %1;")) out = float_to_bf16_bits(in);
    else fail("inline PTX '%s' is not emulated", t);
}
template <class... A>
inline void ptx(const char* t, A&&...) { fail("inline PTX '%s' is not emulated for these operand types", t); }
}  // namespace cuda_cpu

#include "cuda_cpu_sched.hpp"
