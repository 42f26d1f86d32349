"""pyml on Dask (``dask.distributed``): the same compiled kernels inside Dask tasks, only
small reductions on the wire. Install with ``pip install "pyml[dask]"``.

- :class:`KMeans`: Lloyd on a row-chunked ``dask.array`` (k-means|| initialisation).
- :class:`ALS`: ratings partitioned once into user and item blocks kept on the workers.
- :func:`value_iteration`: sparse MDPs in blocks of states, V broadcast per sweep.
"""
from __future__ import annotations

from .kmeans import KMeans
from .mdp import value_iteration
from .mf import ALS

__all__ = ["KMeans", "ALS", "value_iteration"]
