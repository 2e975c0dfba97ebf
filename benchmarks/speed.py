"""Speed benchmark of the Q-Transformer network.

For each action dimensionality dA (default 4, 8 and 16, with N = 256 bins) it measures, in one
run and interleaved (one step of each variant in turn, so a busy shared machine slows them
alike and the ratios hold):

1. Training throughput: samples/s of ``Learner.update`` on random synthetic batches (median
   step time over the timed steps; warm-up steps and compilation are excluded), for
   ``TRAIN_VARIANTS``: the update as it was before the speed work (per-parameter AdamW and
   target updates in Python: ``reference``), and today's in fp32 and bf16 autocast, eager and
   ``torch.compile``-d.
2. Greedy decoding latency: ms per call at batch 1 and batch 256, eager without and with the
   KV cache, and compiled (the whole decoding as one graph, with Python between its kernels;
   ``Agent.compile`` also runs it from inductor's C++ wrapper on a CPU, which
   ``benchmarks/decode_latency.py`` measures), in eval mode under ``torch.no_grad``.
3. Model FLOPs per training step, counted analytically (2*m*n*k per matmul): the online
   forward on the P + dA tokens, its backward (2x that forward), the target network's
   teacher-forced forward and its prefix-only ``first_dim_q`` forward. Attention scores and
   values count the full L x L matrix (causal masking is not subtracted) and the output head
   is counted on the tokens it is applied to. The achieved FLOP/s (FLOPs per step / median
   step time) is compared with the measured ``torch.matmul`` peak of the precision used
   (fp32 and bf16, same device, same run). As a cross-check, ``FlopCounterMode`` counts one
   step too.

The results (command line, machine, model, date and one entry per dA) go to a JSON file,
and a table is printed at the end.

Run from the repository root:

    .venv/bin/python benchmarks/speed.py
    .venv/bin/python benchmarks/speed.py --device cuda --out benchmarks/results/speed_gpu.json
    .venv/bin/python benchmarks/speed.py --help

The defaults take about 15 minutes on 2 CPU cores, most of it compiling.
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
from dataclasses import asdict, dataclass, replace
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
    train_steps: int = 60
    """Timed training steps per dA and variant."""
    train_variants: tuple[str, ...] = (
        "reference",
        "fp32",
        "fp32-compiled",
        "bf16",
        "bf16-compiled",
    )
    """Training variants (``TRAIN_VARIANTS``)."""
    decode_batches: tuple[int, ...] = (1, 256)
    """Batch sizes of the greedy-decoding latency measurement."""
    decode_warmup: int = 3
    """Untimed greedy calls before the timed ones."""
    decode_repeats: int = 30
    """Timed greedy calls per (dA, batch, variant) setting."""
    iql_steps: int = 400
    """Training steps of the Q-Transformer / IQL comparison (0 skips it)."""
    iql_skip: int = 100
    """Steps left out of that comparison's timing (warm-up, compilation)."""
    decode_compiled: bool = True
    """Also time compiled decoding (about a minute of compilation per dA and batch on a CPU)."""
    matmul_size: int = 2048
    """Side of the square matmuls (fp32 and bf16) that measure the peak FLOP/s."""
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
        task=torch.zeros(B, dtype=torch.long, device=device),
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


