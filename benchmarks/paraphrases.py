"""Held-out wordings of the instructions, several per task: the pretrained study's agents of
one seed (its configs and data; an agent saved by ``qtransformer bench --study pretrained`` in
``--work`` is reused, a missing one is trained and saved there), evaluated with their training
instructions and with each set of new wordings below (none seen in training, none the study's
own paraphrase), on the same evaluation episodes.

.venv/bin/python benchmarks/paraphrases.py [--seed 2] [--presets noisy] [--episodes 25]

Appends one record per (agent, preset, seed, wording set) to
benchmarks/results/paraphrases.jsonl (skipping those already there), then writes
benchmarks/results/paraphrases.md: success with each wording set and what fraction of the
original success it keeps.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import tyro

from qtransformer.agent import Agent, load_agent
from qtransformer.bench.jsonl import append_jsonl, read_jsonl
from qtransformer.bench.runner_pixels import (
    agent_config,
    dataset,
    evaluate_agent,
    successes_only,
    trains_on_successes,
)
from qtransformer.bench.studies import STUDIES, PixelStudy
from qtransformer.machine import machine_info
from qtransformer.policy import AgentPolicy
from qtransformer.trainer import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

WORDINGS: dict[str, dict[str, str]] = {
    "original": {},
    "casual": {
        "drawer-open-v3": "open up that drawer",
        "drawer-close-v3": "shut the drawer",
        "button-press-topdown-v3": "hit the button from the top",
        "door-open-v3": "get the door open",
    },
    "formal": {
        "drawer-open-v3": "please extend the drawer outward",
        "drawer-close-v3": "please slide the drawer back in until it is closed",
        "button-press-topdown-v3": "please depress the button vertically",
        "door-open-v3": "please swing the door so that it opens",
    },
    "terse": {
        "drawer-open-v3": "drawer: open",
        "drawer-close-v3": "drawer: close",
        "button-press-topdown-v3": "button: press from above",
        "door-open-v3": "door: open",
    },
}
"""``original``: the training instructions. The others are new wordings of each task, one set
per register, written for this benchmark and never used in training."""

AGENTS = ("qt-lite0", "qt-lite0-instruction-noise", "bc-success-lite0")


@dataclass
class Args:
    seed: int = 2
    """The study's seed whose saved agents are evaluated."""
    episodes: int = 25
    """Evaluation episodes per task and wording set."""
    presets: str = "noisy"
    agents: str = ",".join(AGENTS)
    work: Path = Path("runs/bench/pretrained")
    threads: int = 2


def summarize(records: list[dict]) -> str:
    """Per agent and preset: mean success with each wording set, and the mean over the new
    sets as a fraction of the original."""
    names = [w for w in WORDINGS if w != "original"]
    lines = [
        "| agent | preset | seed | original | " + " | ".join(names) + " | new / original |",
        "|---|---|---|---|" + "---|" * len(names) + "---|",
    ]
    keyed = {(r["agent"], r["preset"], r["seed"], r["wording"]): r["mean"] for r in records}
    rows = sorted({(r["agent"], r["preset"], r["seed"]) for r in records})
    ratios: dict[str, list[float]] = {}
    for agent, preset, seed in rows:
        orig = keyed.get((agent, preset, seed, "original"))
        new = [keyed.get((agent, preset, seed, w)) for w in names]
        cells = ["" if v is None else f"{v:.2f}" for v in new]
        done = [v for v in new if v is not None]
        ratio = ""
        if orig and done:
            ratio = f"{np.mean(done) / orig:.2f}"
            ratios.setdefault(agent, []).append(float(np.mean(done) / orig))
        head = f"| {agent} | {preset} | {seed} | " + ("" if orig is None else f"{orig:.2f}")
        lines.append(head + " | " + " | ".join(cells) + f" | {ratio} |")
    lines.append("")
    lines.append("Kept with new wordings, mean over presets:")
    lines.append("")
    for agent, values in ratios.items():
        lines.append(f"- {agent}: {np.mean(values):.2f} ({len(values)} presets)")
    return "\n".join(lines) + "\n"


def train_agent(study: PixelStudy, name: str, preset: str, seed: int, work: Path) -> Agent:
    """Train the study's agent ``name`` on its (collected once) data of ``preset`` and
    ``seed``, as the study does, without its evaluations along the way."""
    data = dataset(study, work, preset, seed)
    if trains_on_successes(study, name):
        data = successes_only(data)
    print(f"training {name} on {preset}, seed {seed}", flush=True)
    return train(data, agent_config(study, name, seed))


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    study = STUDIES["pretrained"]
    assert isinstance(study, PixelStudy)
    study = replace(study, eval_episodes=args.episodes)
    out = RESULTS / "paraphrases.jsonl"
    records = read_jsonl(out)
    have = {(r["agent"], r["preset"], r["seed"], r["wording"]) for r in records}
    for preset in args.presets.split(","):
        for name in args.agents.split(","):
            if all((name, preset, args.seed, w) in have for w in WORDINGS):
                continue
            folder = args.work / f"{name}-{preset}-seed{args.seed}-agent"
            if not folder.exists():
                train_agent(study, name, preset, args.seed, args.work).save(folder)
            policy = AgentPolicy(load_agent(folder))
            for wording, instructions in WORDINGS.items():
                if (name, preset, args.seed, wording) in have:
                    continue
                t0 = time.perf_counter()
                res = evaluate_agent(policy, study, args.seed, instructions or None)
                rates = {t: r["success_rate"] for t, r in res.items()}
                record = {
                    "agent": name,
                    "preset": preset,
                    "seed": args.seed,
                    "wording": wording,
                    "instructions": instructions,
                    "eval_episodes_per_task": args.episodes,
                    "rates": rates,
                    "mean": float(np.mean(list(rates.values()))),
                    "eval_seconds": time.perf_counter() - t0,
                    "command": "python benchmarks/paraphrases.py " + " ".join(sys.argv[1:]),
                    "machine": machine_info(),
                }
                print(json.dumps({k: record[k] for k in ("agent", "preset", "wording", "mean")}))
                append_jsonl(out, record)
                records.append(record)
    (RESULTS / "paraphrases.md").write_text(summarize(records))


if __name__ == "__main__":
    main(tyro.cli(Args))
