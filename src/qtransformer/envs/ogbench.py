"""OGBench manipulation single-task benchmarks (Park et al., ICLR 2025) as we evaluate them.

Four families, five tasks each: ``cube-single``, ``cube-double``, ``scene`` and ``puzzle-3x3``
(:data:`FAMILIES`, :data:`TASK_IDS`). Task ``k`` of a family is OGBench's environment
``f"{family}-singletask-task{k}-v0"``; we call it ``f"{family}-task{k}"`` (:func:`task_name`).

OGBench's evaluation protocol, which :class:`OGBenchTask` follows:

* The reward, ``terminated`` and ``info["success"]`` of a step ``(s, a, s')`` are computed on
  ``s``, before the action (OGBench >= 1.2.0, ``success_timing='pre'``): the reward is the
  number of the task's objects at their goal minus the number of objects (``-n .. 0``).
* The episode terminates on the first step taken from a state with every object at its goal
  (``terminate_at_goal=True``); that step has reward 0 and ``info["success"]`` True.
* Otherwise it is truncated at the family's time limit (:data:`FAMILY_INFO`: 200 env steps
  for cube-single, 500 for cube-double and puzzle-3x3, 750 for scene); there is no action
  repeat. An episode counts as a success when ``info["success"]`` of its last step is True.
* Actions are clipped to ``[-1, 1]^5`` (relative effector x, y, z, yaw and gripper opening);
  observations are state vectors (28-d, 37-d, 40-d and 55-d).

:func:`evaluate_ogbench` runs a :class:`qtransformer.policy.Policy` on these tasks with the
evaluator Meta-World uses (:func:`qtransformer.evaluate.evaluate`).
"""

from __future__ import annotations

import os
import sys

# MuJoCo picks its OpenGL backend when it is imported: headless EGL unless the user chose one.
if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")

import warnings  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from qtransformer.evaluate import EvalResult
    from qtransformer.policy import Policy

FAMILIES = ("cube-single", "cube-double", "scene", "puzzle-3x3")
"""The OGBench manipulation families we support (state observations)."""
TASK_IDS = (1, 2, 3, 4, 5)
"""Every family has five single tasks."""
OGBENCH_VERSION = "1.2.2"
"""The OGBench release these facts were read from (the Makefile installs it)."""
ACTION_DIM = 5
ACTION_SPACE = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
"""Every family's action: relative effector x, y, z and yaw, and gripper opening, in [-1, 1]."""


@dataclass(frozen=True)
class FamilyInfo:
    """Facts of one OGBench manipulation family, as OGBench registers it.

    Attributes:
        max_steps: Evaluation time limit in env steps (OGBench's ``max_episode_steps``).
        obs_dim: Length of the state observation.
        n_objects: Objects the single-task reward counts (cubes, buttons, drawer, window):
            rewards lie in ``[-n_objects, 0]``.
        default_task: OGBench's representative task (its ``singletask`` alias).
    """

    max_steps: int
    obs_dim: int
    n_objects: int
    default_task: int


FAMILY_INFO: dict[str, FamilyInfo] = {
    "cube-single": FamilyInfo(max_steps=200, obs_dim=28, n_objects=1, default_task=2),
    "cube-double": FamilyInfo(max_steps=500, obs_dim=37, n_objects=2, default_task=2),
    # One cube, two lock buttons, the drawer and the window.
    "scene": FamilyInfo(max_steps=750, obs_dim=40, n_objects=5, default_task=2),
    # Lights Out on a 3x3 grid: every button is an object.
    "puzzle-3x3": FamilyInfo(max_steps=500, obs_dim=55, n_objects=9, default_task=4),
}

