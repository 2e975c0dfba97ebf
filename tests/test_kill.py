"""Kill tests: SIGKILL the command line mid-run, often in the middle of writing a checkpoint or
a dataset, run it again, and check that nothing was lost, half-written or left behind.

Every command runs as its own process (``python -m qtransformer.cli``), so the kill is a real
one: no exception handler, no ``finally``, no atexit. A kill "during a write" is one that
lands while the process's temporary folder (``.NAME.tmp-<pid>-*``) or the previous version
it moved aside (``.NAME.old-<pid>-*``) exists: the test polls the folder and kills as soon as
one appears, then checks it is still there after the process died.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from factories import TINY_TRAIN

import qtransformer as qt
from qtransformer.atomic import recover

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
"""One thread per process: cheaper on two cores, and the runs are deterministic."""

TINY_FLAGS = [
    arg
    for key, value in TINY_TRAIN.items()
    if key != "steps"
    for arg in (f"--{key.replace('_', '-')}", str(value))
]
"""TINY_TRAIN's model and optimizer as command line flags (the steps are set per test)."""

STEPS = 120
"""Steps of the training runs, with a checkpoint every step: ~15 ms a step on one core, so
a run is ~2 s of training after ~3 s of start-up (imports). Each killed run gets at most
8 checkpoint writes (a few more when the polling misses some), so the run never ends before
the last planned kill."""

MAX_KILLS = 10
"""Kills of the training run at most: 5 planned (3 aimed at a checkpoint write, 2 at random
times), up to 5 more aimed at writes when fewer than 2 fell in one."""


class Processes:
    """The command line processes of a test, each with its output in a log file; all are
    killed (and reaped) at the end of the test, whatever happens."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir()
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"{len(self.started):02d}-{args[0]}.log"
        with open(log, "wb") as fh:  # a file, not a pipe: a chatty child never blocks
            proc = subprocess.Popen(
                [sys.executable, "-m", "qtransformer.cli", *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        self.started.append((proc, log))
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        path = next(log for p, log in self.started if p is proc)
        return path.read_text(errors="replace")

    def tail(self, proc: subprocess.Popen[bytes], chars: int = 3000) -> str:
        return (
            f"\n--- output of {proc.args[3:]} (rc {proc.returncode}) ---\n"
            + self.log(proc)[-chars:]
        )

    def run(self, *args: str, timeout: float = 180) -> subprocess.Popen[bytes]:
        """Run to the end; it must succeed."""
        proc = self.start(*args)
        proc.wait(timeout=timeout)
        assert proc.returncode == 0, self.tail(proc)
        return proc

    def close(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def procs(tmp_path) -> Iterator[Processes]:
    processes = Processes(tmp_path / "logs")
    try:
        yield processes
    finally:
        processes.close()


def write_entries(folder: Path, name: str, pid: int | None = None) -> list[str]:
    """The temporary (``.NAME.tmp-*``) and set-aside (``.NAME.old-*``) folders of writes of
    ``folder/NAME`` in ``folder``: those of process ``pid``, or of any process."""
    tag = "" if pid is None else f"{pid}-"
    prefixes = (f".{name}.tmp-{tag}", f".{name}.old-{tag}")
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.name.startswith(prefixes))
    except FileNotFoundError:
        return []


def wait_for_write(
    proc: subprocess.Popen[bytes], folder: Path, name: str, count: int = 1
) -> str | None:
    """Poll ``folder`` until ``proc`` is in its ``count``-th write of ``folder/NAME`` (counting
    the writes whose temporary folders were seen): that folder's name; None if ``proc``
    ended first."""
    deadline = time.monotonic() + 180
    seen: set[str] = set()
    while time.monotonic() < deadline:
        found = write_entries(folder, name, proc.pid)
        seen.update(e.rsplit("-", 1)[1] for e in found)  # .NAME.tmp-<pid>-<hex>: the hex
        if len(seen) >= count:
            return found[0]
        if proc.poll() is not None:
            return None
        time.sleep(0.0002)
    raise AssertionError(f"{proc.args[3:]} wrote {folder / name} {len(seen)} times in 180 s")


def kill(proc: subprocess.Popen[bytes], folder: Path, name: str) -> bool:
    """SIGKILL ``proc`` (which must still be running) and reap it; whether the kill fell in
    the middle of a write of ``folder/NAME`` (its temporary folders outlive it)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"{proc.args[3:]} ended before the kill"
    return bool(write_entries(folder, name, proc.pid))


