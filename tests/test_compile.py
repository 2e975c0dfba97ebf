"""torch.compile paths (real inductor, tiny networks): the compiled update and the compiled
decoding compute what the eager ones do."""

from __future__ import annotations

import numpy as np
import torch
from factories import TINY_TRAIN

import qtransformer as qt
from qtransformer.data.sampler import TransitionSampler
from qtransformer.discretize import ActionDiscretizer
from qtransformer.learner import Learner


def test_compiled_update_matches_the_eager_one(tiny_arrays) -> None:
    data = qt.OfflineDataset.from_arrays(
        **tiny_arrays, action_low=-np.ones(3), action_high=np.ones(3)
    )
    learners = []
    for compile in (False, True):
        cfg = qt.TrainConfig(**{**TINY_TRAIN, "compile": compile})
        learners.append(Learner(cfg, obs_dim=6, action_dim=3, q_max=1.0))
    disc = ActionDiscretizer(data.action_low, data.action_high, 9)
    sampler = TransitionSampler(data, disc, 0.98, 3, 1)
    batch = sampler.batch(torch.arange(16))
    eager, compiled = learners
    for _ in range(3):
        a, b = eager.update(batch), compiled.update(batch)
        assert abs(a["train/loss"] - b["train/loss"]) < 1e-4 * max(1.0, abs(a["train/loss"]))
    for p, q in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_compiled_decoding_picks_the_teacher_forced_argmax(tiny_arrays) -> None:
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    agent = qt.train(data, qt.TrainConfig(**TINY_TRAIN))
    obs = tiny_arrays["observations"][:8]
    eager_bins, eager_q = agent.act_bins(obs)
    agent.compile()
    bins, q = agent.act_bins(obs)
    np.testing.assert_array_equal(bins, eager_bins)
    np.testing.assert_allclose(q, eager_q, rtol=1e-5, atol=1e-6)
    # Each chosen bin is the argmax of the teacher-forced Q given the bins before it.
    with torch.no_grad():
        full = agent.model(torch.as_tensor(obs)[:, None], torch.as_tensor(bins)).amin(dim=1)
    np.testing.assert_array_equal(full.argmax(-1).numpy(), bins)
