"""The paper's comparison as one resumable grid: algorithms x data presets x seeds.

Each cell collects (or reuses) its dataset, trains one algorithm with evaluations along the
way, and writes ``work/cells/<cell>.json`` atomically; a rerun skips finished cells. The
summary step turns all cells into ``metaworld.csv`` (``algo,dataset,task,seed,steps,
success_rate`` and more), markdown tables and plots.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from qtransformer.config import TrainConfig

log = logging.getLogger(__name__)

BASELINE_ALGOS = ("bc", "bc-success", "iql", "cql", "dt")
ALGOS = ("qt", *BASELINE_ALGOS)
ABLATIONS: dict[str, dict[str, Any]] = {
    "qt-no-conservative": {"conservative_weight": 0.0},
    "qt-no-mc-bound": {"mc_lower_bound": False},
    "qt-1-step": {"n_step": 1},
    "qt-softmax-conservative": {"conservative": "softmax"},
    "qt-alpha-1": {"conservative_weight": 1.0},
    "qt-alpha-2": {"conservative_weight": 2.0},
}
"""Q-Transformer variants of the paper's figure 6, run on the ``noisy`` preset, and the
conservative weight alpha (0 is ``qt-no-conservative``)."""
EXPLORATION: dict[str, dict[str, Any]] = {
    "qt-32-bins-constant-lr": {},
    "qt-2500-steps": {"steps": 2500},
    "qt-cosine-lr": {"lr_schedule": "cosine"},
    "qt-16-bins": {"n_bins": 16},
    "qt-dropout-0.1": {"dropout": 0.1},
    "qt-alpha-0.5": {"conservative_weight": 0.5},
    "qt-16-bins-cosine": {"n_bins": 16, "lr_schedule": "cosine"},
    "qt-16-bins-cosine-2000-steps": {"n_bins": 16, "lr_schedule": "cosine", "steps": 2000},
    "qt-16-bins-cosine-alpha-0.25": {
        "n_bins": 16,
        "lr_schedule": "cosine",
        "conservative_weight": 0.25,
    },
}
"""Changes to the exploration base (the ``cpu`` Q-Transformer before it took 16 bins, the
cosine schedule and alpha 0.5: 32 bins, constant learning rate, alpha 1), measured on the
hard presets (``--explore``): training length, learning-rate decay, coarser bins, dropout and
the conservative weight, one at a time, then combined."""
EXPLORE_PRESETS = ("noisy", "suboptimal")
VARIANTS = {**ABLATIONS, **EXPLORATION}
SCALE_ALGOS = ("qt", "iql", "bc-success")
SCALE_EPISODES = (25, 50)
"""The data-scale study (``--scale``): Q-Transformer and the two strongest baselines on the
hard presets with fewer episodes per task than the grid; the grid's own size completes it."""


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run."""

    tasks: tuple[str, ...]
    presets: tuple[str, ...]
    seeds: tuple[int, ...]
    episodes_per_task: int
    max_steps: int
    action_repeat: int
    eval_episodes: int
    eval_envs: int
    eval_points: int
    steps: dict[str, int]
    qt: TrainConfig
    ablation_preset: str = "noisy"


# 1000 steps: on seeds 0-1 of a 2500-step run, success peaked near step 833 on every preset
# and then fell (over-fitting ~3k transitions). 16 bins and the cosine schedule: each raised
# suboptimal by about 0.1 on seeds 0-1 in the exploration (explore.md); adopted together.
# alpha 0.5: the conservative term's minimum weighs each bin's value by its data frequency
# (tests/test_loss.py), so a large alpha makes greedy copy the noisy data's most frequent
# bins. Chosen on seeds 0-1 of noisy, suboptimal and mixed; over all 3 seeds noisy scores
# 0.01 / 0.95 / 0.69 / 0.31 at alpha 0 / 0.5 / 1 / 2 (ablations.md).
QT_CPU = TrainConfig(
    steps=1000,
    batch_size=128,
    n_bins=16,
    gamma=0.98,
    n_step=3,
    conservative_weight=0.5,
    mc_lower_bound=True,
    d_model=128,
    n_layers=2,
    n_heads=4,
    q_heads=2,
    lr=3e-4,
    lr_schedule="cosine",
    target_update_rate=0.005,
    log_every=250,
)

PROFILES: dict[str, Profile] = {
    # Everything in about 90 minutes on 2 CPU cores (two cells at a time).
    "cpu": Profile(
        tasks=("push-v3",),
        presets=("demos", "mixed", "noisy", "suboptimal"),
        seeds=(0, 1, 2),
        episodes_per_task=100,
        max_steps=200,
        action_repeat=4,
        eval_episodes=50,
        eval_envs=10,
        eval_points=3,
        steps={"qt": 1000, "bc": 3000, "bc-success": 3000, "iql": 3000, "cql": 600, "dt": 600},
        qt=QT_CPU,
    ),
    # Paper-like scale, for a GPU: MT10, more data, long training.
    "full": Profile(
        tasks=("MT10",),
        presets=("demos", "mixed", "noisy", "suboptimal"),
        seeds=(0, 1, 2),
        episodes_per_task=100,
        max_steps=200,
        action_repeat=4,
        eval_episodes=100,
        eval_envs=25,
        eval_points=10,
        steps={
            "qt": 100_000,
            "bc": 100_000,
            "bc-success": 100_000,
            "iql": 100_000,
            "cql": 100_000,
            "dt": 100_000,
        },
        qt=replace(
            QT_CPU,
            steps=100_000,
            batch_size=256,
            d_model=256,
            n_layers=4,
            n_heads=8,
            n_bins=64,
            log_every=1000,
            device="auto",
        ),
    ),
    # make demo: one task and regime, a few minutes on a laptop CPU.
    "demo": Profile(
        tasks=("push-v3",),
        presets=("suboptimal",),
        seeds=(0,),
        episodes_per_task=60,
        max_steps=200,
        action_repeat=4,
        eval_episodes=20,
        eval_envs=10,
        eval_points=3,
        steps={"qt": 1000, "bc": 1500, "bc-success": 1500, "iql": 1500, "cql": 300, "dt": 300},
        qt=QT_CPU,
    ),
    # A few seconds, for tests of the machinery.
    "tiny": Profile(
        tasks=("reach-v3",),
        presets=("demos",),
        seeds=(0,),
        episodes_per_task=4,
        max_steps=100,
        action_repeat=4,
        eval_episodes=2,
        eval_envs=2,
        eval_points=1,
        steps={"qt": 4, "bc": 4, "bc-success": 4, "iql": 4, "cql": 2, "dt": 2},
        qt=replace(QT_CPU, steps=4, batch_size=16, n_bins=8, d_model=16, n_layers=1, n_heads=2),
    ),
}


@dataclass(frozen=True)
class Cell:
    """One training run: an algorithm (or ablation) on one preset's data with one seed."""

    algo: str
    preset: str
    seed: int
    episodes: int | None = None
    """Episodes per task when not the profile's (the data-scale study)."""

    @property
    def key(self) -> str:
        size = f"__{self.episodes}eps" if self.episodes is not None else ""
        return f"{self.algo}__{self.preset}__seed{self.seed}{size}"


