"""Evaluation reproduces the environment settings a policy's training data was collected in."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from qtransformer.evaluate import EnvSettings, env_settings, evaluate_metaworld
from qtransformer.policy import Observes


class Random:
    """Uniform actions, whatever it observes; counts its decisions."""

    def __init__(self, observes: Observes) -> None:
        self._observes = observes
        self.seen: list[object] = []

    @property
    def observes(self) -> Observes:
        return self._observes

    def reset(self, num_envs: int) -> None:
        self.rng = np.random.default_rng(0)

    def act(self, observations, task=None, instruction=None) -> np.ndarray:
        self.seen.append(observations)
        n = len(observations["state"] if isinstance(observations, dict) else observations)
        return self.rng.uniform(-1, 1, (n, 4))


def test_settings_come_from_the_call_then_the_record_then_the_fallback(caplog) -> None:
    recorded = Observes(env={"max_steps": 120, "action_repeat": 4})
    assert env_settings(recorded) == EnvSettings(120, 4)
    assert env_settings(recorded, max_steps=40) == EnvSettings(40, 4)
    assert env_settings(recorded, action_repeat=1) == EnvSettings(120, 1)
    with caplog.at_level(logging.WARNING, logger="qtransformer.evaluate"):
        assert env_settings(recorded) == EnvSettings(120, 4)
        assert not caplog.records
        assert env_settings(Observes(), max_steps=50) == EnvSettings(50, 1)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "the policy records no action_repeat of its training data"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qtransformer.evaluate"):
        assert env_settings(Observes()) == EnvSettings(200, 1)
    assert len(caplog.records) == 2 and "max_steps=200" in caplog.records[0].getMessage()


def test_image_settings_come_from_the_policy_or_its_record() -> None:
    own = Observes("image", image_size=32, camera="topview", env={"max_steps": 8})
    assert env_settings(own, action_repeat=1) == EnvSettings(8, 1, 32, "topview")
    assert env_settings(own, action_repeat=1, image_size=64, camera="corner") == EnvSettings(
        8, 1, 64, "corner"
    )
    record = Observes("both", env={"max_steps": 8, "action_repeat": 2, "image_size": 16})
    assert env_settings(record) == EnvSettings(8, 2, 16, "corner")
    with pytest.raises(ValueError, match="pass image_size"):
        env_settings(Observes("image"), 8, 1)


def test_evaluation_runs_in_the_recorded_time_limit_and_action_repeat() -> None:
    # 12 env steps at 4 per decision: every failed episode is 3 decisions long.
    policy = Random(Observes(env={"max_steps": 12, "action_repeat": 4}))
    r = evaluate_metaworld(policy, ["push-v3"], episodes=2, num_envs=2)["push-v3"]
    assert (r.episodes, r.success_rate, r.mean_length) == (2, 0.0, 3.0)
    # Told otherwise, it does as told.
    r = evaluate_metaworld(policy, ["push-v3"], 2, 2, max_steps=12, action_repeat=3)["push-v3"]
    assert r.mean_length == 4.0


def test_an_image_policy_gets_frames_of_its_recorded_size() -> None:
    policy = Random(Observes("both", env={"max_steps": 4, "action_repeat": 2, "image_size": 16}))
    evaluate_metaworld(policy, ["reach-v3"], episodes=1, num_envs=1)
    assert policy.seen[0]["image"].shape == (1, 16, 16, 3)
