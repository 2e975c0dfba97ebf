"""Learning on small MDPs with known answers (docs/design.md, 'Targets' and
'Conservative regularizer')."""

from __future__ import annotations

import numpy as np
import pytest

import qtransformer as qt
from qtransformer.data.sampler import TransitionSampler
from qtransformer.envs.gridworld import (
    STITCH_SPEC,
    GridSpec,
    GridWorld,
    collect,
    moves_of,
    per_dimension_q,
    stitching_dataset,
    value_iteration,
)

pytestmark = pytest.mark.slow

SPEC = GridSpec(shape=(4, 4), start=(0, 0), goal=(3, 3), lava=((1, 2), (2, 1)), max_steps=8)
GAMMA = 0.9
FAST = dict(
    # One-step targets, one head and a constant rate: what these learning checks were sized for.
    n_step=1,
    q_heads=1,
    lr_schedule="constant",
    batch_size=128,
    gamma=GAMMA,
    d_model=64,
    n_layers=2,
    n_heads=4,
    lr=1e-3,
    target_update_rate=0.05,
    log_every=10_000,
)


def one_hot(cells):
    return np.eye(SPEC.n_cells, dtype=np.float32)[[SPEC.index(c) for c in cells]]


def live_cells():
    dead = {SPEC.goal, *SPEC.lava}
    return [SPEC.cell(i) for i in range(SPEC.n_cells) if SPEC.cell(i) not in dead]


def bounds(arrays):
    return qt.OfflineDataset.from_arrays(**arrays, action_low=-np.ones(2), action_high=np.ones(2))


def greedy_route(agent, spec, limit=20):
    env = GridWorld(spec)
    obs, info = env.reset()
    cells = [info["cell"]]
    for _ in range(limit):
        obs, r, term, trunc, info = env.step(agent.act(obs[None])[0])
        cells.append(info["cell"])
        if term or trunc:
            return cells, r
    return cells, 0.0


def uniform_moves(spec: GridSpec, seed: int) -> dict:
    """600 episodes of uniformly random moves from every live cell: full coverage."""
    moves = lambda c, rng: tuple(rng.integers(-1, 2, size=2))  # noqa: E731
    return collect(spec, moves, 600, seed=seed, starts=live_cells())


def exact_config(**overrides) -> qt.TrainConfig:
    """Settings for the value-iteration checks: 3 bins (the moves), no conservative term.

    A decaying rate: at a constant one, Q still moves by about 0.1 at step 1500 and whether
    it lands within 0.05 depends on the seed (seed 2 missed by 0.12); decayed, seeds 0-2 all
    land within 0.03."""
    settings = dict(steps=1500, n_bins=3, conservative_weight=0.0, mc_lower_bound=False)
    return qt.TrainConfig(**{**FAST, "lr_schedule": "cosine", **settings, **overrides})


def test_per_dimension_q_matches_value_iteration_with_full_coverage() -> None:
    cells = live_cells()
    rand = uniform_moves(SPEC, seed=0)
    cfg = exact_config()
    agent = qt.train(bounds(rand), cfg)
    q1, q2 = per_dimension_q(value_iteration(SPEC, GAMMA))
    idx = [SPEC.index(c) for c in cells]
    obs = one_hot(cells)
    for a0 in range(3):
        bins = np.zeros((len(cells), 2), dtype=np.int64)
        bins[:, 0] = a0
        q = agent.q_values(obs, bins)  # (cells, 2, 3)
        np.testing.assert_allclose(q[:, 0], q1[idx], atol=0.05)
        np.testing.assert_allclose(q[:, 1], q2[idx][:, a0], atol=0.05)
    # Terminal masking: stepping into lava is worth exactly nothing.
    lava_q = agent.q_values(one_hot([(1, 1)]), np.array([[1, 0]]))[0, 1, 2]  # (1,1) -> (1,2)
    assert lava_q < 0.05
    route, reward = greedy_route(agent, SPEC)
    assert reward == 1.0 and len(route) - 1 == 3  # the optimal 3 diagonal steps


COST_SPEC = GridSpec(
    shape=(4, 4),
    start=(0, 0),
    goal=(3, 3),
    lava=((1, 2), (2, 1)),
    max_steps=8,
    goal_reward=0.0,
    lava_reward=-2.0,
    step_reward=-1.0,
)
"""Goal reaching with a cost: -1 per step, 0 on arriving, -2 for lava (ends the episode)."""


