"""Batched rollouts of a policy in gymnasium environments -> success rates and lengths."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np

BatchPolicy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EvalResult:
    """Outcome of a set of evaluation episodes.

    Attributes:
        episodes: Number of episodes.
        success_rate: Fraction of episodes with ``info["success"]`` at their end.
        ci_low: Lower end of the 95% Wilson interval of the success rate.
        ci_high: Upper end of the 95% Wilson interval.
        mean_length: Mean episode length over all episodes.
        mean_success_length: Mean length of the successful episodes (NaN if none).
        mean_return: Mean undiscounted return.
    """

    episodes: int
    success_rate: float
    ci_low: float
    ci_high: float
    mean_length: float
    mean_success_length: float
    mean_return: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate(
    make_policy: Callable[[int], BatchPolicy],
    envs: Sequence[gym.Env],
    episodes: int,
    seed: int = 0,
) -> EvalResult:
    """Run ``episodes`` episodes, ``len(envs)`` at a time, acting in one batch per step.

    Args:
        make_policy: ``make_policy(num_envs)`` returns a fresh batched policy for one wave of
            episodes (a stateful one may keep observation history).
        envs: Environments stepped together.
        episodes: Total number of episodes.
        seed: Episode ``k`` is reset with seed ``seed + k``.
    """
    lengths, returns, successes = [], [], []
    k = 0
    while k < episodes:
        wave = envs[: min(len(envs), episodes - k)]
        policy = make_policy(len(wave))
        obs = np.stack([env.reset(seed=seed + k + i)[0] for i, env in enumerate(wave)])
        active = np.ones(len(wave), dtype=bool)
        length = np.zeros(len(wave), dtype=np.int64)
        ret = np.zeros(len(wave))
        success = np.zeros(len(wave), dtype=bool)
        while active.any():
            actions = policy(obs)
            for i in np.flatnonzero(active):
                o, r, term, trunc, info = wave[int(i)].step(actions[i])
                obs[i] = o
                length[i] += 1
                ret[i] += r
                success[i] |= bool(info.get("success", False))
                active[i] = not (term or trunc)
        lengths += length.tolist()
        returns += ret.tolist()
        successes += success.tolist()
        k += len(wave)
    n_success = int(sum(successes))
    lo, hi = wilson_interval(n_success, len(successes))
    succ_len = [n for n, s in zip(lengths, successes, strict=True) if s]
    return EvalResult(
        episodes=len(successes),
        success_rate=n_success / len(successes),
        ci_low=lo,
        ci_high=hi,
        mean_length=float(np.mean(lengths)),
        mean_success_length=float(np.mean(succ_len)) if succ_len else float("nan"),
        mean_return=float(np.mean(returns)),
    )
