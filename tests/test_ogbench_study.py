"""The OGBench study end to end on a tiny size: generated data, every kind of algorithm,
records, tables and plot."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from qtransformer.bench.runner_ogbench import (
    baseline_settings,
    cell_key,
    run_ogbench,
    summarize_ogbench,
)
from qtransformer.bench.studies import STUDIES, OGBenchStudy

pytestmark = pytest.mark.slow


def tiny() -> OGBenchStudy:
    study = STUDIES["ogbench"]
    assert isinstance(study, OGBenchStudy)
    return replace(
        study,
        families=("cube-single",),
        task_ids=(2,),
        algos=("qt", "rebrac"),
        seeds=(0,),
        episodes=2,
        episode_steps=40,
        steps=2,
        eval_episodes=1,
        eval_envs=1,
    )


def test_tiny_ogbench_study_runs_resumes_and_writes_its_tables(tmp_path) -> None:
    study, work, out, records = tiny(), tmp_path / "work", tmp_path / "out", tmp_path / "cells"
    new = run_ogbench(study, work, jobs=1, records=records)
    assert new == ["qt__cube-single-task2__seed0", "rebrac__cube-single-task2__seed0"]
    assert run_ogbench(study, work, jobs=1, records=records) == []  # finished cells are kept
    written = summarize_ogbench(study, work, out, records)
    assert written == ["ogbench.csv", "ogbench.md", "ogbench_bars.png", "ogbench_run.json"]
    record = json.loads((work / "cells" / new[0] / "result.json").read_text())
    assert record["config"]["gamma"] == 0.99 and record["config"]["q_min"] == pytest.approx(-100)
    assert record["dataset"]["generated_episodes"] == 2
    table = (out / "ogbench.md").read_text()
    assert "| task2 |" in table and "*published (theirs; FQL 0.96)*" in table
    assert len((out / "ogbench.csv").read_text().splitlines()) == 3
    # A fresh work folder resumes from the committed records alone.
    assert run_ogbench(study, tmp_path / "fresh", jobs=1, records=records) == []
    assert cell_key(("qt", "cube-single", 2, 0)) == new[0]


def test_baselines_take_the_ogbench_settings_per_family() -> None:
    iql = baseline_settings("iql", "puzzle-3x3")
    assert (iql.expectile, iql.weight_temp, iql.hidden_units) == (0.9, 10.0, (256, 256))
    assert iql.return_scale is None and iql.layer_norm
    rebrac = baseline_settings("rebrac", "cube-single")
    assert (rebrac.actor_beta, rebrac.critic_beta) == (1.0, 0.0)


def test_cli_generates_trains_and_evaluates_an_ogbench_task(tmp_path, monkeypatch) -> None:
    """The README's OGBench commands, relative paths included, on one short episode."""
    from qtransformer.cli import main

    monkeypatch.chdir(tmp_path)
    gen = ["collect-ogbench", "--family", "cube-single", "--tasks", "2", "--episodes", "1"]
    main([*gen, "--workers", "1", "--out", "datasets"])
    data = tmp_path / "datasets" / "ogbench-cube-single-play-task2-v0"
    assert data.is_dir()
    with pytest.raises(SystemExit):  # exists: refused, nothing generated
        main([*gen, "--workers", "1", "--out", "datasets"])
    tiny = ["--steps", "2", "--d-model", "16", "--n-layers", "1", "--n-heads", "2"]
    main(["train", "--data", str(data.relative_to(tmp_path)), "--out", "runs/og", *tiny])
    main(["eval", "--agent", "runs/og/agent", "--episodes", "1", "--num-envs", "1"])
    results = json.loads((tmp_path / "runs/eval/eval.json").read_text())["results"]
    assert list(results) == ["cube-single-task2"] and results["cube-single-task2"]["episodes"] == 1
