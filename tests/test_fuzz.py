"""Property-based fuzzing of everything that takes data from a user or a disk.

``OfflineDataset.from_arrays``, datasets saved as folders and ``.npz`` (round trips and
corrupted files) and ``Agent.act`` / ``Agent.q_values`` get random shapes, dtypes, values and
task arguments. Each call must either give a correct result or raise a ``ValueError`` (a
``DatasetError``) or ``FileNotFoundError`` whose message names the offending field or file.
Any other exception, an error that does not say what is wrong, a success after numpy warned
of an overflow or a dropped imaginary part, or a result that differs from the input, is a bug.

An empty batch (0 rows of the right width) is a valid input to the agent: it gets an empty
``(0, dA)`` answer, as numpy gives for empty arrays, so callers need no special case when every
environment of a vector env is done.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from factories import TINY_TRAIN, make_tiny_arrays
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qtransformer as qt
from qtransformer.data.dataset import NPZ_FIELDS

FUZZ = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NUMERIC_WARNINGS = (RuntimeWarning, np.exceptions.ComplexWarning)
LENGTHS = "array lengths disagree"
SPECIALS = [np.nan, np.inf, -np.inf, 1e38, -1e38, 1e39, 1e300, -1e300, 0.3, 0.5, 2.0, -1.0, 7e4]
FLOAT_DTYPES = [np.float16, np.float32, np.float64]
ANY_DTYPES = [
    np.float16,
    np.float32,
    np.float64,
    np.int8,
    np.int32,
    np.int64,
    np.uint8,
    np.uint64,
    np.bool_,
    np.complex64,
    np.complex128,
    np.dtype("U3"),
    np.dtype("S3"),
]
garbage_arrays = hnp.arrays(
    st.sampled_from(ANY_DTYPES),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
)
"""Any dtype, any shape (0-d, empty sides), default elements (NaN, inf, huge, ...)."""
nested_lists = st.recursive(
    st.floats(width=32) | st.integers(-3, 3) | st.booleans(),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=12,
)
"""Python lists nested to any depth, ragged or not (or a bare number)."""


def quiet(fn: Callable[[], Any]) -> Any:
    """Build an input without the test's own casts warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def attempt(
    fn: Callable[[], Any], any_of: tuple[str, ...] = (), all_of: tuple[str, ...] = ()
) -> Any:
    """``fn()``, or None when it raised a ValueError/FileNotFoundError whose message holds one
    of ``any_of`` (if given) and all of ``all_of``. Other exceptions propagate (a bug); a
    success after a numeric RuntimeWarning or ComplexWarning fails (a silent conversion)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except (ValueError, FileNotFoundError) as e:
            msg = str(e)
            named = (not any_of or any(n in msg for n in any_of)) and all(n in msg for n in all_of)
            if not (any_of or all_of) or not named:
                raise AssertionError(
                    f"{type(e).__name__} should name {any_of or ''} {all_of or ''}: {msg}"
                ) from e
            note(f"refused: {type(e).__name__}: {msg}")
            return None
    noisy = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, NUMERIC_WARNINGS)
    ]
    assert not noisy, f"succeeded after numeric warnings {noisy}"
    return out


# ---------------------------------------------------------------------------------------------
# OfflineDataset.from_arrays


@st.composite
def dataset_kwargs(draw: st.DrawFn, max_steps: int = 8) -> dict[str, Any]:
    """Valid arguments of ``from_arrays``: 1-3 tasks, flags of any numeric dtype, optional
    action bounds, instructions and images."""
    T = draw(st.integers(1, max_steps))
    obs_dim, dA = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kw: dict[str, Any] = {
        "observations": draw(
            hnp.arrays(np.float32, (T, obs_dim), elements=st.floats(-1e6, 1e6, width=32))
        ),
        "actions": draw(hnp.arrays(np.float32, (T, dA), elements=st.floats(-1, 1, width=32))),
        "rewards": draw(hnp.arrays(np.float32, (T,), elements=st.floats(-10, 10, width=32))),
    }
    flag_dtype = draw(st.sampled_from([bool, np.float32, np.float64, np.int64, np.uint8]))
    for name in ("terminals", "timeouts"):
        kw[name] = draw(hnp.arrays(bool, (T,))).astype(flag_dtype)
    if draw(st.booleans()):
        kw["action_low"], kw["action_high"] = -np.ones(dA), np.ones(dA)
    n_tasks = draw(st.integers(1, 3))
    if n_tasks > 1 or draw(st.booleans()):
        kw["tasks"] = [f"task-{i}" for i in range(n_tasks)]
        kw["task_ids"] = draw(
            hnp.arrays(
                st.sampled_from([np.int32, np.int64, np.uint8]),
                (T,),
                elements=st.integers(0, n_tasks - 1),
            )
        )
        if draw(st.booleans()):
            kw["instructions"] = [f"do task {i}" for i in range(n_tasks)]
    if draw(st.booleans()):
        H, W, C = (draw(st.integers(1, 3)) for _ in range(3))
        kw["images"] = draw(hnp.arrays(np.uint8, (T, H, W, C)))
    return kw


NAME_FIELDS = ("tasks", "instructions", "instruction_embeddings", "instruction_embedding_model")
ARRAY_FIELDS = tuple(f for f in NPZ_FIELDS if f not in NAME_FIELDS)
"""The numeric arguments of ``from_arrays``."""
NAMES_OF = {
    "observations": ("observations", LENGTHS),
    "actions": ("actions", "action_low", LENGTHS),
    "rewards": ("rewards", LENGTHS),
    "terminals": ("terminals", LENGTHS),
    "timeouts": ("timeouts", LENGTHS),
    "task_ids": ("task_ids", LENGTHS),
    "images": ("images", LENGTHS),
    "action_low": ("action_low", "actions"),
    "action_high": ("action_high", "actions"),
    "tasks": ("tasks", "task_ids", "instructions"),
    "instructions": ("instructions",),
    "empty": ("observations", "empty"),
}
"""What an error may name when a field was spoilt (a short tasks list leaves task ids that
name no task; bounds narrower than the data leave actions outside them)."""
ARRAY_MUTATIONS = (
    "none",
    "garbage",
    "nested",
    "astype",
    "object",
    "tolist",
    "ragged",
    "special",
    "length",
    "ndim",
    "columns",
    "scalar",
)


def current(kw: dict[str, Any], field: str, T: int, dA: int) -> np.ndarray:
    """The field's value, or a valid stand-in for an optional field left out."""
    if kw.get(field) is not None:
        return np.asarray(kw[field])
    return {
        "task_ids": np.zeros(T, np.int64),
        "images": np.zeros((T, 2, 2, 3), np.uint8),
        "action_low": -np.ones(dA),
        "action_high": np.ones(dA),
    }[field]


