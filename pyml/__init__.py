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
from .mf import ALS, mf_sgd  # noqa: E402
from . import evaluation  # noqa: E402
from .kmeans import KMeans, kmeans_assign, kmeans_plusplus  # noqa: E402
from .conv import conv2d, conv2d_backward, conv_output_shape  # noqa: E402
from .pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward  # noqa: E402
from .attention import attention, attention_backward, sinusoidal_positional_encoding  # noqa: E402
from .mha import multi_head_attention, multi_head_attention_backward  # noqa: E402
from . import nn  # noqa: E402
from . import envs, mdp, rl  # noqa: E402
from .mdp import (greedy_policy, policy_evaluation, policy_iteration, q_values,  # noqa: E402
                  value_iteration)
from .rl import q_learning, sarsa  # noqa: E402

__all__ = [
    "datasets", "ALS", "mf_sgd", "evaluation",
    "attention", "attention_backward", "sinusoidal_positional_encoding",
    "multi_head_attention", "multi_head_attention_backward",
    "envs", "mdp", "rl", "value_iteration", "policy_iteration", "policy_evaluation", "q_values", "greedy_policy",
    "q_learning", "sarsa",
    "KMeans", "kmeans_assign", "kmeans_plusplus",
    "conv2d", "conv2d_backward", "conv_output_shape", "max_pool2d", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_backward", "nn",
    "BackendUnavailableError", "available_backends", "backends", "config_context", "get_config",
    "get_num_threads", "set_backend", "set_num_threads",
]
