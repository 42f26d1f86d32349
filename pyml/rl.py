"""Tabular Q-learning and SARSA with the episode loop compiled (numba, cpp).

Update (Sutton & Barto 2018, eq. 6.8 for Q-learning, eq. 6.7 for SARSA):
q(S_t,A_t) <- q(S_t,A_t) + alpha (y_t - q(S_t,A_t)), y_t = r_t at a terminal state,
else r_t + gamma max_a q(S_{t+1}, a) (Q-learning) or r_t + gamma q(S_{t+1}, A_{t+1}) (SARSA).
Random numbers come from one SplitMix64 stream shared by every backend, so a seed gives
the same Q on python, numba and cpp.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ._backend import BackendUnavailableError
from ._mdp_driver import TD_CONTROL
from ._validation import check_array, check_int, check_scalar
from .envs import GridWorld
from .reference.mdp import td_update

__all__ = ["RLResult", "q_learning", "sarsa", "play"]


@dataclass
class RLResult:
    """Q (S, A) and the undiscounted return of each episode."""

    Q: np.ndarray
    returns: np.ndarray


def _finite(x: np.ndarray, name: str, what: str) -> None:
    if not np.isfinite(x).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"{what}: {name} contains NaN or infinity (first at index {bad})")


def _check_env(env: Any, what: str) -> tuple[int, int]:
    """The environment's tables must be consistent before a compiled episode loop indexes Q
    with them: every next state and the start in [0, S), finite rewards and probabilities."""
    if not isinstance(env, GridWorld):
        raise TypeError(f"{what}: env must be a pyml.envs.GridWorld, got {type(env).__name__}")
    S, A = int(env.n_states), int(env.n_actions)
    tables = {"next_state": env.next_state, "cum_prob": env.cum_prob, "reward": env.reward,
              "done": env.done}
    shape = np.shape(env.next_state)
    if len(shape) != 3 or shape[:2] != (S, A) or shape[2] < 1:
        raise ValueError(f"{what}: env.next_state must have shape ({S}, {A}, K), got {shape}")
    for name, table in tables.items():
        if np.shape(table) != shape:
            raise ValueError(f"{what}: env.{name} must have shape {shape} like env.next_state, "
                             f"got {np.shape(table)}")
    ns = np.asarray(env.next_state)
    if ns.dtype.kind not in "iu":
        raise TypeError(f"{what}: env.next_state must hold integer states, got dtype {ns.dtype}")
    if ns.size and (ns.min() < 0 or ns.max() >= S):
        bad = tuple(int(i) for i in np.argwhere((ns < 0) | (ns >= S))[0])
        where = ", ".join(map(str, bad))
        raise ValueError(f"{what}: env.next_state[{where}] = {int(ns[bad])} is not a state in [0, {S})")
    start = env.start
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < S:
        raise ValueError(f"{what}: env.start must be a state in [0, {S}), got {start!r}")
    _finite(np.asarray(env.reward, np.float64), "env.reward", what)
    cp = np.asarray(env.cum_prob, np.float64)
    _finite(cp, "env.cum_prob", what)
    if (np.diff(cp, axis=2) < 0).any() or cp.min() < 0 or cp.max() > 1 + 1e-9:
        raise ValueError(f"{what}: env.cum_prob must be non-decreasing cumulative probabilities in [0, 1]")
    return S, A


def _td(env: GridWorld, episodes, alpha, gamma, epsilon, seed, max_steps, Q0, backend, sarsa):
    what = "sarsa" if sarsa else "q_learning"
    S, A = _check_env(env, what)
    episodes = check_int(episodes, "episodes", min_value=1)
    alpha = check_scalar(alpha, "alpha", low=0.0, high=1.0, low_inclusive=False)
    gamma = check_scalar(gamma, "gamma", low=0.0, high=1.0)
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, high=1.0)
    seed = check_int(seed, "seed", min_value=0, max_value=2**64 - 1)
    max_steps = check_int(max_steps, "max_steps", min_value=1)
    if Q0 is None:
        Q = np.zeros((S, A))
    else:
        Q = check_array(Q0, "Q0", ndim=2, dtype=np.float64, check_finite=False).copy()  # never modify the caller's Q0
        if Q.shape != (S, A):
            raise ValueError(f"{what}: Q0 must have shape {(S, A)}, got {Q.shape}")
        _finite(Q, "Q0", what)
    try:
        be = TD_CONTROL.resolve(backend)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"{what}: {exc}") from None
    tables = (np.ascontiguousarray(env.next_state, np.int64), np.ascontiguousarray(env.cum_prob, np.float64),
              np.ascontiguousarray(env.reward, np.float64), np.ascontiguousarray(env.done, np.bool_))
    returns = TD_CONTROL.get(be)(*tables, int(env.start), Q, episodes, alpha, gamma, epsilon,
                                 max_steps, seed, sarsa)
    return RLResult(Q, np.asarray(returns))


def q_learning(env: GridWorld, episodes: int = 500, alpha: float = 0.1, gamma: float = 0.9,
               epsilon: float = 0.1, seed: int = 0, max_steps: int = 10_000, Q0: Any = None,
               backend: str | None = None) -> RLResult:
    """Off-policy TD control with an epsilon-greedy behaviour policy (greedy ties: lowest action).

    Examples
    --------
    >>> import pyml
    >>> env = pyml.envs.CliffWalking()
    >>> res = pyml.q_learning(env, episodes=300, epsilon=0.1, seed=0)
    >>> int(res.Q[env.start].argmax()) == pyml.envs.UP
    True
    """
    return _td(env, episodes, alpha, gamma, epsilon, seed, max_steps, Q0, backend, False)


def sarsa(env: GridWorld, episodes: int = 500, alpha: float = 0.1, gamma: float = 0.9,
          epsilon: float = 0.1, seed: int = 0, max_steps: int = 10_000, Q0: Any = None,
          backend: str | None = None) -> RLResult:
    """On-policy TD control (SARSA), same arguments and random stream as :func:`q_learning`.

    Examples
    --------
    >>> import pyml
    >>> res = pyml.sarsa(pyml.envs.CliffWalking(), episodes=50, seed=3)
    >>> res.Q.shape, res.returns.shape
    ((48, 4), (50,))
    """
    return _td(env, episodes, alpha, gamma, epsilon, seed, max_steps, Q0, backend, True)


def play(env: GridWorld, actions: Sequence[int], Q: Any = None, alpha: float = 0.1,
         gamma: float = 0.9, start: int | None = None) -> tuple[np.ndarray, list[int]]:
    """Drive one episode with a fixed action sequence, applying the Q-learning update.

    Intended moves only (no slip). Stops early when the episode ends. Returns the updated
    copy of Q and the visited states. This replays worked examples such as
    the first steps of Sutton & Barto's cliff walk (Example 6.6) by hand.

    Examples
    --------
    >>> from pyml.envs import CliffWalking, UP, RIGHT, DOWN
    >>> env = CliffWalking()
    >>> Q, states = play(env, [UP, RIGHT, DOWN])
    >>> float(Q[env.state(2, 1), DOWN])
    -10.0
    """
    if not isinstance(env, GridWorld):
        raise TypeError(f"play: env must be a pyml.envs.GridWorld, got {type(env).__name__}")
    if actions is None or isinstance(actions, (str, bytes)) or not hasattr(actions, "__iter__"):
        raise TypeError(f"play: actions must be a sequence of action numbers, got {type(actions).__name__}")
    if Q is None:
        Q = np.zeros((env.n_states, env.n_actions))
    else:
        Q = check_array(Q, "Q", ndim=2, dtype=np.float64, check_finite=False).copy()
        if Q.shape != (env.n_states, env.n_actions):
            raise ValueError(f"play: Q must have shape {(env.n_states, env.n_actions)}, got {Q.shape}")
        _finite(Q, "Q", "play")
    alpha = check_scalar(alpha, "alpha", low=0.0, high=1.0)
    gamma = check_scalar(gamma, "gamma", low=0.0, high=1.0)
    s = env.start if start is None else check_int(start, "start", min_value=0,
                                                  max_value=env.n_states - 1)
    states = [s]
    for a in actions:
        a = check_int(a, "action", min_value=0, max_value=env.n_actions - 1)
        s_next, r, done = env.step(s, a)
        td_update(Q, s, a, r, s_next, done, alpha, gamma)
        s = s_next
        states.append(s)
        if done:
            break
    return Q, states
