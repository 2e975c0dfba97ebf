"""Batch-1 greedy decoding latency of the speed benchmark's network (dA 8, N 256, d_model 128,
4 layers): eager with the KV cache, compiled (``Agent.compile``'s graph) and compiled with
inductor's C++ wrapper, each at 1 and 2 intra-op threads, timed in turns in one run.

.venv/bin/python benchmarks/decode_latency.py [--repeats 60]

Writes benchmarks/results/decode_latency.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from qtransformer.machine import machine_info
from qtransformer.model import ModelConfig, QTransformer

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    repeats: int = 60
    action_dim: int = 8
    out: Path = ROOT / "benchmarks" / "results" / "decode_latency.json"


def main(args: Args) -> None:
    cfg = ModelConfig(obs_dim=39, action_dim=args.action_dim, n_bins=256, d_model=128,
                      n_layers=4, n_heads=4)  # fmt: skip
    torch.manual_seed(0)
    model = QTransformer(cfg).eval()
    obs = torch.randn(1, 1, 39)
    fns = {
        "eager-kv": model.greedy,
        "compiled": torch.compile(model.greedy, dynamic=False),
        "compiled-cpp-wrapper": torch.compile(
            model.greedy, dynamic=False, options={"cpp_wrapper": True}
        ),
    }
    reference = model.greedy(obs)[0]
    compile_s = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        if not torch.equal(fn(obs)[0], reference):
            raise RuntimeError(f"{name} chose other bins than the eager decoding")
        compile_s[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {f"{n} {t}t": [] for n in fns for t in (1, 2)}
    for _ in range(args.repeats):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(obs)
                times[f"{name} {threads}t"].append(time.perf_counter() - start)
    out = {
        "command": "python benchmarks/decode_latency.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "action_dim": args.action_dim,
        "first_call_s": compile_s,
        "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for k, v in out["median_ms"].items():
        print(f"{k}: {v:.2f} ms")


if __name__ == "__main__":
    main(tyro.cli(Args))
