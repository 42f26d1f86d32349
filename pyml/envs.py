"""Tabular grid environments (GridWorld; CliffWalking after Sutton & Barto 2018, Example 6.6)
stored as arrays, so compiled Q-learning/SARSA episode loops can step them, and convertible
to (P, R) for value iteration.

Actions are numbered 0 = up, 1 = down, 2 = right, 3 = left
(gymnasium's CliffWalking uses 0 up, 1 right, 2 down, 3 left).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ._validation import check_int, check_scalar

UP, DOWN, RIGHT, LEFT = 0, 1, 2, 3
MOVES = np.array([(-1, 0), (1, 0), (0, 1), (0, -1)])
# Slipping moves perpendicular to the intended direction, half the slip each way.
PERPENDICULAR = np.array([(RIGHT, LEFT), (RIGHT, LEFT), (UP, DOWN), (UP, DOWN)])


class GridWorld:
    """A grid from a layout of strings: '.' free, '#' wall, 'S' start, 'G' goal, 'C' cliff.

    Entering a free cell costs ``step_reward``, the goal gives ``goal_reward`` and ends
    the episode; the cliff gives ``cliff_reward`` and either ends the episode
    (``cliff_ends_episode=True``, a common teaching variant) or sends the agent back to the
    start (Sutton & Barto's Example 6.6, and gymnasium).
    Moves into a wall or off the grid leave the agent in place. With probability
    ``slip`` the move goes perpendicular instead (half each side).

    Model arrays (K outcomes per (s, a)): ``next_state``, ``cum_prob``, ``reward``,
    ``done`` of shape (S, A, K); state index = row * width + col.

    Examples
    --------
    >>> from pyml.envs import GridWorld
    >>> env = GridWorld(["S.G"])
    >>> env.n_states, env.n_actions, env.step(0, 2)[:2]
    (3, 4, (1, -1.0))
    """

    def __init__(self, layout: Sequence[str], step_reward: float = -1.0, goal_reward: float = 0.0,
                 cliff_reward: float = -100.0, slip: float = 0.0, cliff_ends_episode: bool = True):
        if (isinstance(layout, str) or not isinstance(layout, Sequence) or not layout
                or not all(isinstance(r, str) for r in layout)
                or len({len(r) for r in layout}) != 1 or not layout[0]):
            raise ValueError("layout must be a non-empty list of equal-length strings")
        grid = np.array([list(r) for r in layout])
        if not set(np.unique(grid)) <= set(".#SGC"):
            raise ValueError(f"layout may only contain '.#SGC', got {sorted(set(np.unique(grid)))}")
        if (grid == "S").sum() != 1:
            raise ValueError("layout must contain exactly one start 'S'")
        self.slip = check_scalar(slip, "slip", low=0.0, high=1.0)
        step_reward = check_scalar(step_reward, "step_reward")
        goal_reward = check_scalar(goal_reward, "goal_reward")
        cliff_reward = check_scalar(cliff_reward, "cliff_reward")
        if not isinstance(cliff_ends_episode, (bool, np.bool_)):
            raise TypeError(f"cliff_ends_episode must be True or False, got {cliff_ends_episode!r}")
        self.layout = list(layout)
        self.shape = grid.shape
        H, W = grid.shape
        S, A = H * W, 4
        self.n_states, self.n_actions = S, A
        cell = grid.ravel()
        self.start = int(np.flatnonzero(cell == "S")[0])
        terminal = (cell == "G") | ((cell == "C") & cliff_ends_episode)
        self.terminal = terminal

        rows, cols = np.divmod(np.arange(S), W)

        def target(a):  # destination of a deterministic move a from every cell (vectorised)
            r = np.clip(rows + MOVES[a, 0], 0, H - 1)
            c = np.clip(cols + MOVES[a, 1], 0, W - 1)
            dest = r * W + c
            return np.where(cell[dest] == "#", np.arange(S), dest)

        dirs = np.stack([np.stack([a, *PERPENDICULAR[a]]) for a in range(A)])  # (A, 3)
        probs = np.array([1.0 - self.slip, self.slip / 2, self.slip / 2])
        dest = np.stack([np.stack([target(d) for d in dirs[a]], axis=1) for a in range(A)], axis=1)
        kind = cell[dest]                                   # (S, A, 3)
        reward = np.where(kind == "G", goal_reward, np.where(kind == "C", cliff_reward, step_reward))
        done = (kind == "G") | ((kind == "C") & cliff_ends_episode)
        if not cliff_ends_episode:
            dest = np.where(kind == "C", self.start, dest)
        # Terminal (and wall) cells are absorbing with zero reward: never left once entered.
        absorbing = terminal | (cell == "#")
        dest[absorbing] = np.arange(S)[absorbing, None, None]
        reward[absorbing] = 0.0
        done[absorbing] = True
        self.next_state = np.ascontiguousarray(dest, dtype=np.int64)
        self.reward = np.ascontiguousarray(reward, dtype=np.float64)
        self.done = np.ascontiguousarray(done, dtype=np.bool_)
        self.cum_prob = np.ascontiguousarray(np.broadcast_to(np.cumsum(probs), (S, A, 3)))
        self.probs = probs

    def state(self, row: int, col: int) -> int:
        return int(row * self.shape[1] + col)

    def step(self, s: int, a: int, u: float = 0.0) -> tuple[int, float, bool]:
        """Outcome of action ``a`` in state ``s`` for a uniform draw ``u`` (u=0: the intended move)."""
        if not (0 <= s < self.n_states and 0 <= a < self.n_actions):
            raise ValueError(f"state must be in [0, {self.n_states}) and action in [0, 4), got {s}, {a}")
        k = int(min(np.searchsorted(self.cum_prob[s, a], u, side="right"), 2))
        return int(self.next_state[s, a, k]), float(self.reward[s, a, k]), bool(self.done[s, a, k])

    def to_mdp(self, sparse: bool = False):
        """(P, R): P dense (A, S, S) or a list of A CSR matrices, R (S, A) expected reward."""
        import scipy.sparse as sp

        S, A = self.n_states, self.n_actions
        R = np.einsum("sak,k->sa", self.reward, self.probs)
        mats = []
        for a in range(A):
            m = sp.csr_matrix((np.broadcast_to(self.probs, (S, 3)).ravel(),
                               (np.repeat(np.arange(S), 3), self.next_state[:, a, :].ravel())),
                              shape=(S, S))
            m.sum_duplicates()
            m.eliminate_zeros()
            mats.append(m)
        if sparse:
            return mats, R
        return np.stack([m.toarray() for m in mats]), R


def CliffWalking(cliff_ends_episode: bool = True, slip: float = 0.0) -> GridWorld:
    """The 4x12 cliff walk of Sutton & Barto, Example 6.6: start s(3,0), goal s(3,11), cliff s(3,1..10).

    Reward -1 per step, -100 for the cliff, 0 for reaching the goal.
    ``cliff_ends_episode=True`` ends the episode at the cliff; False sends the agent back to
    the start, as the book and gymnasium do.

    Examples
    --------
    >>> from pyml.envs import CliffWalking, UP
    >>> env = CliffWalking()
    >>> env.step(env.state(3, 0), UP)
    (24, -1.0, False)
    """
    layout = ["." * 12] * 3 + ["S" + "C" * 10 + "G"]
    return GridWorld(layout, slip=slip, cliff_ends_episode=cliff_ends_episode)


def maze(n: int, slip: float = 0.1, wall_fraction: float = 0.2, seed: int = 0) -> GridWorld:
    """An n x n random maze (walls with probability ``wall_fraction``), start top-left, goal bottom-right."""
    n = check_int(n, "n", min_value=2)  # start and goal need two cells
    wall_fraction = check_scalar(wall_fraction, "wall_fraction", low=0.0, high=1.0)
    rng = np.random.default_rng(check_int(seed, "seed", min_value=0))
    grid = np.where(rng.random((n, n)) < wall_fraction, "#", ".")
    grid[0, 0], grid[-1, -1] = "S", "G"
    return GridWorld(["".join(r) for r in grid], slip=slip)
