"""Online fine-tuning from an offline start: success against decisions taken.

.venv/bin/python benchmarks/finetune.py [--tasks push-v3] [--presets noisy] [--seeds 0]

Per task, preset and seed: collect the preset's data (25 episodes, action repeat 4, the grid's
200-step limit), train Q-Transformer offline with the `cpu` profile's settings, then fine-tune
it online with the default :class:`qtransformer.finetune.FinetuneConfig`. Each run is saved in
the work folder and skipped when it is there (resumable). Writes benchmarks/results/
finetune.jsonl (one record per run), finetune.md and finetune.png.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import tyro

import qtransformer as qt
from qtransformer import collection as mw
from qtransformer.atomic import write_text_atomically
from qtransformer.bench.studies import PROFILES
from qtransformer.envs import metaworld as menv
from qtransformer.finetune import FinetuneConfig, finetune
from qtransformer.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    tasks: list[str] = field(default_factory=lambda: ["push-v3"])
    presets: list[str] = field(default_factory=lambda: ["noisy"])
    seeds: list[int] = field(default_factory=lambda: [0])
    episodes: int = 25
    """Offline episodes per task (a size where offline training leaves room)."""
    config: FinetuneConfig = field(default_factory=FinetuneConfig)
    variant: str = "qt"
    """Name of these fine-tuning settings in the results (qt: the defaults)."""
    from_scratch: bool = False
    """Start from an untrained network (one gradient step) instead of the offline agent:
    online learning from scratch with the same budget (give --config.online-ratio 1)."""
    work: Path = ROOT / "runs" / "finetune"
    out: Path = ROOT / "benchmarks" / "results"
    threads: int = 1


DEFAULT_EPISODES = 25


def size_suffix(episodes: int) -> str:
    """``-N-episodes`` for a data size other than the default, nothing for the default."""
    return "" if episodes == DEFAULT_EPISODES else f"-{episodes}-episodes"


def variant_label(variant: str, episodes: int) -> str:
    """A run's name in the results and its folder: its settings' name, with the offline data's
    size when that is not the default (``qt-10-episodes``), so that runs on other sizes never
    resume or replace the default size's runs."""
    return variant + size_suffix(episodes)


def offline_folder(work: Path, task: str, preset: str, seed: int, episodes: int) -> Path:
    """Where the offline agent of one task, preset, seed and data size is trained (shared by
    every variant on that data)."""
    return work / f"{task}-{preset}-seed{seed}{size_suffix(episodes)}" / "offline"


def run_folder(work: Path, task: str, preset: str, seed: int, variant: str) -> Path:
    """Where a run named ``variant`` (its :func:`variant_label`; ``qt``: the defaults at the
    default size) keeps its online phase and record."""
    folder = work / f"{task}-{preset}-seed{seed}"
    return folder if variant == "qt" else folder.with_name(f"{folder.name}-{variant}")


def record_head(script: str, variant: str, task: str, preset: str, seed: int) -> dict:
    """The fields that name a run's record: its command (as run now) and its run."""
    command = " ".join([script, *sys.argv[1:]])
    return {"command": command, "variant": variant, "task": task, "preset": preset, "seed": seed}