@dataclass
class BenchArgs:
    """Run the benchmark grid (resumable), then write tables and plots."""

    profile: str = "cpu"
    """cpu (about 90 min on 2 cores), full (paper-like, for a GPU) or tiny (seconds)."""
    work: Path = Path("runs/bench")
    """Datasets and one result file per finished cell; rerunning skips finished cells."""
    out: Path = Path("benchmarks/results")
    """Where metaworld.csv, the markdown tables and the plots go."""
    algos: tuple[str, ...] = ALGOS
    """Algorithms to run."""
    ablations: bool = True
    """Also run the Q-Transformer ablations on the ablation preset."""
    jobs: int = 2
    """Cells run at the same time (one process each, one thread each)."""
    max_cells: int | None = None
    """Stop after this many newly finished cells (run a long grid in chunks)."""
    explore: bool = False
    """Run the exploration variants instead (noisy and suboptimal, first two seeds) and
    write explore.md."""
    scale: bool = False
    """Run the data-scale study instead (qt, iql and bc-success on noisy and suboptimal with
    25 and 50 episodes per task, every seed) and write scale.md."""


def cells_of(profile: Profile, algos: Sequence[str], ablations: bool) -> list[Cell]:
    out = [Cell(a, p, s) for s in profile.seeds for p in profile.presets for a in algos]
    if ablations:
        out += [Cell(a, profile.ablation_preset, s) for s in profile.seeds for a in ABLATIONS]
    return out


