"""Running a study's cells (resumable, in parallel) and summarizing their records.

Each cell collects (or reuses) its dataset, trains one algorithm with evaluations along the
way, and writes ``<work>/cells/<key>/result.json`` atomically; a rerun skips finished cells.
The summary merges those records into the committed ``benchmarks/results/cells/<study>.jsonl``
and writes the study's tables and plots from that file's records alone.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from qtransformer.bench import tables
from qtransformer.bench.jsonl import read_jsonl
from qtransformer.bench.studies import (
    ALGOS,
    PROFILES,
    STUDIES,
    VARIANTS,
    Cell,
    OGBenchStudy,
    PixelStudy,
    Profile,
    Study,
)
from qtransformer.config import TrainConfig

log = logging.getLogger(__name__)

Record = dict[str, Any]


@dataclass
class BenchArgs:
    """Run a benchmark study (resumable), then write its tables and plots."""

    study: str = "grid"
    """grid (algorithms x presets x seeds, and the ablations), explore, scale, transfer,
    transfer-pick-place, mt10 (one agent for the ten MT10 tasks), finish (decisions to
    success), small (25 episodes), pixels, pretrained or ogbench (single-task OGBench
    manipulation on data generated here) (see qtransformer.bench.studies)."""
    profile: str = "cpu"
    """cpu (about 90 min on 2 cores), full (paper-like, for a GPU) or tiny (seconds)."""
    work: Path = Path("runs/bench")
    """Datasets and one result file per finished cell (transfer and pixels in
    <work>/<study>/); rerunning skips finished cells."""
    out: Path = Path("benchmarks/results")
    """Where the tables (metaworld.csv, markdown) and the plots go."""
    records: Path | None = Path("benchmarks/results/cells")
    """The committed cell records, <records>/<study>.jsonl (<study>-<profile>.jsonl for other
    profiles than cpu): merged with the work folder's (the work folder's win), rewritten, and
    the only source of the tables. None: the work folder's records only. (The pixel study's
    are its agents in <out>/vision.json.)"""
    algos: tuple[str, ...] | None = None
    """Algorithms to run; default: the study's."""
    ablations: bool = True
    """Also run the study's variants on the ablation preset (the grid's ablations)."""
    jobs: int = 2
    """Cells run at the same time (one process each, one thread each); the pixel study trains
    one agent at a time on this many threads."""
    max_cells: int | None = None
    """Stop after this many newly finished cells (run a long study in chunks)."""
    seeds: tuple[int, ...] | None = None
    """Run only the cells of these seeds (Meta-World state studies); the tables still show
    every finished cell. None: every seed of the study."""
    summarize_only: bool = False
    """Train nothing: write the tables and plots from the committed records alone."""


def study_of(name: str) -> Study | PixelStudy | OGBenchStudy:
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; known: {', '.join(STUDIES)}")
    return STUDIES[name]


def work_of(work: Path, study: Study | PixelStudy | OGBenchStudy) -> Path:
    """The study's own work folder."""
    return work / study.folder if study.folder else work


def dataset_path(
    work: Path, profile: Profile, preset: str, seed: int, episodes: int | None = None
) -> Path:
    tasks = "_".join(profile.tasks).lower()
    size = f"-{episodes}eps" if episodes is not None else ""
    return work / "data" / f"{preset}-{tasks}-r{profile.action_repeat}-seed{seed}{size}"


def ensure_dataset(
    work: Path, profile: Profile, preset: str, seed: int, episodes: int | None = None
) -> Path:
    """Collect the preset's data for ``seed`` once (``episodes`` per task, default the
    profile's); later cells reuse the saved store."""
    from qtransformer import collection as mw
    from qtransformer.data.dataset import OfflineDataset
    from qtransformer.envs import metaworld as menv

    path = dataset_path(work, profile, preset, seed, episodes)
    if (path / "dataset.json").exists():
        return path
    recipe = mw.preset_recipe(
        preset,
        list(profile.tasks),
        profile.episodes_per_task if episodes is None else episodes,
        profile.max_steps,
        profile.action_repeat,
    )
    # Many tasks: two processes (the episodes are the same whatever the number).
    workers = 2 if len({item.task for item in recipe}) > 1 else 1
    collected = mw.collect(recipe, seed=seed, workers=workers, progress=False)
    meta = {
        "preset": preset,
        "seed": seed,
        "max_steps": profile.max_steps,
        "action_repeat": profile.action_repeat,
        "summary": mw.summary(collected),
        "recipe": [item.as_dict() for item in recipe],
    }
    data = OfflineDataset.from_episodes(collected, *menv.action_bounds(), metadata=meta)
    data.save(path)
    return path


