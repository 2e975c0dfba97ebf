"""Evaluation on Meta-World, and the resumable benchmark studies."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from factories import make_episode

from qtransformer import collection as mw
from qtransformer.bench import (
    ABLATIONS,
    EXPLORATION,
    PROFILES,
    STUDIES,
    BenchArgs,
    dataset_path,
    finished,
    read_records,
    run_study,
    summarize,
)
from qtransformer.bench.tables import explore_table, scale_table, time_limit_table
from qtransformer.data.dataset import OfflineDataset
from qtransformer.envs import metaworld as menv
from qtransformer.evaluate import evaluate_metaworld
from qtransformer.policy import Observes

pytestmark = pytest.mark.slow
GRID, EXPLORE, SCALE = STUDIES["grid"], STUDIES["explore"], STUDIES["scale"]


class Scripted:
    """The task's scripted expert (or uniform noise) as a batched policy."""

    observes = Observes()  # state vectors; the environments as the evaluation sets them

    def __init__(self, task: str, kind: str) -> None:
        self.task, self.kind = task, kind

    def reset(self, num_envs: int) -> None:
        self.rng = np.random.default_rng(0)
        self.policies = [
            mw.make_policy(self.task, mw.PolicySpec(self.kind)) for _ in range(num_envs)
        ]

    def act(self, observations: np.ndarray, task=None, instruction=None) -> np.ndarray:
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
    assert len(r.success_lengths) == 10 and np.mean(r.success_lengths) == r.mean_success_length
    # Evaluated again under a time limit of the median length: exactly the episodes that had
    # finished by then succeed (the policy does not see the time).
    limit = int(np.median(r.success_lengths))
    short = evaluate_metaworld(
        Scripted("reach-v3", "demo"), ["reach-v3"], episodes=10, num_envs=5, max_steps=limit
    )["reach-v3"]
    assert short.success_rate == sum(n <= limit for n in r.success_lengths) / 10
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
        records=tmp_path / "records",
        algos=("qt", "bc"),
        ablations=False,
        jobs=1,
        max_cells=1,
    )
    first = run_study(args)  # interrupted after one cell
    assert first == ["qt__demos__seed0"]
    stamp = (tmp_path / "work" / "cells" / first[0] / "result.json").stat().st_mtime_ns
    rest = run_study(replace(args, max_cells=None))
    assert rest == ["bc__demos__seed0"]  # only the unfinished cell ran
    assert (tmp_path / "work" / "cells" / first[0] / "result.json").stat().st_mtime_ns == stamp
    assert run_study(replace(args, max_cells=None)) == []
    # A cell run with other settings than the profile's now is run again, and only that one.
    path = tmp_path / "work" / "cells" / first[0] / "result.json"
    record = json.loads(path.read_text())
    record["config"]["conservative_weight"] = 9.0
    path.write_text(json.dumps(record))
    assert run_study(replace(args, max_cells=None)) == [first[0]]
    assert finished(args.work)[first[0]]["config"]["conservative_weight"] == 0.5
    summarize(args)
    # The records go to the study's file (apart from the cpu profile's), the work folder's
    # exactly; the tables come from that file alone.
    records = read_records(tmp_path / "records" / "grid-tiny.jsonl")
    assert json.dumps(records) == json.dumps(finished(args.work))
    csv = (args.out / "metaworld.csv").read_text().splitlines()
    assert csv[0].startswith("algo,dataset,task,seed,steps,success_rate")
    assert {line.split(",")[0] for line in csv[1:]} == {"qt", "bc"}
    table = (args.out / "metaworld.md").read_text()
    assert "| qt |" in table and "Partial" not in table
    summarize(replace(args, algos=None, ablations=True))  # the whole study: 6 algorithms, ablations
    partial = f"Partial: 2 of {6 + len(ABLATIONS)} cells"
    assert partial in (args.out / "metaworld.md").read_text()
    # Without the work folder (summarize-only) the committed records give the same tables.
    table = (args.out / "metaworld.md").read_text()
    (args.out / "metaworld.md").unlink()
    summarize(replace(args, algos=None, ablations=True, work=tmp_path / "x", summarize_only=True))
    assert (args.out / "metaworld.md").read_text() == table
    assert (args.out / "metaworld_curves.png").exists() and (
        args.out / "metaworld_bars.png"
    ).exists()
    qt_cell = finished(args.work)["qt__demos__seed0"]
    assert 0 <= qt_cell["q_success_start"] <= 1


