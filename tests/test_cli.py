from __future__ import annotations

import json

import numpy as np

import qtransformer as qt
from qtransformer.cli import main


def test_cli_train_writes_checkpoint_agent_and_tensorboard(tiny_arrays, tmp_path) -> None:
    qt.OfflineDataset.from_arrays(**tiny_arrays).save_npz(tmp_path / "d.npz")
    args = [
        "train",
        "--data",
        str(tmp_path / "d.npz"),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "4",
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
        "--tensorboard",
        "--checkpoint-every",
        "2",
    ]
    main(args)
    run = tmp_path / "run"
    assert json.loads((run / "train_config.json").read_text())["n_bins"] == 5
    assert (run / "checkpoint" / "trainer_state.pt").exists()
    assert any((run / "tb").iterdir())
    agent = qt.load_agent(run / "agent")
    assert agent.act(tiny_arrays["observations"][:2]).shape == (2, 3)
    main([*args, "--steps", "6", "--resume"])
    assert json.loads((run / "train_config.json").read_text())["steps"] == 6
    np.testing.assert_array_equal(
        qt.load_agent(run / "checkpoint").act(tiny_arrays["observations"][:4]),
        qt.load_agent(run / "agent").act(tiny_arrays["observations"][:4]),
    )
