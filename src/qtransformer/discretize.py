"""Continuous actions <-> per-dimension bins (docs/design.md, 'Discretization').

Each action dimension i is cut into ``n_bins`` equal bins between ``low[i]`` and ``high[i]``;
bin ``b`` maps back to its centre (``layout="centres"``, the default). With
``layout="bounds"`` the bins are ``n_bins`` evenly spaced values from ``low[i]`` to ``high[i]``
inclusive, and an action goes to the nearest: the bounds themselves are reachable, which
matters when the data's actions often sit on them. The joint space ``n_bins ** dA`` is never
enumerated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

BIN_LAYOUTS = ("centres", "bounds")


@dataclass(frozen=True)
class ActionDiscretizer:
    """Uniform per-dimension binning of a box action space.

    Attributes:
        low: Lower bound of every action dimension, shape ``(dA,)``.
        high: Upper bound of every action dimension, shape ``(dA,)``; strictly above ``low``.
        n_bins: Number of bins per dimension.
        layout: ``"centres"`` (equal bins, each acting at its centre) or ``"bounds"``
            (evenly spaced values from ``low`` to ``high`` inclusive, nearest one chosen).
    """

    low: np.ndarray
    high: np.ndarray
    n_bins: int
    layout: Literal["centres", "bounds"] = "centres"

    def __post_init__(self) -> None:
        low = np.asarray(self.low, dtype=np.float64).reshape(-1)
        high = np.asarray(self.high, dtype=np.float64).reshape(-1)
        if low.shape != high.shape:
            raise ValueError(f"action_low has shape {low.shape} but action_high has {high.shape}")
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError("action bounds must be finite")
        bad = np.flatnonzero(high <= low)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"action_high[{i}]={high[i]} must be greater than action_low[{i}]={low[i]}"
            )
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {self.n_bins}")
        if self.layout not in BIN_LAYOUTS:
            raise ValueError(f"layout must be one of {BIN_LAYOUTS}, got {self.layout!r}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def action_dim(self) -> int:
        return int(self.low.shape[0])

    @property
    def bin_width(self) -> np.ndarray:
        """Width of a bin (``centres``) or spacing of the values (``bounds``)."""
        if self.layout == "bounds":
            return (self.high - self.low) / (self.n_bins - 1)
        return (self.high - self.low) / self.n_bins

    def to_bins(self, actions: np.ndarray, *, clip: bool = False) -> np.ndarray:
        """Map continuous actions ``(..., dA)`` to integer bins ``(..., dA)``.

        Args:
            actions: Continuous actions.
            clip: Clip actions into the bounds first. Without it an action outside the
                bounds raises ``ValueError`` naming the dimension.
        """
        a = np.asarray(actions, dtype=np.float64)
        if a.shape[-1:] != (self.action_dim,):
            raise ValueError(
                f"actions must end in dimension {self.action_dim}, got shape {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            idx = tuple(int(j) for j in np.argwhere(~np.isfinite(a))[0])
            raise ValueError(f"actions contain NaN or inf at index {idx}")
        if clip:
            a = np.clip(a, self.low, self.high)
        else:
            outside = (a < self.low) | (a > self.high)
            if outside.any():
                idx = tuple(int(j) for j in np.argwhere(outside)[0])
                d = idx[-1]
                raise ValueError(
                    f"action out of bounds at index {idx}: {a[idx]} not in "
                    f"[{self.low[d]}, {self.high[d]}] (dimension {d}); pass clip=True to clip"
                )
        if self.layout == "bounds":
            bins = np.rint((a - self.low) / self.bin_width).astype(np.int64)
        else:
            bins = np.floor((a - self.low) / self.bin_width).astype(np.int64)
        # The upper bound itself belongs to the last bin.
        return np.clip(bins, 0, self.n_bins - 1)

    def to_continuous(self, bins: np.ndarray) -> np.ndarray:
        """Map integer bins ``(..., dA)`` to the bin centres ``(..., dA)`` (float32)."""
        b = np.asarray(bins)
        if b.shape[-1:] != (self.action_dim,):
            raise ValueError(f"bins must end in dimension {self.action_dim}, got shape {b.shape}")
        if b.size and (b.min() < 0 or b.max() >= self.n_bins):
            raise ValueError(f"bins must lie in [0, {self.n_bins - 1}], got {b.min()}..{b.max()}")
        offset = 0.0 if self.layout == "bounds" else 0.5
        return (self.low + (b + offset) * self.bin_width).astype(np.float32)

    def to_continuous_torch(self, bins: torch.Tensor) -> torch.Tensor:
        """Torch version of :meth:`to_continuous`, on the tensor's device."""
        low = torch.as_tensor(self.low, dtype=torch.float32, device=bins.device)
        width = torch.as_tensor(self.bin_width, dtype=torch.float32, device=bins.device)
        offset = 0.0 if self.layout == "bounds" else 0.5
        return low + (bins.float() + offset) * width
