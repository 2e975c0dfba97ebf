"""MLP encoder for state vectors: one token per frame."""

from __future__ import annotations

import torch
from torch import nn


class StateEncoder(nn.Module):
    """Normalize each state vector with dataset statistics and map it to one token.

    Encoders share one contract: ``forward(obs)`` takes ``(B, w, *obs_shape)`` and returns
    ``(B, w * tokens_per_frame, d_model)``, so image and language encoders plug in beside it.
    """

    tokens_per_frame = 1
    obs_mean: torch.Tensor
    obs_std: torch.Tensor

    def __init__(self, obs_dim: int, d_model: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 2 * d_model
        self.obs_dim = obs_dim
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.GELU(), nn.Linear(hidden, d_model))

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.obs_mean.copy_(mean)
        # Features constant in the data keep unit scale rather than exploding at test time.
        self.obs_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(f"observations must have {self.obs_dim} features, got {obs.shape}")
        x = (obs - self.obs_mean) / self.obs_std  # (B, w, obs_dim)
        return self.net(x)  # (B, w, d_model)
