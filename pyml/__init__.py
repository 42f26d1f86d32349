"""pyml: compiled kernels for the hot loops of classic ML and RL, each proven equal to a
textbook reference. See README.md."""
from __future__ import annotations

__version__ = "0.1.0"

from ._backend import (  # noqa: E402
    BackendUnavailableError,
    available_backends,
    backends,
    config_context,
    get_config,
    get_num_threads,
    set_backend,
    set_num_threads,
)
from . import datasets  # noqa: E402

__all__ = [
    "BackendUnavailableError", "available_backends", "backends", "config_context", "get_config",
    "get_num_threads", "set_backend", "set_num_threads",
]
