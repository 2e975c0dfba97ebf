"""One-off: the grid's cell records from metaworld.csv, for the grid that ran before records
were committed.

.venv/bin/python benchmarks/results_from_csv.py

Writes ``benchmarks/results/cells/grid.jsonl``: per cell of the CSV, ``cell`` (episodes None:
the profile's) and its rows, as the CSV holds them (4 significant digits; no Q diagnostics,
success lengths, config or timing, which were never committed).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from qtransformer.bench.runner import read_records, write_records
from qtransformer.bench.studies import Cell

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
INTS = ("seed", "steps", "episodes")
FLOATS = ("success_rate", "ci_low", "ci_high", "mean_success_length", "mean_length")


def row_of(line: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = dict(line)
    for k in INTS:
        row[k] = int(line[k])
    for k in FLOATS:
        row[k] = float(line[k]) if line[k] else math.nan
    return row


def records_from_csv(path: Path) -> dict[str, dict[str, Any]]:
    """Cell key -> record ``{"cell", "rows"}`` of every cell in a metaworld.csv."""
    out: dict[str, dict[str, Any]] = {}
    with open(path) as f:
        for line in csv.DictReader(f):
            row = row_of(line)
            cell = Cell(row["algo"], row["dataset"], row["seed"])
            record = out.setdefault(
                cell.key,
                {
                    "cell": {
                        "algo": cell.algo,
                        "preset": cell.preset,
                        "seed": cell.seed,
                        "episodes": None,
                    },
                    "rows": [],
                },
            )
            record["rows"].append(row)
    return out


def main() -> None:
    path = RESULTS / "cells" / "grid.jsonl"
    # Full records already there (cells rerun since) are kept: only missing cells are added.
    records = {**records_from_csv(RESULTS / "metaworld.csv"), **read_records(path)}
    write_records(path, records)
    print(f"{len(records)} cells -> {RESULTS / 'cells' / 'grid.jsonl'}")


if __name__ == "__main__":
    main()
