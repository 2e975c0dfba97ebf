"""Episode bookkeeping, Monte Carlo return-to-go and n-step targets on flat arrays.

Flat arrays follow the D4RL convention: episodes back to back, ``terminals[t]`` marks a
true end (success or failure, no bootstrap) and ``timeouts[t]`` a time-limit truncation
(bootstrap). Everything here is pure numpy and shape-checked.

Truncated episodes have no observation after their last step. We bootstrap from the last
observation we do have: an n-step window that would run past the truncation is shortened
to end on the episode's last observation, and the very last step of a truncated episode,
which has no successor at all, is left out of the TD loss (``td_valid = False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Episodes:
    """Where episodes start and end in flat arrays.

    Attributes:
        starts: First index of every episode, shape ``(E,)``.
        ends: Last index (inclusive) of every episode, shape ``(E,)``.
        terminated: Whether each episode ended in a true terminal, shape ``(E,)``.
        episode_of_step: Episode number of every step, shape ``(T,)``.
    """

    starts: np.ndarray
    ends: np.ndarray
    terminated: np.ndarray
    episode_of_step: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts + 1

    @property
    def num_steps(self) -> int:
        return int(self.episode_of_step.shape[0])


def _check_flags(terminals: np.ndarray, timeouts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    term = np.asarray(terminals).astype(bool).reshape(-1)
    tout = np.asarray(timeouts).astype(bool).reshape(-1)
    if term.shape != tout.shape:
        raise ValueError(f"terminals has {term.shape[0]} steps but timeouts has {tout.shape[0]}")
    if term.shape[0] == 0:
        raise ValueError("empty dataset: terminals and timeouts have no steps")
    return term, tout


def find_episodes(terminals: np.ndarray, timeouts: np.ndarray) -> Episodes:
    """Split flat arrays into episodes.

    A step ends an episode when it is terminal or a timeout. If the arrays stop without
    either flag on the last step, that last episode counts as truncated.
    """
    term, tout = _check_flags(terminals, timeouts)
    is_end = term | tout
    is_end[-1] = True
    ends = np.flatnonzero(is_end)
    starts = np.concatenate([[0], ends[:-1] + 1])
    episode_of_step = np.repeat(np.arange(len(ends)), ends - starts + 1)
    return Episodes(
        starts=starts.astype(np.int64),
        ends=ends.astype(np.int64),
        terminated=term[ends],
        episode_of_step=episode_of_step.astype(np.int64),
    )


def discounted_return_to_go(
    rewards: np.ndarray, episodes: Episodes, gamma: float, truncated_value: float = 0.0
) -> np.ndarray:
    """Monte Carlo return-to-go ``MC_t = sum_k gamma^k r_{t+k}`` within each episode.

    (docs/design.md, 'Targets'): the data policy achieved ``MC_t``, so it lower-bounds Q*.
    A time limit cuts an episode whose future still counts: there the value after the cut
    is taken as ``truncated_value`` (the lowest value of the range, 0 for non-negative
    rewards), ``MC_t = sum_{k<m} gamma^k r_{t+k} + gamma^m truncated_value``, which keeps
    the bound valid for negative rewards too.
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if r.shape[0] != episodes.num_steps:
        raise ValueError(
            f"rewards has {r.shape[0]} steps but the episodes cover {episodes.num_steps}"
        )
    out = np.zeros_like(r)
    # Sweep backwards by offset from each episode's end, all episodes at once.
    # Each episode's value after its last step: 0 after a true terminal.
    running = np.where(episodes.terminated, 0.0, float(truncated_value))
    lengths = episodes.lengths
    for k in range(int(lengths.max())):
        alive = lengths > k
        idx = episodes.ends[alive] - k
        running[alive] = r[idx] + gamma * running[alive]
        out[idx] = running[alive]
    return out


@dataclass(frozen=True)
class NStepTargets:
    """Pieces of the last-dimension target ``reward_sum + bootstrap_discount * max_b Q(s', b)``.

    Attributes:
        reward_sum: ``sum_{k<m} gamma^k r_{t+k}``, shape ``(T,)``.
        bootstrap_index: Index of the observation to bootstrap from, shape ``(T,)``.
        bootstrap_discount: ``gamma^m`` where bootstrapping, 0 after a true terminal, ``(T,)``.
        td_valid: False only for the last step of a truncated episode, ``(T,)``.
    """

    reward_sum: np.ndarray
    bootstrap_index: np.ndarray
    bootstrap_discount: np.ndarray
    td_valid: np.ndarray


def nstep_targets(rewards: np.ndarray, episodes: Episodes, gamma: float, n: int) -> NStepTargets:
    """n-step return pieces for every step, cut at episode ends (docs/design.md, 'Targets')."""
    if n < 1:
        raise ValueError(f"n_step must be at least 1, got {n}")
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    T = episodes.num_steps
    if r.shape[0] != T:
        raise ValueError(f"rewards has {r.shape[0]} steps but the episodes cover {T}")
    t = np.arange(T)
    ep = episodes.episode_of_step
    end = episodes.ends[ep]
    terminated = episodes.terminated[ep]
    # Steps available after t inside the episode, t itself included.
    remaining = end - t + 1
    # A truncated episode has no observation past `end`: the window must stop at `end`.
    horizon = np.where(terminated, remaining, remaining - 1)
    m = np.minimum(n, horizon)
    reaches_terminal = terminated & (n >= remaining)
    reward_sum = np.zeros(T)
    for k in range(n):
        use = k < np.where(reaches_terminal, remaining, m)
        reward_sum += np.where(use, gamma**k * r[np.minimum(t + k, T - 1)], 0.0)
    td_valid = reaches_terminal | (m >= 1)
    bootstrap_index = np.where(reaches_terminal | ~td_valid, t, t + m)
    bootstrap_discount = np.where(reaches_terminal | ~td_valid, 0.0, gamma ** m.astype(np.float64))
    # The final step of a truncated episode has no target; keep its reward for bookkeeping.
    reward_sum = np.where(td_valid, reward_sum, r)
    return NStepTargets(
        reward_sum=reward_sum,
        bootstrap_index=bootstrap_index.astype(np.int64),
        bootstrap_discount=bootstrap_discount,
        td_valid=td_valid,
    )


def window_indices(episodes: Episodes, window: int) -> np.ndarray:
    """Indices of the last ``window`` observations of every step, ``(T, window)``.

    Windows never cross an episode start: earlier slots repeat the episode's first frame.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    t = np.arange(episodes.num_steps)
    start = episodes.starts[episodes.episode_of_step]
    offsets = np.arange(-(window - 1), 1)
    return np.maximum(t[:, None] + offsets[None, :], start[:, None]).astype(np.int64)
