from __future__ import annotations

import json
import typing
from dataclasses import asdict

import numpy as np
import pytest
from factories import TINY_MODEL

import qtransformer as qt
from qtransformer.cli import PresetName, main
from qtransformer.config import PRESETS


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


TINY_OVERRIDES = {"batch_size": 8, "n_bins": 5, "d_model": 16, "n_layers": 1, "n_heads": 2}


@pytest.mark.parametrize(
    "flags",
    [
        ["--preset", "paper", "--steps", "2"],
        ["--steps", "2", "--preset=paper"],  # flags before the preset change it all the same
        ["--preset", "default", "--steps", "2"],
        ["--steps", "2"],
    ],
)
def test_cli_train_preset_with_flags_on_top(flags, tiny_arrays, tmp_path) -> None:
    qt.OfflineDataset.from_arrays(**tiny_arrays).save_npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    main(["train", "--data", str(tmp_path / "d.npz"), "--out", str(out), *flags, *TINY_MODEL])
    name = "paper" if any("paper" in f for f in flags) else "default"
    written = json.loads((out / "train_config.json").read_text())
    expected = asdict(qt.TrainConfig.preset(name, steps=2, **TINY_OVERRIDES))
    expected["image_channels"] = list(expected["image_channels"])
    # The value range is resolved from the data (sparse success rewards) when written.
    expected["q_min"], expected["q_max"] = 0.0, 1.0
    assert written == expected
    # What the preset sets and no flag changed stays the preset's.
    paper = name == "paper"
    assert written["n_step"] == (1 if paper else 3)
    assert written["lr_schedule"] == ("constant" if paper else "cosine")
    assert written["q_heads"] == (1 if paper else 2)


def test_cli_train_help_names_the_presets(capsys) -> None:
    assert typing.get_args(PresetName) == tuple(PRESETS)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--preset" in text and "paper" in text
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--preset", "paper", "--help"])
    shown = capsys.readouterr().out
    assert "(default: 256)" in shown  # the preset's bins are the default shown


@pytest.fixture(scope="module")
def repeat4_agent(tmp_path_factory):
    """An agent trained on reach-v3 data collected with a 40-step limit at action repeat 4."""
    root = tmp_path_factory.mktemp("repeat4")
    main(
        [
            "collect", "--tasks", "reach-v3", "--demos", "2", "--max-steps", "40",
            "--action-repeat", "4", "--workers", "1", "--out", str(root), "--name", "r4-v0",
        ]
    )  # fmt: skip
    main(
        [
            "train", "--data", str(root / "r4-v0"), "--out", str(root / "run"),
            "--steps", "2", *TINY_MODEL,
        ]
    )  # fmt: skip
    return root / "run" / "agent"


@pytest.fixture
def built_envs(monkeypatch):
    """(task, max_steps, action_repeat) of every Meta-World environment evaluation builds."""
    from qtransformer.envs import metaworld as menv

    built = []

    class Recording(menv.MetaWorldTask):
        def __init__(self, task, max_steps=200, action_repeat=1, **kwargs) -> None:
            built.append((task, max_steps, action_repeat))
            super().__init__(task, max_steps, action_repeat, **kwargs)

    monkeypatch.setattr(menv, "MetaWorldTask", Recording)
    return built


def run_eval(agent, tmp_path, *flags) -> dict:
    out = tmp_path / "eval.json"
    main(["eval", "--agent", str(agent), "--episodes", "1", "--num-envs", "1",
          "--out", str(out), *flags])  # fmt: skip
    return json.loads(out.read_text())


def test_cli_eval_uses_the_agents_recorded_settings_without_flags(
    repeat4_agent, built_envs, tmp_path
) -> None:
    assert qt.load_agent(repeat4_agent).env == {"max_steps": 40, "action_repeat": 4}
    payload = run_eval(repeat4_agent, tmp_path)
    assert payload["env"] == {
        "max_steps": 40,
        "action_repeat": 4,
        "image_size": None,
        "camera": "corner",
    }
    assert built_envs == [("reach-v3", 40, 4)]
    assert payload["results"]["reach-v3"]["mean_length"] <= 10  # 40 env steps / 4
    # Giving the recorded values is no mismatch.
    run_eval(repeat4_agent, tmp_path, "--action-repeat", "4", "--max-steps", "40")
    assert built_envs[-1] == ("reach-v3", 40, 4)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--action-repeat", "1"],
            "--action-repeat 1, but {agent} was trained on data collected with action repeat 4; "
            "drop the flag, or pass --env-mismatch-ok to evaluate under other settings on purpose",
        ),
        (
            ["--max-steps", "20", "--action-repeat", "4"],
            "--max-steps 20, but {agent} was trained on data collected with a time limit of 40 "
            "env steps; drop the flag, or pass --env-mismatch-ok to evaluate under other "
            "settings on purpose",
        ),
    ],
)
def test_cli_eval_refuses_settings_other_than_the_agents(
    flags, message, repeat4_agent, built_envs, tmp_path
) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_eval(repeat4_agent, tmp_path, *flags)
    assert str(exit_.value) == message.format(agent=repeat4_agent)
    assert built_envs == [] and not (tmp_path / "eval.json").exists()


def test_cli_eval_other_settings_on_purpose(repeat4_agent, built_envs, tmp_path) -> None:
    payload = run_eval(repeat4_agent, tmp_path, "--action-repeat", "2", "--env-mismatch-ok")
    assert built_envs == [("reach-v3", 40, 2)]
    assert (payload["env"]["max_steps"], payload["env"]["action_repeat"]) == (40, 2)


def test_cli_collect_into_a_relative_folder_keeps_the_dataset(
    tmp_path, monkeypatch, caplog
) -> None:
    """The README's own command: ``--out datasets``, a path relative to the working folder."""
    monkeypatch.chdir(tmp_path)
    collect = ["collect", "--tasks", "reach-v3", "--demos", "2", "--max-steps", "40"]
    main([*collect, "--workers", "1", "--out", "datasets"])
    folder = tmp_path / "datasets" / "metaworld-custom-reach-v3-v0"
    data = qt.OfflineDataset.open(folder)
    assert data.num_episodes == 2
    # No leftovers: only the dataset, and the (empty) lock file of its name.
    names = sorted(p.name for p in (tmp_path / "datasets").iterdir())
    assert names == [f".{folder.name}.lock", folder.name]
    before = sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))

    def collect_nothing(*args, **kwargs):
        raise AssertionError("collected before refusing")

    from qtransformer import collection

    monkeypatch.setattr(collection, "collect", collect_nothing)
    with pytest.raises(SystemExit):
        main([*collect, "--workers", "1", "--out", "datasets"])
    assert "exists: pass --overwrite to replace it" in caplog.text
    after = sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))
    assert after == before
