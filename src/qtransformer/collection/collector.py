"""Collecting recipes into episodes: one episode of a policy, and the parallel collector.

Everything is deterministic given its seeds: the environment's object and goal placement and
the policy's noise come from the episode seed, never from global random state.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from qtransformer.collection.policies import PolicySpec, RecipeItem, make_policy
from qtransformer.data.episodes import Episode
from qtransformer.envs.metaworld import (
    CAMERAS,
    DEFAULT_ACTION_REPEAT,
    DEFAULT_MAX_STEPS,
    INSTRUCTIONS,
    MetaWorldTask,
)


class CollectionError(RuntimeError):
    """Collection could not keep the wanted number of episodes within its attempt budget."""


_TASK_ENVS: dict[tuple[Any, ...], MetaWorldTask] = {}


def collect_episode(
    task: str,
    spec: PolicySpec,
    seed: int,
    max_steps: int = DEFAULT_MAX_STEPS,
    action_repeat: int = DEFAULT_ACTION_REPEAT,
    image_size: int | None = None,
    camera: str = "corner",
) -> Episode:
    """Roll out one episode of ``spec`` on ``task`` with a sparse reward.

    The reward is 1.0 on the decision during which the task first succeeds, which ends the
    episode (``terminated``); otherwise rewards are 0 and the episode is ``truncated`` once
    ``max_steps`` env steps are used. The policy decides every ``action_repeat`` env steps
    and its action is repeated (the last decision may get fewer repeats); observations and
    images are those at decision times, plus the final one.

    Args:
        task: Meta-World v3 task name.
        spec: The policy.
        seed: Picks the object and goal placement and the policy's noise; nothing global.
        max_steps: Time limit in env steps (below Meta-World's own 500).
        action_repeat: Env steps per decision.
        image_size: Also render square ``image_size`` px frames (e.g. 64) when given.
        camera: Camera name for images, one of :data:`CAMERAS`.

    Returns:
        The episode: float32 observations ``(T + 1, 39)``, actions ``(T, 4)``, rewards
        ``(T,)``, uint8 images ``(T + 1, H, W, 3)`` right way up when asked for, ``kind`` =
        ``spec.kind`` and ``info`` with the seed, policy, action repeat, env steps and success.
    """
    key = (task, max_steps, action_repeat, image_size, camera)
    env = _TASK_ENVS.get(key)
    if env is None:  # one simulator per setting and process, reused across episodes
        env = _TASK_ENVS[key] = MetaWorldTask(*key)
    policy_seed = np.random.SeedSequence(seed).generate_state(2)[1]
    rng = np.random.default_rng(policy_seed)
    policy = make_policy(task, spec)
    first, _ = env.reset(seed=seed)
    obs = env.raw_obs
    observations, actions, rewards = [obs], [], []
    frames = None if image_size is None else [first["image"]]
    success = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the experts' "constants too high"
        done = False
        while not done:
            action = policy(obs, rng).astype(np.float32)
            step_obs, reward, success, truncated, info = env.step(action)
            obs = env.raw_obs
            done = success or truncated
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            if frames is not None:
                frames.append(step_obs["image"])
    steps = env.env_steps
    info_out: dict[str, Any] = {
        "seed": int(seed),
        "policy": asdict(spec),
        "action_repeat": action_repeat,
        "max_steps": max_steps,
        "env_steps": steps,
        "success": success,
    }
    if frames is not None:
        info_out["camera"] = camera
    return Episode(
        observations=np.asarray(observations, dtype=np.float32),
        actions=np.asarray(actions, dtype=np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=success,
        truncated=not success,
        task=task,
        instruction=INSTRUCTIONS[task],
        images=None if frames is None else np.stack(frames),
        kind=spec.kind,
        info=info_out,
    )


def _task_key(task: str) -> int:
    return zlib.crc32(task.encode())


def episode_seed(seed: int, task: str, item: int, attempt: int) -> int:
    """The seed of attempt ``attempt`` of the ``item``-th recipe item of ``task``.

    Args:
        seed: The collection's seed.
        task: Task name.
        item: Position of the item among the recipe's items for ``task`` (so one task's
            episodes do not depend on which other tasks are collected with it).
        attempt: Attempt number within the item, from 0.
    """
    state = np.random.SeedSequence([seed, _task_key(task), item, attempt]).generate_state(
        1, dtype=np.uint64
    )
    return int(state[0])


def _accepts(keep: str, success: bool) -> bool:
    return keep == "all" or (keep == "success") == success


def _attempt(job: tuple) -> Episode | None:
    """Run one attempt, the kept episode or None.

    Under a selective keep rule, images are rendered only for an episode that is kept, by
    running it again (rendering costs about 10 times the simulation).
    """
    item, seed, image_size, camera, extra = job
    args = (item.task, item.spec, seed, item.max_steps, item.action_repeat)
    first_pass_images = image_size if item.keep == "all" else None
    ep = collect_episode(*args, image_size=first_pass_images, camera=camera)
    if not _accepts(item.keep, ep.success):
        return None
    if image_size is not None and ep.images is None:
        ep = collect_episode(*args, image_size=image_size, camera=camera)
    ep.info.update(extra)
    return ep


def _init_worker() -> None:
    # Workers inherit MUJOCO_GL from this process, which set it before importing MuJoCo.
    # Software GL (llvmpipe) renders fastest in the calling thread when processes share cores.
    os.environ.setdefault("LP_NUM_THREADS", "0")


def collect(
    recipe: Sequence[RecipeItem],
    seed: int,
    workers: int = 2,
    progress: bool = True,
    image_size: int | None = None,
    camera: str = "corner",
    max_attempts_factor: float = 5.0,
) -> list[Episode]:
    """Collect the episodes of a recipe, in parallel processes, retrying rejected attempts.

    Attempt ``a`` of an item runs with :func:`episode_seed`; each item keeps its first
    ``count`` accepted attempts in attempt order, so the result (order and content) does not
    depend on ``workers``. Surplus attempts run in parallel are dropped.

    Args:
        recipe: What to collect (e.g. from :func:`preset_recipe`).
        seed: Seeds everything.
        workers: Processes ("spawn"); 1 runs in this process.
        progress: Show a tqdm bar of kept episodes.
        image_size: Also render square frames of this size in px (64 to 128 is sensible).
        camera: Camera for the images.
        max_attempts_factor: An item may use up to ``ceil(count * factor)`` attempts.

    Returns:
        The episodes, item by item; each ``info`` also has ``keep`` and ``attempt``.

    Raises:
        CollectionError: If an item's policy passes its keep rule too rarely to reach its
            count within the attempt budget.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_attempts_factor < 1:
        raise ValueError(f"max_attempts_factor must be >= 1, got {max_attempts_factor}")
    if image_size is not None and camera not in CAMERAS:
        raise ValueError(f"unknown camera {camera!r}; known: {CAMERAS}")
    ordinal: dict[str, int] = {}
    slots: list[int] = []
    for item in recipe:
        slots.append(ordinal.get(item.task, 0))
        ordinal[item.task] = slots[-1] + 1
    kept: list[list[Episode]] = [[] for _ in recipe]
    tried = [0] * len(recipe)
    budget = [math.ceil(item.count * max_attempts_factor) for item in recipe]
    bar = tqdm(total=sum(item.count for item in recipe), disable=not progress, unit="ep")
    pool = None
    if workers > 1:
        ctx = mp.get_context("spawn")
        pool = ctx.Pool(workers, initializer=_init_worker)
    try:
        while True:
            jobs, owners = [], []
            for i, item in enumerate(recipe):
                need = item.count - len(kept[i])
                if need <= 0:
                    continue
                rate = len(kept[i]) / tried[i] if tried[i] else 1.0
                n = min(math.ceil(need / max(rate, 1 / max_attempts_factor)), budget[i] - tried[i])
                for a in range(tried[i], tried[i] + n):
                    extra = {"keep": item.keep, "attempt": a}
                    s = episode_seed(seed, item.task, slots[i], a)
                    jobs.append((item, s, image_size, camera, extra))
                    owners.append(i)
            if not jobs:
                break
            results = map(_attempt, jobs) if pool is None else pool.imap(_attempt, jobs)
            for i, ep in zip(owners, results, strict=True):
                tried[i] += 1
                if ep is not None and len(kept[i]) < recipe[i].count:
                    kept[i].append(ep)
                    bar.update(1)
            for i, item in enumerate(recipe):
                if len(kept[i]) < item.count and tried[i] >= budget[i]:
                    raise CollectionError(
                        f"{item.task}: kept {len(kept[i])} of {item.count} {item.keep!r} "
                        f"episodes of policy {asdict(item.spec)} in {tried[i]} attempts "
                        f"(max_attempts_factor={max_attempts_factor}); this policy passes the "
                        "keep rule too rarely: lower the count, raise the factor or the "
                        "time limit, or change the policy"
                    )
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return [ep for eps in kept for ep in eps]


