"""The one policy interface that evaluation takes: our agent and the baselines implement it.

A :class:`Policy` acts on a batch of environments stepped together, and says through
:attr:`Policy.observes` what it needs from them (state vectors or rendered frames, which camera
and frame size, instructions or task names) and how the environments of its training data were
set up (time limit, action repeat), so an evaluator builds the same environments::

    policy = AgentPolicy(load_agent("runs/x/agent"))
    results = evaluate_metaworld(policy, ["reach-v3"], episodes=50)

:func:`policy_factory` turns a policy into the per-wave ``make_policy`` that
:func:`qtransformer.evaluate.evaluate` takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from qtransformer.agent import Agent, InstructionArg, ObservationHistory, TaskArg

ObservationKind = Literal["state", "image", "both"]
"""What ``act`` gets: state vectors, or ``{"state", "image"}`` dicts with rendered frames."""

BatchPolicy = Callable[[Any], np.ndarray]
"""Observations of all environments (an array, or a dict of arrays) -> actions ``(B, dA)``."""


@dataclass(frozen=True)
class Observes:
    """What a policy needs from the environment, and how its training data's was set up.

    Attributes:
        observation: ``"state"`` (``act`` gets state vectors ``(B, obs_dim)``), ``"image"`` or
            ``"both"`` (``act`` gets ``{"state", "image"}`` dicts with rendered frames).
        image_size: Side of the square frames to render (None for a state policy).
        camera: Camera to render them from (None: the evaluator's default).
        reads_instructions: ``act`` takes ``instruction=`` (a text) instead of ``task=``.
        env: The environment settings of the training data as recorded (what
            ``OfflineDataset.env_settings()`` knew of ``max_steps``, ``action_repeat``,
            ``camera``, ``image_size``); empty when nothing was recorded. A copy of what was
            given.
    """

    observation: ObservationKind = "state"
    image_size: int | None = None
    camera: str | None = None
    reads_instructions: bool = False
    env: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.observation not in ("state", "image", "both"):
            raise ValueError(f"observation must be state, image or both, not {self.observation!r}")
        object.__setattr__(self, "env", dict(self.env or {}))

    @property
    def images(self) -> bool:
        """Whether the policy reads rendered frames."""
        return self.observation != "state"

    def recorded(self, key: str) -> Any:
        """The training data's setting ``key`` (None when not recorded)."""
        return self.env.get(key)


@runtime_checkable
class Policy(Protocol):
    """A batched policy over ``num_envs`` environments stepped together.

    Stateless policies ignore :meth:`reset`. Stateful ones (Decision Transformer, a
    Q-Transformer with an observation window) keep a history per environment: call
    ``reset(num_envs)`` when a wave of episodes starts, then ``act`` exactly once per
    environment step with the observations of all ``num_envs`` environments, in a fixed order.
    """

    @property
    def observes(self) -> Observes:
        """What the policy reads, and the environment settings of its training data."""
        ...

    def act(
        self, observations: Any, task: TaskArg = None, instruction: InstructionArg = None
    ) -> np.ndarray:
        """Actions ``(B, dA)`` for observations ``(B, obs_dim)`` (or ``{"state", "image"}``).

        Args:
            observations: One observation per row (per environment for stateful policies).
            task: For multi-task policies: a task name or id, or one per row.
            instruction: For policies that read instructions: one text, or one per row.
        """
        ...

    def reset(self, num_envs: int) -> None:
        """Start new episodes in ``num_envs`` environments (clears any history)."""
        ...


def policy_factory(
    policy: Policy, task: TaskArg = None, instruction: InstructionArg = None
) -> Callable[[int], BatchPolicy]:
    """``make_policy`` for :func:`qtransformer.evaluate.evaluate`: resets ``policy`` per wave.

    Args:
        policy: Any :class:`Policy`; it is shared by the waves, which run one after another.
        task: Passed to every ``act`` call (a name or id, or one per environment).
        instruction: Passed to every ``act`` call (for a policy that reads instructions).
    """

    def make(num_envs: int) -> BatchPolicy:
        policy.reset(num_envs)
        return lambda obs: policy.act(obs, task=task, instruction=instruction)

    return make


class AgentPolicy:
    """A Q-Transformer :class:`~qtransformer.agent.Agent` as a :class:`Policy`.

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
    def observes(self) -> Observes:
        """The agent's observation kind, frame size, camera and instruction reading, and the
        environment settings its training data recorded (:attr:`Agent.env`)."""
        cfg = self.agent.config
        env = self.agent.env
        size = None
        if cfg.uses_images:
            shape = cfg.image_shape
            if shape is not None and shape[0] == shape[1]:
                size = int(shape[0])
            elif env.get("image_size") is not None:  # frames not square: only the record
                size = int(env["image_size"])
        return Observes(
            observation=cfg.observation,
            image_size=size,
            camera=self.agent.camera,
            reads_instructions=self.agent.reads_instructions,
            env=env,
        )

    def reset(self, num_envs: int) -> None:
        self._history = self.agent.history(num_envs) if self.agent.config.window > 1 else None

    def act(
        self, observations: Any, task: TaskArg = None, instruction: InstructionArg = None
    ) -> np.ndarray:
        if self._history is not None:
            return self._history.act(observations, task, instruction)
        return self.agent.act(observations, task, instruction)
