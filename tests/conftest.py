from __future__ import annotations

import numpy as np
import pytest
import torch

# Tiny models run fastest on one thread, and a second process on the same two cores
# (a benchmark, another test run) then cannot stall the thread pool.
torch.set_num_threads(1)


@pytest.fixture
def tiny_arrays() -> dict[str, np.ndarray]:
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
