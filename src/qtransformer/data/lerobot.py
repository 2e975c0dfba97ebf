"""LeRobot datasets, read and written with pyarrow and PyAV (no ``lerobot`` package).

Layout of format v3.0 (v2.1 is read too; its differences in brackets)::

    meta/info.json          fps, features (name -> dtype, shape, names), file path templates
    meta/stats.json         per-feature min, max, mean, std
    meta/tasks.parquet      task string -> task_index            [meta/tasks.jsonl]
    meta/episodes/chunk-000/file-000.parquet                      [meta/episodes.jsonl]
                            one row per episode: length, tasks, which data and video file
                            holds it, and where its frames start in that video
    data/chunk-000/file-000.parquet                               [one file per episode]
                            one row per frame: feature columns, timestamp, frame_index,
                            episode_index, index, task_index
    videos/<camera>/chunk-000/file-000.mp4                        [one file per episode]

A frame's observation is the state and camera at that step, its ``action`` the command sent
then, and ``next.reward`` / ``next.done`` / ``next.success`` what followed the action. Our
datasets add ``meta/qtransformer.json`` (task names, action bounds, how the data was
collected, instruction embeddings), which LeRobot ignores.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qtransformer.atomic import read_json, write_dir_atomically
from qtransformer.data.episodes import DatasetError
from qtransformer.data.video import (
    VideoFrames,
    VideoSettings,
    VideoWriter,
    concatenate_videos,
    video_duration,
    video_stream_info,
)

if TYPE_CHECKING:
    from qtransformer.data.dataset import OfflineDataset

log = logging.getLogger(__name__)

INFO = "meta/info.json"
OURS = "meta/qtransformer.json"
OURS_FORMAT = "qtransformer-lerobot-v1"
VERSIONS = ("v3.0", "v2.1", "v2.0")
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
REWARD, DONE, SUCCESS = "next.reward", "next.done", "next.success"
CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200


@dataclass(frozen=True)
class LeRobotColumns:
    """Which LeRobot features become the dataset's arrays.

    Attributes:
        state: Features concatenated into the observation vector, in this order; default
            ``observation.state``, or else every numeric ``observation.*`` feature.
        action: The action feature.
        camera: The video feature read as ``images`` (``observation.images.top`` or just
            ``top``); default the first camera in ``info.json``; ``"none"`` reads no images.
        reward: The reward column; default ``next.reward``, else the episode's success from
            ``next.success`` (reward 1 on its last step).
        label_success: For data without rewards (demonstrations): every episode succeeds at
            its last step (reward 1 there, a true terminal).
    """

    state: tuple[str, ...] | None = None
    action: str = "action"
    camera: str | None = None
    reward: str | None = None
    label_success: bool = False


def is_lerobot(path: str | Path) -> bool:
    return (Path(path) / INFO).is_file()


class _Meta:
    """``meta/info.json`` of one dataset, checked, with errors that name the file and field."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / INFO
        info = read_json(self.file)
        if not isinstance(info, dict):
            raise DatasetError(f"{self.file}: must be a JSON object, got {type(info).__name__}")
        self.info = info
        version = self.get("codebase_version", str)
        if version not in VERSIONS:
            raise DatasetError(
                f"{self.file}: codebase_version {version!r} is not one we read "
                f"({', '.join(VERSIONS)})"
            )
        self.version = version
        self.fps = float(self.get("fps", (int, float)))
        if not self.fps > 0:
            raise DatasetError(f"{self.file}: fps must be positive, got {self.fps}")
        self.features: dict[str, dict[str, Any]] = self.get("features", dict)
        for key, ft in self.features.items():
            if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
                raise DatasetError(
                    f"{self.file}: features.{key} needs a dtype and a shape, got {ft!r:.80}"
                )

    def get(self, field: str, kind: Any) -> Any:
        if field not in self.info:
            raise DatasetError(f"{self.file} lacks the field {field!r}")
        value = self.info[field]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DatasetError(f"{self.file}: {field} has the wrong type: {value!r:.60}")
        return value

    def feature(self, key: str, role: str) -> dict[str, Any]:
        if key not in self.features:
            raise DatasetError(
                f"{self.file}: features has no {key!r} (asked for as the {role}); it has "
                f"{', '.join(self.features)}"
            )
        return self.features[key]

    def cameras(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft["dtype"] in ("video", "image")]

    def state_keys(self, asked: Sequence[str] | None) -> list[str]:
        if asked:
            keys = list(asked)
        elif "observation.state" in self.features:
            keys = ["observation.state"]
        else:
            keys = [
                k
                for k, ft in self.features.items()
                if k.startswith("observation.") and ft["dtype"] not in ("video", "image", "string")
            ]
            if not keys:
                raise DatasetError(
                    f"{self.file}: features has no observation.state nor any other numeric "
                    "observation.* feature to use as the state; name the state features"
                )
        for k in keys:
            ft = self.feature(k, "state")
            if ft["dtype"] in ("video", "image", "string") or len(ft["shape"]) != 1:
                raise DatasetError(
                    f"{self.file}: features.{k} is {ft['dtype']} {ft['shape']}, not a vector; "
                    "the state takes vector features"
                )
        return keys

    def camera_key(self, asked: str | None) -> str | None:
        cameras = self.cameras()
        if asked == "none" or (asked is None and not cameras):
            return None
        if asked is None:
            key = cameras[0]
        else:
            key = asked if asked in self.features else f"observation.images.{asked}"
            self.feature(key, "camera")
        ft = self.features[key]
        if ft["dtype"] != "video":
            raise DatasetError(
                f"{self.file}: features.{key} is stored as {ft['dtype']!r}; only cameras stored "
                "as video are read (pass camera='none' to train on the state)"
            )
        names = ft.get("names")
        shape = [int(s) for s in ft["shape"]]
        if names and list(names)[:3] == ["channels", "height", "width"]:
            shape = shape[1:] + shape[:1]
        if len(shape) != 3 or shape[2] != 3:
            raise DatasetError(
                f"{self.file}: features.{key} shape {ft['shape']} is not an RGB frame"
            )
        ft["_hwc"] = tuple(shape)
        return key


