"""Speed benchmark of the Q-Transformer network.

For each action dimensionality dA (default 4, 8 and 16, with N = 256 bins) it measures:

1. Training throughput: samples/s of ``Learner.update`` on random synthetic batches
   (median step time over the timed steps; warm-up steps are excluded).
2. Greedy decoding latency: ms per ``QTransformer.greedy`` call (median) at batch 1 and
   batch 256, with the KV cache (``use_cache=True``) and without it, in eval mode under
   ``torch.no_grad``.
3. Model FLOPs per training step, counted analytically (2*m*n*k per matmul): the online
   forward on the P + dA tokens, its backward (2x that forward), the target network's
   teacher-forced forward and its prefix-only ``first_dim_q`` forward. Attention scores and
   values count the full L x L matrix (causal masking is not subtracted) and the output head
   is counted on the tokens it is applied to. The achieved FLOP/s (FLOPs per step / median
   step time) is compared with a measured fp32 ``torch.matmul`` peak of the same device.
   As a cross-check, ``torch.utils.flop_counter.FlopCounterMode`` counts one step too.

The results (command line, machine, model, date and one entry per dA) go to a JSON file,
and a table is printed at the end.

Run from the repository root:

    .venv/bin/python benchmarks/speed.py
    .venv/bin/python benchmarks/speed.py --device cuda --out benchmarks/results/speed_gpu.json
    .venv/bin/python benchmarks/speed.py --help

The defaults take a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import itertools
import json
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import tyro
from rich import box
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from qtransformer.config import TrainConfig
from qtransformer.data.sampler import Batch
from qtransformer.learner import Learner
from qtransformer.machine import machine_info
from qtransformer.model import ModelConfig, QTransformer

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BenchConfig:
    """Speed benchmark of the Q-Transformer network."""

    action_dims: tuple[int, ...] = (4, 8, 16)
    """Action dimensionalities dA to benchmark."""
    n_bins: int = 256
    """Bins per action dimension N."""
    obs_dim: int = 39
    """Length of the state vector (39 as in Meta-World)."""
    window: int = 1
    """Past observations the network reads."""
    d_model: int = 128
    """Transformer width."""
    n_layers: int = 4
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads."""
    q_heads: int = 1
    """Q output heads."""
    batch_size: int = 128
    """Training batch size."""
    train_warmup: int = 20
    """Untimed training steps before the timed ones."""
    train_steps: int = 150
    """Timed training steps per dA."""
    decode_batches: tuple[int, ...] = (1, 256)
    """Batch sizes of the greedy-decoding latency measurement."""
    decode_warmup: int = 3
    """Untimed greedy calls before the timed ones."""
    decode_repeats: int = 30
    """Timed greedy calls per (dA, batch, cache) setting."""
    matmul_size: int = 2048
    """Side of the square fp32 matmul that measures the peak FLOP/s."""
    matmul_repeats: int = 10
    """Timed matmuls of the peak measurement."""
    device: str = "cpu"
    """'cpu' or 'cuda'."""
    threads: int | None = None
    """torch intra-op threads; None keeps torch's default."""
    seed: int = 0
    """Seed of the networks and the synthetic data."""
    out: Path = Path("benchmarks/results/speed.json")
    """Where the JSON results are written."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], object], warmup: int, repeats: int, device: torch.device
) -> list[float]:
    """Seconds per call of ``fn``, one entry per timed call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def summarize(times: list[float]) -> dict[str, float | int]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "n": len(times),
    }


def model_config(cfg: BenchConfig, action_dim: int) -> ModelConfig:
    return train_config(cfg).model_config(cfg.obs_dim, action_dim)


def train_config(cfg: BenchConfig) -> TrainConfig:
    """Training hyperparameters, network shape included."""
    return TrainConfig(
        batch_size=cfg.batch_size,
        n_bins=cfg.n_bins,
        window=cfg.window,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        q_heads=cfg.q_heads,
        seed=cfg.seed,
        device=cfg.device,
    )


