// tile_gemm.hpp: a register-blocked GEMM for small, cache-resident tiles, plus the SIMD vector
// type it is built on (vec_t, vload/vstore/vsplat, usable for elementwise passes too).
// Header-only, portable C++17 with GCC vector extensions (no intrinsics): the vector width
// follows the target (-march=native: 64 bytes with AVX-512, 32 with AVX, else 16), so the same
// code builds and is correct everywhere. Any kernel in csrc/ can include it. Written for GCC
// (the build's compiler), which contracts a*b + c into an FMA by default.
//
//   tile_gemm::gemm(M, N, K, A, rsa, csa, B, ldb, C, ldc, accumulate)
//       C[i][j] (+)= sum_k A(i, k) * B[k][j]    for 0 <= i < M, 0 <= j < N
//   A(i, k) = A[i*rsa + k*csa]: any layout (row-major: rsa=lda, csa=1; a transposed operand:
//             rsa=1, csa=lda), read one element at a time and broadcast;
//   B       : rows of N contiguous values, row stride ldb (pre-transpose B if it is not);
//   C       : row-major, row stride ldc; accumulate=false overwrites C without reading it.
//
// Blocking: the micro-kernel keeps an MR x NR block of C in registers (MR rows, NR = 2 vectors)
// and runs the whole K loop on it: per k, NV vector loads of B, MR broadcasts of A, MR*NV
// fused multiply-adds. With AVX-512 (32 registers): MR = 8, NR = 32 floats / 16 doubles,
// 16 accumulators. With AVX/AVX2 or SSE (16 registers): MR = 4. Column remainders use a
// 1-vector kernel, then a scalar loop (fewer than one vector of columns); row remainders the
// same kernel with fewer rows. Nothing outside the M x N block of C, the M x K block of A and
// the K x N block of B is read or written. The whole operand set should fit in L1/L2: callers
// tile (e.g. 64 x 64 x 64) and call gemm per tile.
//
// Loads and stores go through __builtin_memcpy, so no alignment is required.
#pragma once

#include <cstdint>

namespace tile_gemm {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;  // one zmm register
constexpr int kMR = 8;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;  // one ymm register
constexpr int kMR = 4;
#else
constexpr int kVecBytes = 16;  // SSE / NEON / generic: the compiler splits or emulates as needed
constexpr int kMR = 4;
#endif

template <typename T> struct Vec {
    typedef T type __attribute__((vector_size(kVecBytes)));
    static constexpr int W = kVecBytes / int(sizeof(T));  // lanes
};
template <typename T> using vec_t = typename Vec<T>::type;

template <typename T> inline vec_t<T> vload(const T* p) {
    vec_t<T> v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
template <typename T> inline void vstore(T* p, vec_t<T> v) { __builtin_memcpy(p, &v, sizeof v); }
template <typename T> inline vec_t<T> vsplat(T x) { return x - vec_t<T>{}; }  // one broadcast (x + 0 would not fold: -0)

// C[MR x NV*W] (+)= A(MR x K) * B(K x NV*W): the register-resident micro-kernel.
template <typename T, int MR, int NV>
inline void micro(int K, const T* A, std::int64_t rsa, std::int64_t csa, const T* B, std::int64_t ldb,
                  T* C, std::int64_t ldc, bool accumulate) {
    typedef vec_t<T> V;
    constexpr int W = Vec<T>::W;
    V c[MR][NV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) c[r][v] = accumulate ? vload(C + r * ldc + v * W) : V{};
    for (int k = 0; k < K; ++k, A += csa, B += ldb) {
        V b[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) b[v] = vload(B + v * W);
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
            const T a = A[r * rsa];  // broadcast; with AVX-512 folded into the FMA as {1toW}
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) c[r][v] += a * b[v];
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) vstore(C + r * ldc + v * W, c[r][v]);
}

// Rows [0, M) of one column panel of NV vectors: full MR blocks, then one block of M % MR rows.
template <typename T, int NV, int R = kMR>
inline void panel(int M, int K, const T* A, std::int64_t rsa, std::int64_t csa, const T* B,
                  std::int64_t ldb, T* C, std::int64_t ldc, bool accumulate) {
    if constexpr (R == kMR) {
        int i = 0;
        for (; i + kMR <= M; i += kMR)
            micro<T, kMR, NV>(K, A + i * rsa, rsa, csa, B, ldb, C + i * ldc, ldc, accumulate);
        if (i < M) panel<T, NV, kMR - 1>(M - i, K, A + i * rsa, rsa, csa, B, ldb, C + i * ldc, ldc, accumulate);
    } else if constexpr (R > 0) {  // 0 < M < kMR rows left: pick the kernel with exactly M rows
        if (M == R)
            micro<T, R, NV>(K, A, rsa, csa, B, ldb, C, ldc, accumulate);
        else
            panel<T, NV, R - 1>(M, K, A, rsa, csa, B, ldb, C, ldc, accumulate);
    }
}

template <typename T>
inline void gemm(int M, int N, int K, const T* A, std::int64_t rsa, std::int64_t csa, const T* B,
                 std::int64_t ldb, T* C, std::int64_t ldc, bool accumulate) {
    constexpr int W = Vec<T>::W;
    if (M <= 0 || N <= 0) return;
    int j = 0;
    for (; j + 2 * W <= N; j += 2 * W) panel<T, 2>(M, K, A, rsa, csa, B + j, ldb, C + j, ldc, accumulate);
    for (; j + W <= N; j += W) panel<T, 1>(M, K, A, rsa, csa, B + j, ldb, C + j, ldc, accumulate);
    for (; j < N; ++j)  // fewer than W columns left: scalar
        for (int i = 0; i < M; ++i) {
            T s = accumulate ? C[i * ldc + j] : T(0);
            for (int k = 0; k < K; ++k) s += A[i * rsa + k * csa] * B[k * ldb + j];
            C[i * ldc + j] = s;
        }
}

}  // namespace tile_gemm
