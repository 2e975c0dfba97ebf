"""benchmarks/finish.py's approach analysis against hand-computed episodes."""

from __future__ import annotations

import numpy as np
import pytest
from factories import TINY_TRAIN, load_benchmark, make_tiny_arrays


def episode(hand: list, obj: list, actions: list, success: bool = True) -> dict:
    """An episode as finish.py's rollouts hold it: 39-dim observations, the hand's position
    in 0:3 and the object's in 4:7 (the other entries count up, so they are never zero)."""
    obs = np.arange(len(hand) * 39, dtype=float).reshape(len(hand), 39)
    obs[:, 0:3], obs[:, 4:7] = hand, obj
    return {"success": success, "observations": obs, "actions": actions}


def test_approach_measures_an_l_shaped_and_a_straight_approach() -> None:
    finish = load_benchmark("finish")
    still, moved = [0.5, 0.5, 0.0], [0.6, 0.5, 0.0]
    # Over, then down: two unit legs (path 2, displacement sqrt 2), rising 0.1 on the way;
    # the object first moves after the third decision, the episode ends two decisions later.
    l_shape = episode(
        hand=[[0, 0, 0], [1, 0, 0.1], [1, 0, 0], [1, 0, -1], [1, 0, -1], [1, 0, -1]],
        obj=[still, still, still, moved, moved, moved],
        actions=[[1, 0, 0.5, 0], [0, 0, -0.5, 0.0], [0, 0, -1, 0.6], [1, 0, 0, 1], [1, 0, 0, 1]],
    )
    straight = episode(
        hand=[[0, 0, 0], [0.5, 0, -0.5], [1, 0, -1], [1, 0, -1]],
        obj=[still, still, moved, moved],
        actions=[[1, 0, -1, 0.4], [1, 0, -1, 0.4], [1, 0, 0, 1]],
    )
    failed = episode(
        hand=[[0, 0, 0], [9, 9, 9]], obj=[still, moved], actions=[[0] * 4], success=False
    )
    never_moved = episode(hand=[[0, 0, 0], [1, 0, 0]], obj=[still, still], actions=[[0] * 4])

    one = finish.approach([l_shape, failed, never_moved])
    assert one["episodes"] == 1  # failures and episodes whose object never moved are left out
    assert one["approach"] == 3 and one["after"] == 2
    path = np.hypot(1, 0.1) + 0.1 + 1  # over 1 while rising 0.1, down 0.1, down 1
    assert one["path_ratio"] == pytest.approx(path / np.sqrt(2))
    assert one["rise"] == pytest.approx(0.1)
    assert one["mean_z_command"] == pytest.approx((0.5 - 0.5 - 1) / 3)
    assert one["grip_closes"] == 2

    both = finish.approach([l_shape, straight])
    assert both["episodes"] == 2 and both["approach"] == 2.5 and both["after"] == 1.5
    assert both["path_ratio"] == pytest.approx((path / np.sqrt(2) + 1) / 2)
    assert both["rise"] == pytest.approx(0.05)
    assert both["grip_closes"] == pytest.approx(1.0)  # 2 and 0
    assert finish.approach([failed]) == {}


def test_approach_states_keep_successes_before_the_object_moves() -> None:
    finish = load_benchmark("finish")
    still, moved = [0.5, 0.5, 0.0], [0.6, 0.5, 0.0]
    e = episode([[0, 0, 0]] * 4, [still, still, moved, moved], [[k, 0, 0, 0] for k in range(3)])
    failed = {**e, "success": False}
    states, actions = finish.approach_states([e, failed])
    np.testing.assert_array_equal(states, e["observations"][:2])
    np.testing.assert_array_equal(actions[:, 0], [0, 1])


def test_corner_values_read_the_agents_own_choice_back() -> None:
    import qtransformer as qt

    finish = load_benchmark("finish")
    arrays = make_tiny_arrays()
    rng = np.random.default_rng(1)
    arrays["observations"] = rng.normal(size=(len(arrays["rewards"]), 39)).astype(np.float32)
    arrays["actions"] = rng.uniform(-1, 1, (len(arrays["rewards"]), 4)).astype(np.float32)
    agent = qt.train(qt.OfflineDataset.from_arrays(**arrays), qt.TrainConfig(**TINY_TRAIN))
    obs = arrays["observations"][:10]
    bins, q = agent.act_bins(obs)
    own = agent.discretizer.to_continuous(bins)
    # The agent's own greedy actions as "IQL's": their Q is the greedy Q, all within 0.001.
    c = finish.corner_values(agent, obs, own, "push-v3")
    assert c["states"] == 10 and c["iql_at_least_own"] == 1.0
    assert c["q_iql"] == pytest.approx(c["q_own"], abs=1e-5)
    assert c["q_own"] == pytest.approx(float(q[:, -1].mean()), abs=1e-6)
    # bin_smoothing's decoder with a one-bin kernel is the greedy decoder.
    greedy = load_benchmark("bin_smoothing").smoothed_policy(agent, [1.0])
    np.testing.assert_array_equal(np.stack([greedy(o) for o in obs]), own)
    # Random actions through the same bins: their Q differs from the greedy chain's.
    other = finish.corner_values(agent, obs, rng.uniform(-1, 1, (10, 4)), "push-v3")
    assert other["q_iql"] != pytest.approx(other["q_own"], abs=1e-5)


def test_bin_smoothing_averages_neighbours_with_edge_bins_repeated() -> None:
    smoothing = load_benchmark("bin_smoothing")
    q = np.array([0.0, 1.0, 0.0, 0.0, 4.0])
    np.testing.assert_allclose(smoothing.smooth(q, [1.0]), q)
    # [1, 2, 1] / 4 with the first and last bins repeated beyond the edges.
    expected = [(0 + 0 + 1) / 4, (0 + 2 + 0) / 4, (1 + 0 + 0) / 4, (0 + 0 + 4) / 4, (0 + 8 + 4) / 4]
    np.testing.assert_allclose(smoothing.smooth(q, [1, 2, 1]), expected)
    # An isolated high bin loses to a broad plateau once smoothed.
    spike = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.8, 0.8, 0.8])
    assert np.argmax(spike) == 2 and np.argmax(smoothing.smooth(spike, [1, 2, 1])) == 6