def random_batch(mcfg: ModelConfig, batch_size: int, device: torch.device) -> Batch:
    """Synthetic batch: random observations and bins, sparse rewards, some terminals."""
    B, w = batch_size, mcfg.window
    terminal = torch.rand(B, device=device) < 0.1
    return Batch(
        obs=torch.randn(B, w, mcfg.obs_dim, device=device),
        bins=torch.randint(0, mcfg.n_bins, (B, mcfg.action_dim), device=device),
        reward_sum=terminal.float(),
        bootstrap_discount=torch.where(terminal, 0.0, 0.98),
        next_obs=torch.randn(B, w, mcfg.obs_dim, device=device),
        mc_return=torch.rand(B, device=device),
        td_valid=torch.rand(B, device=device) < 0.95,
    )


def forward_flops(mcfg: ModelConfig, batch: int, n_tokens: int, n_head_tokens: int) -> int:
    """Matmul FLOPs of one forward on ``n_tokens`` tokens, the head on ``n_head_tokens``.

    Counts the state encoder (MLP obs_dim -> 2 d_model -> d_model per frame), per block the
    QKV, attention scores, attention-weighted values, output projection and 4x MLP, and the
    Q head. Embedding lookups, norms and activations are not matmuls and are left out.
    """
    D, L = mcfg.d_model, n_tokens
    hidden = 2 * D  # StateEncoder's default hidden width
    encoder = 2 * batch * mcfg.window * (mcfg.obs_dim * hidden + hidden * D)
    linear = 2 * batch * L * (3 * D * D + D * D + 2 * 4 * D * D)
    attention = 2 * (2 * batch * L * L * D)  # q @ k^T and attn @ v, summed over heads
    head = 2 * batch * n_head_tokens * D * mcfg.q_heads * mcfg.n_bins
    return encoder + mcfg.n_layers * (linear + attention) + head


def train_step_flops(mcfg: ModelConfig, batch: int) -> dict[str, int]:
    """FLOPs of one ``Learner.update``: online fwd + bwd (2x fwd) and two target forwards."""
    P, dA = mcfg.prefix_len, mcfg.action_dim
    online = forward_flops(mcfg, batch, P + dA, dA)
    parts = {
        "online_forward": online,
        "online_backward": 2 * online,
        "target_forward": online,
        "target_first_dim_q": forward_flops(mcfg, batch, P + 1, 1),
    }
    return {**parts, "total": sum(parts.values())}


def counted_step_flops(learner: Learner, batch: Batch) -> int:
    """FLOPs of one update as counted by torch's FlopCounterMode (cross-check)."""
    with FlopCounterMode(display=False) as counter:
        learner.update(batch)
    return int(counter.get_total_flops())


def matmul_peak(cfg: BenchConfig, device: torch.device) -> dict[str, float | int]:
    """fp32 GFLOP/s of a square matmul: best and median over the timed repeats."""
    n = cfg.matmul_size
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    times = time_calls(lambda: torch.matmul(a, b), 2, cfg.matmul_repeats, device)
    flops = 2 * n**3
    return {
        "size": n,
        "dtype": "float32",
        "peak_gflops": flops / min(times) / 1e9,
        "median_gflops": flops / statistics.median(times) / 1e9,
    }


def bench_training(cfg: BenchConfig, mcfg: ModelConfig, device: torch.device) -> dict[str, Any]:
    learner = Learner(train_config(cfg), mcfg.obs_dim, mcfg.action_dim, q_max=1.0, device=device)
    batches = [random_batch(mcfg, cfg.batch_size, device) for _ in range(8)]
    stream = itertools.cycle(batches)
    times = time_calls(
        lambda: learner.update(next(stream), metrics=False),
        cfg.train_warmup,
        cfg.train_steps,
        device,
    )
    median = statistics.median(times)
    return {
        "batch_size": cfg.batch_size,
        "step": summarize(times),
        "samples_per_s": cfg.batch_size / median,
        "steps_per_s": 1.0 / median,
        "flops_counted_by_torch": counted_step_flops(learner, batches[0]),
        "n_params": sum(p.numel() for p in learner.model.parameters()),
    }