def summary(episodes: Sequence[Episode]) -> dict[str, Any]:
    """Counts of a collection: episodes, successes, steps and array bytes, overall and per task.

    Args:
        episodes: Collected episodes.

    Returns:
        ``{"episodes", "successes", "success_rate", "steps", "env_steps", "bytes",
        "per_task": {task: {...}}, "per_kind": {kind: {...}}}``, where ``steps`` counts
        decisions (actions) and ``bytes`` the arrays' memory, images included.
    """

    def tally(eps: Sequence[Episode]) -> dict[str, Any]:
        successes = sum(ep.success for ep in eps)
        arrays = [(ep.observations, ep.actions, ep.rewards, ep.images) for ep in eps]
        return {
            "episodes": len(eps),
            "successes": successes,
            "success_rate": successes / len(eps) if eps else 0.0,
            "steps": sum(len(ep) for ep in eps),
            "env_steps": sum(int(ep.info.get("env_steps", len(ep))) for ep in eps),
            "bytes": sum(a.nbytes for arr in arrays for a in arr if a is not None),
        }

    out = tally(episodes)
    for key, attr in (("per_task", "task"), ("per_kind", "kind")):
        groups: dict[str, list[Episode]] = {}
        for ep in episodes:
            groups.setdefault(getattr(ep, attr), []).append(ep)
        out[key] = {name: tally(eps) for name, eps in groups.items()}
    return out