def test_cpu_profile_grid_has_every_cell() -> None:
    cells = GRID.cells(PROFILES["cpu"], ("qt", "bc", "bc-success", "iql", "cql", "dt"), True)
    assert cells == GRID.cells(PROFILES["cpu"])
    assert len(cells) == 6 * 4 * 3 + len(ABLATIONS) * 3
    assert len({c.key for c in cells}) == len(cells)


def test_scale_study_cells_and_data_stay_apart_from_the_grid(tmp_path) -> None:
    profile = PROFILES["cpu"]
    grid, scale = GRID.cells(profile, ("qt", "iql", "bc-success"), False), SCALE.cells(profile)
    # 3 algorithms x 2 presets: 3 seeds at 50 episodes, 5 at 25 (where 3 left them close)
    assert len(scale) == 3 * 2 * (3 + 5) and len({c.key for c in scale}) == len(scale)
    assert {c.seed for c in scale if c.episodes == 25} == {0, 1, 2, 3, 4}
    assert {c.seed for c in scale if c.episodes == 50} == {0, 1, 2}
    assert not {c.key for c in grid} & {c.key for c in scale}
    paths = {dataset_path(tmp_path, profile, c.preset, c.seed, c.episodes) for c in scale}
    assert len(paths) == 2 * (3 + 5)
    assert dataset_path(tmp_path, profile, "noisy", 0) not in paths


def tiny_scale_args(tmp_path, **more) -> BenchArgs:
    """The data-scale study on the tiny profile, one cell per call, in ``tmp_path``."""
    return BenchArgs(
        study="scale",
        profile="tiny",
        work=tmp_path / "w",
        out=tmp_path / "o",
        records=None,
        jobs=1,
        max_cells=1,
        **more,
    )


def test_scale_cell_trains_on_its_own_size_and_leaves_the_grid_table(tmp_path) -> None:
    args = tiny_scale_args(tmp_path)
    (key,) = run_study(args)
    assert key == "qt__noisy__seed0__25eps"
    data = OfflineDataset.open(dataset_path(args.work, PROFILES["tiny"], "noisy", 0, 25))
    assert data.num_episodes == 25
    assert summarize(args) == ["scale.md"]
    assert "25 episodes" in (args.out / "scale.md").read_text()
    assert "| qt | noisy | " in (args.out / "scale.md").read_text()
    assert summarize(replace(args, study="grid")) == []  # the grid has no cell
    assert not (args.out / "metaworld.md").exists()


def test_bench_seeds_runs_only_the_cells_of_those_seeds(tmp_path) -> None:
    args = tiny_scale_args(tmp_path, seeds=(3,))
    assert run_study(args) == ["qt__noisy__seed3__25eps"]  # an extra seed of the 25-episode size
    assert run_study(args) == ["iql__noisy__seed3__25eps"]  # resumes with the next one
    with pytest.raises(ValueError, match="--seeds 7: study 'scale' has no cell .* seeds: 0, 3, 4"):
        run_study(replace(args, seeds=(7,)))
    with pytest.raises(ValueError, match="--seeds .* 'pixels'"):
        run_study(replace(args, study="pixels"))


def test_transfer_study_keeps_its_cells_and_data_in_its_own_folder(tmp_path) -> None:
    args = BenchArgs(
        study="transfer",
        profile="tiny",
        work=tmp_path / "w",
        out=tmp_path / "o",
        records=tmp_path / "r",
        jobs=1,
        max_cells=1,
    )
    assert run_study(args) == ["qt__noisy__seed0"]
    folder = tmp_path / "w" / "transfer"
    assert (folder / "cells" / "qt__noisy__seed0" / "result.json").exists()
    assert (folder / "data" / "noisy-door-open-v3-r4-seed0" / "dataset.json").exists()
    assert not (tmp_path / "w" / "cells").exists()
    assert summarize(args) == ["transfer.md", "transfer_run.json"]
    run = json.loads((args.out / "transfer_run.json").read_text())
    whole = len(STUDIES["transfer"].cells(PROFILES["tiny"]))
    assert (run["cells_finished"], run["cells_planned"], run["cells_asked_for"]) == (1, whole, 1)
    # Asking for one algorithm still reports the whole study, not only that algorithm's cells.
    summarize(replace(args, algos=("qt",)))
    run = json.loads((args.out / "transfer_run.json").read_text())
    assert (run["cells_finished"], run["cells_planned"]) == (1, whole) and whole > 1
    table = (args.out / "transfer.md").read_text()
    assert table.startswith("| algo | noisy | mean |") and "| qt | " in table
    assert "door-open-v3" in table
    assert set(read_records(tmp_path / "r" / "transfer-tiny.jsonl")) == {"qt__noisy__seed0"}
    assert summarize(replace(args, study="grid")) == []  # not the grid's cell


