"""Episodes as collected or read from Minari, their validation, and flattening to arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """A dataset problem, with the field and the episode that has it in the message."""


@dataclass
class Episode:
    """One episode, Minari-style: one more observation than actions.

    Attributes:
        observations: ``(T + 1, obs_dim)``: every observation, the one after the last action too.
        actions: ``(T, dA)`` continuous actions.
        rewards: ``(T,)``.
        terminated: The episode ended in a true terminal (success or failure): no bootstrap.
        truncated: The episode ended at the time limit: bootstrap. When both are set, as
            Gymnasium allows, the true terminal wins (as it does in flat arrays).
        task: Task name, e.g. ``"push-v3"``.
        instruction: The task's instruction in English.
        images: Optional camera frames ``(T + 1, H, W, 3)`` uint8, right way up.
        kind: What produced it (``"demo"``, ``"failure"``, ``"noisy"``, ...).
        info: Anything else worth keeping from collection (noise level, seed, ...).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool
    truncated: bool
    task: str
    instruction: str
    images: np.ndarray | None = None
    kind: str = ""
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def success(self) -> bool:
        """Rewards summing above 0 (the sparse success reward); with negative rewards (a
        cost per step until the goal, as in OGBench) the episode ending in a true terminal."""
        r = np.asarray(self.rewards)
        if r.size and r.min() < 0:
            return bool(self.terminated)
        return bool(r.sum() > 0)


def validate_episode(
    ep: Episode,
    index: int,
    action_low: np.ndarray | None = None,
    action_high: np.ndarray | None = None,
    reward_range: tuple[float, float] = (0.0, 1.0),
    tasks: Sequence[str] | None = None,
) -> None:
    """Raise :class:`DatasetError` naming the field and episode for any problem."""
    where = f"episode {index} ({ep.task or 'no task'})"
    T = len(ep.actions)
    if T == 0:
        raise DatasetError(f"{where}: empty episode (no actions)")
    if tasks is not None and ep.task not in tasks:
        raise DatasetError(f"{where}: unknown task {ep.task!r}; known: {sorted(tasks)}")
    arrays = {"observations": ep.observations, "actions": ep.actions, "rewards": ep.rewards}
    expected = {"observations": T + 1, "actions": T, "rewards": T}
    if ep.images is not None:
        arrays["images"] = ep.images
        expected["images"] = T + 1
    for name, a in arrays.items():
        if len(a) != expected[name]:
            raise DatasetError(
                f"{where}: {name} has {len(a)} steps, expected {expected[name]} "
                f"(actions has {T}; observations and images have one more)"
            )
        if name != "images" and not np.all(np.isfinite(a)):
            step = int(np.argwhere(~np.isfinite(np.asarray(a, dtype=np.float64)))[0][0])
            raise DatasetError(f"{where}: {name} contains NaN or inf at step {step}")
    if ep.images is not None and (ep.images.dtype != np.uint8 or ep.images.ndim != 4):
        raise DatasetError(
            f"{where}: images must be uint8 (T + 1, H, W, C), got {ep.images.dtype} "
            f"{ep.images.shape}"
        )
    lo, hi = reward_range
    r = np.asarray(ep.rewards)
    if r.min() < lo or r.max() > hi:
        step = int(np.argmax((r < lo) | (r > hi)))
        raise DatasetError(
            f"{where}: rewards[{step}] = {r[step]} outside the declared range [{lo}, {hi}]"
        )
    if action_low is not None and action_high is not None:
        out = (ep.actions < action_low) | (ep.actions > action_high)
        if out.any():
            step, dim = (int(i) for i in np.argwhere(out)[0])
            raise DatasetError(
                f"{where}: actions[{step}, {dim}] = {ep.actions[step, dim]} outside the bounds "
                f"[{action_low[dim]}, {action_high[dim]}]"
            )


def validate_episodes(
    episodes: Sequence[Episode],
    action_low: np.ndarray | None = None,
    action_high: np.ndarray | None = None,
    reward_range: tuple[float, float] = (0.0, 1.0),
    tasks: Sequence[str] | None = None,
) -> None:
    """Validate every episode; all must share observation and action sizes."""
    if len(episodes) == 0:
        raise DatasetError("no episodes")
    obs_dim = episodes[0].observations.shape[1:]
    act_dim = episodes[0].actions.shape[1:]
    for i, ep in enumerate(episodes):
        validate_episode(ep, i, action_low, action_high, reward_range, tasks)
        if ep.observations.shape[1:] != obs_dim:
            raise DatasetError(
                f"episode {i}: observations have shape {ep.observations.shape[1:]} per step, "
                f"episode 0 has {obs_dim}"
            )
        if (ep.images is None) != (episodes[0].images is None):
            raise DatasetError(f"episode {i}: images present in some episodes but not in others")
        if ep.actions.shape[1:] != act_dim:
            raise DatasetError(
                f"episode {i}: actions have shape {ep.actions.shape[1:]} per step, "
                f"episode 0 has {act_dim}"
            )