def mutate_array(draw: st.DrawFn, v: np.ndarray) -> Any:
    kind = draw(st.sampled_from(ARRAY_MUTATIONS), label="mutation")
    if kind == "none":
        return None
    if kind == "garbage":
        return draw(garbage_arrays)
    if kind == "nested":
        return draw(nested_lists)
    if kind == "astype":
        dtype = draw(st.sampled_from(ANY_DTYPES), label="dtype")
        return quiet(lambda: v.astype(dtype))
    if kind == "object":
        return v.astype(object)
    if kind == "tolist":
        return v.tolist()
    if kind == "ragged":
        rows = v.tolist()
        if v.ndim >= 2 and len(rows) >= 1:
            rows[-1] = rows[-1][:-1] if len(rows[-1]) else [*rows[-1], 0]
            return rows
        return [rows, [rows, 1]]
    if kind == "special":
        a = np.array(v, dtype=np.float64)
        if a.size:
            i = draw(st.integers(0, a.size - 1), label="at")
            a.flat[i] = draw(st.sampled_from(SPECIALS), label="value")
        dtype = draw(st.sampled_from(FLOAT_DTYPES), label="dtype")
        return quiet(lambda: a.astype(dtype))
    if kind == "length" and v.ndim >= 1:
        k = draw(st.integers(0, len(v) + 3).filter(lambda k: k != len(v)), label="rows")
        return v[:k] if k <= len(v) else np.concatenate([v] + [v[:1]] * (k - len(v)))
    if kind == "ndim":
        options = [v[..., None], v[None]]
        if v.ndim >= 2:
            options.append(v.reshape(-1))
        return draw(st.sampled_from(options), label="reshaped")
    if kind == "columns" and v.ndim >= 1:
        if v.ndim == 1:
            return np.stack([v, v], axis=1)
        extra = draw(st.integers(-v.shape[1], 2).filter(bool), label="columns")
        return v[:, : v.shape[1] + extra] if extra < 0 else np.concatenate([v, v[:, :extra]], 1)
    return draw(st.sampled_from([0, 1.0, np.float32(0), np.asarray(1.0), True, "abc", b"x"]))


names_lists = st.one_of(
    st.none(),
    st.just([]),
    st.lists(st.text(max_size=4), max_size=4),
    st.text(max_size=6),
    st.lists(st.one_of(st.integers(), st.none(), st.floats(), st.text(max_size=3)), max_size=4),
    st.integers(-2, 5),
    st.just(("task-0", "task-1", "task-2")),
    st.just(np.array(["task-0", "task-1"])),
    st.just(["task-0", "task-0"]),
)
"""``tasks`` and ``instructions`` arguments: wrong lengths, bare strings, non-strings."""


def expected_names(value: Any, default: list[str]) -> list[str]:
    """The list of strings a successful call must keep for ``tasks``/``instructions``."""
    if value is None:
        return default
    if isinstance(value, str):
        return [value]  # one task named by a bare string, not a task per character
    return [str(x) for x in value]