def test_per_dimension_q_matches_value_iteration_with_negative_dense_rewards() -> None:
    cells = live_cells()
    data = bounds(uniform_moves(COST_SPEC, seed=0))
    assert data.value_range(GAMMA) == pytest.approx((-20.0, 0.0))  # min reward / (1 - gamma)
    # Under the optimal policy every value lies in [-3, 0]: a tighter range, given as a user
    # may, so that the tolerance below (0.05 of the range, as in the sparse test) is tight.
    # With the Monte Carlo bound on: its cut episodes count gamma^m q_min, never above Q*.
    agent = qt.train(data, exact_config(q_min=-3.0, mc_lower_bound=True))
    assert (agent.q_min, agent.q_max) == (-3.0, 0.0)
    q_star = value_iteration(COST_SPEC, GAMMA)
    assert -3.0 < q_star.min() < -2.5  # far below 0: the affine range is exercised
    q1, q2 = per_dimension_q(q_star)
    idx = [SPEC.index(c) for c in cells]
    obs = one_hot(cells)
    for a0 in range(3):
        bins = np.zeros((len(cells), 2), dtype=np.int64)
        bins[:, 0] = a0
        q = agent.q_values(obs, bins)  # (cells, 2, 3)
        np.testing.assert_allclose(q[:, 0], q1[idx], atol=0.15)  # 0.05 of the range
        np.testing.assert_allclose(q[:, 1], q2[idx][:, a0], atol=0.15)
    # Terminal masking: stepping into lava is worth its reward, -2, and nothing after.
    lava_q = agent.q_values(one_hot([(1, 1)]), np.array([[1, 0]]))[0, 1, 2]  # (1,1) -> (1,2)
    assert lava_q == pytest.approx(-2.0, abs=0.15)
    route, _ = greedy_route(agent, COST_SPEC)
    assert route[-1] == COST_SPEC.goal and len(route) - 1 == 3  # the optimal 3 diagonal steps


def test_mc_bound_with_a_step_cost_stays_below_the_true_values() -> None:
    """With negative rewards, the Monte Carlo return of a cut episode plus gamma^m * q_min
    still lower-bounds Q* on every transition (training with it: see the test above, whose
    targets it would otherwise raise above Q*)."""
    rand = uniform_moves(COST_SPEC, seed=1)
    data = bounds(rand)

    def mc(q_min):
        disc = qt.ActionDiscretizer(-np.ones(2), np.ones(2), 3)
        return TransitionSampler(data, disc, GAMMA, 1, 1, q_min=q_min).mc_return

    q_star = value_iteration(COST_SPEC, GAMMA)
    taken = [
        q_star[(int(np.argmax(o)),) + tuple(m + 1 for m in moves_of(a))]
        for o, a in zip(rand["observations"], rand["actions"], strict=True)
    ]
    assert np.all(mc(-3.0) <= np.asarray(taken) + 1e-5)  # a valid lower bound everywhere
    # Counting the cut future as 0 instead would claim more than Q* somewhere: the bug the
    # tail term prevents.
    assert np.any(mc(0.0) > np.asarray(taken) + 0.1)


def test_conservative_term_keeps_unseen_bins_near_zero() -> None:
    narrow = collect(SPEC, lambda c, rng: (1, 1), 20, seed=0)  # the expert's diagonal only
    cfg = qt.TrainConfig(steps=800, n_bins=8, conservative_weight=1.0, **FAST)
    agent = qt.train(bounds(narrow), cfg)
    visited = [(0, 0), (1, 1), (2, 2)]
    seen = 6  # action 2/3 falls in bin 6 of 8 on [-1, 1]
    q = agent.q_values(one_hot(visited), np.full((3, 2), seen))  # (3, 2, 8)
    unseen = np.delete(q, seen, axis=-1)
    assert unseen.max() < 0.1
    # Data bins keep their value: Q of the diagonal step is gamma^(steps left - 1).
    true = np.array([GAMMA**2, GAMMA, 1.0])
    np.testing.assert_allclose(q[:, 0, seen], true, atol=0.1)
    np.testing.assert_allclose(q[:, 1, seen], true, atol=0.1)


def test_without_conservative_term_unseen_bins_are_not_pushed_down() -> None:
    narrow = collect(SPEC, lambda c, rng: (1, 1), 20, seed=0)
    cfg = qt.TrainConfig(steps=800, n_bins=8, conservative_weight=0.0, **FAST)
    agent = qt.train(bounds(narrow), cfg)
    q = agent.q_values(one_hot([(0, 0), (1, 1), (2, 2)]), np.full((3, 2), 6))
    assert np.delete(q, 6, axis=-1).max() > 0.3  # the contrast that makes the test above meaningful


def test_agent_stitches_failed_attempts_into_a_faster_route_than_the_demonstrations() -> None:
    data = bounds(stitching_dataset(episodes=30, seed=0))
    lengths = data.episodes.lengths[np.add.reduceat(data.rewards, data.episodes.starts) > 0]
    assert lengths.min() == 8  # every successful demonstration is the slow route
    cfg = qt.TrainConfig(steps=1200, n_bins=16, conservative_weight=1.0, **FAST)
    agent = qt.train(data, cfg)
    route, reward = greedy_route(agent, STITCH_SPEC)
    assert reward == 1.0
    assert len(route) - 1 == 6, route
    assert route[:3] == [(0, 0), (1, 1), (2, 2)]  # the failures' diagonal prefix
