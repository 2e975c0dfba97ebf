"""Offline datasets of flat arrays, validated on creation, saved and opened (memory-mapped)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qtransformer.atomic import write_dir_atomically
from qtransformer.data.episodes import Episode, validate_episodes
from qtransformer.discretize import ActionDiscretizer
from qtransformer.returns import (
    Episodes,
    find_episodes,
)

log = logging.getLogger(__name__)

ENV_SETTINGS = ("max_steps", "action_repeat", "camera", "image_size")
"""Metadata keys that say how the data's environment was set up."""
STORE_FORMAT = "qtransformer-dataset-v1"
STORE_META = "dataset.json"
STORE_ARRAYS = (
    "observations",
    "actions",
    "rewards",
    "terminals",
    "timeouts",
    "task_ids",
    "images",
    "final_observations",
    "final_images",
    "instruction_embeddings",
)


def _as_float_array(name: str, x: object, ndim: int) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if ndim == 1 and a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} contains NaN or inf at index {where}")
    return a


class OfflineDataset:
    """Episodes stored back to back as flat arrays (D4RL layout), validated on creation.

    Besides the D4RL arrays it keeps the task of every step (``task_ids`` indexing ``tasks``
    and ``instructions``), optional camera ``images`` ``(T, H, W, C)`` uint8, and free-form
    ``metadata`` (collection recipe, action repeat, ...). Datasets made from episodes also keep
    each episode's observation after its last action (``final_observations``, ``(E, obs_dim)``,
    and ``final_images``), so :meth:`to_episodes` gives them back whole. Arrays may be numpy
    memory maps (:meth:`load`), so a dataset larger than RAM is read from disk batch by batch.

    ``instruction_embeddings`` ``(n_tasks, dim)`` float32 caches the language model's vector
    of each task's instruction (``instruction_embedding_model`` names the model); every
    storage format keeps them, so training on instructions needs no language model.
    """

    def __init__(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        timeouts: np.ndarray,
        action_low: np.ndarray,
        action_high: np.ndarray,
        task_ids: np.ndarray | None = None,
        tasks: Sequence[str] = ("task",),
        instructions: Sequence[str] | None = None,
        images: np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
        final_observations: np.ndarray | None = None,
        final_images: np.ndarray | None = None,
        instruction_embeddings: np.ndarray | None = None,
        instruction_embedding_model: str | None = None,
    ) -> None:
        self.observations = observations
        self.actions = actions
        self.rewards = rewards
        self.terminals = terminals
        self.timeouts = timeouts
        self.action_low = action_low
        self.action_high = action_high
        T = len(observations)
        self.task_ids = np.zeros(T, np.int32) if task_ids is None else task_ids
        self.tasks = list(tasks)
        self.instructions = list(instructions) if instructions is not None else list(tasks)
        self.images = images
        self.metadata = dict(metadata or {})
        self.episodes: Episodes = find_episodes(terminals, timeouts)
        self.final_observations = final_observations
        self.final_images = final_images
        self.instruction_embeddings: np.ndarray | None = None
        self.instruction_embedding_model: str | None = None
        if instruction_embeddings is not None:
            self.set_instruction_embeddings(instruction_embeddings, instruction_embedding_model)

    def set_instruction_embeddings(self, embeddings: np.ndarray, model: str | None) -> None:
        """Cache the embeddings ``(n_tasks, dim)`` of :attr:`instructions`, made by ``model``.

        Raises:
            ValueError: naming the shape, dtype or the non-finite entry.
        """
        e = np.array(embeddings)  # a copy: a memory map of a small array is not worth keeping
        if e.ndim != 2 or e.shape[0] != len(self.tasks):
            raise ValueError(
                f"instruction_embeddings must have shape (n_tasks={len(self.tasks)}, dim), "
                f"got {e.shape}"
            )
        if e.dtype != np.float32:
            raise ValueError(f"instruction_embeddings must be float32, got {e.dtype}")
        if not np.all(np.isfinite(e)):
            raise ValueError("instruction_embeddings contains NaN or inf")
        if not model:
            raise ValueError("instruction_embeddings need the name of the model that made them")
        self.instruction_embeddings = e
        self.instruction_embedding_model = str(model)

    @classmethod
    def from_arrays(
        cls,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        timeouts: np.ndarray,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        task_ids: np.ndarray | None = None,
        tasks: Sequence[str] | None = None,
        instructions: Sequence[str] | None = None,
        images: np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
        instruction_embeddings: np.ndarray | None = None,
        instruction_embedding_model: str | None = None,
    ) -> OfflineDataset:
        """Build a dataset from D4RL-style flat arrays, episodes back to back.

        Args:
            observations: ``(T, obs_dim)``.
            actions: ``(T, dA)`` continuous actions.
            rewards: ``(T,)``.
            terminals: ``(T,)`` true episode ends (no bootstrap).
            timeouts: ``(T,)`` time-limit truncations (bootstrap).
            action_low: ``(dA,)`` lower bounds; default: the data's per-dimension minimum.
            action_high: ``(dA,)`` upper bounds; default: the data's per-dimension maximum.
            task_ids: ``(T,)`` index into ``tasks`` of every step; default: all 0.
            tasks: Task names; default ``["task"]``.
            instructions: One instruction per task; default: the task names.
            images: Optional ``(T, H, W, C)`` uint8 camera frames.
            metadata: Free-form facts about the data, kept with it.
            instruction_embeddings: Optional ``(n_tasks, dim)`` float32 embeddings of the
                instructions (see :mod:`qtransformer.language`).
            instruction_embedding_model: Name of the model that made them.

        Raises:
            ValueError: naming the field for wrong shapes, NaN or inf, disagreeing lengths,
                actions outside the given bounds, unknown task ids, or an empty dataset.
        """
        obs = _as_float_array("observations", observations, 2)
        act = _as_float_array("actions", actions, 2)
        rew = _as_float_array("rewards", rewards, 1)
        term = np.asarray(terminals).reshape(-1).astype(bool)
        tout = np.asarray(timeouts).reshape(-1).astype(bool)
        lengths = {
            "observations": len(obs),
            "actions": len(act),
            "rewards": len(rew),
            "terminals": len(term),
            "timeouts": len(tout),
        }
        if task_ids is not None:
            lengths["task_ids"] = len(task_ids)
        if images is not None:
            lengths["images"] = len(images)
        if len(set(lengths.values())) != 1:
            raise ValueError(f"array lengths disagree: {lengths}")
        if len(obs) == 0:
            raise ValueError("empty dataset: observations has no steps")
        lo, hi = act.min(axis=0).astype(np.float64), act.max(axis=0).astype(np.float64)
        flat = hi <= lo
        if (action_low is None or action_high is None) and flat.any():
            log.warning(
                "action dims %s are constant in the data; widening their bounds by 0.5",
                np.flatnonzero(flat).tolist(),
            )
            lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)
        low = lo if action_low is None else np.asarray(action_low, dtype=np.float64).reshape(-1)
        high = hi if action_high is None else np.asarray(action_high, dtype=np.float64).reshape(-1)
        if low.shape != (act.shape[1],) or high.shape != (act.shape[1],):
            raise ValueError(
                f"action_low/action_high must have shape ({act.shape[1]},), "
                f"got {low.shape} and {high.shape}"
            )
        # Raises with the offending step and dimension if an action is out of bounds.
        ActionDiscretizer(low, high, 2).to_bins(act)
        names = list(tasks) if tasks is not None else ["task"]
        ids = np.zeros(len(obs), np.int32) if task_ids is None else np.asarray(task_ids)
        if ids.min() < 0 or ids.max() >= len(names):
            step = int(np.argmax((ids < 0) | (ids >= len(names))))
            raise ValueError(
                f"task_ids[{step}] = {ids[step]} names no task: there are {len(names)} ({names})"
            )
        if instructions is not None and len(instructions) != len(names):
            raise ValueError(f"{len(instructions)} instructions for {len(names)} tasks")
        if images is not None and (images.dtype != np.uint8 or images.ndim != 4):
            raise ValueError(
                f"images must be uint8 (T, H, W, C), got {images.dtype} {images.shape}"
            )
        return cls(
            obs,
            act,
            rew,
            term,
            tout,
            low,
            high,
            ids.astype(np.int32),
            names,
            instructions,
            images,
            metadata,
            instruction_embeddings=instruction_embeddings,
            instruction_embedding_model=instruction_embedding_model,
        )

    @classmethod
    def from_episodes(
        cls,
        episodes: Sequence[Episode],
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> OfflineDataset:
        """Flatten validated episodes (the observation after the last action is dropped)."""
        low = None if action_low is None else np.asarray(action_low, np.float64)
        high = None if action_high is None else np.asarray(action_high, np.float64)
        validate_episodes(episodes, low, high, reward_range=(-np.inf, np.inf))
        tasks = sorted({ep.task for ep in episodes})
        instruction = {ep.task: ep.instruction for ep in episodes}
        index = {t: i for i, t in enumerate(tasks)}
        ends = np.cumsum([len(ep) for ep in episodes]) - 1
        terminated = np.array([ep.terminated for ep in episodes])
        terminals = np.zeros(ends[-1] + 1, bool)
        terminals[ends] = terminated
        # Minari-style episodes always end in one of the two; anything else is cut short.
        timeouts = np.zeros(ends[-1] + 1, bool)
        timeouts[ends] = ~terminated

        with_images = episodes[0].images is not None
        metadata = dict(metadata or {})
        for key in ENV_SETTINGS:
            # Collectors record the time limit, action repeat and camera with every episode.
            values = {ep.info.get(key) for ep in episodes} - {None}
            if key not in metadata and len(values) == 1:
                metadata[key] = values.pop()
        data = cls.from_arrays(
            observations=np.concatenate([ep.observations[:-1] for ep in episodes]),
            actions=np.concatenate([ep.actions for ep in episodes]),
            rewards=np.concatenate([ep.rewards for ep in episodes]),
            terminals=terminals,
            timeouts=timeouts,
            action_low=low,
            action_high=high,
            task_ids=np.concatenate(
                [np.full(len(ep), index[ep.task], np.int32) for ep in episodes]
            ),
            tasks=tasks,
            instructions=[instruction[t] for t in tasks],
            images=np.concatenate([e.images[:-1] for e in episodes if e.images is not None])
            if with_images
            else None,
            metadata=metadata,
        )
        data.final_observations = np.stack([ep.observations[-1] for ep in episodes])
        if with_images:
            data.final_images = np.stack([e.images[-1] for e in episodes if e.images is not None])
        return data

    def to_episodes(self) -> list[Episode]:
        """Split back into :class:`Episode` objects.

        Without stored final observations the last observation is repeated in their place.
        """
        ep = self.episodes
        out = []
        for e, (a, b) in enumerate(zip(ep.starts, ep.ends + 1, strict=True)):
            obs = np.asarray(self.observations[a:b])
            last = obs[-1] if self.final_observations is None else self.final_observations[e]
            images = None
            if self.images is not None:
                img = np.asarray(self.images[a:b])
                fin = img[-1] if self.final_images is None else self.final_images[e]
                images = np.concatenate([img, fin[None]])
            task = int(self.task_ids[a])
            out.append(
                Episode(
                    observations=np.concatenate([obs, np.asarray(last)[None]]),
                    actions=np.asarray(self.actions[a:b]),
                    rewards=np.asarray(self.rewards[a:b]),
                    terminated=bool(ep.terminated[e]),
                    truncated=not bool(ep.terminated[e]),
                    task=self.tasks[task],
                    instruction=self.instructions[task],
                    images=images,
                )
            )
        return out

    @classmethod
    def from_minari(cls, source: str | Path) -> OfflineDataset:
        """Read a local Minari dataset: an id under ``MINARI_DATASETS_PATH`` or a folder."""
        from qtransformer.data.minari_io import EMBEDDINGS_KEY, decode_embeddings, read_minari

        episodes, meta = read_minari(source)
        stored = meta.pop(EMBEDDINGS_KEY, None)
        data = cls.from_episodes(episodes, meta["action_low"], meta["action_high"], meta)
        if stored is not None:
            data.set_instruction_embeddings(*decode_embeddings(stored, data.instructions))
        return data

    @classmethod
    def open(cls, source: str | Path, mmap: bool = True) -> OfflineDataset:
        """Open a ``.npz`` file, a folder written by :meth:`save`, or a Minari dataset."""
        path = Path(source)
        if path.suffix == ".npz":
            return cls.load_npz(path)
        if (path / STORE_META).exists():
            return cls.load(path, mmap=mmap)
        return cls.from_minari(source)

    def save(self, path: str | Path) -> None:
        """Write every array as ``.npy`` plus ``dataset.json`` into folder ``path``, atomically.

        :meth:`load` memory-maps the arrays back.
        """

        def write(tmp: Path) -> None:
            for name in STORE_ARRAYS:
                a = getattr(self, name)
                if a is not None:
                    np.save(tmp / f"{name}.npy", np.asarray(a))
            meta = {
                "format": STORE_FORMAT,
                "action_low": np.asarray(self.action_low).tolist(),
                "action_high": np.asarray(self.action_high).tolist(),
                "tasks": self.tasks,
                "instructions": self.instructions,
                "instruction_embedding_model": self.instruction_embedding_model,
                "metadata": self.metadata,
            }
            (tmp / STORE_META).write_text(json.dumps(meta, indent=2, default=str))

        write_dir_atomically(path, write)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> OfflineDataset:
        """Open a folder written by :meth:`save`; with ``mmap`` the arrays stay on disk."""
        path = Path(path)
        meta = json.loads((path / STORE_META).read_text())
        if meta.get("format") != STORE_FORMAT:
            raise ValueError(f"{path / STORE_META} has format {meta.get('format')!r}")
        arrays = {
            name: np.load(path / f"{name}.npy", mmap_mode="r" if mmap else None)
            for name in STORE_ARRAYS
            if (path / f"{name}.npy").exists()
        }
        data = cls(
            arrays["observations"],
            arrays["actions"],
            arrays["rewards"],
            arrays["terminals"],
            arrays["timeouts"],
            np.asarray(meta["action_low"]),
            np.asarray(meta["action_high"]),
            arrays.get("task_ids"),
            meta["tasks"],
            meta["instructions"],
            arrays.get("images"),
            meta["metadata"],
            arrays.get("final_observations"),
            arrays.get("final_images"),
            arrays.get("instruction_embeddings"),
            meta.get("instruction_embedding_model"),
        )
        return data

    @classmethod
    def load_npz(cls, path: str | Path) -> OfflineDataset:
        """Read a ``.npz`` of flat arrays with the names of :meth:`from_arrays`."""
        with np.load(path) as f:
            missing = {"observations", "actions", "rewards", "terminals", "timeouts"} - set(f)
            if missing:
                raise ValueError(f"{path} lacks arrays {sorted(missing)}")
            kw: dict[str, Any] = {k: f[k] for k in f.files}
        for key in ("tasks", "instructions"):
            if key in kw:
                kw[key] = [str(x) for x in kw[key]]
        if "instruction_embedding_model" in kw:
            kw["instruction_embedding_model"] = str(kw["instruction_embedding_model"])
        return cls.from_arrays(**kw)

    def save_npz(self, path: str | Path) -> None:
        """Write the arrays to ``path`` atomically (a temporary file, then a rename).

        Camera images and cached instruction embeddings are written when the dataset has them.
        """
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        optional: dict[str, Any] = {}
        if self.images is not None:
            optional["images"] = self.images
        if self.instruction_embeddings is not None:
            optional["instruction_embeddings"] = self.instruction_embeddings
            optional["instruction_embedding_model"] = np.asarray(self.instruction_embedding_model)
        np.savez(
            tmp,
            observations=self.observations,
            actions=self.actions,
            rewards=self.rewards,
            terminals=self.terminals,
            timeouts=self.timeouts,
            action_low=self.action_low,
            action_high=self.action_high,
            task_ids=self.task_ids,
            tasks=np.asarray(self.tasks),
            instructions=np.asarray(self.instructions),
            **optional,
        )
        tmp.replace(path)

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def num_episodes(self) -> int:
        return int(len(self.episodes.starts))

    def env_settings(self) -> dict[str, Any]:
        """How the data's environment was set up, as far as the data records it:
        ``max_steps`` (time limit in env steps), ``action_repeat``, ``camera`` and
        ``image_size`` (square frames). Agents keep these so that evaluation reproduces them."""
        out = {k: self.metadata[k] for k in ENV_SETTINGS if self.metadata.get(k) is not None}
        if self.images is not None:
            H, W = (int(x) for x in self.images.shape[1:3])
            if H == W:
                out["image_size"] = H
        else:
            out.pop("camera", None)
            out.pop("image_size", None)
        return out

    def episode_success(self) -> np.ndarray:
        """Whether each episode succeeded, ``(num_episodes,)`` bool: its rewards sum above 0.

        With the sparse success reward (1 on the step that succeeds) this is exactly the
        episodes that reached the goal; every part of the package asks it here.
        """
        sums = np.add.reduceat(np.asarray(self.rewards, dtype=np.float64), self.episodes.starts)
        return sums > 0

    def default_q_max(self, gamma: float) -> float:
        """Value bound: 1 for sparse success rewards in [0, 1], else r_max / (1 - gamma)."""
        r = self.rewards
        if r.min() < 0:
            raise ValueError(
                f"rewards must be non-negative for the [0, q_max] value range, got min {r.min()}"
            )
        sparse = r.max() <= 1.0 and not np.any((r > 0) & ~self.terminals)
        if sparse:
            return 1.0
        r_max = max(float(r.max()), 1e-8)
        q_max = r_max / (1.0 - gamma) if gamma < 1.0 else float("inf")
        if not q_max <= float(np.finfo(np.float32).max):  # also false for NaN
            raise ValueError(
                f"cannot derive q_max = max reward / (1 - gamma) = {r_max:.4g} / (1 - {gamma}): "
                "not a finite float32 (gamma = 1 with rewards before the terminal step, or huge "
                "rewards); pass --q-max (TrainConfig.q_max) with a bound on the returns"
            )
        return q_max