def explore_base(profile: Profile) -> TrainConfig:
    return replace(profile.qt, n_bins=32, lr_schedule="constant", conservative_weight=1.0)


def explore_cells(profile: Profile) -> list[Cell]:
    return [Cell(a, p, s) for s in profile.seeds[:2] for p in EXPLORE_PRESETS for a in EXPLORATION]


def scale_cells(profile: Profile) -> list[Cell]:
    return [
        Cell(a, p, s, n)
        for n in SCALE_EPISODES
        for s in profile.seeds
        for p in EXPLORE_PRESETS
        for a in SCALE_ALGOS
    ]


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
    episodes = mw.collect(recipe, seed=seed, workers=1, progress=False)
    meta = {
        "preset": preset,
        "seed": seed,
        "max_steps": profile.max_steps,
        "action_repeat": profile.action_repeat,
        "summary": mw.summary(episodes),
        "recipe": [item.as_dict() for item in recipe],
    }
    data = OfflineDataset.from_episodes(episodes, *menv.action_bounds(), metadata=meta)
    data.save(path)
    return path


def _eval_steps(total: int, points: int) -> list[int]:
    return sorted({max(1, round(total * k / points)) for k in range(1, points + 1)})


def q_diagnostics(agent: Any, data: Any) -> dict[str, float]:
    """Mean per-dimension Q of the data's actions at the first states of successful and of
    failed episodes: a calibrated Q separates them (and stays below 1)."""
    from qtransformer.discretize import ActionDiscretizer

    starts = data.episodes.starts
    success = np.add.reduceat(np.asarray(data.rewards), starts) > 0
    disc = ActionDiscretizer(data.action_low, data.action_high, agent.config.n_bins)
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
    base = explore_base(profile) if cell.algo in EXPLORATION else profile.qt
    return replace(base, steps=steps, seed=cell.seed, **overrides)


def changed_settings(record: dict[str, Any], cell: Cell, profile: Profile) -> list[str]:
    """Settings a finished cell was run with that differ from what the profile asks now
    (Q-Transformer config fields, a baseline's settings, its steps); empty when current."""
    from qtransformer.baselines import default_settings

    def plain(x: Any) -> Any:
        return json.loads(json.dumps(x, default=str))

    got = record.get("config", {})
    if cell.algo == "qt" or cell.algo in VARIANTS:
        want = plain(asdict(qt_config(cell, profile)))
        # A field added after the cell ran counts as its default; logging cadence is no result.
        old = {**plain(asdict(TrainConfig())), **got}
        skip = {"log_every", "checkpoint_every"}
        return sorted(k for k, v in want.items() if k not in skip and old.get(k) != v)
    want = {k: v for k, v in asdict(default_settings(cell.algo)).items() if v is not None}
    want = plain(want)
    settings = got.get("settings", {})
    out = sorted(k for k, v in want.items() if settings.get(k) != v)
    return out + (["steps"] if got.get("steps") != profile.steps[cell.algo] else [])


