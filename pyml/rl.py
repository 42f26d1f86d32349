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


def _td(env: GridWorld, episodes, alpha, gamma, epsilon, seed, max_steps, Q0, backend, sarsa):
    if not isinstance(env, GridWorld):
        raise TypeError(f"env must be a pyml.envs.GridWorld, got {type(env).__name__}")
    episodes = check_int(episodes, "episodes", min_value=1)
    alpha = check_scalar(alpha, "alpha", low=0.0, high=1.0, low_inclusive=False)
    gamma = check_scalar(gamma, "gamma", low=0.0, high=1.0)
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, high=1.0)
    seed = check_int(seed, "seed", min_value=0, max_value=2**64 - 1)
    max_steps = check_int(max_steps, "max_steps", min_value=1)
    shape = (env.n_states, env.n_actions)
    if Q0 is None:
        Q = np.zeros(shape)
    else:
        Q = check_array(Q0, "Q0", ndim=2, dtype=np.float64).copy()  # never modify the caller's Q0
        if Q.shape != shape:
            raise ValueError(f"Q0 must have shape {shape}, got {Q.shape}")
    be = TD_CONTROL.resolve(backend)
    returns = TD_CONTROL.get(be)(env.next_state, env.cum_prob, env.reward, env.done, env.start, Q,
                                 episodes, alpha, gamma, epsilon, max_steps, seed, sarsa)
    return RLResult(Q, np.asarray(returns))


def q_learning(env: GridWorld, episodes: int = 500, alpha: float = 0.1, gamma: float = 0.9,
               epsilon: float = 0.1, seed: int = 0, max_steps: int = 10_000, Q0: Any = None,
               backend: str = "auto") -> RLResult:
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
          backend: str = "auto") -> RLResult:
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
    Q = np.zeros((env.n_states, env.n_actions)) if Q is None else \
        check_array(Q, "Q", ndim=2, dtype=np.float64).copy()
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
