"""Minari datasets (HDF5 backend) <-> :class:`Episode` lists.

Written datasets open with ``minari.load_dataset(dataset_id)`` when ``MINARI_DATASETS_PATH``
points at the root they were written to. Per-episode task, instruction and collection kind go
to Minari's episode metadata; action bounds, the task list and the collection recipe go to the
dataset metadata under the key ``"qtransformer"``, and so do cached instruction embeddings:
one float32 vector per instruction, base64 of its little-endian bytes, which is exact and
four times smaller than decimal JSON.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from qtransformer.atomic import recover, write_dir_atomically
from qtransformer.data.episodes import DatasetError, Episode, validate_episodes

META_KEY = "qtransformer"
EMBEDDINGS_KEY = "instruction_embeddings"


def encode_embeddings(vectors: Mapping[str, np.ndarray], model: str) -> dict[str, Any]:
    """Instruction -> vector, as JSON-safe metadata (exact float32 bytes in base64)."""
    dims = {np.asarray(v).shape for v in vectors.values()}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
        raise ValueError(f"instruction embeddings must be vectors of one length, got {dims}")
    return {
        "model": model,
        "dim": int(next(iter(dims))[0]),
        "dtype": "float32",
        "vectors": {
            text: base64.b64encode(np.asarray(v, "<f4").tobytes()).decode("ascii")
            for text, v in vectors.items()
        },
    }


def decode_embeddings(
    stored: Mapping[str, Any], instructions: Sequence[str]
) -> tuple[np.ndarray, str]:
    """``(len(instructions), dim)`` float32 rows from :func:`encode_embeddings` output, and
    the model name.

    Raises:
        DatasetError: naming an instruction that has no stored vector.
    """
    vectors = stored["vectors"]
    rows = []
    for text in instructions:
        if text not in vectors:
            raise DatasetError(f"no stored embedding for instruction {text!r}")
        rows.append(np.frombuffer(base64.b64decode(vectors[text]), "<f4"))
    out = np.stack(rows).astype(np.float32)
    if out.shape[1] != int(stored["dim"]):
        raise DatasetError(
            f"stored embeddings have length {out.shape[1]}, expected {stored['dim']}"
        )
    return out, str(stored["model"])


@contextlib.contextmanager
def _datasets_root(root: Path) -> Iterator[None]:
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _spaces(
    episodes: Sequence[Episode], action_low: np.ndarray, action_high: np.ndarray
) -> tuple[gym.Space, gym.Space]:
    ep = episodes[0]
    state = gym.spaces.Box(-np.inf, np.inf, ep.observations.shape[1:], np.float32)
    action = gym.spaces.Box(action_low.astype(np.float32), action_high.astype(np.float32))
    if ep.images is None:
        return state, action
    image = gym.spaces.Box(0, 255, ep.images.shape[1:], np.uint8)
    return gym.spaces.Dict({"state": state, "image": image}), action


def write_minari(
    episodes: Sequence[Episode],
    root: str | Path,
    dataset_id: str,
    *,
    action_low: np.ndarray,
    action_high: np.ndarray,
    metadata: dict[str, Any] | None = None,
    env_spec: gym.envs.registration.EnvSpec | None = None,
    jpeg: bool = False,
    overwrite: bool = False,
    instruction_embeddings: Mapping[str, np.ndarray] | None = None,
    embedding_model: str | None = None,
    reward_range: tuple[float, float] = (0.0, 1.0),
) -> Path:
    """Validate ``episodes`` and write them as the Minari dataset ``root/dataset_id``.

    The dataset is built in a temporary folder under ``root`` and moved into place at the end
    (:func:`qtransformer.atomic.write_dir_atomically`), so an interrupted write leaves no
    half-written dataset (and an existing one untouched until the new one is complete).

    Args:
        episodes: The episodes; all are validated first.
        root: Minari datasets root (what ``MINARI_DATASETS_PATH`` should point to).
        dataset_id: Minari id without namespace, e.g. ``"metaworld-mixed-v0"``.
        action_low: Lower action bounds, ``(dA,)``.
        action_high: Upper action bounds, ``(dA,)``.
        metadata: Extra JSON-serializable facts (recipe, action repeat, ...).
        env_spec: Gymnasium spec of the environment, if it is registered.
        jpeg: Store images JPEG-encoded (smaller, lossy) instead of raw.
        overwrite: Replace an existing dataset of that id.
        instruction_embeddings: Instruction -> embedding vector, for every instruction of
            the episodes (cached so training needs no language model).
        embedding_model: Name of the model that made them (required with them).
        reward_range: Rewards outside ``[low, high]`` are refused (default: the sparse
            success reward; OGBench's singletask reward is ``(-objects, 0)``).

    Returns:
        The dataset's folder, ``root/dataset_id``.

    Raises:
        FileExistsError: If ``root/dataset_id`` exists and ``overwrite`` is False.
        ValueError: For a ``dataset_id`` with a namespace, or incomplete embeddings.
        DatasetError: For invalid episodes (nothing is written then).
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    # Absolute: Minari joins the dataset's own paths to the root it is given.
    root = Path(root).expanduser().resolve()
    if "/" in dataset_id:
        raise ValueError(f"dataset_id {dataset_id!r} must not contain '/' (no namespace)")
    final = root / dataset_id
    recover(final)  # a replacement killed mid-swap: the old dataset comes back first
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True to replace it")
    low, high = np.asarray(action_low, np.float64), np.asarray(action_high, np.float64)
    validate_episodes(episodes, low, high, reward_range=reward_range)
    tasks = sorted({ep.task for ep in episodes})
    instructions = {ep.task: ep.instruction for ep in episodes}
    extra: dict[str, Any] = {}
    if instruction_embeddings is not None:
        if not embedding_model:
            raise ValueError("instruction_embeddings need embedding_model, the model's name")
        missing = sorted(set(instructions.values()) - set(instruction_embeddings))
        if missing:
            raise ValueError(f"instruction_embeddings lack instructions {missing}")
        wanted = {t: instruction_embeddings[t] for t in sorted(set(instructions.values()))}
        extra[EMBEDDINGS_KEY] = encode_embeddings(wanted, embedding_model)
    buffers = []
    for i, ep in enumerate(episodes):
        obs: Any = ep.observations.astype(np.float32)
        if ep.images is not None:
            obs = {"state": obs, "image": ep.images}
        T = len(ep)
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=obs,
                actions=ep.actions.astype(np.float32),
                rewards=ep.rewards.astype(np.float64),
                terminations=np.r_[np.zeros(T - 1, bool), [ep.terminated]],
                truncations=np.r_[np.zeros(T - 1, bool), [ep.truncated]],
                infos={},
            )
        )
    obs_space, act_space = _spaces(episodes, low, high)

    def write(tmp: Path) -> None:
        # Minari writes DATASETS_ROOT/dataset_id/data/: build that under tmp, then lift the
        # dataset's own folder up to tmp, which write_dir_atomically moves to root/dataset_id.
        stage = tmp / ".minari"
        with _datasets_root(stage), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=env_spec,
                observation_space=obs_space,
                action_space=act_space,
                algorithm_name="qtransformer collect",
                description=f"{len(episodes)} episodes over tasks {', '.join(tasks)}",
                data_format="hdf5",
                jpeg_encoding=jpeg,
            )
        ds.storage.update_episode_metadata(
            [
                {
                    "task": ep.task,
                    "instruction": ep.instruction,
                    "kind": ep.kind,
                    "success": ep.success,
                }
                for ep in episodes
            ]
        )
        ds.storage.update_metadata(
            {
                META_KEY: {
                    "action_low": low.tolist(),
                    "action_high": high.tolist(),
                    "tasks": tasks,
                    "instructions": instructions,
                    **(metadata or {}),
                    **extra,
                }
            }
        )
        for item in (stage / dataset_id).iterdir():
            item.rename(tmp / item.name)
        shutil.rmtree(stage)

    write_dir_atomically(final, write)
    return final