def train_args(data: Path, out: Path, *extra: str, steps: int = STEPS, every: int = 1) -> list:
    return [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--checkpoint-every",
        str(every),
        "--device",
        "cpu",  # bit-exact resumes (CUDA kernels may add in any order)
        *TINY_FLAGS,
        *extra,
    ]


RESUMED = re.compile(r"resumed from \S+ at step (\d+)|(no checkpoint in)")


def resumed_step(log: str) -> int | None:
    """The step a ``--resume`` run started from (0 without a checkpoint), from its log."""
    m = RESUMED.search(log)
    if m is None:
        return None
    return 0 if m.group(2) else int(m.group(1))


@pytest.mark.slow
def test_training_killed_again_and_again_ends_as_the_uninterrupted_run(
    tiny_arrays, tmp_path, procs
) -> None:
    data = tmp_path / "d.npz"
    qt.OfflineDataset.from_arrays(**tiny_arrays).save_npz(data)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    t0 = time.monotonic()
    procs.run(*train_args(data, ref))
    ref_seconds = time.monotonic() - t0

    # Alternate kills: "write" as soon as the k-th checkpoint write of the run (k random)
    # has begun, "random" a random time (up to 50 ms, a few steps) after it has begun.
    rng = random.Random(2024)
    kills: list[dict] = []
    runs = []
    while len(kills) < MAX_KILLS:
        in_writes = sum(k["in_write"] for k in kills)
        if len(kills) >= 5 and in_writes >= 2:
            break
        aim = "write" if len(kills) % 2 == 0 or len(kills) >= 5 else "random"
        proc = procs.start(*train_args(data, out, *(["--resume"] if kills else [])))
        runs.append(proc)
        writes = rng.randint(1, 8)
        pause = 0.0 if aim == "write" else round(rng.uniform(0.0, 0.05), 4)
        seen = wait_for_write(proc, out, "checkpoint", writes)
        assert seen is not None, f"the run ended before the kill{procs.tail(proc)}"
        time.sleep(pause)
        kills.append(
            {
                "aim": aim,
                "writes": writes,
                "pause_s": pause,
                "in_write": kill(proc, out, "checkpoint"),
            }
        )
    final = procs.run(*train_args(data, out, "--resume"))
    runs.append(final)
    killed_seconds = time.monotonic() - t0 - ref_seconds

    for k, resumed in zip(kills, runs[1:], strict=True):
        k["resumed_at_step"] = resumed_step(procs.log(resumed))
    report = (
        f"{len(kills)} kills (reference run {ref_seconds:.1f} s, killed runs "
        f"{killed_seconds:.1f} s): " + "; ".join(json.dumps(k) for k in kills)
    )
    print(report)
    assert len(kills) >= 5, report
    assert sum(k["in_write"] for k in kills) >= 2, f"too few kills in a write: {report}"
    # Every resume found the checkpoint (checked: settings, data, checksums) and none went
    # back: a kill never destroyed or damaged the last complete checkpoint.
    steps = [k["resumed_at_step"] for k in kills]
    assert None not in steps, report
    assert steps == sorted(steps) and steps[-1] > 0, report

    for name in (
        "agent/model.safetensors",
        "agent/config.json",
        "checkpoint/model.safetensors",
        "checkpoint/target.safetensors",
        "train_config.json",
    ):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), f"{name} differs: {report}"
    assert torch_step(out / "checkpoint") == STEPS
    for written in ("checkpoint", "agent"):
        assert write_entries(out, written) == [], f"{written} temporaries left: {report}"


def torch_step(checkpoint: Path) -> int:
    import torch

    return int(torch.load(checkpoint / "trainer_state.pt", weights_only=True)["step"])


LOCK_STEPS = 40


