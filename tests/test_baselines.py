from __future__ import annotations

import numpy as np
import pytest

from qtransformer.agent import Agent
from qtransformer.baselines import (
    BASELINES,
    BaselinePolicy,
    BaselineSettings,
    BCSettings,
    DecisionTransformerPolicy,
    default_settings,
    train_baseline,
)
from qtransformer.data.dataset import OfflineDataset
from qtransformer.discretize import ActionDiscretizer
from qtransformer.envs.gridworld import STITCH_SPEC, GridWorld, stitching_dataset
from qtransformer.evaluate import evaluate
from qtransformer.model import ModelConfig, QTransformer
from qtransformer.policy import AgentPolicy, Observes, Policy, policy_factory

pytest.importorskip("d3rlpy")

LENGTHS = [5, 7, 4, 6, 8, 5]
SUCCESS = [True, False, False, True, False, False]


def tiny_data(
    tasks: list[str] | None = None,
    successes: list[bool] = SUCCESS,
    metadata: dict | None = None,
) -> OfflineDataset:
    """Six episodes, 6-dim observations, 4-dim actions in [-1, 1]; successes end terminal."""
    rng = np.random.default_rng(0)
    T = sum(LENGTHS)
    ends = np.cumsum(LENGTHS) - 1
    rewards = np.zeros(T, np.float32)
    terminals = np.zeros(T, bool)
    timeouts = np.zeros(T, bool)
    for k, (e, ok) in enumerate(zip(ends, successes, strict=True)):
        rewards[e] = float(ok)
        terminals[e] = ok or k % 2 == 0  # failures alternate: terminal, then truncated
        timeouts[e] = not terminals[e]
    episode = np.repeat(np.arange(len(LENGTHS)), LENGTHS)
    return OfflineDataset.from_arrays(
        observations=rng.normal(size=(T, 6)),
        actions=rng.uniform(-1, 1, (T, 4)),
        rewards=rewards,
        terminals=terminals,
        timeouts=timeouts,
        action_low=-np.ones(4),
        action_high=np.ones(4),
        task_ids=None if tasks is None else episode % len(tasks),
        tasks=tasks,
        metadata=metadata,
    )


def test_one_registry_names_the_baselines_in_table_order() -> None:
    assert tuple(BASELINES) == ("bc", "bc-success", "iql", "cql", "rebrac", "dt")
    assert "iql" in BASELINES and "qt" not in BASELINES
    for name, spec in BASELINES.items():
        settings = default_settings(name)
        assert settings == spec.settings() and isinstance(settings, BaselineSettings)
        assert spec.description and "\n" not in spec.description
    assert default_settings("bc-success") == BCSettings(success_only=True)
    with pytest.raises(ValueError, match="unknown baseline 'qt'"):
        default_settings("qt")
    with pytest.raises(ValueError, match="unknown baseline 'qt'"):
        train_baseline("qt", tiny_data(), steps=1)


@pytest.mark.parametrize("name", tuple(BASELINES))
def test_every_baseline_acts_in_bounds_for_task_names(name: str) -> None:
    env = {"max_steps": 150, "action_repeat": 4}
    data = tiny_data(tasks=["reach", "push"], metadata={**env, "camera": "corner"})
    policy = train_baseline(name, data, steps=2, batch_size=8)
    assert isinstance(policy, Policy) and policy.steps == 2
    assert policy.record()["settings"]["batch_size"] == 8
    # What it reads, and the environment settings of its data (no frames: no camera).
    assert policy.observes == Observes("state", env=env)
    assert policy.record()["env"] == env
    policy.reset(3)
    obs = np.random.default_rng(1).normal(size=(3, 6))
    actions = policy.act(obs, task=["reach", "push", 1])
    assert actions.shape == (3, 4) and np.isfinite(actions).all()
    assert (actions >= -1).all() and (actions <= 1).all()
    assert policy.act(obs, task="push").shape == (3, 4)
    with pytest.raises(ValueError, match="pass task="):
        policy.act(obs)
    with pytest.raises(ValueError, match="unknown task 'lift'"):
        policy.act(obs, task="lift")
    with pytest.raises(ValueError, match="not by instruction"):
        policy.act(obs, task="push", instruction="reach the goal")