def _open(source: str | Path) -> Any:
    import minari

    path = Path(source)
    if path.exists():
        data = path / "data" if (path / "data").is_dir() else path
        return minari.MinariDataset(data)
    try:
        return minari.load_dataset(str(source))
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{source!r} is neither a Minari dataset folder nor a local dataset id ({e})"
        ) from None


def _split_observations(obs: Any, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A Minari observation (array or dict of arrays) -> (state vector, image or None)."""
    if not isinstance(obs, dict):
        return np.asarray(obs, np.float32).reshape(len(obs), -1), None
    image = None
    parts = []
    for key in sorted(obs):
        a = np.asarray(obs[key])
        if a.dtype == np.uint8 and a.ndim == 4:
            if image is not None:
                raise DatasetError(f"{where}: more than one image observation; keep one")
            image = a
        else:
            parts.append(a.reshape(len(a), -1).astype(np.float32))
    if not parts:
        raise DatasetError(f"{where}: no state observation besides the image")
    return np.concatenate(parts, axis=1), image


def read_minari(source: str | Path) -> tuple[list[Episode], dict[str, Any]]:
    """Read any local Minari dataset: a dataset id (under ``MINARI_DATASETS_PATH``) or a folder.

    Dict observations are split into one image (uint8, ``(H, W, C)``) and a state vector made
    of the other keys in sorted order. Datasets not written by qtransformer get their id as
    task name and instruction.

    Returns:
        The episodes and the dataset metadata (with ``"action_low"``/``"action_high"`` from
        the action space, and any cached instruction embeddings under
        :data:`EMBEDDINGS_KEY` as :func:`decode_embeddings` reads them).
    """
    try:
        return _read(source)
    except (DatasetError, FileNotFoundError):
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:  # h5py, JSON, missing fields
        raise DatasetError(
            f"{source}: not a readable Minari dataset ({type(e).__name__}: {e})"
        ) from None


def _read(source: str | Path) -> tuple[list[Episode], dict[str, Any]]:
    ds = _open(source)
    meta = dict(ds.storage.metadata)
    ours = dict(meta.get(META_KEY, {}))
    space = ds.action_space
    if not isinstance(space, gym.spaces.Box):
        raise DatasetError(f"{source}: action space must be a Box, got {space}")
    ours.setdefault("action_low", np.asarray(space.low, np.float64).tolist())
    ours.setdefault("action_high", np.asarray(space.high, np.float64).tolist())
    default_task = str(meta.get("dataset_id", Path(str(source)).name))
    episodes = []
    for ep_meta, ep in zip(
        ds.storage.get_episode_metadata(ds.episode_indices), ds.iterate_episodes(), strict=True
    ):
        where = f"episode {ep.id}"
        state, image = _split_observations(ep.observations, where)
        term = np.asarray(ep.terminations, bool)
        # Gymnasium allows both flags at once; a true terminal wins (no bootstrap).
        terminated = bool(term[-1]) if len(term) else False
        task = str(ep_meta.get("task", default_task))
        episodes.append(
            Episode(
                observations=state,
                actions=np.asarray(ep.actions, np.float32).reshape(len(ep.actions), -1),
                rewards=np.asarray(ep.rewards, np.float32),
                terminated=terminated,
                # An episode that stops without either flag is cut short: a truncation.
                truncated=not terminated,
                task=task,
                instruction=str(
                    ep_meta.get("instruction", ours.get("instructions", {}).get(task, task))
                ),
                images=image,
                kind=str(ep_meta.get("kind", "")),
            )
        )
    return episodes, ours