def check_dataset(data: qt.OfflineDataset, kw: dict[str, Any]) -> None:
    """The dataset built from ``kw`` is valid and holds exactly what was given."""
    obs = quiet(lambda: np.asarray(kw["observations"]).astype(np.float32))
    T = len(data)
    assert T >= 1 and obs.ndim == 2 and obs.shape[0] == T
    assert obs.shape[1] >= 1, f"observations of shape {obs.shape} (no features) were accepted"
    assert data.observations.shape == obs.shape
    np.testing.assert_array_equal(data.observations, obs)
    assert np.isfinite(data.observations).all()
    act = quiet(lambda: np.asarray(kw["actions"]).astype(np.float32))
    assert act.ndim == 2 and data.actions.shape == act.shape
    assert act.shape[1] >= 1, f"actions of shape {act.shape} (no action dims) were accepted"
    np.testing.assert_array_equal(data.actions, act)
    rew = quiet(lambda: np.asarray(kw["rewards"]).astype(np.float32))
    assert rew.size == T and data.rewards.shape == (T,)
    np.testing.assert_array_equal(data.rewards, rew.reshape(T))
    assert np.isfinite(data.rewards).all()
    flags = {}
    for name in ("terminals", "timeouts"):
        given_flags = np.asarray(kw[name])
        assert given_flags.size == T and given_flags.dtype.kind in "biuf"
        given_flags = given_flags.reshape(T)
        assert np.isin(given_flags, [0, 1]).all(), f"{name} {given_flags} taken as booleans"
        got = getattr(data, name)
        assert got.dtype == bool and got.shape == (T,)
        np.testing.assert_array_equal(got, given_flags != 0)
        flags[name] = got
    ends = np.flatnonzero(flags["terminals"] | flags["timeouts"])
    if not len(ends) or ends[-1] != T - 1:
        ends = np.append(ends, T - 1)
    np.testing.assert_array_equal(data.episodes.ends, ends)
    low, high = np.asarray(data.action_low), np.asarray(data.action_high)
    dA = act.shape[1]
    assert low.shape == high.shape == (dA,)
    assert np.isfinite(low).all() and np.isfinite(high).all() and (low < high).all()
    assert ((data.actions >= low) & (data.actions <= high)).all()
    for name, got in (("action_low", low), ("action_high", high)):
        if kw.get(name) is not None:
            np.testing.assert_array_equal(got, np.asarray(kw[name], np.float64).reshape(-1))
    tasks = expected_names(kw.get("tasks"), ["task"])
    assert data.tasks == tasks and all(isinstance(t, str) for t in data.tasks)
    assert len(set(data.tasks)) == len(data.tasks), f"duplicate task names {data.tasks}"
    instructions = expected_names(kw.get("instructions"), tasks)
    assert data.instructions == instructions
    assert all(isinstance(t, str) for t in data.instructions), data.instructions
    assert len(data.instructions) == len(data.tasks) >= 1
    ids = data.task_ids
    assert np.issubdtype(ids.dtype, np.integer) and ids.shape == (T,)
    assert ((ids >= 0) & (ids < len(data.tasks))).all()
    if kw.get("task_ids") is not None:
        np.testing.assert_array_equal(ids, np.asarray(kw["task_ids"]).reshape(-1))
    if kw.get("images") is None:
        assert data.images is None
    else:
        assert data.images.dtype == np.uint8 and data.images.ndim == 4 and len(data.images) == T
        np.testing.assert_array_equal(data.images, np.asarray(kw["images"]))


@settings(max_examples=300, **FUZZ)
@given(kw=dataset_kwargs(), data=st.data())
def test_from_arrays_gives_a_valid_dataset_or_names_the_field(kw, data) -> None:
    fields = data.draw(
        st.lists(
            st.sampled_from([*ARRAY_FIELDS, "tasks", "instructions", "empty"]),
            max_size=2,
            unique=True,
        ),
        label="spoilt fields",
    )
    T, dA = np.shape(kw["actions"])
    kw = dict(kw)
    for field in sorted(fields, key=lambda f: f != "empty"):  # empty the valid arrays first
        if field == "empty":
            for name in ("observations", "actions", "rewards", "terminals", "timeouts"):
                kw[name] = np.asarray(kw[name])[:0]
            for name in ("task_ids", "images"):
                if kw.get(name) is not None:
                    kw[name] = kw[name][:0]
        elif field in ("tasks", "instructions"):
            kw[field] = data.draw(names_lists, label=field)
        else:
            kw[field] = mutate_array(data.draw, current(kw, field, T, dA))
    note(f"arguments: {kw!r}")
    names = tuple(n for f in fields for n in NAMES_OF[f])
    out = attempt(lambda: qt.OfflineDataset.from_arrays(**kw), any_of=names)
    if out is not None:
        check_dataset(out, kw)
    else:
        assert fields, "valid arguments were refused"


