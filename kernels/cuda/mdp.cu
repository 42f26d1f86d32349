// Bellman backup V'(s) = max_a [R(s,a) + gamma sum_s' P(s'|s,a) V(s')] on dense (A,S,S) P and action-major CSR P (row a*S + s).
// Fast: one warp per state, lanes read P(a,s,:) coalesced and reduce with shuffles (double accumulation); max over actions fused, P read once.

template <typename T>
__device__ void dense_backup(const T* __restrict__ P, const double* __restrict__ R, double gamma,
                             const double* __restrict__ V, double* __restrict__ V_out,
                             long long* __restrict__ policy, double* __restrict__ diff,
                             int fixed, long long A, long long S) {
    const long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (warp >= S) return;  // whole warps exit together: S is uniform per warp
    const long long s = warp;
    const long long lo = fixed ? policy[s] : 0, hi = fixed ? policy[s] + 1 : A;
    double best = -1.0 / 0.0;
    long long arg = lo;
    for (long long a = lo; a < hi; ++a) {
        const T* row = P + (a * S + s) * S;
        double total = 0.0;
        for (long long j = lane; j < S; j += 32) total += (double)row[j] * V[j];
        for (int off = 16; off > 0; off >>= 1) total += __shfl_down_sync(0xffffffffu, total, off);
        const double q = R[s * A + a] + gamma * __shfl_sync(0xffffffffu, total, 0);
        if (q > best) { best = q; arg = a; }
    }
    if (lane == 0) {
        V_out[s] = best;
        diff[s] = fabs(best - V[s]);
        if (!fixed) policy[s] = arg;
    }
}

template <typename T>
__device__ void sparse_backup(const long long* __restrict__ indptr, const int* __restrict__ indices,
                              const T* __restrict__ data, long long A, const double* __restrict__ R,
                              double gamma, const double* __restrict__ V, double* __restrict__ V_out,
                              long long* __restrict__ policy, double* __restrict__ diff, int fixed,
                              long long S) {
    // One thread per state: rows are short (a few successors), so a warp per row would idle.
    const long long s = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (s >= S) return;
    const long long lo = fixed ? policy[s] : 0, hi = fixed ? policy[s] + 1 : A;
    double best = -1.0 / 0.0;
    long long arg = lo;
    for (long long a = lo; a < hi; ++a) {
        const long long row = a * S + s;  // action-major CSR
        double total = 0.0;
        for (long long k = indptr[row]; k < indptr[row + 1]; ++k) total += (double)data[k] * V[indices[k]];
        const double q = R[s * A + a] + gamma * total;
        if (q > best) { best = q; arg = a; }
    }
    V_out[s] = best;
    diff[s] = fabs(best - V[s]);
    if (!fixed) policy[s] = arg;
}

extern "C" {
__global__ void sweep_dense_f32(const float* P, const double* R, double gamma, const double* V,
                                double* V_out, long long* policy, double* diff, int fixed,
                                long long A, long long S) {
    dense_backup<float>(P, R, gamma, V, V_out, policy, diff, fixed, A, S);
}
__global__ void sweep_dense_f64(const double* P, const double* R, double gamma, const double* V,
                                double* V_out, long long* policy, double* diff, int fixed,
                                long long A, long long S) {
    dense_backup<double>(P, R, gamma, V, V_out, policy, diff, fixed, A, S);
}
__global__ void sweep_sparse_f32(const long long* indptr, const int* indices, const float* data,
                                 long long A, const double* R, double gamma, const double* V,
                                 double* V_out, long long* policy, double* diff, int fixed, long long S) {
    sparse_backup<float>(indptr, indices, data, A, R, gamma, V, V_out, policy, diff, fixed, S);
}
__global__ void sweep_sparse_f64(const long long* indptr, const int* indices, const double* data,
                                 long long A, const double* R, double gamma, const double* V,
                                 double* V_out, long long* policy, double* diff, int fixed, long long S) {
    sparse_backup<double>(indptr, indices, data, A, R, gamma, V, V_out, policy, diff, fixed, S);
}
}
