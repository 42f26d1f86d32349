// k-means on the GPU: labels[i] = argmin_j ||x_i - c_j||^2 (exact squared distance), and the weighted sums
// S_j = sum_{label(i)=j} w_i x_i, W_j = sum w_i of the Lloyd update. Fast: centres staged through shared memory, one thread per point.
// Self-contained for NVRTC (no host headers). Ties go to the smallest centre index, as in the reference.
// The distance is accumulated from differences in double, so no ||x||^2 - 2 x.c + ||c||^2 cancellation;
// sizes are 64-bit (n * d beyond 2^31 elements is fine).

// Centres are staged through shared memory `tile` at a time (tile * d values per block); the glue
// sizes tile from d so a block never needs more than the default 48 KiB, and passes tile = 0 when one
// centre alone would not fit (d * sizeof(T) > 48 KiB): the centres are then read from global memory.

template <typename T>
__device__ void assign_impl(const T* __restrict__ X, const T* __restrict__ C, long long n, long long k,
                            long long d, long long tile, int* __restrict__ labels, T* __restrict__ dist) {
    extern __shared__ unsigned char smem_raw[];
    T* sc = reinterpret_cast<T*>(smem_raw);
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = i < n;
    double best = 1.0 / 0.0;
    long long best_j = 0;
    const long long step = tile > 0 ? tile : k;  // tile is the same for every thread of the block
    for (long long j0 = 0; j0 < k; j0 += step) {
        const long long kk = min(step, k - j0);
        const T* cj = C + j0 * d;
        if (tile > 0) {
            __syncthreads();
            for (long long q = threadIdx.x; q < kk * d; q += blockDim.x) sc[q] = cj[q];
            __syncthreads();
            cj = sc;
        }
        if (active) {
            const T* xi = X + i * d;
            for (long long j = 0; j < kk; ++j) {
                double s = 0.0;
                for (long long t = 0; t < d; ++t) {
                    const double diff = (double)xi[t] - (double)cj[j * d + t];
                    s += diff * diff;
                }
                if (s < best) { best = s; best_j = j0 + j; }
            }
        }
    }
    if (active) { labels[i] = (int)best_j; dist[i] = (T)best; }
}

template <typename T>
__device__ void weighted_sums_impl(const T* __restrict__ X, const double* __restrict__ w,
                                   const int* __restrict__ labels, long long n, long long d,
                                   double* __restrict__ S, double* __restrict__ W) {
    // one thread per (point, feature); feature -1 of each point adds its weight
    const long long q = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long per = d + 1;
    if (q >= n * per) return;
    const long long i = q / per;
    const long long t = q % per - 1;
    const long long j = labels[i];
    if (t < 0) atomicAdd(W + j, w[i]);
    else atomicAdd(S + j * d + t, w[i] * (double)X[i * d + t]);
}

extern "C" {
__global__ void kmeans_assign_f32(const float* X, const float* C, long long n, long long k, long long d,
                                  long long tile, int* labels, float* dist) {
    assign_impl<float>(X, C, n, k, d, tile, labels, dist);
}
__global__ void kmeans_assign_f64(const double* X, const double* C, long long n, long long k, long long d,
                                  long long tile, int* labels, double* dist) {
    assign_impl<double>(X, C, n, k, d, tile, labels, dist);
}
__global__ void weighted_sums_f32(const float* X, const double* w, const int* labels, long long n, long long d,
                                  double* S, double* W) {
    weighted_sums_impl<float>(X, w, labels, n, d, S, W);
}
__global__ void weighted_sums_f64(const double* X, const double* w, const int* labels, long long n, long long d,
                                  double* S, double* W) {
    weighted_sums_impl<double>(X, w, labels, n, d, S, W);
}
}
