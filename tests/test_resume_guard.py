"""Resume continues the same run or refuses; one run per output folder; stale temp folders go."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from factories import TINY_TRAIN

import qtransformer as qt
from qtransformer.atomic import OutputLocked, locked, recover, write_dir_atomically
from qtransformer.cli import main
from qtransformer.trainer import CheckpointMismatch

CFG = qt.TrainConfig(**{**TINY_TRAIN, "steps": 6, "checkpoint_every": 3})


@pytest.fixture
def run(tiny_arrays, tmp_path):
    """A finished run in tmp_path/run and the data it was trained on."""
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    qt.train(data, CFG, out_dir=tmp_path / "run")
    return tmp_path / "run", data


def config_file(out):
    return json.loads((out / "train_config.json").read_text())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lr": 3e-3}, "lr: checkpoint 0.001, now 0.003"),
        ({"gamma": 0.9}, "gamma: checkpoint"),
        ({"seed": 1}, "seed: checkpoint 0, now 1"),
        ({"n_bins": 8}, "n_bins: checkpoint"),
    ],
)
def test_resume_with_other_settings_is_refused_naming_them(run, change, named) -> None:
    out, data = run
    before = config_file(out)
    cfg = qt.TrainConfig(**{**CFG.__dict__, **change, "steps": 9})
    with pytest.raises(CheckpointMismatch, match="other settings.*" + named.replace("(", r"\(")):
        qt.train(data, cfg, out_dir=out, resume=True)
    assert config_file(out) == before  # nothing overwritten


def test_resume_on_other_data_of_the_same_size_is_refused(run, tiny_arrays) -> None:
    out, _ = run
    other = dict(tiny_arrays)
    other["observations"] = other["observations"] + 1.0
    with pytest.raises(CheckpointMismatch, match="trained on another dataset"):
        qt.train(qt.OfflineDataset.from_arrays(**other), CFG, out_dir=out, resume=True)


def test_resume_may_extend_the_run(run) -> None:
    out, data = run
    agent = qt.train(data, qt.TrainConfig(**{**CFG.__dict__, "steps": 9}), out_dir=out, resume=True)
    assert agent is not None
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert int(state["step"]) == 9


def test_incomplete_checkpoint_is_refused_not_restarted(run) -> None:
    out, data = run
    (out / "checkpoint" / "trainer_state.pt").unlink()
    weights = (out / "checkpoint" / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointMismatch, match=r"incomplete checkpoint \(trainer_state\.pt"):
        qt.train(data, CFG, out_dir=out, resume=True)
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == weights


@pytest.mark.parametrize("name", ["model.safetensors", "target.safetensors"])
def test_flipped_bytes_in_checkpoint_weights_are_refused(run, name) -> None:
    out, data = run
    path = out / "checkpoint" / name
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF  # in the tensor data, past the header
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointMismatch, match=f"{name} does not match the checksum"):
        qt.train(data, CFG, out_dir=out, resume=True)


def test_flipped_bytes_in_agent_weights_are_refused(run) -> None:
    out, _ = run
    path = out / "agent" / "model.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"model\.safetensors does not match the checksum"):
        qt.load_agent(out / "agent")


@pytest.mark.parametrize("damage", ["empty", "truncated", "config"])
def test_damaged_agent_files_are_named(run, damage) -> None:
    out, _ = run
    agent = out / "agent"
    cfg = json.loads((agent / "config.json").read_text())
    cfg["model_sha256"] = None  # no checksum to catch it first: the reader must
    (agent / "config.json").write_text(json.dumps(cfg))
    weights = agent / "model.safetensors"
    if damage == "empty":
        weights.write_bytes(b"")
        message = r"model\.safetensors is not a readable safetensors file"
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
        message = r"model\.safetensors is not a readable safetensors file"
    else:
        (agent / "config.json").write_text('{"format": "qtransformer-agent-v1", ')
        message = r"config\.json is not valid JSON"
    with pytest.raises(ValueError, match=message):
        qt.load_agent(agent)


def test_a_fresh_api_run_replaces_the_earlier_one_whole(run) -> None:
    out, data = run
    cfg = qt.TrainConfig(**{**CFG.__dict__, "steps": 2, "checkpoint_every": 0})
    qt.train(data, cfg, out_dir=out)
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert int(state["step"]) == 2  # this run's, not the earlier one's (step 6)
    assert config_file(out)["steps"] == 2


def test_cli_refuses_an_earlier_run_without_resume_or_overwrite(run, tmp_path, caplog) -> None:
    out, data = run
    data.save_npz(tmp_path / "d.npz")
    before = (out / "agent" / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(tmp_path / "d.npz"), "--out", str(out), "--steps", "2"])
    assert exit_.value.code == 2
    assert "holds an earlier run (checkpoint, agent, train_config.json)" in caplog.text
    assert "--resume" in caplog.text and "--overwrite" in caplog.text
    assert (out / "agent" / "model.safetensors").read_bytes() == before


def test_a_second_run_into_a_locked_folder_stops_at_once(tiny_arrays, tmp_path) -> None:
    data = qt.OfflineDataset.from_arrays(**tiny_arrays)
    out = tmp_path / "run"
    # The lock is a file lock: another process holding it is what this sees.
    with locked(out / ".lock", "test"):
        pid = os.fork()
        if pid == 0:  # the child tries to train into the held folder
            try:
                qt.train(data, CFG, out_dir=out)
                os._exit(0)
            except OutputLocked:
                os._exit(7)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
    assert not (out / "agent").exists()


def test_stale_temporary_folders_are_removed_at_the_next_write(tmp_path) -> None:
    target = tmp_path / "ckpt"
    write_dir_atomically(target, lambda d: (d / "a").write_text("1"))
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    for kind in ("tmp", "old"):
        (tmp_path / f".ckpt.{kind}-{dead}-deadbeef").mkdir()
    live = tmp_path / f".ckpt.tmp-{os.getpid()}-cafecafe"  # a writer still running
    live.mkdir()
    write_dir_atomically(target, lambda d: (d / "a").write_text("2"))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [live.name, "ckpt"]
    assert (target / "a").read_text() == "2"


def test_recover_puts_back_the_previous_version_after_a_kill_mid_swap(tmp_path) -> None:
    # Killed between moving the old version aside and moving the new one in.
    target = tmp_path / "ckpt"
    write_dir_atomically(target, lambda d: (d / "a").write_text("1"))
    dead = 2**22 + 12345
    target.rename(tmp_path / f".ckpt.old-{dead}-deadbeef")
    (tmp_path / f".ckpt.tmp-{dead}-deadbeef").mkdir()
    recover(target)
    assert (target / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_resume_after_a_kill_mid_swap_continues_from_the_previous_checkpoint(run) -> None:
    out, data = run
    ckpt = out / "checkpoint"
    dead = 2**22 + 12345
    shutil.move(ckpt, out / f".checkpoint.old-{dead}-deadbeef")
    agent = qt.train(data, qt.TrainConfig(**{**CFG.__dict__, "steps": 9}), out_dir=out, resume=True)
    assert np.isfinite(agent.act(data.observations[:2])).all()
    assert int(torch.load(ckpt / "trainer_state.pt", weights_only=True)["step"]) == 9


def test_collect_without_overwrite_after_a_replacement_killed_mid_swap_keeps_the_dataset(
    tmp_path, caplog
) -> None:
    # An --overwrite collect killed between moving the old dataset aside and moving the new
    # one in: the next collect (without --overwrite) must find the old one, not replace it.
    collect = ["collect", "--tasks", "reach-v3", "--demos", "2", "--max-steps", "40"]
    args = [*collect, "--workers", "1", "--out", str(tmp_path), "--name", "toy-v0"]
    main(args)
    before = qt.OfflineDataset.open(tmp_path / "toy-v0").observations.copy()
    dead = 2**22 + 12345
    (tmp_path / "toy-v0").rename(tmp_path / f".toy-v0.old-{dead}-deadbeef")
    with pytest.raises(SystemExit):
        main([*args, "--seed", "5"])
    assert "exists: pass --overwrite" in caplog.text
    np.testing.assert_array_equal(qt.OfflineDataset.open(tmp_path / "toy-v0").observations, before)


def test_collect_refuses_a_name_that_is_not_a_minari_id_before_collecting(tmp_path, caplog):
    with pytest.raises(SystemExit):
        main(["collect", "--demos", "1", "--out", str(tmp_path), "--name", "ds"])
    assert "--name 'ds': a Minari dataset id" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_a_killed_config_write_leaves_nothing_after_the_next_run(run) -> None:
    out, data = run
    dead = 2**22 + 12345
    (out / f".train_config.json.tmp-{dead}-deadbeef").write_text("{")
    qt.train(data, qt.TrainConfig(**{**CFG.__dict__, "steps": 9}), out_dir=out, resume=True)
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock",
        "agent",
        "checkpoint",
        "train_config.json",
    ]