def matmul_peak(cfg: BenchConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """GFLOP/s of a square matmul in ``dtype``: best and median over the timed repeats."""
    n = cfg.matmul_size
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    times = time_calls(lambda: torch.matmul(a, b), 2, cfg.matmul_repeats, device)
    flops = 2 * n**3
    return {
        "size": n,
        "dtype": str(dtype).removeprefix("torch."),
        "peak_gflops": flops / min(times) / 1e9,
        "median_gflops": flops / statistics.median(times) / 1e9,
    }


TRAIN_VARIANTS: dict[str, dict[str, Any]] = {
    "reference": {"precision": "fp32", "compile": False},
    "fp32": {"precision": "fp32", "compile": False},
    "fp32-compiled": {"precision": "fp32", "compile": True},
    "bf16": {"precision": "bf16", "compile": False},
    "bf16-compiled": {"precision": "bf16", "compile": True},
}
"""``reference`` is the update as it was before the speed work, rebuilt here: AdamW looping
over parameters in Python and the target network updated one parameter at a time."""


def as_reference(learner: Learner) -> None:
    """Turn ``learner`` into the pre-speed-work update (see ``TRAIN_VARIANTS``)."""
    groups = [{k: v for k, v in g.items() if k != "fused"} for g in learner.optimizer.param_groups]
    learner.optimizer = torch.optim.AdamW(groups, lr=learner.cfg.lr, foreach=False)

    @torch.no_grad()
    def update_target() -> None:
        tau = learner.cfg.target_update_rate
        for p_t, p in zip(learner.target.parameters(), learner.model.parameters(), strict=True):
            p_t.lerp_(p, tau)
        for b_t, b in zip(learner.target.buffers(), learner.model.buffers(), strict=True):
            b_t.copy_(b)

    learner._update_target = update_target  # type: ignore[method-assign]


def interleaved(
    fns: dict[str, Callable[[], object]], warmup: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each function, timed in turns (one call of each per round)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def bench_training(
    cfg: BenchConfig, mcfg: ModelConfig, device: torch.device, peaks: dict[str, float]
) -> dict[str, Any]:
    batches = [random_batch(mcfg, cfg.batch_size, device) for _ in range(8)]
    flops = train_step_flops(mcfg, cfg.batch_size)
    fns, compile_s = {}, {}
    for name in cfg.train_variants:
        tcfg = replace(train_config(cfg), **TRAIN_VARIANTS[name])
        learner = Learner(tcfg, mcfg.obs_dim, mcfg.action_dim, q_max=1.0, device=device)
        if name == "reference":
            as_reference(learner)
        stream = itertools.cycle(batches)
        start = time.perf_counter()
        learner.update(next(stream), metrics=False)  # compiles, when it does
        sync(device)
        compile_s[name] = time.perf_counter() - start
        fns[name] = lambda lr=learner, st=stream: lr.update(next(st), metrics=False)
    times = interleaved(fns, cfg.train_warmup, cfg.train_steps, device)
    out: dict[str, Any] = {"batch_size": cfg.batch_size, "variants": {}}
    for name, ts in times.items():
        median = statistics.median(ts)
        precision = TRAIN_VARIANTS[name]["precision"]
        achieved = flops["total"] / median / 1e9
        out["variants"][name] = {
            **TRAIN_VARIANTS[name],
            "step": summarize(ts),
            "first_step_s": compile_s[name],
            "samples_per_s": cfg.batch_size / median,
            "achieved_gflops": achieved,
            "utilization_pct": 100.0 * achieved / peaks[precision],
        }
    return out


def bench_decoding(cfg: BenchConfig, mcfg: ModelConfig, device: torch.device) -> list[dict]:
    torch.manual_seed(cfg.seed)
    model = QTransformer(mcfg).to(device).eval()
    results = []
    for batch in cfg.decode_batches:
        obs = torch.randn(batch, mcfg.window, mcfg.obs_dim, device=device)
        fns: dict[str, Callable[[], object]] = {
            "full": lambda o=obs: model.greedy(o, use_cache=False),
            "kv": lambda o=obs: model.greedy(o),
        }
        compile_s = None
        if cfg.decode_compiled:
            mode = "reduce-overhead" if device.type == "cuda" else None
            compiled = torch.compile(model.greedy, dynamic=False, mode=mode)
            start = time.perf_counter()
            same = torch.equal(compiled(obs)[0], model.greedy(obs)[0])
            compile_s = time.perf_counter() - start
            if not same:
                raise RuntimeError(f"compiled decoding chose other bins (dA {mcfg.action_dim})")
            fns["compiled"] = lambda o=obs, c=compiled: c(o)
        times = interleaved(fns, cfg.decode_warmup, cfg.decode_repeats, device)
        for name, ts in times.items():
            results.append(
                {
                    "batch": batch,
                    "variant": name,
                    "use_cache": name != "full",
                    "median_ms": 1e3 * statistics.median(ts),
                    "min_ms": 1e3 * min(ts),
                    "n": len(ts),
                    **({"compile_s": compile_s} if name == "compiled" else {}),
                }
            )
    return results


def bench_action_dim(
    cfg: BenchConfig, action_dim: int, peaks: dict[str, float], device: torch.device
) -> dict[str, Any]:
    mcfg = model_config(cfg, action_dim)
    return {
        "action_dim": action_dim,
        "seq_len": mcfg.seq_len,
        "n_params": sum(p.numel() for p in QTransformer(mcfg).parameters()),
        "flops_per_step": train_step_flops(mcfg, cfg.batch_size),
        "flops_counted_by_torch": counted_step_flops(
            Learner(train_config(cfg), mcfg.obs_dim, mcfg.action_dim, 1.0, device=device),
            random_batch(mcfg, cfg.batch_size, device),
        ),
        "train": bench_training(cfg, mcfg, device, peaks),
        "greedy": bench_decoding(cfg, mcfg, device),
    }


def step_rate(stamps: list[float], skip: int) -> float:
    """Steps per second between the ``skip``-th callback and the last one."""
    return (len(stamps) - 1 - skip) / (stamps[-1] - stamps[skip])


def bench_vs_iql(cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    """Training steps/s of the ``cpu`` grid's Q-Transformer (its network, 4 action dims, the
    fp32 and the fastest setting) and of d3rlpy's IQL as the grid runs it, both at the same
    batch on the same synthetic data, sampling included, timed from step ``iql_skip`` on."""
    import numpy as np

    import qtransformer as qt
    from qtransformer.baselines import train_baseline
    from qtransformer.bench.studies import QT_CPU

    rng = np.random.default_rng(cfg.seed)
    T = 4000
    ends = np.zeros(T, bool)
    ends[49::50] = True
    data = qt.OfflineDataset.from_arrays(
        observations=rng.normal(size=(T, 39)).astype(np.float32),
        actions=rng.uniform(-1, 1, (T, 4)).astype(np.float32),
        rewards=(ends & (rng.random(T) < 0.5)).astype(np.float32),
        terminals=ends,
        timeouts=np.zeros(T, bool),
    )
    steps, skip = cfg.iql_steps, cfg.iql_skip
    out: dict[str, Any] = {"batch_size": QT_CPU.batch_size, "steps": steps, "timed_from": skip}
    for name, change in (("qt", {}), ("qt-bf16-compiled", {"precision": "bf16", "compile": True})):
        stamps: list[float] = []
        qcfg = replace(QT_CPU, steps=steps, device=str(device), log_every=10**9, **change)
        qt.train(data, qcfg, callback=lambda *_, st=stamps: st.append(time.perf_counter()))
        out[f"{name}_steps_per_s"] = step_rate(stamps, skip)
    stamps = []
    train_baseline(
        "iql",
        data,
        steps,
        device=str(device),
        batch_size=QT_CPU.batch_size,
        callback=lambda *_: stamps.append(time.perf_counter()),
    )
    out["iql_steps_per_s"] = step_rate(stamps, skip)
    for name in ("qt", "qt-bf16-compiled"):
        out[f"{name}_step_over_iql_step"] = out["iql_steps_per_s"] / out[f"{name}_steps_per_s"]
    return out


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
    peaks = results["matmul"]
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"Training, batch {results['benchmark']['batch_size']} "
        f"({results['machine']['device']})",
        caption="util: % of the matmul peak of the variant's precision ("
        + ", ".join(f"{k} {v['peak_gflops']:.0f} GFLOP/s" for k, v in peaks.items())
        + ")",
    )
    for col in ("dA", "variant", "samples/s", "x reference", "step ms", "GFLOP/s", "util %"):
        table.add_column(col, justify="right")
    for r in results["per_action_dim"]:
        variants = r["train"]["variants"]
        ref = variants.get("reference", {}).get("samples_per_s")
        for name, v in variants.items():
            table.add_row(
                str(r["action_dim"]),
                name,
                f"{v['samples_per_s']:.0f}",
                f"{v['samples_per_s'] / ref:.2f}" if ref else "",
                fmt(1e3 * v["step"]["median_s"]),
                f"{v['achieved_gflops']:.1f}",
                f"{v['utilization_pct']:.1f}",
            )
    return table


def greedy_table(results: dict[str, Any]) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"Greedy decoding, ms per call ({results['machine']['device']})",
        caption="full: no KV cache; kv: with it; compiled: torch.compile of the whole decoding",
    )
    table.add_column("dA", justify="right")
    first = results["per_action_dim"][0]["greedy"]
    columns = list(dict.fromkeys((g["batch"], g["variant"]) for g in first))
    for b, name in columns:
        table.add_column(f"B={b} {name}", justify="right")
    for r in results["per_action_dim"]:
        greedy = {(g["batch"], g["variant"]): g["median_ms"] for g in r["greedy"]}
        table.add_row(str(r["action_dim"]), *(fmt(greedy[c]) for c in columns))
    return table


def print_tables(results: dict[str, Any]) -> None:
    console = Console()
    console.print(training_table(results))
    console.print(greedy_table(results))
    if results.get("vs_iql"):
        v = results["vs_iql"]
        console.print(
            f"Grid network, batch {v['batch_size']}: Q-Transformer {v['qt_steps_per_s']:.1f} "
            f"steps/s (bf16 compiled {v['qt-bf16-compiled_steps_per_s']:.1f}), IQL "
            f"{v['iql_steps_per_s']:.1f}: a Q-Transformer step costs "
            f"{v['qt_step_over_iql_step']:.2f} IQL steps "
            f"({v['qt-bf16-compiled_step_over_iql_step']:.2f} bf16 compiled)"
        )


def main(cfg: BenchConfig) -> dict[str, Any]:
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was given but CUDA is not available")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    matmul = {
        "fp32": matmul_peak(cfg, device, torch.float32),
        "bf16": matmul_peak(cfg, device, torch.bfloat16),
    }
    peaks = {k: v["peak_gflops"] for k, v in matmul.items()}
    per_dim = [bench_action_dim(cfg, dA, peaks, device) for dA in cfg.action_dims]
    vs_iql = bench_vs_iql(cfg, device) if cfg.iql_steps > 0 else None
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
        "vs_iql": vs_iql,
        "wall_time_s": time.perf_counter() - started,
    }
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)
    print(f"wrote {cfg.out}")
    return results


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
