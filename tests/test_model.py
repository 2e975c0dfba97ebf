from __future__ import annotations

import numpy as np
import pytest
import torch

from qtransformer.model import ModelConfig, QTransformer


def random_model(seed: int = 0, **kw) -> QTransformer:
    cfg = ModelConfig(
        **{
            "obs_dim": 5,
            "action_dim": 4,
            "n_bins": 11,
            "window": 2,
            "d_model": 32,
            "n_layers": 2,
            "n_heads": 4,
            **kw,
        }
    )
    torch.manual_seed(seed)
    model = QTransformer(cfg).eval()
    # Random heads make the Q surface bumpy, so argmax errors would show.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def inputs(model: QTransformer, B: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = model.cfg
    obs = torch.randn(B, c.window, c.obs_dim, generator=g)
    bins = torch.randint(c.n_bins, (B, c.action_dim), generator=g)
    return obs, bins


def test_shapes_and_range() -> None:
    model = random_model(q_heads=2)
    obs, bins = inputs(model)
    q = model(obs, bins)
    assert q.shape == (8, 2, 4, 11)
    assert q.min() >= 0 and q.max() <= 1


@pytest.mark.parametrize("dim", [0, 1, 2, 3])
def test_output_of_dim_i_ignores_bins_of_dims_i_and_later(dim: int) -> None:
    model = random_model()
    obs, bins = inputs(model)
    q = model(obs, bins)
    changed = bins.clone()
    changed[:, dim:] = (changed[:, dim:] + 5) % model.cfg.n_bins
    q2 = model(obs, changed)
    torch.testing.assert_close(q[:, :, : dim + 1], q2[:, :, : dim + 1])
    if dim < model.cfg.action_dim - 1:
        # ...while later dimensions do read them: the test can fail.
        assert not torch.allclose(q[:, :, dim + 1 :], q2[:, :, dim + 1 :])


def test_later_observation_frames_change_every_dim() -> None:
    model = random_model()
    obs, bins = inputs(model)
    obs2 = obs.clone()
    obs2[:, -1] += 1.0
    assert not torch.allclose(model(obs, bins)[:, :, 0], model(obs2, bins)[:, :, 0])


def test_first_dim_q_equals_row_zero_of_forward() -> None:
    model = random_model(q_heads=2)
    obs, bins = inputs(model)
    torch.testing.assert_close(model.first_dim_q(obs), model(obs, bins)[:, :, 0])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("q_heads", [1, 2])
def test_kv_cache_decoding_equals_full_forward_argmax(seed: int, q_heads: int) -> None:
    model = random_model(seed, q_heads=q_heads).double()
    obs, _ = inputs(model, B=32, seed=seed + 10)
    obs = obs.double()
    bins, qs = model.greedy(obs, use_cache=True)
    full = model(obs, bins).amin(dim=1)  # (B, dA, N), teacher-forced on the decoded bins
    assert torch.equal(full.argmax(-1), bins)
    torch.testing.assert_close(qs, full.gather(-1, bins[..., None])[..., 0].to(qs.dtype))
    bins_nc, _ = model.greedy(obs, use_cache=False)
    assert torch.equal(bins_nc, bins)


def test_cached_and_uncached_q_agree_in_float32() -> None:
    model = random_model(3)
    obs, _ = inputs(model, B=16)
    _, q_cache = model.greedy(obs, use_cache=True)
    _, q_full = model.greedy(obs, use_cache=False)
    torch.testing.assert_close(q_cache, q_full, atol=1e-5, rtol=1e-5)


def test_decoding_is_deterministic() -> None:
    model = random_model(4, dropout=0.3)
    obs, _ = inputs(model)
    assert torch.equal(model.greedy(obs)[0], model.greedy(obs)[0])


