"""Meta-World v3 tasks as we collect and evaluate them: sparse reward, action repeat, time limit.

:class:`MetaWorldTask` is a gymnasium environment: 1.0 on the decision during which the task
first succeeds, which ends the episode (``terminated``); otherwise 0 until the time limit
(``truncated``). Observations are the 39-d state, or ``{"state", "image"}`` with camera frames
the right way up. Every task has an English instruction (:data:`INSTRUCTIONS`).
"""

from __future__ import annotations

import os
import sys

# MuJoCo picks its OpenGL backend when it is imported: headless EGL unless the user chose one.
if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")

import atexit  # noqa: E402
import weakref  # noqa: E402
from collections.abc import Sequence  # noqa: E402
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

DEFAULT_MAX_STEPS = 200
DEFAULT_ACTION_REPEAT = 1
ACTION_SPACE = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
"""Every task's action: xyz motion and gripper, each in [-1, 1]."""
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")


def check_task(task: str) -> None:
    if task not in ALL_V3_ENVIRONMENTS:
        raise ValueError(
            f"unknown Meta-World v3 task {task!r}; known: {sorted(ALL_V3_ENVIRONMENTS)}"
        )


def check_limits(max_steps: int, action_repeat: int) -> None:
    if action_repeat < 1:
        raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
    # Meta-World refuses to step past its own path length of 500.
    if not 1 <= max_steps < 500:
        raise ValueError(f"max_steps must be in [1, 499] env steps, got {max_steps}")


def resolve_tasks(tasks: str | Sequence[str]) -> list[str]:
    """Task names from ``"MT10"``, ``"MT50"`` or a comma-separated list (or a sequence).

    Args:
        tasks: ``"MT10"``, ``"MT50"``, ``"reach-v3,push-v3"`` or ``["reach-v3", "push-v3"]``;
            a suite's name inside a list or beside other names stands for its tasks.

    Returns:
        The task names, in order, without duplicates.

    Raises:
        ValueError: If a name is not a Meta-World v3 task, or none is given.
    """
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    suites = {"MT10": MT10, "MT50": MT50}
    expanded = [n for t in tasks for n in suites.get(t.strip().upper(), [t.strip()])]
    names = list(dict.fromkeys(t for t in expanded if t))
    if not names:
        raise ValueError("no task given; use 'MT10', 'MT50' or names like 'reach-v3,push-v3'")
    for name in names:
        check_task(name)
    return names


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
        try:
            renderer.close()
        except Exception:  # EGL already torn down: nothing left to free at exit
            context = getattr(renderer, "_gl_context", None)
            if context is not None:
                context._context = None  # so that its __del__ does not retry either
            renderer._gl_context = None
            renderer._mjr_context = None


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
            "is first imported, e.g. by importing qtransformer.envs.metaworld first"
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
        check_task(task)
        check_limits(max_steps, action_repeat)
        self.task, self.max_steps, self.action_repeat = task, max_steps, action_repeat
        self.image_size, self.instruction = image_size, INSTRUCTIONS[task]
        self.inner = _new_env(task)
        state = gym.spaces.Box(-np.inf, np.inf, (39,), np.float32)
        self.action_space = ACTION_SPACE
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
        entry_point="qtransformer.envs.metaworld:MetaWorldTask",
        kwargs={
            "task": task,
            "max_steps": max_steps,
            "action_repeat": action_repeat,
            "image_size": image_size,
            "camera": camera,
        },
    )


def action_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of a Meta-World action (every task: ``[-1, 1]^4``), read from
    :class:`MetaWorldTask`'s action space."""
    return ACTION_SPACE.low.astype(np.float64), ACTION_SPACE.high.astype(np.float64)
