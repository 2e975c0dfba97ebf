"""Online fine-tuning of the d3rlpy baselines IQL and Cal-QL: success against decisions taken,
under the protocol of benchmarks/finetune.py (Q-Transformer), for a direct comparison.

.venv/bin/python benchmarks/finetune_baselines.py [--algos iql cal-ql] [--tasks push-v3]
    [--presets noisy] [--seeds 0]

Per task, preset and seed: collect the preset's data as benchmarks/finetune.py does (25
episodes, action repeat 4, the grid's 200-step limit, the same collection seed, so the same
episodes), train each baseline offline for the `cpu` profile's baseline step count, then
fine-tune it online with :class:`qtransformer.baselines.online.OnlineConfig` (Q-Transformer's
fine-tuning defaults; evaluations of 50 episodes, as its published runs). Runs go in the
order task, preset, seed, algorithm, each saved in the work folder and skipped when it is
there (resumable); after every run benchmarks/results/finetune_baselines.jsonl (one record
per run) and finetune_baselines.md are rewritten, so a long sweep reports as it goes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

import qtransformer as qt
from qtransformer import collection as mw
from qtransformer.atomic import write_text_atomically
from qtransformer.baselines.online import (
    ONLINE_ALGOS,
    OnlineConfig,
    finetune_baseline,
    train_offline,
)
from qtransformer.bench.studies import PROFILES
from qtransformer.envs import metaworld as menv
from qtransformer.machine import machine_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune import DEFAULT_EPISODES, variant_label  # noqa: E402  (one naming for both)

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("finetune_baselines")


@dataclass
class Args:
    algos: list[str] = field(default_factory=lambda: list(ONLINE_ALGOS))
    tasks: list[str] = field(default_factory=lambda: ["push-v3"])
    presets: list[str] = field(default_factory=lambda: ["noisy"])
    seeds: list[int] = field(default_factory=lambda: [0])
    episodes: int = 25
    """Offline episodes per task (as benchmarks/finetune.py)."""
    offline_steps: int = PROFILES["cpu"].steps["iql"]
    """Offline gradient steps of every baseline (the `cpu` profile's IQL count)."""
    config: OnlineConfig = field(default_factory=lambda: OnlineConfig(eval_episodes=50))
    work: Path = ROOT / "runs" / "finetune_baselines"
    out: Path = ROOT / "benchmarks" / "results"
    qt_results: Path = ROOT / "benchmarks" / "results" / "finetune.jsonl"
    """Q-Transformer's fine-tuning records, shown beside the baselines where they exist."""
    label: str = ""
    """Name of non-default online settings: results and run folders are named
    ``ALGO-LABEL`` (e.g. ``iql-utd-0.25``) instead of ``ALGO``."""
    threads: int = 1


def collect_data(task: str, preset: str, seed: int, episodes: int) -> qt.OfflineDataset:
    """The offline data exactly as benchmarks/finetune.py builds it."""
    recipe = mw.preset_recipe(preset, [task], episodes, 200, 4)
    low, high = menv.action_bounds()
    return qt.OfflineDataset.from_episodes(
        mw.collect(recipe, seed=seed, workers=1, progress=False), low, high,
        {"source": "metaworld", "preset": preset, "max_steps": 200, "action_repeat": 4},
    )  # fmt: skip


def variant_name(args: Args, algo: str) -> str:
    """A run's name in the results and its folder: ``ALGO[-LABEL]``, with the offline data's
    size when it is not the default (``iql-10-episodes``), as benchmarks/finetune.py names
    Q-Transformer's runs."""
    return variant_label(f"{algo}-{args.label}" if args.label else algo, args.episodes)


def run_folder(args: Args, algo: str, task: str, preset: str, seed: int) -> Path:
    return args.work / f"{variant_name(args, algo)}-{task}-{preset}-seed{seed}"


def run_one(
    algo: str,
    task: str,
    preset: str,
    seed: int,
    args: Args,
    data: qt.OfflineDataset,
    collect_seconds: float,
) -> dict[str, Any]:
    folder = run_folder(args, algo, task, preset, seed)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    policy = train_offline(algo, data, args.offline_steps, seed=seed)
    offline = policy.record()
    offline_seconds = collect_seconds + time.perf_counter() - t0
    t1 = time.perf_counter()
    cfg = OnlineConfig(**{**asdict(args.config), "seed": seed})
    partial: list[dict[str, float]] = []

    def progress(row: dict[str, float]) -> None:
        partial.append(row)
        write_text_atomically(folder / "history.partial.json", json.dumps(partial, indent=1))
        log.info("%s %s %s seed %d: %s", algo, task, preset, seed, row)

    history = finetune_baseline(policy, data, task, cfg, on_evaluation=progress)
    record = {
        "command": " ".join(["benchmarks/finetune_baselines.py", *sys.argv[1:]]),
        "variant": variant_name(args, algo),
        "task": task,
        "preset": preset,
        "seed": seed,
        "episodes": args.episodes,
        "offline_success": history[0]["success"],
        "final_success": history[-1]["success"],
        "min_success": min(h["success"] for h in history),
        "history": history,
        "config": asdict(cfg),
        "offline": offline,
        "offline_seconds": offline_seconds,
        "finetune_seconds": time.perf_counter() - t1,
        "machine": machine_info(),
    }
    write_text_atomically(folder / "record.json", json.dumps(record, indent=1))
    (folder / "history.partial.json").unlink(missing_ok=True)
    return record


def _key(r: dict[str, Any]) -> tuple[str, str, str, int]:
    return (r["variant"], r["task"], r["preset"], r["seed"])


def markdown(records: list[dict[str, Any]], qt_records: list[dict[str, Any]]) -> str:
    m = records[0].get("machine", {}) if records else machine_info()
    lines = [
        "# Online fine-tuning (d3rlpy IQL and Cal-QL)",
        "",
        f"{m.get('cpu_model', '?')}, torch {m.get('torch', '?')}, one core per run. The "
        "protocol of Q-Transformer's fine-tuning (finetune.md): the same offline data (per "
        "task, preset and seed), environments, waves, online share of batches and evaluation "
        "episodes; gradient steps per decision as each variant's line gives them (`iql` and "
        "`cal-ql` one, Q-Transformer's earlier default; `iql-utd-0.25` a quarter, its current "
        "one; the baselines keep their own learning rates). Offline: d3rlpy 2.8.1 IQL and Cal-QL "
        "(CQL's settings with the calibrated penalty), exploring online with their own "
        "stochastic policy, evaluated greedily. Per variant, its command and settings:",
        "",
    ]
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        seen.setdefault(r["variant"], r)
    for variant, r in seen.items():
        c = r["config"]
        lines.append(
            f"- `{variant}`: `{r.get('command', '?')}`: {r['offline']['steps']} offline "
            f"steps, then {c['steps']} decisions in {c['num_envs']} environments, "
            f"{c['updates_per_decision']} gradient steps per decision, online share of "
            f"batches {c['online_ratio']}, greedy evaluation of {c['eval_episodes']} episodes "
            f"every {c['eval_every']} decisions."
        )
    lines += [
        "",
        "| variant | task | preset | seed | offline start | lowest | end | change "
        "| largest dip | minutes (offline + online) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['variant']} | {r['task']} | {r['preset']} | {r['seed']} | "
            f"{r['offline_success']:.2f} | {r['min_success']:.2f} | {r['final_success']:.2f} | "
            f"{r['final_success'] - r['offline_success']:+.2f} | "
            f"{r['min_success'] - r['offline_success']:+.2f} | "
            f"{r['offline_seconds'] / 60:.1f} + {r['finetune_seconds'] / 60:.1f} |"
        )
    cells = {(r["task"], r["preset"]) for r in records}
    shown = records + [r for r in qt_records if (r["task"], r["preset"]) in cells]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in sorted(shown, key=lambda r: (r["task"], r["preset"], r["variant"], r["seed"])):
        groups.setdefault((r["task"], r["preset"], r["variant"]), []).append(r)
    lines += [
        "",
        "Mean over seeds, Q-Transformer (`qt`, from finetune.jsonl) beside the baselines; "
        "'largest dip' is the lowest evaluation of any seed below its own offline start "
        "(negative: a dip).",
        "",
        "| task | preset | variant | seeds | offline start | lowest | end | change "
        "| largest dip | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, preset, variant), rs in groups.items():
        start = float(np.mean([r["offline_success"] for r in rs]))
        low = float(np.mean([r["min_success"] for r in rs]))
        end = float(np.mean([r["final_success"] for r in rs]))
        dip = min(r["min_success"] - r["offline_success"] for r in rs)
        minutes = float(np.mean([r["offline_seconds"] + r["finetune_seconds"] for r in rs])) / 60
        lines.append(
            f"| {task} | {preset} | {variant} | {len(rs)} | {start:.2f} | {low:.2f} | "
            f"{end:.2f} | {end - start:+.2f} | {dip:+.2f} | {minutes:.1f} |"
        )
    lines += ["", "Success along fine-tuning (decisions: success):", ""]
    for r in records:
        pts = ", ".join(f"{h['decisions']:.0f}: {h['success']:.2f}" for h in r["history"])
        lines.append(f"- {r['variant']} {r['task']} {r['preset']} seed {r['seed']}: {pts}")
    return "\n".join(lines) + "\n"


def write_results(records: list[dict[str, Any]], args: Args) -> list[dict[str, Any]]:
    """Merge ``records`` into the jsonl (a run's newest record wins) and rewrite both files."""
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "finetune_baselines.jsonl"
    existing: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            existing[_key(r)] = r
    for r in records:
        existing[_key(r)] = r
    merged = sorted(
        existing.values(), key=lambda r: (r["task"], r["preset"], r["variant"], r["seed"])
    )
    write_text_atomically(jsonl, "".join(json.dumps(r) + "\n" for r in merged))
    qt_records = []
    if args.qt_results.exists():
        for line in args.qt_results.read_text().splitlines():
            r = json.loads(line)
            episodes = r.get("episodes", DEFAULT_EPISODES)
            if r.get("variant", "qt") == variant_label("qt", episodes):  # the defaults
                qt_records.append(r)
    write_text_atomically(args.out / "finetune_baselines.md", markdown(merged, qt_records))
    return merged


def main(args: Args) -> list[dict[str, Any]]:
    for algo in args.algos:
        if algo not in ONLINE_ALGOS:
            raise ValueError(f"unknown algorithm {algo!r} in --algos; choose from {ONLINE_ALGOS}")
    torch.set_num_threads(args.threads)
    records = []
    for task in args.tasks:
        for preset in args.presets:
            for seed in args.seeds:
                data: qt.OfflineDataset | None = None
                collect_seconds = 0.0
                for algo in args.algos:
                    done = run_folder(args, algo, task, preset, seed) / "record.json"
                    if done.exists():
                        records.append(json.loads(done.read_text()))
                        continue
                    if data is None:  # once per task, preset and seed, for all algorithms
                        t0 = time.perf_counter()
                        data = collect_data(task, preset, seed, args.episodes)
                        collect_seconds = time.perf_counter() - t0
                    records.append(run_one(algo, task, preset, seed, args, data, collect_seconds))
                    write_results(records, args)
    merged = write_results(records, args)
    print((args.out / "finetune_baselines.md").read_text())
    return merged


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main(tyro.cli(Args))
