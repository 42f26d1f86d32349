"""`pyml verify` / `pyml warmup` checks of the kmeans kernels: every kernel of a backend against
the reference (pyml/reference/kmeans.py) on small float32/float64 problems, with the one
tolerance rule of pyml._verify."""
from __future__ import annotations

import numpy as np

from .. import _kmeans_driver as drv
from .._backend import BackendUnavailableError, to_numpy
from .._blas import single_thread
from ..reference import kmeans as ref
from . import Row, row

_REF_ASSIGN = {"euclidean": ref.kmeans_assign, "manhattan": ref.kmedians_assign}
_REF_UPDATE = {"euclidean": ref.kmeans_update, "manhattan": ref.kmedians_update}


def _naive_dist(X, C, labels, metric):
    diff = X - C[labels]  # in the kernel's dtype: the error a plain implementation makes
    return (diff * diff).sum(1) if metric == "euclidean" else np.abs(diff).sum(1)


def checks(backend: str, rng: np.random.Generator) -> list[Row]:
    """(check, max error, tolerance) rows for every kmeans kernel ``backend`` has; raises
    BackendUnavailableError when it has none (or cannot run here)."""
    rows: list[Row] = []
    X64 = rng.standard_normal((97, 5)) * 3 + 10  # offset: the expanded distance would cancel
    C64 = X64[rng.choice(97, 7, replace=False)] + 0.1
    w = rng.uniform(0.5, 2.0, 97)
    for metric in drv.METRICS:
        if backend not in drv.ASSIGN[metric].backends:
            continue
        b = drv.ASSIGN[metric].resolve(backend)  # raises BackendUnavailableError
        assign = drv.ASSIGN[metric].get(b)
        update = drv.UPDATE[metric].get(b) if b in drv.UPDATE[metric].backends else None
        for dt in (np.float32, np.float64):
            X, C = X64.astype(dt), C64.astype(dt)
            Xr, Cr = X.astype(np.float64), C.astype(np.float64)  # the values the kernel sees
            l64, d64 = _REF_ASSIGN[metric](Xr, Cr)
            with single_thread(b):
                labels, dist = assign(X, C)
            name = np.dtype(dt).name
            rows.append(row(f"{metric} assign {name}", to_numpy(dist), d64,
                            _naive_dist(X, C, l64, metric), dt))
            rows.append((f"{metric} labels {name}", float(np.sum(to_numpy(labels) != l64)), 0.0))
            if update is not None:
                m64 = _REF_UPDATE[metric](Xr, w, l64, d64, Cr)
                naive = _REF_UPDATE[metric](X, w, l64, d64.astype(dt), C)
                with single_thread(b):
                    m = update(X, w, l64.astype(np.int32), d64.astype(dt), C)
                rows.append(row(f"{metric} update {name}", to_numpy(m), m64, naive, dt))
    if backend in drv.PLUSPLUS.backends:
        b = drv.PLUSPLUS.resolve(backend)
        D2 = rng.uniform(1.0, 50.0, 97)
        cand = np.array([3, 40, 3, 96], np.int64)
        for dt in (np.float32, np.float64):
            X = X64.astype(dt)
            rb, rp, rD = ref.kmeans_plusplus_step(X.astype(np.float64), w, D2, cand)
            with single_thread(b):
                best, pot, Dn = drv.PLUSPLUS.get(b)(X, w, D2, cand)
            name = np.dtype(dt).name
            rows.append((f"plusplus candidate {name}", float(int(best) != int(rb)), 0.0))
            diff = X - X[cand[rb]]  # the distance in the kernel's dtype, as a plain code has it
            naive = np.minimum(D2, (diff * diff).sum(1).astype(np.float64))
            rows.append(row(f"plusplus D2 {name}", Dn, rD, naive, dt))
    if backend in drv.SEED.backends and backend != "python":
        b = drv.SEED.resolve(backend)
        for dt in (np.float32, np.float64):
            X = X64.astype(dt)
            want = ref.kmeans_plusplus(X.astype(np.float64), 6, w, np.random.default_rng(0), 3)[1]
            with single_thread(b):
                got = drv.SEED.get(b)(X, 6, w, np.random.default_rng(0), 3)[1]
            rows.append((f"plusplus seeding {np.dtype(dt).name}", float(np.sum(got != want)), 0.0))
    if not rows:
        raise BackendUnavailableError(f"kmeans has no {backend!r} kernel")
    return rows