def run_cell(cell: Cell, profile: Profile, work: Path) -> dict[str, Any]:
    """Train and evaluate one cell; returns its record (rows for the CSV and more)."""
    import torch

    from qtransformer.baselines import AgentPolicy, train_baseline
    from qtransformer.data.dataset import OfflineDataset
    from qtransformer.evaluate import evaluate_metaworld

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = OfflineDataset.open(ensure_dataset(work, profile, cell.preset, cell.seed, cell.episodes))
    tasks = list(data.tasks)
    algo = "qt" if cell.algo in VARIANTS else cell.algo
    steps = qt_config(cell, profile).steps if algo == "qt" else profile.steps[algo]
    checkpoints = _eval_steps(steps, profile.eval_points)
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}

    def evaluate(policy: Any, step: int) -> None:
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

    if algo == "qt":
        from qtransformer.trainer import agent_of, train

        cfg = qt_config(cell, profile)

        def on_step(step: int, metrics: dict[str, float], learner: Any) -> None:
            if step in checkpoints:
                agent = agent_of(learner, data)
                evaluate(AgentPolicy(agent), step)
                learner.model.train()

        agent = train(data, cfg, callback=on_step)
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


def finished(work: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for f in sorted((work / "cells").glob("*/result.json")):
        out[f.parent.name] = json.loads(f.read_text())
    return out


def run_grid(args: BenchArgs) -> list[str]:
    """Run every unfinished cell (``jobs`` at a time); returns the keys finished now."""
    profile = PROFILES[args.profile]
    done = finished(args.work)
    if args.explore:
        wanted = explore_cells(profile)
    elif args.scale:
        wanted = scale_cells(profile)
    else:
        wanted = cells_of(profile, args.algos, args.ablations)
    todo = []
    for c in wanted:
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
        ensure_dataset(args.work, profile, preset, seed, episodes)
    new: list[str] = []
    if args.jobs <= 1:
        for c in todo:
            new.append(_run_and_save(c, profile, args.work))
            log.info("finished %s (%d/%d)", c.key, len(new), len(todo))
        return new
    import multiprocessing as mp

    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_and_save, c, profile, args.work) for c in todo]
        for f in futures:
            new.append(f.result())
            log.info("finished %s (%d/%d)", new[-1], len(new), len(todo))
    return new


@dataclass
class Summary:
    rows: list[dict[str, Any]] = field(default_factory=list)
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)


def summarize(
    work: Path,
    out: Path,
    profile_name: str,
    algos: Sequence[str] = ALGOS,
    ablations: bool = True,
) -> Summary:
    """Write metaworld.csv, metaworld.md, ablations.md and the plots from finished cells."""
    everything = finished(work)
    cells = {
        k: c
        for k, c in everything.items()
        if c["cell"]["algo"] not in EXPLORATION and c["cell"].get("episodes") is None
    }
    rows = [r for rec in cells.values() for r in rec["rows"]]
    s = Summary(rows, cells)
    out.mkdir(parents=True, exist_ok=True)
    cols = [
        "algo",
        "dataset",
        "task",
        "seed",
        "steps",
        "success_rate",
        "ci_low",
        "ci_high",
        "mean_success_length",
        "mean_length",
        "episodes",
    ]
    lines = [",".join(cols)]
    for r in sorted(
        rows, key=lambda r: (r["algo"], r["dataset"], r["task"], r["seed"], r["steps"])
    ):
        lines.append(",".join(_fmt(r[c]) for c in cols))
    (out / "metaworld.csv").write_text("\n".join(lines) + "\n")
    final = _final_rows(rows)
    main_algos = [a for a in ALGOS if any(r["algo"] == a for r in final)]
    planned = {c.key for c in cells_of(PROFILES[profile_name], algos, ablations)}
    done = len(planned & set(cells))
    status = (
        f"\n**Partial: {done} of {len(planned)} cells of the `{profile_name}` grid "
        "finished**; cells show their number of seeds.\n"
        if done < len(planned)
        else ""
    )
    (out / "metaworld.md").write_text(_table(final, main_algos, cells, profile_name) + status)
    from qtransformer.machine import machine_info

    seconds = sum(c["seconds"] for k, c in cells.items() if k in planned)
    run = {
        "profile": profile_name,
        "cells_finished": done,
        "cells_planned": len(planned),
        "cell_seconds": seconds,
        "machine": machine_info(),
    }
    (out / "metaworld_run.json").write_text(json.dumps(run, indent=1))
    abl = [a for a in ("qt", *ABLATIONS) if any(r["algo"] == a for r in final)]
    (out / "ablations.md").write_text(_ablation_table(final, abl, cells))
    if rows:
        _plots(rows, final, main_algos, out)
    if any(c["cell"]["algo"] in EXPLORATION for c in everything.values()):
        (out / "explore.md").write_text(explore_table(everything, PROFILES[profile_name]))
    if any(c["cell"].get("episodes") is not None for c in everything.values()):
        (out / "scale.md").write_text(scale_table(everything, PROFILES[profile_name]))
    limits = time_limit_table(cells, PROFILES[profile_name])
    if limits:
        (out / "time_limits.md").write_text(limits)
    return s


