"""Rewrite the README's results block from the committed files in benchmarks/results/.

.venv/bin/python benchmarks/report.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def gridworld_section() -> str:
    g = json.loads((RESULTS / "gridworld.json").read_text())
    rows = "\n".join(
        f"| {r['policy']} | {r['success']:.2f} | {r['steps_to_goal']:.1f} |" for r in g["table"]
    )
    seeds = [r["seed"] for r in g["runs"]]
    return (
        "**Beyond the demonstrations** (built-in grid task, 30 episodes: 15 successful "
        "demonstrations that take 8 steps, 15 failed attempts whose pieces form a 6-step route; "
        f"{g['steps']} gradient steps, seeds {seeds}, mean over seeds):\n\n"
        "| policy | success | steps to goal |\n|---|---|---|\n"
        f"{rows}\n\n"
        "![grid stitching](benchmarks/results/gridworld.png)\n\n"
        f"`{g['command']}` ({g['seconds']:.0f} s, {g['machine']['platform']}, "
        f"torch {g['machine']['torch']}). The optimal diagonal route never appears in the data, "
        "so no offline learner should find it; Q-Transformer finds the best route the data "
        "supports."
    )


def speed_section() -> str:
    s = json.loads((RESULTS / "speed.json").read_text())
    m, b = s["machine"], s["benchmark"]
    lines = [
        "| dA | train samples/s | GFLOP/step | util. % | decode B=1 kv / full (ms) "
        "| decode B=256 kv / full (ms) |",
        "|---|---|---|---|---|---|",
    ]
    speedups = []
    for r in s["per_action_dim"]:
        g = {(x["batch"], x["use_cache"]): x["median_ms"] for x in r["greedy"]}
        lines.append(
            f"| {r['action_dim']} | {r['train']['samples_per_s']:.0f} "
            f"| {r['flops_per_step']['total'] / 1e9:.2f} | {r['utilization_pct']:.0f} "
            f"| {g[(1, True)]:.1f} / {g[(1, False)]:.1f} "
            f"| {g[(256, True)]:.0f} / {g[(256, False)]:.0f} |"
        )
        speedups.append(g[(256, False)] / g[(256, True)])
    return (
        f"**Speed** (N = {b['n_bins']} bins, d_model {b['d_model']}, {b['n_layers']} layers, "
        f"batch {b['batch_size']}; {m['cpu_model']}, {m['cpu_count']} cores, "
        f"torch {m['torch']}, {m['torch_threads']} threads; utilization against a measured "
        f"fp32 matmul peak of {s['matmul']['peak_gflops']:.0f} GFLOP/s):\n\n"
        + "\n".join(lines)
        + f"\n\n`{Path(s['command'].split()[0]).name} {' '.join(s['command'].split()[1:])}`. "
        f"At batch 256 the KV cache makes decoding {min(speedups):.1f}-{max(speedups):.1f}x "
        "faster, more so as dA grows. "
        "No GPU profile yet: no GPU was available when these were measured "
        "(`benchmarks/speed.py --device cuda` produces one)."
    )


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    block = f"{START}\n{gridworld_section()}\n\n{speed_section()}\n{END}"
    new, n = re.subn(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if n != 1:
        raise SystemExit(f"README.md needs exactly one {START} ... {END} block")
    readme.write_text(new)
    print(block)


if __name__ == "__main__":
    main()
