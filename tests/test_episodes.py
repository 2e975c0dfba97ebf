"""Episodes: validation errors name the field and the episode; flattening round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import HIGH, LOW, assert_same_episodes, make_episode
from hypothesis import given, settings
from hypothesis import strategies as st

import qtransformer as qt
from qtransformer.data.episodes import DatasetError, Episode, validate_episodes
from qtransformer.data.sampler import TransitionSampler
from qtransformer.discretize import ActionDiscretizer
from qtransformer.returns import window_indices


def broken(field: str, value) -> Episode:
    ep = make_episode()
    setattr(ep, field, value)
    return ep


@pytest.mark.parametrize(
    "episode,message",
    [
        (
            broken("observations", np.full((5, 3), np.nan, np.float32)),
            r"episode 1 \(push-v3\): observations contains NaN or inf at step 0",
        ),
        (
            broken("actions", np.array([[0, 0], [np.inf, 0], [0, 0], [0, 0]], np.float32)),
            r"episode 1 \(push-v3\): actions contains NaN or inf at step 1",
        ),
        (
            broken("rewards", np.zeros(3, np.float32)),
            r"episode 1 \(push-v3\): rewards has 3 steps, expected 4",
        ),
        (
            broken("observations", np.zeros((4, 3), np.float32)),
            r"episode 1 \(push-v3\): observations has 4 steps, expected 5",
        ),
        (
            broken("actions", np.array([[0, 0], [0, 1.5], [0, 0], [0, 0]], np.float32)),
            r"episode 1 \(push-v3\): actions\[1, 1\] = 1.5 outside the bounds \[-1.0, 1.0\]",
        ),
        (
            broken("rewards", np.array([0, 0, 0, 2.0], np.float32)),
            r"episode 1 \(push-v3\): rewards\[3\] = 2.0 outside the declared range \[0.0, 1.0\]",
        ),
        (broken("task", "fly-v3"), r"episode 1 \(fly-v3\): unknown task 'fly-v3'"),
        (
            Episode(
                np.zeros((1, 3), np.float32),
                np.zeros((0, 2), np.float32),
                np.zeros(0, np.float32),
                False,
                True,
                "push-v3",
                "",
            ),
            r"episode 1 \(push-v3\): empty episode",
        ),
        (
            broken("images", np.zeros((5, 4, 4, 3), np.float32)),
            r"episode 1 \(push-v3\): images must be uint8",
        ),
    ],
)
def test_every_validation_error_names_field_and_episode(episode, message) -> None:
    with pytest.raises(DatasetError, match=message):
        validate_episodes([make_episode(), episode], LOW, HIGH, tasks=["push-v3", "reach-v3"])


def test_mixed_shapes_and_image_presence_are_errors() -> None:
    odd = make_episode()
    odd.observations = np.zeros((5, 4), np.float32)
    with pytest.raises(DatasetError, match="episode 1: observations have shape"):
        validate_episodes([make_episode(), odd])
    with pytest.raises(DatasetError, match="images present in some episodes"):
        validate_episodes([make_episode(images=True), make_episode()])
    with pytest.raises(DatasetError, match="no episodes"):
        validate_episodes([])


def test_from_episodes_flattens_with_tasks_and_round_trips() -> None:
    eps = [
        make_episode(3, True, "push-v3", 0, True),
        make_episode(5, False, "reach-v3", 1, True),
        make_episode(2, True, "reach-v3", 2, True),
    ]
    data = qt.OfflineDataset.from_episodes(eps, LOW, HIGH, metadata={"recipe": "x"})
    assert len(data) == 10 and data.num_episodes == 3
    assert data.tasks == ["push-v3", "reach-v3"]
    assert data.task_ids.tolist() == [0] * 3 + [1] * 7
    assert data.terminals.tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert data.timeouts.tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    np.testing.assert_array_equal(data.observations[3:8], eps[1].observations[:-1])
    assert data.images.shape == (10, 4, 4, 3)
    assert_same_episodes(eps, data.to_episodes())


def test_store_round_trip_memory_maps(tmp_path) -> None:
    eps = [make_episode(4, True, seed=0, images=True), make_episode(6, False, seed=1, images=True)]
    data = qt.OfflineDataset.from_episodes(eps, LOW, HIGH, metadata={"action_repeat": 4})
    data.save(tmp_path / "store")
    back = qt.OfflineDataset.open(tmp_path / "store")
    assert isinstance(back.observations, np.memmap) and isinstance(back.images, np.memmap)
    np.testing.assert_array_equal(back.observations, data.observations)
    np.testing.assert_array_equal(back.final_images, data.final_images)
    assert back.metadata == {"action_repeat": 4} and back.tasks == ["push-v3"]
    agent = qt.train(
        back, qt.TrainConfig(steps=2, batch_size=4, n_bins=5, d_model=16, n_layers=1, n_heads=2)
    )
    assert agent.act(np.asarray(back.observations[:2])).shape == (2, 2)


def test_unknown_task_id_in_arrays(tiny_arrays) -> None:
    ids = np.zeros(len(tiny_arrays["rewards"]), np.int32)
    ids[9] = 2
    with pytest.raises(ValueError, match=r"task_ids\[9\] = 2 names no task: there are 2"):
        qt.OfflineDataset.from_arrays(**tiny_arrays, task_ids=ids, tasks=["a", "b"])


episode_specs = st.lists(
    st.tuples(st.integers(1, 9), st.booleans(), st.sampled_from(["a-v3", "b-v3", "c-v3"])),
    min_size=1,
    max_size=7,
)


@settings(max_examples=50, deadline=None)
@given(specs=episode_specs, window=st.integers(1, 4))
def test_flattening_properties(specs, window) -> None:
    eps = [make_episode(T, s, task, seed=i) for i, (T, s, task) in enumerate(specs)]
    data = qt.OfflineDataset.from_episodes(eps, LOW, HIGH)
    lengths = [T for T, _, _ in specs]
    assert data.episodes.lengths.tolist() == lengths
    assert data.episodes.terminated.tolist() == [s for _, s, _ in specs]
    assert [data.tasks[data.task_ids[a]] for a in data.episodes.starts] == [t for *_, t in specs]
    assert float(data.rewards.sum()) == sum(s for _, s, _ in specs)
    # The sampler's on-the-fly windows equal the reference windows and stay in the episode.
    sampler = TransitionSampler(data, ActionDiscretizer(LOW, HIGH, 4), 0.9, 2, window)
    idx = np.arange(len(data))
    np.testing.assert_array_equal(sampler.windows(idx), window_indices(data.episodes, window))
    batch = sampler.batch(torch.as_tensor(idx))
    for t in range(len(data)):
        e = data.episodes.episode_of_step[t]
        first = data.episodes.starts[e]
        expected = [data.observations[max(first, t - window + 1 + j)] for j in range(window)]
        np.testing.assert_array_equal(batch.obs[t].numpy(), np.stack(expected))
    back = data.to_episodes()
    for a, b in zip(eps, back, strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