def explore_table(cells: dict[str, dict[str, Any]], profile: Profile) -> str:
    """Per variant and preset: success at every evaluation point (mean over the exploration
    seeds), decisions to success and Q at the start of successful vs failed episodes."""
    keys = {c.key for c in explore_cells(profile)}
    keys |= {Cell("qt", p, s).key for s in profile.seeds[:2] for p in EXPLORE_PRESETS}
    chosen = [c for k, c in cells.items() if k in keys]
    lines = [
        "| variant | preset | seeds | success along training (step: rate) | final | dec. "
        "| Q success / failure starts |",
        "|---|---|---|---|---|---|---|",
    ]
    for algo in (*EXPLORATION, "qt"):
        for preset in EXPLORE_PRESETS:
            cs = [c for c in chosen if c["cell"]["algo"] == algo and c["cell"]["preset"] == preset]
            if not cs:
                continue
            by_step: dict[int, list[float]] = {}
            lengths = []
            for c in cs:
                for r in c["rows"]:
                    by_step.setdefault(r["steps"], []).append(r["success_rate"])
                last = _last_row(c)
                if not math.isnan(last["mean_success_length"]):
                    lengths.append(last["mean_success_length"])
            curve = ", ".join(f"{k}: {np.mean(v):.2f}" for k, v in sorted(by_step.items()))
            final = np.mean(by_step[max(by_step)])
            qs = np.nanmean([c.get("q_success_start", np.nan) for c in cs])
            qf = np.nanmean([c.get("q_failure_start", np.nan) for c in cs])
            dec = f"{np.mean(lengths):.1f}" if lengths else "-"
            lines.append(
                f"| {algo} | {preset} | {len(cs)} | {curve} | {final:.2f} | {dec} "
                f"| {qs:.2f} / {qf:.2f} |"
            )
    return (
        "\n".join(lines)
        + "\n\nSeeds "
        + ", ".join(map(str, profile.seeds[:2]))
        + f" of the `{profile.tasks[0]}` presets, {profile.eval_episodes} evaluation episodes "
        "per point. `qt-32-bins-constant-lr` is the base (32 bins, constant learning rate, "
        "alpha 1); each `qt-...` variant below it changes the settings its name gives; `qt` is "
        "the `cpu` profile's Q-Transformer (16 bins, the cosine schedule and alpha 0.5), from "
        "the grid.\n"
    )


def _last_row(record: dict[str, Any]) -> dict[str, Any]:
    """A cell's evaluation at the end of its training."""
    return max(record["rows"], key=lambda r: r["steps"])


def _study_finals(cells: dict[str, dict[str, Any]]) -> list[tuple[dict, dict[str, Any]]]:
    """``(cell, final row)`` of the cells of the data-scale algorithms on the hard presets."""
    return [
        (c["cell"], _last_row(c))
        for c in cells.values()
        if c["cell"]["algo"] in SCALE_ALGOS and c["cell"]["preset"] in EXPLORE_PRESETS and c["rows"]
    ]


