from __future__ import annotations

import numpy as np
import pytest
import torch

import qtransformer as qt
from qtransformer.data.sampler import TransitionSampler
from qtransformer.discretize import ActionDiscretizer


def test_from_arrays_defaults_bounds_to_data_range(tiny_arrays) -> None:
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    np.testing.assert_allclose(data.action_low, tiny_arrays["actions"].min(0), rtol=1e-6)
    np.testing.assert_allclose(data.action_high, tiny_arrays["actions"].max(0), rtol=1e-6)
    assert data.num_episodes == 6 and len(data) == 35


def test_constant_action_dimension_gets_a_usable_range(tiny_arrays) -> None:
    tiny_arrays["actions"][:, 1] = 0.25
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    assert data.action_low[1] < 0.25 < data.action_high[1]


@pytest.mark.parametrize(
    "field,mutate,message",
    [
        (
            "observations",
            lambda a: a.__setitem__((3, 2), np.nan),
            r"observations contains NaN or inf at index \(3, 2\)",
        ),
        (
            "actions",
            lambda a: a.__setitem__((1, 0), np.inf),
            r"actions contains NaN or inf at index \(1, 0\)",
        ),
        ("rewards", lambda a: a.__setitem__(4, np.nan), r"rewards contains NaN"),
    ],
)
def test_nan_and_inf_are_named(tiny_arrays, field, mutate, message) -> None:
    mutate(tiny_arrays[field])
    with pytest.raises(ValueError, match=message):
        qt.OfflineDataset.from_arrays(**tiny_arrays)


def test_lengths_that_disagree(tiny_arrays) -> None:
    tiny_arrays["rewards"] = tiny_arrays["rewards"][:-1]
    with pytest.raises(ValueError, match="array lengths disagree.*'rewards': 34"):
        qt.OfflineDataset.from_arrays(**tiny_arrays)


def test_action_out_of_declared_bounds(tiny_arrays) -> None:
    tiny_arrays["actions"][7, 2] = 1.5
    with pytest.raises(
        ValueError, match=r"actions\[7, 2\] = 1.5 is outside the bounds \[-1.0, 1.0\]"
    ):
        qt.OfflineDataset.from_arrays(**tiny_arrays, action_low=-np.ones(3), action_high=np.ones(3))


def test_wrong_shapes_and_empty(tiny_arrays) -> None:
    with pytest.raises(ValueError, match="observations must have 2 dimension"):
        qt.OfflineDataset.from_arrays(
            **{**tiny_arrays, "observations": tiny_arrays["observations"][:, 0]}
        )
    with pytest.raises(ValueError, match=r"action_low/action_high must have shape \(3,\)"):
        qt.OfflineDataset.from_arrays(**tiny_arrays, action_low=-np.ones(2), action_high=np.ones(2))
    empty = {k: v[:0] for k, v in tiny_arrays.items()}
    with pytest.raises(ValueError, match="empty dataset"):
        qt.OfflineDataset.from_arrays(**empty)


def test_q_max_is_one_for_sparse_success_and_bounded_otherwise(tiny_arrays) -> None:
    assert qt.OfflineDataset.from_arrays(**tiny_arrays).default_q_max(0.9) == 1.0
    tiny_arrays["rewards"][0] = 0.5  # a reward on a non-terminal step: dense rewards
    assert qt.OfflineDataset.from_arrays(**tiny_arrays).default_q_max(0.9) == pytest.approx(10.0)


@pytest.mark.parametrize(
    "rewards,gamma,expected",
    [
        ({2: -1.0}, 0.9, (-10.0, 10.0)),  # a cost beside the success reward of 1
        ("cost", 0.99, (-100.0, 0.0)),  # -1 per step, 0 at the goal (goal reaching)
        ({0: 0.5, 3: -2.0}, 0.5, (-4.0, 2.0)),  # dense, both signs
    ],
)
def test_value_range_follows_the_reward_range_and_gamma(tiny_arrays, rewards, gamma, expected):
    r = tiny_arrays["rewards"]
    if rewards == "cost":
        r[:] = np.where(tiny_arrays["terminals"], 0.0, -1.0)
    else:
        for i, v in rewards.items():
            r[i] = v
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    # Reference: the returns of the worst and the best reward received forever.
    lo, hi = min(r.min(), 0) / (1 - gamma), max(r.max(), 0) / (1 - gamma)
    assert data.value_range(gamma) == pytest.approx((lo, hi))
    assert data.value_range(gamma) == pytest.approx(expected)
    # A given end replaces the derived one; an empty range is refused, naming both ends.
    assert data.value_range(gamma, q_min=-3.0) == pytest.approx((-3.0, hi))
    with pytest.raises(ValueError, match=r"empty value range: q_min = 5 .* q_max"):
        data.value_range(gamma, q_min=5.0, q_max=5.0)


