from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import make_tiny_arrays

# Tiny models run fastest on one thread, and a second process on the same two cores
# (a benchmark, another test run) then cannot stall the thread pool.
torch.set_num_threads(1)


@pytest.fixture
def tiny_arrays() -> dict[str, np.ndarray]:
    """Six episodes of random data: terminal successes, terminal failures and truncations."""
    return make_tiny_arrays()
