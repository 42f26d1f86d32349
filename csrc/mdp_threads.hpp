// Grain-size rule of the mdp kernels: how many OpenMP threads a piece of work may use.
// Small work runs on one thread (no parallel region to fork, no barrier to wait at).
#pragma once

#include <algorithm>
#include <cstdint>

#include <omp.h>

namespace mdp {

// Elements one thread handles in about 100 microseconds: dense rows stream at several
// GB/s per core; sparse entries cost a gather each. Below two grains a parallel region
// costs more than it saves, and on a loaded machine every barrier can wait a whole
// scheduler slice for a descheduled thread (measured: a 64-state solve went from 17 ms
// to 26.6 s with one busy process beside it).
constexpr double DENSE_GRAIN = 262144.0;
constexpr double SPARSE_GRAIN = 65536.0;
// A one-pass check forks once and cannot fall back to serial halfway (the sweeps can, see
// jacobi() in mdp.cpp), so it asks for more work per thread before it forks at all.
constexpr double ONE_SHOT = 8.0;

inline int threads_for(double work, double grain) {
    const int most = omp_get_max_threads();
    if (most <= 1 || work < 2.0 * grain) return 1;
    return static_cast<int>(std::min<double>(most, work / grain));
}

}  // namespace mdp
