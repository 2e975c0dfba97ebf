"""Offline datasets from Meta-World v3 with its scripted experts, in the Q-Transformer regimes.

Episodes have a sparse reward: 1.0 on the step that succeeds, which ends the episode
(``terminated``); otherwise 0 everywhere and ``truncated`` at the time limit. Policies are the
scripted expert of each task, degraded in documented ways (:class:`PolicySpec`), and recipes
(:class:`RecipeItem`, :func:`preset_recipe`) say how many episodes of which policy to keep:
demonstrations, failed autonomous attempts, noisy replays, successes of uneven quality.

Everything is deterministic given its seeds: the environment's object and goal placement and
the policy's noise come from the episode seed, never from global random state.
"""

from __future__ import annotations

import os
import sys

# MuJoCo picks its OpenGL backend when it is imported: headless EGL unless the user chose one.
if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")

import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import warnings  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from functools import cache  # noqa: E402
from typing import Any  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from metaworld.env_dict import (  # noqa: E402
    ALL_V3_ENVIRONMENTS,
    ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE,
    MT10_V3,
    MT50_V3,
)
from metaworld.policies import ENV_POLICY_MAP  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from qtransformer.data.episodes import Episode  # noqa: E402

logger = logging.getLogger(__name__)

Policy = Callable[[np.ndarray, np.random.Generator], np.ndarray]

MT10: list[str] = list(MT10_V3)
MT50: list[str] = list(MT50_V3)

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "put the ring on the peg",
    "basketball-v3": "dunk the basketball into the hoop",
    "bin-picking-v3": "move the cube from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top past the wall",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "reach past the wall and press the button",
    "coffee-button-v3": "press the button of the coffee machine",
    "coffee-pull-v3": "pull the mug out of the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "pick the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door",
    "hand-insert-v3": "put the gripper into the hole",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-open-v3": "turn the faucet on",
    "faucet-close-v3": "turn the faucet off",
    "hammer-v3": "hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the puck out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the goal",
    "plate-slide-side-v3": "slide the plate sideways into the goal",
    "plate-slide-back-v3": "slide the plate back out of the goal",
    "plate-slide-back-side-v3": "slide the plate sideways back out of the goal",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "grasp the stick and push the box with it",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "push-back-v3": "pull the puck back to the goal",
    "reach-v3": "reach the goal",
    "reach-wall-v3": "reach over the wall to the goal",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

POLICY_KINDS = ("expert", "noisy", "perturbed", "slow", "hesitant", "degraded", "random")
KEEP_RULES = ("all", "success", "failure")
PRESETS = ("demos", "mixed", "noisy", "suboptimal")
DEFAULT_EPISODES_PER_TASK: dict[str, int] = {"demos": 50, "mixed": 60, "noisy": 50, "suboptimal": 50}
DEFAULT_MAX_STEPS = 200
DEFAULT_ACTION_REPEAT = 1
FALLBACK_NOISE = 1.0
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")

# Gaussian action noise std at which the expert succeeds in about 40% of episodes, with
# max_steps=200 env steps and action_repeat=1 (the defaults). Measured by calibrate_noise():
# bisection on log(noise) in [0.05, 8] with the same 48 episode seeds at every noise level,
# 7 steps; "checked" is the success rate of 100 fresh seeds at the tabled noise.
NOISE_CALIBRATION = {"max_steps": DEFAULT_MAX_STEPS, "action_repeat": DEFAULT_ACTION_REPEAT}
NOISE_FOR_40_PERCENT: dict[str, float] = {}


class CollectionError(RuntimeError):
    """Collection could not keep the wanted number of episodes within its attempt budget."""