def eval_steps(total: int, points: int) -> list[int]:
    """``points`` evaluation steps evenly along ``total`` training steps."""
    return sorted({max(1, round(total * k / points)) for k in range(1, points + 1)})


def q_diagnostics(agent: Any, data: Any) -> dict[str, float]:
    """Mean per-dimension Q of the data's actions at the first states of successful and of
    failed episodes: a calibrated Q separates them (and stays below 1)."""
    import numpy as np

    starts = data.episodes.starts
    success = data.episode_success()
    disc = agent.discretizer
    obs = np.asarray(data.observations)[starts]
    bins = disc.to_bins(np.asarray(data.actions)[starts], clip=True)
    tasks = [data.tasks[i] for i in np.asarray(data.task_ids)[starts]]
    q = agent.q_values(obs, bins, task=tasks if agent.config.task_dim else None)
    q_data = np.take_along_axis(q, bins[..., None], -1)[..., 0]  # (E, dA)
    out = {}
    for name, mask in (("q_success_start", success), ("q_failure_start", ~success)):
        out[name] = float(q_data[mask].mean()) if mask.any() else float("nan")
    return out


def qt_config(cell: Cell, profile: Profile) -> TrainConfig:
    """The Q-Transformer training config of a ``qt`` or variant cell."""
    overrides = dict(VARIANTS.get(cell.algo, {}))
    steps = overrides.pop("steps", profile.steps["qt"])
    return replace(profile.qt, steps=steps, seed=cell.seed, **overrides)


BEFORE_FIELDS: dict[str, Any] = {"act_temperature": 0.0}
"""TrainConfig fields added after cells had run, with the value those cells ran with where it
is not the field's default: a cell recorded without ``act_temperature`` acted greedily."""


def changed_settings(record: Record, cell: Cell, profile: Profile) -> list[str]:
    """Settings a finished cell was run with that differ from what the profile asks now
    (Q-Transformer config fields, a baseline's settings, its steps); empty when current."""
    from qtransformer.baselines import default_settings

    def plain(x: Any) -> Any:
        return json.loads(json.dumps(x, default=str))

    got = record.get("config", {})
    if cell.algo == "qt" or cell.algo in VARIANTS:
        want = plain(asdict(qt_config(cell, profile)))
        # A field added after the cell ran counts as its default, unless the cell's behaviour
        # then was another value (BEFORE_FIELDS); logging cadence is no result.
        old = {**plain(asdict(TrainConfig())), **BEFORE_FIELDS, **got}
        skip = {"log_every", "checkpoint_every"}
        return sorted(k for k, v in want.items() if k not in skip and old.get(k) != v)
    want = {k: v for k, v in asdict(default_settings(cell.algo)).items() if v is not None}
    want = plain(want)
    settings = got.get("settings", {})
    out = sorted(k for k, v in want.items() if settings.get(k) != v)
    return out + (["steps"] if got.get("steps") != profile.steps[cell.algo] else [])


def run_cell(cell: Cell, profile: Profile, work: Path) -> Record:
    """Train and evaluate one cell; returns its record (rows for the CSV and more)."""
    import torch

    from qtransformer.baselines import train_baseline
    from qtransformer.data.dataset import OfflineDataset
    from qtransformer.evaluate import evaluate_metaworld
    from qtransformer.policy import AgentPolicy

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = OfflineDataset.open(ensure_dataset(work, profile, cell.preset, cell.seed, cell.episodes))
    tasks = list(data.tasks)
    algo = "qt" if cell.algo in VARIANTS else cell.algo
    steps = (
        qt_config(cell, profile).steps_for(len(data.actions))
        if algo == "qt"
        else profile.steps[algo]
    )
    checkpoints = eval_steps(steps, profile.eval_points)
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}

    def evaluate(policy: Any, step: int) -> dict[str, float]:
        results = evaluate_metaworld(
            policy,
            tasks,
            profile.eval_episodes,
            profile.eval_envs,
            seed=cell.seed,
            max_steps=profile.max_steps,
            action_repeat=profile.action_repeat,
        )
        for task, r in results.items():
            rows.append(
                {
                    "algo": cell.algo,
                    "dataset": cell.preset,
                    "task": task,
                    "seed": cell.seed,
                    "steps": step,
                    **r.as_dict(),
                }
            )
        return {f"success/{task}": r.success_rate for task, r in results.items()}

    if algo == "qt":
        from qtransformer.trainer import train

        cfg = qt_config(cell, profile)
        agent = train(
            data,
            cfg,
            evaluate=lambda agent, step: evaluate(AgentPolicy(agent), step),
            eval_steps=checkpoints,
        )
        extra = {"config": asdict(cfg), **q_diagnostics(agent, data)}
    else:

        def on_baseline_step(step: int, policy: Any) -> None:
            if step in checkpoints:
                evaluate(policy, step)

        policy = train_baseline(algo, data, steps, seed=cell.seed, callback=on_baseline_step)
        extra = {"config": policy.record()}
    return {
        "cell": asdict(cell),
        "rows": rows,
        "seconds": time.perf_counter() - t0,
        "dataset": data.metadata.get("summary", {}),
        **extra,
    }


