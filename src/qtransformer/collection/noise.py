"""Per-task action noise at which the scripted expert succeeds about 40% of the time: the
``noisy`` preset's replays and the failed attempts of ``mixed`` and ``suboptimal`` use it."""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing as mp
from collections.abc import Sequence

import numpy as np

from qtransformer.collection.collector import _task_key, collect_episode
from qtransformer.collection.policies import PolicySpec
from qtransformer.envs.metaworld import DEFAULT_ACTION_REPEAT, DEFAULT_MAX_STEPS, check_task

logger = logging.getLogger(__name__)

FALLBACK_NOISE = 1.0


# Gaussian action noise std at which the expert succeeds in about 40% of episodes, with
# max_steps=200 env steps and action_repeat=1 (the defaults). Measured with
# calibrate_noise(task, episodes=64, iterations=5): bisection on log(noise) in [0.05, 8] on the
# same 64 seeds at each level, then a logistic fit over the 320 episodes. Checked on 100 fresh
# seeds each, the success rates were: reach .48, push .39, pick-place .37, door-open .54,
# drawer-open .31, drawer-close .43, button-press-topdown .43, peg-insert-side .51,
# window-open .29, window-close .39 (about 8 CPU minutes in all).
NOISE_CALIBRATION = {"max_steps": DEFAULT_MAX_STEPS, "action_repeat": DEFAULT_ACTION_REPEAT}
NOISE_FOR_40_PERCENT: dict[str, float] = {
    "reach-v3": 2.87,
    "push-v3": 0.65,
    "pick-place-v3": 0.788,
    "door-open-v3": 1.48,
    "drawer-open-v3": 1.37,
    "drawer-close-v3": 4.91,
    "button-press-topdown-v3": 2.55,
    "peg-insert-side-v3": 0.61,
    "window-open-v3": 1.89,
    "window-close-v3": 2.1,
}


def _fit_crossing(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """Where a logistic fit ``sigmoid(a + b x)`` of outcomes ``y`` crosses ``target``."""
    X = np.stack([np.ones_like(x), x - x.mean()], axis=1)
    w = np.zeros(2)
    for _ in range(50):
        p = 1 / (1 + np.exp(-(X @ w)))
        grad = X.T @ (y - p)
        hess = X.T @ (X * (p * (1 - p) + 1e-6)[:, None]) + 1e-3 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-8:
            break
    if not np.all(np.isfinite(w)) or w[1] >= 0:
        return None
    return float(x.mean() + (math.log(target / (1 - target)) - w[0]) / w[1])


def calibrate_noise(
    task: str,
    target: float = 0.4,
    episodes: int = 48,
    max_steps: int = DEFAULT_MAX_STEPS,
    action_repeat: int = DEFAULT_ACTION_REPEAT,
    low: float = 0.05,
    high: float = 8.0,
    iterations: int = 5,
    seed: int = 0,
) -> float:
    """The expert's Gaussian action noise std at which ``task`` succeeds ``target`` of the time.

    Bisection on ``log(noise)`` between ``low`` and ``high``, measuring the success rate on the
    same ``episodes`` seeds at every noise level (common random numbers make the measured
    curve close to monotone), then a logistic fit of success against ``log(noise)`` over all
    the episodes run, solved for ``target``. Costs ``iterations * episodes`` episodes: 15 to
    60 s per task on one core at the defaults.

    Args:
        task: Meta-World v3 task name.
        target: Wanted success rate.
        episodes: Episodes per noise level.
        max_steps: Time limit in env steps, as in the collection it is for.
        action_repeat: Env steps per decision, as in the collection it is for.
        low: Smallest noise considered.
        high: Largest noise considered.
        iterations: Bisection steps.
        seed: Seeds the episodes.

    Returns:
        The noise std, to 3 significant digits, within ``[low, high]``; a warning is logged
        if the success rate never crosses ``target`` there.
    """
    check_task(task)
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target}")
    state = np.random.SeedSequence([seed, _task_key(task)]).generate_state(episodes, np.uint64)
    seeds = [int(s) for s in state]
    spec = functools.partial(PolicySpec, "noisy")
    lo, hi = math.log(low), math.log(high)
    xs: list[float] = []
    ys: list[float] = []
    for _ in range(iterations):
        mid = (lo + hi) / 2
        wins = [
            collect_episode(task, spec(noise=math.exp(mid)), s, max_steps, action_repeat).success
            for s in seeds
        ]
        rate = sum(wins) / len(wins)
        logger.info("calibrate %s: noise %.3g -> success %.2f", task, math.exp(mid), rate)
        xs += [mid] * len(wins)
        ys += [float(w) for w in wins]
        if rate > target:
            lo = mid
        else:
            hi = mid
    if lo == math.log(low) or hi == math.log(high):
        logger.warning(
            "%s: success stays %s %.2f for noise in [%.3g, %.3g]; using the edge",
            task,
            "below" if lo == math.log(low) else "above",
            target,
            low,
            high,
        )
        crossing = (lo + hi) / 2
    else:
        fit = _fit_crossing(np.asarray(xs), np.asarray(ys), target)
        crossing = (lo + hi) / 2 if fit is None else fit
    noise = min(max(math.exp(crossing), low), high)
    return float(f"{noise:.3g}")


