"""Grid stitching benchmark: does Q-Transformer beat the demonstrations it learns from?

Runs the ``make demo`` recipe (30 episodes: slow successful demonstrations plus failed
attempts whose pieces form a faster route) over several seeds and writes
``benchmarks/results/gridworld.json`` and ``gridworld.png``.

    .venv/bin/python benchmarks/gridworld.py --seeds 0 1 2
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

from qtransformer.demo import run_demo


@dataclass
class Args:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Collection and training seeds."""
    steps: int = 1500
    """Gradient steps per run."""
    out: Path = Path("benchmarks/results")
    """Folder for gridworld.json and gridworld.png."""


def main(args: Args) -> None:
    torch.set_num_threads(1)
    runs = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            r = run_demo(Path(tmp) / f"seed{seed}", steps=args.steps, seed=seed)
            rows = {row["policy"]: row for row in r["rows"]}
            runs.append({"seed": seed, "rows": rows, "curve": r["curve"]})
    qt_steps = [r["rows"]["Q-Transformer (greedy)"]["steps"] for r in runs]
    qt_success = [r["rows"]["Q-Transformer (greedy)"]["success"] for r in runs]
    summary = {
        "command": "python " + " ".join(sys.argv),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "seconds": time.perf_counter() - t0,
        "steps": args.steps,
        "table": [
            {"policy": "demonstrations in the data", "success": 1.0, "steps_to_goal": 8.0},
            {
                "policy": "Q-Transformer (greedy)",
                "success": float(np.mean(qt_success)),
                "steps_to_goal": float(np.mean(qt_steps)),
            },
            {"policy": "optimal (not in the data)", "success": 1.0, "steps_to_goal": 4.0},
        ],
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gridworld.json").write_text(json.dumps(summary, indent=2))
    plot(runs, args.out / "gridworld.png")
    print(json.dumps(summary["table"], indent=2))


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for r in runs:
        steps = [c["step"] for c in r["curve"]]
        lengths = [c["length"] if c["success"] > 0 else np.nan for c in r["curve"]]
        ax.plot(steps, lengths, "o-", ms=3, alpha=0.8, label=f"Q-Transformer seed {r['seed']}")
    ax.axhline(8, color="gray", ls="--", label="demonstrations")
    ax.axhline(4, color="green", ls=":", label="optimal (not in data)")
    ax.set(
        xlabel="gradient step",
        ylabel="steps to goal (if reached)",
        ylim=(0, 13),
        title="Grid stitching: learning a route faster than the demos",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(tyro.cli(Args))
