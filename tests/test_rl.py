"""Tabular Q-learning / SARSA: seed-003 worked example, backends bit-identical to the reference."""
from __future__ import annotations

import numpy as np
import pytest

import pyml
from pyml.envs import DOWN, LEFT, RIGHT, UP, CliffWalking, GridWorld
from pyml.rl import play

from conftest import backend_params

CPU_BACKENDS = backend_params(("python", "numba", "cpp"))


def test_seed_003_cliff_walking_worked_example():
    # Seed 003: Q = 0, alpha = 0.1, gamma = 0.9, actions numbered up, down, right, left;
    # from s(3,0): up -> s(2,0), right -> s(2,1), down -> the cliff, which ends the episode.
    env = CliffWalking(cliff_ends_episode=True)
    Q, states = play(env, [UP, RIGHT, DOWN], alpha=0.1, gamma=0.9)
    assert states == [env.state(3, 0), env.state(2, 0), env.state(2, 1), env.state(3, 1)]
    assert Q[env.state(3, 0), UP] == pytest.approx(-0.1)
    assert Q[env.state(2, 0), RIGHT] == pytest.approx(-0.1)
    assert Q[env.state(2, 1), DOWN] == pytest.approx(-10.0)
    assert np.count_nonzero(Q) == 3


def test_cliff_variant_back_to_start():
    env = CliffWalking(cliff_ends_episode=False)
    s, r, done = env.step(env.state(2, 1), DOWN)
    assert (s, r, done) == (env.start, -100.0, False)
    Q, states = play(env, [UP, RIGHT, DOWN, UP])
    # The fall sends the agent back to the start and the episode goes on.
    assert states == [env.start, env.state(2, 0), env.state(2, 1), env.start, env.state(2, 0)]
    # Not terminal: the target bootstraps from max_a Q(start, a) = 0 (only q(start, up) < 0).
    assert Q[env.state(2, 1), DOWN] == pytest.approx(0.1 * (-100 + 0.9 * 0.0))


def test_gridworld_walls_slip_and_goal():
    env = GridWorld(["S#G", "..."], slip=0.2)
    assert env.step(0, RIGHT) == (0, -1.0, False)         # wall: stay put
    assert env.step(0, UP, u=0.85)[0] == 0                 # slipped left, off grid
    assert env.step(0, UP, u=0.85)[0] == env.step(0, LEFT)[0]
    assert env.step(5, UP) == (2, 0.0, True)
    P, R = env.to_mdp()
    np.testing.assert_allclose(P.sum(axis=2), 1.0)
    Ps, Rs = env.to_mdp(sparse=True)
    np.testing.assert_allclose(np.stack([m.toarray() for m in Ps]), P)
    V = pyml.value_iteration(P, R, 0.9).V
    assert V[2] == 0.0 and V[5] > V[3]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("algo", ["q_learning", "sarsa"])
@pytest.mark.parametrize("ends", [True, False])
def test_td_backends_bit_identical_to_reference(backend, algo, ends):
    env = CliffWalking(cliff_ends_episode=ends, slip=0.1)
    fn = getattr(pyml, algo)
    want = fn(env, episodes=20, epsilon=0.3, seed=7, max_steps=200, backend="python")
    got = fn(env, episodes=20, epsilon=0.3, seed=7, max_steps=200, backend=backend)
    assert np.count_nonzero(want.Q) > 10
    np.testing.assert_array_equal(got.Q, want.Q)
    np.testing.assert_array_equal(got.returns, want.returns)
    again = fn(env, episodes=20, epsilon=0.3, seed=7, max_steps=200, backend=backend)
    np.testing.assert_array_equal(again.Q, got.Q)
    other = fn(env, episodes=20, epsilon=0.3, seed=8, max_steps=200, backend=backend)
    assert not np.array_equal(other.Q, got.Q)