def _column(table: Any, key: str, file: Path) -> np.ndarray:
    """A column as numpy: scalars ``(n,)``, vectors ``(n, d)``."""
    import pyarrow as pa

    col = table.column(key).combine_chunks()
    if col.null_count:
        raise DatasetError(f"{file}: column {key!r} has {col.null_count} missing value(s)")
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        import pyarrow.compute as pc

        widths = np.unique(pc.list_value_length(col).to_numpy(zero_copy_only=False))
        if len(widths) != 1 or widths[0] == 0:
            raise DatasetError(
                f"{file}: column {key!r} holds vectors of lengths {widths[:5].tolist()}, "
                "not one length"
            )
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), int(widths[0]))
    return col.to_numpy(zero_copy_only=False)


def _read_parquet(file: Path, columns: list[str]) -> Any:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(file)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DatasetError(f"{file}: not a readable parquet file ({e})") from None
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DatasetError(
            f"{file}: no column {', '.join(map(repr, missing))} (it has {', '.join(schema.names)})"
        )
    try:
        return pq.read_table(file, columns=columns)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{file}: not a readable parquet file ({e})") from None


def _jsonl(file: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        lines = file.read_text().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: no such file") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DatasetError(f"{file}: line {n} is not valid JSON ({e})") from None
    return rows


def _tasks(meta: _Meta) -> dict[int, str]:
    """task_index -> task string."""
    if meta.version == "v3.0":
        file = meta.root / "meta/tasks.parquet"
        if not file.exists():
            raise FileNotFoundError(f"{file}: no such file (the dataset's task table)")
        import pyarrow.parquet as pq

        table = pq.read_table(file)
        if "task_index" not in table.column_names:
            raise DatasetError(f"{file}: no column 'task_index'")
        text = [c for c in table.column_names if c != "task_index"]
        if not text:
            raise DatasetError(f"{file}: no column of task strings beside task_index")
        # Written from pandas, the strings are the index ("__index_level_0__" or "task").
        key = "task" if "task" in text else text[0]
        return dict(
            zip(table.column("task_index").to_pylist(), table.column(key).to_pylist(), strict=True)
        )
    file = meta.root / "meta/tasks.jsonl"
    out = {}
    for row in _jsonl(file):
        if "task_index" not in row or "task" not in row:
            raise DatasetError(f"{file}: a line lacks task_index or task: {row!r:.80}")
        out[int(row["task_index"])] = str(row["task"])
    return out


def _episodes(meta: _Meta, camera: str | None) -> dict[str, np.ndarray]:
    """Per episode, sorted by index: length, and for the camera the file and start time."""
    out: dict[str, Any] = {}
    if meta.version == "v3.0":
        folder = meta.root / "meta/episodes"
        files = sorted(folder.glob("*/*.parquet"))
        if not files:
            raise FileNotFoundError(f"{folder}: no episode tables (chunk-*/file-*.parquet)")
        import pyarrow as pa

        wanted = ["episode_index", "length"]
        if camera is not None:
            wanted += [
                f"videos/{camera}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")
            ]
        table = pa.concat_tables([_read_parquet(f, wanted) for f in files])
        for c in wanted:
            out[c] = _column(table, c, files[0])
        order = np.argsort(out["episode_index"], kind="stable")
        out = {k: v[order] for k, v in out.items()}
        if camera is not None:
            template = meta.get("video_path", str)
            paths = [
                template.format(video_key=camera, chunk_index=int(c), file_index=int(f))
                for c, f in zip(
                    out[f"videos/{camera}/chunk_index"],
                    out[f"videos/{camera}/file_index"],
                    strict=True,
                )
            ]
            out["video_file"] = np.asarray(paths)
            out["video_start"] = out[f"videos/{camera}/from_timestamp"].astype(np.float64)
        return out
    file = meta.root / "meta/episodes.jsonl"
    rows = _jsonl(file)
    for row in rows:
        if "episode_index" not in row or "length" not in row:
            raise DatasetError(f"{file}: a line lacks episode_index or length: {row!r:.80}")
    rows.sort(key=lambda r: int(r["episode_index"]))
    out["episode_index"] = np.array([int(r["episode_index"]) for r in rows], np.int64)
    out["length"] = np.array([int(r["length"]) for r in rows], np.int64)
    if camera is not None:
        template = meta.get("video_path", str)
        chunks = int(meta.info.get("chunks_size", CHUNKS_SIZE))
        out["video_file"] = np.asarray(
            [
                template.format(
                    video_key=camera, episode_chunk=int(e) // chunks, episode_index=int(e)
                )
                for e in out["episode_index"]
            ]
        )
        out["video_start"] = np.zeros(len(rows))
    return out


