"""How much data the pixel agents need: BC on the successful episodes and Q-Transformer, both
reading 64 px frames through the pretrained trunk (the pretrained study's configs), trained
on the first k episodes of each task of one ``noisy`` dataset, for growing k.

.venv/bin/python benchmarks/data_curve.py [--per-task 12,25,50,100] [--seed 3]

The dataset (the largest k per task) is collected once under ``--work``. Appends one record
per (agent, k) to benchmarks/results/data_curve.jsonl (skipping those already there), then
writes benchmarks/results/data_curve.md.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import tyro

from qtransformer.bench.jsonl import append_jsonl, read_jsonl
from qtransformer.bench.runner_pixels import (
    agent_config,
    dataset,
    evaluate_agent,
    successes_only,
    trains_on_successes,
)
from qtransformer.bench.studies import STUDIES, PixelStudy
from qtransformer.data.dataset import OfflineDataset
from qtransformer.machine import machine_info
from qtransformer.policy import AgentPolicy
from qtransformer.trainer import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass
class Args:
    per_task: str = "12,25,50,100"
    """Episodes per task to train on (the first ones of each task)."""
    agents: str = "bc-success-lite0,qt-lite0"
    preset: str = "noisy"
    seed: int = 3
    """Seed of the collection and of training; 3 is not one of the study's seeds."""
    episodes: int = 25
    """Evaluation episodes per task."""
    work: Path = Path("runs/bench/data-curve")
    threads: int = 2


def first_per_task(data: OfflineDataset, k: int) -> OfflineDataset:
    """The first ``k`` episodes of every task of ``data``, with its instruction embeddings."""
    seen: Counter[str] = Counter()
    keep = []
    for episode in data.to_episodes():
        if seen[episode.task] < k:
            keep.append(episode)
        seen[episode.task] += 1
    out = OfflineDataset.from_episodes(
        keep, data.action_low, data.action_high, metadata=data.metadata
    )
    out.set_instruction_embeddings(
        np.asarray(data.instruction_embeddings), data.instruction_embedding_model
    )
    return out


def summarize(records: list[dict]) -> str:
    sizes = sorted({r["per_task"] for r in records})
    agents = list(dict.fromkeys(r["agent"] for r in records))
    keyed = {(r["agent"], r["per_task"]): r for r in records}
    lines = [
        "Mean success over the 4 tasks against episodes per task in the training data "
        "(successful episodes used by BC in brackets).",
        "",
        "| agent | " + " | ".join(str(k) for k in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for agent in agents:
        cells = []
        for k in sizes:
            r = keyed.get((agent, k))
            if r is None:
                cells.append("")
            elif r["successes_only"]:
                cells.append(f"{r['mean']:.2f} [{r['train_episodes']}]")
            else:
                cells.append(f"{r['mean']:.2f}")
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    sizes = sorted(int(k) for k in args.per_task.split(","))
    base = STUDIES["pretrained"]
    assert isinstance(base, PixelStudy)
    study = replace(base, episodes_per_task=sizes[-1], eval_episodes=args.episodes)
    out = RESULTS / "data_curve.jsonl"
    records = read_jsonl(out)
    have = {(r["agent"], r["per_task"], r["preset"], r["seed"]) for r in records}
    full = None  # collected (or opened) only when a point is missing
    for k in sizes:
        for name in args.agents.split(","):
            if (name, k, args.preset, args.seed) in have:
                continue
            if full is None:
                full = dataset(study, args.work, args.preset, args.seed)
            data = first_per_task(full, k)
            if trains_on_successes(study, name):
                data = successes_only(data)
            cfg = agent_config(study, name, args.seed)
            t0 = time.perf_counter()
            agent = train(data, cfg)
            t1 = time.perf_counter()
            res = evaluate_agent(AgentPolicy(agent), study, args.seed)
            rates = {t: r["success_rate"] for t, r in res.items()}
            record = {
                "agent": name,
                "per_task": k,
                "preset": args.preset,
                "seed": args.seed,
                "successes_only": trains_on_successes(study, name),
                "train_episodes": data.num_episodes,
                "train_steps_in_data": len(data),
                "eval_episodes_per_task": args.episodes,
                "rates": rates,
                "mean": float(np.mean(list(rates.values()))),
                "config": asdict(cfg),
                "train_seconds": t1 - t0,
                "eval_seconds": time.perf_counter() - t1,
                "command": "python benchmarks/data_curve.py " + " ".join(sys.argv[1:]),
                "machine": machine_info(),
            }
            print(json.dumps({k2: record[k2] for k2 in ("agent", "per_task", "mean")}), flush=True)
            append_jsonl(out, record)
            records.append(record)
    (RESULTS / "data_curve.md").write_text(summarize(records))


if __name__ == "__main__":
    main(tyro.cli(Args))
