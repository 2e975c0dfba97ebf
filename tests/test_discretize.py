from __future__ import annotations

import numpy as np
import pytest
import torch

from qtransformer.discretize import ActionDiscretizer


def make(n_bins: int = 256) -> ActionDiscretizer:
    return ActionDiscretizer(np.array([-1.0, 0.0, -5.0]), np.array([1.0, 2.0, 3.0]), n_bins)


@pytest.mark.parametrize("n_bins", [2, 3, 32, 256])
def test_round_trip_within_half_a_bin(n_bins: int) -> None:
    d = make(n_bins)
    rng = np.random.default_rng(0)
    a = rng.uniform(d.low, d.high, size=(1000, 3))
    a[:3] = [d.low, d.high, (d.low + d.high) / 2]
    back = d.to_continuous(d.to_bins(a))
    assert np.all(np.abs(back - a) <= d.bin_width / 2 + 1e-6)


def test_bins_match_hand_computed_edges() -> None:
    d = ActionDiscretizer(np.array([-1.0]), np.array([1.0]), 4)
    a = np.array([[-1.0], [-0.51], [-0.49], [0.0], [0.49], [0.99], [1.0]])
    assert d.to_bins(a)[:, 0].tolist() == [0, 0, 1, 2, 2, 3, 3]
    assert d.to_continuous(np.array([[0], [1], [2], [3]]))[:, 0].tolist() == [
        -0.75,
        -0.25,
        0.25,
        0.75,
    ]


def test_out_of_bounds_is_an_error_naming_the_dimension() -> None:
    d = make()
    a = np.zeros((4, 3))
    a[2, 1] = 2.5
    with pytest.raises(ValueError, match=r"out of bounds at index \(2, 1\).*dimension 1"):
        d.to_bins(a)
    assert d.to_bins(a, clip=True)[2, 1] == 255


def test_nan_and_bad_shapes_are_errors() -> None:
    d = make()
    with pytest.raises(ValueError, match="NaN"):
        d.to_bins(np.full((1, 3), np.nan))
    with pytest.raises(ValueError, match="dimension 3"):
        d.to_bins(np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"bins must lie in \[0, 255\]"):
        d.to_continuous(np.array([[0, 0, 256]]))
    with pytest.raises(ValueError, match="greater than"):
        ActionDiscretizer(np.array([0.0]), np.array([0.0]), 8)


def test_torch_and_numpy_centres_agree() -> None:
    d = make(17)
    bins = np.random.default_rng(1).integers(0, 17, size=(50, 3))
    np.testing.assert_allclose(
        d.to_continuous_torch(torch.as_tensor(bins)).numpy(), d.to_continuous(bins), atol=1e-6
    )


def test_bounds_layout_reaches_the_bounds_and_picks_the_nearest_value() -> None:
    d = ActionDiscretizer(np.array([-1.0]), np.array([1.0]), 5, layout="bounds")
    # Values -1, -0.5, 0, 0.5, 1; each action to the nearest (ties at .25 round to even).
    a = np.array([[-1.0], [-0.8], [-0.7], [-0.1], [0.3], [0.74], [0.76], [1.0]])
    assert d.to_bins(a)[:, 0].tolist() == [0, 0, 1, 2, 3, 3, 4, 4]
    grid = np.arange(5)[:, None]
    np.testing.assert_allclose(d.to_continuous(grid)[:, 0], [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(d.to_bins(d.to_continuous(grid)), grid)
    torch_values = d.to_continuous_torch(torch.arange(5)[:, None]).numpy()
    np.testing.assert_allclose(torch_values, d.to_continuous(grid), rtol=0, atol=1e-7)
    rng = np.random.default_rng(1)
    m = ActionDiscretizer(np.array([-1.0, 0.0]), np.array([1.0, 2.0]), 16, layout="bounds")
    x = rng.uniform(m.low, m.high, size=(500, 2))
    back = m.to_continuous(m.to_bins(x))
    # Plain numpy reference: the nearest of 16 evenly spaced values, bounds included.
    values = np.linspace(m.low, m.high, 16)  # (16, 2)
    nearest = values[np.abs(x[None] - values[:, None]).argmin(0), [0, 1]]
    np.testing.assert_allclose(back, nearest, atol=1e-6)
    with pytest.raises(ValueError, match="layout must be one of"):
        ActionDiscretizer(np.array([-1.0]), np.array([1.0]), 5, layout="edges")  # type: ignore[arg-type]