# Short descriptions of OGBench's task goals (its task names in brackets). Directions are the
# robot's: it stands at the origin facing +x, so +y is its left.
INSTRUCTIONS: dict[str, dict[int, str]] = {
    "cube-single": {
        1: "move the cube to the robot's right (horizontal)",
        2: "move the cube away from the robot (vertical1)",
        3: "move the cube toward the robot (vertical2)",
        4: "move the cube diagonally away from the robot to its left (diagonal1)",
        5: "move the cube diagonally away from the robot to its right (diagonal2)",
    },
    "cube-double": {
        1: "move one cube to the robot's left, leaving the other in place (single pnp)",
        2: "move both cubes to the robot's left (double pnp1)",
        3: "move the two cubes apart to the left and right (double pnp2)",
        4: "swap the two cubes (swap)",
        5: "stack one cube on top of the other (stack)",
    },
    "scene": {
        1: "open the drawer and the window (open)",
        2: "unlock the drawer and the window, close both and lock them again (unlock and lock)",
        3: "move the cube, open the drawer, unlock the window and close it (rearrange medium)",
        4: "unlock the drawer and put the cube in it, drawer closed (put in drawer)",
        5: "put the cube in the closed drawer and open the window, both locked (rearrange hard)",
    },
    # Rows of the 3x3 buttons, 1 = pressed on (blue), 0 = off (red).
    "puzzle-3x3": {
        1: "lights out 3x3: turn 000/000/000 into 110/101/011",
        2: "lights out 3x3: turn 111/111/111 into 011/111/111",
        3: "lights out 3x3: turn 010/111/010 into 101/010/101",
        4: "lights out 3x3: turn 010/101/010 into 111/111/111",
        5: "lights out 3x3: turn 111/111/111 into 101/101/101",
    },
}


def check_family(family: str) -> None:
    """Raise ``ValueError`` naming the known families unless ``family`` is one."""
    if family not in FAMILIES:
        raise ValueError(f"unknown OGBench family {family!r}; known: {list(FAMILIES)}")


def check_task(family: str, task_id: int) -> None:
    """Raise ``ValueError`` unless ``family`` is known and ``task_id`` is one of 1..5."""
    check_family(family)
    if isinstance(task_id, bool) or not isinstance(task_id, int | np.integer):
        raise ValueError(f"{family}: task id must be an integer in 1..5, got {task_id!r}")
    if task_id not in TASK_IDS:
        raise ValueError(f"{family}: unknown task id {task_id}; OGBench has tasks 1..5")


def task_name(family: str, task_id: int) -> str:
    """Our name of a task, e.g. ``"cube-single-task1"`` (datasets and results use it)."""
    check_task(family, task_id)
    return f"{family}-task{int(task_id)}"


def ogbench_env_id(family: str, task_id: int) -> str:
    """OGBench's id of the single-task environment, e.g. ``"cube-single-singletask-task1-v0"``."""
    check_task(family, task_id)
    return f"{family}-singletask-task{int(task_id)}-v0"


def instruction(family: str, task_id: int) -> str:
    """The task's English instruction, e.g. ``"cube-single task 1: move the cube ..."``."""
    check_task(family, task_id)
    return f"{family} task {int(task_id)}: {INSTRUCTIONS[family][int(task_id)]}"


def family_info(family: str) -> FamilyInfo:
    """Time limit, observation size, object count and default task of ``family``."""
    check_family(family)
    return FAMILY_INFO[family]


def observation_dim(family: str) -> int:
    """Length of ``family``'s state observation."""
    return family_info(family).obs_dim


