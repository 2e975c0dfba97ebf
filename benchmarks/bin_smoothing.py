"""Acting on Q smoothed over neighbouring bins: does it buy speed on ``push-v3``?

.venv/bin/python benchmarks/bin_smoothing.py [--seeds 0 1 2] [--preset noisy]

benchmarks/finish.py finds that at IQL's approach states our critic prefers its own greedy
action to IQL's faster one by more than the faster route is worth, as a maximum over noisy
per-bin estimates would. If per-bin noise is what the argmax follows, averaging each bin's Q
with its neighbours' before the argmax (a kernel over the bins of one dimension, the next
dimension decoded given the chosen bin) should move the policy towards the faster route.
Per seed: train the grid's Q-Transformer on the grid's dataset, then act on the same 50
evaluation episodes with the default rule (``agent.act``), plain greedy, and greedy on Q
smoothed with the kernels [1, 2, 1] and [1, 2, 3, 2, 1]. Each seed is saved in
``runs/bin_smoothing`` and skipped when there (resumable). Writes
``benchmarks/results/bin_smoothing.json`` and ``.md``.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

from qtransformer.atomic import write_text_atomically
from qtransformer.bench import PROFILES
from qtransformer.bench.runner import ensure_dataset, qt_config
from qtransformer.bench.studies import Cell
from qtransformer.data.dataset import OfflineDataset
from qtransformer.machine import machine_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finish import motion, policy_rollouts  # noqa: E402  (the same rollouts and measures)

ROOT = Path(__file__).resolve().parents[1]
KERNELS: dict[str, list[float]] = {
    "greedy": [1.0],
    "smooth-3": [1, 2, 1],
    "smooth-5": [1, 2, 3, 2, 1],
}


@dataclass
class Args:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    preset: str = "noisy"
    episodes: int = 50
    work: Path = ROOT / "runs" / "bin_smoothing"
    bench_work: Path = ROOT / "runs" / "bench"
    out: Path | None = None
    """Results file; by default benchmarks/results/bin_smoothing.json for `noisy` and
    bin_smoothing_PRESET.json for any other preset (so presets never overwrite each other)."""


def smooth(q: np.ndarray, kernel: list[float]) -> np.ndarray:
    """``q`` (N,) averaged over neighbouring bins with ``kernel`` (odd length, normalized
    here); the edge bins repeat so that every bin keeps the kernel's full weight."""
    k = np.asarray(kernel, float) / float(np.sum(kernel))
    r = len(k) // 2
    return np.convolve(np.pad(q, r, mode="edge"), k[::-1], mode="valid")


def smoothed_policy(agent: Any, kernel: list[float]) -> Any:
    """Decode one dimension at a time, each bin chosen by the argmax of its smoothed Q given
    the bins chosen before it."""

    def act(obs: np.ndarray) -> np.ndarray:
        bins = np.zeros((1, agent.discretizer.action_dim), np.int64)
        for i in range(bins.shape[1]):
            bins[0, i] = int(np.argmax(smooth(agent.q_values(obs[None], bins)[0, i], kernel)))
        return agent.discretizer.to_continuous(bins)[0]

    return act


def run_seed(seed: int, args: Args) -> dict:
    done = args.work / f"{args.preset}-seed{seed}.json"
    if done.exists():
        return json.loads(done.read_text())
    from qtransformer.trainer import train

    profile = PROFILES["cpu"]
    data = OfflineDataset.open(ensure_dataset(args.bench_work, profile, args.preset, seed))
    agent = train(data, qt_config(Cell("qt", args.preset, seed), profile))
    task = data.tasks[0]
    rows = {"default": motion(policy_rollouts(lambda o: agent.act(o[None])[0], task,
                                               args.episodes, profile))}  # fmt: skip
    for name, kernel in KERNELS.items():
        rows[name] = motion(policy_rollouts(smoothed_policy(agent, kernel), task, args.episodes,
                                            profile))  # fmt: skip
        print(seed, name, rows[name]["success"], rows[name]["decisions"], flush=True)
    record = {"seed": seed, "preset": args.preset, "rules": rows}
    write_text_atomically(done, json.dumps(record, indent=1))
    return record


def report(out: dict) -> str:
    lines = [
        "| rule | seeds | success | dec. | ≤ 15 dec. | approach (dec.) |",
        "|---|---|---|---|---|---|",
    ]
    for rule in ("default", *KERNELS):
        rs = [r["rules"][rule] for r in out["seeds"]]
        dec = [r["decisions"] for r in rs if r["decisions"] is not None]
        ap = [r["approach"]["approach"] for r in rs if r.get("approach")]
        lines.append(
            f"| {rule} | {len(rs)} | {np.mean([r['success'] for r in rs]):.2f} | "
            f"{np.mean(dec):.1f} | {np.mean([r['within_15'] for r in rs]):.2f} | "
            f"{np.mean(ap):.1f} |"
        )
    m = out["machine"]
    lines.append(
        f"\n`{out['command']}`; the grid's `{out['preset']}` datasets and `cpu` Q-Transformer, "
        f"{out['episodes']} evaluation episodes per rule and seed (the same episodes for every "
        "rule); 'default' is `agent.act` (Q-weighted bins at the default act_temperature), "
        "'greedy' the plain argmax, 'smooth-K' the argmax of Q averaged over K neighbouring "
        "bins; 'approach' = decisions until the puck first moves. "
        f"{m['cpu_model']}, torch {m['torch']}, one thread.\n"
    )
    return "\n".join(lines)


def main(args: Args) -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    args.work.mkdir(parents=True, exist_ok=True)
    out = {
        "command": " ".join([".venv/bin/python benchmarks/bin_smoothing.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "preset": args.preset,
        "episodes": args.episodes,
        "seeds": [run_seed(s, args) for s in args.seeds],
    }
    suffix = "" if args.preset == "noisy" else f"_{args.preset}"
    path = args.out or ROOT / "benchmarks" / "results" / f"bin_smoothing{suffix}.json"
    write_text_atomically(path, json.dumps(out, indent=1))
    write_text_atomically(path.with_suffix(".md"), report(out))
    print(report(out))


if __name__ == "__main__":
    main(tyro.cli(Args))
