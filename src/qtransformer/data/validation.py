"""The one validation path of flat-array datasets, whatever they were read from.

:meth:`OfflineDataset.from_arrays`, :meth:`~OfflineDataset.load` (a saved folder, memory
mapped), :meth:`~OfflineDataset.load_npz` and Minari datasets (through episodes) all end in
:func:`validate_arrays`. Every problem is a :class:`DatasetError` (a ``ValueError``) that names
the field, the first offending index and, when the data came from disk, the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qtransformer.data.episodes import DatasetError

CHUNK = 1 << 16
"""Rows checked at a time, so a memory-mapped dataset larger than RAM is streamed."""


class Where:
    """Names the place of a field in messages: ``folder/field.npy``, ``file.npz`` or nothing."""

    def __init__(self, source: str | Path | None = None, folder: bool = False) -> None:
        self.source = None if source is None else str(source)
        self.folder = folder

    def __call__(self, field: str) -> str:
        if self.source is None:
            return field
        if self.folder:
            return f"{Path(self.source) / (field + '.npy')}: {field}"
        return f"{self.source}: {field}"

    def fail(self, field: str, problem: str) -> DatasetError:
        sep = "" if problem.startswith("[") else " "
        return DatasetError(f"{self(field)}{sep}{problem}")


def numeric(name: str, x: object, where: Where) -> np.ndarray:
    """``x`` as an array of numbers (or booleans); strings and objects are refused."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise where.fail(name, f"is not a rectangular array ({e})") from None
    if a.dtype.kind not in "biuf":  # booleans, integers, floats; not complex, times, text
        raise where.fail(name, f"must be numeric, got dtype {a.dtype}")
    return a


def names(name: str, x: object, where: Where) -> list[str]:
    """A list of distinct strings (task names or instructions); a bare string is refused, as
    it would be read letter by letter."""
    if isinstance(x, str) or not isinstance(x, (list, tuple, np.ndarray)):
        raise where.fail(name, f"must be a list of strings, got {type(x).__name__} {x!r:.40}")
    items = list(x)
    bad = [t for t in items if not isinstance(t, (str, np.str_))]
    if bad:
        raise where.fail(
            name, f"must be a list of strings, got {bad[0]!r} ({type(bad[0]).__name__})"
        )
    return [str(t) for t in items]


