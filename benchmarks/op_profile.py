"""Where the time of a training step, a decoding call and a pixel training step goes: torch
profiler tables, per operator, committed beside the speed benchmark.

.venv/bin/python benchmarks/op_profile.py [--device cpu] [--label before]

Scenarios (the speed benchmark's network: d_model 128, 4 layers, 4 heads, N 256, dA 8,
batch 128, state vectors of 39; and the pretrained pixel study's network):
- ``train``: ``Learner.update`` in fp32 and in bf16 autocast;
- ``decode``: ``QTransformer.greedy`` at batch 1 and 256;
- ``pixels``: ``Learner.update`` of the pixel study's Q-Transformer (EfficientNet-Lite0 trunk,
  frozen blocks read from cached features, block 10 fine-tuned with FiLM, 16 tokens per
  frame, batch 64, instruction embeddings).

For each: wall time per call, the operators' summed self time, the share of the wall time no
operator accounts for (Python and dispatch between operators), and the top operators by self
time. Results go to benchmarks/results/op_profile.json (one entry per label, so a profile taken
before a change stays beside the one after) and op_profile.md.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import tyro
from torch.profiler import ProfilerActivity, profile

from qtransformer.bench.studies import LITE0
from qtransformer.config import TrainConfig
from qtransformer.data.sampler import Batch
from qtransformer.learner import Learner
from qtransformer.machine import machine_info
from qtransformer.model import QTransformer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass
class Args:
    label: str = "now"
    """Name of this profile in the JSON (e.g. 'before', 'after')."""
    device: str = "cpu"
    threads: int | None = None
    repeats: int = 20
    """Profiled calls per scenario (after 5 untimed ones)."""
    top: int = 15
    """Operators kept per scenario."""
    scenarios: str = (
        "train-fp32,train-bf16,train-bf16-compiled,decode-b1,decode-b1-compiled,decode-b256,"
        "decode-b256-compiled,pixels,pixels-bf16-compiled"
    )
    out: Path = RESULTS / "op_profile.json"
    """JSON results (a markdown table is written beside it, ``.md``)."""


def state_batch(B: int, dA: int, N: int, device: torch.device) -> Batch:
    terminal = torch.rand(B, device=device) < 0.1
    return Batch(
        obs=torch.randn(B, 1, 39, device=device),
        bins=torch.randint(0, N, (B, dA), device=device),
        reward_sum=terminal.float(),
        bootstrap_discount=torch.where(terminal, 0.0, 0.98),
        next_obs=torch.randn(B, 1, 39, device=device),
        mc_return=torch.rand(B, device=device),
        td_valid=torch.rand(B, device=device) < 0.95,
        task=torch.zeros(B, dtype=torch.long, device=device),
    )


BENCH = TrainConfig(batch_size=128, n_bins=256, d_model=128, n_layers=4, n_heads=4, q_heads=1)
"""The speed benchmark's network and batch."""


def train_call(precision: str, compile: bool, device: torch.device) -> Callable[[], Any]:
    cfg = replace(BENCH, precision=precision, compile=compile)
    learner = Learner(cfg, 39, 8, q_max=1.0, device=device)
    batches = [state_batch(128, 8, 256, device) for _ in range(4)]
    state = {"i": 0}

    def call() -> None:
        state["i"] += 1
        learner.update(batches[state["i"] % 4], metrics=False)

    return call


def decode_call(batch: int, compile: bool, device: torch.device) -> Callable[[], Any]:
    torch.manual_seed(0)
    model = QTransformer(BENCH.model_config(39, 8)).to(device).eval()
    obs = torch.randn(batch, 1, 39, device=device)
    greedy = model.greedy
    if compile:
        mode = "reduce-overhead" if device.type == "cuda" else None
        greedy = torch.compile(model.greedy, dynamic=False, mode=mode)
    return lambda: greedy(obs)


