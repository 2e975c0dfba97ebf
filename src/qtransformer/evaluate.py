"""Batched rollouts of a policy in gymnasium environments -> success rates and lengths."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from qtransformer.policy import BatchPolicy, Observes, Policy, policy_factory

log = logging.getLogger(__name__)

__all__ = [
    "EVAL_SEED_OFFSET",
    "BatchPolicy",
    "EnvSettings",
    "EvalResult",
    "check_instructions",
    "env_settings",
    "evaluate",
    "evaluate_metaworld",
    "film",
    "wilson_interval",
]


@dataclass(frozen=True)
class EvalResult:
    """Outcome of a set of evaluation episodes.

    Attributes:
        episodes: Number of episodes.
        success_rate: Fraction of episodes with ``info["success"]`` at their end.
        ci_low: Lower end of the 95% Wilson interval of the success rate.
        ci_high: Upper end of the 95% Wilson interval.
        mean_length: Mean episode length (policy decisions) over all episodes.
        mean_success_length: Mean length of the successful episodes (NaN if none): the
            decisions a policy needs to finish the task.
        mean_return: Mean undiscounted return.
        success_lengths: Decisions each successful episode took, in episode order: the
            success rate under any shorter time limit ``T`` is ``sum(n <= T) / episodes``.
    """

    episodes: int
    success_rate: float
    ci_low: float
    ci_high: float
    mean_length: float
    mean_success_length: float
    mean_return: float
    success_lengths: tuple[int, ...] = ()

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


def _stack(items: Sequence[Any]) -> Any:
    """Observations of several environments as one batch (dict observations key by key)."""
    if isinstance(items[0], Mapping):
        return {k: np.stack([item[k] for item in items]) for k in items[0]}
    return np.stack(items)


def _set_row(batch: Any, i: int, item: Any) -> None:
    if isinstance(batch, dict):
        for k, v in item.items():
            batch[k][i] = v
    else:
        batch[i] = item


def evaluate(
    make_policy: Callable[[int], BatchPolicy],
    envs: Sequence[gym.Env],
    episodes: int,
    seed: int = 0,
) -> EvalResult:
    """Run ``episodes`` episodes, ``len(envs)`` at a time, acting in one batch per step.

    Args:
        make_policy: ``make_policy(num_envs)`` returns a fresh batched policy for one wave of
            episodes (a stateful one may keep observation history);
            :func:`qtransformer.policy.policy_factory` makes one from a policy.
        envs: Environments stepped together.
        episodes: Total number of episodes.
        seed: Episode ``k`` is reset with seed ``seed + k``.
    """
    lengths, returns, successes = [], [], []
    k = 0
    while k < episodes:
        wave = envs[: min(len(envs), episodes - k)]
        policy = make_policy(len(wave))
        obs = _stack([env.reset(seed=seed + k + i)[0] for i, env in enumerate(wave)])
        active = np.ones(len(wave), dtype=bool)
        length = np.zeros(len(wave), dtype=np.int64)
        ret = np.zeros(len(wave))
        success = np.zeros(len(wave), dtype=bool)
        while active.any():
            actions = policy(obs)
            for i in np.flatnonzero(active):
                o, r, term, trunc, info = wave[int(i)].step(actions[i])
                _set_row(obs, int(i), o)
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
        success_lengths=tuple(int(n) for n in succ_len),
    )


EVAL_SEED_OFFSET = 1_000_000
"""Evaluation episodes use seeds from here on, apart from the collection seeds."""

FALLBACK_MAX_STEPS = 200
FALLBACK_ACTION_REPEAT = 1


@dataclass(frozen=True)
class EnvSettings:
    """How evaluation sets up each Meta-World environment.

    Attributes:
        max_steps: Time limit in env steps.
        action_repeat: Env steps per decision.
        image_size: Side of the rendered frames for a policy that reads images, else None.
        camera: Camera of those frames ("corner" unless the policy says otherwise).
    """

    max_steps: int
    action_repeat: int
    image_size: int | None = None
    camera: str = "corner"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def env_settings(
    observes: Observes,
    max_steps: int | None = None,
    action_repeat: int | None = None,
    image_size: int | None = None,
    camera: str | None = None,
) -> EnvSettings:
    """The environment settings to evaluate a policy under: what is given, else what its
    training data recorded (``observes.env``), else 200 steps at action repeat 1 (logged as a
    warning, since the data's own settings are unknown).

    Raises:
        ValueError: for a policy that reads images and knows no frame size.
    """
    recorded = observes.env
    values: dict[str, int] = {}
    for key, given, fallback in (
        ("max_steps", max_steps, FALLBACK_MAX_STEPS),
        ("action_repeat", action_repeat, FALLBACK_ACTION_REPEAT),
    ):
        if given is not None:
            values[key] = int(given)
        elif recorded.get(key) is not None:
            values[key] = int(recorded[key])
        else:
            log.warning(
                "the policy records no %s of its training data: evaluating with %s=%d; "
                "pass %s= to use the data's",
                key,
                key,
                fallback,
                key,
            )
            values[key] = fallback
    if not observes.images:
        return EnvSettings(values["max_steps"], values["action_repeat"])
    size = image_size or observes.image_size or recorded.get("image_size")
    if size is None:
        raise ValueError("this policy reads images: pass image_size (the data's frame size)")
    cam = camera or observes.camera or recorded.get("camera") or "corner"
    return EnvSettings(values["max_steps"], values["action_repeat"], int(size), str(cam))


def check_instructions(
    instructions: Mapping[str, str] | None, tasks: Sequence[str], observes: Observes
) -> None:
    """Instructions replacing the trained ones must name evaluated tasks, and the policy must
    read instructions.

    Raises:
        ValueError: naming the tasks not evaluated, or the policy that reads none.
    """
    if instructions is None:
        return
    extra = sorted(set(instructions) - set(tasks))
    if extra:
        raise ValueError(f"instructions given for tasks not evaluated: {extra}")
    if not observes.reads_instructions:
        raise ValueError(
            "instructions= needs a policy conditioned on instructions "
            "(an agent trained with task_features='instruction')"
        )


def evaluate_metaworld(
    policy: Policy,
    tasks: Sequence[str],
    episodes: int = 50,
    num_envs: int = 10,
    seed: int = 0,
    max_steps: int | None = None,
    action_repeat: int | None = None,
    multi_task: bool | None = None,
    video_dir: str | Path | None = None,
    video_episodes: int = 0,
    progress: bool = False,
    instructions: Mapping[str, str] | None = None,
    image_size: int | None = None,
    camera: str | None = None,
) -> dict[str, EvalResult]:
    """Evaluate a policy on Meta-World tasks: ``num_envs`` environments stepped together.

    The environments are set up as the policy's training data was (``policy.observes.env``:
    time limit, action repeat) unless told otherwise. A policy that observes ``"image"`` or
    ``"both"`` gets rendered frames as ``{"state", "image"}`` dicts, at the size and camera of
    its training data; one that reads instructions is told each task by its instruction
    (``instruction=``).

    Args:
        policy: A :class:`qtransformer.policy.Policy`; wrap a Q-Transformer agent in
            :class:`qtransformer.policy.AgentPolicy`.
        tasks: Task names.
        episodes: Episodes per task.
        num_envs: Environments stepped together (one batched ``act`` per step).
        seed: Episode ``k`` of a task starts from seed ``EVAL_SEED_OFFSET + seed * 10**5 + k``.
        max_steps: Time limit in env steps; default: the training data's (see
            :func:`env_settings`).
        action_repeat: Env steps per decision; default: the training data's.
        multi_task: Pass the task name to ``act``; default: when there are several tasks.
        video_dir: Write GIFs of the first ``video_episodes`` episodes of each task here.
        video_episodes: Episodes per task to film (rendered again, same seeds: at 128 px, or
            at the policy's own size for an image policy).
        progress: Show a progress bar over tasks.
        instructions: Task -> instruction to use instead of the task's own (held-out
            paraphrases); needs a policy that reads instructions.
        image_size: Frame size for an image policy; default: the policy's own.
        camera: Camera for an image policy; default: the policy's own, else "corner".

    Returns:
        One :class:`EvalResult` per task; ``mean_success_length`` counts decisions.

    Raises:
        ValueError: for instructions of tasks not evaluated, instructions given to a policy
            that does not read them, or an image policy without a frame size.
    """
    from qtransformer.envs.metaworld import INSTRUCTIONS, MetaWorldTask

    observes = policy.observes
    named = len(tasks) > 1 if multi_task is None else multi_task
    check_instructions(instructions, tasks, observes)
    env = env_settings(observes, max_steps, action_repeat, image_size, camera)
    base = EVAL_SEED_OFFSET + seed * 100_000
    results = {}
    iterator: Any = tasks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(tasks, desc="eval", unit="task")
    for task in iterator:
        condition: dict[str, Any] = {"task": task if named else None}
        if observes.reads_instructions:
            condition = {"instruction": (instructions or {}).get(task, INSTRUCTIONS[task])}
        envs = [
            MetaWorldTask(
                task,
                env.max_steps,
                env.action_repeat,
                image_size=env.image_size,
                camera=env.camera,
            )
            for _ in range(num_envs)
        ]
        try:
            results[task] = evaluate(policy_factory(policy, **condition), envs, episodes, base)
        finally:
            for e in envs:
                e.close()
        if video_dir is not None and video_episodes > 0:
            film(
                policy,
                task,
                condition,
                video_episodes,
                base,
                env.max_steps,
                env.action_repeat,
                video_dir,
                size=env.image_size or 128,
                camera=env.camera,
                policy_sees_images=env.image_size is not None,
            )
    return results


def film(
    policy: Policy,
    task: str,
    condition: Mapping[str, Any],
    episodes: int,
    seed: int,
    max_steps: int,
    action_repeat: int,
    video_dir: str | Path,
    size: int = 128,
    camera: str = "corner",
    policy_sees_images: bool = False,
) -> list[Path]:
    """Record ``episodes`` episodes (seeds ``seed``, ``seed + 1``, ...) as GIFs.

    Args:
        policy: The policy; ``act(obs, **condition)`` gives its actions.
        task: Meta-World task.
        condition: ``{"task": ...}`` or ``{"instruction": ...}`` for ``act``.
        episodes: Episodes to film.
        seed: Seed of the first.
        max_steps: Time limit in env steps.
        action_repeat: Env steps per decision.
        video_dir: Where the GIFs go.
        size: Frame size in px.
        camera: Camera.
        policy_sees_images: Give the policy the ``{"state", "image"}`` dict (an image policy,
            whose frames then are the video's); else the state vector.
    """
    from PIL import Image

    from qtransformer.envs.metaworld import MetaWorldTask

    out = Path(video_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = MetaWorldTask(task, max_steps, action_repeat, image_size=size, camera=camera)
    make = policy_factory(policy, **condition)
    paths = []
    try:
        for k in range(episodes):
            act = make(1)
            obs, _ = env.reset(seed=seed + k)
            frames = [obs["image"]]
            done, success = False, False
            while not done:
                if policy_sees_images:
                    view: Any = {key: v[None] for key, v in obs.items()}
                else:
                    view = obs["state"][None]
                action = act(view)[0]
                obs, _, success, truncated, _ = env.step(action)
                frames.append(obs["image"])
                done = success or truncated
            path = out / f"{task}_ep{k}_{'success' if success else 'failure'}.gif"
            images = [Image.fromarray(f) for f in frames]
            images[0].save(path, save_all=True, append_images=images[1:], duration=50, loop=0)
            paths.append(path)
    finally:
        env.close()
    return paths
