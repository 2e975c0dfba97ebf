"""Paper eq. 1 (per-dimension Bellman targets) and eq. 2 (conservative regularizer).

Pure functions on tensors, all in normalized Q space ([0, 1], the value range ``[q_min,
q_max]`` mapped affinely); rewards and returns come in already mapped
(:func:`normalized_returns`), so 0 is the lowest value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

ConservativeKind = Literal["mse", "softmax"]


@dataclass(frozen=True)
class LossOutput:
    """Named parts of the Q-Transformer loss.

    Attributes:
        total: ``td + conservative_weight * conservative``, the scalar to minimize.
        td: Bellman regression term (first half of eq. 2).
        conservative: Regularizer on bins not taken in the data (second half of eq. 2).
        q_data: Q of the dataset bins, ``(B, q_heads, dA)``, detached.
        targets: Per-dimension targets, ``(B, dA)``, detached.
    """

    total: torch.Tensor
    td: torch.Tensor
    conservative: torch.Tensor
    q_data: torch.Tensor
    targets: torch.Tensor


def normalized_returns(
    reward_sum: torch.Tensor,
    bootstrap_discount: torch.Tensor,
    mc_return: torch.Tensor,
    q_min: float,
    q_max: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards and Monte Carlo returns in the network's [0, 1] space.

    With ``Q = q_min + (q_max - q_min) Qn``, the target ``R + D V'`` (n-step reward sum
    ``R``, bootstrap discount ``D``, 0 after a terminal) becomes ``Qn = (R - q_min (1 - D)) /
    (q_max - q_min) + D Vn'``: the discount multiplies the normalized next value unchanged
    and the reward part absorbs the offset. Returns ``(R_n, MC_n)`` with ``MC_n = (MC -
    q_min) / (q_max - q_min)``; for ``q_min = 0`` these are ``R / q_max`` and ``MC / q_max``.
    The conservative term's target, normalized 0, is then ``q_min``: the lowest value.
    """
    scale = q_max - q_min
    reward = (reward_sum - q_min * (1.0 - bootstrap_discount)) / scale
    return reward, (mc_return - q_min) / scale


def per_dimension_targets(
    target_q: torch.Tensor,
    next_first_q: torch.Tensor,
    reward_sum: torch.Tensor,
    bootstrap_discount: torch.Tensor,
    mc_return: torch.Tensor | None = None,
) -> torch.Tensor:
    """Targets of paper eq. 1, optionally lower-bounded by the Monte Carlo return.

    Args:
        target_q: Target network at (s, dataset bins), ``(B, H, dA, N)``.
        next_first_q: Target network's first-dimension Q at the bootstrap state, ``(B, H, N)``.
        reward_sum: n-step discounted reward sum, ``(B,)``.
        bootstrap_discount: ``gamma^n`` or 0 after a true terminal, ``(B,)``.
        mc_return: Discounted return-to-go of the transition, ``(B,)``; None disables the bound.

    Returns:
        ``(B, dA)``: for i < dA, ``max_b Qtarget(s, a^{1:i}, a^{i+1} = b)``; for the last
        dimension, ``reward_sum + bootstrap_discount * max_b Qtarget(s', a^1 = b)``. With H > 1
        heads, their minimum is taken before the max over bins (clipped double Q).
    """
    B, H, dA, N = target_q.shape
    if next_first_q.shape != (B, H, N):
        raise ValueError(f"next_first_q must be {(B, H, N)}, got {tuple(next_first_q.shape)}")
    for name, t in (("reward_sum", reward_sum), ("bootstrap_discount", bootstrap_discount)):
        if t.shape != (B,):
            raise ValueError(f"{name} must have shape {(B,)}, got {tuple(t.shape)}")
    q_min = target_q.amin(dim=1)  # (B, dA, N)
    inner = q_min[:, 1:].amax(dim=-1)  # (B, dA - 1)
    next_v = next_first_q.amin(dim=1).amax(dim=-1)  # (B,)
    last = reward_sum + bootstrap_discount * next_v  # (B,)
    targets = torch.cat([inner, last[:, None]], dim=1)  # (B, dA)
    if mc_return is not None:
        targets = torch.maximum(targets, mc_return[:, None])
    return targets


