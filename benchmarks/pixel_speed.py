"""Speed of the pixel pipeline: the from-scratch encoder against the pretrained EfficientNet-Lite0
one (frames/s when acting, frames/s of building the training cache) and training updates of each
(samples/s), in one run so the ratios hold on a shared machine.

.venv/bin/python benchmarks/pixel_speed.py [--threads 2] [--seconds 5]

Frames are random 64 px uint8 images and the batch is drawn from a synthetic 4-task dataset:
speed does not depend on what the pixels show. Writes benchmarks/results/pixel_speed.json and
pixel_speed.md.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import tyro

import qtransformer as qt
from qtransformer.bench.studies import LITE0, PIXEL
from qtransformer.data.sampler import TransitionSampler
from qtransformer.discretize import ActionDiscretizer
from qtransformer.encoders import ImageEncoder, PretrainedImageEncoder
from qtransformer.learner import Learner
from qtransformer.machine import machine_info, throughput

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import as_reference, interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


@dataclass
class Args:
    threads: int = 2
    seconds: float = 5.0
    """Time each acting measurement runs."""
    rounds: int = 20
    """Timed rounds of the training updates (one update of each variant per round, in turns)."""
    device: str = "cpu"
    """'cpu' or 'cuda'."""
    out: Path = ROOT / "benchmarks" / "results"


def synthetic(T: int = 512) -> qt.OfflineDataset:
    rng = np.random.default_rng(0)
    ends = np.arange(24, T, 25)
    terminals = np.zeros(T, bool)
    terminals[ends] = True
    rewards = np.zeros(T, np.float32)
    rewards[ends[::2]] = 1.0
    data = qt.OfflineDataset.from_arrays(
        observations=rng.normal(size=(T, 39)).astype(np.float32),
        actions=rng.uniform(-1, 1, (T, 4)).astype(np.float32),
        rewards=rewards,
        terminals=terminals,
        timeouts=np.zeros(T, bool),
        action_low=-np.ones(4),
        action_high=np.ones(4),
        task_ids=np.arange(T) % 4,
        tasks=["a", "b", "c", "d"],
        images=rng.integers(0, 256, (T, SIZE, SIZE, 3), dtype=np.uint8),
    )
    embeddings = rng.normal(size=(4, 384)).astype(np.float32)
    data.set_instruction_embeddings(embeddings, "synthetic")
    return data


def update_call(
    data: qt.OfflineDataset, cfg: qt.TrainConfig, device: str, reference: bool = False
) -> Callable[[], object]:
    """One full update, the batch ready (for lite0 from cached prefix features), after the
    first calls (compilation, when there is one). ``reference``: the update as it was before
    the speed work (speed.py's ``as_reference``)."""
    features = torch.from_numpy(np.asarray(data.instruction_embeddings))
    learner = Learner(
        cfg, data.obs_dim, data.action_dim, 1.0, 4, image_shape=(SIZE, SIZE, 3),
        task_features=features, device=device,
    )  # fmt: skip
    if reference:
        as_reference(learner)
    source = None
    if isinstance(learner.model.image_encoder, PretrainedImageEncoder):
        assert data.images is not None
        source = learner.model.image_encoder.cache(data.images)
    disc = ActionDiscretizer(data.action_low, data.action_high, cfg.n_bins)
    sampler = TransitionSampler(
        data, disc, cfg.gamma, cfg.n_step, cfg.window, images=True, image_source=source
    )
    batch = sampler.batch(np.arange(cfg.batch_size)).to(device)
    for _ in range(3):
        learner.update(batch, metrics=False)
    return partial(learner.update, batch, metrics=False)


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    data = synthetic()
    frames = torch.from_numpy(np.array(data.images[:64]))[:, None]  # (64, 1, H, W, C)
    cond = torch.randn(64, 384)
    scratch = ImageEncoder(
        (SIZE, SIZE, 3), PIXEL.d_model, PIXEL.image_tokens, PIXEL.image_channels, 384
    )
    lite = PretrainedImageEncoder(
        (SIZE, SIZE, 3), LITE0.d_model, LITE0.image_tokens, 384, LITE0.image_frozen_blocks,
        LITE0.image_last_block,
    )  # fmt: skip
    lite.load_pretrained()
    dev = torch.device(args.device)
    scratch, lite, frames, cond = scratch.to(dev), lite.to(dev), frames.to(dev), cond.to(dev)
    with torch.no_grad():
        act = {
            "scratch": throughput(lambda: scratch(frames, cond), 64, args.seconds),
            "lite0": throughput(lambda: lite(frames, cond), 64, args.seconds),
        }
        cache = throughput(lambda: lite.prefix(frames[:, 0]), 64, args.seconds)
    variants = {
        "qt lite0 reference": replace(LITE0, steps=10**6),
        "qt scratch": replace(PIXEL, steps=10**6),
        "qt lite0": replace(LITE0, steps=10**6),
        "bc lite0": replace(LITE0, loss="bc", steps=10**6),
        "qt lite0 bf16": replace(LITE0, steps=10**6, precision="bf16"),
        "qt lite0 compiled": replace(LITE0, steps=10**6, compile=True),
        "qt lite0 bf16 compiled": replace(LITE0, steps=10**6, precision="bf16", compile=True),
    }
    calls = {
        name: update_call(data, cfg, args.device, reference=name.endswith("reference"))
        for name, cfg in variants.items()
    }
    # In turns, so a busy shared machine slows every variant alike and the ratios hold.
    times = interleaved(calls, 0, args.rounds, torch.device(args.device))
    train = {name: variants[name].batch_size / statistics.median(ts) for name, ts in times.items()}
    out = {
        "command": "python benchmarks/pixel_speed.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(torch.device(args.device)),
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "act_frames_per_s_batch64": act,
        "lite0_cache_frames_per_s_batch64": cache,
        "train_samples_per_s": train,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pixel_speed.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.out / "pixel_speed.md").write_text(table(out))
    print(table(out))


def table(s: dict) -> str:
    """pixel_speed.md from pixel_speed.json."""
    a, t = s["act_frames_per_s_batch64"], s["train_samples_per_s"]
    first, last = LITE0.image_frozen_blocks, LITE0.image_last_block
    tuned = f"block {first}" if first == last else f"blocks {first}-{last}"
    return (
        "| encoder | acting: frames/s (64 px, batch 64, no gradient) | training cache: "
        "frames/s | QT update: samples/s | BC update: samples/s |\n|---|---|---|---|---|\n"
        f"| from scratch (MBConv, GroupNorm) | {a['scratch']:.0f} | none | {t['qt scratch']:.0f} "
        "| |\n"
        f"| EfficientNet-Lite0, blocks 0-{LITE0.image_frozen_blocks - 1} frozen and cached, "
        f"{tuned} fine-tuned | {a['lite0']:.0f} | "
        f"{s['lite0_cache_frames_per_s_batch64']:.0f} | {t['qt lite0']:.0f} | "
        f"{t['bc lite0']:.0f} |\n"
        + "".join(
            f"| the same, {name.removeprefix('qt lite0 ')} | | | {t[name]:.0f} "
            f"({t[name] / t['qt lite0 reference']:.2f}x the reference) | |\n"
            for name in ("qt lite0 bf16", "qt lite0 compiled", "qt lite0 bf16 compiled")
            if name in t and "qt lite0 reference" in t
        )
        + (
            f"| the same, with AdamW and the target update as before the speed work "
            f"(reference; the encoder's channels-last order applies to it too) | | | "
            f"{t['qt lite0 reference']:.0f} | |\n"
            if "qt lite0 reference" in t
            else ""
        )
    )


if __name__ == "__main__":
    main(tyro.cli(Args))
