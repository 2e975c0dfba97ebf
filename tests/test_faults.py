"""Faults are loud: divergence, impossible settings, non-finite inputs and weights."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from factories import TINY_TRAIN
from safetensors.torch import load_file, save_file

import qtransformer as qt
from qtransformer.agent import load_agent
from qtransformer.trainer import TrainingDiverged

CFG = TINY_TRAIN


def data_of(arrays) -> qt.OfflineDataset:
    return qt.OfflineDataset.from_arrays(**arrays, action_low=-np.ones(3), action_high=np.ones(3))


def finite_weights(directory) -> bool:
    weights = load_file(str(directory / "model.safetensors"))
    return all(bool(torch.isfinite(t).all()) for t in weights.values())


def test_divergence_raises_and_saves_no_nan_agent(tiny_arrays, tmp_path) -> None:
    cfg = qt.TrainConfig(**{**CFG, "lr": 1e6, "grad_clip": 0.0, "steps": 40})
    with pytest.raises(TrainingDiverged, match=r"at step \d+.*--lr, --grad-clip") as info:
        qt.train(data_of(tiny_arrays), cfg, out_dir=tmp_path)
    assert isinstance(info.value, RuntimeError)
    for name in ("agent", "checkpoint"):
        d = tmp_path / name
        assert not (d / "model.safetensors").exists() or finite_weights(d), name
    # A config is written only beside saved weights: none describes this run's non-agent.
    assert not (tmp_path / "train_config.json").exists()


def test_divergence_names_the_first_step_with_a_non_finite_loss(tiny_arrays) -> None:
    # Checked only at log and save steps (no host sync per step), yet the step named is the
    # first one whose loss was NaN or inf, as every step's metrics show it.
    losses: list[float] = []
    cfg = qt.TrainConfig(**{**CFG, "lr": 1e6, "grad_clip": 0.0, "steps": 40, "log_every": 1000})
    with pytest.raises(TrainingDiverged) as info:
        qt.train(
            data_of(tiny_arrays),
            cfg,
            callback=lambda step, metrics, learner: losses.append(metrics["train/loss"]),
        )
    first = next(i for i, v in enumerate(losses, 1) if not np.isfinite(v))
    assert f"training diverged at step {first}: loss = " in str(info.value)
    assert "(noticed at step 40)" in str(info.value)


def test_divergence_keeps_the_last_good_checkpoint(tiny_arrays, tmp_path) -> None:
    # The checkpoint of step 5 is good; the weights break at step 6 and the next save (step
    # 10) must refuse them, keeping step 5's checkpoint and writing no agent.
    def poison(step: int, metrics: dict, learner) -> None:
        if step == 6:
            with torch.no_grad():
                next(learner.model.parameters()).view(-1)[0] = float("nan")

    cfg = qt.TrainConfig(**{**CFG, "steps": 20, "checkpoint_every": 5})
    with pytest.raises(
        TrainingDiverged, match=r"diverged at step 7: loss = nan \(noticed at step 10\)"
    ):
        qt.train(data_of(tiny_arrays), cfg, out_dir=tmp_path, callback=poison)
    assert finite_weights(tmp_path / "checkpoint")
    assert not (tmp_path / "agent").exists()
    assert load_checkpoint_step(tmp_path / "checkpoint") == 5
    # The config on disk is that of the weights on disk.
    written = json.loads((tmp_path / "train_config.json").read_text())
    assert written == json.loads((tmp_path / "checkpoint" / "config.json").read_text())["train"]


def load_checkpoint_step(path) -> int:
    return int(torch.load(path / "trainer_state.pt", weights_only=True)["step"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("q_max", float("nan")),
        ("q_max", float("inf")),
        ("q_min", float("-inf")),
        ("gamma", 1.5),
        ("gamma", float("nan")),
        ("lr", 0.0),
        ("lr", float("inf")),
        ("grad_clip", -1.0),
        ("grad_clip", float("nan")),
    ],
)
def test_config_refuses_impossible_values(field, value) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must"):
        qt.TrainConfig(**{field: value})


def test_config_refuses_an_empty_value_range() -> None:
    with pytest.raises(ValueError, match=r"^q_min must be below q_max .* q_min=0.0, q_max=0.0"):
        qt.TrainConfig(q_min=0.0, q_max=0.0)


def test_config_accepts_the_edges() -> None:
    qt.TrainConfig(gamma=1.0, grad_clip=0.0, q_max=5.0)
    qt.TrainConfig(gamma=0.0)


@pytest.mark.parametrize(("gamma", "reward"), [(1.0, 0.5), (0.98, 1e37)])
def test_default_q_max_refuses_an_infinite_bound(tiny_arrays, gamma, reward) -> None:
    arrays = dict(tiny_arrays)
    arrays["rewards"] = np.full_like(arrays["rewards"], reward)  # dense rewards
    with pytest.raises(ValueError, match=r"q_max.*gamma.*--q-max"):
        data_of(arrays).default_q_max(gamma)


def test_gamma_one_with_sparse_rewards_keeps_q_max_one(tiny_arrays) -> None:
    assert data_of(tiny_arrays).default_q_max(1.0) == 1.0


@pytest.fixture
def agent(tiny_arrays):
    return qt.train(data_of(tiny_arrays), qt.TrainConfig(**{**CFG, "steps": 2}))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_act_and_q_values_refuse_non_finite_observations(agent, tiny_arrays, bad) -> None:
    obs = tiny_arrays["observations"][:4].copy()
    obs[2, 1] = bad
    with pytest.raises(ValueError, match="observations contain NaN or inf at row 2"):
        agent.act(obs)
    with pytest.raises(ValueError, match="observations contain NaN or inf at row 2"):
        agent.q_values(obs, np.zeros((4, 3), np.int64))
    assert np.isfinite(agent.act(tiny_arrays["observations"][:4])).all()


def test_load_agent_refuses_nan_weights(agent, tmp_path) -> None:
    agent.save(tmp_path / "a")
    weights_file = tmp_path / "a" / "model.safetensors"
    weights = load_file(str(weights_file))
    name = next(iter(weights))
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, str(weights_file))
    # As from a tool that records no checksum: the weights themselves are checked.
    cfg_file = tmp_path / "a" / "config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "model_sha256": None}))
    with pytest.raises(ValueError, match=r"model\.safetensors holds NaN or inf weights") as info:
        load_agent(tmp_path / "a")
    assert str(weights_file) in str(info.value)


def test_load_agent_refuses_non_finite_q_max(agent, tmp_path) -> None:
    agent.save(tmp_path / "a")
    cfg_file = tmp_path / "a" / "config.json"
    meta = json.loads(cfg_file.read_text())
    meta["q_max"] = float("inf")
    cfg_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config\.json has q_max = inf"):
        load_agent(tmp_path / "a")
    meta["q_max"], meta["q_min"] = 1.0, 2.0
    cfg_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config\.json has q_min = 2.0 and q_max = 1.0"):
        load_agent(tmp_path / "a")


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("batch_size", 0, ">= 1"),
        ("window", 0, ">= 1"),
        ("q_heads", 0, ">= 1"),
        ("log_every", 0, ">= 1"),
        ("n_bins", 1, ">= 2"),
        ("n_step", 1.5, ">= 1"),
        ("steps", -1, ">= 0"),
        ("dropout", 1.0, "[0, 1)"),
        ("target_update_rate", 0.0, "(0, 1]"),
        ("conservative_weight", float("nan"), "[0.0, "),
    ],
)
def test_config_refuses_a_value_out_of_range_naming_field_and_range(field, value, allowed) -> None:
    with pytest.raises(ValueError, match=re.escape(field) + ".*" + re.escape(allowed)):
        qt.TrainConfig(**{field: value})


def test_config_refuses_a_width_the_heads_cannot_split() -> None:
    with pytest.raises(ValueError, match="d_model must be divisible by n_heads"):
        qt.TrainConfig(d_model=30, n_heads=4)
    assert qt.TrainConfig(n_bins=np.int64(8)).n_bins == 8  # numpy integers are integers


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "reach-v3"}, r"unknown task 'reach-v3'; known tasks: \['task'\]"),
        ({"task": 3}, "task id 3 out of range for 1 tasks"),
        ({"task": 0.5}, r"task must be a task name or an integer id, got 0\.5"),
        ({"task": True}, "task must be a task name or an integer id, got True"),
        ({"instruction": "open the drawer"}, r"unknown instructions \['open the drawer'\]"),
    ],
)
def test_single_task_agent_refuses_a_task_it_does_not_know(agent, tiny_arrays, kwargs, message):
    obs = tiny_arrays["observations"][:2]
    with pytest.raises(ValueError, match=message):
        agent.act(obs, **kwargs)
    assert agent.act(obs, task="task").shape == (2, 3)  # its own task is fine
    assert agent.act(obs, instruction="task").shape == (2, 3)


def test_multi_task_agent_refuses_a_fractional_task_id(tiny_arrays) -> None:
    ids = np.arange(len(tiny_arrays["rewards"])) % 2
    data = qt.OfflineDataset.from_arrays(
        **tiny_arrays,
        task_ids=ids,
        tasks=["a", "b"],
        action_low=-np.ones(3),
        action_high=np.ones(3),
    )
    agent = qt.train(data, qt.TrainConfig(**{**CFG, "steps": 2}))
    obs = tiny_arrays["observations"][:2]
    with pytest.raises(ValueError, match=r"got 0\.5 \(float\)"):
        agent.act(obs, task=0.5)
    with pytest.raises(ValueError, match=r"got 1\.0 \(float\)"):
        agent.act(obs, task=[0, 1.0])
    np.testing.assert_array_equal(agent.act(obs, task=[0, 1]), agent.act(obs, task=["a", "b"]))


@pytest.mark.parametrize(
    "obs",
    [np.array([["a"] * 6] * 2), np.array([[object()] * 6] * 2, dtype=object), [[1.0, 2.0], [3.0]]],
)
def test_act_refuses_observations_that_are_not_numbers(agent, obs) -> None:
    with pytest.raises(ValueError, match="observations must be"):
        agent.act(obs)
