"""The sampler: per-step targets precomputed in memory, batches read by index."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from qtransformer.discretize import ActionDiscretizer
from qtransformer.returns import discounted_return_to_go, nstep_targets

if TYPE_CHECKING:
    from qtransformer.data.dataset import OfflineDataset


@dataclass(frozen=True)
class Batch:
    """One training batch. Rewards and returns are in reward units (not yet normalized).

    Attributes:
        obs: Observation windows ``(B, w, obs_dim)``.
        bins: Dataset action bins ``(B, dA)``.
        reward_sum: n-step discounted reward sum ``(B,)``.
        bootstrap_discount: ``gamma^m`` or 0 after a true terminal ``(B,)``.
        next_obs: Observation windows at the bootstrap step ``(B, w, obs_dim)``.
        mc_return: Discounted return-to-go ``(B,)``.
        td_valid: False where a transition has no TD target ``(B,)``.
        task: Task index of each transition ``(B,)``.
        images: Camera frame windows ``(B, w, H, W, C)`` uint8, when the sampler reads images.
        next_images: Frame windows at the bootstrap step ``(B, w, H, W, C)`` uint8.
    """

    obs: torch.Tensor
    bins: torch.Tensor
    reward_sum: torch.Tensor
    bootstrap_discount: torch.Tensor
    next_obs: torch.Tensor
    mc_return: torch.Tensor
    td_valid: torch.Tensor
    task: torch.Tensor
    images: torch.Tensor | None = None
    next_images: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = None if value is None else value.to(device)
        return Batch(**moved)

    def __len__(self) -> int:
        return int(self.bins.shape[0])


class TransitionSampler:
    """Per-step targets precomputed in memory; observations read by index (memory maps stream).

    Per step it holds about ``41 + 2 * dA`` bytes (targets, bins, episode starts, tasks);
    observations and images stay wherever the dataset keeps them. With ``images`` the batches
    also carry frame windows at the step and at its bootstrap step, read only for the batch:
    of the dataset's frames, or of ``image_source``, one row per step in their place (the
    pretrained encoder's cached features of its frozen blocks).
    """

    def __init__(
        self,
        data: OfflineDataset,
        discretizer: ActionDiscretizer,
        gamma: float,
        n_step: int,
        window: int,
        images: bool = False,
        image_source: np.ndarray | None = None,
        q_min: float = 0.0,
    ) -> None:
        """``q_min``: lowest value of the value range, the value assumed after a time-limit
        cut in the Monte Carlo returns (:func:`qtransformer.returns.discounted_return_to_go`)."""
        if images and data.images is None:
            raise ValueError(
                "the sampler was asked for images but the dataset has none "
                "(collect with --image-size 64, or pass images to from_arrays)"
            )
        # (T, H, W, C) uint8, maybe a memory map; or per-frame features cached in its place.
        self.images = (data.images if image_source is None else image_source) if images else None
        if self.images is not None and len(self.images) != len(data):
            raise ValueError(f"image_source has {len(self.images)} rows for {len(data)} steps")
        ep = data.episodes
        nstep = nstep_targets(data.rewards, ep, gamma, n_step)
        self.obs = data.observations  # (T, obs_dim), possibly a memory map
        self.bins = discretizer.to_bins(data.actions).astype(np.int16)  # (T, dA)
        self.start = ep.starts[ep.episode_of_step]  # (T,)
        self.offsets = np.arange(-(window - 1), 1)  # (w,)
        self.bootstrap_index = nstep.bootstrap_index
        self.reward_sum = nstep.reward_sum.astype(np.float32)
        self.bootstrap_discount = nstep.bootstrap_discount.astype(np.float32)
        self.td_valid = nstep.td_valid
        self.mc_return = discounted_return_to_go(data.rewards, ep, gamma, q_min).astype(np.float32)
        self.task = np.asarray(data.task_ids, np.int64)

    def __len__(self) -> int:
        return int(self.bins.shape[0])

    def windows(self, idx: np.ndarray) -> np.ndarray:
        """Observation indices of the windows ending at ``idx``: ``(B, w)``, never crossing
        an episode start (equals :func:`qtransformer.returns.window_indices` rows)."""
        return np.maximum(idx[:, None] + self.offsets, self.start[idx][:, None])

    def _frames(self, idx: np.ndarray) -> torch.Tensor:
        w = self.windows(idx)  # (B, w)
        return torch.from_numpy(np.ascontiguousarray(self.obs[w.ravel()]).reshape(*w.shape, -1))

    def _image_frames(self, idx: np.ndarray) -> torch.Tensor | None:
        if self.images is None:
            return None
        w = self.windows(idx)  # (B, w)
        frames = np.ascontiguousarray(self.images[w.ravel()])  # (B w, H, W, C)
        return torch.from_numpy(frames.reshape(*w.shape, *frames.shape[1:]))

    def batch(self, idx: torch.Tensor | np.ndarray) -> Batch:
        i = np.asarray(idx, dtype=np.int64)
        j = self.bootstrap_index[i]
        return Batch(
            obs=self._frames(i),
            bins=torch.from_numpy(self.bins[i].astype(np.int64)),
            reward_sum=torch.from_numpy(self.reward_sum[i]),
            bootstrap_discount=torch.from_numpy(self.bootstrap_discount[i]),
            next_obs=self._frames(j),
            mc_return=torch.from_numpy(self.mc_return[i]),
            td_valid=torch.from_numpy(self.td_valid[i]),
            task=torch.from_numpy(self.task[i]),
            images=self._image_frames(i),
            next_images=self._image_frames(j),
        )

    def sample_indices(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self), (batch_size,), generator=generator)
