"""The results tables: pure functions from records to text, in their committed format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from qtransformer.bench import PROFILES, STUDIES, BenchArgs, summarize
from qtransformer.bench.runner_pixels import summarize_pixels, vision_table
from qtransformer.bench.tables import (
    ablation_table,
    csv_text,
    explore_table,
    final_rows,
    metaworld_table,
    partial_note,
    scale_table,
    time_limit_table,
    transfer_table,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CPU = PROFILES["cpu"]
NAN = math.nan


def row(algo, preset, seed, steps, rate, length=16.0, task="push-v3", **more) -> dict:
    return {
        "algo": algo,
        "dataset": preset,
        "task": task,
        "seed": seed,
        "steps": steps,
        "success_rate": rate,
        "mean_success_length": length,
        **more,
    }


def record(algo, preset, seed, rows, episodes=None, **more) -> dict:
    cell = {"algo": algo, "preset": preset, "seed": seed, "episodes": episodes}
    return {"cell": cell, "rows": rows, **more}


@pytest.mark.parametrize(
    ("study", "files"),
    [
        ("grid", ("metaworld.csv", "metaworld.md", "ablations.md", "time_limits.md")),
        ("explore", ("explore.md",)),
        ("scale", ("scale.md",)),
        ("transfer", ("transfer.md",)),
    ],
)
def test_tables_regenerate_byte_identical_from_the_committed_records(
    study, files, tmp_path
) -> None:
    args = BenchArgs(study=study, out=tmp_path, records=RESULTS / "cells", summarize_only=True)
    written = summarize(args)
    for name in files:
        assert name in written
        assert (tmp_path / name).read_bytes() == (RESULTS / name).read_bytes(), name
    # The machine that ran the cells is recorded when they run, never re-made from records.
    assert not {"metaworld_run.json", "transfer_run.json"} & set(written)


def test_vision_table_regenerates_from_the_committed_json(tmp_path) -> None:
    committed = json.loads((RESULTS / "vision.json").read_text())
    assert vision_table(committed) == (RESULTS / "vision.md").read_text()
    (tmp_path / "vision.json").write_text((RESULTS / "vision.json").read_text())
    study = STUDIES["pixels"]
    assert summarize_pixels(study, tmp_path / "work", tmp_path, summarize_only=True) == [
        "vision.md"
    ]
    assert (tmp_path / "vision.md").read_text() == (RESULTS / "vision.md").read_text()


def test_pretrained_table_regenerates_from_the_committed_json() -> None:
    from qtransformer.bench.runner_pixels import pretrained_table

    committed = json.loads((RESULTS / "pixels_pretrained.json").read_text())
    assert pretrained_table(committed) == (RESULTS / "pixels_pretrained.md").read_text()


def test_csv_rows_are_sorted_with_four_significant_digits() -> None:
    more = {"ci_low": 0.123456, "ci_high": 1.0, "mean_length": 20.0, "episodes": 50}
    rows = [
        row("qt", "noisy", 0, 1000, 0.5, NAN, **more),
        row("bc", "noisy", 1, 500, 0.98, 16.333333, **more),
    ]
    assert csv_text(rows) == (
        "algo,dataset,task,seed,steps,success_rate,ci_low,ci_high,mean_success_length,"
        "mean_length,episodes\n"
        "bc,noisy,push-v3,1,500,0.98,0.1235,1,16.33,20,50\n"
        "qt,noisy,push-v3,0,1000,0.5,0.1235,1,,20,50\n"
    )


def test_metaworld_table_gives_mean_and_std_over_seeds_at_the_end_of_training() -> None:
    rows = [
        row("qt", "demos", 0, 500, 0.1, 30.0),  # not the end of training: ignored
        row("qt", "demos", 0, 1000, 0.9, 10.0),
        row("qt", "demos", 1, 1000, 0.7, 12.0),
        row("qt", "noisy", 0, 1000, 0.4, 15.0),
        row("bc", "demos", 0, 1000, 0.4, 20.0),
    ]
    assert metaworld_table(final_rows(rows), ["qt", "bc"], "cpu") == (
        "| algo | demos | noisy | mean |\n"
        "|---|---|---|---|\n"
        "| qt | 0.80 ± 0.10 (n=2, 11 dec.) | 0.40 ± 0.00 (n=1, 15 dec.) | 0.60 |\n"
        "| bc | 0.40 ± 0.00 (n=1, 20 dec.) | - | incomplete |\n"
        "\n"
        "Success rate at the end of training, mean ± std over seeds (n seeds), profile `cpu`; "
        "'dec.' = mean decisions to success. Rows of metaworld.csv hold every evaluation "
        "point.\n"
    )
    assert partial_note(90, 90, "cpu") == ""
    assert partial_note(2, 12, "tiny") == (
        "\n**Partial: 2 of 12 cells of the `tiny` grid finished**; cells show their number of "
        "seeds.\n"
    )


def test_ablation_table_reads_the_ablation_preset() -> None:
    records = {
        "a": record("qt", "suboptimal", 0, [row("qt", "suboptimal", 0, 1000, 0.9)]),
        "b": record("qt", "suboptimal", 1, [row("qt", "suboptimal", 1, 1000, 0.7)]),
        "c": record("qt-alpha-1", "suboptimal", 0, [row("qt-alpha-1", "suboptimal", 0, 1000, 0.5)]),
        "d": record("qt", "noisy", 0, [row("qt", "noisy", 0, 1000, 0.0)]),
    }
    q = {"a": (0.6, 0.4), "b": (0.8, 0.2), "c": (0.5, 0.5), "d": (0.0, 0.0)}
    for k, (s, f) in q.items():
        records[k].update(q_success_start=s, q_failure_start=f)
    final = final_rows([r for c in records.values() for r in c["rows"]])
    assert ablation_table(final, ["qt", "qt-alpha-1"], records, "suboptimal") == (
        "| variant | suboptimal success | Q at success starts | Q at failure starts |\n"
        "|---|---|---|---|\n"
        "| qt | 0.80 ± 0.10 (n=2) | 0.70 | 0.30 |\n"
        "| qt-alpha-1 | 0.50 ± 0.00 (n=1) | 0.50 | 0.50 |\n"
    )


def test_explore_table_format() -> None:
    q = {"q_success_start": 0.6, "q_failure_start": 0.4}
    records = {
        "qt-16-bins__noisy__seed0": record(
            "qt-16-bins", "noisy", 0, [row("x", "", 0, 500, 0.5), row("x", "", 0, 1000, 0.7)], **q
        ),
        "qt-16-bins__noisy__seed1": record(
            "qt-16-bins",
            "noisy",
            1,
            [row("x", "", 1, 500, 0.7, 17.0), row("x", "", 1, 1000, 0.8, 17.0)],
            **q,
        ),
        "qt__suboptimal__seed0": record(
            "qt",
            "suboptimal",
            0,
            [row("qt", "suboptimal", 0, 1000, 0.9)],
            q_success_start=0.5,
            q_failure_start=0.3,
        ),
    }
    assert explore_table(records, CPU) == (
        "| variant | preset | seeds | success along training (step: rate) | final | dec. "
        "| Q success / failure starts |\n"
        "|---|---|---|---|---|---|---|\n"
        "| qt-16-bins | noisy | 2 | 500: 0.60, 1000: 0.75 | 0.75 | 16.5 | 0.60 / 0.40 |\n"
        "| qt | suboptimal | 1 | 1000: 0.90 | 0.90 | 16.0 | 0.50 / 0.30 |\n"
        "\n"
        "Seeds 0, 1 of the `push-v3` presets, 50 evaluation episodes per point. "
        "`qt-32-bins-constant-lr` is the base (32 bins, constant learning rate, alpha 1); each "
        "`qt-...` variant below it changes the settings its name gives; `qt` is the `cpu` "
        "profile's Q-Transformer (16 bins, the cosine schedule and alpha 0.5), from the grid.\n"
    )


def test_scale_table_format() -> None:
    records = {
        "a": record("iql", "noisy", 0, [row("iql", "noisy", 0, 3000, 0.2, 16.0)], episodes=25),
        "b": record("iql", "noisy", 1, [row("iql", "noisy", 1, 3000, 0.4, 18.0)], episodes=25),
        "c": record("qt", "suboptimal", 0, [row("qt", "suboptimal", 0, 1000, 0.9, NAN)]),
        "d": record("qt", "demos", 0, [row("qt", "demos", 0, 1000, 1.0)]),  # not a hard preset
    }
    assert scale_table(records, CPU) == (
        "| algo | preset | 25 episodes | 50 episodes | 100 episodes |\n"
        "|---|---|---|---|---|\n"
        "| qt | noisy | - | - | - |\n"
        "| iql | noisy | 0.30 ± 0.10 (n=2, 17 dec.) | - | - |\n"
        "| bc-success | noisy | - | - | - |\n"
        "| qt | suboptimal | - | - | 0.90 ± 0.00 (n=1) |\n"
        "| iql | suboptimal | - | - | - |\n"
        "| bc-success | suboptimal | - | - | - |\n"
        "\n"
        "Success at the end of training, mean ± std over seeds, on `push-v3` with 25, 50, 100 "
        "episodes per task; the same training steps at every size; 50 evaluation episodes per "
        "cell.\n"
    )


def test_time_limit_table_format() -> None:
    records = {}
    for seed, lengths in enumerate([(10, 14, 30), (12, 16, 20, 21)]):
        last = row("qt", "suboptimal", seed, 1000, len(lengths) / 5)
        last.update(episodes=5, success_lengths=list(lengths))
        records[str(seed)] = record("qt", "suboptimal", seed, [last])
    assert time_limit_table(records, CPU) == (
        "| algo | preset | seeds | ≤ 12 decisions | ≤ 15 decisions | ≤ 20 decisions "
        "| ≤ 50 decisions |\n"
        "|---|---|---|---|---|---|---|\n"
        "| qt | suboptimal | 2 | 0.20 | 0.30 | 0.50 | 0.70 |\n"
        "\n"
        "Success within a time limit of T decisions (4 env steps each; the evaluation ran with "
        "50), at the end of training, mean over seeds.\n"
    )


def test_transfer_table_format() -> None:
    profile = STUDIES["transfer"].profile(CPU)
    task = "door-open-v3"
    records = {
        "a": record("qt", "noisy", 0, [row("qt", "noisy", 0, 1000, 0.9, 20.0, task)]),
        "b": record("qt", "noisy", 1, [row("qt", "noisy", 1, 1000, 0.7, 22.0, task)]),
        "c": record("iql", "suboptimal", 0, [row("iql", "suboptimal", 0, 3000, 0.5, 30.0, task)]),
    }
    assert transfer_table(records, profile) == (
        "| algo | noisy | suboptimal | mean |\n"
        "|---|---|---|---|\n"
        "| qt | 0.80 ± 0.10 (n=2, 21 dec.) | - | incomplete |\n"
        "| iql | - | 0.50 ± 0.00 (n=1, 30 dec.) | incomplete |\n"
        "\n"
        "Success rate at the end of training, mean ± std over seeds (n seeds), on "
        "`door-open-v3`: the adopted Q-Transformer defaults and the two strongest baselines on "
        "a task the defaults were not chosen on (100 episodes per task, 50 evaluation episodes "
        "per cell); 'dec.' = mean decisions to success.\n"
    )


def test_vision_table_format() -> None:
    def result(rate: float) -> dict:
        return {"success_rate": rate}

    results = {
        "tasks": ["a-v3", "b-v3"],
        "agents": {
            "qt-pixels": {
                "curve": [
                    {"steps": 500, "tasks": {"a-v3": result(0.0), "b-v3": result(0.0)}},
                    {"steps": 1500, "tasks": {"a-v3": result(0.5), "b-v3": result(0.25)}},
                ],
                "paraphrased": {"a-v3": result(0.2), "b-v3": result(0.0)},
            }
        },
    }
    assert vision_table(results) == (
        "| agent | a-v3 | b-v3 | mean | paraphrased mean |\n"
        "|---|---|---|---|---|\n"
        "| qt-pixels | 0.50 | 0.25 | 0.38 | 0.10 |\n"
    )


def test_pretrained_table_means_over_tasks_then_seeds() -> None:
    from qtransformer.bench.runner_pixels import pretrained_table

    def rec(agent: str, preset: str, seed: int, a: float, b: float, para=None) -> dict:
        tasks = {
            "t1": {"success_rate": a, "mean_success_length": 10.0},
            "t2": {"success_rate": b, "mean_success_length": 20.0},
        }
        paraphrased = {"t1": {"success_rate": para}, "t2": {"success_rate": para}} if para else {}
        return {
            "agent": agent,
            "preset": preset,
            "seed": seed,
            "curve": [{"steps": 500, "tasks": tasks}, {"steps": 1000, "tasks": tasks}],
            "paraphrased": paraphrased,
        }

    results = {
        "tasks": ["t1", "t2"],
        "records": [
            rec("qt", "noisy", 0, 1.0, 0.5, para=0.6),
            rec("qt", "noisy", 1, 0.5, 0.5, para=0.25),
            rec("bc", "noisy", 0, 0.2, 0.4),
            rec("qt", "suboptimal", 0, 0.0, 1.0),
            rec("bc", "suboptimal", 0, 1.0, 1.0),
        ],
    }
    table = pretrained_table(results)
    # qt noisy: seeds 0.75 and 0.5 -> 0.62 (0.50-0.75) over 2 seeds; hard mean (0.625 + 0.5) / 2;
    # paraphrases keep 0.6 / 0.75 = 0.8 and 0.25 / 0.5 = 0.5 of the success: 0.65
    assert "| qt | 0.62 (0.50-0.75) [2] | 0.50 [1] | 0.56 | 15.0 | 0.65 |" in table
    assert "| bc | 0.30 [1] | 1.00 [1] | 0.65 | 15.0 |  |" in table
    assert "| qt | noisy | 0.75 | 0.50 |" in table
