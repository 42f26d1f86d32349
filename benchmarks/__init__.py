"""Benchmarks (installed as ``pyml.benchmarks``): the harness, one ``bench_<loop>.py`` per hot
loop with its peers, used both by pytest-benchmark (``pytest benchmarks/``) and by ``pyml bench``."""

# `pyml bench NAME` -> module pyml.benchmarks.bench_<loop>
SUITES = {
    "kmeans": "kmeans",
    "conv2d": "conv",
    "attention": "attention",
    "als": "mf",
    "value_iteration": "mdp",
}
