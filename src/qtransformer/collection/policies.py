"""Scripted Meta-World experts, degraded in documented ways, and recipe items that say how
many episodes of which policy to keep."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from metaworld.policies import ENV_POLICY_MAP

from qtransformer.envs.metaworld import (
    DEFAULT_ACTION_REPEAT,
    DEFAULT_MAX_STEPS,
    check_limits,
    check_task,
)

ScriptedPolicy = Callable[[np.ndarray, np.random.Generator], np.ndarray]


POLICY_KINDS = ("demo", "expert", "noisy", "perturbed", "slow", "hesitant", "degraded", "random")
KEEP_RULES = ("all", "success", "failure")


@dataclass(frozen=True)
class PolicySpec:
    """A scripted expert, degraded in documented ways; serialisable with ``asdict``.

    Each decision: the base action (the task's scripted expert, or uniform noise when ``kind``
    is ``"random"``), its xyz motion scaled by ``speed``; during a pause the xyz motion is zero
    (the gripper keeps the expert's command, so nothing held is dropped); during a perturbation
    segment the whole action is uniform in ``[-1, 1]``; then Gaussian noise of std ``noise`` on
    every dimension, and clipping to ``[-1, 1]``. A pause (perturbation) starts at a decision
    with probability ``pause_prob`` (``perturb_prob``) and lasts ``pause_len``
    (``perturb_len``) decisions.

    Attributes:
        kind: Label stored as the episode's kind, one of :data:`POLICY_KINDS`.
        noise: Std of the Gaussian noise added to every action dimension.
        speed: Factor in ``(0, 1]`` on the expert's xyz motion: below 1 is slow.
        perturb_prob: Probability per decision of starting a random-action segment.
        perturb_len: Decisions per random-action segment.
        pause_prob: Probability per decision of starting a pause.
        pause_len: Decisions per pause.
    """

    kind: str
    noise: float = 0.0
    speed: float = 1.0
    perturb_prob: float = 0.0
    perturb_len: int = 10
    pause_prob: float = 0.0
    pause_len: int = 10

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"unknown policy kind {self.kind!r}; known: {POLICY_KINDS}")
        if not self.noise >= 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if not 0 < self.speed <= 1:
            raise ValueError(f"speed must be in (0, 1], got {self.speed}")
        for name in ("perturb_prob", "pause_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("perturb_len", "pause_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class RecipeItem:
    """Keep ``count`` episodes of ``spec`` on ``task`` that pass the ``keep`` rule.

    Attributes:
        task: Meta-World v3 task name, e.g. ``"push-v3"``.
        spec: The policy.
        count: Episodes to keep.
        keep: ``"all"``, ``"success"`` (only successes) or ``"failure"`` (only failures);
            rejected attempts are retried with new seeds.
        max_steps: Time limit in env steps.
        action_repeat: Env steps per policy decision.
    """

    task: str
    spec: PolicySpec
    count: int
    keep: str = "all"
    max_steps: int = DEFAULT_MAX_STEPS
    action_repeat: int = DEFAULT_ACTION_REPEAT

    def __post_init__(self) -> None:
        check_task(self.task)
        if self.keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {self.keep!r}")
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        check_limits(self.max_steps, self.action_repeat)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Degraded:
    """The callable behind :func:`make_policy`; keeps the pause and perturbation counters."""

    def __init__(self, task: str, spec: PolicySpec) -> None:
        self.spec = spec
        # Meta-World types its map with the abstract base class; the values are concrete.
        self.expert = None if spec.kind == "random" else ENV_POLICY_MAP[task]()  # type: ignore[abstract]
        self.paused = 0
        self.perturbed = 0

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = self.spec
        if self.expert is None:
            action = rng.uniform(-1.0, 1.0, size=4)
        else:
            action = np.clip(np.asarray(self.expert.get_action(obs), dtype=np.float64), -1, 1)
            action[:3] *= s.speed
        if self.paused == 0 and s.pause_prob > 0 and rng.random() < s.pause_prob:
            self.paused = s.pause_len
        if self.paused > 0:
            self.paused -= 1
            action[:3] = 0.0
        if self.perturbed == 0 and s.perturb_prob > 0 and rng.random() < s.perturb_prob:
            self.perturbed = s.perturb_len
        if self.perturbed > 0:
            self.perturbed -= 1
            action = rng.uniform(-1.0, 1.0, size=4)
        if s.noise > 0:
            action = action + rng.normal(0.0, s.noise, size=4)
        return np.clip(action, -1.0, 1.0)


def make_policy(task: str, spec: PolicySpec) -> ScriptedPolicy:
    """A fresh policy ``(obs, rng) -> action in [-1, 1]^4`` for one episode of ``task``.

    Args:
        task: Meta-World v3 task name; picks the scripted expert.
        spec: How to degrade the expert (see :class:`PolicySpec`).
    """
    check_task(task)
    return _Degraded(task, spec)