def _data_files(meta: _Meta) -> list[Path]:
    folder = meta.root / "data"
    files = sorted(folder.glob("*/*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no data files (chunk-*/*.parquet)")
    return files


def read_lerobot(source: str | Path, columns: LeRobotColumns | None = None) -> OfflineDataset:
    """Read a local LeRobot dataset folder (format v3.0 or v2.1) as an :class:`OfflineDataset`.

    State and action come from the parquet tables, the camera (if any) stays in its video
    files and is decoded when indexed (:class:`~qtransformer.data.video.VideoFrames`), the
    task string of every frame becomes its instruction. An episode ends in a true terminal
    when its last frame has ``next.done`` (without that column: when it succeeded), else it
    was cut by a time limit.

    Raises:
        FileNotFoundError: naming a file the layout needs and the folder lacks.
        DatasetError: naming the file and the field for missing or inconsistent metadata, a
            missing reward signal, or episodes whose frames disagree with their tables.
    """
    import pyarrow as pa

    from qtransformer.data.dataset import OfflineDataset

    cols = columns or LeRobotColumns()
    root = Path(source).expanduser()
    meta = _Meta(root)
    state_keys = meta.state_keys(cols.state)
    action_ft = meta.feature(cols.action, "action")
    if action_ft["dtype"] in ("video", "image", "string") or len(action_ft["shape"]) != 1:
        raise DatasetError(f"{meta.file}: features.{cols.action} is not a vector action")
    camera = meta.camera_key(cols.camera)
    if cols.reward is not None:
        meta.feature(cols.reward, "reward")
    reward_key = cols.reward or (REWARD if REWARD in meta.features else None)
    success_key = SUCCESS if SUCCESS in meta.features else None
    if reward_key is None and success_key is None and not cols.label_success:
        raise DatasetError(
            f"{meta.file}: no reward signal: features has neither {REWARD!r} nor {SUCCESS!r}. "
            "Name a reward column, or label every episode a success at its last step "
            "(LeRobotColumns(label_success=True), --label-success on the command line)"
        )
    done_key = DONE if DONE in meta.features else None

    files = _data_files(meta)
    wanted = [*state_keys, cols.action, "episode_index", "frame_index", "timestamp", "task_index"]
    wanted += [k for k in (reward_key, success_key, done_key) if k is not None]
    tables = [_read_parquet(f, wanted) for f in files]
    rows = np.cumsum([0] + [t.num_rows for t in tables])
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        raise DatasetError(f"{meta.root / 'data'}: the data files hold no frames")

    def file_of(row: int) -> Path:
        return files[int(np.searchsorted(rows, row, side="right")) - 1]

    def col(key: str) -> np.ndarray:
        try:
            return _column(table, key, files[0])
        except DatasetError as e:
            raise DatasetError(f"{e} (in {meta.root / 'data'})") from None

    episode = col("episode_index").astype(np.int64)
    frame = col("frame_index").astype(np.int64)
    order = np.lexsort((frame, episode))
    if not np.array_equal(order, np.arange(len(order))):
        # Files in another order than their episodes: read them in episode order.
        episode, frame = episode[order], frame[order]
    starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
    lengths = np.diff(np.r_[starts, len(episode)])
    expected = np.arange(len(episode)) - np.repeat(starts, lengths)
    bad = np.flatnonzero(frame != expected)
    if len(bad):
        i = int(order[bad[0]])
        raise DatasetError(
            f"{file_of(i)}: frame_index of episode {episode[bad[0]]} is {frame[bad[0]]} at its "
            f"frame {expected[bad[0]]}: frames missing or repeated"
        )
    eps = _episodes(meta, camera)
    ep_ids = episode[starts]
    where_eps = meta.root / ("meta/episodes" if meta.version == "v3.0" else "meta/episodes.jsonl")
    if not np.array_equal(ep_ids, eps["episode_index"]):
        missing = sorted(set(eps["episode_index"].tolist()) ^ set(ep_ids.tolist()))[:5]
        raise DatasetError(
            f"{where_eps}: episode_index disagrees with the data files (episodes only in one of "
            f"them: {missing})"
        )
    wrong = np.flatnonzero(eps["length"] != lengths)
    if len(wrong):
        e = int(wrong[0])
        raise DatasetError(
            f"{where_eps}: length of episode {ep_ids[e]} is {eps['length'][e]}, the data files "
            f"hold {lengths[e]} frames of it"
        )

    def per_step(key: str) -> np.ndarray:
        return col(key)[order]

    obs = np.concatenate(
        [per_step(k).reshape(len(order), -1).astype(np.float32) for k in state_keys], axis=1
    )
    actions = per_step(cols.action).reshape(len(order), -1).astype(np.float32)
    ends = starts + lengths - 1
    task_index = per_step("task_index").astype(np.int64)
    tasks = _tasks(meta)
    unknown = sorted(set(np.unique(task_index).tolist()) - set(tasks))
    if unknown:
        raise DatasetError(
            f"{meta.root / 'meta'}: task_index {unknown[:5]} used by frames but not in the "
            "task table"
        )

    rewards = np.zeros(len(order), np.float32)
    succeeded = np.zeros(len(starts), bool)
    if cols.label_success:
        rewards[ends] = 1.0
        succeeded[:] = True
    elif reward_key is not None:
        rewards = per_step(reward_key).reshape(-1).astype(np.float32)
        succeeded = rewards[ends] > 0
    else:
        assert success_key is not None
        flags = per_step(success_key).reshape(-1).astype(bool)
        succeeded = np.logical_or.reduceat(flags, starts)
        rewards[ends[succeeded]] = 1.0
    if done_key is not None and not cols.label_success:
        done = per_step(done_key).reshape(-1).astype(bool)
        inside = done.copy()
        inside[ends] = False  # done belongs on an episode's last frame only
        early = np.flatnonzero(inside)
        if len(early):
            raise DatasetError(
                f"{file_of(int(order[early[0]]))}: {DONE} is set at frame {frame[early[0]]} of "
                f"episode {episode[early[0]]}, before its last frame"
            )
        terminal_ep = done[ends]
    else:
        # Without done flags: an episode that succeeded ended there, the others hit a limit.
        terminal_ep = succeeded & (rewards.min() >= 0)
    terminals = np.zeros(len(order), bool)
    timeouts = np.zeros(len(order), bool)
    terminals[ends[terminal_ep]] = True
    timeouts[ends[~terminal_ep]] = True

    ours = _ours(meta.root)
    used = sorted(set(task_index.tolist()))
    instructions = [tasks[t] for t in used]
    names = [ours.get("tasks", {}).get(text, text) for text in instructions]
    task_ids = np.searchsorted(np.asarray(used), task_index).astype(np.int32)
    metadata = dict(ours.get("metadata") or {})
    metadata.setdefault("source", "lerobot")
    metadata["lerobot"] = {
        "codebase_version": meta.version,
        "fps": meta.fps,
        "robot_type": meta.info.get("robot_type"),
        "state": state_keys,
        "action": cols.action,
        "camera": camera,
    }
    images = None
    if camera is not None:
        images = _frames(meta, camera, eps, episode[starts], lengths, per_step("timestamp"))
    data = OfflineDataset.from_arrays(
        observations=obs,
        actions=actions,
        rewards=rewards,
        terminals=terminals,
        timeouts=timeouts,
        action_low=ours.get("action_low"),
        action_high=ours.get("action_high"),
        task_ids=task_ids,
        tasks=names,
        instructions=instructions,
        images=None,
        metadata=metadata,
    )
    data.images = images  # type: ignore[assignment]  # decoded when indexed, never whole
    if "instruction_embeddings" in ours:
        from qtransformer.data.minari_io import decode_embeddings

        data.set_instruction_embeddings(
            *decode_embeddings(ours["instruction_embeddings"], instructions)
        )
    return data


def _ours(root: Path) -> dict[str, Any]:
    file = root / OURS
    if not file.exists():
        return {}
    ours = read_json(file)
    if not isinstance(ours, dict) or ours.get("format") != OURS_FORMAT:
        raise DatasetError(f"{file}: format is not {OURS_FORMAT!r}")
    return ours


def _frames(
    meta: _Meta,
    camera: str,
    eps: dict[str, np.ndarray],
    ep_ids: np.ndarray,
    lengths: np.ndarray,
    timestamps: np.ndarray,
) -> VideoFrames:
    ft = meta.features[camera]
    files = sorted(set(eps["video_file"].tolist()))
    for f in files:
        if not (meta.root / f).is_file():
            raise FileNotFoundError(f"{meta.root / f}: no such file (video of {camera})")
    index = {f: i for i, f in enumerate(files)}
    file_of_ep = np.array([index[f] for f in eps["video_file"]], np.int32)
    fps = float((ft.get("info") or {}).get("video.fps") or meta.fps)
    probe = video_stream_info(meta.root / files[0])
    hwc = ft["_hwc"]
    if (probe["height"], probe["width"]) != hwc[:2]:
        raise DatasetError(
            f"{meta.root / files[0]}: frames are {probe['height']}x{probe['width']}, "
            f"{meta.file} features.{camera} says {hwc[0]}x{hwc[1]}"
        )
    times = np.repeat(eps["video_start"], lengths) + timestamps.astype(np.float64)
    frames = VideoFrames(
        [meta.root / f for f in files], np.repeat(file_of_ep, lengths), times, hwc, fps
    )
    # Timestamps are stored as float32: a frame within a quarter period is the one meant.
    frames.tolerance = 0.25 / fps
    return frames


def _fixed_list(values: np.ndarray, dtype: Any) -> Any:
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(values, dtype=dtype).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, int(values.shape[1]))