def _run_and_save(cell: Cell, profile: Profile, work: Path) -> str:
    from qtransformer.atomic import write_dir_atomically

    record = run_cell(cell, profile, work)

    def write(tmp: Path) -> None:
        (tmp / "result.json").write_text(json.dumps(record, default=str))

    write_dir_atomically(work / "cells" / cell.key, write)
    return cell.key


def finished(work: Path) -> dict[str, Record]:
    """The records of the finished cells in a work folder, by key."""
    out = {}
    for f in sorted((work / "cells").glob("*/result.json")):
        out[f.parent.name] = json.loads(f.read_text())
    return out


def checked_algos(algos: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``--algos`` as names (commas split them too), each a known algorithm or variant."""
    if algos is None:
        return None
    names = tuple(n.strip() for a in algos for n in a.split(",") if n.strip())
    unknown = [n for n in names if n not in ALGOS and n not in VARIANTS]
    if unknown or not names:
        raise ValueError(
            f"--algos: unknown {', '.join(map(repr, unknown)) or 'empty list'}; known: "
            f"{', '.join((*ALGOS, *VARIANTS))}"
        )
    return names


def run_study(args: BenchArgs) -> list[str]:
    """Run every unfinished cell of the study (``jobs`` at a time); returns the keys finished
    now."""
    study = study_of(args.study)
    if args.seeds is not None and not isinstance(study, Study):
        raise ValueError(
            f"--seeds selects cells of the Meta-World state studies, not of {args.study!r}"
        )
    if isinstance(study, OGBenchStudy):
        from qtransformer.bench.runner_ogbench import run_ogbench

        algos_ = checked_algos(args.algos)
        return run_ogbench(
            study, work_of(args.work, study), args.jobs, args.max_cells, algos_, args.records
        )
    if isinstance(study, PixelStudy):
        from qtransformer.bench.runner_pixels import run_pixels

        return run_pixels(study, work_of(args.work, study), args.jobs, args.max_cells, args.out)
    profile = study.profile(PROFILES[args.profile])
    work = work_of(args.work, study)
    algos = checked_algos(args.algos)
    done = finished(work)
    cells = study.cells(profile, algos, args.ablations)
    if args.seeds is not None:
        known = sorted({c.seed for c in cells})
        if not set(args.seeds) & set(known):
            raise ValueError(
                f"--seeds {' '.join(map(str, args.seeds))}: study {args.study!r} has no cell of "
                f"these seeds on profile {args.profile!r}; its seeds: {', '.join(map(str, known))}"
            )
        cells = [c for c in cells if c.seed in args.seeds]
    todo = []
    for c in cells:
        if c.key in done:
            changed = changed_settings(done[c.key], c, profile)
            if not changed:
                continue
            log.warning("%s ran with other %s than now: running it again", c.key, changed)
        todo.append(c)
    if args.max_cells is not None:
        todo = todo[: args.max_cells]
    log.info("%d cells finished before, %d to run", len(done), len(todo))
    # Datasets first, once each, so parallel cells never collect the same data twice.
    for preset, seed, episodes in sorted({(c.preset, c.seed, c.episodes) for c in todo}, key=str):
        ensure_dataset(work, profile, preset, seed, episodes)
    new: list[str] = []
    if args.jobs <= 1:
        for c in todo:
            new.append(_run_and_save(c, profile, work))
            log.info("finished %s (%d/%d)", c.key, len(new), len(todo))
        return new
    import multiprocessing as mp

    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_and_save, c, profile, work) for c in todo]
        for f in futures:
            new.append(f.result())
            log.info("finished %s (%d/%d)", new[-1], len(new), len(todo))
    return new


def records_file(records: Path, study: str, profile: str) -> Path:
    """Where a study's committed records live (profiles other than cpu apart)."""
    return records / (f"{study}.jsonl" if profile == "cpu" else f"{study}-{profile}.jsonl")


def read_records(path: Path) -> dict[str, Record]:
    """Records of a ``.jsonl`` file by cell key; empty when there is none."""
    return {Cell(**record["cell"]).key: record for record in read_jsonl(path)}


def write_records(path: Path, records: dict[str, Record]) -> None:
    """One record per line, sorted by cell key (atomically replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(records[k], default=str) + "\n" for k in sorted(records)))
    tmp.replace(path)


def study_records(args: BenchArgs, study: Study) -> dict[str, Record]:
    """The committed records of a study, with its work folder's on top (unless
    ``summarize_only``), sorted by key."""
    path = records_file(args.records, study.name, args.profile) if args.records else None
    merged = read_records(path) if path is not None else {}
    if not args.summarize_only:
        work = finished(work_of(args.work, study))
        merged.update({k: r for k, r in work.items() if study.owns(r["cell"])})
    return dict(sorted(merged.items()))


Q_FIELDS = ("q_success_start", "q_failure_start")


def _lacking(records: dict[str, Record], fields: tuple[str, ...]) -> list[str]:
    return [k for k, r in records.items() if any(f not in r for f in fields)]


@dataclass
class _Summary:
    """What a study's tables are made from."""

    args: BenchArgs
    study: Study
    profile: Profile
    records: dict[str, Record]
    """The study's own records."""
    used: dict[str, Record]
    """Those and the records of the studies it uses."""

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for rec in self.records.values() for r in rec["rows"]]

    @property
    def algos(self) -> list[str]:
        """The grid's algorithms that have rows, in the grid's order."""
        final = tables.final_rows(self.rows)
        return [a for a in ALGOS if any(r["algo"] == a for r in final)]

    def planned(self) -> tuple[set[str], set[str]]:
        """Keys of the cells asked for, and of those finished."""
        s = self
        planned = {
            c.key for c in s.study.cells(s.profile, checked_algos(s.args.algos), s.args.ablations)
        }
        return planned, planned & set(s.records)


