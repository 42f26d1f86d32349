"""One small, valid call of every public function and estimator that takes ``backend=``,
shared by the thread test, the configured-default test and the hostile-input sweep.

``Spec.build(rng)`` returns the keyword arguments of a valid call; ``Spec.call(backend=b,
**kwargs)`` makes it and returns the result; :func:`arrays_of` flattens any result
(tuples, MDPResult, RLResult, fitted estimators) into a list of arrays to compare.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

import pyml


@dataclass
class Spec:
    name: str
    loop: str
    build: Callable[[np.random.Generator], dict]
    call: Callable[..., Any]
    arrays: tuple[str, ...] = ()          # array arguments the hostile sweep corrupts
    params: dict[str, list] = field(default_factory=dict)  # extreme hyper-parameters to try
    deterministic: bool = True            # same input -> same bits on every call
    # Arguments computed from the others (attention_backward's out and lse come from the
    # forward): after a value-changing corruption of another argument they are recomputed by
    # ``rederive(kwargs)``, since no function can tell a stale ``out`` from a fresh one.
    derived: tuple[str, ...] = ()
    rederive: Callable[[dict], dict] | None = None
    backend_free: bool = False            # no backend= (shapes, environments, data, optimisers)


def arrays_of(result: Any) -> list[np.ndarray]:
    """Every array (and number) in ``result``, in a fixed order."""
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in arrays_of(r)]
    if dataclasses.is_dataclass(result):
        return [a for f in dataclasses.fields(result) for a in arrays_of(getattr(result, f.name))]
    if isinstance(result, pyml.KMeans):
        return [result.cluster_centers_, result.labels_, np.float64(result.inertia_)]
    if isinstance(result, pyml.ALS):
        return [result.user_factors, result.item_factors]
    if isinstance(result, (np.ndarray, np.generic, int, float, bool)):
        return [np.asarray(result)]
    return []


def _mdp(rng, S=10, A=3):
    P = rng.random((A, S, S))
    P /= P.sum(-1, keepdims=True)
    return P, rng.random((S, A))


def _ratings(rng):
    R = sp.random(20, 15, density=0.3, format="csr", random_state=np.random.RandomState(0))
    R.data = rng.uniform(1, 5, R.nnz)
    return R


def _attention_state(rng):
    q, k, v = (rng.standard_normal((1, 2, 9, 4)) for _ in range(3))
    out, lse = pyml.attention(q, k, v, scale=0.5, return_lse=True, backend="python")
    return dict(dout=rng.standard_normal(q.shape), q=q, k=k, v=v, out=out, lse=lse)


def _attention_rederive(kw):
    try:
        kw["out"], kw["lse"] = pyml.attention(kw["q"], kw["k"], kw["v"], scale=0.5,
                                              return_lse=True, backend="python")
    except (ValueError, TypeError):  # the corrupted input is refused: keep the stale ones
        pass
    return kw


def _pool_backward(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    _, idx = pyml.max_pool2d(x, 2, backend="python")
    return dict(grad_out=rng.standard_normal((2, 3, 3, 3)), indices=idx, input_shape=x.shape)


def _mha(rng, backward=False):
    d = dict(x=rng.standard_normal((2, 5, 8)),
             **{f"w_{n}": rng.standard_normal((8, 8)) / 3 for n in "qkvo"}, num_heads=2)
    if backward:
        d["dy"] = rng.standard_normal((2, 5, 8))
    return d


def _env(rng):
    env = pyml.envs.maze(5)
    return dict(env=env, episodes=10, Q0=np.zeros((env.n_states, env.n_actions)))


def _sparse_mdp(rng, S=12, A=3):
    P, R = _mdp(rng, S, A)
    P[P < 0.05] = 0.0  # some structural zeros
    P /= P.sum(-1, keepdims=True)
    return dict(P=[sp.csr_matrix(P[a]) for a in range(A)], R=R, gamma=0.9)


SPECS = [
    Spec("kmeans_assign", "kmeans",
         lambda r: dict(X=r.standard_normal((60, 3)), C=r.standard_normal((4, 3))),
         lambda **kw: pyml.kmeans_assign(**kw), ("X", "C"), {"metric": ["manhattan", "bogus", None]}),
    Spec("kmeans_plusplus", "kmeans",
         lambda r: dict(X=r.standard_normal((60, 3)), n_clusters=4, random_state=0),
         lambda **kw: pyml.kmeans_plusplus(**kw), ("X",),
         {"n_clusters": [0, 61, -1, 2**40, 2.5], "n_local_trials": [0, -1, 10**9]}),
    Spec("KMeans", "kmeans",
         lambda r: dict(X=r.standard_normal((60, 3)), n_clusters=4),
         lambda X, backend=None, **kw: pyml.KMeans(n_init=1, random_state=0, max_iter=20,
                                                   backend=backend, **kw).fit(X), ("X",),
         {"n_clusters": [0, 61, -3, 10**12], "max_iter": [0, -1], "tol": [-1.0, float("nan")]}),
    Spec("conv2d", "conv",
         lambda r: dict(x=r.standard_normal((2, 3, 7, 7)), w=r.standard_normal((4, 3, 3, 3)),
                        bias=r.standard_normal(4)),
         lambda **kw: pyml.conv2d(**kw), ("x", "w", "bias"),
         {"stride": [0, -1, 10**9], "padding": [-1, 10**6], "dilation": [0, 10**6], "groups": [0, 2, 5]}),
    Spec("conv2d_backward", "conv",
         lambda r: dict(grad_out=r.standard_normal((2, 4, 5, 5)), x=r.standard_normal((2, 3, 7, 7)),
                        w=r.standard_normal((4, 3, 3, 3))),
         lambda **kw: pyml.conv2d_backward(**kw), ("grad_out", "x", "w"),
         {"needs": [None, (), ("bogus",)], "stride": [0]}),
    Spec("max_pool2d", "conv", lambda r: dict(x=r.standard_normal((2, 3, 6, 6)), kernel_size=2),
         lambda **kw: pyml.max_pool2d(**kw), ("x",), {"kernel_size": [0, -1, 10**6], "padding": [-1, 5]}),
    Spec("max_pool2d_backward", "conv", _pool_backward, lambda **kw: pyml.max_pool2d_backward(**kw),
         ("grad_out", "indices"), {"input_shape": [None, (2, 3), (2, 3, -6, 6)]}),
    Spec("avg_pool2d", "conv", lambda r: dict(x=r.standard_normal((2, 3, 6, 6)), kernel_size=2),
         lambda **kw: pyml.avg_pool2d(**kw), ("x",), {"kernel_size": [0, 10**6], "stride": [0]}),
    Spec("avg_pool2d_backward", "conv",
         lambda r: dict(grad_out=r.standard_normal((2, 3, 3, 3)), input_shape=(2, 3, 6, 6), kernel_size=2),
         lambda **kw: pyml.avg_pool2d_backward(**kw), ("grad_out",),
         {"input_shape": [None, (2, 3, 6)], "kernel_size": [0]}),
    Spec("attention", "attention",
         lambda r: dict(q=r.standard_normal((1, 2, 9, 4)), k=r.standard_normal((1, 2, 9, 4)),
                        v=r.standard_normal((1, 2, 9, 4))),
         lambda **kw: pyml.attention(**kw), ("q", "k", "v"),
         {"scale": [0.0, -1.0, 1e308, float("nan")], "causal": ["yes"]}),
    Spec("attention_backward", "attention", _attention_state,
         lambda **kw: pyml.attention_backward(scale=0.5, **kw), ("dout", "q", "k", "v", "out", "lse"),
         derived=("out", "lse"), rederive=_attention_rederive),
    Spec("multi_head_attention", "attention", _mha, lambda **kw: pyml.multi_head_attention(**kw),
         ("x", "w_q", "w_k", "w_v", "w_o"), {"num_heads": [0, 3, -1]}),
    Spec("multi_head_attention_backward", "attention", lambda r: _mha(r, backward=True),
         lambda **kw: pyml.multi_head_attention_backward(**kw), ("dy", "x", "w_q", "w_o"),
         {"num_heads": [0, 3]}),
    Spec("ALS", "mf", lambda r: dict(user_items=_ratings(r)),
         lambda user_items, backend=None, **kw: pyml.ALS(
             **{"factors": 3, "iterations": 2, "random_state": 0, "show_progress": False,
                "backend": backend, **kw}).fit(user_items),
         ("user_items",), {"factors": [0, -1, 10**9], "iterations": [-1], "regularization": [-1.0, float("inf")],
                  "callback": [5]}),
    Spec("mf_sgd", "mf", lambda r: dict(R=_ratings(r)),
         lambda **kw: pyml.mf_sgd(**{"factors": 3, "epochs": 2, "deterministic": True,
                                     "random_state": 0, **kw}), ("R",),
         {"factors": [0, 10**9], "lr": [float("nan"), -1.0], "epochs": [-1]}),
    Spec("value_iteration", "mdp", lambda r: dict(zip(("P", "R"), _mdp(r)), gamma=0.9),
         lambda **kw: pyml.value_iteration(**kw), ("P", "R"),
         {"gamma": [0.0, 1.0, -0.1, 1.5, float("nan")], "max_iter": [0, -1], "epsilon": [-1.0, 0.0]}),
    Spec("value_iteration[sparse]", "mdp", _sparse_mdp, lambda **kw: pyml.value_iteration(**kw),
         ("P", "R"), {"max_iter": [0]}),
    Spec("policy_iteration", "mdp", lambda r: dict(zip(("P", "R"), _mdp(r)), gamma=0.9),
         lambda **kw: pyml.policy_iteration(**kw), ("P", "R"), {"gamma": [0.0, 1.5], "max_iter": [0]}),
    Spec("policy_evaluation", "mdp",
         lambda r: dict(zip(("P", "R"), _mdp(r)), gamma=0.9, policy=np.zeros(10, np.int64),
                        method="iterative"),  # "exact" is one LAPACK solve, no pyml kernel
         lambda **kw: pyml.policy_evaluation(**kw), ("P", "R", "policy"),
         {"gamma": [0.0, 1.5], "method": ["bogus", None]}),
    Spec("q_values", "mdp", lambda r: dict(zip(("P", "R"), _mdp(r)), gamma=0.9, V=r.random(10)),
         lambda **kw: pyml.q_values(**kw), ("P", "R", "V"), {"gamma": [0.0, -1.0]}),
    Spec("greedy_policy", "mdp", lambda r: dict(zip(("P", "R"), _mdp(r)), gamma=0.9, V=r.random(10)),
         lambda **kw: pyml.greedy_policy(**kw), ("P", "R", "V"), {"gamma": [0.0, 2.0]}),
    Spec("q_learning", "mdp", _env, lambda **kw: pyml.q_learning(**kw), ("Q0",),
         {"episodes": [0, -1], "alpha": [-1.0, float("nan")], "gamma": [1.5], "max_steps": [0]}),
    Spec("sarsa", "mdp", _env, lambda **kw: pyml.sarsa(**kw), ("Q0",),
         {"episodes": [-1], "epsilon": [2.0], "alpha": [float("inf")]}),
]

def _free(f):
    return lambda backend=None, **kw: f(**kw)


def _conv_layer(x, backend=None, **kw):
    layer = pyml.nn.Conv2d(**{"in_channels": 3, "out_channels": 4, "kernel_size": 3,
                              "random_state": 0, "dtype": np.float64, "backend": backend, **kw})
    y = layer.forward(x)
    return y, layer.backward(np.ones_like(y))


def _mha_layer(x, backend=None, **kw):
    layer = pyml.nn.MultiHeadAttention(**{"embed_dim": 8, "num_heads": 2, "random_state": 0,
                                          "dtype": np.float64, "backend": backend, **kw})
    y = layer.forward(x)
    return y, layer.backward(np.ones_like(y))


# Layers (their backend= reaches the kernels) and the backend-free public functions: the
# hostile sweep calls these too (the backend-free ones once, on "python").
LAYERS = [
    Spec("nn.Conv2d", "conv", lambda r: dict(x=r.standard_normal((2, 3, 7, 7))), _conv_layer, ("x",),
         {"in_channels": [0, -1], "out_channels": [0], "kernel_size": [0, 10**6], "stride": [0]}),
    Spec("nn.MultiHeadAttention", "attention", lambda r: dict(x=r.standard_normal((2, 5, 8))),
         _mha_layer, ("x",), {"num_heads": [0, 3], "embed_dim": [0]}),
]
FREE = [
    Spec("sinusoidal_positional_encoding", "attention", lambda r: dict(n=8, d=6),
         _free(pyml.sinusoidal_positional_encoding), (),
         {"n": [0, -1, 2.5, None], "d": [0, -2, 7], "dtype": [np.int32, "bogus", None]}, backend_free=True),
    Spec("conv_output_shape", "conv", lambda r: dict(input_shape=(2, 3, 7, 7), weight_shape=(4, 3, 3, 3)),
         _free(pyml.conv_output_shape), (),
         {"input_shape": [(2, 3, 3.7, 7), (2, 3, -7, 7), None, (2, 3)], "weight_shape": [(4, 3, 9, 9), None],
          "stride": [0, -1], "padding": [-1], "dilation": [0]}, backend_free=True),
    Spec("envs.maze", "mdp", lambda r: dict(n=5), _free(lambda **kw: pyml.envs.maze(**kw).next_state), (),
         {"n": [0, -1, "a", 2.5], "slip": [-0.1, 2.0], "wall_fraction": [1.5]}, backend_free=True),
    Spec("envs.GridWorld", "mdp", lambda r: dict(layout=["S..", "...", "..G"]),
         _free(lambda **kw: pyml.envs.GridWorld(**kw).reward), (),
         {"step_reward": ["a", float("nan")], "slip": [2.0], "layout": [[], ["..."], None, ["S.", "..G"]]},
         backend_free=True),
    Spec("datasets.make_blobs", "kmeans", lambda r: dict(n_samples=20, seed=0),
         _free(pyml.datasets.make_blobs), (),
         {"n_samples": [0, -1], "centers": [0], "cluster_std": [-1.0, float("nan")], "dtype": [np.int8]},
         backend_free=True),
    Spec("nn.softmax_cross_entropy", "conv",
         lambda r: dict(logits=r.standard_normal((4, 3)), labels=np.array([0, 1, 2, 0])),
         _free(pyml.nn.softmax_cross_entropy), ("logits", "labels"),
         {"labels": [np.array([-1, 0, 1, 2]), np.array([0, 1, 2, 3]), np.array([0.5, 1, 2, 0])]},
         backend_free=True),
    Spec("nn.SGD", "conv", lambda r: dict(lr=0.01),
         _free(lambda **kw: pyml.nn.SGD(pyml.nn.Linear(3, 2, random_state=0), **kw)), (),
         {"lr": [float("nan"), -1.0, "a"], "momentum": [2.0, -0.5]}, backend_free=True),
]

BY_NAME = {s.name: s for s in SPECS + LAYERS + FREE}
