"""Acting at Q-weighted bin values (``act_temperature``) against a numpy reference, and how
the setting is saved, loaded and refused."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from factories import TINY_TRAIN, make_tiny_arrays

import qtransformer as qt
from qtransformer.agent import load_agent


@pytest.fixture(scope="module")
def trained():
    data = qt.OfflineDataset.from_arrays(**make_tiny_arrays())
    return qt.train(data, qt.TrainConfig(**TINY_TRAIN)), data


def reference_positions(agent: qt.Agent, obs: np.ndarray, temperature: float) -> np.ndarray:
    """Per dimension, sum_b softmax(Q_b / T) b with Q read teacher-forced at the greedy
    prefix, in float64 numpy."""
    bins, _ = agent.act_bins(obs)
    with torch.no_grad():
        q = agent.model(torch.as_tensor(obs)[:, None], torch.as_tensor(bins)).amin(dim=1)
    z = q.double().numpy() / temperature  # (B, dA, N)
    w = np.exp(z - z.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return (w * np.arange(z.shape[-1])).sum(-1)


@torch.no_grad()
def test_weighted_positions_match_numpy(trained) -> None:
    agent, data = trained
    obs = np.asarray(data.observations[:16])
    o = torch.as_tensor(obs)[:, None]
    greedy_bins, _ = agent.model.greedy(o)
    for t in (0.02, 0.3, 5.0):
        bins, _, position = agent.model.decode(o, temperature=t)
        assert torch.equal(bins, greedy_bins)  # the prefix stays the greedy one
        np.testing.assert_allclose(position.numpy(), reference_positions(agent, obs, t), atol=1e-5)
    _, _, at_zero = agent.model.decode(o)
    assert torch.equal(at_zero, greedy_bins.float())
    # Very hot: the uniform mean of the indices; the reference would fail if the weights were
    # not normalized per dimension.
    _, _, hot = agent.model.decode(o, temperature=1e4)
    np.testing.assert_allclose(hot.numpy(), (agent.config.n_bins - 1) / 2, atol=1e-3)


def test_act_maps_positions_to_bin_values(trained) -> None:
    agent, data = trained
    obs = np.asarray(data.observations[:16])
    disc = agent.discretizer
    agent.act_temperature = 0.0
    greedy = agent.act(obs)
    np.testing.assert_array_equal(greedy, disc.to_continuous(agent.act_bins(obs)[0]))
    try:
        agent.act_temperature = 0.1
        pos = reference_positions(agent, obs, 0.1)
        want = disc.low + (pos + 0.5) * disc.bin_width  # bin centres, affine in the index
        np.testing.assert_allclose(agent.act(obs), want, atol=1e-5)
        assert not np.allclose(agent.act(obs), greedy)
        # act_bins stays the greedy bins whatever the temperature.
        np.testing.assert_array_equal(agent.act_bins(obs)[0], disc.to_bins(greedy))
    finally:
        agent.act_temperature = 0.0


def test_saved_agents_keep_their_temperature(trained, tmp_path) -> None:
    agent, data = trained
    agent.act_temperature = 0.05
    try:
        agent.save(tmp_path / "a")
    finally:
        agent.act_temperature = 0.0
    loaded = load_agent(tmp_path / "a")
    assert loaded.act_temperature == 0.05
    obs = np.asarray(data.observations[:8])
    agent.act_temperature = 0.05
    try:
        np.testing.assert_array_equal(loaded.act(obs), agent.act(obs))
    finally:
        agent.act_temperature = 0.0

    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    # An agent saved before the setting existed acts greedily, as it did.
    old = {k: v for k, v in meta.items() if k != "act_temperature"}
    old["train"] = {k: v for k, v in meta["train"].items() if k != "act_temperature"}
    (tmp_path / "a" / "config.json").write_text(json.dumps(old))
    assert load_agent(tmp_path / "a").act_temperature == 0.0
    # Without the top-level key, the training config's value.
    old["train"]["act_temperature"] = 0.2
    (tmp_path / "a" / "config.json").write_text(json.dumps(old))
    assert load_agent(tmp_path / "a").act_temperature == 0.2
    old["act_temperature"] = -1
    (tmp_path / "a" / "config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"config\.json has act_temperature = -1"):
        load_agent(tmp_path / "a")


def test_training_config_sets_it_and_refuses_bad_values() -> None:
    data = qt.OfflineDataset.from_arrays(**make_tiny_arrays())
    agent = qt.train(data, qt.TrainConfig(**{**TINY_TRAIN, "act_temperature": 0.05}))
    assert agent.act_temperature == 0.05
    with pytest.raises(ValueError, match="act_temperature"):
        qt.TrainConfig(act_temperature=-0.1)
    with pytest.raises(ValueError, match="act_temperature"):
        agent.act_temperature = float("nan")


def test_behaviour_cloning_agents_take_their_most_likely_bin() -> None:
    data = qt.OfflineDataset.from_arrays(**make_tiny_arrays())
    cfg = replace(qt.TrainConfig(**TINY_TRAIN), loss="bc", q_heads=1, act_temperature=0.5)
    agent = qt.train(data, cfg)
    obs = np.asarray(data.observations[:8])
    bins, _ = agent.act_bins(obs)
    np.testing.assert_array_equal(agent.act(obs), agent.discretizer.to_continuous(bins))


def test_cells_that_acted_greedily_run_again_when_the_profile_acts_otherwise() -> None:
    """A benchmark cell recorded before ``act_temperature`` existed acted greedily: a profile
    that acts at another temperature must not take its result as current."""
    from dataclasses import asdict

    from qtransformer.bench import PROFILES
    from qtransformer.bench.runner import changed_settings, qt_config
    from qtransformer.bench.studies import Cell

    cell = Cell("qt", "noisy", 0)
    now = replace(PROFILES["cpu"], qt=replace(PROFILES["cpu"].qt, act_temperature=0.05))
    current = json.loads(json.dumps(asdict(qt_config(cell, now))))
    assert changed_settings({"config": current}, cell, now) == []
    before = {k: v for k, v in current.items() if k != "act_temperature"}
    assert changed_settings({"config": before}, cell, now) == ["act_temperature"]
    greedy = replace(now, qt=replace(now.qt, act_temperature=0.0))
    assert changed_settings({"config": before}, cell, greedy) == []
    # Other fields a record lacks count as their defaults, as before.
    no_dropout = {k: v for k, v in current.items() if k != "dropout"}
    assert changed_settings({"config": no_dropout}, cell, now) == []