def _metaworld_md(s: _Summary) -> str:
    planned, done = s.planned()
    md = tables.metaworld_table(tables.final_rows(s.rows), s.algos, s.args.profile)
    return md + tables.partial_note(len(done), len(planned), s.args.profile)


def _study_md(s: _Summary, csv_name: str) -> str:
    """A study's success table (algorithms x presets, tasks pooled), with its time per cell."""
    planned, done = s.planned()
    tasks = ", ".join(s.profile.tasks)
    md = tables.success_table(tables.final_rows(s.rows), s.algos) + (
        f"\nSuccess rate at the end of training, mean over {tasks} tasks, then mean ± std over "
        f"seeds (n seeds), study `{s.study.name}`; 'dec.' = mean decisions to success. Rows of "
        f"{csv_name} hold every task and evaluation point.\n"
    )
    if len(done) < len(planned):
        md += f"\n**Partial: {len(done)} of {len(planned)} cells finished**.\n"
    return md + tables.cell_time_note(s.records, s.profile)


def _run_json(s: _Summary) -> str | None:
    """Machine and time of the finished cells; only just after running them (here)."""
    planned, done = s.planned()
    # The whole study as its records now stand, not only the cells this run was asked for:
    # a rerun of some algorithms (--algos) must not read as the whole study's cost.
    study = {c.key for c in s.study.cells(s.profile)} | planned
    finished = study & set(s.records)
    if s.args.summarize_only or _lacking({k: s.records[k] for k in finished}, ("seconds",)):
        return None
    from qtransformer.machine import machine_info

    run = {
        "profile": s.args.profile,
        "cells_finished": len(finished),
        "cells_planned": len(study),
        "cell_seconds": sum(s.records[k]["seconds"] for k in finished),
        "cells_asked_for": len(done),
        "machine": machine_info(),
    }
    return json.dumps(run, indent=1)


def _ablations_md(s: _Summary) -> str | None:
    final = tables.final_rows(s.rows)
    algos = [a for a in ("qt", *s.study.variants) if any(r["algo"] == a for r in final)]
    preset = s.profile.ablation_preset
    covered = {
        k: r
        for k, r in s.records.items()
        if r["cell"]["algo"] in algos and r["cell"]["preset"] == preset
    }
    if _lacking(covered, Q_FIELDS):
        return None
    return tables.ablation_table(final, algos, s.records, preset)


def _time_limits_md(s: _Summary) -> str | None:
    finals = tables.study_finals(s.records)
    if not finals or not all("success_lengths" in last for _, last in finals):
        return None
    return tables.time_limit_table(s.records, s.profile)