def scale_table(cells: dict[str, dict[str, Any]], profile: Profile) -> str:
    """Final success per algorithm, hard preset and data size (mean ± std over seeds), with
    decisions to success; the profile's own size comes from the grid's cells."""
    sizes = (*SCALE_EPISODES, profile.episodes_per_task)
    final: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for cell, last in _study_finals(cells):
        n = cell.get("episodes") or profile.episodes_per_task
        if n not in sizes:
            continue
        final.setdefault((cell["algo"], cell["preset"], n), []).append(
            (last["success_rate"], last["mean_success_length"])
        )
    head = "| algo | preset | " + " | ".join(f"{n} episodes" for n in sizes) + " |"
    lines = [head, "|---|---|" + "---|" * len(sizes)]
    for preset in EXPLORE_PRESETS:
        for algo in SCALE_ALGOS:
            txt = []
            for n in sizes:
                got = final.get((algo, preset, n), [])
                if not got:
                    txt.append("-")
                    continue
                rates = [r for r, _ in got]
                dec = [d for _, d in got if not math.isnan(d)]
                d = f", {np.mean(dec):.0f} dec." if dec else ""
                txt.append(f"{np.mean(rates):.2f} ± {np.std(rates):.2f} (n={len(rates)}{d})")
            lines.append(f"| {algo} | {preset} | " + " | ".join(txt) + " |")
    return (
        "\n".join(lines)
        + f"\n\nSuccess at the end of training, mean ± std over seeds, on `{profile.tasks[0]}`"
        f" with {', '.join(map(str, sizes))} episodes per task; the same training steps at every"
        f" size; {profile.eval_episodes} evaluation episodes per cell.\n"
    )


TIME_LIMITS = (12, 15, 20)
"""Decisions allowed in the time-limit table, besides the profile's own limit."""