def _record(algo: str, preset: str, seed: int, curve: list[tuple[int, float]]) -> dict:
    rows = [
        {
            "algo": algo,
            "dataset": preset,
            "task": "push-v3",
            "seed": seed,
            "steps": k,
            "success_rate": v,
            "mean_success_length": 16.0 + seed,
        }
        for k, v in curve
    ]
    cell = {"algo": algo, "preset": preset, "seed": seed}
    return {"cell": cell, "rows": rows, "q_success_start": 0.6, "q_failure_start": 0.4}


def test_exploration_table_averages_each_evaluation_point_over_seeds() -> None:
    profile = PROFILES["cpu"]
    cells = EXPLORE.cells(profile)
    assert {c.algo for c in cells} == set(EXPLORATION)
    assert {c.preset for c in cells} == {"noisy", "suboptimal"} and {c.seed for c in cells} == {
        0,
        1,
    }
    records = {
        "qt-16-bins__noisy__seed0": _record("qt-16-bins", "noisy", 0, [(500, 0.5), (1000, 0.7)]),
        "qt-16-bins__noisy__seed1": _record("qt-16-bins", "noisy", 1, [(500, 0.7), (1000, 0.8)]),
        "qt-16-bins__noisy__seed2": _record("qt-16-bins", "noisy", 2, [(500, 0.0), (1000, 0.0)]),
        "bc__noisy__seed0": _record("bc", "noisy", 0, [(1000, 0.0)]),
    }
    table = explore_table(records, profile)
    row = next(line for line in table.splitlines() if line.startswith("| qt-16-bins | noisy"))
    # Seed 2 is outside the exploration seeds and bc is not a variant: both are ignored.
    assert "| 2 | 500: 0.60, 1000: 0.75 | 0.75 | 16.5 | 0.60 / 0.40 |" in row
    assert "| bc |" not in table


def test_scale_table_puts_each_size_in_its_column() -> None:
    profile = PROFILES["cpu"]
    records = {}
    for seed, (r25, r50, r100) in enumerate([(0.2, 0.5, 0.9), (0.4, 0.7, 1.0)]):
        for n, rate in ((25, r25), (50, r50), (None, r100)):
            rec = _record("iql", "noisy", seed, [(1000, 0.0), (3000, rate)])
            rec["cell"]["episodes"] = n
            records[f"iql-{seed}-{n}"] = rec
    records["bc"] = _record("bc", "noisy", 0, [(3000, 1.0)])  # not in the study
    row = next(
        r for r in scale_table(records, profile).splitlines() if r.startswith("| iql | noisy")
    )
    assert row == (
        "| iql | noisy | 0.30 ± 0.10 (n=2, 16 dec.) | 0.60 ± 0.10 (n=2, 16 dec.) "
        "| 0.95 ± 0.05 (n=2, 16 dec.) |"
    )


def test_time_limit_table_counts_successes_within_each_limit() -> None:
    profile = PROFILES["cpu"]  # 200 env steps at action repeat 4: 50 decisions
    records = {}
    for seed, lengths in enumerate([(10, 14, 30), (12, 16, 20, 21)]):
        rec = _record("qt", "suboptimal", seed, [(1000, len(lengths) / 5)])
        rec["rows"][0].update(episodes=5, success_lengths=list(lengths))
        records[f"qt-{seed}"] = rec
    records["old"] = _record("iql", "suboptimal", 0, [(3000, 1.0)])  # no lengths recorded
    table = time_limit_table(records, profile)
    row = next(r for r in table.splitlines() if r.startswith("| qt | suboptimal"))
    # <= 12: 1/5 and 1/5; <= 15: 2/5 and 1/5; <= 20: 2/5 and 3/5; <= 50: 3/5 and 4/5.
    assert row == "| qt | suboptimal | 2 | 0.20 | 0.30 | 0.50 | 0.70 |"
    assert "| iql |" not in table and "≤ 50 decisions" in table
    assert time_limit_table({"old": records["old"]}, profile) == ""