def _explore_md(s: _Summary) -> str | None:
    covered = {k: r for k, r in s.used.items() if k in tables.explore_keys(s.profile)}
    return None if _lacking(covered, Q_FIELDS) else tables.explore_table(s.used, s.profile)


TABLES: dict[str, Any] = {
    "metaworld.csv": lambda s: tables.csv_text(s.rows),
    "metaworld.md": _metaworld_md,
    "metaworld_run.json": _run_json,
    "transfer_run.json": _run_json,
    "ablations.md": _ablations_md,
    "time_limits.md": _time_limits_md,
    "explore.md": _explore_md,
    "scale.md": lambda s: tables.scale_table(s.used, s.profile),
    "transfer.md": lambda s: tables.transfer_table(s.records, s.profile),
    "transfer_pick_place.md": lambda s: tables.transfer_table(
        s.records, s.profile, "transfer-pick-place"
    ),
    "transfer_pick_place_run.json": _run_json,
    "mt10.csv": lambda s: tables.csv_text(s.rows),
    "mt10.md": lambda s: _study_md(s, "mt10.csv"),
    "mt10_tasks.md": lambda s: (
        tables.task_table(tables.final_rows(s.rows), s.algos)
        + (
            f"\nSuccess at the end of training per task, mean over the presets "
            f"({', '.join(s.study.presets or s.profile.presets)}) and seeds, "
            f"{s.profile.eval_episodes} evaluation episodes per task and point; one agent per "
            "algorithm, preset and seed for all tasks.\n"
        )
    ),
    "mt10_time_limits.md": lambda s: tables.finish_table(s.records, s.profile, s.study.algos),
    "mt10_run.json": _run_json,
    "small.md": lambda s: (
        tables.variant_table(s.used, ("qt", "iql", "bc-success", *s.study.algos), s.study.episodes)
        + (
            f"\nProfile `cpu` on {', '.join(s.profile.tasks)} with 25 episodes per task, "
            f"{s.profile.eval_episodes} evaluation episodes per point. `qt`, `iql` and "
            "`bc-success` are the data-scale study's cells; each `qt-...` variant changes the "
            "setting its name gives (`qt-epochs-40`: steps from the data's size, 40 passes "
            "over it).\n"
        )
    ),
    "finish.md": lambda s: tables.finish_table(
        s.used,
        s.profile,
        ("qt", "iql", "bc-success", *s.study.algos),
        "`qt`, `iql` and `bc-success` from the grid; each `qt-...` variant changes the "
        "setting its name gives.",
    ),
}
"""How each file a study names is made: ``fn(summary) -> text``, or None when the records
lack what it shows (records from before it existed), and the file is left as it is."""


def summarize(args: BenchArgs) -> list[str]:
    """Merge the study's records into its committed file and write its tables and plots from
    them. Returns the names of the files written."""
    study = study_of(args.study)
    if isinstance(study, OGBenchStudy):
        from qtransformer.bench.runner_ogbench import summarize_ogbench

        work = work_of(args.work, study)
        return summarize_ogbench(study, work, args.out, args.records, args.summarize_only)
    if isinstance(study, PixelStudy):
        from qtransformer.bench.runner_pixels import summarize_pixels

        return summarize_pixels(study, work_of(args.work, study), args.out, args.summarize_only)
    profile = study.profile(PROFILES[args.profile])
    records = study_records(args, study)
    if args.records is not None and not args.summarize_only and records:
        write_records(records_file(args.records, study.name, args.profile), records)
    if not records:
        log.info("no finished cells of the %s study: nothing written", study.name)
        return []
    used = dict(records)
    for name in study.uses:
        other = study_of(name)
        assert isinstance(other, Study)
        used = {**study_records(args, other), **used}
    s = _Summary(args, study, profile, records, used)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in study.tables:
        if name.endswith(".png"):
            continue
        text = TABLES[name](s)
        if text is None:
            log.info("%s not written: no cell it covers, or one lacks what it shows", name)
            continue
        (args.out / name).write_text(text)
        written.append(name)
    plots = [name for name in study.tables if name.endswith(".png")]
    if plots:
        from qtransformer.bench.plots import grid_plots, tasks_plot

        rows = s.rows
        if "metaworld_bars.png" in plots:
            grid_plots(rows, tables.final_rows(rows), s.algos, args.out)
        if "mt10_bars.png" in plots:
            tasks_plot(tables.final_rows(rows), s.algos, args.out / "mt10_bars.png")
        written += plots
    return written


def main(args: BenchArgs) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    study_of(args.study)
    if not args.summarize_only:
        run_study(args)
    for name in summarize(args):
        log.info("wrote %s", args.out / name)
