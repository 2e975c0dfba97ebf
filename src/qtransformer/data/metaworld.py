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

import atexit  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import warnings  # noqa: E402
import weakref  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
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

POLICY_KINDS = ("demo", "expert", "noisy", "perturbed", "slow", "hesitant", "degraded", "random")
KEEP_RULES = ("all", "success", "failure")
PRESETS = ("demos", "mixed", "noisy", "suboptimal")
DEFAULT_EPISODES_PER_TASK: dict[str, int] = {
    "demos": 50,
    "mixed": 60,
    "noisy": 50,
    "suboptimal": 50,
}
DEFAULT_MAX_STEPS = 200
DEFAULT_ACTION_REPEAT = 1
FALLBACK_NOISE = 1.0
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")

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
        raise ValueError(
            f"unknown Meta-World v3 task {task!r}; known: {sorted(ALL_V3_ENVIRONMENTS)}"
        )


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
        # Meta-World types its map with the abstract base class; the values are concrete.
        self.expert = None if spec.kind == "random" else ENV_POLICY_MAP[task]()  # type: ignore[abstract]
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


_TASK_ENVS: dict[tuple[Any, ...], MetaWorldTask] = {}


def _new_env(task: str) -> Any:
    """A fresh simulator for ``task``, set up to draw a new configuration per seed."""
    # The goal-observable classes take a seed; Meta-World types them as their base class.
    env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-goal-observable"](seed=0)  # type: ignore[call-arg]
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    return env


_OPEN_RENDERERS: weakref.WeakSet[mujoco.Renderer] = weakref.WeakSet()


def _close_renderers() -> None:
    # Close GL contexts while EGL still exists; left to interpreter teardown they fail noisily.
    for renderer in list(_OPEN_RENDERERS):
        renderer.close()


def _renderer(env: Any, size: int) -> mujoco.Renderer:
    # No shadows, multisampling or reflections: 10x faster in software GL, alike at 64 px.
    env.model.vis.quality.shadowsize = 0
    env.model.vis.quality.offsamples = 0
    try:
        renderer = mujoco.Renderer(env.model, height=size, width=size)
    except mujoco.FatalError as e:
        raise RuntimeError(
            f"no OpenGL context for offscreen images (MUJOCO_GL="
            f"{os.environ.get('MUJOCO_GL')!r}): set MUJOCO_GL=egl (or osmesa) before MuJoCo "
            "is first imported, e.g. by importing qtransformer.data.metaworld first"
        ) from e
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    if not _OPEN_RENDERERS:
        # Registered after MuJoCo's own EGL teardown, so it runs before it (atexit is LIFO).
        atexit.register(_close_renderers)
    _OPEN_RENDERERS.add(renderer)
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


class MetaWorldTask(gym.Env):
    """One Meta-World v3 task as we collect and evaluate it.

    Sparse reward: 1.0 on the decision during which the task first succeeds, which ends the
    episode (``terminated``); otherwise 0 until ``max_steps`` env steps are used
    (``truncated``). Each decision's action is repeated ``action_repeat`` env steps.
    ``reset(seed=s)`` draws the same object and goal placement as ``collect_episode(..., s)``.
    Observations are the 39-d state (float32), or ``{"state", "image"}`` with ``image_size``.

    Args:
        task: Meta-World v3 task name.
        max_steps: Time limit in env steps (below Meta-World's own 500).
        action_repeat: Env steps per decision.
        image_size: Also render square frames of this size in px.
        camera: Camera for the images, one of :data:`CAMERAS`.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: str,
        max_steps: int = DEFAULT_MAX_STEPS,
        action_repeat: int = DEFAULT_ACTION_REPEAT,
        image_size: int | None = None,
        camera: str = "corner",
    ) -> None:
        _check_task(task)
        _check_limits(max_steps, action_repeat)
        self.task, self.max_steps, self.action_repeat = task, max_steps, action_repeat
        self.image_size, self.instruction = image_size, INSTRUCTIONS[task]
        self.inner = _new_env(task)
        state = gym.spaces.Box(-np.inf, np.inf, (39,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        if image_size is None:
            self.observation_space: gym.Space = state
        else:
            image = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
            self.observation_space = gym.spaces.Dict({"state": state, "image": image})
            self.cam = _camera_id(self.inner, camera)
            self.renderer = _renderer(self.inner, image_size)
        self.env_steps = 0
        self.success = False
        self.raw_obs = np.zeros(39)

    def _observe(self, raw: np.ndarray) -> Any:
        self.raw_obs = raw
        state = np.asarray(raw, dtype=np.float32)
        if self.image_size is None:
            return state
        upside_down = bool(self.inner.data.cam_xmat[self.cam][7] < 0)  # z of the up axis
        return {"state": state, "image": _render(self.renderer, self.inner, self.cam, upside_down)}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31))
        env_seed = np.random.SeedSequence(seed).generate_state(2)[0]
        self.inner.seed(int(env_seed))
        raw, _ = self.inner.reset()
        self.env_steps, self.success = 0, False
        return self._observe(raw), {"success": False, "env_steps": 0}

    def close(self) -> None:
        renderer = getattr(self, "renderer", None)
        if renderer is not None:
            renderer.close()
            _OPEN_RENDERERS.discard(renderer)
            self.renderer = None

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.success or self.env_steps >= self.max_steps:
            raise RuntimeError("step() after the episode ended: call reset()")
        a = np.asarray(action, dtype=np.float32)
        raw = self.raw_obs
        for _ in range(min(self.action_repeat, self.max_steps - self.env_steps)):
            raw, _, _, _, info = self.inner.step(a)
            self.env_steps += 1
            if info["success"]:
                self.success = True
                break
        truncated = not self.success and self.env_steps >= self.max_steps
        info = {"success": self.success, "env_steps": self.env_steps}
        return self._observe(raw), float(self.success), self.success, truncated, info


def env_spec(
    task: str,
    max_steps: int = DEFAULT_MAX_STEPS,
    action_repeat: int = DEFAULT_ACTION_REPEAT,
    image_size: int | None = None,
    camera: str = "corner",
) -> gym.envs.registration.EnvSpec:
    """Gymnasium spec of :class:`MetaWorldTask` with these settings (``gym.make(spec)`` works)."""
    return gym.envs.registration.EnvSpec(
        id="qtransformer/MetaWorld-v0",
        entry_point="qtransformer.data.metaworld:MetaWorldTask",
        kwargs={
            "task": task,
            "max_steps": max_steps,
            "action_repeat": action_repeat,
            "image_size": image_size,
            "camera": camera,
        },
    )


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
    _check_task(task)
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
    _check_task(task)
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