def test_full_profile_config_trains_and_acts_on_ten_tasks() -> None:
    """The GPU profile's Q-Transformer at its full size (d_model 256, 4 layers, 64 bins), for
    a few steps on CPU over MT10's task names: task-conditioned training and acting work."""
    import qtransformer as qt

    profile = PROFILES["full"]
    assert profile.tasks == ("MT10",) and profile.qt.device == "auto"
    episodes = [
        make_episode(T=5, success=k % 2 == 0, task=task, seed=10 * i + k)
        for i, task in enumerate(menv.MT10)
        for k in range(2)
    ]
    data = OfflineDataset.from_episodes(episodes, -np.ones(2), np.ones(2))
    agent = qt.train(data, replace(profile.qt, steps=3, batch_size=16, log_every=1))
    assert agent.config.n_bins == 64 and agent.config.d_model == 256
    actions = agent.act(np.zeros((2, 3), np.float32), task=[menv.MT10[0], menv.MT10[9]])
    assert actions.shape == (2, 2) and np.all(np.abs(actions) <= 1)
    assert len(GRID.cells(profile, ("qt", "iql"), True)) == (2 * 4 + len(ABLATIONS)) * 3


def test_finish_table_pools_the_tasks_of_a_cell_and_counts_within_each_limit() -> None:
    from qtransformer.bench.tables import finish_table

    records = {}
    for seed, tasks in enumerate([{"a": (10, 14), "b": (30,)}, {"a": (12, 16, 20), "b": ()}]):
        rec = _record("qt", "noisy", seed, [(1000, 0.0)])
        rows = []
        for task, lengths in tasks.items():
            rows.append(
                {**rec["rows"][0], "task": task, "episodes": 4, "success_rate": len(lengths) / 4}
            )
            rows[-1]["success_lengths"] = list(lengths)
        rec["rows"] = rows
        records[f"qt-{seed}"] = rec
    table = finish_table(records, PROFILES["cpu"], ("qt", "iql"))
    row = next(r for r in table.splitlines() if r.startswith("| qt | noisy"))
    # seed 0: 3/8 succeed, <= 12: 1/8, <= 15: 2/8, <= 20: 2/8; seed 1: 3/8, 1/8, 1/8, 3/8.
    # Decisions: mean of (10, 14, 30, 12, 16, 20) = 17.0.
    assert row == "| qt | noisy | 2 | 0.38 ± 0.00 | 17.0 | 0.12 | 0.19 | 0.31 |"
    assert "| iql |" not in table


def test_task_table_gives_each_task_a_row_and_the_mean_last() -> None:
    from qtransformer.bench.tables import task_table

    final = [
        {"algo": a, "task": t, "success_rate": r, "mean_success_length": 10.0}
        for a, t, r in [("qt", "x", 1.0), ("qt", "y", 0.5), ("iql", "x", 0.2), ("iql", "y", 0.4)]
    ]
    table = task_table(final, ["qt", "iql"]).splitlines()
    assert table[2] == "| x | 1.00 (10 dec.) | 0.20 (10 dec.) |"
    assert table[-1] == "| **mean** | **0.75** | **0.30** |"


def test_mt10_study_runs_every_algorithm_on_all_ten_tasks_with_its_own_sizes() -> None:
    study = STUDIES["mt10"]
    profile = study.profile(PROFILES["cpu"])
    assert menv.resolve_tasks(profile.tasks) == menv.MT10
    assert profile.episodes_per_task == 50 and profile.eval_episodes == 50
    assert profile.steps["qt"] * 3 == profile.steps["iql"]
    cells = study.cells(profile)
    assert len(cells) == 4 * 3 * 3 and len({c.key for c in cells}) == len(cells)
    assert PROFILES["cpu"].tasks == ("push-v3",)  # the profile itself is unchanged


def test_bench_refuses_unknown_algorithms_before_any_work(tmp_path) -> None:
    from qtransformer.bench.runner import checked_algos

    assert checked_algos(("iql,bc", "qt")) == ("iql", "bc", "qt")
    assert checked_algos(None) is None
    args = BenchArgs(study="grid", profile="tiny", work=tmp_path, algos=("iql,bcc",))
    with pytest.raises(ValueError, match="unknown 'bcc'"):
        run_study(args)
    assert not (tmp_path / "data").exists()


def test_variant_table_keeps_each_data_size_apart() -> None:
    from qtransformer.bench.tables import variant_table

    a = _record("qt-epochs-40", "noisy", 0, [(100, 0.2), (300, 0.5)])
    a["cell"]["episodes"] = 25
    b = _record("qt-epochs-40", "noisy", 1, [(100, 0.4), (300, 0.7)])
    b["cell"]["episodes"] = 25
    c = _record("qt-epochs-40", "noisy", 0, [(1000, 0.9)])  # the profile's size: left out
    table = variant_table({"a": a, "b": b, "c": c}, ("qt-epochs-40",), (25,))
    (row,) = [r for r in table.splitlines() if r.startswith("| qt-epochs-40")]
    assert row == "| qt-epochs-40 | noisy | 25 | 2 | 100: 0.30, 300: 0.60 | 0.60 ± 0.10 | 16.5 |"
