from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import TINY_TRAIN

import qtransformer as qt
from qtransformer.atomic import write_dir_atomically
from qtransformer.data.sampler import TransitionSampler
from qtransformer.discretize import ActionDiscretizer
from qtransformer.learner import Learner

CFG = qt.TrainConfig(**TINY_TRAIN)


def setup(arrays, **overrides):
    data = qt.OfflineDataset.from_arrays(**arrays, action_low=-np.ones(3), action_high=np.ones(3))
    cfg = qt.TrainConfig(**{**CFG.__dict__, **overrides})
    disc = ActionDiscretizer(data.action_low, data.action_high, cfg.n_bins)
    sampler = TransitionSampler(data, disc, cfg.gamma, cfg.n_step, cfg.window)
    return data, cfg, sampler, Learner(cfg, obs_dim=6, action_dim=3, q_max=1.0)


@pytest.mark.parametrize("q_heads", [1, 2])
def test_one_update_changes_every_trainable_parameter(tiny_arrays, q_heads) -> None:
    _, _, sampler, learner = setup(tiny_arrays, q_heads=q_heads, window=2)
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    target_before = {n: p.detach().clone() for n, p in learner.target.named_parameters()}
    metrics = learner.update(sampler.batch(torch.arange(len(sampler))))
    assert all(np.isfinite(v) for v in metrics.values())
    for n, p in learner.model.named_parameters():
        assert not torch.equal(p, before[n]), f"{n} did not change"
    # The target moved towards the online network by tau, and only by that.
    for n, p in learner.target.named_parameters():
        expected = target_before[n] + 0.1 * (
            dict(learner.model.named_parameters())[n] - target_before[n]
        )
        torch.testing.assert_close(p, expected)


def test_target_network_is_in_eval_mode(tiny_arrays) -> None:
    _, _, sampler, learner = setup(tiny_arrays, dropout=0.5)
    learner.update(sampler.batch(torch.arange(16)))
    assert not learner.target.training
    assert not any(p.requires_grad for p in learner.target.parameters())
    obs = sampler.batch(torch.arange(4)).obs
    torch.testing.assert_close(learner.target.first_dim_q(obs), learner.target.first_dim_q(obs))


def test_two_runs_with_one_seed_are_identical(tiny_arrays) -> None:
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    a = qt.train(data, CFG)
    b = qt.train(data, CFG)
    for (n, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), n
    obs = tiny_arrays["observations"][:8]
    np.testing.assert_array_equal(a.act(obs), b.act(obs))
    c = qt.train(data, qt.TrainConfig(**{**CFG.__dict__, "seed": 1}))
    assert not np.array_equal(
        a.q_values(obs, np.zeros((8, 3), int)), c.q_values(obs, np.zeros((8, 3), int))
    )


class Interrupted(Exception):
    pass


def assert_resume_is_exact(data, cfg, stop: int, out) -> qt.Agent:
    """Train straight through, and once interrupted after step ``stop + 1`` (its last checkpoint
    at ``stop``) then resumed: the weights must be equal. The learning-rate schedule spans
    ``cfg.steps`` in both, as when a run is killed."""
    assert cfg.checkpoint_every and stop % cfg.checkpoint_every == 0

    def interrupt(step: int, metrics: dict, learner: Learner) -> None:
        if step == stop + 1:
            raise Interrupted

    straight = qt.train(data, cfg)
    with pytest.raises(Interrupted):
        qt.train(data, cfg, out_dir=out, callback=interrupt)
    resumed = qt.train(data, cfg, out_dir=out, resume=True)
    for (n, p), q in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), n
    return straight