def _stats(x: np.ndarray) -> dict[str, list[Any]]:
    x = np.asarray(x, np.float64)
    return {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "count": [len(x)],
    }


def _image_stats(frames: np.ndarray) -> dict[str, list[Any]]:
    """Per channel, pixels scaled to [0, 1], shaped (3, 1, 1) as LeRobot keeps them."""
    x = np.asarray(frames, np.float64).reshape(-1, frames.shape[-1]) / 255.0
    s = _stats(x)
    return {k: ([[[v]] for v in s[k]] if k != "count" else [len(frames)]) for k in s}


def _tasks_table(instructions: Sequence[str]) -> Any:
    """meta/tasks.parquet as pandas writes a frame indexed by task string (LeRobot reads it
    with pandas)."""
    import pyarrow as pa

    table = pa.table(
        {
            "task_index": pa.array(np.arange(len(instructions), dtype=np.int64)),
            "__index_level_0__": pa.array(list(instructions), pa.string()),
        }
    )
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def write_lerobot(
    data: OfflineDataset,
    path: str | Path,
    fps: float = 10.0,
    camera: str | None = None,
    video: VideoSettings | None = None,
    robot_type: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``data`` as a LeRobot v3.0 dataset folder at ``path``, atomically.

    The state goes to ``observation.state``, actions to ``action``, rewards to
    ``next.reward``, true terminals to ``next.done`` (on the last frame of episodes that
    ended so), the instruction of every step to its task; the camera, if the data has images,
    to ``observation.images.<camera>`` as video (one file per camera until it reaches 200 MB,
    as LeRobot does). ``meta/qtransformer.json`` keeps what LeRobot has no place for, so that
    :func:`read_lerobot` gives back the same dataset (frames within the codec's error).

    Raises:
        FileExistsError: when ``path`` exists and ``overwrite`` is false.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path).expanduser().resolve()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: pass overwrite=True to replace it")
    settings = video or VideoSettings()
    ep = data.episodes
    starts, ends = ep.starts, ep.ends
    lengths = ends - starts + 1
    E, T = len(starts), len(data)
    cam = None
    if data.images is not None:
        cam = f"observation.images.{camera or data.metadata.get('camera') or 'main'}"
    frame_index = np.arange(T) - np.repeat(starts, lengths)
    episode_index = np.repeat(np.arange(E), lengths)
    timestamps = (frame_index / fps).astype(np.float32)
    done = np.zeros(T, bool)
    done[ends[ep.terminated]] = True
    task_ids = np.asarray(data.task_ids, np.int64)

    def write(tmp: Path) -> None:
        table = pa.table(
            {
                "observation.state": _fixed_list(np.asarray(data.observations), np.float32),
                "action": _fixed_list(np.asarray(data.actions), np.float32),
                REWARD: pa.array(np.asarray(data.rewards, np.float32)),
                DONE: pa.array(done),
                "timestamp": pa.array(timestamps),
                "frame_index": pa.array(frame_index.astype(np.int64)),
                "episode_index": pa.array(episode_index.astype(np.int64)),
                "index": pa.array(np.arange(T, dtype=np.int64)),
                "task_index": pa.array(task_ids),
            }
        )
        # Rows per data file so that each stays under LeRobot's 100 MB.
        row_bytes = max(table.nbytes / max(T, 1), 1.0)
        per_file = max(int(DATA_FILE_MB * 2**20 / row_bytes), 1)
        data_file = np.zeros(E, np.int64)
        first = 0
        f = 0
        for e in range(E):
            if ends[e] + 1 - first > per_file and starts[e] > first:
                pq.write_table(
                    table.slice(first, starts[e] - first), _chunk_path(tmp, "data", f, "parquet")
                )
                first, f = int(starts[e]), f + 1
            data_file[e] = f
        pq.write_table(table.slice(first, T - first), _chunk_path(tmp, "data", f, "parquet"))

        video_cols: dict[str, Any] = {}
        stats = {
            "observation.state": _stats(np.asarray(data.observations)),
            "action": _stats(np.asarray(data.actions)),
            REWARD: _stats(np.asarray(data.rewards)[:, None]),
            "timestamp": _stats(timestamps[:, None]),
            "frame_index": _stats(frame_index[:, None]),
            "episode_index": _stats(episode_index[:, None]),
            "index": _stats(np.arange(T)[:, None]),
            "task_index": _stats(task_ids[:, None]),
        }
        features: dict[str, Any] = {
            "observation.state": {
                "dtype": "float32",
                "shape": [data.obs_dim],
                "names": [f"state_{i}" for i in range(data.obs_dim)],
            },
            "action": {
                "dtype": "float32",
                "shape": [data.action_dim],
                "names": [f"action_{i}" for i in range(data.action_dim)],
            },
        }
        if cam is not None and data.images is not None:
            H, W, C = (int(s) for s in data.images.shape[1:])
            v_file, v_from, v_to = _write_videos(
                tmp, cam, data.images, starts, lengths, fps, settings
            )
            video_cols = {
                f"videos/{cam}/chunk_index": pa.array(v_file // CHUNKS_SIZE),
                f"videos/{cam}/file_index": pa.array(v_file % CHUNKS_SIZE),
                f"videos/{cam}/from_timestamp": pa.array(v_from),
                f"videos/{cam}/to_timestamp": pa.array(v_to),
            }
            probe = video_stream_info(_chunk_path(tmp, f"videos/{cam}", 0, "mp4"))
            sample = np.asarray(data.images[np.linspace(0, T - 1, min(T, 256)).astype(np.int64)])
            stats[cam] = _image_stats(sample)
            features[cam] = {
                "dtype": "video",
                "shape": [H, W, C],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": H,
                    "video.width": W,
                    "video.codec": probe["codec"].replace("libdav1d", "av1"),
                    "video.pix_fmt": settings.pix_fmt,
                    "video.is_depth_map": False,
                    "video.fps": fps,
                    "video.channels": C,
                    "has_audio": False,
                },
            }
        features[REWARD] = {"dtype": "float32", "shape": [1], "names": None}
        features[DONE] = {"dtype": "bool", "shape": [1], "names": None}
        for key in INDEX_COLUMNS:
            dtype = "float32" if key == "timestamp" else "int64"
            features[key] = {"dtype": dtype, "shape": [1], "names": None}

        episodes = pa.table(
            {
                "episode_index": pa.array(np.arange(E, dtype=np.int64)),
                "tasks": pa.array(
                    [[data.instructions[int(task_ids[s])]] for s in starts], pa.list_(pa.string())
                ),
                "length": pa.array(lengths.astype(np.int64)),
                "data/chunk_index": pa.array(data_file // CHUNKS_SIZE),
                "data/file_index": pa.array(data_file % CHUNKS_SIZE),
                "dataset_from_index": pa.array(starts.astype(np.int64)),
                "dataset_to_index": pa.array((ends + 1).astype(np.int64)),
                **video_cols,
                "meta/episodes/chunk_index": pa.array(np.zeros(E, np.int64)),
                "meta/episodes/file_index": pa.array(np.zeros(E, np.int64)),
            }
        )
        pq.write_table(episodes, _chunk_path(tmp, "meta/episodes", 0, "parquet"))
        pq.write_table(_tasks_table(data.instructions), tmp / "meta/tasks.parquet")
        info = {
            "codebase_version": "v3.0",
            "robot_type": robot_type,
            "total_episodes": E,
            "total_frames": T,
            "total_tasks": len(data.instructions),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_MB,
            "video_files_size_in_mb": VIDEO_FILE_MB,
            "fps": fps,
            "splits": {"train": f"0:{E}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
            if cam is not None
            else None,
            "features": features,
        }
        (tmp / INFO).write_text(json.dumps(info, indent=4))
        (tmp / "meta/stats.json").write_text(json.dumps(stats, indent=4))
        ours: dict[str, Any] = {
            "format": OURS_FORMAT,
            "tasks": dict(zip(data.instructions, data.tasks, strict=True)),
            "action_low": np.asarray(data.action_low).tolist(),
            "action_high": np.asarray(data.action_high).tolist(),
            "metadata": {k: v for k, v in data.metadata.items() if k != "lerobot"},
        }
        if data.instruction_embeddings is not None and data.instruction_embedding_model:
            from qtransformer.data.minari_io import encode_embeddings

            ours["instruction_embeddings"] = encode_embeddings(
                dict(zip(data.instructions, data.instruction_embeddings, strict=True)),
                data.instruction_embedding_model,
            )
        (tmp / OURS).write_text(json.dumps(ours, indent=2, default=str))

    write_dir_atomically(path, write)
    return path


def _chunk_path(root: Path, folder: str, n: int, ext: str) -> Path:
    p = root / folder / f"chunk-{n // CHUNKS_SIZE:03d}" / f"file-{n % CHUNKS_SIZE:03d}.{ext}"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _write_videos(
    root: Path,
    key: str,
    images: Any,
    starts: np.ndarray,
    lengths: np.ndarray,
    fps: float,
    settings: VideoSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episodes back to back in MP4 files of up to 200 MB, as LeRobot writes them: each
    episode encoded on its own (so it starts on a keyframe), then the episodes of a file
    concatenated without re-encoding. Returns each episode's file number and its start and
    end time in that file."""
    H, W = (int(s) for s in images.shape[1:3])
    parts_dir = root / ".episodes"
    parts_dir.mkdir()
    file_no = np.zeros(len(starts), np.int64)
    t_from = np.zeros(len(starts))
    t_to = np.zeros(len(starts))
    group: list[Path] = []
    size = 0
    n = 0
    clock = 0.0
    for e, (s, length) in enumerate(zip(starts, lengths, strict=True)):
        part = parts_dir / f"episode-{e:06d}.mp4"
        with VideoWriter(part, fps, H, W, settings) as writer:
            writer.write(np.asarray(images[int(s) : int(s + length)]))
        if group and size + part.stat().st_size >= VIDEO_FILE_MB * 2**20:
            concatenate_videos(group, _chunk_path(root, f"videos/{key}", n, "mp4"))
            group, size, n, clock = [], 0, n + 1, 0.0
        group.append(part)
        size += part.stat().st_size
        file_no[e] = n
        t_from[e] = clock
        clock += video_duration(part)
        t_to[e] = clock
    concatenate_videos(group, _chunk_path(root, f"videos/{key}", n, "mp4"))
    parts_dir.rmdir()
    return file_no, t_from, t_to