def pixels_call(precision: str, compile: bool, device: torch.device) -> Callable[[], Any]:
    """The pixel study's update on random cached features (the trunk's weights do not change
    the cost), 4 tasks with 384-wide instruction embeddings, 4 action dims."""
    cfg = replace(LITE0, device=str(device), precision=precision, compile=compile)
    tasks = torch.nn.functional.normalize(torch.randn(4, 384), dim=1)
    learner = Learner(cfg, 39, 4, 1.0, 4, device, image_shape=(64, 64, 3), task_features=tasks)
    encoder = learner.model.image_encoder
    assert encoder is not None
    shape = encoder.prefix_shape  # type: ignore[union-attr]
    B = cfg.batch_size
    batches = []
    for _ in range(4):
        b = state_batch(B, 4, cfg.n_bins, device)
        batches.append(
            dataclasses.replace(
                b,
                task=torch.randint(0, 4, (B,), device=device),
                images=torch.randn(B, 1, *shape, device=device),
                next_images=torch.randn(B, 1, *shape, device=device),
            )
        )
    state = {"i": 0}

    def call() -> None:
        state["i"] += 1
        learner.update(batches[state["i"] % 4], metrics=False)

    return call


def scenario(name: str, device: torch.device) -> Callable[[], Any]:
    """``train-{fp32,bf16}``, ``decode-b{batch}``, ``pixels`` or ``pixels-bf16``, each with
    ``-compiled`` for its ``torch.compile``-d form."""
    compile = name.endswith("-compiled")
    base = name.removesuffix("-compiled")
    if base.startswith("train-"):
        return train_call(base.removeprefix("train-"), compile, device)
    if base.startswith("decode-b"):
        return decode_call(int(base.removeprefix("decode-b")), compile, device)
    if base in ("pixels", "pixels-bf16"):
        return pixels_call("bf16" if base.endswith("bf16") else "fp32", compile, device)
    raise ValueError(f"unknown scenario {name!r}")


def measure(call: Callable[[], Any], repeats: int, top: int, device: torch.device) -> dict:
    for _ in range(5):
        call()
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            call()
        if device.type == "cuda":
            torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / repeats
    events = prof.key_averages()
    # Self times leave out the operators called inside (aten::addmm inside aten::linear), so
    # they sum to what the operators cost in all without counting anything twice.
    total_self = sum(e.self_cpu_time_total for e in events) / 1e6 / repeats
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    ops = [
        {
            "op": e.key,
            "calls_per_call": e.count / repeats,
            "self_ms": e.self_cpu_time_total / 1e3 / repeats,
            "share_pct": 100 * e.self_cpu_time_total / 1e6 / repeats / wall,
        }
        for e in rows
    ]
    return {
        "wall_ms": wall * 1e3,
        "ops_self_ms": total_self * 1e3,
        "ops_calls": sum(e.count for e in events) / repeats,
        "outside_ops_pct": max(0.0, 100 * (1 - total_self / wall)),
        "top": ops,
    }


def markdown(results: dict) -> str:
    lines = []
    for label, entry in results.items():
        lines.append(f"## {label}")
        lines.append("")
        lines.append(f"`{entry['command']}` on {entry['machine'].get('cpu_model', '?')}")
        lines.append("")
        for name, s in entry["scenarios"].items():
            lines.append(
                f"### {name}: {s['wall_ms']:.2f} ms per call, {s['ops_calls']:.0f} operator "
                f"calls, {s['outside_ops_pct']:.0f}% of the time outside operators"
            )
            lines.append("")
            lines.append("| operator | calls | self ms | share of wall |")
            lines.append("|---|---|---|---|")
            for op in s["top"]:
                lines.append(
                    f"| {op['op']} | {op['calls_per_call']:.0f} | {op['self_ms']:.3f} | "
                    f"{op['share_pct']:.1f}% |"
                )
            lines.append("")
    return "\n".join(lines)


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = args.out
    results = json.loads(out.read_text()) if out.exists() else {}
    entry: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/op_profile.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "scenarios": {},
    }
    for name in args.scenarios.split(","):
        entry["scenarios"][name] = measure(scenario(name, device), args.repeats, args.top, device)
        s = entry["scenarios"][name]
        print(f"{name}: {s['wall_ms']:.2f} ms, {s['outside_ops_pct']:.0f}% outside ops")
    results[args.label] = entry
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(markdown(results))


if __name__ == "__main__":
    main(tyro.cli(Args))
