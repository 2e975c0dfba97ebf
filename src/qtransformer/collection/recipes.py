"""Recipes in the paper's data regimes: which policies, how many episodes, which kept."""

from __future__ import annotations

from collections.abc import Sequence

from qtransformer.collection.noise import (
    _calibrate_missing,
    noise_for_task,
)
from qtransformer.collection.policies import PolicySpec, RecipeItem
from qtransformer.envs.metaworld import DEFAULT_ACTION_REPEAT, DEFAULT_MAX_STEPS, resolve_tasks

PRESETS = ("demos", "mixed", "noisy", "suboptimal")
DEFAULT_EPISODES_PER_TASK: dict[str, int] = {
    "demos": 50,
    "mixed": 60,
    "noisy": 50,
    "suboptimal": 50,
}


def _split(n: int, weights: Sequence[float]) -> list[int]:
    """``n`` split in proportion to ``weights`` by largest remainders."""
    total = sum(weights)
    raw = [n * w / total for w in weights]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def preset_recipe(
    name: str,
    tasks: str | Sequence[str],
    episodes_per_task: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    action_repeat: int = DEFAULT_ACTION_REPEAT,
    calibrate: bool = True,
    workers: int = 2,
) -> list[RecipeItem]:
    """A recipe in one of the paper's data regimes, per task.

    - ``demos``: ``demo`` episodes: the expert with noise 0.1, successes only.
    - ``mixed``: 2/3 demonstrations and 1/3 failed autonomous attempts: a ``degraded`` expert
      (noise for 40% success, plus random detours) of which only failures are kept.
    - ``noisy``: 9/10 ``noisy`` replays at the per-task noise for about 40% success, successes
      and failures all kept, and 1/10 demonstrations.
    - ``suboptimal``: successes of uneven quality, a fifth each of fast ``demo``, ``slow``
      (0.7 speed), ``hesitant`` (pauses) and ``perturbed`` (random detours) ones, plus a fifth
      ``degraded`` failures.

    Args:
        name: One of :data:`PRESETS`.
        tasks: Task names or ``"MT10"``/``"MT50"``/``"a-v3,b-v3"``.
        episodes_per_task: Episodes kept per task; default :data:`DEFAULT_EPISODES_PER_TASK`.
        max_steps: Time limit in env steps.
        action_repeat: Env steps per decision.
        calibrate: Measure the 40% noise of tasks not in :data:`NOISE_FOR_40_PERCENT` (15 to
            60 s of CPU each), else fall back as :func:`noise_for_task` says.
        workers: Processes for that measurement.

    Returns:
        Recipe items, task by task, that :func:`collect` runs.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {PRESETS}")
    n = DEFAULT_EPISODES_PER_TASK[name] if episodes_per_task is None else episodes_per_task
    if n < 1:
        raise ValueError(f"episodes_per_task must be >= 1, got {n}")
    demo = PolicySpec("demo", noise=0.1)
    names = resolve_tasks(tasks)
    if calibrate and name != "demos":
        _calibrate_missing(names, max_steps, action_repeat, workers)
    items: list[RecipeItem] = []
    for task in names:
        if name == "demos":
            parts = [(demo, n, "success")]
        else:
            sigma = noise_for_task(task, max_steps, action_repeat, calibrate)
            degraded = _degraded(sigma)
            if name == "mixed":
                k_demo, k_fail = _split(n, [2, 1])
                parts = [(demo, k_demo, "success"), (degraded, k_fail, "failure")]
            elif name == "noisy":
                k_noisy, k_demo = _split(n, [9, 1])
                noisy = PolicySpec("noisy", noise=sigma)
                parts = [(noisy, k_noisy, "all"), (demo, k_demo, "success")]
            else:
                specs = [
                    (demo, "success"),
                    (PolicySpec("slow", noise=0.1, speed=0.7), "success"),
                    (PolicySpec("hesitant", noise=0.1, pause_prob=0.05, pause_len=10), "success"),
                    (
                        PolicySpec("perturbed", noise=0.1, perturb_prob=0.03, perturb_len=10),
                        "success",
                    ),
                    (degraded, "failure"),
                ]
                counts = _split(n, [1] * len(specs))
                parts = [(s, k, keep) for (s, keep), k in zip(specs, counts, strict=True)]
        items += [
            RecipeItem(task, spec, count, keep, max_steps, action_repeat)
            for spec, count, keep in parts
            if count > 0
        ]
    return items


def _degraded(noise: float) -> PolicySpec:
    """The failed-autonomous-attempt policy: noisy expert with occasional random detours."""
    return PolicySpec("degraded", noise=noise, perturb_prob=0.02, perturb_len=10)


def custom_recipe(
    tasks: str | Sequence[str],
    demos: int = 0,
    failures: int = 0,
    demo_noise: float = 0.1,
    max_steps: int = DEFAULT_MAX_STEPS,
    action_repeat: int = DEFAULT_ACTION_REPEAT,
    calibrate: bool = True,
    workers: int = 2,
) -> list[RecipeItem]:
    """Demonstrations and failed attempts per task, in the counts given.

    Args:
        tasks: Task names or ``"MT10"``/``"MT50"``/``"a-v3,b-v3"``.
        demos: ``demo`` episodes per task (the expert with ``demo_noise``; successes only).
        failures: ``degraded`` episodes per task (the expert at its 40%-success noise with
            random detours; failures only), as in the ``mixed`` preset.
        demo_noise: Gaussian action noise of the demonstrations.
        max_steps: Time limit in env steps.
        action_repeat: Env steps per decision.
        calibrate: Measure the noise of tasks not in :data:`NOISE_FOR_40_PERCENT`.
        workers: Processes for that measurement.

    Returns:
        Recipe items, task by task.
    """
    if demos < 0 or failures < 0 or demos + failures == 0:
        raise ValueError(f"want demos >= 0 and failures >= 0, not both 0: {demos}, {failures}")
    names = resolve_tasks(tasks)
    if calibrate and failures:
        _calibrate_missing(names, max_steps, action_repeat, workers)
    items: list[RecipeItem] = []
    for task in names:
        if demos:
            spec = PolicySpec("demo", noise=demo_noise)
            items.append(RecipeItem(task, spec, demos, "success", max_steps, action_repeat))
        if failures:
            spec = _degraded(noise_for_task(task, max_steps, action_repeat, calibrate))
            items.append(RecipeItem(task, spec, failures, "failure", max_steps, action_repeat))
    return items
