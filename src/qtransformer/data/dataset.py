"""Offline datasets of flat arrays, validated, and the sampler that turns them into batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from qtransformer.discretize import ActionDiscretizer
from qtransformer.returns import (
    Episodes,
    discounted_return_to_go,
    find_episodes,
    nstep_targets,
    window_indices,
)

log = logging.getLogger(__name__)


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
    """

    obs: torch.Tensor
    bins: torch.Tensor
    reward_sum: torch.Tensor
    bootstrap_discount: torch.Tensor
    next_obs: torch.Tensor
    mc_return: torch.Tensor
    td_valid: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.bins.shape[0])


def _as_float_array(name: str, x: object, ndim: int) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if ndim == 1 and a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} contains NaN or inf at index {where}")
    return a


class OfflineDataset:
    """Episodes stored back to back as flat arrays (D4RL layout), validated on creation."""

    def __init__(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        timeouts: np.ndarray,
        action_low: np.ndarray,
        action_high: np.ndarray,
    ) -> None:
        self.observations = observations
        self.actions = actions
        self.rewards = rewards
        self.terminals = terminals
        self.timeouts = timeouts
        self.action_low = action_low
        self.action_high = action_high
        self.episodes: Episodes = find_episodes(terminals, timeouts)

    @classmethod
    def from_arrays(
        cls,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        timeouts: np.ndarray,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
    ) -> OfflineDataset:
        """Build a dataset from D4RL-style flat arrays, episodes back to back.

        Args:
            observations: ``(T, obs_dim)``.
            actions: ``(T, dA)`` continuous actions.
            rewards: ``(T,)``.
            terminals: ``(T,)`` true episode ends (no bootstrap).
            timeouts: ``(T,)`` time-limit truncations (bootstrap).
            action_low: ``(dA,)`` lower bounds; default: the data's per-dimension minimum.
            action_high: ``(dA,)`` upper bounds; default: the data's per-dimension maximum.

        Raises:
            ValueError: naming the field for wrong shapes, NaN or inf, disagreeing lengths,
                actions outside the given bounds, or an empty dataset.
        """
        obs = _as_float_array("observations", observations, 2)
        act = _as_float_array("actions", actions, 2)
        rew = _as_float_array("rewards", rewards, 1)
        term = np.asarray(terminals).reshape(-1).astype(bool)
        tout = np.asarray(timeouts).reshape(-1).astype(bool)
        lengths = {
            "observations": len(obs),
            "actions": len(act),
            "rewards": len(rew),
            "terminals": len(term),
            "timeouts": len(tout),
        }
        if len(set(lengths.values())) != 1:
            raise ValueError(f"array lengths disagree: {lengths}")
        if len(obs) == 0:
            raise ValueError("empty dataset: observations has no steps")
        lo, hi = act.min(axis=0).astype(np.float64), act.max(axis=0).astype(np.float64)
        flat = hi <= lo
        if (action_low is None or action_high is None) and flat.any():
            log.warning(
                "action dims %s are constant in the data; widening their bounds by 0.5",
                np.flatnonzero(flat).tolist(),
            )
            lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)
        low = lo if action_low is None else np.asarray(action_low, dtype=np.float64).reshape(-1)
        high = hi if action_high is None else np.asarray(action_high, dtype=np.float64).reshape(-1)
        if low.shape != (act.shape[1],) or high.shape != (act.shape[1],):
            raise ValueError(
                f"action_low/action_high must have shape ({act.shape[1]},), "
                f"got {low.shape} and {high.shape}"
            )
        # Raises with the offending step and dimension if an action is out of bounds.
        ActionDiscretizer(low, high, 2).to_bins(act)
        return cls(obs, act, rew, term, tout, low, high)

    @classmethod
    def load_npz(cls, path: str | Path) -> OfflineDataset:
        """Read a ``.npz`` of flat arrays with the names of :meth:`from_arrays`."""
        with np.load(path) as f:
            missing = {"observations", "actions", "rewards", "terminals", "timeouts"} - set(f)
            if missing:
                raise ValueError(f"{path} lacks arrays {sorted(missing)}")
            kw = {k: f[k] for k in f.files}
        return cls.from_arrays(**kw)

    def save_npz(self, path: str | Path) -> None:
        """Write the arrays to ``path`` atomically (a temporary file, then a rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            observations=self.observations,
            actions=self.actions,
            rewards=self.rewards,
            terminals=self.terminals,
            timeouts=self.timeouts,
            action_low=self.action_low,
            action_high=self.action_high,
        )
        tmp.replace(path)

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def num_episodes(self) -> int:
        return int(len(self.episodes.starts))

    def default_q_max(self, gamma: float) -> float:
        """Value bound: 1 for sparse success rewards in [0, 1], else r_max / (1 - gamma)."""
        r = self.rewards
        if r.min() < 0:
            raise ValueError(
                f"rewards must be non-negative for the [0, q_max] value range, got min {r.min()}"
            )
        sparse = r.max() <= 1.0 and not np.any((r > 0) & ~self.terminals)
        if sparse:
            return 1.0
        return float(max(r.max(), 1e-8) / (1.0 - gamma))


class TransitionSampler:
    """Precomputed per-step targets and indices; draws random batches as tensors."""

    def __init__(
        self,
        data: OfflineDataset,
        discretizer: ActionDiscretizer,
        gamma: float,
        n_step: int,
        window: int,
    ) -> None:
        ep = data.episodes
        nstep = nstep_targets(data.rewards, ep, gamma, n_step)
        self.obs = torch.from_numpy(data.observations)  # (T, obs_dim)
        self.bins = torch.from_numpy(discretizer.to_bins(data.actions))  # (T, dA)
        self.windows = torch.from_numpy(window_indices(ep, window))  # (T, w)
        self.bootstrap_index = torch.from_numpy(nstep.bootstrap_index)
        self.reward_sum = torch.from_numpy(nstep.reward_sum.astype(np.float32))
        self.bootstrap_discount = torch.from_numpy(nstep.bootstrap_discount.astype(np.float32))
        self.td_valid = torch.from_numpy(nstep.td_valid)
        mc = discounted_return_to_go(data.rewards, ep, gamma)
        self.mc_return = torch.from_numpy(mc.astype(np.float32))

    def __len__(self) -> int:
        return int(self.bins.shape[0])

    def batch(self, idx: torch.Tensor) -> Batch:
        w = self.windows[idx]  # (B, w)
        return Batch(
            obs=self.obs[w],
            bins=self.bins[idx],
            reward_sum=self.reward_sum[idx],
            bootstrap_discount=self.bootstrap_discount[idx],
            next_obs=self.obs[self.windows[self.bootstrap_index[idx]]],
            mc_return=self.mc_return[idx],
            td_valid=self.td_valid[idx],
        )

    def sample_indices(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self), (batch_size,), generator=generator)