def bounds(
    low: object, high: object, action_dim: int, where: Where, field: str = "action_low/action_high"
) -> tuple[np.ndarray, np.ndarray]:
    """Finite ``(action_dim,)`` float64 bounds with ``low < high``."""
    lo = numeric("action_low", low, where).astype(np.float64).reshape(-1)
    hi = numeric("action_high", high, where).astype(np.float64).reshape(-1)
    if lo.shape != (action_dim,) or hi.shape != (action_dim,):
        raise where.fail(field, f"must have shape ({action_dim},), got {lo.shape} and {hi.shape}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
        raise where.fail(field, f"must be finite with low < high, got {lo} and {hi}")
    return lo, hi


def first_non_finite(a: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first NaN or inf of ``a``, reading it ``CHUNK`` rows at a time."""
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        return None
    for start in range(0, len(a), CHUNK):
        block = np.asarray(a[start : start + CHUNK])
        bad = ~np.isfinite(block)
        if bad.any():
            i = tuple(int(k) for k in np.argwhere(bad)[0])
            return (i[0] + start, *i[1:])
    return None


def as_float(name: str, x: object, ndim: int, where: Where) -> np.ndarray:
    """A float32 array of ``ndim`` dimensions (``(T, 1)`` is taken as ``(T,)``); NaN and inf
    are left to :func:`validate_arrays`, which checks every source once."""
    a = numeric(name, x, where).astype(np.float32)
    if ndim == 1 and a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != ndim:
        raise where.fail(name, f"must have {ndim} dimension(s), got shape {a.shape}")
    return a


def as_flags(name: str, x: object, where: Where) -> np.ndarray:
    """Strict booleans: bool, or numbers that are all exactly 0 or 1 (D4RL stores floats).

    A string, NaN or 0.3 is an error, never an episode end.
    """
    a = numeric(name, x, where)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise where.fail(name, f"must have 1 dimension, got shape {a.shape}")
    if a.dtype == bool:
        return a
    ok = (a == 0) | (a == 1)
    if not ok.all():
        i = int(np.argmin(ok))
        raise where.fail(name, f"must be booleans (or 0/1), got {a[i].item()!r} at index {i}")
    return a.astype(bool)


def validate_arrays(
    arrays: Mapping[str, Any],
    action_low: np.ndarray,
    action_high: np.ndarray,
    tasks: Sequence[str],
    instructions: Sequence[str],
    where: Where,
) -> None:
    """Check a dataset's arrays as stored (float32 observations, bool flags, ...) without
    copying them: shapes, dtypes, lengths, finiteness, action bounds, task ids.

    ``arrays`` holds ``observations``, ``actions``, ``rewards``, ``terminals``, ``timeouts``,
    ``task_ids`` and optionally ``images``, ``final_observations``, ``final_images``.

    Raises:
        DatasetError: naming the field (and the file through ``where``) of the first problem.
    """
    obs, act = arrays["observations"], arrays["actions"]
    for name, ndim in (("observations", 2), ("actions", 2), ("rewards", 1)):
        a = arrays[name]
        if a.dtype == object or not np.issubdtype(a.dtype, np.floating):
            raise where.fail(name, f"must be float, got dtype {a.dtype}")
        if a.ndim != ndim:
            raise where.fail(name, f"must have {ndim} dimension(s), got shape {a.shape}")
    for name in ("terminals", "timeouts"):
        a = arrays[name]
        if a.dtype != bool or a.ndim != 1:
            raise where.fail(name, f"must be 1-D booleans, got dtype {a.dtype} shape {a.shape}")
    for name in ("observations", "actions"):
        if arrays[name].shape[1] == 0:
            raise where.fail(name, f"has no columns: shape {arrays[name].shape}")
    images = arrays.get("images")
    if images is not None and (images.dtype != np.uint8 or images.ndim != 4):
        raise where.fail("images", f"must be uint8 (T, H, W, C), got {images.dtype} {images.shape}")
    ids = arrays["task_ids"]
    if not np.issubdtype(ids.dtype, np.integer) or ids.ndim != 1:
        raise where.fail(
            "task_ids", f"must be 1-D integers, got dtype {ids.dtype} shape {ids.shape}"
        )
    lengths = {
        k: len(arrays[k])
        for k in ("observations", "actions", "rewards", "terminals", "timeouts", "task_ids")
    }
    if arrays.get("images") is not None:
        lengths["images"] = len(arrays["images"])
    if len(set(lengths.values())) != 1:
        prefix = f"{where.source}: " if where.source else ""
        raise DatasetError(f"{prefix}array lengths disagree: {lengths}")
    if lengths["observations"] == 0:
        raise where.fail("observations", "has no steps: empty dataset")
    for name in ("observations", "actions", "rewards"):
        at = first_non_finite(arrays[name])
        if at is not None:
            raise where.fail(name, f"contains NaN or inf at index {at}")
    low, high = bounds(action_low, action_high, act.shape[1], where)
    for start in range(0, len(act), CHUNK):
        block = np.asarray(act[start : start + CHUNK])
        out = (block < low) | (block > high)
        if out.any():
            step, dim = (int(i) for i in np.argwhere(out)[0])
            raise where.fail(
                "actions",
                f"[{start + step}, {dim}] = {block[step, dim]} is outside the bounds "
                f"[{low[dim]}, {high[dim]}]",
            )
    tasks = names("tasks", tasks, where)
    instructions = names("instructions", instructions, where)
    n = len(tasks)
    if n == 0:
        raise where.fail("tasks", "is empty: give at least one task name")
    if len(set(tasks)) != n:
        raise where.fail("tasks", f"has duplicate names: {tasks}")
    if len(instructions) != n:
        raise where.fail("instructions", f"has {len(instructions)} entries for {n} tasks")
    for start in range(0, len(ids), CHUNK):
        block = np.asarray(ids[start : start + CHUNK])
        bad = (block < 0) | (block >= n)
        if bad.any():
            i = int(np.argmax(bad))
            raise where.fail(
                "task_ids",
                f"[{start + i}] = {block[i]} names no task: there are {n} ({list(tasks)})",
            )
    episodes = int(np.count_nonzero(np.asarray(arrays["terminals"]) | arrays["timeouts"]))
    episodes += int(not (arrays["terminals"][-1] or arrays["timeouts"][-1]))
    final = arrays.get("final_observations")
    if final is not None:
        if final.shape != (episodes, obs.shape[1]):
            raise where.fail(
                "final_observations",
                f"must have shape (episodes={episodes}, {obs.shape[1]}), got {final.shape}",
            )
        at = first_non_finite(final)
        if at is not None:
            raise where.fail("final_observations", f"contains NaN or inf at index {at}")
    final_images = arrays.get("final_images")
    if final_images is not None and (
        images is None
        or final_images.dtype != np.uint8
        or final_images.shape != (episodes, *images.shape[1:])
    ):
        raise where.fail(
            "final_images",
            f"must be uint8 of shape (episodes={episodes}, H, W, C) matching images, got "
            f"{final_images.dtype} {final_images.shape}",
        )