@settings(max_examples=60, **FUZZ)
@given(
    kw=dataset_kwargs(),
    dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.uint8, np.int64]),
    column=st.booleans(),
)
def test_numeric_flags_equal_their_booleans(kw, dtype, column) -> None:
    """Terminals and timeouts given as 0/1 numbers (D4RL floats), or as a ``(T, 1)`` column,
    give the same dataset as booleans."""
    flags = {k: np.asarray(kw[k]).astype(bool) for k in ("terminals", "timeouts")}
    as_bool = qt.OfflineDataset.from_arrays(**{**kw, **flags})
    numbers = {k: v.astype(dtype)[:, None] if column else v.astype(dtype) for k, v in flags.items()}
    as_numbers = attempt(lambda: qt.OfflineDataset.from_arrays(**{**kw, **numbers}))
    assert_same(as_bool, as_numbers)


# ---------------------------------------------------------------------------------------------
# Saved datasets: round trips and corrupted files


def assert_same(a: qt.OfflineDataset, b: qt.OfflineDataset, skip: tuple[str, ...] = ()) -> None:
    """Same arrays, bounds, tasks and episodes, but for the fields in ``skip``."""
    for name in ("observations", "actions", "rewards", "terminals", "timeouts", "task_ids"):
        if name in skip:
            continue
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.shape == y.shape, f"{name}: {x.shape} != {y.shape}"
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert b.terminals.dtype == bool and b.timeouts.dtype == bool
    assert "images" in skip or (a.images is None) == (b.images is None), "images lost or gained"
    if a.images is not None and b.images is not None:
        assert b.images.dtype == np.uint8
        np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    for name in ("action_low", "action_high"):
        bound = np.asarray(getattr(b, name))
        assert bound.shape == (b.action_dim,), f"{name} of shape {bound.shape}"
        if name not in skip:
            np.testing.assert_array_equal(np.asarray(getattr(a, name)), bound, err_msg=name)
    names = [*b.tasks, *b.instructions]
    assert all(isinstance(t, str) for t in names), f"tasks/instructions not strings: {names}"
    assert len(b.instructions) == len(b.tasks) >= 1, (b.tasks, b.instructions)
    if "tasks" not in skip:
        assert a.tasks == b.tasks
    if "instructions" not in skip:
        assert a.instructions == b.instructions
    np.testing.assert_array_equal(a.episodes.ends, b.episodes.ends)
    np.testing.assert_array_equal(a.episodes.terminated, b.episodes.terminated)


@settings(max_examples=60, **FUZZ)
@given(kw=dataset_kwargs(), mmap=st.booleans())
def test_save_and_save_npz_round_trip(kw, mmap) -> None:
    data = qt.OfflineDataset.from_arrays(**kw)
    with tempfile.TemporaryDirectory() as tmp:
        folder, npz = Path(tmp) / "data", Path(tmp) / "data.npz"
        data.save(folder)
        back = qt.OfflineDataset.open(folder, mmap=mmap)
        assert_same(data, back)
        assert back.fingerprint() == data.fingerprint()
        data.save_npz(npz)
        back = qt.OfflineDataset.open(npz)
        assert_same(data, back)
        assert back.fingerprint() == data.fingerprint()


NPY_CORRUPTIONS = (
    "nan",
    "inf",
    "shorter",
    "longer",
    "no_rows",
    "wrong_dtype",
    "extra_dim",
    "scalar",
    "garbage",
    "truncate",
    "pickle",
    "text",
    "delete",
    "out_of_range",
    "big_endian",
)
WRONG_DTYPES = {
    "f": [np.int64, np.bool_, np.complex64, np.dtype("U3")],
    "b": [np.float32, np.int8, np.uint8],
    "i": [np.float32, np.float64, np.bool_],
    "u": [np.float32, np.int16, np.bool_],
}


