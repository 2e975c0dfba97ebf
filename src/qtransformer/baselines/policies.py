"""Trained d3rlpy baselines as :class:`~qtransformer.policy.Policy`: one adapter per family.

:class:`BaselinePolicy` covers the stateless algorithms (BC, IQL, CQL: one observation in, one
action out); :class:`DecisionTransformerPolicy` the sequence model, which keeps a context of
past steps per environment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from qtransformer.agent import InstructionArg, TaskArg, resolve_task_ids
from qtransformer.baselines.d3rlpy_data import one_hot
from qtransformer.baselines.settings import BaselineSettings, DTSettings
from qtransformer.policy import Observes


class BaselinePolicy:
    """A trained d3rlpy algorithm as a stateless :class:`~qtransformer.policy.Policy`.

    It reads state vectors only (frames in the data are not used), and multi-task policies
    are told the task by name or id (``task=``), never by instruction.

    Attributes:
        name: Baseline name (a key of :data:`~qtransformer.baselines.BASELINES`).
        algo: The trained d3rlpy algorithm.
        settings: The hyperparameters used, with data-dependent fields filled in.
        tasks: Task names, in the order of the task ids of the training data.
        action_low: Lower action bounds ``(dA,)``.
        action_high: Upper action bounds ``(dA,)``.
        steps: Gradient steps trained.
        seed: Training seed.
        num_steps: Dataset steps it trained on (after the ``bc-success`` filter).
        num_episodes: Episodes it trained on.
        num_transitions: d3rlpy's transition count (truncated episodes lose their last step).
        train_seconds: Wall time of training.
        env: The environment settings of the training data
            (:meth:`~qtransformer.data.dataset.OfflineDataset.env_settings`), which
            evaluation reproduces unless told otherwise.
    """

    def __init__(
        self,
        name: str,
        algo: Any,
        settings: BaselineSettings,
        tasks: Sequence[str],
        obs_dim: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        steps: int,
        seed: int,
        num_steps: int,
        num_episodes: int,
        num_transitions: int,
        train_seconds: float,
        env: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.algo = algo
        self.settings = settings
        self.tasks = list(tasks)
        self.obs_dim = obs_dim
        self.action_low = np.asarray(action_low, np.float32)
        self.action_high = np.asarray(action_high, np.float32)
        self.steps = steps
        self.seed = seed
        self.num_steps = num_steps
        self.num_episodes = num_episodes
        self.num_transitions = num_transitions
        self.train_seconds = train_seconds
        self.env: dict[str, Any] = dict(env or {})

    @property
    def observes(self) -> Observes:
        """State vectors, task names, and the training data's environment settings."""
        return Observes(observation="state", env=self.env)

    @property
    def steps_per_second(self) -> float:
        return self.steps / max(self.train_seconds, 1e-9)

    def record(self) -> dict[str, Any]:
        """Everything a results table should state about this baseline."""
        return {
            "baseline": self.name,
            "algorithm": type(self.algo).__name__,
            "settings": asdict(self.settings),
            "steps": self.steps,
            "seed": self.seed,
            "num_steps": self.num_steps,
            "num_episodes": self.num_episodes,
            "num_transitions": self.num_transitions,
            "train_seconds": self.train_seconds,
            "steps_per_second": self.steps_per_second,
            "observation_scaler": "standard (data mean/std; constant features scale 1)",
            "action_scaler": "min-max from the dataset's action bounds",
            "task_code": "one-hot appended" if len(self.tasks) > 1 else "none",
            "env": dict(self.env),
        }

    def _task_ids(self, task: TaskArg, batch: int) -> np.ndarray:
        return resolve_task_ids(task, self.tasks, batch)

    def _inputs(
        self, observations: np.ndarray, task: TaskArg, instruction: InstructionArg = None
    ) -> np.ndarray:
        if instruction is not None:
            raise ValueError(
                f"baseline {self.name!r} is told tasks by name (task=), not by instruction"
            )
        if isinstance(observations, Mapping):
            raise ValueError(
                f"baseline {self.name!r} reads state vectors (B, {self.obs_dim}), not a dict"
            )
        obs = np.asarray(observations, np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(
                f"observations must have shape (B, {self.obs_dim}), got {tuple(obs.shape)}"
            )
        if len(self.tasks) > 1:
            codes = one_hot(self._task_ids(task, len(obs)), len(self.tasks))
            obs = np.concatenate([obs, codes], axis=1)
        return obs

    def _clip(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(actions, np.float32), self.action_low, self.action_high)

    def reset(self, num_envs: int) -> None:
        """Nothing to reset: the policy keeps no history."""

    def act(
        self, observations: Any, task: TaskArg = None, instruction: InstructionArg = None
    ) -> np.ndarray:
        """Greedy actions ``(B, dA)`` within the dataset's action bounds.

        Args:
            observations: ``(B, obs_dim)``.
            task: For multi-task data: a task name or id, or one per row.
            instruction: Must be None (baselines do not read instructions).
        """
        return self._clip(self.algo.predict(self._inputs(observations, task, instruction)))


class DecisionTransformerPolicy(BaselinePolicy):
    """Decision Transformer with a context of past steps per environment.

    Stateful: :meth:`reset` starts new episodes in ``num_envs`` environments, and :meth:`act`
    must then be called once per environment step with the observations of all of them (it
    appends them to each environment's history). Returns-to-go start at ``target_return`` and
    drop by the rewards passed to :meth:`act`; without rewards they stay at the target, which
    is exact for sparse rewards that arrive only as an episode ends.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.settings, DTSettings)
        assert self.settings.target_return is not None and self.settings.max_timestep is not None
        self.target_return = float(self.settings.target_return)
        self.max_timestep = int(self.settings.max_timestep)
        self._wrappers: list[Any] = []
        self._t = np.zeros(0, np.int64)

    def reset(self, num_envs: int, mask: np.ndarray | None = None) -> None:
        """Start new episodes in all ``num_envs`` environments, or only where ``mask`` is True.

        Args:
            num_envs: Number of environments stepped together.
            mask: ``(num_envs,)``: which environments start a new episode; None: all.
        """
        if mask is not None and len(self._wrappers) == num_envs:
            for i in np.flatnonzero(np.asarray(mask, bool)):
                self._wrappers[i].reset()
                self._t[i] = 0
            return
        self._wrappers = [
            self.algo.as_stateful_wrapper(target_return=self.target_return) for _ in range(num_envs)
        ]
        self._t = np.zeros(num_envs, np.int64)

    def act(
        self,
        observations: Any,
        task: TaskArg = None,
        instruction: InstructionArg = None,
        rewards: np.ndarray | None = None,
    ) -> np.ndarray:
        """Next actions ``(num_envs, dA)``, one environment step for every environment.

        Args:
            observations: ``(num_envs, obs_dim)``, row i from environment i.
            task: For multi-task data: a task name or id, or one per environment.
            instruction: Must be None (baselines do not read instructions).
            rewards: ``(num_envs,)`` rewards received since the previous call (0 at an
                episode start); None: all 0.

        Raises:
            ValueError: If the batch does not match :meth:`reset`'s ``num_envs`` or an episode
                outgrows the timestep embedding (``settings.max_timestep - 1`` steps).
        """
        x = self._inputs(observations, task, instruction)
        if not self._wrappers:
            self.reset(len(x))
        if len(x) != len(self._wrappers):
            raise ValueError(
                f"got {len(x)} observations for {len(self._wrappers)} environments; "
                "call reset(num_envs) when the number of environments changes"
            )
        if (self._t + 1 >= self.max_timestep).any():
            raise ValueError(
                f"episode longer than {self.max_timestep - 1} steps: "
                "train with a larger DTSettings.max_timestep"
            )
        r = np.zeros(len(x)) if rewards is None else np.asarray(rewards, np.float64).reshape(-1)
        actions = np.stack([w.predict(x[i], float(r[i])) for i, w in enumerate(self._wrappers)])
        self._t += 1
        return self._clip(actions)
