from __future__ import annotations

import json

import numpy as np

import qtransformer as qt
from qtransformer.cli import main

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
        *TINY_MODEL,
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


def test_cli_collect_writes_a_minari_dataset_that_trains(tmp_path, monkeypatch) -> None:
    import minari

    main(
        [
            "collect",
            "--tasks",
            "reach-v3",
            "--demos",
            "2",
            "--failures",
            "1",
            "--max-steps",
            "150",
            "--action-repeat",
            "2",
            "--workers",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    name = "metaworld-custom-reach-v3-v0"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    ds = minari.load_dataset(name)
    assert ds.total_episodes == 3
    meta = ds.storage.metadata["qtransformer"]
    assert meta["action_repeat"] == 2 and meta["tasks"] == ["reach-v3"]
    assert [m["kind"] for m in ds.storage.get_episode_metadata(range(3))] == [
        "demo",
        "demo",
        "degraded",
    ]
    env = ds.recover_environment()
    assert env.unwrapped.task == "reach-v3" and env.unwrapped.action_repeat == 2
    main(
        [
            "train",
            "--data",
            str(tmp_path / name),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "2",
            *TINY_MODEL,
        ]
    )
    agent = qt.load_agent(tmp_path / "run" / "agent")
    assert agent.tasks == ["reach-v3"]
