"""Is what fine-tuning gathered worth more offline data? Retrain on it from scratch.

.venv/bin/python benchmarks/finetune_retrain.py [--tasks push-v3] [--presets noisy] [--seeds 0]

For each finished run of benchmarks/finetune.py (variant `--variant`, in its work folder): a
fresh Q-Transformer trained exactly as that run's offline start was (the `cpu` profile, the
same seed) but on the offline data plus every episode the run gathered online, evaluated on
the run's own evaluation episodes. If it beats the fine-tuned end, the online episodes hold
what fine-tuning failed to learn; if it does not, the episodes themselves add little. The
data-scale study's 50-episode cells (scale.md) show what 25 more offline episodes of the
preset give. Each result is saved beside its run and skipped when there (resumable); writes
benchmarks/results/finetune_retrain.jsonl and finetune_retrain.md.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import tyro

import qtransformer as qt
from qtransformer.atomic import write_text_atomically
from qtransformer.bench.studies import PROFILES
from qtransformer.data.minari_io import read_minari
from qtransformer.finetune import ONLINE_ID, FinetuneConfig, evaluate_finetuning
from qtransformer.machine import machine_info
from qtransformer.policy import AgentPolicy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune import record_head, run_folder  # noqa: E402
from finetune_baselines import collect_data  # noqa: E402  (the same offline episodes)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    tasks: list[str] = field(default_factory=lambda: ["push-v3"])
    presets: list[str] = field(default_factory=lambda: ["noisy", "suboptimal"])
    seeds: list[int] = field(default_factory=lambda: [0])
    variant: str = "qt"
    """The fine-tuning runs whose online episodes are retrained on."""
    work: Path = ROOT / "runs" / "finetune"
    out: Path = ROOT / "benchmarks" / "results"
    threads: int = 1


def run_one(task: str, preset: str, seed: int, args: Args) -> dict | None:
    folder = run_folder(args.work, task, preset, seed, args.variant)
    done = folder / "retrain.json"
    if done.exists():
        return json.loads(done.read_text())
    if not (folder / "record.json").exists():
        print(f"{folder}: no finished fine-tuning run, skipped")
        return None
    run = json.loads((folder / "record.json").read_text())
    t0 = time.perf_counter()
    offline = collect_data(task, preset, seed, run["episodes"])
    online = read_minari(folder / "online" / ONLINE_ID)[0]
    data = qt.OfflineDataset.from_episodes(
        offline.to_episodes() + online, offline.action_low, offline.action_high,
        offline.metadata,
    )  # fmt: skip
    agent = qt.train(data, replace(PROFILES["cpu"].qt, seed=seed))
    cfg = FinetuneConfig(**run["config"])
    result = evaluate_finetuning(AgentPolicy(agent), task, cfg, False, 200, 4)
    record = {
        **record_head("benchmarks/finetune_retrain.py", args.variant, task, preset, seed),
        "offline_episodes": run["episodes"],
        "online_episodes": len(online),
        "online_successes": int(sum(float(ep.rewards.sum()) > 0 for ep in online)),
        "offline_success": run["offline_success"],
        "finetuned_success": run["final_success"],
        "retrained_success": result.success_rate,
        "seconds": time.perf_counter() - t0,
    }
    write_text_atomically(done, json.dumps(record, indent=1))
    return record


def markdown(records: list[dict]) -> str:
    m = machine_info()
    lines = [
        "# Retrained on what fine-tuning gathered",
        "",
        f"{m['cpu_model']}, torch {m['torch']}, one core. Per fine-tuning run "
        "(finetune.md): a fresh Q-Transformer trained as its offline start was (the `cpu` "
        "profile, same seed) on the offline episodes plus all of the run's online episodes, "
        "evaluated on the run's 50 evaluation episodes. Command: "
        f"`{records[0]['command'] if records else '?'}`.",
        "",
        "| variant | task | preset | seed | episodes (offline + online, online successes) "
        "| offline start | fine-tuned end | retrained on both |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['variant']} | {r['task']} | {r['preset']} | {r['seed']} | "
            f"{r['offline_episodes']} + {r['online_episodes']} ({r['online_successes']}) | "
            f"{r['offline_success']:.2f} | {r['finetuned_success']:.2f} | "
            f"{r['retrained_success']:.2f} |"
        )
    if records:
        gain = np.mean([r["retrained_success"] - r["offline_success"] for r in records])
        lines += ["", f"Mean change of the retrained agent over the offline start: {gain:+.2f}."]
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    found = [run_one(t, p, s, args) for t in args.tasks for p in args.presets for s in args.seeds]
    records = [r for r in found if r is not None]
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "finetune_retrain.jsonl"
    existing = {}
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            existing[(r["variant"], r["task"], r["preset"], r["seed"])] = r
    for r in records:
        existing[(r["variant"], r["task"], r["preset"], r["seed"])] = r
    merged = sorted(
        existing.values(), key=lambda r: (r["task"], r["preset"], r["variant"], r["seed"])
    )
    write_text_atomically(jsonl, "".join(json.dumps(r) + "\n" for r in merged))
    write_text_atomically(args.out / "finetune_retrain.md", markdown(merged))
    print(markdown(merged))


if __name__ == "__main__":
    main(tyro.cli(Args))
