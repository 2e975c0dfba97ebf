"""Evaluation on Meta-World, and the resumable benchmark grid."""

from __future__ import annotations

import numpy as np
import pytest

from qtransformer.bench import PROFILES, BenchArgs, cells_of, finished, run_grid, summarize
from qtransformer.data import metaworld as mw
from qtransformer.evaluate import evaluate_metaworld

pytestmark = pytest.mark.slow


class Scripted:
    """The task's scripted expert (or uniform noise) as a batched policy."""

    def __init__(self, task: str, kind: str) -> None:
        self.task, self.kind = task, kind

    def reset(self, num_envs: int) -> None:
        self.rng = np.random.default_rng(0)
        self.policies = [
            mw.make_policy(self.task, mw.PolicySpec(self.kind)) for _ in range(num_envs)
        ]

    def act(self, observations: np.ndarray, task=None) -> np.ndarray:
        return np.stack(
            [
                p(o.astype(np.float64), self.rng)
                for p, o in zip(self.policies, observations, strict=True)
            ]
        )


def test_evaluation_reports_the_known_success_of_scripted_policies(tmp_path) -> None:
    expert = evaluate_metaworld(
        Scripted("reach-v3", "demo"),
        ["reach-v3"],
        episodes=10,
        num_envs=5,
        max_steps=150,
        video_dir=tmp_path,
        video_episodes=1,
    )
    r = expert["reach-v3"]
    assert r.episodes == 10 and r.success_rate == 1.0 and r.ci_low > 0.65
    assert 10 < r.mean_success_length < 150
    assert len(list(tmp_path.glob("reach-v3_ep0_success.gif"))) == 1
    random = evaluate_metaworld(
        Scripted("push-v3", "random"), ["push-v3"], episodes=6, num_envs=3, max_steps=60
    )["push-v3"]
    assert random.success_rate == 0.0 and random.mean_length == 60


def test_bench_grid_resumes_without_redoing_finished_cells(tmp_path) -> None:
    args = BenchArgs(
        profile="tiny",
        work=tmp_path / "work",
        out=tmp_path / "out",
        algos=("qt", "bc"),
        ablations=False,
        jobs=1,
        max_cells=1,
    )
    first = run_grid(args)  # interrupted after one cell
    assert first == ["qt__demos__seed0"]
    stamp = (tmp_path / "work" / "cells" / first[0] / "result.json").stat().st_mtime_ns
    rest = run_grid(BenchArgs(**{**args.__dict__, "max_cells": None}))
    assert rest == ["bc__demos__seed0"]  # only the unfinished cell ran
    assert (tmp_path / "work" / "cells" / first[0] / "result.json").stat().st_mtime_ns == stamp
    assert run_grid(BenchArgs(**{**args.__dict__, "max_cells": None})) == []
    summarize(args.work, args.out, "tiny", args.algos, args.ablations)
    csv = (args.out / "metaworld.csv").read_text().splitlines()
    assert csv[0].startswith("algo,dataset,task,seed,steps,success_rate")
    assert {line.split(",")[0] for line in csv[1:]} == {"qt", "bc"}
    table = (args.out / "metaworld.md").read_text()
    assert "| qt |" in table and "Partial" not in table
    summarize(args.work, args.out, "tiny")  # against the whole profile: 2 of 10 cells
    assert "Partial: 2 of 10 cells" in (args.out / "metaworld.md").read_text()
    assert (args.out / "metaworld_curves.png").exists() and (
        args.out / "metaworld_bars.png"
    ).exists()
    qt_cell = finished(args.work)["qt__demos__seed0"]
    assert 0 <= qt_cell["q_success_start"] <= 1


def test_cpu_profile_grid_has_every_cell() -> None:
    cells = cells_of(PROFILES["cpu"], ("qt", "bc", "bc-success", "iql", "cql", "dt"), True)
    assert len(cells) == 6 * 4 * 3 + 4 * 3
    assert len({c.key for c in cells}) == len(cells)