def test_bc_success_trains_on_successful_episodes_only() -> None:
    data = tiny_data()
    everything = train_baseline("bc", data, steps=1)
    successes = train_baseline("bc-success", data, steps=1)
    assert (everything.num_steps, everything.num_episodes) == (sum(LENGTHS), 6)
    kept = sum(n for n, ok in zip(LENGTHS, SUCCESS, strict=True) if ok)
    assert (successes.num_steps, successes.num_episodes) == (kept, 2)
    assert successes.num_transitions == kept  # successes end terminal: no step is lost
    assert successes.settings.success_only and not everything.settings.success_only
    with pytest.raises(ValueError, match="no successful episode"):
        train_baseline("bc-success", tiny_data(successes=[False] * 6), steps=1)


def test_bc_learns_a_linear_policy() -> None:
    rng = np.random.default_rng(0)
    T, dA = 1000, 3
    weights = rng.uniform(-0.16, 0.16, (6, dA))
    obs = rng.uniform(-1, 1, (T, 6))
    actions = 1.0 + obs @ weights  # inside [0, 2]: checks the action scaling too
    timeouts = np.zeros(T, bool)
    timeouts[49::50] = True
    data = OfflineDataset.from_arrays(
        obs, actions, np.zeros(T), np.zeros(T, bool), timeouts, np.zeros(dA), 2 * np.ones(dA)
    )
    test_obs = rng.uniform(-1, 1, (200, 6))
    target = 1.0 + test_obs @ weights
    error = np.abs(train_baseline("bc", data, steps=300, seed=1).act(test_obs) - target).mean()
    constant_error = np.abs(target - 1.0).mean()  # predicting the mean action
    assert constant_error > 0.1
    assert error < 0.03 and error < 0.2 * constant_error


def test_decision_transformer_keeps_a_history_per_environment() -> None:
    data = tiny_data(tasks=["reach", "push"])
    policy = train_baseline("dt", data, steps=2, batch_size=8)
    assert isinstance(policy, DecisionTransformerPolicy)
    assert policy.target_return == 1.0 and policy.settings.context_size == 20
    rng = np.random.default_rng(2)
    frames = [rng.normal(size=(2, 6)) for _ in range(3)]
    policy.reset(2)
    first = policy.act(frames[0], task=["reach", "push"])
    later = [policy.act(f, task=["reach", "push"]) for f in frames[1:]]
    assert all(a.shape == (2, 4) for a in later)
    with pytest.raises(ValueError, match="call reset"):
        policy.act(frames[0][:1], task="reach")
    policy.reset(2, mask=np.array([False, True]))  # only env 1 starts over
    again = policy.act(frames[0], task=["reach", "push"])
    np.testing.assert_allclose(again[1], first[1], rtol=1e-5, atol=1e-6)
    policy.reset(2)
    np.testing.assert_allclose(policy.act(frames[0], task=["reach", "push"]), first, atol=1e-6)


@pytest.mark.parametrize("name", ["bc-success", "dt"])
def test_baseline_runs_through_evaluate_on_the_grid(name: str) -> None:
    data = OfflineDataset.from_arrays(
        **stitching_dataset(), action_low=-np.ones(2), action_high=np.ones(2)
    )
    policy = train_baseline(name, data, steps=20, batch_size=32)
    envs = [GridWorld(STITCH_SPEC) for _ in range(2)]
    result = evaluate(policy_factory(policy), envs, episodes=3)
    assert result.episodes == 3 and 0.0 <= result.success_rate <= 1.0
    assert isinstance(policy, BaselinePolicy)


def test_agent_policy_runs_through_the_same_evaluation() -> None:
    model = QTransformer(
        ModelConfig(obs_dim=25, action_dim=2, n_bins=3, window=2, d_model=16, n_layers=1, n_heads=2)
    )
    agent = Agent(model, ActionDiscretizer(-np.ones(2), np.ones(2), 3), q_max=1.0)
    policy = AgentPolicy(agent)
    assert isinstance(policy, Policy)
    result = evaluate(policy_factory(policy), [GridWorld(STITCH_SPEC) for _ in range(2)], 2)
    assert result.episodes == 2
