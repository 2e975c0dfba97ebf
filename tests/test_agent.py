from __future__ import annotations

import numpy as np
import pytest

import qtransformer as qt

CFG = qt.TrainConfig(steps=3, batch_size=8, n_bins=7, d_model=16, n_layers=1, n_heads=2, window=3)


@pytest.fixture
def agent(tiny_arrays):
    return qt.train(qt.OfflineDataset.from_arrays(**tiny_arrays), CFG)


def test_act_shapes_and_bounds(agent, tiny_arrays) -> None:
    obs = tiny_arrays["observations"]
    a = agent.act(obs[:5])
    assert a.shape == (5, 3) and a.dtype == np.float32
    assert np.all(a >= agent.discretizer.low) and np.all(a <= agent.discretizer.high)
    # A single frame is a window filled with it, as at an episode start.
    np.testing.assert_array_equal(agent.act(np.repeat(obs[:5, None], 3, axis=1)), a)
    with pytest.raises(ValueError, match=r"\(B, 6\) or \(B, 3, 6\)"):
        agent.act(obs[:5, :4])


def test_act_equals_argmax_of_q_values(agent, tiny_arrays) -> None:
    obs = tiny_arrays["observations"][:6]
    bins, q_chosen = agent.act_bins(obs)
    q = agent.q_values(obs, bins)
    np.testing.assert_array_equal(q.argmax(-1), bins)
    np.testing.assert_allclose(
        np.take_along_axis(q, bins[..., None], -1)[..., 0], q_chosen, atol=1e-6
    )
    np.testing.assert_allclose(agent.act(obs), agent.discretizer.to_continuous(bins))


def test_q_values_validate_bins(agent, tiny_arrays) -> None:
    with pytest.raises(ValueError, match=r"bins must lie in \[0, 6\]"):
        agent.q_values(tiny_arrays["observations"][:1], np.array([[0, 7, 0]]))
    with pytest.raises(ValueError, match=r"bins must have shape \(B, 3\)"):
        agent.q_values(tiny_arrays["observations"][:1], np.array([[0, 1]]))


def test_save_and_load_give_the_same_policy(agent, tiny_arrays, tmp_path) -> None:
    agent.save(tmp_path / "agent")
    back = qt.load_agent(tmp_path / "agent")
    obs = tiny_arrays["observations"][:8]
    np.testing.assert_array_equal(back.act(obs), agent.act(obs))
    assert back.train_config["n_bins"] == 7 and back.q_max == agent.q_max
    with pytest.raises(FileNotFoundError, match="not a saved agent"):
        qt.load_agent(tmp_path)


def test_history_keeps_each_environments_window(agent, tiny_arrays) -> None:
    obs = tiny_arrays["observations"]
    h = agent.history(num_envs=2)
    h.act(obs[0:2])
    h.act(obs[2:4])
    h.reset(np.array([False, True]))  # env 1 starts a new episode
    actions = h.act(obs[4:6])
    expected = np.stack([obs[[0, 2, 4]], obs[[5, 5, 5]]])
    np.testing.assert_array_equal(h.frames, expected)
    np.testing.assert_array_equal(actions, agent.act(expected))


def test_multi_task_agent_takes_task_names_and_keeps_them(tiny_arrays, tmp_path) -> None:
    ids = np.repeat([0, 1], [17, 18]).astype(np.int32)
    data = qt.OfflineDataset.from_arrays(
        **tiny_arrays, task_ids=ids, tasks=["a-v3", "b-v3"], instructions=["do a", "do b"]
    )
    agent = qt.train(data, qt.TrainConfig(**{**CFG.__dict__, "window": 1, "steps": 5}))
    assert agent.config.task_dim == 2 and agent.tasks == ["a-v3", "b-v3"]
    obs = tiny_arrays["observations"][:4]
    zeros = np.zeros((4, 3), int)
    qa, qb = agent.q_values(obs, zeros, task="a-v3"), agent.q_values(obs, zeros, task=1)
    assert not np.allclose(qa, qb)
    np.testing.assert_array_equal(agent.q_values(obs, zeros, task=["a-v3", 1, 0, "b-v3"])[1], qb[1])
    with pytest.raises(ValueError, match=r"trained on tasks \['a-v3', 'b-v3'\]: pass task="):
        agent.act(obs)
    with pytest.raises(ValueError, match="unknown task 'c-v3'"):
        agent.act(obs, task="c-v3")
    agent.save(tmp_path / "mt")
    back = qt.load_agent(tmp_path / "mt")
    assert back.instructions == ["do a", "do b"]
    np.testing.assert_array_equal(back.act(obs, task="b-v3"), agent.act(obs, task="b-v3"))
    single = qt.train(
        data,
        qt.TrainConfig(**{**CFG.__dict__, "window": 1, "steps": 1, "task_conditioning": False}),
    )
    assert single.config.task_dim == 0 and single.act(obs).shape == (4, 3)