def run_one(task: str, preset: str, seed: int, args: Args) -> dict:
    label = variant_label(args.variant, args.episodes)
    folder = run_folder(args.work, task, preset, seed, label)
    done = folder / "record.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    recipe = mw.preset_recipe(preset, [task], args.episodes, 200, 4)
    low, high = menv.action_bounds()
    data = qt.OfflineDataset.from_episodes(
        mw.collect(recipe, seed=seed, workers=1, progress=False), low, high,
        {"source": "metaworld", "preset": preset, "max_steps": 200, "action_repeat": 4},
    )  # fmt: skip
    offline = replace(PROFILES["cpu"].qt, seed=seed)
    start = offline_folder(args.work, task, preset, seed, args.episodes)
    if args.from_scratch:
        start = folder / "untrained"
        offline = replace(offline, steps=1)
    if not (start / "agent").exists():  # variants start from the defaults' offline agent
        qt.train(data, offline, out_dir=start)
    offline_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    cfg = replace(args.config, seed=seed)
    _, history = finetune(start / "agent", data, task, cfg, out_dir=folder / "online", resume=True)
    record = {
        **record_head("benchmarks/finetune.py", label, task, preset, seed),
        "episodes": args.episodes,
        "offline_success": history[0]["success"],
        "final_success": history[-1]["success"],
        "min_success": min(h["success"] for h in history),
        "history": history,
        "config": asdict(cfg),
        "offline_seconds": offline_seconds,
        "finetune_seconds": time.perf_counter() - t1,
    }
    write_text_atomically(done, json.dumps(record, indent=1))
    return record


def chance_dips(runs: list[dict], draws: int = 20000) -> tuple[float, float]:
    """Expected mean and largest dip over ``runs`` if nothing changed.

    Each run's true success is taken to be its offline start; its start and each later
    evaluation are independent binomial draws of that many episodes. Returns the expected mean
    over runs and the expected minimum over runs of (lowest later evaluation - start).
    Seeded, so the tables regenerate identically.
    """
    rng = np.random.default_rng(0)
    lowest = []
    for r in runs:
        n = int(r["config"]["eval_episodes"])
        later = len(r["history"]) - 1
        p = float(r["offline_success"])
        start = rng.binomial(n, p, draws) / n
        evals = rng.binomial(n, p, (draws, max(later, 1))) / n
        lowest.append(evals.min(axis=1) - start)
    dips = np.stack(lowest, axis=1)  # (draws, runs)
    return float(dips.mean()), float(dips.min(axis=1).mean())


