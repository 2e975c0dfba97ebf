"""The one policy interface: Observes, the AgentPolicy adapter, and the per-wave factory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import qtransformer as qt
from qtransformer.agent import Agent
from qtransformer.discretize import ActionDiscretizer
from qtransformer.model import ModelConfig, QTransformer
from qtransformer.policy import AgentPolicy, Observes, Policy, policy_factory


def make_agent(**model: object) -> Agent:
    cfg = ModelConfig(obs_dim=6, action_dim=2, n_bins=3, d_model=16, n_layers=1, n_heads=2)
    return Agent(
        QTransformer(dataclasses.replace(cfg, **model)),
        ActionDiscretizer(-np.ones(2), np.ones(2), 3),
        q_max=1.0,
        env={"max_steps": 120, "action_repeat": 4},
    )


def test_observes_is_frozen_validated_and_copies_the_record() -> None:
    env = {"max_steps": 80}
    o = Observes("both", image_size=32, camera="corner", env=env)
    env["max_steps"] = 1
    assert o.env == {"max_steps": 80} and o.recorded("max_steps") == 80
    assert o.recorded("action_repeat") is None and o.images
    assert not Observes().images and Observes().env == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.camera = "topview"  # type: ignore[misc]
    with pytest.raises(ValueError, match="state, image or both"):
        Observes("pixels")  # type: ignore[arg-type]


def test_agent_policy_observes_what_the_agent_was_trained_on() -> None:
    state = AgentPolicy(make_agent())
    assert isinstance(state, Policy)
    assert state.observes == Observes("state", env={"max_steps": 120, "action_repeat": 4})
    image = AgentPolicy(make_agent(observation="both", image_shape=(16, 16, 3)))
    image.agent.camera = "topview"
    o = image.observes
    assert (o.observation, o.image_size, o.camera, o.reads_instructions) == (
        "both",
        16,
        "topview",
        False,
    )
    assert o.env["action_repeat"] == 4


def test_agent_policy_keeps_the_recorded_settings_through_save_and_load(
    tiny_arrays, tmp_path
) -> None:
    data = qt.OfflineDataset.from_arrays(
        **tiny_arrays, metadata={"max_steps": 40, "action_repeat": 4, "camera": "corner"}
    )
    cfg = qt.TrainConfig(steps=1, batch_size=8, n_bins=5, d_model=16, n_layers=1, n_heads=2)
    qt.train(data, cfg, out_dir=tmp_path)
    policy = AgentPolicy(qt.load_agent(tmp_path / "agent"))
    # State data: the camera of the recipe is not a setting of the data.
    assert policy.observes.env == {"max_steps": 40, "action_repeat": 4}


class Recorder:
    """A policy that notes its resets and the conditions it is called with."""

    observes = Observes()

    def __init__(self) -> None:
        self.resets: list[int] = []
        self.calls: list[tuple[object, object]] = []

    def reset(self, num_envs: int) -> None:
        self.resets.append(num_envs)

    def act(self, observations, task=None, instruction=None) -> np.ndarray:
        self.calls.append((task, instruction))
        return np.zeros((len(observations), 2))


def test_policy_factory_resets_per_wave_and_passes_the_condition() -> None:
    policy = Recorder()
    assert isinstance(policy, Policy)
    make = policy_factory(policy, task="push")
    act = make(3)
    assert act(np.zeros((3, 6))).shape == (3, 2)
    make(2)
    assert policy.resets == [3, 2] and policy.calls == [("push", None)]
    policy_factory(policy, instruction="push the puck")(1)(np.zeros((1, 6)))
    assert policy.calls[-1] == (None, "push the puck")
