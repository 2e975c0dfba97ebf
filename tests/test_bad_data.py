"""Bad data is an error naming the field and the file, whatever the source, on open."""

from __future__ import annotations

import json

import numpy as np
import pytest

import qtransformer as qt
from qtransformer.data.episodes import DatasetError, Episode


@pytest.fixture
def saved(tiny_arrays, tmp_path):
    folder = tmp_path / "data"
    qt.OfflineDataset.from_arrays(**tiny_arrays).save(folder)
    return folder


def test_saved_folder_is_validated_on_open_nan_rewards(saved) -> None:
    rewards = np.load(saved / "rewards.npy")
    rewards[3] = np.nan
    np.save(saved / "rewards.npy", rewards)
    with pytest.raises(
        ValueError, match=r"rewards\.npy: rewards contains NaN or inf at index \(3,\)"
    ):
        qt.OfflineDataset.open(saved)


def test_saved_folder_is_validated_on_open_short_actions(saved) -> None:
    np.save(saved / "actions.npy", np.load(saved / "actions.npy")[:30])
    with pytest.raises(ValueError, match=r"array lengths disagree: .*'actions': 30"):
        qt.OfflineDataset.open(saved)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("terminals", np.full(35, 0.3), "terminals.npy: terminals must be 1-D booleans"),
        ("task_ids", np.full(35, 0.5), "task_ids.npy: task_ids must be 1-D integers"),
        ("task_ids", np.full(35, 7), r"task_ids.npy: task_ids\[0\] = 7 names no task"),
        ("observations", np.zeros((35, 6), object), "observations.npy: not a readable .npy"),
    ],
)
def test_saved_folder_field_errors_name_the_file(saved, name, content, message) -> None:
    np.save(saved / f"{name}.npy", content)
    with pytest.raises(ValueError, match=message):
        qt.OfflineDataset.open(saved)


def test_truncated_npy_and_broken_json_name_the_file(saved) -> None:
    blob = (saved / "observations.npy").read_bytes()
    (saved / "observations.npy").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"observations\.npy: not a readable \.npy"):
        qt.OfflineDataset.open(saved, mmap=False)
    (saved / "dataset.json").write_text('{"format": ')
    with pytest.raises(ValueError, match=r"dataset\.json is not valid JSON"):
        qt.OfflineDataset.open(saved)


def test_missing_array_or_metadata_is_named(saved) -> None:
    (saved / "timeouts.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"timeouts\.npy is missing"):
        qt.OfflineDataset.open(saved)
    (saved / "dataset.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no dataset\.json"):
        qt.OfflineDataset.open(saved)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (np.array(["0"] * 35), "terminals must be numeric"),
        (np.r_[np.zeros(34), [np.nan]], r"terminals must be booleans \(or 0/1\), got .*nan"),
        (np.r_[np.zeros(34), [0.3]], r"terminals must be booleans \(or 0/1\), got .*0.3"),
        (np.r_[np.zeros(34), [2]], r"terminals must be booleans \(or 0/1\), got 2.0 at index 34"),
    ],
)
def test_flags_are_strict_booleans(tiny_arrays, flags, message) -> None:
    with pytest.raises(ValueError, match=message):
        qt.OfflineDataset.from_arrays(**{**tiny_arrays, "terminals": flags})


def test_flags_given_as_zero_one_floats_are_booleans(tiny_arrays) -> None:
    as_bool = qt.OfflineDataset.from_arrays(**tiny_arrays)
    as_float = qt.OfflineDataset.from_arrays(
        **{**tiny_arrays, "terminals": tiny_arrays["terminals"].astype(np.float32)}
    )
    np.testing.assert_array_equal(as_float.terminals, as_bool.terminals)
    assert as_float.terminals.dtype == bool


def test_terminal_and_timeout_on_one_step_agree_across_sources(tiny_arrays) -> None:
    # Gymnasium allows both flags; a true terminal wins, from arrays and from episodes alike.
    arrays = dict(tiny_arrays)
    end = int(np.flatnonzero(arrays["terminals"])[0])
    arrays["timeouts"] = arrays["timeouts"].copy()
    arrays["timeouts"][end] = True
    flat = qt.OfflineDataset.from_arrays(**arrays)
    episodes = flat.to_episodes()
    episodes[0].truncated = True  # both set, as the flat step
    again = qt.OfflineDataset.from_episodes(episodes, flat.action_low, flat.action_high)
    assert bool(flat.episodes.terminated[0]) and bool(again.episodes.terminated[0])
    np.testing.assert_array_equal(flat.episodes.ends, again.episodes.ends)