@dataclass(frozen=True)
class PolicySpec:
    """A scripted expert, degraded in documented ways; serialisable with ``asdict``.

    Each decision: the base action (the task's scripted expert, or uniform noise when ``kind``
    is ``"random"``), its xyz motion scaled by ``speed``; during a pause the xyz motion is zero
    (the gripper keeps the expert's command, so nothing held is dropped); during a perturbation
    segment the whole action is uniform in ``[-1, 1]``; then Gaussian noise of std ``noise`` on
    every dimension, and clipping to ``[-1, 1]``. A pause (perturbation) starts at a decision
    with probability ``pause_prob`` (``perturb_prob``) and lasts ``pause_len``
    (``perturb_len``) decisions.

    Attributes:
        kind: Label stored as the episode's kind, one of :data:`POLICY_KINDS`.
        noise: Std of the Gaussian noise added to every action dimension.
        speed: Factor in ``(0, 1]`` on the expert's xyz motion: below 1 is slow.
        perturb_prob: Probability per decision of starting a random-action segment.
        perturb_len: Decisions per random-action segment.
        pause_prob: Probability per decision of starting a pause.
        pause_len: Decisions per pause.
    """

    kind: str
    noise: float = 0.0
    speed: float = 1.0
    perturb_prob: float = 0.0
    perturb_len: int = 10
    pause_prob: float = 0.0
    pause_len: int = 10

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"unknown policy kind {self.kind!r}; known: {POLICY_KINDS}")
        if not self.noise >= 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if not 0 < self.speed <= 1:
            raise ValueError(f"speed must be in (0, 1], got {self.speed}")
        for name in ("perturb_prob", "pause_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("perturb_len", "pause_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class RecipeItem:
    """Keep ``count`` episodes of ``spec`` on ``task`` that pass the ``keep`` rule.

    Attributes:
        task: Meta-World v3 task name, e.g. ``"push-v3"``.
        spec: The policy.
        count: Episodes to keep.
        keep: ``"all"``, ``"success"`` (only successes) or ``"failure"`` (only failures);
            rejected attempts are retried with new seeds.
        max_steps: Time limit in env steps.
        action_repeat: Env steps per policy decision.
    """

    task: str
    spec: PolicySpec
    count: int
    keep: str = "all"
    max_steps: int = DEFAULT_MAX_STEPS
    action_repeat: int = DEFAULT_ACTION_REPEAT

    def __post_init__(self) -> None:
        _check_task(self.task)
        if self.keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {self.keep!r}")
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        _check_limits(self.max_steps, self.action_repeat)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_task(task: str) -> None:
    if task not in ALL_V3_ENVIRONMENTS:
        raise ValueError(f"unknown Meta-World v3 task {task!r}; known: {sorted(ALL_V3_ENVIRONMENTS)}")


def _check_limits(max_steps: int, action_repeat: int) -> None:
    if action_repeat < 1:
        raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
    # Meta-World refuses to step past its own path length of 500.
    if not 1 <= max_steps < 500:
        raise ValueError(f"max_steps must be in [1, 499] env steps, got {max_steps}")


def resolve_tasks(tasks: str | Sequence[str]) -> list[str]:
    """Task names from ``"MT10"``, ``"MT50"`` or a comma-separated list (or a sequence).

    Args:
        tasks: ``"MT10"``, ``"MT50"``, ``"reach-v3,push-v3"`` or ``["reach-v3", "push-v3"]``.

    Returns:
        The task names, in order, without duplicates.

    Raises:
        ValueError: If a name is not a Meta-World v3 task, or none is given.
    """
    if isinstance(tasks, str):
        key = tasks.strip().upper()
        if key == "MT10":
            return list(MT10)
        if key == "MT50":
            return list(MT50)
        tasks = tasks.split(",")
    names = list(dict.fromkeys(t.strip() for t in tasks if t.strip()))
    if not names:
        raise ValueError("no task given; use 'MT10', 'MT50' or names like 'reach-v3,push-v3'")
    for name in names:
        _check_task(name)
    return names


class _Degraded:
    """The callable behind :func:`make_policy`; keeps the pause and perturbation counters."""

    def __init__(self, task: str, spec: PolicySpec) -> None:
        self.spec = spec
        self.expert = None if spec.kind == "random" else ENV_POLICY_MAP[task]()
        self.paused = 0
        self.perturbed = 0

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = self.spec
        if self.expert is None:
            action = rng.uniform(-1.0, 1.0, size=4)
        else:
            action = np.clip(np.asarray(self.expert.get_action(obs), dtype=np.float64), -1, 1)
            action[:3] *= s.speed
        if self.paused == 0 and s.pause_prob > 0 and rng.random() < s.pause_prob:
            self.paused = s.pause_len
        if self.paused > 0:
            self.paused -= 1
            action[:3] = 0.0
        if self.perturbed == 0 and s.perturb_prob > 0 and rng.random() < s.perturb_prob:
            self.perturbed = s.perturb_len
        if self.perturbed > 0:
            self.perturbed -= 1
            action = rng.uniform(-1.0, 1.0, size=4)
        if s.noise > 0:
            action = action + rng.normal(0.0, s.noise, size=4)
        return np.clip(action, -1.0, 1.0)


def make_policy(task: str, spec: PolicySpec) -> Policy:
    """A fresh policy ``(obs, rng) -> action in [-1, 1]^4`` for one episode of ``task``.

    Args:
        task: Meta-World v3 task name; picks the scripted expert.
        spec: How to degrade the expert (see :class:`PolicySpec`).
    """
    _check_task(task)
    return _Degraded(task, spec)


_ENVS: dict[str, Any] = {}
_RENDERERS: dict[tuple[str, int], mujoco.Renderer] = {}


def _env(task: str) -> Any:
    """This process's environment for ``task``, set up to draw a new configuration per seed."""
    env = _ENVS.get(task)
    if env is None:
        env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-goal-observable"](seed=0)
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        _ENVS[task] = env
    return env


def _renderer(task: str, env: Any, size: int) -> mujoco.Renderer:
    renderer = _RENDERERS.get((task, size))
    if renderer is None:
        # No shadows, no multisampling: 3x to 10x faster in software GL, same picture at 64 px.
        env.model.vis.quality.shadowsize = 0
        env.model.vis.quality.offsamples = 0
        renderer = mujoco.Renderer(env.model, height=size, width=size)
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        _RENDERERS[(task, size)] = renderer
    return renderer


def _camera_id(env: Any, camera: str) -> int:
    cam = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cam < 0:
        names = [
            mujoco.mj_id2name(env.model, mujoco.mjtObj.mjOBJ_CAMERA, i)
            for i in range(env.model.ncam)
        ]
        raise ValueError(f"unknown camera {camera!r}; this model has {names}")
    return cam


def _render(renderer: mujoco.Renderer, env: Any, cam: int, upside_down: bool) -> np.ndarray:
    renderer.update_scene(env.data, camera=cam)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    frame = renderer.render()
    # Meta-World's corner cameras are mounted with their up axis pointing down: turn the
    # picture half a turn (a vertical flip alone would leave it mirrored).
    return frame[::-1, ::-1].copy() if upside_down else frame.copy()


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
    _check_task(task)
    _check_limits(max_steps, action_repeat)
    env = _env(task)
    env_seed, policy_seed = np.random.SeedSequence(seed).generate_state(2)
    env.seed(int(env_seed))
    rng = np.random.default_rng(policy_seed)
    policy = make_policy(task, spec)
    obs, _ = env.reset()
    frames: list[np.ndarray] | None = None
    if image_size is not None:
        cam = _camera_id(env, camera)
        renderer = _renderer(task, env, image_size)
        upside_down = bool(env.data.cam_xmat[cam][7] < 0)  # z of the camera's up axis
        frames = [_render(renderer, env, cam, upside_down)]
    observations, actions, rewards = [obs], [], []
    steps, success = 0, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the experts' "constants too high"
        while steps < max_steps and not success:
            action = policy(obs, rng).astype(np.float32)
            for _ in range(min(action_repeat, max_steps - steps)):
                obs, _, _, _, info = env.step(action)
                steps += 1
                if info["success"]:
                    success = True
                    break
            observations.append(obs)
            actions.append(action)
            rewards.append(1.0 if success else 0.0)
            if frames is not None:
                frames.append(_render(renderer, env, cam, upside_down))
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


def _success_rate(
    task: str, noise: float, seeds: Sequence[int], max_steps: int, action_repeat: int
) -> float:
    spec = PolicySpec("noisy", noise=noise)
    wins = sum(collect_episode(task, spec, s, max_steps, action_repeat).success for s in seeds)
    return wins / len(seeds)


def calibrate_noise(
    task: str,
    target: float = 0.4,
    episodes: int = 48,
    max_steps: int = DEFAULT_MAX_STEPS,
    action_repeat: int = DEFAULT_ACTION_REPEAT,
    low: float = 0.05,
    high: float = 8.0,
    iterations: int = 7,
    seed: int = 0,
) -> float:
    """The expert's Gaussian action noise std at which ``task`` succeeds ``target`` of the time.

    Bisection on ``log(noise)`` between ``low`` and ``high``, measuring the success rate on the
    same ``episodes`` seeds at every noise level (common random numbers make the measured
    curve close to monotone).

    Args:
        task: Meta-World v3 task name.
        target: Wanted success rate.
        episodes: Episodes per noise level.
        max_steps: Time limit in env steps, as in the collection it is for.
        action_repeat: Env steps per decision, as in the collection it is for.
        low: Smallest noise tried; returned with a warning if it is already too much.
        high: Largest noise tried; returned with a warning if it is not enough.
        iterations: Bisection steps after checking the ends.
        seed: Seeds the episodes.

    Returns:
        The noise std, rounded to 3 significant digits.
    """
    _check_task(task)
    seeds = [int(s) for s in np.random.SeedSequence([seed, _task_key(task)]).generate_state(
        episodes, dtype=np.uint64
    )]

    def rate(noise: float) -> float:
        r = _success_rate(task, noise, seeds, max_steps, action_repeat)
        logger.info("calibrate %s: noise %.3g -> success %.2f", task, noise, r)
        return r

    if rate(high) >= target:
        logger.warning("%s: success >= %.2f even at noise %.3g; using it", task, target, high)
        return high
    if rate(low) <= target:
        logger.warning("%s: success <= %.2f already at noise %.3g; using it", task, target, low)
        return low
    lo, hi = math.log(low), math.log(high)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if rate(math.exp(mid)) > target:
            lo = mid
        else:
            hi = mid
    return float(f"{math.exp((lo + hi) / 2):.3g}")


@cache
def _calibrated(task: str, max_steps: int, action_repeat: int) -> float:
    return calibrate_noise(task, max_steps=max_steps, action_repeat=action_repeat)


def noise_for_task(
    task: str,
    max_steps: int = DEFAULT_MAX_STEPS,
    action_repeat: int = DEFAULT_ACTION_REPEAT,
    calibrate: bool = True,
) -> float:
    """The expert's noise std for about 40% success on ``task`` under these limits.

    From :data:`NOISE_FOR_40_PERCENT` when the task is there and the limits are those it was
    measured with; otherwise measured now with :func:`calibrate_noise` (about 10 to 30 s,
    remembered for the process) or, if ``calibrate`` is false, :data:`FALLBACK_NOISE` with a
    warning.
    """
    _check_task(task)
    same_limits = (max_steps, action_repeat) == (
        NOISE_CALIBRATION["max_steps"],
        NOISE_CALIBRATION["action_repeat"],
    )
    if same_limits and task in NOISE_FOR_40_PERCENT:
        return NOISE_FOR_40_PERCENT[task]
    if calibrate:
        logger.info("calibrating the noise of %s (max_steps=%d)", task, max_steps)
        return _calibrated(task, max_steps, action_repeat)
    logger.warning(
        "no calibrated noise for %s at max_steps=%d, action_repeat=%d; using %.2f",
        task,
        max_steps,
        action_repeat,
        FALLBACK_NOISE,
    )
    return FALLBACK_NOISE


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
) -> list[RecipeItem]:
    """A recipe in one of the paper's data regimes, per task.

    - ``demos``: expert demonstrations (noise 0.1), successes only.
    - ``mixed``: 2/3 demonstrations and 1/3 failed autonomous attempts: a ``degraded`` expert
      (noise for 40% success, plus random detours) of which only failures are kept.
    - ``noisy``: 9/10 ``noisy`` replays at the per-task noise for about 40% success, successes
      and failures all kept, and 1/10 demonstrations.
    - ``suboptimal``: successes of uneven quality, a fifth each of fast ``expert``, ``slow``
      (half speed), ``hesitant`` (pauses) and ``perturbed`` (random detours) ones, plus a fifth
      ``degraded`` failures.

    Args:
        name: One of :data:`PRESETS`.
        tasks: Task names or ``"MT10"``/``"MT50"``/``"a-v3,b-v3"``.
        episodes_per_task: Episodes kept per task; default :data:`DEFAULT_EPISODES_PER_TASK`.
        max_steps: Time limit in env steps.
        action_repeat: Env steps per decision.
        calibrate: Measure the 40% noise of tasks not in :data:`NOISE_FOR_40_PERCENT` (else
            use :data:`FALLBACK_NOISE`).

    Returns:
        Recipe items, task by task, that :func:`collect` runs.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {PRESETS}")
    n = DEFAULT_EPISODES_PER_TASK[name] if episodes_per_task is None else episodes_per_task
    if n < 1:
        raise ValueError(f"episodes_per_task must be >= 1, got {n}")
    demo = PolicySpec("expert", noise=0.1)
    items: list[RecipeItem] = []
    for task in resolve_tasks(tasks):
        if name == "demos":
            parts = [(demo, n, "success")]
        else:
            sigma = noise_for_task(task, max_steps, action_repeat, calibrate)
            degraded = PolicySpec("degraded", noise=sigma, perturb_prob=0.02, perturb_len=10)
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
                    (PolicySpec("slow", noise=0.1, speed=0.5), "success"),
                    (PolicySpec("hesitant", noise=0.1, pause_prob=0.05, pause_len=10), "success"),
                    (
                        PolicySpec("perturbed", noise=0.1, perturb_prob=0.03, perturb_len=10),
                        "success",
                    ),
                    (degraded, "failure"),
                ]
                counts = _split(n, [1] * len(specs))
                parts = [(s, k, keep) for (s, keep), k in zip(specs, counts)]
        items += [
            RecipeItem(task, spec, count, keep, max_steps, action_repeat)
            for spec, count, keep in parts
            if count > 0
        ]
    return items


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


def _attempt(job: tuple) -> tuple[bool, int, Episode | None]:
    """Run one attempt; render images only for an episode that is kept (a cheap rerun)."""
    item, seed, image_size, camera, extra = job
    ep = collect_episode(item.task, item.spec, seed, item.max_steps, item.action_repeat)
    if not _accepts(item.keep, ep.success):
        return ep.success, ep.info["env_steps"], None
    if image_size is not None:
        ep = collect_episode(
            item.task, item.spec, seed, item.max_steps, item.action_repeat, image_size, camera
        )
    ep.info.update(extra)
    return ep.success, ep.info["env_steps"], ep


def _init_worker(gl: str | None) -> None:
    if gl:
        os.environ.setdefault("MUJOCO_GL", gl)
    logging.getLogger("metaworld").setLevel(logging.WARNING)


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
        gl = os.environ.get("MUJOCO_GL")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(gl,))
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
            for i, (_, _, ep) in zip(owners, results):
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
