"""A small sparse-reward grid task with a factored continuous action, and its exact solution.

The agent moves on a D-dimensional grid. Action dimension d in [-1, 1] moves the agent
-1, 0 or +1 along axis d (thresholds at -1/3 and 1/3), so with 3 bins per dimension the
bins are exactly the moves. Reaching the goal gives reward 1 and ends the episode; lava
ends it with reward 0; otherwise the episode is truncated at ``max_steps``. The rewards
can be changed to any sign and density (``GridSpec.goal_reward``, ``lava_reward``,
``step_reward``: e.g. -1 per step until the goal). Because the MDP is tiny, value
iteration gives the true per-dimension Q-values to test against.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

Cell = tuple[int, ...]


@dataclass(frozen=True)
class GridSpec:
    """Layout of a grid task."""

    shape: tuple[int, ...] = (5, 5)
    """Cells along each axis; its length is the action dimension."""
    start: Cell = (0, 0)
    """Start cell (unless a start is given to ``reset``)."""
    goal: Cell = (4, 4)
    """Reward 1 and episode end on arrival."""
    lava: tuple[Cell, ...] = ()
    """Reward 0 and episode end on arrival."""
    max_steps: int = 20
    """Time limit (truncation)."""
    goal_reward: float = 1.0
    """Reward of the step that reaches the goal."""
    lava_reward: float = 0.0
    """Reward of the step that enters lava."""
    step_reward: float = 0.0
    """Reward of every other step (dense; negative for a cost per step)."""

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.shape))

    def index(self, cell: Sequence[int]) -> int:
        return int(np.ravel_multi_index(tuple(cell), self.shape))

    def cell(self, index: int) -> Cell:
        return tuple(int(c) for c in np.unravel_index(index, self.shape))


def moves_of(action: np.ndarray) -> np.ndarray:
    """Continuous action in [-1, 1]^D -> integer moves in {-1, 0, 1}^D."""
    a = np.asarray(action)
    return (a > 1 / 3).astype(np.int64) - (a < -1 / 3).astype(np.int64)


def action_of(moves: Sequence[int]) -> np.ndarray:
    """Integer moves -> the continuous action at the centre of the matching 3-bin layout."""
    return np.asarray(moves, dtype=np.float32) * (2.0 / 3.0)


class GridWorld(gym.Env[np.ndarray, np.ndarray]):
    """Gymnasium environment of a :class:`GridSpec`. Observations are one-hot cells."""

    metadata = {"render_modes": []}

    def __init__(self, spec: GridSpec | None = None) -> None:
        self.grid = spec or GridSpec()
        D = len(self.grid.shape)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.grid.n_cells,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (D,), np.float32)
        self.pos: Cell = self.grid.start
        self.t = 0

    def _obs(self) -> np.ndarray:
        o = np.zeros(self.grid.n_cells, dtype=np.float32)
        o[self.grid.index(self.pos)] = 1.0
        return o

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        start = (options or {}).get("start", self.grid.start)
        self.pos = tuple(int(c) for c in start)
        self.t = 0
        return self._obs(), {"cell": self.pos}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward, terminated, self.pos = transition(self.grid, self.pos, moves_of(action))
        self.t += 1
        truncated = not terminated and self.t >= self.grid.max_steps
        success = self.pos == tuple(self.grid.goal)
        return self._obs(), reward, terminated, truncated, {"cell": self.pos, "success": success}


def transition(spec: GridSpec, cell: Cell, moves: np.ndarray) -> tuple[float, bool, Cell]:
    """Deterministic dynamics: (reward, terminated, next cell)."""
    nxt = tuple(int(c) for c in np.clip(np.asarray(cell) + moves, 0, np.asarray(spec.shape) - 1))
    if nxt == tuple(spec.goal):
        return spec.goal_reward, True, nxt
    if nxt in {tuple(c) for c in spec.lava}:
        return spec.lava_reward, True, nxt
    return spec.step_reward, False, nxt


def joint_moves(D: int) -> list[tuple[int, ...]]:
    """All 3^D joint moves, dimension 0 varying slowest (bin order -1, 0, 1)."""
    return list(itertools.product((-1, 0, 1), repeat=D))


def value_iteration(spec: GridSpec, gamma: float, tol: float = 1e-10) -> np.ndarray:
    """Optimal Q over joint moves, shape ``(n_cells, 3, ..., 3)`` (one axis of 3 per dimension).

    Terminal cells (goal, lava) are never occupied before a step, so their rows are 0.
    Time limits are ignored: truncation bootstraps, so the targets are the infinite-horizon ones.
    """
    D = len(spec.shape)
    moves = joint_moves(D)
    nxt = np.zeros((spec.n_cells, len(moves)), dtype=np.int64)
    rew = np.zeros((spec.n_cells, len(moves)))
    done = np.zeros((spec.n_cells, len(moves)), dtype=bool)
    for s in range(spec.n_cells):
        for j, m in enumerate(moves):
            r, term, c = transition(spec, spec.cell(s), np.asarray(m))
            nxt[s, j], rew[s, j], done[s, j] = spec.index(c), r, term
    q = np.zeros((spec.n_cells, len(moves)))
    while True:
        v = q.max(axis=1)
        new = rew + gamma * (~done) * v[nxt]
        if np.abs(new - q).max() < tol:
            break
        q = new
    return new.reshape((spec.n_cells,) + (3,) * D)


def per_dimension_q(q_joint: np.ndarray) -> list[np.ndarray]:
    """Per-dimension optimal Q of the autoregressive MDP (docs/design.md, 'Targets').

    Entry i has shape ``(n_cells, 3, ..., 3)`` with i + 1 move axes:
    ``Q_i(s, a^{1:i}) = max over later dimensions of Q(s, a)``.
    """
    D = q_joint.ndim - 1
    out = []
    for i in range(D):
        later = tuple(range(i + 2, D + 1))
        out.append(q_joint.max(axis=later) if later else q_joint)
    return out


Policy = Callable[[Cell, np.random.Generator], Sequence[int]]


def collect(
    spec: GridSpec,
    policy: Policy,
    episodes: int,
    seed: int = 0,
    starts: Sequence[Cell] | None = None,
) -> dict[str, Any]:
    """Roll out a move policy; returns D4RL-style flat arrays (observations, actions, ...).

    Args:
        spec: Grid layout.
        policy: ``policy(cell, rng) -> moves``.
        episodes: Number of episodes.
        seed: Seed of the policy's random generator.
        starts: Start cells drawn uniformly per episode; default: ``spec.start``.
    """
    rng = np.random.default_rng(seed)
    env = GridWorld(spec)
    keys = ("observations", "actions", "rewards", "terminals", "timeouts")
    buf: dict[str, list] = {k: [] for k in keys}
    for _ in range(episodes):
        start = spec.start if starts is None else starts[int(rng.integers(len(starts)))]
        obs, info = env.reset(options={"start": start})
        cell = info["cell"]
        while True:
            a = action_of(policy(cell, rng))
            nobs, r, term, trunc, info = env.step(a)
            for k, v in zip(keys, (obs, a, r, term, trunc), strict=True):
                buf[k].append(v)
            obs, cell = nobs, info["cell"]
            if term or trunc:
                break
    return {
        "observations": np.asarray(buf["observations"], dtype=np.float32),
        "actions": np.asarray(buf["actions"], dtype=np.float32),
        "rewards": np.asarray(buf["rewards"], dtype=np.float32),
        "terminals": np.asarray(buf["terminals"], dtype=bool),
        "timeouts": np.asarray(buf["timeouts"], dtype=bool),
    }


def concat(*parts: dict[str, np.ndarray]) -> dict[str, Any]:
    """Episodes of several collections back to back."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