def test_negative_rewards_train_in_the_affine_range(tiny_arrays) -> None:
    tiny_arrays["rewards"][:] = np.where(tiny_arrays["terminals"], 0.0, -1.0)
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    agent = qt.train(data, qt.TrainConfig(steps=2, gamma=0.9))
    assert (agent.q_min, agent.q_max) == pytest.approx((-10.0, 0.0))
    assert agent.train_config["q_min"] == pytest.approx(-10.0)
    _, q = agent.act_bins(data.observations[:4])
    assert np.all((q >= -10.0) & (q <= 0.0))  # the sigmoid's [0, 1] mapped onto the range
    # With a cost per step, success is ending in a true terminal (not a positive sum).
    np.testing.assert_array_equal(data.episode_success(), data.episodes.terminated)
    assert data.episode_success().any() and not data.episode_success().all()


def test_npz_round_trip_is_atomic(tiny_arrays, tmp_path) -> None:
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    data.save_npz(tmp_path / "d.npz")
    back = qt.OfflineDataset.load_npz(tmp_path / "d.npz")
    np.testing.assert_array_equal(back.observations, data.observations)
    np.testing.assert_array_equal(back.action_high, data.action_high)
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]
    np.savez(tmp_path / "bad.npz", observations=data.observations)
    with pytest.raises(ValueError, match=r"lacks arrays \['actions'"):
        qt.OfflineDataset.load_npz(tmp_path / "bad.npz")


def test_sampler_batches_follow_episode_structure(tiny_arrays) -> None:
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    disc = ActionDiscretizer(data.action_low, data.action_high, 16)
    s = TransitionSampler(data, disc, gamma=0.5, n_step=1, window=2)
    b = s.batch(torch.tensor([0, 4, 5]))
    obs = torch.from_numpy(tiny_arrays["observations"])
    torch.testing.assert_close(b.obs[0], obs[[0, 0]])  # episode start: first frame repeated
    torch.testing.assert_close(b.next_obs[0], obs[[0, 1]])
    assert b.reward_sum[1] == 1.0 and b.bootstrap_discount[1] == 0.0  # terminal success
    torch.testing.assert_close(b.obs[2], obs[[5, 5]])  # a new episode starts at step 5
    assert b.mc_return[0] == pytest.approx(0.5**4)


def test_sampler_reads_image_windows_beside_state_windows(tiny_arrays) -> None:
    T = len(tiny_arrays["observations"])
    images = np.random.default_rng(1).integers(0, 256, (T, 8, 8, 3), dtype=np.uint8)
    data = qt.OfflineDataset.from_arrays(**tiny_arrays, images=images)
    disc = ActionDiscretizer(data.action_low, data.action_high, 16)
    s = TransitionSampler(data, disc, gamma=0.5, n_step=2, window=3, images=True)
    idx = np.array([0, 3, 5, 11, 34])
    b = s.batch(idx)
    assert b.images.shape == (5, 3, 8, 8, 3) and b.images.dtype == torch.uint8
    for k, t in enumerate(idx):
        np.testing.assert_array_equal(b.images[k].numpy(), images[s.windows(np.array([t]))[0]])
        boot = s.windows(s.bootstrap_index[[t]])[0]
        np.testing.assert_array_equal(b.next_images[k].numpy(), images[boot])
        np.testing.assert_array_equal(
            b.obs[k].numpy(), tiny_arrays["observations"][s.windows(np.array([t]))[0]]
        )
    assert TransitionSampler(data, disc, 0.5, 1, 1).batch(idx).images is None  # not asked for
    plain = qt.OfflineDataset.from_arrays(**tiny_arrays)
    with pytest.raises(ValueError, match="asked for images but the dataset has none"):
        TransitionSampler(plain, disc, 0.5, 1, 1, images=True)


def test_instruction_embeddings_are_validated(tiny_arrays) -> None:
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    with pytest.raises(ValueError, match=r"shape \(n_tasks=1, dim\), got \(2, 4\)"):
        data.set_instruction_embeddings(np.zeros((2, 4), np.float32), "m")
    with pytest.raises(ValueError, match="must be float32, got float64"):
        data.set_instruction_embeddings(np.zeros((1, 4)), "m")
    with pytest.raises(ValueError, match="need the name of the model"):
        data.set_instruction_embeddings(np.zeros((1, 4), np.float32), None)