NOISE_AT_OTHER_LIMITS: dict[tuple[str, int, int], float] = {
    # (task, max_steps, action_repeat): calibrate_noise with its defaults, as in the table above.
    ("push-v3", 200, 4): 0.276,  # the benchmark's and the demo's setting
    # The MT10 study's setting (2.3 min for the nine tasks, two processes); drawer-close stays
    # above 40% success up to the bisection's edge, so its value is the fit's extrapolation.
    ("reach-v3", 200, 4): 2.63,
    ("pick-place-v3", 200, 4): 0.414,
    ("door-open-v3", 200, 4): 1.16,
    ("drawer-open-v3", 200, 4): 0.595,
    ("drawer-close-v3", 200, 4): 7.39,
    ("button-press-topdown-v3", 200, 4): 1.84,
    ("peg-insert-side-v3", 200, 4): 0.374,
    ("window-open-v3", 200, 4): 1.08,
    ("window-close-v3", 200, 4): 1.5,
}
_CALIBRATED: dict[tuple[str, int, int], float] = dict(NOISE_AT_OTHER_LIMITS)


def _calibrate_job(key: tuple[str, int, int]) -> float:
    task, max_steps, action_repeat = key
    return calibrate_noise(task, max_steps=max_steps, action_repeat=action_repeat)


def _calibrate_missing(
    tasks: Sequence[str], max_steps: int, action_repeat: int, workers: int
) -> None:
    """Calibrate, ``workers`` tasks at a time, the tasks :func:`noise_for_task` would."""
    limits = {"max_steps": max_steps, "action_repeat": action_repeat}
    keys = [
        (t, max_steps, action_repeat)
        for t in dict.fromkeys(tasks)
        if (t, max_steps, action_repeat) not in _CALIBRATED
        and not (limits == NOISE_CALIBRATION and t in NOISE_FOR_40_PERCENT)
    ]
    if not keys:
        return
    logger.info("calibrating the noise of %d tasks for %s", len(keys), limits)
    if workers > 1 and len(keys) > 1:
        with mp.get_context("spawn").Pool(min(workers, len(keys))) as pool:
            noises = pool.map(_calibrate_job, keys, chunksize=1)
    else:
        noises = [_calibrate_job(k) for k in keys]
    _CALIBRATED.update(zip(keys, noises, strict=True))


def noise_for_task(
    task: str,
    max_steps: int = DEFAULT_MAX_STEPS,
    action_repeat: int = DEFAULT_ACTION_REPEAT,
    calibrate: bool = True,
) -> float:
    """The expert's noise std for about 40% success on ``task`` under these limits.

    From :data:`NOISE_FOR_40_PERCENT` when the task is there and the limits are those it was
    measured with. Otherwise measured now with :func:`calibrate_noise` (15 to 60 s, remembered
    for the process), or, if ``calibrate`` is false, the tabled value measured under other
    limits or else :data:`FALLBACK_NOISE`, with a warning.

    Args:
        task: Meta-World v3 task name.
        max_steps: Time limit in env steps of the collection.
        action_repeat: Env steps per decision of the collection.
        calibrate: Whether to measure a noise that is not in the table.
    """
    check_task(task)
    limits = {"max_steps": max_steps, "action_repeat": action_repeat}
    if limits == NOISE_CALIBRATION and task in NOISE_FOR_40_PERCENT:
        return NOISE_FOR_40_PERCENT[task]
    if calibrate:
        _calibrate_missing([task], max_steps, action_repeat, workers=1)  # logs when it measures
        return _CALIBRATED[(task, max_steps, action_repeat)]
    noise = NOISE_FOR_40_PERCENT.get(task, FALLBACK_NOISE)
    logger.warning(
        "no noise calibrated for %s with %s; using %.3g, so the success rate may be far from 40%%",
        task,
        limits,
        noise,
    )
    return noise
