from __future__ import annotations

import numpy as np
import pytest
import torch

from qtransformer.encoders import ImageEncoder, random_shift
from qtransformer.encoders.image import token_grid


def encoder(cond_dim: int = 6, tokens: int = 4, seed: int = 0) -> ImageEncoder:
    torch.manual_seed(seed)
    return ImageEncoder(
        (16, 16, 3), d_model=8, tokens_per_frame=tokens, channels=(4, 8, 8), cond_dim=cond_dim
    ).eval()


def frames(B: int = 3, w: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, w, 16, 16, 3), generator=g, dtype=torch.uint8)


def randomize_film(enc: ImageEncoder) -> None:
    assert enc.film is not None
    with torch.no_grad():
        for p in enc.film.parameters():
            p.normal_(0.0, 0.5)


def test_tokens_per_frame_and_grid() -> None:
    assert [token_grid(k) for k in (1, 2, 4, 6, 9)] == [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3)]
    out = encoder(tokens=6)(frames(B=3, w=2), torch.zeros(3, 6))
    assert out.shape == (3, 2 * 6, 8) and out.dtype == torch.float32


def test_film_starts_as_identity() -> None:
    enc = encoder()
    x = frames()
    c1, c2 = torch.randn(3, 6), torch.randn(3, 6)
    torch.testing.assert_close(enc(x, c1), enc(x, c2), rtol=0, atol=0)


def test_film_changes_the_output_with_the_instruction_and_only_then() -> None:
    enc = encoder()
    randomize_film(enc)
    x = frames()
    g = torch.Generator().manual_seed(3)
    c = torch.randn(3, 6, generator=g)
    other = torch.randn(3, 6, generator=g)
    assert torch.equal(enc(x, c), enc(x, c.clone()))
    changed = enc(x, other)
    assert not torch.allclose(enc(x, c), changed)
    # Changing only sample 1's instruction changes only sample 1's tokens.
    mixed = c.clone()
    mixed[1] = other[1]
    out, ref = enc(x, mixed), enc(x, c)
    assert torch.equal(out[[0, 2]], ref[[0, 2]]) and not torch.allclose(out[1], ref[1])


def test_single_task_encoder_has_no_film() -> None:
    enc = encoder(cond_dim=0)
    assert enc.film is None
    assert enc(frames()).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="FiLM-conditioned: pass cond"):
        encoder()(frames())


def test_samples_are_encoded_independently_in_training_mode() -> None:
    # GroupNorm, not BatchNorm: one sample's tokens never depend on its batch-mates.
    enc = encoder().train()
    randomize_film(enc)
    x, c = frames(B=4), torch.randn(4, 6)
    whole = enc(x, c)
    torch.testing.assert_close(enc(x[:1], c[:1]), whole[:1])


def test_frames_of_a_window_are_encoded_separately() -> None:
    enc = encoder(cond_dim=0)
    x = frames(B=2, w=2)
    y = x.clone()
    y[:, 1] = 255 - y[:, 1]
    a, b = enc(x), enc(y)
    assert torch.equal(a[:, :4], b[:, :4]) and not torch.allclose(a[:, 4:], b[:, 4:])


def test_bad_images_are_named() -> None:
    enc = encoder(cond_dim=0)
    with pytest.raises(ValueError, match="images must be uint8"):
        enc(frames().float())
    with pytest.raises(ValueError, match=r"\(B, window=2, 16, 16, 3\), got \(3, 2, 16, 15, 3\)"):
        enc(frames()[:, :, :, :15])


def test_random_shift_keeps_shape_and_dtype_and_shifts_like_pad_and_crop() -> None:
    x = frames(B=16, w=2)
    out = random_shift(x, pad=3, generator=torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == torch.uint8
    shifts = torch.randint(0, 7, (16, 2), generator=torch.Generator().manual_seed(5)) - 3
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3), (3, 3), (0, 0)), mode="edge")
    moved = 0
    for i, (dy, dx) in enumerate(shifts.tolist()):
        expected = padded[i, :, 3 + dy : 3 + dy + 16, 3 + dx : 3 + dx + 16]
        np.testing.assert_array_equal(out[i].numpy(), expected)  # both frames, one shift
        moved += (dy, dx) != (0, 0)
    assert moved >= 10 and not torch.equal(out, x)
    single = random_shift(x[:, 0], pad=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(single, out[:, 0])
    assert random_shift(x, pad=0) is x