def action_bounds(family: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of an action (every family: ``[-1, 1]^5``), float64.

    Args:
        family: Checked when given; the bounds are the same for all.
    """
    if family is not None:
        check_family(family)
    return ACTION_SPACE.low.astype(np.float64), ACTION_SPACE.high.astype(np.float64)


def import_ogbench() -> Any:
    """Import OGBench's manipulation environments (registering them with gymnasium).

    Raises:
        ImportError: saying how to install it, when OGBench is missing.
    """
    try:
        import ogbench.manipspace  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"OGBench is not installed ({e}): run `pip install ogbench=={OGBENCH_VERSION} "
            "mujoco==3.3.0` in one command (as the Makefile does), so MuJoCo stays at the "
            "version Meta-World pins"
        ) from e
    import ogbench

    return ogbench


def make_raw_env(env_id: str, **kwargs: Any) -> Any:
    """OGBench's own environment ``env_id`` without gymnasium's wrappers (no time limit).

    Gymnasium's space-precision warnings (OGBench builds float64-bounded float32 boxes on
    every ``action_space`` access) are silenced.
    """
    import_ogbench()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped


class OGBenchTask(gym.Env):
    """One OGBench manipulation single task, with OGBench's evaluation protocol.

    Rewards, termination and ``info["success"]`` are OGBench's own (see the module docstring):
    reward ``#objects at goal - #objects`` of the state before each action, termination on the
    step taken from a state with every object at its goal (``info["success"]`` True, reward
    0), truncation at ``max_steps`` env steps. Actions are clipped to ``[-1, 1]``.
    ``reset(seed=s)`` starts from the same state as OGBench's environment reset with seed
    ``s``. Observations are float32 state vectors.

    Args:
        family: One of :data:`FAMILIES`.
        task_id: 1 to 5.
        max_steps: Time limit in env steps; default: OGBench's for the family.
    """

    metadata = {"render_modes": []}

    def __init__(self, family: str, task_id: int, max_steps: int | None = None) -> None:
        check_task(family, task_id)
        info = FAMILY_INFO[family]
        limit = info.max_steps if max_steps is None else int(max_steps)
        if limit < 1:
            raise ValueError(f"max_steps must be >= 1 env step, got {max_steps}")
        self.family, self.task_id, self.max_steps = family, int(task_id), limit
        self.task = task_name(family, task_id)
        self.instruction = instruction(family, task_id)
        self.inner = make_raw_env(ogbench_env_id(family, task_id))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (info.obs_dim,), np.float32)
        self.action_space = ACTION_SPACE
        self.env_steps = 0
        self.done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31))
        with warnings.catch_warnings():
            # The task reset samples OGBench's action space (float64 bounds, float32 box).
            warnings.simplefilter("ignore", UserWarning)
            ob, _ = self.inner.reset(seed=int(seed))
        self.env_steps, self.done = 0, False
        return np.asarray(ob, np.float32), {"success": False, "env_steps": 0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.done:
            raise RuntimeError("step() after the episode ended: call reset()")
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(ACTION_DIM), -1.0, 1.0)
        ob, reward, terminated, _, info = self.inner.step(a)
        self.env_steps += 1
        terminated = bool(terminated)
        truncated = not terminated and self.env_steps >= self.max_steps
        self.done = terminated or truncated
        out = {"success": bool(info["success"]), "env_steps": self.env_steps}
        return np.asarray(ob, np.float32), float(reward), terminated, truncated, out


def env_spec(
    family: str, task_id: int, max_steps: int | None = None
) -> gym.envs.registration.EnvSpec:
    """Gymnasium spec of :class:`OGBenchTask` with these settings (``gym.make(spec)`` works)."""
    check_task(family, task_id)
    return gym.envs.registration.EnvSpec(
        id="qtransformer/OGBench-v0",
        entry_point="qtransformer.envs.ogbench:OGBenchTask",
        kwargs={"family": family, "task_id": int(task_id), "max_steps": max_steps},
    )


def resolve_task_ids(task_ids: int | str | Sequence[int]) -> list[int]:
    """Task ids from ``3``, ``"1,3"``, ``"all"`` or a sequence; in order, no duplicates.

    Raises:
        ValueError: for an id outside 1..5 or none at all.
    """
    if isinstance(task_ids, str):
        text = task_ids.strip().lower()
        if text == "all":
            return list(TASK_IDS)
        try:
            task_ids = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise ValueError(
                f"task ids {task_ids!r}: give numbers 1..5 like '1,3', or 'all'"
            ) from None
    elif isinstance(task_ids, int | np.integer):
        task_ids = [int(task_ids)]
    ids = list(dict.fromkeys(int(k) if isinstance(k, np.integer) else k for k in task_ids))
    if not ids:
        raise ValueError("no task id given; OGBench has tasks 1..5")
    for k in ids:
        if isinstance(k, bool) or not isinstance(k, int) or k not in TASK_IDS:
            raise ValueError(f"unknown task id {k!r}; OGBench has tasks 1..5")
    return ids


def evaluate_ogbench(
    policy: Policy,
    family: str,
    task_ids: int | str | Sequence[int] = TASK_IDS,
    episodes: int = 50,
    num_envs: int = 10,
    seed: int = 0,
    max_steps: int | None = None,
    multi_task: bool | None = None,
    progress: bool = False,
    instructions: Mapping[str, str] | None = None,
) -> dict[str, EvalResult]:
    """Evaluate a state policy on OGBench single tasks: ``num_envs`` environments at a time.

    The evaluator and seeding are Meta-World's (:func:`qtransformer.evaluate.evaluate`):
    episode ``k`` of every task is reset with seed ``EVAL_SEED_OFFSET + seed * 10**5 + k``.
    A policy that reads instructions is told each task's :func:`instruction`; a multi-task
    one its name (``"cube-single-task1"``).

    Args:
        policy: A :class:`qtransformer.policy.Policy` that reads state vectors.
        family: One of :data:`FAMILIES`.
        task_ids: Tasks to evaluate (``1..5``, ``"1,3"``, ``"all"``).
        episodes: Episodes per task.
        num_envs: Environments stepped together (one batched ``act`` per step).
        seed: Evaluation seed (see above).
        max_steps: Time limit in env steps; default: the training data's recorded one, else
            OGBench's for the family.
        multi_task: Pass the task name to ``act``; default: when there are several tasks.
        progress: Show a progress bar over tasks.
        instructions: Task name -> instruction to use instead of the task's own.

    Returns:
        One :class:`~qtransformer.evaluate.EvalResult` per task, keyed by task name;
        ``mean_return`` is OGBench's (negative) return.

    Raises:
        ValueError: for an unknown family or task, a policy that reads images, data recorded
            with an action repeat other than 1, or instructions for tasks not evaluated or
            given to a policy that does not read them.
    """
    from qtransformer.evaluate import EVAL_SEED_OFFSET, check_instructions, evaluate
    from qtransformer.policy import policy_factory

    check_family(family)
    ids = resolve_task_ids(task_ids)
    names = {k: task_name(family, k) for k in ids}
    observes = policy.observes
    if observes.images:
        raise ValueError(
            f"OGBench evaluation gives state observations; this policy reads "
            f"{observes.observation!r}"
        )
    repeat = observes.recorded("action_repeat")
    if repeat is not None and int(repeat) != 1:
        raise ValueError(
            f"the policy's training data recorded action_repeat={repeat}; OGBench tasks are "
            "evaluated without action repeat (1)"
        )
    check_instructions(instructions, list(names.values()), observes)
    recorded = observes.recorded("max_steps")
    limit = max_steps if max_steps is not None else recorded
    limit = FAMILY_INFO[family].max_steps if limit is None else int(limit)
    named = len(ids) > 1 if multi_task is None else multi_task
    base = EVAL_SEED_OFFSET + seed * 100_000
    iterator: Any = ids
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(ids, desc="eval", unit="task")
    results: dict[str, EvalResult] = {}
    for k in iterator:
        name = names[k]
        condition: dict[str, Any] = {"task": name if named else None}
        if observes.reads_instructions:
            condition = {"instruction": (instructions or {}).get(name, instruction(family, k))}
        envs = [OGBenchTask(family, k, limit) for _ in range(num_envs)]
        try:
            results[name] = evaluate(policy_factory(policy, **condition), envs, episodes, base)
        finally:
            for e in envs:
                e.close()
    return results