def test_wrong_window_is_a_clear_error() -> None:
    model = random_model()
    with pytest.raises(ValueError, match=r"window=2"):
        model(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def test_task_token_conditions_every_dimension_and_keeps_decoding_exact() -> None:
    model = random_model(7, n_tasks=3, task_dim=3).double()
    obs, bins = inputs(model, B=16)
    obs = obs.double()
    t0 = torch.zeros(16, dtype=torch.long)
    t2 = torch.full((16,), 2, dtype=torch.long)
    assert not torch.allclose(model(obs, bins, t0), model(obs, bins, t2))
    for task in (t0, t2):
        decoded, _ = model.greedy(obs, task)
        assert torch.equal(model(obs, decoded, task).amin(1).argmax(-1), decoded)
        assert torch.equal(model.greedy(obs, task, use_cache=False)[0], decoded)
    with pytest.raises(ValueError, match="conditioned on 3 tasks: pass task"):
        model(obs, bins)


def image_model(seed: int = 0, **kw) -> QTransformer:
    return random_model(
        seed,
        **{
            "observation": "both",
            "image_shape": (16, 16, 3),
            "image_tokens": 2,
            "image_channels": (4, 8),
            "n_tasks": 3,
            "task_dim": 6,
            "task_features": "instruction",
            **kw,
        },
    )


def image_inputs(model: QTransformer, B: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    c = model.cfg
    obs, bins = inputs(model, B, seed)
    images = torch.randint(0, 256, (B, c.window, *c.image_shape), generator=g, dtype=torch.uint8)
    features = torch.randn(B, c.task_dim, generator=g)
    return obs, images, bins, features


def test_image_prefix_layout() -> None:
    both = image_model()
    assert both.cfg.tokens_per_frame == 3 and both.cfg.prefix_len == 1 + 2 * 3
    image_only = image_model(observation="image", n_tasks=1, task_dim=0)
    assert image_only.encoder is None and image_only.cfg.prefix_len == 2 * 2
    obs, images, bins, _ = image_inputs(image_only)
    assert image_only(None, bins, images=images).shape == (8, 1, 4, 11)
    assert image_only.image_encoder is not None and image_only.image_encoder.film is None


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("observation", ["image", "both"])
def test_kv_cache_decoding_equals_full_forward_argmax_with_images_and_instructions(
    seed: int, observation: str
) -> None:
    model = image_model(seed, observation=observation, q_heads=2).double()
    obs, images, _, features = image_inputs(model, B=16, seed=seed + 20)
    obs, features = obs.double(), features.double()
    bins, qs = model.greedy(obs, features, images=images)
    full = model(obs, bins, features, images).amin(dim=1)  # (B, dA, N)
    assert torch.equal(full.argmax(-1), bins)
    torch.testing.assert_close(qs, full.gather(-1, bins[..., None])[..., 0].to(qs.dtype))
    assert torch.equal(model.greedy(obs, features, use_cache=False, images=images)[0], bins)


def test_feature_vectors_and_task_indices_condition_alike() -> None:
    model = image_model(1)
    obs, images, bins, _ = image_inputs(model)
    table = torch.randn(3, 6)
    model.set_task_features(table)
    ids = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    by_index = model(obs, bins, ids, images)
    torch.testing.assert_close(model(obs, bins, table[ids], images), by_index, rtol=0, atol=0)
    other = model(obs, bins, torch.randn(8, 6), images)
    assert not torch.allclose(other, by_index)


def test_image_model_inputs_are_checked() -> None:
    model = image_model()
    obs, images, bins, features = image_inputs(model)
    with pytest.raises(ValueError, match="reads images.*pass images"):
        model(obs, bins, features)
    with pytest.raises(ValueError, match=r"\(8, task_dim=6\), got \(8, 5\)"):
        model(obs, bins, features[:, :5], images)
    with pytest.raises(ValueError, match="images must be uint8"):
        model(obs, bins, features, images.float())
    with pytest.raises(ValueError, match="reads state vectors"):
        model(None, bins, features, images)
    with pytest.raises(ValueError, match="needs image_shape"):
        ModelConfig(obs_dim=3, action_dim=2, observation="image")


@pytest.mark.parametrize("L,S", [(7, 7), (1, 6), (3, 8)])
def test_short_attention_matches_a_numpy_reference(L: int, S: int) -> None:
    """The broadcast attention the compiled model uses: queries are the last L of S
    positions and see every key up to their own position."""
    from qtransformer.model import _short_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 4, generator=g, dtype=torch.float64) for n in (L, S, S))
    got = _short_attention(q, k, v, 0.0).numpy()
    qn, kn, vn = q.numpy(), k.numpy(), v.numpy()
    want = np.zeros_like(got)
    for b in range(2):
        for h in range(3):
            for i in range(L):
                pos = S - L + i  # the query's own position
                s = kn[b, h, : pos + 1] @ qn[b, h, i] / 2.0  # sqrt(head dim 4)
                w = np.exp(s - s.max())
                want[b, h, i] = (w / w.sum()) @ vn[b, h, : pos + 1]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
