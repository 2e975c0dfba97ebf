"""Offline datasets of flat arrays, validated on creation, saved and opened (memory-mapped)."""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qtransformer.atomic import read_json, write_dir_atomically
from qtransformer.data.episodes import DatasetError, Episode, validate_episodes
from qtransformer.data.validation import (
    CHUNK,
    Where,
    as_flags,
    as_float,
    bounds,
    names,
    numeric,
    validate_arrays,
)
from qtransformer.returns import (
    Episodes,
    find_episodes,
)

if TYPE_CHECKING:
    from qtransformer.data.lerobot import LeRobotColumns

log = logging.getLogger(__name__)

ENV_SETTINGS = ("max_steps", "action_repeat", "camera", "image_size")
"""Metadata keys that say how the data's environment was set up."""
STORE_FORMAT = "qtransformer-dataset-v1"
STORE_META = "dataset.json"
NPZ_REQUIRED = ("observations", "actions", "rewards", "terminals", "timeouts")
NPZ_FIELDS = (
    *NPZ_REQUIRED,
    "action_low",
    "action_high",
    "task_ids",
    "tasks",
    "instructions",
    "images",
    "instruction_embeddings",
    "instruction_embedding_model",
)
"""Arrays a ``.npz`` may hold (the arguments of :meth:`OfflineDataset.from_arrays`)."""
D4RL_EXTRAS = ("next_observations", "infos/", "metadata/")
"""Arrays of D4RL files we do not use: loading says they were left, anything else unknown
is an error."""
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
            ValueError: naming the field for wrong shapes or dtypes, NaN or inf, flags that are
                not booleans (or 0/1), disagreeing lengths, actions outside the given bounds,
                unknown task ids, or an empty dataset.
        """
        where = Where()
        obs = as_float("observations", observations, 2, where)
        act = as_float("actions", actions, 2, where)
        rew = as_float("rewards", rewards, 1, where)
        term = as_flags("terminals", terminals, where)
        tout = as_flags("timeouts", timeouts, where)
        if task_ids is None:
            ids = np.zeros(len(obs), np.int32)
        else:
            ids = numeric("task_ids", task_ids, where).reshape(-1)
            if not np.issubdtype(ids.dtype, np.integer):
                whole = np.isfinite(ids) & (ids == np.round(ids))
                if not whole.all():
                    i = int(np.argmin(whole))
                    raise where.fail("task_ids", f"must be integers, got {ids[i]!r} at index {i}")
            ids = ids.astype(np.int64)
        if len(act) and len(act) == len(obs):
            lo, hi = act.min(axis=0).astype(np.float64), act.max(axis=0).astype(np.float64)
        else:  # validate_arrays names the disagreeing lengths
            lo, hi = np.zeros(act.shape[1:]), np.ones(act.shape[1:])
        flat = hi <= lo
        if (action_low is None or action_high is None) and flat.any():
            log.warning(
                "action dims %s are constant in the data; widening their bounds by 0.5",
                np.flatnonzero(flat).tolist(),
            )
            lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)
        low = lo if action_low is None else numeric("action_low", action_low, where)
        high = hi if action_high is None else numeric("action_high", action_high, where)
        low = np.asarray(low, np.float64).reshape(-1)
        high = np.asarray(high, np.float64).reshape(-1)
        task_names = ["task"] if tasks is None else names("tasks", tasks, where)
        texts = task_names if instructions is None else names("instructions", instructions, where)
        if images is not None:
            images = numeric("images", images, where)
        validate_arrays(
            {
                "observations": obs,
                "actions": act,
                "rewards": rew,
                "terminals": term,
                "timeouts": tout,
                "task_ids": ids,
                "images": images,
            },
            low,
            high,
            task_names,
            texts,
            where,
        )
        both = term & tout
        if both.any():
            log.warning(
                "%d step(s) are both terminal and timeout (first: %d); a true terminal wins",
                int(both.sum()),
                int(np.argmax(both)),
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
            task_names,
            texts,
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
        try:
            data = cls.from_episodes(episodes, meta["action_low"], meta["action_high"], meta)
            if stored is not None:
                data.set_instruction_embeddings(*decode_embeddings(stored, data.instructions))
        except DatasetError as e:
            raise DatasetError(f"{source}: {e}") from None
        return data

    @classmethod
    def open(
        cls, source: str | Path, mmap: bool = True, lerobot: LeRobotColumns | None = None
    ) -> OfflineDataset:
        """Open a ``.npz`` file, a folder written by :meth:`save`, a LeRobot dataset folder
        (``lerobot`` chooses its columns, :func:`qtransformer.data.lerobot.read_lerobot`), or
        a Minari dataset.

        Every source is validated on open (:mod:`qtransformer.data.validation`).

        Raises:
            FileNotFoundError: naming the path when there is nothing there.
            ValueError: naming the file and the field for corrupt or invalid data.
        """
        path = Path(source).expanduser()
        if path.suffix == ".npz":
            return cls.load_npz(path)
        from qtransformer.data.lerobot import is_lerobot, read_lerobot

        if is_lerobot(path):
            return read_lerobot(path, lerobot)
        if lerobot is not None:
            raise FileNotFoundError(f"{path}: not a LeRobot dataset (no meta/info.json)")
        if (path / STORE_META).exists():
            return cls.load(path, mmap=mmap)
        if path.is_dir() and any(path.glob("*.npy")):
            raise FileNotFoundError(
                f"{path} has .npy arrays but no {STORE_META}: not a complete saved dataset"
            )
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
        """Open a folder written by :meth:`save`, validated; with ``mmap`` the arrays stay
        on disk (and are checked in chunks)."""
        path = Path(path)
        meta_file = path / STORE_META
        meta = read_json(meta_file)
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise DatasetError(f"{meta_file} has format {found!r}, expected {STORE_FORMAT!r}")
        for key in ("action_low", "action_high", "tasks", "instructions"):
            if key not in meta:
                raise DatasetError(f"{meta_file} lacks the field {key!r}")
        in_meta = Where(meta_file)
        task_names = names("tasks", meta["tasks"], in_meta)
        texts = names("instructions", meta["instructions"], in_meta)
        metadata = meta.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise in_meta.fail("metadata", f"must be an object, got {type(metadata).__name__}")
        model = meta.get("instruction_embedding_model")
        if model is not None and not isinstance(model, str):
            raise in_meta.fail("instruction_embedding_model", f"must be a string, got {model!r}")
        arrays: dict[str, Any] = {}
        for name in STORE_ARRAYS:
            f = path / f"{name}.npy"
            if not f.exists():
                if name in ("observations", "actions", "rewards", "terminals", "timeouts"):
                    raise FileNotFoundError(f"{f} is missing: {path} is not a complete dataset")
                continue
            try:
                arrays[name] = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise DatasetError(f"{f}: not a readable .npy array ({e})") from None
        if "task_ids" not in arrays:
            arrays["task_ids"] = np.zeros(len(arrays["observations"]), np.int32)
        where = Where(path, folder=True)
        actions = arrays["actions"]
        if actions.ndim != 2:
            raise where.fail("actions", f"must have 2 dimension(s), got shape {actions.shape}")
        low, high = bounds(meta["action_low"], meta["action_high"], actions.shape[1], in_meta)
        validate_arrays(arrays, low, high, task_names, texts, where)
        try:
            data = cls(
                arrays["observations"],
                arrays["actions"],
                arrays["rewards"],
                arrays["terminals"],
                arrays["timeouts"],
                low,
                high,
                arrays["task_ids"],
                task_names,
                texts,
                arrays.get("images"),
                metadata,
                arrays.get("final_observations"),
                arrays.get("final_images"),
                arrays.get("instruction_embeddings"),
                model,
            )
        except DatasetError as e:
            raise DatasetError(f"{path}: {e}") from None
        return data

    @classmethod
    def load_npz(cls, path: str | Path) -> OfflineDataset:
        """Read a ``.npz`` of flat arrays with the names of :meth:`from_arrays`.

        D4RL files load as they are: their other arrays (``next_observations``,
        ``infos/...``, ``metadata/...``) are not used, and a log line says which were left;
        any other name is an error (a misspelt ``task_id`` would otherwise be dropped).

        Raises:
            FileNotFoundError: naming the file.
            ValueError: naming the file for a file that is not a readable ``.npz``, missing
                arrays, or any invalid field.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such .npz file")
        if not zipfile.is_zipfile(path):
            raise DatasetError(f"{path}: not a readable .npz (not a zip archive of arrays)")
        try:
            with np.load(path, allow_pickle=False) as f:
                names = set(f.files)
                missing = set(NPZ_REQUIRED) - names
                if missing:
                    raise DatasetError(
                        f"{path} lacks arrays {sorted(missing)} (has {sorted(names)})"
                    )
                kw: dict[str, Any] = {k: f[k] for k in sorted(names & set(NPZ_FIELDS))}
        except DatasetError:
            raise
        except Exception as e:  # zipfile, zlib and numpy raise many kinds for a damaged file
            raise DatasetError(
                f"{path}: not a readable .npz of numeric arrays ({type(e).__name__}: {e})"
            ) from None
        ignored = sorted(names - set(NPZ_FIELDS))
        unknown = [k for k in ignored if not k.startswith(D4RL_EXTRAS)]
        if unknown:  # a misspelt name would otherwise drop its array without a word
            raise DatasetError(
                f"{path}: unknown arrays {unknown}; an .npz holds {list(NPZ_FIELDS)}, and "
                f"D4RL's {list(D4RL_EXTRAS)}..., which are not used"
            )
        if ignored:
            log.info("%s: arrays not used: %s", path, ", ".join(ignored))
        for key in ("tasks", "instructions"):
            if key in kw:
                kw[key] = [str(x) for x in np.atleast_1d(kw[key])]
        if "instruction_embedding_model" in kw:
            kw["instruction_embedding_model"] = str(kw["instruction_embedding_model"])
        try:
            return cls.from_arrays(**kw)
        except DatasetError as e:
            raise DatasetError(f"{path}: {e}") from None

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

    def fingerprint(self) -> str:
        """BLAKE2b digest of everything training reads: the arrays (streamed in chunks, so a
        memory-mapped dataset is not loaded whole), action bounds, tasks and instructions.
        Checkpoints keep it, so ``--resume`` on other data of the same size is refused."""
        h = hashlib.blake2b(digest_size=20)
        for name in STORE_ARRAYS[:7]:  # the per-step arrays
            a = getattr(self, name)
            if a is None:
                continue
            h.update(f"{name}{a.dtype}{a.shape}".encode())
            if hasattr(a, "fingerprint"):  # frames in video files: their bytes, not decoded
                a.fingerprint(h)
                continue
            for start in range(0, len(a), CHUNK):
                h.update(np.ascontiguousarray(a[start : start + CHUNK]).data)
        h.update(np.asarray(self.action_low, np.float64).tobytes())
        h.update(np.asarray(self.action_high, np.float64).tobytes())
        h.update(json.dumps([self.tasks, self.instructions]).encode())
        return h.hexdigest()

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
        episodes that reached the goal; every part of the package asks it here. With negative
        rewards (a cost per step until the goal, as in OGBench) it is the episodes that end in
        a true terminal, as :attr:`qtransformer.data.episodes.Episode.success` says.
        """
        rewards = np.asarray(self.rewards, dtype=np.float64)
        if rewards.size and rewards.min() < 0:
            return np.asarray(self.episodes.terminated, dtype=bool).copy()
        sums = np.add.reduceat(rewards, self.episodes.starts)
        return sums > 0

    def default_q_max(self, gamma: float) -> float:
        """Upper end of the value range derived from the rewards (:meth:`value_range`)."""
        return self.value_range(gamma)[1]

    def value_range(
        self, gamma: float, q_min: float | None = None, q_max: float | None = None
    ) -> tuple[float, float]:
        """The range ``[q_min, q_max]`` that every Q value of this data lies in, which the
        network's sigmoid output is mapped onto affinely (docs/design.md, 'Value range').

        Sparse success rewards (in [0, 1], positive only on terminal steps) give ``(0, 1)``;
        otherwise ``q_min = min(r_min, 0) / (1 - gamma)`` and ``q_max = max(r_max, 0) /
        (1 - gamma)``, the returns of receiving the worst or best reward forever (a time
        limit bootstraps, so no horizon bounds them). ``q_min`` and ``q_max``, when given,
        replace the derived ends (``TrainConfig.q_min`` / ``q_max``).

        Raises:
            ValueError: when a derived end is not a finite float32 (gamma = 1 with rewards
                before the terminal step, or huge rewards), or the range is empty.
        """
        r = np.asarray(self.rewards, dtype=np.float64)
        r_min = float(r.min()) if r.size else 0.0
        r_max = float(r.max()) if r.size else 0.0
        sparse = r_min >= 0 and r_max <= 1.0 and not np.any((r > 0) & ~self.terminals)

        def derived(name: str, bound: float) -> float:
            if bound == 0.0:
                return 0.0
            value = bound / (1.0 - gamma) if gamma < 1.0 else float("inf")
            if not abs(value) <= float(np.finfo(np.float32).max):  # also false for NaN
                raise ValueError(
                    f"cannot derive {name} = {'min' if name == 'q_min' else 'max'} reward / "
                    f"(1 - gamma) = {bound:.4g} / (1 - {gamma}): not a finite float32 "
                    "(gamma = 1 with rewards before the terminal step, or huge rewards); pass "
                    f"--{name.replace('_', '-')} (TrainConfig.{name}) with a bound on the returns"
                )
            return value

        lo = q_min if q_min is not None else 0.0 if sparse else derived("q_min", min(r_min, 0.0))
        hi = q_max if q_max is not None else 1.0 if sparse else derived("q_max", max(r_max, 0.0))
        if not lo < hi:
            raise ValueError(
                f"empty value range: q_min = {lo:.4g} is not below q_max = {hi:.4g} (rewards "
                f"span [{r_min:.4g}, {r_max:.4g}] with gamma {gamma}); set TrainConfig.q_min / "
                "q_max (--q-min / --q-max) so that every return lies between them"
            )
        return float(lo), float(hi)