def bench_decoding(cfg: BenchConfig, mcfg: ModelConfig, device: torch.device) -> list[dict]:
    torch.manual_seed(cfg.seed)
    model = QTransformer(mcfg).to(device).eval()
    results = []
    for batch in cfg.decode_batches:
        obs = torch.randn(batch, mcfg.window, mcfg.obs_dim, device=device)
        for use_cache in (True, False):
            with torch.no_grad():
                times = time_calls(
                    lambda o=obs, c=use_cache: model.greedy(o, use_cache=c),
                    cfg.decode_warmup,
                    cfg.decode_repeats,
                    device,
                )
            results.append(
                {
                    "batch": batch,
                    "use_cache": use_cache,
                    "median_ms": 1e3 * statistics.median(times),
                    "min_ms": 1e3 * min(times),
                    "n": len(times),
                }
            )
    return results


def bench_action_dim(
    cfg: BenchConfig, action_dim: int, peak_gflops: float, device: torch.device
) -> dict[str, Any]:
    mcfg = model_config(cfg, action_dim)
    train = bench_training(cfg, mcfg, device)
    flops = train_step_flops(mcfg, cfg.batch_size)
    achieved = flops["total"] * train["steps_per_s"] / 1e9
    return {
        "action_dim": action_dim,
        "seq_len": mcfg.seq_len,
        "train": train,
        "flops_per_step": flops,
        "achieved_gflops": achieved,
        "utilization_pct": 100.0 * achieved / peak_gflops,
        "greedy": bench_decoding(cfg, mcfg, device),
    }


def git_revision() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def fmt(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def training_table(results: dict[str, Any]) -> Table:
    matmul = results["matmul"]
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"Training, batch {results['benchmark']['batch_size']} "
        f"({results['machine']['device']})",
        caption=f"util: % of the fp32 {matmul['size']}^2 matmul peak, "
        f"{matmul['peak_gflops']:.1f} GFLOP/s",
    )
    for col in ("dA", "samples/s", "step ms", "GFLOP/step", "GFLOP/s", "util %"):
        table.add_column(col, justify="right")
    for r in results["per_action_dim"]:
        table.add_row(
            str(r["action_dim"]),
            f"{r['train']['samples_per_s']:.0f}",
            fmt(1e3 * r["train"]["step"]["median_s"]),
            f"{r['flops_per_step']['total'] / 1e9:.2f}",
            f"{r['achieved_gflops']:.1f}",
            f"{r['utilization_pct']:.1f}",
        )
    return table


def greedy_table(results: dict[str, Any]) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"Greedy decoding, ms per call ({results['machine']['device']})",
        caption="kv: with the KV cache; full: without it",
    )
    table.add_column("dA", justify="right")
    batches = sorted({g["batch"] for g in results["per_action_dim"][0]["greedy"]})
    for b in batches:
        table.add_column(f"B={b} kv", justify="right")
        table.add_column(f"B={b} full", justify="right")
    for r in results["per_action_dim"]:
        greedy = {(g["batch"], g["use_cache"]): g["median_ms"] for g in r["greedy"]}
        cells = [str(r["action_dim"])]
        for b in batches:
            cells += [fmt(greedy[b, True]), fmt(greedy[b, False])]
        table.add_row(*cells)
    return table


def print_tables(results: dict[str, Any]) -> None:
    console = Console()
    console.print(training_table(results))
    console.print(greedy_table(results))


def main(cfg: BenchConfig) -> dict[str, Any]:
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was given but CUDA is not available")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    matmul = matmul_peak(cfg, device)
    per_dim = [bench_action_dim(cfg, dA, matmul["peak_gflops"], device) for dA in cfg.action_dims]
    results = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git_revision(),
        "machine": machine_info(device),
        "benchmark": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "model": {
            k: v
            for k, v in asdict(model_config(cfg, cfg.action_dims[0])).items()
            if k != "action_dim"
        },
        "matmul": matmul,
        "per_action_dim": per_dim,
        "wall_time_s": time.perf_counter() - started,
    }
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)
    print(f"wrote {cfg.out}")
    return results


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
