"""Pieces shared by the Dask estimators: input checks for dask arrays, a tree reduction of
per-chunk partial results, and the client-side progress bar."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

_FAN_IN = 8  # partial results combined per task of the tree reduction


def as_dask_rows(X: Any, name: str, n_features: int | None = None):
    """``X`` as a 2-D float dask array chunked by rows only (one chunk across the features).

    Unknown chunk sizes (``nan``, e.g. from a boolean mask or a dataframe's ``.values``)
    are refused: the estimators need each chunk's row offset."""
    import dask.array as da

    if not isinstance(X, da.Array):
        arr = np.asarray(X)
        X = da.from_array(arr, chunks=(max(1, math.ceil(arr.shape[0] / 4)) if arr.ndim else 1,)
                          + arr.shape[1:])
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got {X.ndim}-D")
    if any(math.isnan(c) for c in X.chunks[0]):
        raise ValueError(f"{name} has unknown chunk sizes (nan); call {name}.compute_chunk_sizes() "
                         "first (or build it with known chunks)")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, expected {n_features}")
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X


def _add(*parts):
    if isinstance(parts[0], dict):
        return {key: _add(*[p[key] for p in parts]) for key in parts[0]}
    out = parts[0].copy() if isinstance(parts[0], np.ndarray) else parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def tree_sum(parts: list):
    """A delayed sum of delayed partials (arrays, numbers or dicts of them), combined
    ``_FAN_IN`` at a time so no single task receives every chunk's result."""
    import dask

    if not parts:
        raise ValueError("nothing to reduce (no chunks)")
    while len(parts) > 1:
        parts = [dask.delayed(_add)(*parts[i:i + _FAN_IN]) for i in range(0, len(parts), _FAN_IN)]
    return parts[0]


def persist_quietly(*objs):
    """``dask.persist`` of graphs that embed a large input (a scipy.sparse matrix) on purpose:
    data in the graph keeps its lineage, so a worker that dies takes nothing that cannot be
    recomputed (data scattered to one worker would be lost with it); Dask's warning about
    large graphs is expected there."""
    import warnings

    import dask

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph")
        return dask.persist(*objs)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, show: bool):
    """A tqdm bar on the client over iterations (``show=False``: a no-op bar)."""
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it")