@pytest.mark.parametrize("backend", backend_params(("numba", "cpp")))
def test_q_learning_learns_the_cliff_path(backend):
    env = CliffWalking()
    q = pyml.q_learning(env, episodes=500, epsilon=0.1, seed=0, backend=backend)
    s = pyml.sarsa(env, episodes=500, epsilon=0.1, seed=0, backend=backend)
    # Greedy Q-learning walks the optimal path along the cliff edge: 13 steps.
    states = _greedy_states(env, q.Q)
    assert states[-1] == env.state(3, 11) and len(states) - 1 == 13
    # Exploring SARSA earns more per episode than Q-learning near the end (the safe path).
    assert s.returns[-100:].mean() > q.returns[-100:].mean()


def _greedy_states(env, Q, limit=100):
    s, out = env.start, []
    for _ in range(limit):
        out.append(s)
        s, _, done = env.step(s, int(np.argmax(Q[s])))
        if done:
            break
    return out + [s]


def test_bad_input_and_no_mutation():
    env = CliffWalking()
    Q0 = np.zeros((48, 4))
    pyml.q_learning(env, episodes=3, Q0=Q0)
    assert not Q0.any()
    with pytest.raises(ValueError, match="Q0"):
        pyml.q_learning(env, Q0=np.zeros((4, 48)))
    with pytest.raises(ValueError, match="alpha"):
        pyml.sarsa(env, alpha=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        pyml.q_learning(env, epsilon=1.5)
    with pytest.raises(TypeError):
        pyml.q_learning("CliffWalking-v0")
    with pytest.raises(ValueError, match="start"):
        GridWorld(["..G"])
    with pytest.raises(ValueError, match="action"):
        play(env, [7])


def _corrupt(kind):
    env = CliffWalking()
    if kind in ("next_state 10**6", "next_state -5"):
        env.next_state = env.next_state.copy()
        env.next_state[env.state(3, 0), UP, 0] = 10**6 if kind == "next_state 10**6" else -5
    elif kind == "start 999":
        env.start = 999
    elif kind == "reward nan":
        env.reward = env.reward.copy()
        env.reward[5, 1, 0] = np.nan
    elif kind == "reward inf":
        env.reward = env.reward.copy()
        env.reward[0, 0, 0] = np.inf
    return env


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("algo", ["q_learning", "sarsa"])
@pytest.mark.parametrize("kind", ["next_state 10**6", "next_state -5", "start 999", "reward nan",
                                  "reward inf"])
def test_corrupt_environment_tables_are_refused_before_the_kernel(backend, algo, kind):
    word = kind.split()[0]
    with pytest.raises(ValueError, match=rf"^{algo}: env\.{word}"):
        getattr(pyml, algo)(_corrupt(kind), episodes=5, backend=backend)


def test_errors_name_the_function_and_argument():
    env = CliffWalking()
    with pytest.raises(pyml.BackendUnavailableError, match="^sarsa: "):
        pyml.sarsa(env, backend="cuda")
    Q0 = np.zeros((48, 4)); Q0[1, 1] = np.nan
    with pytest.raises(ValueError, match="q_learning: Q0 contains NaN") as info:
        pyml.q_learning(env, Q0=Q0)
    assert "check_finite" not in str(info.value)  # q_learning has no such parameter
    with pytest.raises(TypeError, match="actions"):
        play(env, None)
    for n in (0, -1, 1):
        with pytest.raises(ValueError, match="n must be"):
            pyml.envs.maze(n)
    with pytest.raises(TypeError, match="step_reward"):
        GridWorld(["S.G"], step_reward="a")
    with pytest.raises(ValueError, match="goal_reward"):
        GridWorld(["S.G"], goal_reward=float("nan"))


def test_configured_backend_is_the_default(monkeypatch):
    seen = []
    real = pyml._backend._load
    monkeypatch.setattr(pyml._backend, "_load", lambda t, b: seen.append(t) or real(t, b))
    with pyml.config_context(backend="python"):
        pyml.q_learning(CliffWalking(), episodes=2)
        pyml.sarsa(CliffWalking(), episodes=2)
    assert seen == ["pyml.reference.mdp:td_control"] * 2
