"""Minari files written here open with minari itself, and round-trip."""

from __future__ import annotations

import numpy as np
import pytest
from factories import HIGH, LOW, assert_same_episodes, make_episode

import qtransformer as qt
from qtransformer.data.minari_io import read_minari, write_minari


@pytest.fixture
def episodes():
    return [
        make_episode(4, True, "push-v3", 0, True),
        make_episode(6, False, "reach-v3", 1, True),
        make_episode(3, True, "reach-v3", 2, True),
    ]


def test_written_dataset_loads_through_minari(episodes, tmp_path, monkeypatch) -> None:
    import minari

    write_minari(
        episodes,
        tmp_path,
        "toy-mixed-v0",
        action_low=LOW,
        action_high=HIGH,
        metadata={"preset": "mixed", "action_repeat": 2},
    )
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    ds = minari.load_dataset("toy-mixed-v0")
    assert ds.total_episodes == 3 and ds.total_steps == 13
    ep = next(ds.iterate_episodes())
    np.testing.assert_array_equal(ep.observations["state"], episodes[0].observations)
    np.testing.assert_array_equal(ep.observations["image"], episodes[0].images)
    meta = ds.storage.metadata["qtransformer"]
    assert meta["preset"] == "mixed" and meta["tasks"] == ["push-v3", "reach-v3"]
    assert meta["instructions"]["reach-v3"] == "do reach-v3"
    np.testing.assert_array_equal(ds.action_space.low, LOW)
    kinds = [m["kind"] for m in ds.storage.get_episode_metadata(range(3))]
    assert kinds == ["demo", "failure", "demo"]


def test_round_trip_minari_flat_minari(episodes, tmp_path) -> None:
    write_minari(episodes, tmp_path, "a-v0", action_low=LOW, action_high=HIGH)
    data = qt.OfflineDataset.from_minari(tmp_path / "a-v0")
    assert data.tasks == ["push-v3", "reach-v3"] and len(data) == 13
    write_minari(
        data.to_episodes(),
        tmp_path,
        "b-v0",
        action_low=data.action_low,
        action_high=data.action_high,
    )
    again, meta = read_minari(tmp_path / "b-v0")
    assert meta["tasks"] == ["push-v3", "reach-v3"]
    assert_same_episodes(episodes, again)


def test_reads_a_plain_minari_dataset_of_another_origin(tmp_path, monkeypatch) -> None:
    """A dataset made with minari's own API (no qtransformer metadata), as users download."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    rng = np.random.default_rng(0)
    bufs = [
        EpisodeBuffer(
            id=i,
            observations=rng.normal(size=(6, 5)).astype(np.float32),
            actions=rng.uniform(-2, 2, (5, 3)).astype(np.float32),
            rewards=rng.uniform(0, 1, 5),
            terminations=np.r_[[False] * 4, [i == 0]],
            truncations=np.r_[[False] * 4, [i == 1]],
            infos={},
        )
        for i in range(2)
    ]
    minari.create_dataset_from_buffers(
        "other/hopper/medium-v0",
        bufs,
        observation_space=gym.spaces.Box(-np.inf, np.inf, (5,), np.float32),
        action_space=gym.spaces.Box(-2, 2, (3,), np.float32),
        algorithm_name="x",
    )
    data = qt.OfflineDataset.open("other/hopper/medium-v0")
    assert len(data) == 10 and data.tasks == ["other/hopper/medium-v0"]
    np.testing.assert_array_equal(data.action_high, [2, 2, 2])
    assert data.terminals.tolist()[4] and data.timeouts.tolist()[9]
    agent = qt.train(
        data, qt.TrainConfig(steps=2, batch_size=4, n_bins=5, d_model=16, n_layers=1, n_heads=2)
    )
    assert agent.q_max > 1  # dense rewards: bounded by r_max / (1 - gamma)


def test_interrupted_write_leaves_nothing_and_refuses_overwrite(episodes, tmp_path) -> None:
    bad = make_episode()
    bad.rewards = np.array([0, np.nan, 0, 0], np.float32)
    with pytest.raises(ValueError, match="episode 3"):
        write_minari([*episodes, bad], tmp_path, "c-v0", action_low=LOW, action_high=HIGH)
    assert not list(tmp_path.iterdir())
    write_minari(episodes, tmp_path, "c-v0", action_low=LOW, action_high=HIGH)
    with pytest.raises(FileExistsError, match="c-v0 exists"):
        write_minari(episodes, tmp_path, "c-v0", action_low=LOW, action_high=HIGH)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c-v0"]


def test_missing_dataset_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="neither a Minari dataset folder nor"):
        read_minari("nope-v0")