def corrupt_npy(draw: st.DrawFn, f: Path, data: qt.OfflineDataset) -> bool:
    """Damage ``f``; True when it was deleted."""
    kind = draw(st.sampled_from(NPY_CORRUPTIONS), label="corruption")
    a = np.load(f)
    if kind == "out_of_range" and f.stem == "actions":
        a = a.copy()
        a.flat[draw(st.integers(0, a.size - 1), label="at")] = data.action_high.max() + 1
        np.save(f, a)
    elif kind == "out_of_range" and f.stem == "task_ids":
        a = a.copy()
        a[draw(st.integers(0, len(a) - 1), label="at")] = draw(
            st.sampled_from([-1, len(data.tasks)]), label="id"
        )
        np.save(f, a)
    elif kind in ("nan", "inf", "out_of_range"):
        a = a.astype(np.float64) if a.dtype.kind != "f" else a.copy()
        a.flat[draw(st.integers(0, a.size - 1), label="at")] = np.nan if kind == "nan" else -np.inf
        np.save(f, a)
    elif kind == "shorter":
        np.save(f, a[:-1])
    elif kind == "longer":
        np.save(f, np.concatenate([a, a[:1]]))
    elif kind == "no_rows":
        np.save(f, a[:0])
    elif kind == "wrong_dtype":
        dtype = draw(st.sampled_from(WRONG_DTYPES[a.dtype.kind]), label="dtype")
        np.save(f, quiet(lambda: a.astype(dtype)))
    elif kind == "extra_dim":
        np.save(f, draw(st.sampled_from([a[..., None], a[None]]), label="reshaped"))
    elif kind == "scalar":
        np.save(f, a.reshape(-1)[0])
    elif kind == "garbage":
        f.write_bytes(draw(st.binary(max_size=300), label="bytes"))
    elif kind == "truncate":
        raw = f.read_bytes()
        f.write_bytes(raw[: draw(st.integers(0, len(raw) - 1), label="kept bytes")])
    elif kind == "pickle":
        np.save(f, a.astype(object), allow_pickle=True)
    elif kind == "text":
        f.write_text("observations,actions\n1,2\n")
    elif kind == "delete":
        f.unlink()
    else:  # big_endian: the same values in another byte order, still valid
        np.save(f, a.astype(a.dtype.newbyteorder(">")))
    return kind == "delete"


@settings(max_examples=100, **FUZZ)
@given(kw=dataset_kwargs(), mmap=st.booleans(), data=st.data())
def test_corrupted_npy_is_refused_naming_the_file(kw, mmap, data) -> None:
    """A damaged ``.npy`` of a saved folder is refused with its path and field in the message,
    or (for a harmless change such as another byte order) opens to the same dataset."""
    original = qt.OfflineDataset.from_arrays(**kw)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        original.save(folder)
        field = data.draw(
            st.sampled_from(sorted(p.stem for p in folder.glob("*.npy"))), label="file"
        )
        deleted = corrupt_npy(data.draw, folder / f"{field}.npy", original)
        back = attempt(
            lambda: qt.OfflineDataset.open(folder, mmap=mmap), all_of=(str(folder), field)
        )
        if back is not None:
            # Optional arrays may be left out: all steps of task 0, no images.
            assert_same(original, back, skip=(field,) if deleted else ())


META_CORRUPTIONS = {
    "action_low": ["abc", ["a", "b", "c"], [float("nan")] * 3, [5.0] * 3, [[-1.0]], None, {}],
    "action_high": [[-5.0] * 3, [], 7, [True, True, True]],
    "tasks": [5, "abc", [], [1, 2, 3], None, {"a": 1}, [None]],
    "instructions": [5, [], None, ["x"] * 5, [1, 2, 3]],
    "metadata": [5, "x", [1], [[1, 2, 3]]],
    "format": ["qtransformer-dataset-v0", None, 1],
}


@settings(max_examples=80, **FUZZ)
@given(kw=dataset_kwargs(), data=st.data())
def test_corrupted_dataset_json_is_refused_naming_it(kw, data) -> None:
    """``dataset.json`` damaged (garbage, cut short, wrong types) is refused naming the file or
    the field, or opens to the same dataset."""
    original = qt.OfflineDataset.from_arrays(**kw)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        original.save(folder)
        meta_file = folder / "dataset.json"
        raw = meta_file.read_bytes()
        kind = data.draw(
            st.sampled_from(["garbage", "truncate", "list", "drop", *META_CORRUPTIONS]),
            label="corruption",
        )
        named: tuple[str, ...] = (str(meta_file),)
        key = None
        if kind == "garbage":
            meta_file.write_bytes(data.draw(st.binary(max_size=200), label="bytes"))
        elif kind == "truncate":
            meta_file.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="kept")])
        elif kind == "list":
            meta_file.write_text("[1, 2, 3]")
        else:
            meta = json.loads(raw)
            if kind == "drop":
                key = data.draw(
                    st.sampled_from(["format", "action_low", "action_high", "tasks"]), label="key"
                )
                del meta[key]
            else:
                key = kind
                meta[key] = data.draw(st.sampled_from(META_CORRUPTIONS[key]), label="value")
            note(f"dataset.json {key} = {meta.get(key, '<missing>')!r}")
            named = (str(meta_file), key)
            meta_file.write_text(json.dumps(meta))
        back = attempt(lambda: qt.OfflineDataset.open(folder), any_of=named)
        if back is not None:
            # Other bounds, tasks or instructions that fit the data are an edit, not damage.
            assert_same(original, back, skip=(key,) if key else ())
            if key in ("action_low", "action_high"):
                value = np.asarray(json.loads(meta_file.read_text())[key], np.float64)
                np.testing.assert_array_equal(getattr(back, key), value.reshape(-1))


NPZ_CORRUPTIONS = (
    "truncate",
    "garbage",
    "text",
    "empty",
    "npy",
    "flip",
    "flip_compressed",
    "pickle",
    "drop",
    "nan",
)


