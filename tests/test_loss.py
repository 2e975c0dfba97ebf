"""Paper eq. 1 and 2 against a plain-loop numpy reference and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qtransformer.loss import (
    behaviour_cloning_loss,
    normalized_returns,
    per_dimension_targets,
    q_transformer_loss,
)


def reference_targets(target_q, next_first, reward_sum, disc, mc):
    B, H, dA, N = target_q.shape
    out = np.zeros((B, dA))
    for b in range(B):
        for i in range(dA):
            if i < dA - 1:
                t = max(min(target_q[b, h, i + 1, n] for h in range(H)) for n in range(N))
            else:
                v = max(min(next_first[b, h, n] for h in range(H)) for n in range(N))
                t = reward_sum[b] + disc[b] * v
            out[b, i] = t if mc is None else max(t, mc[b])
    return out


def reference_loss(q, bins, targets, valid, alpha):
    B, H, dA, N = q.shape
    td, cons = 0.0, 0.0
    for b in range(B):
        for h in range(H):
            for i in range(dA):
                td += valid[b] * 0.5 * (q[b, h, i, bins[b, i]] - targets[b, i]) ** 2
                cons += sum(0.5 * q[b, h, i, n] ** 2 for n in range(N) if n != bins[b, i]) / (N - 1)
    td, cons = td / (B * H * dA), cons / (B * H * dA)
    return td, cons, td + alpha * cons


def random_inputs(B=5, H=2, dA=3, N=7, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        target_q=rng.uniform(0, 1, (B, H, dA, N)),
        next_first=rng.uniform(0, 1, (B, H, N)),
        reward_sum=rng.uniform(0, 1, B) * (rng.uniform(size=B) < 0.5),
        disc=rng.choice([0.0, 0.9, 0.81], B),
        mc=rng.uniform(0, 1, B),
        q=rng.uniform(0, 1, (B, H, dA, N)),
        bins=rng.integers(0, N, (B, dA)),
        valid=rng.uniform(size=B) < 0.8,
    )


def t(x, dtype=torch.float64):
    return torch.as_tensor(x, dtype=dtype)


@pytest.mark.parametrize("use_mc", [False, True])
@pytest.mark.parametrize("H", [1, 2])
def test_targets_match_reference(use_mc: bool, H: int) -> None:
    x = random_inputs(H=H, seed=H)
    mc = x["mc"] if use_mc else None
    got = per_dimension_targets(
        t(x["target_q"]),
        t(x["next_first"]),
        t(x["reward_sum"]),
        t(x["disc"]),
        None if mc is None else t(mc),
    )
    ref = reference_targets(x["target_q"], x["next_first"], x["reward_sum"], x["disc"], mc)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("q_min,q_max", [(0.0, 1.0), (-100.0, 0.0), (-4.0, 2.0)])
def test_affine_value_range_gives_the_targets_of_unnormalized_values(q_min, q_max) -> None:
    """Targets computed in [0, 1] and mapped back equal the numpy reference run on the
    unnormalized values, for rewards and returns of any sign."""
    x = random_inputs(H=2, seed=5)
    S = q_max - q_min
    rng = np.random.default_rng(6)
    reward = q_min + S * rng.uniform(size=5) * 0.2  # n-step sums inside the range
    mc = q_min + S * rng.uniform(size=5)
    r_n, mc_n = normalized_returns(t(reward), t(x["disc"]), t(mc), q_min, q_max)
    got = per_dimension_targets(t(x["target_q"]), t(x["next_first"]), r_n, t(x["disc"]), mc_n)
    ref = reference_targets(
        q_min + S * x["target_q"], q_min + S * x["next_first"], reward, x["disc"], mc
    )
    np.testing.assert_allclose(q_min + S * got.numpy(), ref, rtol=1e-10, atol=1e-10)
    # A terminal step's target is its reward itself, however negative.
    last = q_min + S * got.numpy()[:, -1]
    done = x["disc"] == 0
    np.testing.assert_allclose(last[done], np.maximum(reward, mc)[done])


def test_intermediate_dims_take_max_of_next_dim_and_ignore_reward() -> None:
    tq = torch.zeros(1, 1, 3, 4, dtype=torch.float64)
    tq[0, 0, 1] = torch.tensor([0.1, 0.7, 0.2, 0.0])
    tq[0, 0, 2] = torch.tensor([0.3, 0.1, 0.4, 0.2])
    nxt = torch.tensor([[[0.5, 0.25, 0.0, 0.1]]], dtype=torch.float64)
    got = per_dimension_targets(tq, nxt, t([1.0]), t([0.5]))
    # Dims 1 and 2 take the next dimension's max, with no reward and no discount.
    # The last dimension gets the reward plus gamma times the best first bin at s'.
    np.testing.assert_allclose(got.numpy(), [[0.7, 0.4, 1.0 + 0.5 * 0.5]])


def test_terminal_does_not_bootstrap_but_truncation_does() -> None:
    tq = torch.zeros(2, 1, 2, 3, dtype=torch.float64)
    nxt = torch.full((2, 1, 3), 0.8, dtype=torch.float64)
    got = per_dimension_targets(tq, nxt, t([0.0, 0.0]), t([0.0, 0.9]))
    assert got[0, -1].item() == 0.0  # true terminal: reward only
    assert got[1, -1].item() == pytest.approx(0.72)  # truncated: gamma * max Q(s')


def test_mc_lower_bound_is_per_transition() -> None:
    tq = torch.full((2, 1, 2, 3), 0.1, dtype=torch.float64)
    nxt = torch.full((2, 1, 3), 0.1, dtype=torch.float64)
    got = per_dimension_targets(tq, nxt, t([0.0, 0.0]), t([0.5, 0.5]), mc_return=t([0.6, 0.0]))
    np.testing.assert_allclose(got.numpy(), [[0.6, 0.6], [0.1, 0.05]])


def test_clipped_double_q_takes_min_over_heads_before_max_over_bins() -> None:
    tq = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    tq[0, 0, 1] = torch.tensor([0.9, 0.2])
    tq[0, 1, 1] = torch.tensor([0.1, 0.3])
    got = per_dimension_targets(tq, torch.zeros(1, 2, 2, dtype=torch.float64), t([0.0]), t([0.0]))
    assert got[0, 0].item() == pytest.approx(0.2)  # max(min(.9,.1), min(.2,.3))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0])
def test_loss_matches_reference(alpha: float) -> None:
    x = random_inputs(seed=3)
    targets = reference_targets(x["target_q"], x["next_first"], x["reward_sum"], x["disc"], x["mc"])
    out = q_transformer_loss(
        t(x["q"]), torch.as_tensor(x["bins"]), t(targets), torch.as_tensor(x["valid"]), alpha
    )
    td, cons, total = reference_loss(x["q"], x["bins"], targets, x["valid"], alpha)
    assert out.td.item() == pytest.approx(td, rel=1e-12)
    assert out.conservative.item() == pytest.approx(cons, rel=1e-12)
    assert out.total.item() == pytest.approx(total, rel=1e-12)


def test_conservative_term_hand_computed_and_drives_q_to_zero() -> None:
    q = t([[[[0.2, 0.4, 0.6]]]]).requires_grad_(True)
    out = q_transformer_loss(q, torch.tensor([[1]]), t([[0.4]]), torch.tensor([True]), 1.0)
    assert out.conservative.item() == pytest.approx(0.5 * (0.04 + 0.36) / 2)
    assert out.td.item() == 0.0
    out.total.backward()
    # Gradient descent lowers the non-data bins towards Q = 0 (not 0.5) and leaves the data bin.
    assert q.grad[0, 0, 0, 0] > 0 and q.grad[0, 0, 0, 2] > 0 and q.grad[0, 0, 0, 1] == 0


def test_invalid_transitions_leave_td_but_keep_conservative() -> None:
    q = t(np.full((1, 1, 1, 3), 0.5))
    out = q_transformer_loss(q, torch.tensor([[0]]), t([[1.0]]), torch.tensor([False]), 1.0)
    assert out.td.item() == 0.0 and out.conservative.item() > 0


def test_softmax_conservative_is_logsumexp_minus_data() -> None:
    q = t([[[[0.2, 0.4, 0.6]]]])
    out = q_transformer_loss(
        q, torch.tensor([[1]]), t([[0.4]]), torch.tensor([True]), 1.0, "softmax"
    )
    ref = np.log(np.exp([0.2, 0.4, 0.6]).sum()) - 0.4
    assert out.conservative.item() == pytest.approx(ref)


def test_shape_errors_name_the_argument() -> None:
    q = torch.zeros(2, 1, 3, 4)
    with pytest.raises(ValueError, match="data_bins"):
        q_transformer_loss(
            q,
            torch.zeros(2, 2, dtype=torch.long),
            torch.zeros(2, 3),
            torch.ones(2, dtype=torch.bool),
            1.0,
        )
    with pytest.raises(ValueError, match="next_first_q"):
        per_dimension_targets(q, torch.zeros(2, 4), torch.zeros(2), torch.zeros(2))


def test_behaviour_cloning_loss_equals_a_plain_cross_entropy() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(scale=2.0, size=(3, 1, 2, 5))
    bins = np.array([[0, 4], [2, 2], [1, 3]])
    ce, hits = 0.0, 0
    for b in range(3):
        for i in range(2):
            z = logits[b, 0, i]
            ce += -(z[bins[b, i]] - np.log(np.exp(z).sum()))
            hits += int(np.argmax(z) == bins[b, i])
    out = behaviour_cloning_loss(torch.tensor(logits), torch.tensor(bins))
    assert out.total.item() == pytest.approx(ce / 6, rel=1e-12)
    assert out.accuracy.item() == pytest.approx(hits / 6)
    # A network that puts all its mass on the data's bins pays almost nothing.
    sure = torch.full((3, 1, 2, 5), -30.0, dtype=torch.float64)
    sure.scatter_(-1, torch.tensor(bins)[:, None, :, None], 30.0)
    assert behaviour_cloning_loss(sure, torch.tensor(bins)).total.item() < 1e-20
    with pytest.raises(ValueError, match=r"data_bins must have shape \(3, 2\)"):
        behaviour_cloning_loss(torch.tensor(logits), torch.tensor(bins[:, :1]))


@pytest.mark.parametrize("alpha", [0.25, 1.0])
def test_conservative_fixed_point_weighs_each_bin_by_its_data_frequency(alpha: float) -> None:
    """With one state and a free Q per bin, eq. 2 is minimized at
    Q(b) = p_b y_b / (p_b + alpha (1 - p_b) / (N - 1)), p_b the data's frequency of bin b and
    y_b its target: the regularizer trades value for behaviour frequency, more so as alpha
    grows. (This is why the `cpu` profile's alpha is below 1; see docs/design.md,
    'Conservative regularizer'.)"""
    N = 8
    p = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.25, 0.1, 0.0])
    y = np.array([0.0, 0.9, 0.8, 0.5, 0.6, 0.4, 0.7, 0.0])
    counts = np.round(p * 40).astype(int)  # 40 transitions in the proportions p
    bins = torch.as_tensor(np.repeat(np.arange(N), counts))[:, None]
    targets = t(np.repeat(y, counts))[:, None]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        q = theta.expand(len(bins), N)[:, None, None, :]
        valid = torch.ones(len(bins), dtype=torch.bool)
        return q_transformer_loss(q, bins, targets, valid, alpha).total

    # The loss is quadratic in the table, so one Newton step from 0 lands on its minimum.
    theta = torch.zeros(N, dtype=torch.float64)
    grad = torch.autograd.functional.jacobian(loss, theta)
    hess = torch.autograd.functional.hessian(loss, theta)
    theta = theta - torch.linalg.solve(hess, grad)
    expected = p * y / (p + alpha * (1 - p) / (N - 1))
    np.testing.assert_allclose(theta.numpy(), expected, atol=1e-12)
    # Greedy picks a rarer, better bin at small alpha and the most frequent one at alpha 1.
    assert np.argmax(expected) == (4 if alpha == 1.0 else 2)
