"""What the speed settings do to learning and to a grid cell's time: the ``cpu`` profile's
Q-Transformer cell on ``push-v3`` in fp32 (as the grid runs it), in bf16 autocast
(``qt-bf16``) and compiled (``qt-compiled``), beside IQL's cell, on the same data and seeds.

.venv/bin/python benchmarks/precision.py [--preset noisy] [--seeds 0,1,2] [--algos ...]

Each cell trains and evaluates as ``qtransformer bench`` does (50 episodes at each of the
profile's evaluation points) on one thread; its record (success along training, seconds)
is appended to benchmarks/results/precision.jsonl, so the script resumes where it stopped
and two processes can share the seeds. precision.md is regenerated from all records.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from qtransformer.bench import PROFILES
from qtransformer.bench.jsonl import append_jsonl, read_jsonl
from qtransformer.bench.runner import ensure_dataset, run_cell
from qtransformer.bench.studies import Cell
from qtransformer.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass
class Args:
    preset: str = "noisy"
    seeds: str = "0,1,2"
    algos: str = "qt,qt-bf16,qt-compiled,iql"
    work: Path = Path("runs/bench")
    """Where the datasets are collected (shared with ``qtransformer bench``)."""
    out: Path = RESULTS / "precision.jsonl"


def final_success(record: dict) -> float:
    """Mean success over tasks at the last evaluation point."""
    last = max(r["steps"] for r in record["rows"])
    return float(np.mean([r["success_rate"] for r in record["rows"] if r["steps"] == last]))


def summarize(records: list[dict]) -> str:
    by_algo: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_algo[r["cell"]["algo"]].append(r)
    lines = [
        "| cell | seeds | success at the end, mean (per seed) | cell seconds, mean | train steps |",
        "|---|---|---|---|---|",
    ]
    for algo, rs in by_algo.items():
        rs = sorted(rs, key=lambda r: r["cell"]["seed"])
        succ = [final_success(r) for r in rs]
        lines.append(
            f"| {algo} | {len(rs)} | {np.mean(succ):.2f} ("
            + ", ".join(f"{x:.2f}" for x in succ)
            + f") | {np.mean([r['seconds'] for r in rs]):.0f} | "
            f"{max(row['steps'] for row in rs[0]['rows'])} |"
        )
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    profile = PROFILES["cpu"]
    records = read_jsonl(args.out)
    have = {(r["cell"]["algo"], r["cell"]["preset"], r["cell"]["seed"]) for r in records}
    for seed in (int(s) for s in args.seeds.split(",")):
        for algo in args.algos.split(","):
            if (algo, args.preset, seed) in have:
                continue
            ensure_dataset(args.work, profile, args.preset, seed)  # not part of a cell's time
            record = run_cell(Cell(algo, args.preset, seed), profile, args.work)
            record["command"] = "python benchmarks/precision.py " + " ".join(sys.argv[1:])
            record["machine"] = machine_info()
            print(json.dumps({"cell": algo, "seed": seed, "success": final_success(record),
                              "seconds": round(record["seconds"])}), flush=True)  # fmt: skip
            append_jsonl(args.out, record)
            records.append(record)
    if records:
        (args.out.parent / "precision.md").write_text(summarize(records))


if __name__ == "__main__":
    main(tyro.cli(Args))