@settings(max_examples=150, **FUZZ)
@given(kw=dataset_kwargs(), data=st.data())
def test_corrupted_npz_is_refused_naming_the_file(kw, data) -> None:
    original = qt.OfflineDataset.from_arrays(**kw)
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "data.npz"
        original.save_npz(f)
        raw = f.read_bytes()
        kind = data.draw(st.sampled_from(NPZ_CORRUPTIONS), label="corruption")
        dropped = None
        arrays = dict(np.load(f))
        if kind == "truncate":
            f.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="kept bytes")])
        elif kind == "garbage":
            f.write_bytes(data.draw(st.binary(max_size=400), label="bytes"))
        elif kind == "text":
            f.write_text(data.draw(st.text(max_size=50), label="text"))
        elif kind == "empty":
            f.write_bytes(b"")
        elif kind == "npy":  # a .npy file under a .npz name
            with open(f, "wb") as fh:
                np.save(fh, arrays["observations"])
        elif kind in ("flip", "flip_compressed"):
            if kind == "flip_compressed":
                np.savez_compressed(f, **arrays)
                raw = f.read_bytes()
            buf = bytearray(raw)
            at = data.draw(st.integers(0, len(buf) - 1), label="at")
            buf[at] ^= data.draw(st.integers(1, 255), label="xor")
            f.write_bytes(bytes(buf))
        elif kind == "pickle":
            name = data.draw(st.sampled_from(sorted(arrays)), label="array")
            arrays[name] = arrays[name].astype(object)
            np.savez(f, **arrays)
        elif kind == "drop":
            dropped = data.draw(st.sampled_from(sorted(arrays)), label="array")
            del arrays[dropped]
            np.savez(f, **arrays)
        else:
            name = data.draw(
                st.sampled_from(["observations", "actions", "rewards", "action_low"]),
                label="array",
            )
            a = arrays[name].astype(np.float64)
            a.flat[data.draw(st.integers(0, a.size - 1), label="at")] = np.nan
            arrays[name] = a
            np.savez(f, **arrays)
        back = attempt(lambda: qt.OfflineDataset.open(f), all_of=(str(f),))
        if back is not None:
            # A .npz may leave out the optional arrays (D4RL files do): their defaults apply.
            assert_same(original, back, skip=(dropped,) if dropped else ())


@pytest.mark.parametrize("name", ["missing.npz", "missing", "missing/data.npz"])
def test_opening_nothing_names_the_path(tmp_path, name) -> None:
    path = tmp_path / name
    with pytest.raises((FileNotFoundError, ValueError), match=path.name):
        qt.OfflineDataset.open(path)


# ---------------------------------------------------------------------------------------------
# Agent.act and Agent.q_values

TASKS = ["a-v3", "b-v3"]
INSTRUCTIONS = ["do a", "do b"]


@pytest.fixture(scope="module", params=["one-task", "two-tasks"])
def agent(request) -> qt.Agent:
    """A one-task agent (window 1) and a two-task agent (window 2), trained once."""
    torch.manual_seed(0)
    arrays = make_tiny_arrays()
    if request.param == "one-task":
        return qt.train(qt.OfflineDataset.from_arrays(**arrays), qt.TrainConfig(**TINY_TRAIN))
    data = qt.OfflineDataset.from_arrays(
        **arrays,
        task_ids=np.repeat([0, 1], [17, 18]).astype(np.int32),
        tasks=TASKS,
        instructions=INSTRUCTIONS,
    )
    return qt.train(data, qt.TrainConfig(**{**TINY_TRAIN, "window": 2}))


OBS_KINDS = (
    "valid",
    "list",
    "tensor",
    "dict",
    "bad_dict",
    "special",
    "shape",
    "garbage",
    "object",
    "nested",
    "complex",
    "scalar",
    "empty",
)


@st.composite
def observations(draw: st.DrawFn, d: int, w: int) -> Any:
    B = draw(st.integers(0, 4), label="B")
    shape = draw(st.sampled_from([(B, d), (B, w, d)]), label="shape")
    values = draw(hnp.arrays(np.float64, shape, elements=st.floats(-100, 100)))
    kind = draw(st.sampled_from(OBS_KINDS), label="kind")
    if kind == "valid":
        dtype = draw(
            st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.uint8, np.bool_])
        )
        return np.abs(values).astype(dtype) if dtype == np.uint8 else values.astype(dtype)
    if kind == "list":
        return values.tolist()
    if kind == "tensor":
        return torch.from_numpy(values.astype(np.float32))
    if kind == "dict":
        return {"state": values}
    if kind == "bad_dict":
        return draw(
            st.sampled_from(
                [{"foo": values}, {}, {"image": values}, {"state": values, "extra": values}]
            )
        )
    if kind == "special":
        if values.size:
            values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from(SPECIALS))
        dtype = draw(st.sampled_from(FLOAT_DTYPES))
        return quiet(lambda: values.astype(dtype))
    if kind == "shape":
        return draw(
            hnp.arrays(
                np.float32,
                hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=d + 1),
                elements=st.floats(-10, 10, width=32),
            )
        )
    if kind == "garbage":
        return draw(garbage_arrays)
    if kind == "object":
        return values.astype(object)
    if kind == "nested":
        return draw(nested_lists)
    if kind == "complex":
        return values.astype(np.complex128)
    if kind == "scalar":
        return draw(st.sampled_from([None, "abc", 1.0, b"x", np.float32(1)]))
    return draw(st.sampled_from([np.zeros((0, d)), np.zeros((0, w, d)), np.zeros((0,)), [], [[]]]))


