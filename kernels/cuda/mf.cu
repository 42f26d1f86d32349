// ALS half-step: per row solve (Y^T C_u Y + reg I) x_u = Y^T C_u p_u (Cholesky, or CG warm-started), (CuPy glue: kernels/cuda/mf.py).
// Fast: one thread block per row, thread a owns factor a (coalesced reads of y rows), vectors and the f x f system in shared memory.

template <class T>
__device__ T block_sum(T v, T* red) {
    // red: blockDim.x scratch; every thread gets the sum
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    T out = red[0];
    __syncthreads();
    return out;
}

// out[a] = (YtY + reg I) p + sum_k alpha r_k (y_k . p) y_k   (c - 1 = alpha r)
template <class T>
__device__ void implicit_matvec(const T* YtY, const T* Y, const int* idx, const T* val, long long start,
                                long long end, T reg, T alpha, const T* p, T* out, int f, T* red) {
    const int a = threadIdx.x;
    T acc = 0;
    if (a < f) {
        acc = reg * p[a];
        for (int d = 0; d < f; ++d) acc += YtY[(long long)d * f + a] * p[d];  // symmetric: coalesced column
    }
    for (long long k = start; k < end; ++k) {
        const T* y = Y + (long long)idx[k] * f;
        const T ya = a < f ? y[a] : T(0);
        const T s = block_sum(a < f ? ya * p[a] : T(0), red);
        acc += alpha * val[k] * s * ya;
    }
    if (a < f) out[a] = acc;
    __syncthreads();
}

// blockDim.x: a power of two >= f. Dynamic shared memory: (5f + blockDim.x) * sizeof(T), plus
// f*f * sizeof(T) for the Cholesky paths (the CG path never touches A).
template <class T>
__device__ void als_half_step(const long long* indptr, const int* indices, const T* data, const T* Y,
                              const T* YtY, T* X, int n, int f, T reg, T alpha, int cg_steps,
                              int implicit, int exact) {
    extern __shared__ unsigned char smem_raw[];
    T* b = reinterpret_cast<T*>(smem_raw);
    T* r = b + f;
    T* p = r + f;
    T* Ap = p + f;
    T* x = Ap + f;
    T* red = x + f;
    T* A = red + blockDim.x;
    const int a = threadIdx.x;
    for (int u = blockIdx.x; u < n; u += gridDim.x) {
        const long long start = indptr[u], end = indptr[u + 1];
        T ba = 0;
        for (long long k = start; k < end && a < f; ++k) {
            const T v = data[k];
            const T t = implicit ? (v > 0 ? T(1) + alpha * v : T(0)) : v;
            ba += t * Y[(long long)indices[k] * f + a];
        }
        if (a < f) {
            b[a] = ba;
            x[a] = X[(long long)u * f + a];
        }
        __syncthreads();
        if (implicit && !exact) {
            implicit_matvec(YtY, Y, indices, data, start, end, reg, alpha, x, Ap, f, red);
            if (a < f) {
                r[a] = b[a] - Ap[a];
                p[a] = r[a];
            }
            __syncthreads();
            T rs_old = block_sum(a < f ? r[a] * r[a] : T(0), red);
            for (int it = 0; it < cg_steps && rs_old >= T(1e-20); ++it) {
                implicit_matvec(YtY, Y, indices, data, start, end, reg, alpha, p, Ap, f, red);
                const T step = rs_old / block_sum(a < f ? p[a] * Ap[a] : T(0), red);
                if (a < f) {
                    x[a] += step * p[a];
                    r[a] -= step * Ap[a];
                }
                __syncthreads();
                const T rs_new = block_sum(a < f ? r[a] * r[a] : T(0), red);
                if (a < f) p[a] = r[a] + (rs_new / rs_old) * p[a];
                __syncthreads();
                rs_old = rs_new;
            }
        } else {
            // A = (implicit ? YtY : 0) + reg I + sum_k w_k y_k y_k^T, thread a builds row a
            if (a < f) {
                for (int d = 0; d < f; ++d) A[a * f + d] = implicit ? YtY[(long long)a * f + d] : T(0);
                A[a * f + a] += reg;
                for (long long k = start; k < end; ++k) {
                    const T* y = Y + (long long)indices[k] * f;
                    const T wa = (implicit ? alpha * data[k] : T(1)) * y[a];
                    for (int d = 0; d < f; ++d) A[a * f + d] += wa * y[d];
                }
            }
            __syncthreads();
            // column-by-column Cholesky A = L L^T (lower triangle, in place)
            for (int j = 0; j < f; ++j) {
                if (a == 0) {
                    T s = A[j * f + j];
                    for (int k = 0; k < j; ++k) s -= A[j * f + k] * A[j * f + k];
                    A[j * f + j] = sqrt(s);
                }
                __syncthreads();
                if (a > j && a < f) {
                    T s = A[a * f + j];
                    for (int k = 0; k < j; ++k) s -= A[a * f + k] * A[j * f + k];
                    A[a * f + j] = s / A[j * f + j];
                }
                __syncthreads();
            }
            if (a == 0) {  // triangular solves: O(f^2), serial is fine next to the O(f^3) factorisation
                for (int i = 0; i < f; ++i) {
                    T s = b[i];
                    for (int k = 0; k < i; ++k) s -= A[i * f + k] * x[k];
                    x[i] = s / A[i * f + i];
                }
                for (int i = f - 1; i >= 0; --i) {
                    T s = x[i];
                    for (int k = i + 1; k < f; ++k) s -= A[k * f + i] * x[k];
                    x[i] = s / A[i * f + i];
                }
            }
            __syncthreads();
        }
        if (a < f) X[(long long)u * f + a] = x[a];
        __syncthreads();
    }
}

extern "C" {
__global__ void als_half_step_f32(const long long* indptr, const int* indices, const float* data,
                                  const float* Y, const float* YtY, float* X, int n, int f, float reg,
                                  float alpha, int cg_steps, int implicit, int exact) {
    als_half_step<float>(indptr, indices, data, Y, YtY, X, n, f, reg, alpha, cg_steps, implicit, exact);
}
__global__ void als_half_step_f64(const long long* indptr, const int* indices, const double* data,
                                  const double* Y, const double* YtY, double* X, int n, int f, double reg,
                                  double alpha, int cg_steps, int implicit, int exact) {
    als_half_step<double>(indptr, indices, data, Y, YtY, X, n, f, reg, alpha, cg_steps, implicit, exact);
}
}
