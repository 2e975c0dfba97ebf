"""Multi-task from pixels: the pixel study (``qtransformer bench --study pixels``), and the
speed of its image encoder and updates.

.venv/bin/python benchmarks/vision.py [--steps 1500] [--episodes-per-task 40] [--no-speed]

The study (declared in ``qtransformer.bench.studies``, run by
``qtransformer.bench.runner_pixels``) collects the ``mixed`` preset (2/3 demonstrations, 1/3
failed attempts) on four tasks with 64 px corner-camera frames, then trains, each
conditioned on the instruction's all-MiniLM-L6-v2 embedding:

- ``qt-pixels``: Q-Transformer reading images only (FiLM EfficientNet-style encoder);
- ``qt-state``: Q-Transformer reading the 39-d state vector (the ``cpu`` bench settings);
- ``bc-pixels``: behaviour cloning on the successful episodes with the same network and
  pixels (per-dimension cross-entropy of the data's bins);
- ``qt-pixels-alpha-0.5``: the first with the state profile's conservative weight.

Each is evaluated along training on every task with the training instructions, and at the end
with paraphrases held out from training. This script also measures the encoder's frames/s and
training samples/s from images. Every stage is saved under ``runs/vision`` and skipped on a
rerun; results go to ``benchmarks/results/vision.json`` and ``vision.md``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
import tyro

from qtransformer.bench.runner_pixels import dataset, run_pixels, summarize_pixels
from qtransformer.bench.studies import STUDIES, PixelStudy
from qtransformer.data.dataset import OfflineDataset
from qtransformer.discretize import ActionDiscretizer
from qtransformer.machine import throughput

ROOT = Path(__file__).resolve().parents[1]
STUDY = STUDIES["pixels"]
assert isinstance(STUDY, PixelStudy)


@dataclass
class Args:
    steps: int = STUDY.steps
    """Gradient steps of the pixel agents (the state agent keeps the cpu bench's 1000)."""
    episodes_per_task: int = STUDY.episodes_per_task
    image_size: int = STUDY.image_size
    eval_episodes: int = STUDY.eval_episodes
    eval_points: int = STUDY.eval_points
    seed: int = STUDY.seeds[0]
    work: Path = Path("runs/vision")
    out: Path = ROOT / "benchmarks" / "results"
    threads: int = 2
    speed: bool = True
    """Measure encoder frames/s and training samples/s at the end (needs a quiet machine)."""


def speed(data: OfflineDataset, threads: int, study: PixelStudy = STUDY) -> dict[str, float]:
    """On one batch of the dataset's frames: the image encoder alone (frames/s, batch 64, no
    gradient) and one full update of each pixel agent (samples/s). Run it on a quiet machine."""
    from qtransformer.data.sampler import TransitionSampler
    from qtransformer.encoders import ImageEncoder
    from qtransformer.learner import Learner

    torch.set_num_threads(threads)
    H, W, C = (int(x) for x in data.images.shape[1:])
    pixel = study.config
    enc = ImageEncoder((H, W, C), pixel.d_model, pixel.image_tokens, pixel.image_channels, 384)
    frames = torch.from_numpy(np.array(data.images[:64]))[:, None]  # (64, 1, H, W, C)
    cond = torch.randn(64, 384)

    with torch.no_grad():
        out = {
            "threads": threads,
            "encoder_frames_per_s_batch64": throughput(lambda: enc(frames, cond), 64),
        }
    features = torch.from_numpy(np.asarray(data.instruction_embeddings))
    for name in ("qt-pixels", "bc-pixels"):
        cfg = replace(study.config, **study.agents[name])
        disc = ActionDiscretizer(data.action_low, data.action_high, cfg.n_bins)
        sampler = TransitionSampler(data, disc, cfg.gamma, cfg.n_step, cfg.window, images=True)
        learner = Learner(
            cfg,
            data.obs_dim,
            data.action_dim,
            1.0,
            len(data.tasks),
            image_shape=(H, W, C),
            task_features=features,
        )
        batch = sampler.batch(np.arange(cfg.batch_size))
        out[f"{name}_train_samples_per_s"] = throughput(
            partial(learner.update, batch, metrics=False), cfg.batch_size, 10.0
        )
    return out


def main(args: Args) -> None:
    study = replace(
        STUDY,
        steps=args.steps,
        episodes_per_task=args.episodes_per_task,
        image_size=args.image_size,
        eval_episodes=args.eval_episodes,
        eval_points=args.eval_points,
        seeds=(args.seed,),
    )
    run_pixels(study, args.work, args.threads)
    command = "python benchmarks/vision.py " + " ".join(sys.argv[1:])
    summarize_pixels(study, args.work, args.out, command=command)
    print((args.out / "vision.md").read_text())
    if args.speed:
        out_json = args.out / "vision.json"
        results = json.loads(out_json.read_text())
        results["speed"] = speed(
            dataset(study, args.work, study.presets[0], args.seed), args.threads, study
        )
        out_json.write_text(json.dumps(results, indent=1, default=str))
        print(results["speed"])


if __name__ == "__main__":
    main(tyro.cli(Args))