def state_of(obs: Any) -> Any:
    if isinstance(obs, torch.Tensor):
        return obs.numpy()
    if isinstance(obs, Mapping):
        return obs.get("state") if set(obs) == {"state"} else None
    return obs


def observations_ok(obs: Any, d: int, w: int) -> bool:
    """Numbers (not complex, strings or objects) of shape ``(B, d)`` or ``(B, w, d)`` that are
    finite as float32; B may be 0."""
    state = state_of(obs)
    if state is None:
        return False
    try:
        a = np.asarray(state)
    except ValueError:
        return False
    if a.dtype.kind not in "biuf" or a.shape[1:] not in ((d,), (w, d)):
        return False
    return bool(quiet(lambda: np.isfinite(a.astype(np.float32)).all()))


def batch_of(obs: Any) -> int:
    try:
        a = np.asarray(state_of(obs))
    except ValueError:
        return 1
    return a.shape[0] if a.ndim else 1


def task_args(names: list[str], B: int) -> st.SearchStrategy:
    good = st.sampled_from([*names, *range(len(names)), np.int64(0), np.int32(len(names) - 1)])
    bad = st.sampled_from(
        ["", "c-v3", names[0].upper(), -1, len(names), 0.5, 1.0, True, False, np.float64(0)]
        + [np.array(0), np.bool_(True), 10**30, [[0]], b"a", np.nan]
    )
    return st.one_of(
        st.none(),
        good,
        st.lists(good, min_size=B, max_size=B),
        st.lists(good, min_size=B, max_size=B).map(np.array),
        st.lists(good | bad, max_size=B + 2),
        st.lists(good | bad, min_size=B, max_size=B),
        bad,
    )


def instruction_args(instructions: list[str], B: int) -> st.SearchStrategy:
    good = st.sampled_from(instructions)
    odd = st.sampled_from([5, 0.5, None, b"do a", ["do a"], np.str_(instructions[0])])
    return st.one_of(
        st.none(),
        good,
        st.lists(good, min_size=B, max_size=B),
        st.lists(good | st.text(max_size=4), max_size=B + 2),
        st.lists(good | odd, min_size=B, max_size=B),
        st.text(max_size=6),
        odd,
    )


def one_task_ok(t: Any, names: list[str]) -> bool:
    if isinstance(t, (str, np.str_)):
        return t in names
    if isinstance(t, (int, np.integer)) and not isinstance(t, (bool, np.bool_)):
        return 0 <= t < len(names)
    return False


def per_row(arg: Any, B: int) -> list[Any] | None:
    """The items of a per-row list or 1-D array of ``B`` entries, else None."""
    if isinstance(arg, (list, tuple)) or (isinstance(arg, np.ndarray) and arg.ndim == 1):
        return list(arg) if len(arg) == B else None
    return None


def condition_ok(agent: qt.Agent, task: Any, instruction: Any, B: int) -> bool:
    multi = agent.model.task_proj is not None
    if task is not None and instruction is not None:
        return False
    if task is None and instruction is None:
        return not multi
    if task is not None:
        if one_task_ok(task, agent.tasks):
            return True
        rows = per_row(task, B)
        return rows is not None and all(one_task_ok(t, agent.tasks) for t in rows)
    if isinstance(instruction, str):
        return instruction in agent.instructions
    rows = per_row(instruction, B)
    return rows is not None and all(isinstance(t, str) and t in agent.instructions for t in rows)


OBS_NAMES = ("observation", "state", "image")
COND_NAMES = ("task", "instruction")


