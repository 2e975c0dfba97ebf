"""Data parallelism: torchrun with 2 CPU processes (gloo) matches one process, same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from factories import TINY_TRAIN
from safetensors.torch import load_file

import qtransformer as qt

pytestmark = pytest.mark.slow

ARGS = {**TINY_TRAIN, "steps": 6, "n_step": 2, "seed": 3, "device": "cpu"}


def test_two_process_ddp_matches_single_process(tiny_arrays, tmp_path) -> None:
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    data.save_npz(tmp_path / "data.npz")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in ARGS.items()]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "qtransformer.cli",
        "train",
        "--data",
        str(tmp_path / "data.npz"),
        "--out",
        str(tmp_path / "ddp"),
        *flags,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training on 2 process(es) on cpu, 8 samples each per step" in proc.stderr

    single = qt.train(data, qt.TrainConfig(**ARGS))
    ddp = load_file(str(tmp_path / "ddp" / "agent" / "model.safetensors"))
    init = qt.train(data, qt.TrainConfig(**{**ARGS, "steps": 0})).model.state_dict()
    for name, p in single.model.state_dict().items():
        torch.testing.assert_close(ddp[name], p, atol=2e-6, rtol=1e-5, msg=name)
    # The comparison is not vacuous: training moved the weights well beyond that tolerance.
    moved = max((single.model.state_dict()[n] - init[n]).abs().max().item() for n in init)
    assert moved > 1e-3
    np.testing.assert_allclose(
        qt.load_agent(tmp_path / "ddp" / "agent").q_values(
            tiny_arrays["observations"][:4], np.zeros((4, 3), int)
        ),
        single.q_values(tiny_arrays["observations"][:4], np.zeros((4, 3), int)),
        atol=1e-5,
    )
