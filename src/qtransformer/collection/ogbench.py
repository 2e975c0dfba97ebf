"""OGBench manipulation datasets generated here by OGBench's own scripted oracles.

OGBench publishes its datasets for download; this machine generates them instead, the way
OGBench's manipulation data generation does:

* :func:`generate` runs the goal-conditioned environment (``f"{family}-v0"``) in its
  data-collection mode (random scene, never terminating at a goal) with OGBench's oracles:
  ``"play"`` follows the plan oracles (a pre-computed, noise-perturbed plan per target),
  ``"noisy"`` the Markov oracles with Gaussian action noise and random actions. When the
  oracle finishes, the environment draws a new target and an oracle for it. Every step
  records the observation, the action and the simulator state ``s_t`` the action was taken
  from (OGBench's ``prev_qpos``, ``prev_qvel`` and ``prev_button_states``). OGBench's size
  is 1000 episodes of 1001 observations (``episode_steps=1000`` transitions here); we
  generate a stated fraction (e.g. 100 episodes).
* :func:`singletask_episodes` relabels such play data for one task with OGBench's single-task
  rule and splits it into :class:`~qtransformer.data.episodes.Episode` objects.
* :func:`write_ogbench` writes one Minari dataset per task.

Everything is deterministic given the seed: episode ``i`` seeds the environment and numpy's
global generator (which OGBench's oracles draw from) with :func:`episode_seed`, so the data do
not depend on the number of worker processes. The caller's global numpy state is restored.
"""

from __future__ import annotations

# isort: off
# First: the environment module sets MUJOCO_GL before anything below imports MuJoCo.
from qtransformer.envs import ogbench as oenv

# isort: on

import multiprocessing as mp
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from qtransformer.data.episodes import Episode

DATASET_TYPES = ("play", "noisy")
"""``"play"``: plan oracles (OGBench's default datasets); ``"noisy"``: noisy Markov oracles."""
DEFAULT_EPISODES = 100
"""The fraction of OGBench's 1000 episodes we generate by default (a tenth)."""
EPISODE_STEPS = 1000
"""Transitions per episode: OGBench's 1001 recorded steps less the last, whose next
observation OGBench's loader drops."""
PLAN_NOISE = 0.1
PLAN_NOISE_SMOOTHING = 0.5
MARKOV_MIN_NORM = 0.4
MARKOV_NOISE = 0.1
NOISY_P_RANDOM_ACTION = {"cube-single": 0.1, "cube-double": 0.1, "scene": 0.1, "puzzle-3x3": 0.2}
"""Probability of a uniformly random action per step in OGBench's ``noisy`` datasets."""
QPOS_OBJECTS = 14
"""``qpos[:14]`` is the arm and gripper; objects come after."""


