"""Small synthetic episodes shared by the data tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from qtransformer.data.episodes import Episode

LOW, HIGH = -np.ones(2), np.ones(2)


def make_episode(T=4, success=True, task="push-v3", seed=0, images=False) -> Episode:
    rng = np.random.default_rng(seed)
    rewards = np.zeros(T, np.float32)
    if success:
        rewards[-1] = 1.0
    return Episode(
        observations=rng.normal(size=(T + 1, 3)).astype(np.float32),
        actions=rng.uniform(-1, 1, (T, 2)).astype(np.float32),
        rewards=rewards,
        terminated=success,
        truncated=not success,
        task=task,
        instruction=f"do {task}",
        images=rng.integers(0, 255, (T + 1, 4, 4, 3), dtype=np.uint8) if images else None,
        kind="demo" if success else "failure",
    )


def assert_same_episodes(expected: list[Episode], got: list[Episode]) -> None:
    """Arrays equal and the same ends, task and instruction, episode by episode."""
    assert len(expected) == len(got)
    for a, b in zip(expected, got, strict=True):
        for f in ("observations", "actions", "rewards", "images"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert (a.terminated, a.truncated, a.task, a.instruction) == (
            b.terminated,
            b.truncated,
            b.task,
            b.instruction,
        )


TINY_TRAIN = dict(
    steps=12,
    batch_size=16,
    n_bins=9,
    d_model=32,
    n_layers=2,
    n_heads=4,
    lr=1e-3,
    target_update_rate=0.1,
    log_every=1000,
)
"""A Q-Transformer small enough to train in a fraction of a second on ``tiny_arrays``."""


def make_tiny_arrays() -> dict[str, np.ndarray]:
    """Six episodes of random data: terminal successes, terminal failures and truncations."""
    rng = np.random.default_rng(0)
    lengths = [5, 7, 4, 6, 8, 5]
    T = sum(lengths)
    ends = np.cumsum(lengths) - 1
    rewards = np.zeros(T, np.float32)
    terminals = np.zeros(T, bool)
    timeouts = np.zeros(T, bool)
    for k, e in enumerate(ends):
        if k % 3 == 0:
            rewards[e], terminals[e] = 1.0, True
        elif k % 3 == 1:
            terminals[e] = True
        else:
            timeouts[e] = True
    return {
        "observations": rng.normal(size=(T, 6)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(T, 3)).astype(np.float32),
        "rewards": rewards,
        "terminals": terminals,
        "timeouts": timeouts,
    }


# Command-line flags of a model small enough to train in a second.
TINY_MODEL = [
    "--batch-size",
    "8",
    "--n-bins",
    "5",
    "--d-model",
    "16",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
]


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` as a module (the benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module