STITCH_SPEC = GridSpec(shape=(5, 5), start=(0, 0), goal=(4, 4), max_steps=12)
"""Layout of the stitching task (see :func:`stitching_dataset`)."""


def stitching_dataset(episodes: int = 30, seed: int = 0) -> dict[str, Any]:
    """Slow successful demonstrations plus failed attempts whose pieces make a faster route.

    Demonstrations walk the border, one axis at a time: 4 steps along axis 0, then 4 along
    axis 1 (8 steps). Failed attempts start with two diagonal steps to (2, 2), then two
    steps along axis 0 to (4, 2), where the demonstrations pass, and then wander back and
    time out without reward. Stitching the failures' prefix to the demonstrations' suffix
    reaches the goal in 6 steps; copying the successes takes 8.
    """

    def demo(cell: Cell, rng: np.random.Generator) -> Sequence[int]:
        return (1, 0) if cell[0] < 4 else (0, 1)

    def failure(cell: Cell, rng: np.random.Generator) -> Sequence[int]:
        x, y = cell
        if x == y and x < 2:
            return (1, 1)
        if y == 2 and x < 4:
            return (1, 0)
        # Drift away from the goal: back along axis 0 or up along axis 1, never onward.
        return ((-1, 0), (0, -1), (-1, -1))[rng.integers(3)]

    n_fail = episodes // 2
    demos = collect(STITCH_SPEC, demo, episodes - n_fail, seed)
    fails = collect(STITCH_SPEC, failure, n_fail, seed + 1)
    return concat(demos, fails)