@dataclass
class PlayData:
    """Generated episodes before any task is chosen: what OGBench's data files hold.

    Per episode ``i`` of ``T = episode_steps`` transitions:

    Attributes:
        family: The OGBench family.
        dataset_type: ``"play"`` or ``"noisy"``.
        seed: The generation seed.
        episode_steps: Transitions per episode.
        observations: ``(T + 1, obs_dim)`` float32 per episode.
        actions: ``(T, 5)`` float32 per episode, clipped to ``[-1, 1]``.
        qpos: ``(T, nq)`` float32 per episode: the simulator positions of the state each action
            was taken from (OGBench's ``qpos``, float32 like its files).
        qvel: ``(T, nv)`` float32 per episode, likewise.
        button_states: ``(T, n_buttons)`` int64 per episode (scene and puzzle), else None.
        episode_seeds: The seed of each episode (:func:`episode_seed`).
        retries: Episodes thrown away before each kept one (OGBench's health check of
            scene episodes: the cube out of view outside the drawer).
    """

    family: str
    dataset_type: str
    seed: int
    episode_steps: int
    observations: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    qpos: list[np.ndarray] = field(default_factory=list)
    qvel: list[np.ndarray] = field(default_factory=list)
    button_states: list[np.ndarray] | None = None
    episode_seeds: list[int] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def steps(self) -> int:
        """Transitions over all episodes."""
        return int(sum(len(a) for a in self.actions))

    def ogbench_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays as OGBench's loader returns its files (``add_info=True``, not compact).

        ``observations``, ``actions``, ``next_observations``, ``terminals`` (1.0 on each
        episode's last transition), ``qpos``, ``qvel`` and, where the family has buttons,
        ``button_states``: what ``ogbench.relabel_utils.relabel_dataset`` relabels.
        """
        ends = [np.r_[np.zeros(len(a) - 1, np.float32), np.float32(1.0)] for a in self.actions]
        out = {
            "observations": np.concatenate([o[:-1] for o in self.observations]),
            "actions": np.concatenate(self.actions),
            "next_observations": np.concatenate([o[1:] for o in self.observations]),
            "terminals": np.concatenate(ends),
            "qpos": np.concatenate(self.qpos),
            "qvel": np.concatenate(self.qvel),
        }
        if self.button_states is not None:
            out["button_states"] = np.concatenate(self.button_states)
        return out


def check_dataset_type(dataset_type: str) -> None:
    if dataset_type not in DATASET_TYPES:
        raise ValueError(f"unknown dataset_type {dataset_type!r}; known: {list(DATASET_TYPES)}")


def episode_seed(seed: int, family: str, dataset_type: str, episode: int) -> int:
    """The seed of episode ``episode`` of a generation (< 2**32, as numpy's global RNG needs)."""
    key = [seed, zlib.crc32(family.encode()), zlib.crc32(dataset_type.encode()), episode]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def _oracles(env: Any, family: str, dataset_type: str) -> dict[str, Any]:
    """OGBench's oracles for a family, keyed by the target kind the environment reports."""
    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    markov = dataset_type == "noisy"
    plan = {"noise": PLAN_NOISE, "noise_smoothing": PLAN_NOISE_SMOOTHING}
    if family.startswith("cube"):
        if markov:
            return {"cube": CubeMarkovOracle(env=env, min_norm=MARKOV_MIN_NORM)}
        return {"cube": CubePlanOracle(env=env, **plan)}
    if family == "scene":
        if markov:
            return {
                "cube": CubeMarkovOracle(env=env, min_norm=MARKOV_MIN_NORM, max_step=100),
                "button": ButtonMarkovOracle(env=env, min_norm=MARKOV_MIN_NORM),
                "drawer": DrawerMarkovOracle(env=env, min_norm=MARKOV_MIN_NORM),
                "window": WindowMarkovOracle(env=env, min_norm=MARKOV_MIN_NORM),
            }
        return {
            "cube": CubePlanOracle(env=env, **plan),
            "button": ButtonPlanOracle(env=env, **plan),
            "drawer": DrawerPlanOracle(env=env, **plan),
            "window": WindowPlanOracle(env=env, **plan),
        }
    # Puzzles press buttons with the gripper closed.
    if markov:
        return {
            "button": ButtonMarkovOracle(
                env=env, min_norm=MARKOV_MIN_NORM, gripper_always_closed=True
            )
        }
    return {"button": ButtonPlanOracle(env=env, gripper_always_closed=True, **plan)}


def _stack_probability(family: str) -> float:
    """Chance that a new cube target is on top of another cube, drawn per episode."""
    if family == "cube-single":
        return 0.0
    if family == "cube-double":
        return float(np.random.uniform(0.0, 0.25))
    return 0.5  # scene (one cube: never used) and puzzle (no cubes)


def _healthy(family: str, qpos: np.ndarray) -> bool:
    """OGBench's check of a scene episode: the cube never too far right, and never too far
    left unless at the height of the drawer's floor (so goal images stay unambiguous)."""
    if family != "scene":
        return True
    xyz = qpos[:, QPOS_OBJECTS : QPOS_OBJECTS + 3]
    too_right = (xyz[:, 1] >= 0.29).any()
    left_outside = ((xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))).any()
    return not (too_right or left_outside)


_GENERATION_ENVS: dict[str, Any] = {}
_ORACLES: dict[tuple[str, str], dict[str, Any]] = {}


def _generator(family: str, dataset_type: str) -> tuple[Any, dict[str, Any]]:
    """The family's data-collection environment and the dataset type's oracles (one of each
    per process: a model build takes about a second)."""
    if family not in _GENERATION_ENVS:
        _GENERATION_ENVS[family] = oenv.make_raw_env(
            f"{family}-v0", terminate_at_goal=False, mode="data_collection"
        )
    env = _GENERATION_ENVS[family]
    if (family, dataset_type) not in _ORACLES:
        _ORACLES[family, dataset_type] = _oracles(env, family, dataset_type)
    return env, _ORACLES[family, dataset_type]


def _rollout(
    env: Any,
    oracles: dict[str, Any],
    family: str,
    dataset_type: str,
    steps: int,
    p_random: float,
    reset_seed: int | None,
) -> dict[str, Any]:
    """One attempt at an episode; numpy's global generator is seeded by the caller."""
    ob, info = env.reset(seed=reset_seed)
    p_stack = _stack_probability(family)
    xi = float(np.random.uniform(0, MARKOV_NOISE)) if dataset_type == "noisy" else 0.0
    agent = oracles[info["privileged/target_task"]]
    agent.reset(ob, info)
    has_buttons = hasattr(env, "_cur_button_states")
    obs, acts, qpos, qvel, buttons = [ob], [], [], [], []
    for _ in range(steps):
        if np.random.rand() < p_random:
            # OGBench samples its (unseeded) action space; the same distribution, seeded.
            action = np.random.uniform(-1.0, 1.0, oenv.ACTION_DIM)
        else:
            action = np.array(agent.select_action(ob, info))
            if dataset_type == "noisy":
                action = action + np.random.normal(0, [xi, xi, xi, xi * 3, xi * 10], action.shape)
        action = np.clip(action, -1, 1)
        ob, _, _, _, info = env.step(action)
        if agent.done:  # a new target, and the oracle for it
            agent_ob, agent_info = env.set_new_target(p_stack=p_stack)
            agent = oracles[agent_info["privileged/target_task"]]
            agent.reset(agent_ob, agent_info)
        obs.append(ob)
        acts.append(action)
        qpos.append(info["prev_qpos"])
        qvel.append(info["prev_qvel"])
        if has_buttons:
            buttons.append(info["prev_button_states"])
    return {
        "observations": np.asarray(obs, np.float32),
        "actions": np.asarray(acts, np.float32),
        "qpos": np.asarray(qpos, np.float64),  # float32 once the health check has run
        "qvel": np.asarray(qvel, np.float32),
        "button_states": np.asarray(buttons, np.int64) if has_buttons else None,
    }


def generate_episode(
    family: str,
    seed: int,
    episode_steps: int = EPISODE_STEPS,
    dataset_type: str = "play",
    p_random_action: float | None = None,
) -> dict[str, Any]:
    """One episode of :func:`generate`, from its episode seed (see :func:`episode_seed`).

    Returns:
        ``observations``, ``actions``, ``qpos``, ``qvel``, ``button_states`` (or None),
        ``seed`` and ``retries`` (scene episodes that failed OGBench's health check first).
    """
    oenv.check_family(family)
    check_dataset_type(dataset_type)
    if episode_steps < 1:
        raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
    p_random = p_random_action
    if p_random is None:
        p_random = NOISY_P_RANDOM_ACTION[family] if dataset_type == "noisy" else 0.0
    if not 0.0 <= p_random <= 1.0:
        raise ValueError(f"p_random_action must be in [0, 1], got {p_random}")
    env, oracles = _generator(family, dataset_type)
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        retries = 0
        reset_seed: int | None = seed
        while True:
            ep = _rollout(env, oracles, family, dataset_type, episode_steps, p_random, reset_seed)
            if _healthy(family, ep["qpos"]):
                ep["qpos"] = ep["qpos"].astype(np.float32)  # as OGBench's files store it
                break
            retries += 1
            reset_seed = None  # retry from where the environment's generator stands
            if retries >= 100:
                raise RuntimeError(f"{family}: 100 episodes in a row failed the health check")
    finally:
        np.random.set_state(saved)
    return {**ep, "seed": seed, "retries": retries}


def _generate_job(job: tuple[str, int, int, str, float | None]) -> dict[str, Any]:
    family, seed, steps, dataset_type, p_random = job
    return generate_episode(family, seed, steps, dataset_type, p_random)


def generate(
    family: str,
    episodes: int = DEFAULT_EPISODES,
    seed: int = 0,
    episode_steps: int = EPISODE_STEPS,
    dataset_type: str = "play",
    workers: int = 1,
    progress: bool = False,
    p_random_action: float | None = None,
) -> PlayData:
    """Generate OGBench-style data of ``family`` with OGBench's oracles.

    Args:
        family: One of :data:`qtransformer.envs.ogbench.FAMILIES`.
        episodes: Episodes (OGBench's datasets have 1000; :data:`DEFAULT_EPISODES` is a tenth).
        seed: Seeds everything (episode ``i`` uses :func:`episode_seed`).
        episode_steps: Transitions per episode (OGBench: 1000, i.e. 1001 observations).
        dataset_type: ``"play"`` (plan oracles, noise 0.1) or ``"noisy"`` (Markov oracles,
            Gaussian noise up to 0.1, random actions with :data:`NOISY_P_RANDOM_ACTION`).
        workers: Processes ("spawn"); episodes are split among them and come back in order,
            identical for any number of workers.
        progress: Show a tqdm bar of episodes.
        p_random_action: Probability of a random action per step instead of the dataset
            type's default (0 for play).

    Returns:
        The raw episodes (:class:`PlayData`).

    Raises:
        ValueError: for an unknown family or dataset type, or non-positive sizes.
    """
    oenv.check_family(family)
    check_dataset_type(dataset_type)
    if episodes < 1 or episode_steps < 1 or workers < 1:
        raise ValueError(
            f"episodes, episode_steps and workers must be >= 1, got {episodes}, "
            f"{episode_steps}, {workers}"
        )
    from tqdm.auto import tqdm

    jobs = [
        (
            family,
            episode_seed(seed, family, dataset_type, i),
            episode_steps,
            dataset_type,
            p_random_action,
        )
        for i in range(episodes)
    ]
    pool = None
    if workers > 1:
        pool = mp.get_context("spawn").Pool(min(workers, episodes))
    try:
        results = map(_generate_job, jobs) if pool is None else pool.imap(_generate_job, jobs)
        eps = list(tqdm(results, total=episodes, disable=not progress, unit="ep"))
    finally:
        if pool is not None:
            pool.terminate()
    has_buttons = eps[0]["button_states"] is not None
    return PlayData(
        family=family,
        dataset_type=dataset_type,
        seed=seed,
        episode_steps=episode_steps,
        observations=[e["observations"] for e in eps],
        actions=[e["actions"] for e in eps],
        qpos=[e["qpos"] for e in eps],
        qvel=[e["qvel"] for e in eps],
        button_states=[e["button_states"] for e in eps] if has_buttons else None,
        episode_seeds=[e["seed"] for e in eps],
        retries=[e["retries"] for e in eps],
    )


@dataclass(frozen=True)
class TaskGoal:
    """What a single task asks, read from OGBench's single-task environment after a reset.

    Attributes:
        cube_xyzs: ``(n_cubes, 3)`` goal positions of the cubes.
        cube_qpos: Index into ``qpos`` of each cube's position.
        button_states: ``(n_buttons,)`` goal states of the buttons (scene and puzzle).
        drawer: ``(qpos index, goal position)`` of the drawer (scene).
        window: ``(qpos index, goal position)`` of the window (scene).
    """

    cube_xyzs: np.ndarray
    cube_qpos: tuple[int, ...]
    button_states: np.ndarray | None
    drawer: tuple[int, float] | None
    window: tuple[int, float] | None

    @property
    def n_objects(self) -> int:
        n = len(self.cube_qpos) + (0 if self.button_states is None else len(self.button_states))
        return n + (self.drawer is not None) + (self.window is not None)


@cache
def _goal_env(family: str, task_id: int) -> Any:
    """OGBench's single-task environment of ``family`` (one per family and process)."""
    return oenv.make_raw_env(oenv.ogbench_env_id(family, task_id))


def _only_task_differs(family: str, task_id: int) -> bool:
    """Whether OGBench registers task ``task_id`` as task 1 with another ``reward_task_id``."""
    import gymnasium as gym

    oenv.import_ogbench()
    one, other = (dict(gym.spec(oenv.ogbench_env_id(family, k)).kwargs) for k in (1, task_id))
    ids = (one.pop("reward_task_id"), other.pop("reward_task_id"))
    return ids == (1, task_id) and one == other


@cache
def task_goal(family: str, task_id: int) -> TaskGoal:
    """The goal of task ``task_id`` of ``family``, read from OGBench's single-task environment
    after a reset (as ``relabel_dataset`` reads it).

    OGBench registers a family's five tasks as one environment with different
    ``reward_task_id``; one environment per family is built and switched between tasks (a
    model build takes about a second).
    """
    oenv.check_task(family, task_id)
    if _only_task_differs(family, task_id):
        env = _goal_env(family, 1)
        env._reward_task_id = int(task_id)
    else:
        env = _goal_env(family, task_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        env.reset(seed=0)
    model, data = env.model, env.data
    n_cubes = int(getattr(env, "_num_cubes", 0))
    cube_qpos = tuple(int(model.joint(f"object_joint_{i}").qposadr[0]) for i in range(n_cubes))
    mocap = [int(model.body(f"object_target_{i}").mocapid[0]) for i in range(n_cubes)]
    cube_xyzs = np.array([data.mocap_pos[m] for m in mocap], np.float64).reshape(n_cubes, 3)
    buttons = getattr(env, "_target_button_states", None)
    drawer = window = None
    if family == "scene":
        drawer = (int(model.joint("drawer_slide").qposadr[0]), float(env._target_drawer_pos))
        window = (int(model.joint("window_slide").qposadr[0]), float(env._target_window_pos))
    return TaskGoal(
        cube_xyzs=cube_xyzs,
        cube_qpos=cube_qpos,
        button_states=None if buttons is None else np.array(buttons, np.int64),
        drawer=drawer,
        window=window,
    )


def object_successes(
    family: str, task_id: int, qpos: np.ndarray, button_states: np.ndarray | None = None
) -> np.ndarray:
    """Which of the task's objects are at their goal in each state, ``(T, n_objects)`` bool.

    OGBench's single-task rule: a cube within 4 cm of its goal, a button in its goal state,
    the drawer and the window within 0.04 of their goal positions; objects in the order
    cubes, buttons, drawer, window.

    Args:
        family: The family.
        task_id: The task.
        qpos: ``(T, nq)`` simulator positions of the states.
        button_states: ``(T, n_buttons)`` button states (scene and puzzle).

    Raises:
        ValueError: when the family has buttons and ``button_states`` is missing or has the
            wrong width.
    """
    goal = task_goal(family, task_id)
    qpos = np.asarray(qpos)
    columns = [
        np.linalg.norm(goal.cube_xyzs[i] - qpos[:, a : a + 3], axis=-1) <= 0.04
        for i, a in enumerate(goal.cube_qpos)
    ]
    if goal.button_states is not None:
        if button_states is None:
            raise ValueError(f"{family}: button_states are needed to relabel this family")
        b = np.asarray(button_states)
        if b.ndim != 2 or b.shape[1] != len(goal.button_states) or len(b) != len(qpos):
            raise ValueError(
                f"{family}: button_states must be ({len(qpos)}, {len(goal.button_states)}), "
                f"got {b.shape}"
            )
        columns += list((b == goal.button_states).T)
    for part in (goal.drawer, goal.window):
        if part is not None:
            index, target = part
            columns.append(np.abs(qpos[:, index] - target) <= 0.04)
    return np.stack(columns, axis=-1)


def relabel(
    family: str, task_id: int, qpos: np.ndarray, button_states: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """OGBench's single-task rewards and masks of the states ``qpos`` (and ``button_states``).

    Returns:
        ``rewards`` (#objects at goal - #objects, float32) and ``masks`` (0.0 where every
        object is at its goal, a true terminal; else 1.0), as ``relabel_dataset`` sets them.
    """
    succ = object_successes(family, task_id, qpos, button_states)
    rewards = (succ.sum(axis=-1) - succ.shape[-1]).astype(np.float32)
    masks = (1.0 - np.all(succ, axis=-1)).astype(np.float32)
    return rewards, masks


def singletask_episodes(raw: PlayData, task_id: int) -> list[Episode]:
    """Relabel ``raw`` for one task and split it at every true terminal.

    The reward of step ``t`` is OGBench's single-task reward of the state ``s_t`` the action was
    taken from; where every object is at its goal it is 0 and OGBench's mask is 0: that step
    ends an episode (``terminated``) and the next one starts from the following observation.
    A piece that reaches the end of a generated episode is ``truncated``.

    Args:
        raw: Generated data (:func:`generate`).
        task_id: 1 to 5.

    Returns:
        Episodes with ``task = f"{family}-task{k}"``, its instruction, ``kind`` the dataset
        type, and ``info`` holding ``source_episode``, ``start`` (the first step's index in
        it), ``seed``, ``max_steps`` (the family's evaluation limit) and ``action_repeat`` 1.
    """
    family = raw.family
    oenv.check_task(family, task_id)
    name = oenv.task_name(family, task_id)
    text = oenv.instruction(family, task_id)
    limit = oenv.FAMILY_INFO[family].max_steps
    out = []
    for i, (obs, act, qpos) in enumerate(zip(raw.observations, raw.actions, raw.qpos, strict=True)):
        buttons = None if raw.button_states is None else raw.button_states[i]
        rewards, masks = relabel(family, task_id, qpos, buttons)
        ends = [int(t) for t in np.flatnonzero(masks == 0.0)]
        if not ends or ends[-1] != len(act) - 1:
            ends.append(len(act) - 1)
        start = 0
        for end in ends:
            terminal = bool(masks[end] == 0.0)
            out.append(
                Episode(
                    observations=obs[start : end + 2],
                    actions=act[start : end + 1],
                    rewards=rewards[start : end + 1],
                    terminated=terminal,
                    truncated=not terminal,
                    task=name,
                    instruction=text,
                    kind=raw.dataset_type,
                    info={
                        "source_episode": i,
                        "start": start,
                        "seed": raw.episode_seeds[i] if raw.episode_seeds else None,
                        "max_steps": limit,
                        "action_repeat": 1,
                    },
                )
            )
            start = end + 1
    return out


def dataset_id(family: str, task_id: int, dataset_type: str = "play") -> str:
    """Minari id of a written dataset, e.g. ``"ogbench-cube-single-play-task1-v0"``."""
    oenv.check_task(family, task_id)
    check_dataset_type(dataset_type)
    return f"ogbench-{family}-{dataset_type}-task{int(task_id)}-v0"


def write_ogbench(
    raw: PlayData,
    root: str | Path,
    task_ids: int | str | Sequence[int] = oenv.TASK_IDS,
    overwrite: bool = False,
    instruction_embeddings: Mapping[str, np.ndarray] | None = None,
    embedding_model: str | None = None,
) -> dict[int, Path]:
    """Write one Minari dataset per task of ``raw``'s family (:func:`dataset_id`).

    Each holds :func:`singletask_episodes` with reward range ``(-n_objects, 0)``; its
    metadata say ``suite="ogbench"``, the family, task, evaluation ``max_steps`` (the
    family's time limit), ``action_repeat=1``, the episodes and steps generated, the dataset
    type and the seed, so ``OfflineDataset.open(path)`` opens it and agents trained on it are
    evaluated as OGBench evaluates.

    Args:
        raw: Generated data (:func:`generate`).
        root: Minari datasets root.
        task_ids: Tasks to write (``1..5``, ``"1,3"``, ``"all"``).
        overwrite: Replace existing datasets of those ids.
        instruction_embeddings: Instruction -> vector for the tasks' instructions (see
            :func:`qtransformer.data.minari_io.write_minari`).
        embedding_model: The model that made them.

    Returns:
        Task id -> the dataset's folder.
    """
    from qtransformer.data.minari_io import write_minari

    family = raw.family
    info = oenv.family_info(family)
    low, high = oenv.action_bounds(family)
    paths = {}
    for k in oenv.resolve_task_ids(task_ids):
        episodes = singletask_episodes(raw, k)
        embeddings = None
        if instruction_embeddings is not None:
            text = oenv.instruction(family, k)
            embeddings = {text: instruction_embeddings[text]}
        paths[k] = write_minari(
            episodes,
            root,
            dataset_id(family, k, raw.dataset_type),
            action_low=low,
            action_high=high,
            env_spec=oenv.env_spec(family, k),
            reward_range=(-float(info.n_objects), 0.0),
            overwrite=overwrite,
            instruction_embeddings=embeddings,
            embedding_model=embedding_model if embeddings is not None else None,
            metadata={
                "suite": "ogbench",
                "source": "ogbench",
                "ogbench_version": oenv.OGBENCH_VERSION,
                "family": family,
                "task_id": k,
                "ogbench_env": oenv.ogbench_env_id(family, k),
                "dataset_type": raw.dataset_type,
                "episodes_generated": len(raw),
                "episode_steps": raw.episode_steps,
                "steps_generated": raw.steps,
                "seed": raw.seed,
                "max_steps": info.max_steps,
                "action_repeat": 1,
                "reward": "OGBench single-task: objects at goal minus objects, in the state "
                "before each action; terminal where all are at goal",
            },
        )
    return paths
