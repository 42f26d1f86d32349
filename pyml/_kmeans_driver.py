"""k-means driver: k-means++ seeding, Lloyd / k-medians iterations, convergence, backend dispatch.

One driver for every backend; only the kernels differ. Each kernel is declared once below as
``Kernel("kmeans", name, backends)`` and lives at ``<backend package>.kmeans:<name>``
(pyml._backend). The kernels share one contract:

    kmeans_assign / kmedians_assign(X, C) -> (labels int32 (n,), dist (n,))
        squared L2 / L1 distance to the chosen centre; ties go to the smallest index
    kmeans_update / kmedians_update(X, w, labels, dist, C) -> C_new
        weighted means / coordinate medians; empty clusters refilled by relocate_empty's rule
    kmeans_plusplus_step(X, w, D2, candidates) -> (best, potential, D2_new)
        greedy k-means++: the candidate whose addition lowers sum w min(D2, ||x - x_cand||^2)
        the most, that potential and the updated D2 (float64)
    kmeans_plusplus(X, n_clusters, w, rng, n_local_trials) -> (centers, indices)
        all the steps above in one call, drawing from rng as the step loop does
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._backend import Kernel, array_module, is_cupy, to_numpy
from ._blas import single_thread
from .kernels import cuda as cuda_glue

ASSIGN = {
    "euclidean": Kernel("kmeans", "kmeans_assign", ("python", "numba", "cpp", "cython", "cuda")),
    "manhattan": Kernel("kmeans", "kmedians_assign", ("python", "numba", "cpp")),
}
UPDATE = {
    "euclidean": Kernel("kmeans", "kmeans_update", ("python", "numba", "cpp", "cuda")),
    "manhattan": Kernel("kmeans", "kmedians_update", ("python", "numba", "cpp")),
}
PLUSPLUS = Kernel("kmeans", "kmeans_plusplus_step", ("python", "numba", "cpp"))
# the whole seeding in one call (the reference's signature); one pass over X per step
SEED = Kernel("kmeans", "kmeans_plusplus", ("python", "cpp"))
# it keeps (n_local_trials + 1) partial sums per 64 rows: beyond this many trials the step
# loop below (same picks) keeps the memory at O(n)
SEED_MAX_TRIALS = 64
METRICS = tuple(ASSIGN)


def resolve(metric: str, backend: str | None, *arrays: Any) -> str:
    """The concrete backend of the assignment kernel (the one that decides speed)."""
    return ASSIGN[metric].resolve(backend, *arrays)


def _paired(kernel: Kernel, backend: str, *arrays: Any) -> str:
    # A backend without this kernel (cython has only the assignment; cuda has no seeding
    # kernel) is paired with the fastest available one, on the host for the seeding.
    if backend in kernel.backends:
        return backend
    return kernel.resolve("auto", *arrays)


def assign(X, C, metric: str = "euclidean", backend: str | None = None):
    """(labels, dist) of validated X, C (same float dtype) on the resolved backend."""
    b = resolve(metric, backend, X, C)
    with single_thread(b):
        return ASSIGN[metric].get(b)(X, C)


# --------------------------------------------------------------------------- seeding
def default_trials(k: int) -> int:
    """scikit-learn's number of local trials of greedy k-means++: 2 + floor(ln k)."""
    return 2 + int(math.log(k))


def _draw(cum: np.ndarray, u) -> np.ndarray:
    # Inverse-CDF draw; side="right" never lands on a zero-probability point.
    return np.minimum(np.searchsorted(cum, u, side="right"), cum.shape[0] - 1)


def plusplus(X, k: int, w: np.ndarray, rng: np.random.Generator, n_local_trials: int,
             backend: str | None = None) -> np.ndarray:
    """Indices of k greedy k-means++ centres (Arthur & Vassilvitskii 2007; the greedy variant
    of scikit-learn): the first drawn with probability w / sum w, every next one the best of
    ``n_local_trials`` candidates drawn with probability w D(x)^2 / sum w D^2, best meaning
    the lowest potential sum w min(D^2, ||x - candidate||^2). n_local_trials=1 is the plain
    k-means++ of the paper. X is validated (float32/float64, C-contiguous); w float64."""
    Xh = to_numpy(X)  # seeding runs on the host (no cuda kernel: it is O(n k trials d) once)
    b = _paired(PLUSPLUS, ASSIGN["euclidean"].resolve(backend), Xh)
    if b in SEED.backends and n_local_trials <= SEED_MAX_TRIALS:
        with single_thread(b):
            return np.asarray(SEED.get(b)(Xh, k, w, rng, n_local_trials)[1], np.int64)
    step = PLUSPLUS.get(b)
    n = Xh.shape[0]
    idx = np.empty(k, np.int64)
    cum_w = np.cumsum(w)
    idx[0] = _draw(cum_w, rng.random() * cum_w[-1])
    D2 = np.full(n, np.inf)
    with single_thread(b):
        _, _, D2 = step(Xh, w, D2, idx[:1].copy())
        for c in range(1, k):
            cum = np.cumsum(w * D2)
            if not cum[-1] > 0:  # every positive-weight point already chosen (duplicates)
                cum = cum_w
            cand = _draw(cum, rng.random(n_local_trials) * cum[-1]).astype(np.int64)
            best, _, D2 = step(Xh, w, D2, cand)
            idx[c] = cand[best]
    return idx


# --------------------------------------------------------------------------- Lloyd
@dataclass
class LloydResult:
    centers: Any
    labels: Any
    inertia: float
    n_iter: int
    converged: bool
    history: list[float] = field(default_factory=list)  # objective at each assignment


def lloyd(X, w, C0, *, metric: str = "euclidean", max_iter: int = 300, tol: float = 0.0,
          backend: str | None = None, verbose: int = 0) -> LloydResult:
    """Alternate assignment and centre update until the labels stop changing, the squared
    centre shift is <= ``tol``, or ``max_iter`` updates were made (scikit-learn's rules and
    its n_iter count). Inputs are validated by the caller (pyml.kmeans); ``w`` is float64,
    X and C0 share a float dtype."""
    b = resolve(metric, backend, X)
    if b == "cuda" and not is_cupy(X):  # the estimator's NumPy data: iterate on the device
        cp = cuda_glue.cupy()
        X, C0 = cp.asarray(X), cp.asarray(C0)
    xp = array_module(X)
    w = xp.asarray(w)
    assign_k = ASSIGN[metric].get(b)
    update = UPDATE[metric].get(_paired(UPDATE[metric], b, X))
    C = C0
    prev = None
    history: list[float] = []
    converged, fresh, n_iter = False, False, max_iter
    with single_thread(b):
        for it in range(max_iter):
            labels, dist = assign_k(X, C)
            history.append(float((w * dist).sum()))
            if verbose:
                print(f"k-means iteration {it}: objective {history[-1]:.6g}")
            if prev is not None and bool(xp.array_equal(labels, prev)):
                # same labels: the update would give the same centres (scikit-learn counts it)
                converged, fresh, n_iter = True, True, it + 1
                break
            C_new = update(X, w, labels, dist, C)
            shift = float(((C_new - C) ** 2).sum())
            C, prev = C_new, labels
            if shift <= tol:
                converged, n_iter = True, it + 1
                break
        if not fresh:  # final assignment so that labels_ agree with cluster_centers_
            labels, dist = assign_k(X, C)
    inertia = float((w * dist).sum())
    if verbose:
        print(f"k-means {'converged' if converged else 'stopped'} after {n_iter} iterations; "
              f"objective {inertia:.6g}")
    return LloydResult(C, labels, inertia, n_iter, converged, history)
