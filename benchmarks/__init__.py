"""Benchmarks (installed as ``pyml.benchmarks``): the harness, one ``bench_<loop>.py`` per hot
loop with its peers, used both by pytest-benchmark (``pytest benchmarks/``) and by ``pyml bench``.

The contract of a ``bench_<loop>.py`` module (the CLI relies on it):

- ``suite(size="default", backends=None, peers=None) -> list[Case]``;
- ``size`` is one of ``_harness.SIZES`` = ("default", "small", "large"), every one of them
  accepted by every loop ("small" runs in seconds, "large" is the scale a user cares
  about); anything else raises ValueError (use ``_harness.check_size``);
- ``peers`` is None (every installed peer) or a list of names from ``PEERS[loop]`` below;
- only the public API of pyml is used, and end-to-end rows time the public call with
  ``Runner(..., setup=...)`` giving the time spent before the first kernel call.
"""

from ._harness import SIZES

# `pyml bench NAME`: the loop names, module pyml.benchmarks.bench_<loop>
SUITES = {loop: loop for loop in ("kmeans", "conv", "attention", "mf", "mdp")}
SUITES.update(startup="startup", dask="dask")

# Old spellings of `pyml bench NAME`, kept so existing scripts keep working.
ALIASES = {"conv2d": "conv", "als": "mf", "value_iteration": "mdp"}

# Peers per loop: the name `--peers` takes -> the module that must import for it to run.
PEERS = {
    "kmeans": {"scikit-learn": "sklearn", "faiss": "faiss", "sklearnex": "sklearnex"},
    "conv": {"torch": "torch"},
    "attention": {"torch": "torch"},
    "mf": {"implicit": "implicit"},
    "mdp": {"pymdptoolbox": "mdptoolbox", "scipy": "scipy"},
    "startup": {},
    "dask": {"dask-ml": "dask_ml"},
}

PEER_HINT = 'no peer library is installed; install them with  pip install "pyml[bench]"'

__all__ = ["SUITES", "ALIASES", "PEERS", "PEER_HINT", "SIZES"]