def test_d4rl_npz_with_extra_keys_loads_and_says_which_were_left(
    tiny_arrays, tmp_path, caplog
) -> None:
    path = tmp_path / "hopper-medium.npz"
    T = len(tiny_arrays["rewards"])
    np.savez(
        path,
        **tiny_arrays,
        next_observations=tiny_arrays["observations"],
        **{"infos/qpos": np.zeros((T, 3)), "metadata/algorithm": np.array("SAC")},
    )
    with caplog.at_level("INFO"):
        data = qt.OfflineDataset.open(path)
    assert len(data) == T
    assert "arrays not used: infos/qpos, metadata/algorithm, next_observations" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"observations,actions\n1,2\n", "not a readable .npz"),
        (b"", "not a readable .npz"),
    ],
)
def test_a_file_that_is_not_an_npz_is_named(tmp_path, content, message) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        qt.OfflineDataset.open(path)
    assert str(path) in str(info.value) and "pickled" not in str(info.value)


def test_truncated_npz_and_missing_file_are_named(tiny_arrays, tmp_path) -> None:
    path = tmp_path / "data.npz"
    qt.OfflineDataset.from_arrays(**tiny_arrays).save_npz(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"data\.npz: not a readable \.npz"):
        qt.OfflineDataset.open(path)
    with pytest.raises(FileNotFoundError, match=r"nothing\.npz: no such \.npz file"):
        qt.OfflineDataset.open(tmp_path / "nothing.npz")


def test_npz_field_errors_name_the_file(tiny_arrays, tmp_path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **{**tiny_arrays, "rewards": np.full(35, np.inf, np.float32)})
    with pytest.raises(ValueError, match=r"data\.npz: rewards contains NaN or inf at index"):
        qt.OfflineDataset.open(path)


def minari_episodes(n: int = 3) -> list[Episode]:
    rng = np.random.default_rng(0)
    return [
        Episode(
            observations=rng.normal(size=(6, 4)).astype(np.float32),
            actions=rng.uniform(-1, 1, size=(5, 2)).astype(np.float32),
            rewards=np.r_[np.zeros(4), [1.0]].astype(np.float32),
            terminated=True,
            truncated=False,
            task="reach-v3",
            instruction="reach the goal",
        )
        for _ in range(n)
    ]


def test_truncated_minari_hdf5_is_named(tmp_path) -> None:
    from qtransformer.data.minari_io import write_minari

    path = write_minari(
        minari_episodes(), tmp_path, "toy-v0", action_low=-np.ones(2), action_high=np.ones(2)
    )
    h5 = path / "data" / "main_data.hdf5"
    h5.write_bytes(h5.read_bytes()[:500])
    with pytest.raises(DatasetError, match=r"toy-v0: not a readable Minari dataset") as info:
        qt.OfflineDataset.open(path)
    assert isinstance(info.value, ValueError)


def test_broken_minari_metadata_is_named(tmp_path) -> None:
    from qtransformer.data.minari_io import write_minari

    path = write_minari(
        minari_episodes(), tmp_path, "toy-v0", action_low=-np.ones(2), action_high=np.ones(2)
    )
    (path / "data" / "metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"toy-v0: not a readable Minari dataset"):
        qt.OfflineDataset.open(path)


def test_dataset_json_of_another_kind_is_named(saved) -> None:
    (saved / "dataset.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"dataset\.json has format 'list'"):
        qt.OfflineDataset.open(saved)


def test_npz_with_a_misspelt_array_is_refused_naming_it(tiny_arrays, tmp_path) -> None:
    path = tmp_path / "data.npz"
    T = len(tiny_arrays["rewards"])
    np.savez(path, **tiny_arrays, task_id=np.zeros(T, np.int64))
    with pytest.raises(ValueError, match=r"data\.npz: unknown arrays \['task_id'\]"):
        qt.OfflineDataset.open(path)