def test_resume_from_checkpoint_is_exact(tiny_arrays, tmp_path) -> None:
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    cfg = qt.TrainConfig(**{**CFG.__dict__, "dropout": 0.1, "checkpoint_every": 5})
    straight = assert_resume_is_exact(data, cfg, 5, tmp_path)
    loaded = qt.load_agent(tmp_path / "checkpoint")
    obs = tiny_arrays["observations"][:8]
    np.testing.assert_array_equal(loaded.act(obs), straight.act(obs))


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path) -> None:
    target = tmp_path / "ckpt"
    write_dir_atomically(target, lambda d: (d / "a.txt").write_text("old"))

    def crash(d):
        (d / "a.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dir_atomically(target, crash)
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_batch_size_must_split_across_processes(tiny_arrays, monkeypatch) -> None:
    # Only the divisibility check is exercised; no process group is created.
    monkeypatch.setattr("qtransformer.trainer._init_distributed", lambda device: (0, 3))
    with pytest.raises(ValueError, match="divisible by 3"):
        qt.train(qt.OfflineDataset.from_arrays(**tiny_arrays), CFG)


def test_cosine_schedule_follows_the_formula_and_reaches_zero(tiny_arrays) -> None:
    _, cfg, sampler, learner = setup(tiny_arrays, lr_schedule="cosine", steps=4)
    batch = sampler.batch(torch.arange(16))
    seen = []
    for _ in range(4):
        learner.update(batch, metrics=False)
        seen.append(learner.optimizer.param_groups[0]["lr"])
    expected = [1e-3 * 0.5 * (1 + np.cos(np.pi * k / 4)) for k in range(4)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert learner.learning_rate() == pytest.approx(0.0, abs=1e-15)
    _, _, _, constant = setup(tiny_arrays, steps=4)
    constant.update(batch, metrics=False)
    assert constant.optimizer.param_groups[0]["lr"] == 1e-3


IMAGE_CFG = {"image_channels": (4, 8), "image_tokens": 2}


def image_data(arrays) -> qt.OfflineDataset:
    T = len(arrays["observations"])
    rng = np.random.default_rng(2)
    return qt.OfflineDataset.from_arrays(
        **arrays,
        action_low=-np.ones(3),
        action_high=np.ones(3),
        images=rng.integers(0, 256, (T, 16, 16, 3), dtype=np.uint8),
        task_ids=np.repeat([0, 1], [17, 18]).astype(np.int32),
        tasks=["a", "b"],
    )


@pytest.mark.parametrize("observation,loss", [("image", "q"), ("both", "q"), ("both", "bc")])
def test_image_update_changes_every_parameter_film_included(tiny_arrays, observation, loss) -> None:
    data = image_data(tiny_arrays)
    cfg = qt.TrainConfig(
        **{**CFG.__dict__, **IMAGE_CFG, "observation": observation, "loss": loss, "window": 2}
    )
    disc = ActionDiscretizer(data.action_low, data.action_high, cfg.n_bins)
    sampler = TransitionSampler(data, disc, cfg.gamma, cfg.n_step, cfg.window, images=True)
    learner = Learner(cfg, 6, 3, q_max=1.0, n_tasks=2, image_shape=(16, 16, 3))
    film = [n for n, _ in learner.model.named_parameters() if ".film." in n]
    assert film and all(
        not p.any() for n, p in learner.model.named_parameters() if n in film
    )  # identity at init
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    metrics = learner.update(sampler.batch(torch.arange(len(sampler))))
    assert all(np.isfinite(v) for v in metrics.values())
    assert ("train/bc_accuracy" in metrics) == (loss == "bc")
    for n, p in learner.model.named_parameters():
        assert not torch.equal(p, before[n]), f"{n} did not change"


def test_bc_update_minimizes_the_cross_entropy_of_the_data_bins(tiny_arrays) -> None:
    data = image_data(tiny_arrays)
    cfg = qt.TrainConfig(
        **{
            **CFG.__dict__,
            **IMAGE_CFG,
            "observation": "both",
            "loss": "bc",
            "lr": 3e-3,
            "lr_schedule": "constant",
        }
    )
    disc = ActionDiscretizer(data.action_low, data.action_high, cfg.n_bins)
    sampler = TransitionSampler(data, disc, cfg.gamma, cfg.n_step, cfg.window, images=True)
    learner = Learner(cfg, 6, 3, q_max=1.0, n_tasks=2, image_shape=(16, 16, 3))
    batch = sampler.batch(torch.arange(len(sampler)))
    first = learner.update(batch)["train/loss"]
    assert first == pytest.approx(np.log(cfg.n_bins), rel=0.05)  # near uniform at init
    for _ in range(40):
        last = learner.update(batch)["train/loss"]
    assert last < 0.5 * first
    # Behaviour cloning has no value heads to clip: it always trains one.
    assert qt.TrainConfig(loss="bc", q_heads=2).q_heads == 1


def test_augmented_image_training_resumes_exactly(tiny_arrays, tmp_path) -> None:
    data = image_data(tiny_arrays)
    cfg = qt.TrainConfig(
        **{
            **CFG.__dict__,
            **IMAGE_CFG,
            "observation": "image",
            "augment": True,
            "steps": 6,
            "checkpoint_every": 3,
        }
    )
    straight = assert_resume_is_exact(data, cfg, 3, tmp_path)
    plain = qt.train(data, qt.TrainConfig(**{**cfg.__dict__, "augment": False}))
    assert not torch.equal(
        plain.model.state_dict()["head.weight"], straight.model.state_dict()["head.weight"]
    )


def test_instruction_noise_moves_the_embedding_on_the_unit_sphere(tiny_arrays) -> None:
    rng = np.random.default_rng(0)
    T = len(tiny_arrays["rewards"])
    data = qt.OfflineDataset.from_arrays(**tiny_arrays, task_ids=np.arange(T) % 2, tasks=["a", "b"])
    table = rng.normal(size=(2, 8)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    data.set_instruction_embeddings(table, "test")
    ids = torch.tensor([0, 1, 1])

    def learner(noise: float) -> Learner:
        cfg = qt.TrainConfig(
            **{**CFG.__dict__, "task_features": "instruction", "instruction_noise": noise}
        )
        return Learner(cfg, 6, 3, 1.0, 2, task_features=torch.from_numpy(table))

    assert torch.equal(learner(0.0)._task(ids), ids)  # no noise: the ids, as before
    torch.manual_seed(0)
    noisy = learner(0.5)._task(ids)
    torch.testing.assert_close(noisy.norm(dim=1), torch.ones(3))
    clean = torch.from_numpy(table)[ids]
    distance = (noisy - clean).norm(dim=1)
    assert bool((distance > 0.1).all()) and bool((distance < 1.0).all()), distance
    cfg = qt.TrainConfig(
        **{**CFG.__dict__, "task_features": "instruction", "instruction_noise": 0.5}
    )
    assert np.isfinite(qt.train(data, cfg).act(tiny_arrays["observations"][:2], task="b")).all()


def test_bf16_update_stays_close_to_fp32_and_keeps_float32_state(tiny_arrays) -> None:
    """Under bfloat16 autocast the logits, targets and loss stay float32 and the first
    update's loss matches the float32 one to bfloat16's resolution; a fault in the cast
    (a bf16 sigmoid, say) moves Q-values near 1 by whole steps of 1/256 and fails it."""
    _, _, sampler, fp32 = setup(tiny_arrays)
    _, _, _, bf16 = setup(tiny_arrays, precision="bf16")
    bf16.model.load_state_dict(fp32.model.state_dict())
    bf16.target.load_state_dict(fp32.target.state_dict())
    batch = sampler.batch(torch.arange(len(sampler)))
    with bf16._autocast():
        q = bf16.model(batch.obs, batch.bins)
    assert q.dtype == torch.float32
    a, b = fp32.update(batch), bf16.update(batch)
    assert np.isfinite(b["train/loss"])
    assert abs(a["train/loss"] - b["train/loss"]) <= 0.02 * abs(a["train/loss"]) + 1e-4
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision"):
        qt.TrainConfig(**{**CFG.__dict__, "precision": "fp16"})


def test_epochs_set_the_steps_from_the_data_size(tiny_arrays) -> None:
    assert qt.TrainConfig(steps=7).steps_for(10_000) == 7
    cfg = qt.TrainConfig(epochs=2.5, batch_size=16)
    assert cfg.steps_for(35) == 6  # ceil(2.5 * 35 / 16) = ceil(5.47)
    assert cfg.steps_for(1) == 1
    with pytest.raises(ValueError, match="^epochs must"):
        qt.TrainConfig(epochs=0.0)
    data = qt.OfflineDataset.from_arrays(
        **tiny_arrays, action_low=-np.ones(3), action_high=np.ones(3)
    )
    seen = []
    run = qt.TrainConfig(**{**CFG.__dict__, "epochs": 2.5, "batch_size": 16, "steps": 99})
    run = qt.TrainConfig(**{**run.__dict__, "lr_schedule": "cosine"})
    agent = qt.train(data, run, callback=lambda step, m, learner: seen.append(learner))
    assert len(seen) == 6  # 35 transitions
    assert seen[-1].learning_rate() == pytest.approx(0.0, abs=1e-15)  # the schedule spans 6
    assert agent is not None