def q_transformer_loss(
    q: torch.Tensor,
    data_bins: torch.Tensor,
    targets: torch.Tensor,
    td_valid: torch.Tensor,
    conservative_weight: float,
    conservative: ConservativeKind = "mse",
) -> LossOutput:
    """Paper eq. 2 for every dimension and Q head.

    ``td = mean of 1/2 (Q(s, a_data^{1:i}) - target_i)^2`` over valid transitions, and
    ``conservative = mean over b != a_data^i of 1/2 Q(s, a_data^{1:i-1}, b)^2``: bins the
    data never took regress to 0, the lowest return. ``"softmax"`` swaps in CQL's
    ``logsumexp_b Q - Q(a_data)`` for the ablation.

    Both terms are averaged over all B x dA entries (invalid transitions count as zero in
    ``td``), so the mean of equal-size shards equals the mean of their union: data-parallel
    gradients match the single-process ones exactly.

    Args:
        q: Online Q, ``(B, H, dA, N)``.
        data_bins: Dataset bins, ``(B, dA)``.
        targets: ``(B, dA)`` from :func:`per_dimension_targets` (gradients are stopped).
        td_valid: ``(B,)`` bool; False leaves a transition out of the TD term.
        conservative_weight: alpha of eq. 2; 0 switches the regularizer off.
        conservative: ``"mse"`` (paper) or ``"softmax"`` (CQL-style, for ablations).
    """
    B, H, dA, N = q.shape
    if data_bins.shape != (B, dA):
        raise ValueError(f"data_bins must have shape {(B, dA)}, got {tuple(data_bins.shape)}")
    if targets.shape != (B, dA):
        raise ValueError(f"targets must have shape {(B, dA)}, got {tuple(targets.shape)}")
    idx = data_bins[:, None, :, None].expand(B, H, dA, 1)
    q_data = q.gather(-1, idx).squeeze(-1)  # (B, H, dA)
    valid = td_valid.to(q.dtype)[:, None, None]  # (B, 1, 1)
    td = (0.5 * (q_data - targets.detach()[:, None]) ** 2 * valid).mean()
    if conservative == "mse":
        other = 1.0 - F.one_hot(data_bins, N).to(q.dtype)[:, None]  # (B, 1, dA, N)
        reg = (0.5 * q**2 * other).sum(-1) / (N - 1)  # (B, H, dA)
        cons = reg.mean()
    elif conservative == "softmax":
        cons = (torch.logsumexp(q, dim=-1) - q_data).mean()
    else:
        raise ValueError(f"conservative must be 'mse' or 'softmax', got {conservative!r}")
    total = td + conservative_weight * cons
    return LossOutput(
        total=total,
        td=td.detach(),
        conservative=cons.detach(),
        q_data=q_data.detach(),
        targets=targets.detach(),
    )


@dataclass(frozen=True)
class BCLossOutput:
    """Behaviour-cloning loss on the Q network's logits.

    Attributes:
        total: Mean cross-entropy over samples, dimensions and heads, the scalar to minimize.
        accuracy: Fraction of (sample, dimension) entries whose most likely bin is the
            data's, detached.
    """

    total: torch.Tensor
    accuracy: torch.Tensor


def behaviour_cloning_loss(logits: torch.Tensor, data_bins: torch.Tensor) -> BCLossOutput:
    """Discretized autoregressive behaviour cloning: ``-log softmax(logits_i)[a_data^i]``.

    The network reads the data's bins of dims ``< i`` when predicting dim ``i`` (teacher
    forcing, the same pass as the Q loss), so greedy decoding of a network trained this way
    gives the most likely action dimension by dimension: the baseline that Q-Transformer
    must beat from the same inputs.

    Args:
        logits: ``(B, H, dA, N)`` from ``model(..., logits=True)``.
        data_bins: ``(B, dA)`` bins of the dataset's actions.
    """
    B, H, dA, N = logits.shape
    if data_bins.shape != (B, dA):
        raise ValueError(f"data_bins must have shape {(B, dA)}, got {tuple(data_bins.shape)}")
    target = data_bins[:, None].expand(B, H, dA)
    ce = F.cross_entropy(logits.reshape(-1, N), target.reshape(-1))
    hits = logits.detach().argmax(-1) == target  # (B, H, dA)
    return BCLossOutput(total=ce, accuracy=hits.float().mean())