def markdown(records: list[dict], args: Args) -> str:
    m = machine_info()
    lines = [
        "# Online fine-tuning (Q-Transformer)",
        "",
        f"{m['cpu_model']}, torch {m['torch']}, one core per run. Offline: the `cpu` profile's "
        f"Q-Transformer on {DEFAULT_EPISODES} episodes (a variant named `...-N-episodes`: on N) "
        "(action repeat 4, 200-step limit); `scratch` starts from an untrained network "
        "instead. Per variant, its command and online settings:",
        "",
    ]
    seen: dict[str, dict] = {}
    for r in records:
        seen.setdefault(r.get("variant", "qt"), r)
    for variant, r in seen.items():
        c = r["config"]
        lines.append(
            f"- `{variant}`: `{r.get('command', '?')}`: {c['steps']} decisions in "
            f"{c['num_envs']} environments, {c['updates_per_decision']} gradient steps per "
            f"decision, online share of batches {c['online_ratio']}, temperature "
            f"{c['temperature']} -> {c['temperature_end']}"
            + (f", a random bin with probability {c['epsilon']}" if c.get("epsilon") else "")
            + ", evaluation (no exploration) of "
            f"{c['eval_episodes']} episodes every {c['eval_every']} decisions."
        )
    lines += [
        "",
        "| variant | task | preset | seed | offline start | lowest | end | change "
        "| minutes (offline + online) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r.get('variant', 'qt')} | {r['task']} | {r['preset']} | {r['seed']} | "
            f"{r['offline_success']:.2f} | "
            f"{r['min_success']:.2f} | {r['final_success']:.2f} | "
            f"{r['final_success'] - r['offline_success']:+.2f} | "
            f"{r['offline_seconds'] / 60:.1f} + {r['finetune_seconds'] / 60:.1f} |"
        )
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r.get("variant", "qt"), r["task"], r["preset"]), []).append(r)
    lines += [
        "",
        "Mean over seeds; 'largest dip' is the lowest evaluation of any seed below its own "
        "offline start (negative: a dip), 'mean dip' the same averaged over the seeds; 'by "
        "chance' is what both would be if fine-tuning changed nothing and every evaluation were "
        "an independent draw of its episodes from a policy exactly as good as the start "
        "(:func:`chance_dips`): an evaluation of 50 episodes has a standard error of up to 0.07, "
        "so a few evaluations per run dip below the start by chance alone.",
        "",
        "| variant | task | preset | seeds | offline start | end | change | mean dip "
        "| largest dip | by chance (mean / largest) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (variant, task, preset), rs in groups.items():
        start = float(np.mean([r["offline_success"] for r in rs]))
        end = float(np.mean([r["final_success"] for r in rs]))
        dips = [r["min_success"] - r["offline_success"] for r in rs]
        chance_mean, chance_largest = chance_dips(rs)
        lines.append(
            f"| {variant} | {task} | {preset} | {len(rs)} | {start:.2f} | {end:.2f} | "
            f"{end - start:+.2f} | {np.mean(dips):+.2f} | {min(dips):+.2f} | "
            f"{chance_mean:+.2f} / {chance_largest:+.2f} |"
        )
    lines += ["", "Success along fine-tuning (decisions: success):", ""]
    for r in records:
        pts = ", ".join(f"{h['decisions']:.0f}: {h['success']:.2f}" for h in r["history"])
        lines.append(
            f"- {r.get('variant', 'qt')} {r['task']} {r['preset']} seed {r['seed']}: {pts}"
        )
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    """One panel per task and preset; per variant its mean over seeds (thick; seeds thin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["task"], r["preset"]) for r in records})
    variants = sorted({r.get("variant", "qt") for r in records}, key=lambda v: (v != "qt", v))
    color = {v: f"C{k}" for k, v in enumerate(variants)}
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows + 0.5), squeeze=False)
    for ax, (task, preset) in zip(axes.flat, panels, strict=False):
        for v in variants:
            rs = [r for r in records if (r["task"], r["preset"], r.get("variant", "qt")) ==
                  (task, preset, v)]  # fmt: skip
            if not rs:
                continue
            n = min(len(r["history"]) for r in rs)
            for r in rs:
                h = r["history"][:n]
                ax.plot([p["decisions"] for p in h], [p["success"] for p in h],
                        color=color[v], alpha=0.25, lw=0.8)  # fmt: skip
            xs = np.mean([[p["decisions"] for p in r["history"][:n]] for r in rs], axis=0)
            ys = np.mean([[p["success"] for p in r["history"][:n]] for r in rs], axis=0)
            ax.plot(xs, ys, color=color[v], marker="o", lw=2, ms=3)
        ax.set_title(f"{task} {preset}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlabel("decisions taken online", fontsize=8)
        ax.set_ylabel("success (50 episodes)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=color[v], lw=2, marker="o", ms=3) for v in variants]
    fig.legend(handles, variants, loc="lower center", ncol=min(4, len(variants)), fontsize=7)
    fig.tight_layout(rect=(0, 0.5 / (3.0 * rows + 0.5), 1, 1))
    fig.savefig(path, dpi=120)


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    records = [run_one(t, p, s, args) for t in args.tasks for p in args.presets for s in args.seeds]
    args.out.mkdir(parents=True, exist_ok=True)
    existing = {}
    jsonl = args.out / "finetune.jsonl"
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            existing[(r.get("variant", "qt"), r["task"], r["preset"], r["seed"])] = r
    for r in records:
        existing[(r.get("variant", "qt"), r["task"], r["preset"], r["seed"])] = r
    merged = sorted(
        existing.values(), key=lambda r: (r["task"], r["preset"], r.get("variant", "qt"), r["seed"])
    )
    write_text_atomically(jsonl, "".join(json.dumps(r) + "\n" for r in merged))
    write_text_atomically(args.out / "finetune.md", markdown(merged, args))
    plot(merged, args.out / "finetune.png")
    print(markdown(merged, args))
    print("mean change", np.mean([r["final_success"] - r["offline_success"] for r in merged]))


if __name__ == "__main__":
    main(tyro.cli(Args))