@settings(max_examples=200, **FUZZ)
@given(data=st.data())
def test_act_gives_bounded_actions_or_names_the_argument(agent, data) -> None:
    cfg = agent.config
    obs = data.draw(observations(cfg.obs_dim, cfg.window), label="observations")
    B = batch_of(obs)
    task = data.draw(task_args(agent.tasks, B), label="task")
    instruction = data.draw(instruction_args(agent.instructions, B), label="instruction")
    obs_ok = observations_ok(obs, cfg.obs_dim, cfg.window)
    cond_ok = condition_ok(agent, task, instruction, B)
    names = (() if obs_ok else OBS_NAMES) + (() if cond_ok else COND_NAMES)
    out = attempt(lambda: agent.act(obs, task=task, instruction=instruction), any_of=names)
    if out is None:  # refused, naming what was wrong
        return
    assert obs_ok and cond_ok, "invalid input accepted"
    out = np.asarray(out)
    assert out.shape == (B, cfg.action_dim)
    assert np.isfinite(out).all()
    assert ((out >= agent.discretizer.low) & (out <= agent.discretizer.high)).all()
    as_floats = np.asarray(state_of(obs), np.float32)
    np.testing.assert_array_equal(agent.act(as_floats, task=task, instruction=instruction), out)


@st.composite
def bins_args(draw: st.DrawFn, B: int, dA: int, N: int) -> Any:
    kind = draw(
        st.sampled_from(
            [
                "valid",
                "list",
                "out_of_range",
                "fraction",
                "whole_floats",
                "nan",
                "shape",
                "batch",
                "strings",
                "object",
                "bool",
                "complex",
            ]
        ),
        label="bins kind",
    )
    good = draw(
        hnp.arrays(
            st.sampled_from([np.int8, np.int32, np.int64, np.uint8, np.uint64]),
            (B, dA),
            elements=st.integers(0, N - 1),
        )
    ).astype(np.int64)
    if kind == "valid":
        return good
    if kind == "list":
        return good.tolist()
    if kind == "whole_floats":
        return good.astype(np.float32)
    if kind == "bool":
        return good.astype(bool)
    if kind == "strings":
        return good.astype(str)
    if kind == "object":
        return good.astype(object)
    if kind == "complex":
        return good.astype(np.complex64)
    if kind == "batch":
        rows = draw(st.integers(0, B + 2).filter(lambda r: r != B), label="rows")
        return np.zeros((rows, dA), np.int64)
    if kind == "shape":
        return draw(
            hnp.arrays(
                np.int64,
                hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
                elements=st.integers(0, N - 1),
            )
        )
    if B == 0:
        return good
    a = good.astype(np.float64)
    value = {"out_of_range": draw(st.sampled_from([-1, N, 2**40, -(2**62)])), "fraction": 0.5}.get(
        kind, np.nan
    )
    a.flat[draw(st.integers(0, a.size - 1))] = value
    return a.astype(np.int64) if kind == "out_of_range" else a


def bins_ok(bins: Any, B: int, dA: int, N: int) -> bool | None:
    """True for integer bins ``(B, dA)`` in ``[0, N)``, None (either outcome) for whole floats
    or booleans, False otherwise."""
    try:
        a = np.asarray(bins)
    except ValueError:
        return False
    if a.shape != (B, dA) or a.dtype.kind not in "iufb":
        return False
    inside = quiet(lambda: bool(((a >= 0) & (a < N)).all()))
    if a.dtype.kind in "iu":
        return inside
    if a.dtype.kind == "b":
        return None
    whole = quiet(lambda: bool((np.isfinite(a) & (a == np.round(a))).all()))
    return None if whole and inside else False


@settings(max_examples=150, **FUZZ)
@given(data=st.data())
def test_q_values_are_finite_or_name_the_argument(agent, data) -> None:
    cfg = agent.config
    dA, N = cfg.action_dim, cfg.n_bins
    if data.draw(st.integers(0, 3), label="valid observations?"):
        B = data.draw(st.integers(0, 4), label="B")
        obs: Any = data.draw(hnp.arrays(np.float32, (B, cfg.obs_dim), elements=st.floats(-9, 9)))
    else:
        obs = data.draw(observations(cfg.obs_dim, cfg.window), label="observations")
    B = batch_of(obs)
    task = data.draw(task_args(agent.tasks, B), label="task")
    bins = data.draw(bins_args(B, dA, N), label="bins")
    obs_ok = observations_ok(obs, cfg.obs_dim, cfg.window)
    cond_ok = condition_ok(agent, task, None, B)
    b_ok = bins_ok(bins, B, dA, N)
    names = (
        (() if obs_ok else OBS_NAMES)
        + (() if cond_ok else COND_NAMES)
        + (() if b_ok else ("bins", "batch"))
    )
    q = attempt(lambda: agent.q_values(obs, bins, task=task), any_of=names)
    if q is None:  # refused, naming what was wrong
        return
    assert obs_ok and cond_ok and b_ok is not False, "invalid input accepted"
    assert q.shape == (B, dA, N) and np.isfinite(q).all()
    if b_ok and B:
        # Greedy bins are the argmax of their own Q-values (up to float noise).
        greedy, chosen = agent.act_bins(obs, task=task)
        q = agent.q_values(obs, greedy, task=task)
        picked = np.take_along_axis(q, greedy[..., None], -1)[..., 0]
        assert (picked >= q.max(-1) - 1e-5).all()
        np.testing.assert_allclose(picked, chosen, atol=1e-5)
