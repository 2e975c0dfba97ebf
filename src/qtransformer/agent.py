"""A trained Q-Transformer as a policy: greedy actions, Q-values, save and load."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from qtransformer.atomic import write_dir_atomically
from qtransformer.discretize import ActionDiscretizer
from qtransformer.model import ModelConfig, QTransformer

FORMAT = "qtransformer-agent-v1"

TaskArg = Union[str, int, Sequence[Union[str, int]], None]  # noqa: UP007


def resolve_task_ids(task: TaskArg, tasks: Sequence[str], batch: int) -> np.ndarray:
    """Task names or ids, one for all rows or one per row, -> ``(batch,)`` int64 ids.

    Raises:
        ValueError: naming the unknown task, the id out of range, or a count mismatch.
    """
    if task is None:
        raise ValueError(f"this policy was trained on tasks {list(tasks)}: pass task=")
    items = [task] * batch if isinstance(task, (str, int, np.integer)) else list(task)
    if len(items) != batch:
        raise ValueError(f"got {len(items)} tasks for a batch of {batch}")
    ids = []
    for t in items:
        if isinstance(t, str):
            if t not in tasks:
                raise ValueError(f"unknown task {t!r}; known tasks: {list(tasks)}")
            ids.append(list(tasks).index(t))
        elif not 0 <= int(t) < len(tasks):
            raise ValueError(f"task id {t} out of range for {len(tasks)} tasks")
        else:
            ids.append(int(t))
    return np.asarray(ids, np.int64)


class Agent:
    """Greedy Q-Transformer policy over continuous actions.

    Args:
        model: The trained Q network.
        discretizer: Bin layout used in training.
        q_max: Value bound that scales the network's [0, 1] output.
        train_config: The training configuration, kept for the record.
        tasks: Task names, in the order of the task ids used in training.
        instructions: One instruction per task.
    """

    def __init__(
        self,
        model: QTransformer,
        discretizer: ActionDiscretizer,
        q_max: float,
        train_config: dict[str, Any] | None = None,
        tasks: Sequence[str] = ("task",),
        instructions: Sequence[str] | None = None,
    ) -> None:
        self.model = model.eval()
        self.discretizer = discretizer
        self.q_max = float(q_max)
        self.train_config = dict(train_config or {})
        self.tasks = list(tasks)
        self.instructions = list(instructions) if instructions is not None else list(tasks)

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _windows(self, observations: np.ndarray | torch.Tensor) -> torch.Tensor:
        obs = torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=self.device)
        w, d = self.config.window, self.config.obs_dim
        if obs.dim() == 2 and obs.shape[1] == d:
            # A single frame: as at an episode start, the window repeats it.
            return obs[:, None].expand(-1, w, -1)
        if obs.dim() == 3 and obs.shape[1:] == (w, d):
            return obs
        raise ValueError(
            f"observations must have shape (B, {d}) or (B, {w}, {d}), got {tuple(obs.shape)}"
        )

    def _task_ids(self, task: TaskArg, batch: int) -> torch.Tensor | None:
        """``(B,)`` task ids, or None when the model has no task token."""
        if self.model.task_proj is None:
            return None
        ids = resolve_task_ids(task, self.tasks, batch)
        return torch.as_tensor(ids, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def act_bins(
        self, observations: np.ndarray, task: TaskArg = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Greedy bins ``(B, dA)`` and the Q of each chosen bin ``(B, dA)``."""
        obs = self._windows(observations)
        bins, q = self.model.greedy(obs, self._task_ids(task, obs.shape[0]))
        return bins.cpu().numpy(), q.cpu().numpy() * self.q_max

    def act(self, observations: np.ndarray, task: TaskArg = None) -> np.ndarray:
        """Greedy continuous actions ``(B, dA)`` for ``(B, obs)`` or ``(B, w, obs)``.

        Args:
            observations: One frame or a window of frames per row.
            task: For multi-task agents: a task name or id, or one per row.
        """
        bins, _ = self.act_bins(observations, task)
        return self.discretizer.to_continuous(bins)

    @torch.no_grad()
    def q_values(
        self, observations: np.ndarray, bins: np.ndarray, task: TaskArg = None
    ) -> np.ndarray:
        """``(B, dA, N)``: row i is Q of every bin of dim i given ``bins[:, :i]``."""
        b = torch.as_tensor(np.asarray(bins), dtype=torch.long, device=self.device)
        if b.dim() != 2 or b.shape[1] != self.config.action_dim:
            raise ValueError(
                f"bins must have shape (B, {self.config.action_dim}), got {tuple(b.shape)}"
            )
        if b.numel() and (b.min() < 0 or b.max() >= self.config.n_bins):
            raise ValueError(f"bins must lie in [0, {self.config.n_bins - 1}]")
        obs = self._windows(observations)
        q = self.model(obs, b, self._task_ids(task, obs.shape[0])).amin(dim=1)  # (B, dA, N)
        return q.cpu().numpy() * self.q_max

    def history(self, num_envs: int) -> ObservationHistory:
        """A stateful helper that keeps each environment's last ``window`` observations."""
        return ObservationHistory(self, num_envs)

    def save(self, path: str | Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` into directory ``path`` atomically."""
        write_dir_atomically(path, lambda tmp: self.write_files(tmp))

    def write_files(self, directory: Path) -> None:
        save_file(self.model.state_dict(), str(directory / "model.safetensors"))
        meta = {
            "format": FORMAT,
            "model": asdict(self.config),
            "action_low": self.discretizer.low.tolist(),
            "action_high": self.discretizer.high.tolist(),
            "q_max": self.q_max,
            "tasks": self.tasks,
            "instructions": self.instructions,
            "train": self.train_config,
        }
        (directory / "config.json").write_text(json.dumps(meta, indent=2))


def load_agent(path: str | Path, device: str | torch.device = "cpu") -> Agent:
    """Load an agent saved by :meth:`Agent.save` or a training checkpoint directory."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path} holds no config.json: not a saved agent")
    meta = json.loads(cfg_file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{cfg_file} has format {meta.get('format')!r}, expected {FORMAT!r}")
    model_cfg = ModelConfig(**meta["model"])
    model = QTransformer(model_cfg)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    model.to(device)
    disc = ActionDiscretizer(
        np.asarray(meta["action_low"]), np.asarray(meta["action_high"]), model_cfg.n_bins
    )
    return Agent(
        model,
        disc,
        meta["q_max"],
        meta.get("train"),
        meta.get("tasks", ["task"]),
        meta.get("instructions"),
    )


class ObservationHistory:
    """Keeps the last ``window`` observations of each of ``num_envs`` environments.

    Usage with a vector environment::

        history = agent.history(num_envs)
        obs, _ = envs.reset()
        for _ in range(steps):
            obs, reward, terminated, truncated, _ = envs.step(history.act(obs))
            history.reset(terminated | truncated)  # those envs start a new episode
    """

    def __init__(self, agent: Agent, num_envs: int) -> None:
        self.agent = agent
        w, d = agent.config.window, agent.config.obs_dim
        self.frames = np.zeros((num_envs, w, d), dtype=np.float32)
        self.fresh = np.ones(num_envs, dtype=bool)

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Mark environments (all, or where ``mask`` is True) as starting a new episode."""
        if mask is None:
            self.fresh[:] = True
        else:
            self.fresh |= np.asarray(mask, dtype=bool)

    def act(self, observations: np.ndarray, task: TaskArg = None) -> np.ndarray:
        """Append one observation per environment and return greedy actions ``(num_envs, dA)``.

        A fresh environment's window is filled with its first observation. ``task`` is as
        in :meth:`Agent.act`.
        """
        obs = np.asarray(observations, dtype=np.float32)
        if obs.shape != (self.frames.shape[0], self.frames.shape[2]):
            raise ValueError(
                f"observations must have shape {(self.frames.shape[0], self.frames.shape[2])}, "
                f"got {obs.shape}"
            )
        self.frames[:, :-1] = self.frames[:, 1:].copy()
        self.frames[:, -1] = obs
        self.frames[self.fresh] = obs[self.fresh][:, None]
        self.fresh[:] = False
        return self.agent.act(self.frames, task)