@pytest.mark.slow
def test_a_second_run_into_a_busy_out_stops_at_once_and_harms_nothing(
    tiny_arrays, tmp_path, procs
) -> None:
    data = tmp_path / "d.npz"
    qt.OfflineDataset.from_arrays(**tiny_arrays).save_npz(data)
    out = tmp_path / "run"
    first = procs.start(*train_args(data, out, steps=LOCK_STEPS))
    # In its third checkpoint write it holds the lock (taken before anything is written):
    # stopped there (SIGSTOP), it keeps holding it, however long the others take to start.
    assert wait_for_write(first, out, "checkpoint", 3) is not None, procs.tail(first)
    first.send_signal(signal.SIGSTOP)
    try:
        others = [
            procs.start(*train_args(data, out, flag, steps=LOCK_STEPS))
            for flag in ("--resume", "--overwrite")
        ]
        for other in others:
            other.wait(timeout=120)  # a process waiting for the lock would time out here
            assert other.returncode == 2, procs.tail(other)
            assert "in use by another process" in procs.log(other), procs.tail(other)
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGCONT)
    first.wait(timeout=180)
    assert first.returncode == 0, procs.tail(first)
    assert json.loads((out / "train_config.json").read_text())["steps"] == LOCK_STEPS
    assert torch_step(out / "checkpoint") == LOCK_STEPS
    for name in ("model.safetensors", "config.json"):
        assert (out / "agent" / name).read_bytes() == (out / "checkpoint" / name).read_bytes()
    agent = qt.load_agent(out / "agent")
    assert agent.act(tiny_arrays["observations"][:2]).shape == (2, 3)
    assert write_entries(out, "checkpoint") == write_entries(out, "agent") == []


NAME = "kill-reach-v0"


def collect_args(root: Path, *extra: str) -> list[str]:
    return [
        "collect",
        "--tasks",
        "reach-v3",
        "--demos",
        "2",
        "--max-steps",
        "40",
        "--workers",
        "1",
        "--out",
        str(root),
        "--name",
        NAME,
        *extra,
    ]


def kill_collect_in_its_write(
    procs: Processes, root: Path, *extra: str, rng: random.Random, undo
) -> list[dict]:
    """Start ``collect`` and SIGKILL it a random time (up to 0.1 s; its write takes ~0.25 s)
    after its temporary folder appeared; when the kill came too late (the write had
    finished), ``undo()`` and try again. The kills: their pauses and whether in the write."""
    kills = []
    for _ in range(4):
        proc = procs.start(*collect_args(root, *extra))
        assert wait_for_write(proc, root, NAME) is not None, procs.tail(proc)
        pause = round(rng.uniform(0.0, 0.1), 3)
        time.sleep(pause)
        kills.append({"pause_s": pause, "in_write": kill(proc, root, NAME)})
        if kills[-1]["in_write"]:
            return kills
        undo()
    raise AssertionError(f"4 kills of collect all came after its write had finished: {kills}")


def observations(path: Path) -> np.ndarray:
    data = qt.OfflineDataset.open(path)
    assert data.num_episodes == 2, path
    return np.array(data.observations)


@pytest.mark.slow
def test_collect_killed_in_its_write_leaves_no_dataset_or_the_old_one(tmp_path, procs) -> None:
    root = tmp_path / "datasets"
    final = root / NAME

    # A first collection killed while writing: no dataset of that name, not even a part.
    rng = random.Random(7)
    kills = kill_collect_in_its_write(procs, root, rng=rng, undo=lambda: shutil.rmtree(final))
    assert not final.exists(), f"a collection killed {kills} left {sorted(os.listdir(root))}"
    assert write_entries(root, NAME), "the kill left no temporary folder: not in the write"
    # Nothing exists, so no --overwrite; the new run tidies what the killed one left.
    procs.run(*collect_args(root))
    old = observations(final)
    assert write_entries(root, NAME) == []

    # Replacing it (--overwrite, other data), killed while writing: the old one stays whole.
    backup = tmp_path / "backup"
    shutil.copytree(final, backup)

    def undo() -> None:  # the kill came too late: the new data replaced the old
        shutil.rmtree(final)
        shutil.copytree(backup, final)

    replace = ("--overwrite", "--seed", "1")
    replacing = kill_collect_in_its_write(procs, root, *replace, rng=rng, undo=undo)
    moved_aside = not final.exists()
    if moved_aside:
        # The kill fell between moving the old dataset aside and moving the new one in (a
        # few microseconds): recover() puts it back, as the next write would.
        assert any(".old-" in e for e in write_entries(root, NAME)), os.listdir(root)
        recover(final)
    np.testing.assert_array_equal(
        observations(final), old, err_msg=f"not the old dataset after the kills {replacing}"
    )
    procs.run(*collect_args(root, *replace))
    new = observations(final)
    assert write_entries(root, NAME) == [], sorted(os.listdir(root))
    assert new.shape != old.shape or not np.array_equal(new, old), "seed 1 collected the same"
    print(f"collect kills: new {kills}, replacing {replacing} (old set aside: {moved_aside})")
