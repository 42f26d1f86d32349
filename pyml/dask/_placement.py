"""Tasks that each take every chunk one worker thread holds, instead of one task per chunk.

A row-chunked array persisted on a ``dask.distributed`` cluster lies on known workers; the
per-chunk work of an iteration is tens of milliseconds, about what Dask spends per task on
scheduling, (de)serialisation and the Python around it. :class:`ChunkTasks` therefore asks
the scheduler once per pass where the chunks are (``who_has``) and submits one task per
worker thread over the chunks of that worker (balanced by rows), pinned loosely to it
(``allow_other_workers``: a worker that dies does not strand its task; Dask recomputes the
lost chunks from their lineage and the task runs elsewhere). Partial results are combined
by a tree of ``_FAN_IN``-ary sums, as in :func:`._common.tree_sum`.

An array that is not persisted (lazy, possibly larger than the cluster's memory) keeps one
task per chunk: each task then builds its own chunk, so no worker holds more than a few
chunks at a time. Without a distributed client the same per-chunk tasks run on Dask's
local scheduler.
"""
from __future__ import annotations

import uuid
from typing import Any, Callable

import numpy as np

from ._common import _FAN_IN, _add, tree_sum

__all__ = ["ChunkTasks"]


def _client_of(X):
    """The client holding ``X``'s persisted chunks, else the current/default one, else None."""
    try:
        from distributed import default_client, futures_of
    except ImportError:
        return None
    held = futures_of(X)
    if held:  # persisted through a client that need not be the default one
        return held[0].client
    try:
        return default_client()
    except ValueError:  # no client: Dask's local scheduler
        return None


class ChunkTasks:
    """Run ``fn(*args, indices, *chunks)`` over groups of the row chunks of ``X``.

    ``indices`` is the tuple of chunk numbers (positions in ``X.chunks[0]``) of the group, so
    per-chunk inputs (seeds, row offsets) can be passed whole in ``args``."""

    def __init__(self, X):
        self.blocks = list(X.to_delayed().ravel())
        self.rows = tuple(int(r) for r in X.chunks[0])
        self.client = _client_of(X)
        self.futures = self._persisted(X) if self.client is not None else None
        self._nthreads: dict[str, int] = {}

    def _persisted(self, X):
        from distributed import futures_of

        held = {f.key: f for f in futures_of(X)}
        keys = [b.key for b in self.blocks]
        if keys and all(k in held for k in keys):
            return [held[k] for k in keys]
        return None

    # ------------------------------------------------------------------ grouping
    def groups(self) -> list[tuple[tuple[int, ...], str | None]]:
        """(chunk numbers, worker) per task: one group per worker thread for persisted
        chunks, a group of one (worker None: anywhere) for every other chunk."""
        if self.futures is None:
            return [((i,), None) for i in range(len(self.blocks))]
        who = self.client.who_has(self.futures)
        holders = [list(who.get(f.key, ())) for f in self.futures]
        if any(w not in self._nthreads for hs in holders for w in hs):
            self._nthreads = dict(self.client.nthreads())
        slots: dict[tuple[str, int], list[int]] = {}
        load: dict[tuple[str, int], int] = {}
        loose: list[int] = []
        # chunks on one worker first, replicated ones then go to their least loaded holder
        order = sorted(range(len(holders)), key=lambda i: (len(holders[i]) != 1, -self.rows[i]))
        for i in order:
            cands = [(w, t) for w in holders[i] for t in range(self._nthreads.get(w, 0))]
            if not cands:  # not in memory right now (being recomputed): a task of its own
                loose.append(i)
                continue
            best = min(cands, key=lambda s: (load.get(s, 0), s))
            slots.setdefault(best, []).append(i)
            load[best] = load.get(best, 0) + self.rows[i]
        out = [(tuple(sorted(idx)), w) for (w, _), idx in sorted(slots.items())]
        return out + [((i,), None) for i in loose]

    # ------------------------------------------------------------------ running
    def _submit(self, fn: Callable, args: tuple, name: str) -> list:
        import dask

        client, tag = self.client, uuid.uuid4().hex[:12]
        futs = []
        if self.futures is not None:
            for g, (idx, worker) in enumerate(self.groups()):
                pin = {"workers": [worker], "allow_other_workers": True} if worker else {}
                futs.append(client.submit(fn, *args, idx, *[self.futures[i] for i in idx],
                                          key=f"pyml-{name}-{tag}-{g}", pure=False, **pin))
            return futs
        # lazy chunks: one task each; array arguments become one shared key, not a copy
        # embedded in every chunk's task
        shared = [dask.delayed(a) if isinstance(a, np.ndarray) else a for a in args]
        parts = [dask.delayed(fn, pure=False)(*shared, (i,), blk)
                 for i, blk in enumerate(self.blocks)]
        return list(client.compute(parts))

    def sum(self, fn: Callable, *args: Any, name: str = "chunks") -> Any:
        """The sum (arrays, numbers or dicts of them) of every group's result."""
        if self.client is None:
            import dask

            return tree_sum([dask.delayed(fn, pure=False)(*args, (i,), blk)
                             for i, blk in enumerate(self.blocks)]).compute()
        futs = self._submit(fn, args, name)
        while len(futs) > 1:
            futs = [self.client.submit(_add, *futs[i:i + _FAN_IN], pure=False)
                    for i in range(0, len(futs), _FAN_IN)]
        return futs[0].result()

    def gather(self, fn: Callable, *args: Any, name: str = "chunks") -> list:
        """Every group's result, in group order."""
        if self.client is None:
            import dask

            return list(dask.compute(*[dask.delayed(fn, pure=False)(*args, (i,), blk)
                                       for i, blk in enumerate(self.blocks)]))
        return self.client.gather(self._submit(fn, args, name))