def time_limit_table(cells: dict[str, dict[str, Any]], profile: Profile) -> str:
    """Success under shorter time limits, from the decisions each successful evaluation
    episode took at the end of training (exact: the policies do not see the time). Covers the
    grid cells of the data-scale algorithms on the hard presets that recorded those lengths;
    empty when none did."""
    full = math.ceil(profile.max_steps / profile.action_repeat)
    limits = (*TIME_LIMITS, full)
    rates: dict[tuple[str, str], list[list[float]]] = {}
    for cell, last in _study_finals(cells):
        if "success_lengths" not in last:
            continue
        n = np.asarray(last["success_lengths"])
        rates.setdefault((cell["algo"], cell["preset"]), []).append(
            [float((n <= t).sum()) / last["episodes"] for t in limits]
        )
    if not rates:
        return ""
    lines = [
        "| algo | preset | seeds | " + " | ".join(f"≤ {t} decisions" for t in limits) + " |",
        "|---|---|---|" + "---|" * len(limits),
    ]
    for preset in EXPLORE_PRESETS:
        for algo in SCALE_ALGOS:
            got = rates.get((algo, preset))
            if got:
                mean = np.mean(got, axis=0)
                lines.append(
                    f"| {algo} | {preset} | {len(got)} | "
                    + " | ".join(f"{m:.2f}" for m in mean)
                    + " |"
                )
    return (
        "\n".join(lines)
        + f"\n\nSuccess within a time limit of T decisions ({profile.action_repeat} env steps "
        f"each; the evaluation ran with {full}), at the end of training, mean over seeds.\n"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _final_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        k = (r["algo"], r["dataset"], r["task"], r["seed"])
        if k not in last or r["steps"] > last[k]["steps"]:
            last[k] = r
    return list(last.values())


def _cell_stats(
    final: list[dict[str, Any]], algo: str, preset: str
) -> tuple[float, float, int, float]:
    per_seed: dict[int, list[dict[str, Any]]] = {}
    for r in final:
        if r["algo"] == algo and r["dataset"] == preset:
            per_seed.setdefault(r["seed"], []).append(r)
    if not per_seed:
        return math.nan, math.nan, 0, math.nan
    means = [np.mean([r["success_rate"] for r in rs]) for rs in per_seed.values()]
    lengths = [
        r["mean_success_length"]
        for rs in per_seed.values()
        for r in rs
        if not math.isnan(r["mean_success_length"])
    ]
    return (
        float(np.mean(means)),
        float(np.std(means)),
        len(means),
        float(np.mean(lengths)) if lengths else math.nan,
    )


def _table(final: list[dict[str, Any]], algos: list[str], cells: dict, profile: str) -> str:
    presets = sorted(
        {r["dataset"] for r in final}, key=lambda p: (p not in _ORDER, _ORDER.get(p, 9))
    )
    head = "| algo | " + " | ".join(presets) + " | mean |\n|---|" + "---|" * (len(presets) + 1)
    body = []
    for a in algos:
        stats = [_cell_stats(final, a, p) for p in presets]
        cells_txt = [
            f"{m:.2f} ± {sd:.2f} (n={n}, {L:.0f} dec.)" if n else "-" for m, sd, n, L in stats
        ]
        means = [m for m, _, n, _ in stats if n]
        overall = f"{np.mean(means):.2f}" if len(means) == len(presets) else "incomplete"
        body.append(f"| {a} | " + " | ".join(cells_txt) + f" | {overall} |")
    note = (
        f"\nSuccess rate at the end of training, mean ± std over seeds (n seeds), profile "
        f"`{profile}`; 'dec.' = mean decisions to success. Rows of metaworld.csv hold every "
        "evaluation point.\n"
    )
    return head + "\n" + "\n".join(body) + "\n" + note


_ORDER = {"demos": 0, "mixed": 1, "noisy": 2, "suboptimal": 3}


def _ablation_table(final: list[dict[str, Any]], algos: list[str], cells: dict) -> str:
    lines = [
        "| variant | noisy success | Q at success starts | Q at failure starts |",
        "|---|---|---|---|",
    ]
    for a in algos:
        m, sd, n, _ = _cell_stats(final, a, "noisy")
        qs = [
            c for c in cells.values() if c["cell"]["algo"] == a and c["cell"]["preset"] == "noisy"
        ]
        qsucc = np.nanmean([c.get("q_success_start", np.nan) for c in qs]) if qs else math.nan
        qfail = np.nanmean([c.get("q_failure_start", np.nan) for c in qs]) if qs else math.nan
        lines.append(f"| {a} | {m:.2f} ± {sd:.2f} (n={n}) | {qsucc:.2f} | {qfail:.2f} |")
    return "\n".join(lines) + "\n"


def _plots(
    rows: list[dict[str, Any]], final: list[dict[str, Any]], algos: list[str], out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = sorted({r["dataset"] for r in rows}, key=lambda p: _ORDER.get(p, 9))
    fig, axes = plt.subplots(1, len(presets), figsize=(3.2 * len(presets), 3), squeeze=False)
    for ax, preset in zip(axes[0], presets, strict=True):
        for a in algos:
            pts: dict[int, list[float]] = {}
            for r in rows:
                if r["algo"] == a and r["dataset"] == preset:
                    pts.setdefault(r["steps"], []).append(r["success_rate"])
            if pts:
                xs = sorted(pts)
                ax.plot(xs, [np.mean(pts[x]) for x in xs], "o-", ms=3, label=a)
        ax.set(title=preset, xlabel="gradient steps", ylim=(-0.02, 1.02))
    axes[0][0].set_ylabel("success rate")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "metaworld_curves.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(1, len(algos))
    for i, a in enumerate(algos):
        stats = [_cell_stats(final, a, p) for p in presets]
        ax.bar(
            np.arange(len(presets)) + i * width,
            [m for m, *_ in stats],
            width,
            yerr=[sd for _, sd, *_ in stats],
            label=a,
        )
    ax.set_xticks(np.arange(len(presets)) + 0.4 - width / 2, presets)
    ax.set(ylabel="success rate", ylim=(0, 1.05), title="final success per regime")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(out / "metaworld_bars.png", dpi=110)
    plt.close(fig)


def main(args: BenchArgs) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run_grid(args)
    summarize(args.work, args.out, args.profile, args.algos, args.ablations)
