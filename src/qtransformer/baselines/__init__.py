"""Offline RL baselines behind one policy interface shared with Q-Transformer.

Every policy here has ``act(observations, task=None) -> actions`` and ``reset(num_envs)``, so
the same evaluation code runs a Q-Transformer :class:`~qtransformer.agent.Agent` (through
:class:`AgentPolicy`) and the d3rlpy baselines of :func:`train_baseline`::

    policy = train_baseline("iql", data, steps=100_000)
    result = evaluate(policy_factory(policy, task="reach"), envs, episodes=100)

d3rlpy itself is imported only when a baseline is trained.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from qtransformer.agent import Agent, InstructionArg, ObservationHistory, Observations, TaskArg
from qtransformer.baselines.d3rlpy_algos import (
    BASELINES,
    BaselinePolicy,
    BaselineSettings,
    BCSettings,
    CQLSettings,
    DecisionTransformerPolicy,
    DTSettings,
    IQLSettings,
    default_settings,
    to_mdp_dataset,
    train_baseline,
)

__all__ = [
    "BASELINES",
    "AgentPolicy",
    "BCSettings",
    "BaselinePolicy",
    "BaselineSettings",
    "CQLSettings",
    "DTSettings",
    "DecisionTransformerPolicy",
    "IQLSettings",
    "Policy",
    "default_settings",
    "policy_factory",
    "to_mdp_dataset",
    "train_baseline",
]


@runtime_checkable
class Policy(Protocol):
    """A batched policy over ``num_envs`` environments stepped together.

    Stateless policies ignore :meth:`reset`. Stateful ones (Decision Transformer, a
    Q-Transformer with an observation window) keep a history per environment: call
    ``reset(num_envs)`` when a wave of episodes starts, then ``act`` exactly once per
    environment step with the observations of all ``num_envs`` environments, in a fixed order.

    Evaluation also reads three optional attributes: ``observation`` (``"state"``,
    ``"image"`` or ``"both"``: the environments then render frames and ``act`` gets dicts
    ``{"state", "image"}``), ``image_size`` and ``camera`` (how to render them), and
    ``reads_instructions`` (``act`` then takes ``instruction=`` instead of ``task``).
    """

    def act(self, observations: np.ndarray, task: TaskArg = None) -> np.ndarray:
        """Actions ``(B, dA)`` for observations ``(B, obs_dim)``.

        Args:
            observations: One observation per row (per environment for stateful policies).
            task: For multi-task policies: a task name or id, or one per row.
        """
        ...

    def reset(self, num_envs: int) -> None:
        """Start new episodes in ``num_envs`` environments (clears any history)."""
        ...


class AgentPolicy:
    """A Q-Transformer :class:`Agent` as a :class:`Policy`.

    After :meth:`reset` the agent sees each environment's last ``window`` observations (as
    :class:`~qtransformer.agent.ObservationHistory` keeps them); before it, every call acts on
    single frames.

    Args:
        agent: The trained agent.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._history: ObservationHistory | None = None

    @property
    def observation(self) -> str:
        return self.agent.config.observation

    @property
    def image_size(self) -> int | None:
        """Side of the square frames the agent was trained on (None without images)."""
        shape = self.agent.config.image_shape
        if not self.agent.config.uses_images or shape is None:
            return None
        if shape[0] != shape[1]:
            raise ValueError(f"the agent's frames are not square ({shape}); give image_size")
        return int(shape[0])

    @property
    def camera(self) -> str | None:
        return self.agent.camera

    @property
    def reads_instructions(self) -> bool:
        return self.agent.reads_instructions

    def reset(self, num_envs: int) -> None:
        self._history = self.agent.history(num_envs) if self.agent.config.window > 1 else None

    def act(
        self, observations: Observations, task: TaskArg = None, instruction: InstructionArg = None
    ) -> np.ndarray:
        if self._history is not None:
            return self._history.act(observations, task, instruction)
        return self.agent.act(observations, task, instruction)


def policy_factory(
    policy: Policy, task: TaskArg = None
) -> Callable[[int], Callable[[np.ndarray], np.ndarray]]:
    """``make_policy`` for :func:`qtransformer.evaluate.evaluate`: resets ``policy`` per wave.

    Args:
        policy: Any :class:`Policy`; it is shared by the waves, which run one after another.
        task: Passed to every ``act`` call (a name or id, or one per environment).
    """

    def make(num_envs: int) -> Callable[[np.ndarray], np.ndarray]:
        policy.reset(num_envs)
        return lambda obs: policy.act(obs, task)

    return make
