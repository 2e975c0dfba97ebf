"""Multi-task from pixels: one agent over four Meta-World tasks, evaluated per task.

.venv/bin/python benchmarks/vision.py [--steps 1500] [--episodes-per-task 40]

Collects the ``mixed`` preset (2/3 demonstrations, 1/3 failed attempts) on four tasks with
64 px corner-camera frames, then trains, each conditioned on the instruction's
all-MiniLM-L6-v2 embedding:

- ``qt-pixels``: Q-Transformer reading images only (FiLM EfficientNet-style encoder);
- ``qt-state``: Q-Transformer reading the 39-d state vector (the ``cpu`` bench settings);
- ``bc-pixels``: behaviour cloning on the successful episodes with the same network and
  pixels (per-dimension cross-entropy of the data's bins).

Each is evaluated along training on every task with the training instructions, and at the end
with paraphrases held out from training. It also measures the encoder's frames/s, training
samples/s from images, and dataset bytes per image step. Every stage is saved under
``runs/vision`` and skipped on a rerun; results go to ``benchmarks/results/vision.json``
and ``vision.md`` as they arrive.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
import tyro

import qtransformer as qt
from qtransformer import collection as mw
from qtransformer.atomic import write_dir_atomically
from qtransformer.baselines import AgentPolicy
from qtransformer.bench import QT_CPU
from qtransformer.discretize import ActionDiscretizer
from qtransformer.envs import metaworld as menv
from qtransformer.evaluate import evaluate_metaworld
from qtransformer.machine import machine_info
from qtransformer.trainer import agent_of

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("drawer-open-v3", "drawer-close-v3", "button-press-topdown-v3", "door-open-v3")
PARAPHRASES = {
    "drawer-open-v3": "pull the drawer out",
    "drawer-close-v3": "push the drawer shut",
    "button-press-topdown-v3": "push the button down from above",
    "door-open-v3": "swing the door open",
}


@dataclass
class Args:
    steps: int = 1500
    """Gradient steps of the pixel agents (the state agent keeps the cpu bench's 1000)."""
    episodes_per_task: int = 40
    image_size: int = 64
    eval_episodes: int = 25
    eval_points: int = 3
    seed: int = 0
    work: Path = Path("runs/vision")
    out: Path = ROOT / "benchmarks" / "results"
    threads: int = 2
    speed: bool = True
    """Measure encoder frames/s and training samples/s at the end (needs a quiet machine)."""


MAX_STEPS, ACTION_REPEAT = 200, 4
# alpha 1: the weight the first three agents were measured with; the state profile moved to
# 0.5 later (see bench.QT_CPU), and the fourth agent measures that weight from pixels.
PIXEL = replace(
    QT_CPU,
    conservative_weight=1.0,
    batch_size=64,
    observation="image",
    task_features="instruction",
    augment=True,
    log_every=250,
)
AGENTS: dict[str, dict[str, Any]] = {
    "qt-pixels": {},
    "qt-state": {"observation": "state", "augment": False},
    "bc-pixels": {"loss": "bc", "q_heads": 1},
    "qt-pixels-alpha-0.5": {"conservative_weight": 0.5},
}


def dataset(args: Args) -> qt.OfflineDataset:
    path = args.work / f"data-seed{args.seed}"
    if not (path / "dataset.json").exists():
        recipe = mw.preset_recipe(
            "mixed", list(TASKS), args.episodes_per_task, MAX_STEPS, ACTION_REPEAT
        )
        t0 = time.perf_counter()
        episodes = mw.collect(recipe, seed=args.seed, workers=2, image_size=args.image_size)
        seconds = time.perf_counter() - t0
        meta = {
            "camera": "corner",
            "collect_seconds": seconds,
            "summary": mw.summary(episodes),
        }
        data = qt.OfflineDataset.from_episodes(episodes, *menv.action_bounds(), metadata=meta)
        from qtransformer.language import ensure_instruction_embeddings

        ensure_instruction_embeddings(data)
        data.save(path)
    return qt.OfflineDataset.open(path)


def successes_only(data: qt.OfflineDataset) -> qt.OfflineDataset:
    episodes = [e for e in data.to_episodes() if float(np.sum(e.rewards)) > 0]
    out = qt.OfflineDataset.from_episodes(
        episodes, data.action_low, data.action_high, metadata=data.metadata
    )
    out.set_instruction_embeddings(
        np.asarray(data.instruction_embeddings), data.instruction_embedding_model
    )
    return out


def _eval(policy: Any, args: Args, paraphrased: bool = False) -> dict[str, dict[str, Any]]:
    res = evaluate_metaworld(
        policy,
        list(TASKS),
        args.eval_episodes,
        num_envs=5,
        seed=1000 + args.seed,
        max_steps=MAX_STEPS,
        action_repeat=ACTION_REPEAT,
        instructions=PARAPHRASES if paraphrased else None,
    )
    return {task: r.as_dict() for task, r in res.items()}


def run_agent(name: str, data: qt.OfflineDataset, args: Args) -> dict[str, Any]:
    """Train one agent with evaluations along the way; saved, and skipped when done."""
    path = args.work / f"{name}-seed{args.seed}"
    if (path / "result.json").exists():
        return json.loads((path / "result.json").read_text())
    cfg = replace(PIXEL, seed=args.seed, steps=args.steps, **AGENTS[name])
    if name == "qt-state":
        cfg = replace(cfg, steps=QT_CPU.steps, batch_size=QT_CPU.batch_size)
    train_data = successes_only(data) if cfg.loss == "bc" else data
    points = {round(cfg.steps * k / args.eval_points) for k in range(1, args.eval_points + 1)}
    curve: list[dict[str, Any]] = []
    timing = {"train_seconds": 0.0, "eval_seconds": 0.0}
    t_last = time.perf_counter()

    def on_step(step: int, metrics: dict[str, float], learner: Any) -> None:
        nonlocal t_last
        if step not in points:
            return
        timing["train_seconds"] += time.perf_counter() - t_last
        t0 = time.perf_counter()
        agent = agent_of(learner, train_data)
        curve.append({"steps": step, "tasks": _eval(AgentPolicy(agent), args)})
        print(name, step, {t: r["success_rate"] for t, r in curve[-1]["tasks"].items()})
        learner.model.train()
        timing["eval_seconds"] += time.perf_counter() - t0
        t_last = time.perf_counter()

    agent = qt.train(train_data, cfg, callback=on_step)
    t0 = time.perf_counter()
    paraphrased = _eval(AgentPolicy(agent), args, paraphrased=True)
    timing["eval_seconds"] += time.perf_counter() - t0
    record = {
        "agent": name,
        "seed": args.seed,
        "config": asdict(cfg),
        "train_episodes": train_data.num_episodes,
        "train_steps_in_data": len(train_data),
        "curve": curve,
        "paraphrased": paraphrased,
        **timing,
    }

    agent.save(args.work / f"{name}-seed{args.seed}-agent")

    def write(tmp: Path) -> None:
        (tmp / "result.json").write_text(json.dumps(record, default=str))

    write_dir_atomically(path, write)
    return record


def speed(data: qt.OfflineDataset, threads: int) -> dict[str, float]:
    """On one batch of the dataset's frames: the image encoder alone (frames/s, batch 64, no
    gradient) and one full update of each pixel agent (samples/s). Run it on a quiet machine."""
    from qtransformer.data.sampler import TransitionSampler
    from qtransformer.encoders import ImageEncoder
    from qtransformer.learner import Learner

    torch.set_num_threads(threads)
    H, W, C = (int(x) for x in data.images.shape[1:])
    enc = ImageEncoder((H, W, C), PIXEL.d_model, PIXEL.image_tokens, PIXEL.image_channels, 384)
    frames = torch.from_numpy(np.array(data.images[:64]))[:, None]  # (64, 1, H, W, C)
    cond = torch.randn(64, 384)

    def rate(fn: Any, per_call: int, seconds: float = 5.0) -> float:
        fn()
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            fn()
            n += per_call
        return n / (time.perf_counter() - t0)

    with torch.no_grad():
        out = {
            "threads": threads,
            "encoder_frames_per_s_batch64": rate(lambda: enc(frames, cond), 64),
        }
    features = torch.from_numpy(np.asarray(data.instruction_embeddings))
    for name in ("qt-pixels", "bc-pixels"):
        cfg = replace(PIXEL, **AGENTS[name])
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
        out[f"{name}_train_samples_per_s"] = rate(
            partial(learner.update, batch, metrics=False), cfg.batch_size, 10.0
        )
    return out


def table(results: dict[str, Any]) -> str:
    lines = [
        "| agent | " + " | ".join(TASKS) + " | mean | paraphrased mean |",
        "|---|" + "---|" * (len(TASKS) + 2),
    ]
    for name, r in results["agents"].items():
        last = r["curve"][-1]["tasks"]
        rates = [last[t]["success_rate"] for t in TASKS]
        para = [r["paraphrased"][t]["success_rate"] for t in TASKS]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{x:.2f}" for x in rates)
            + f" | {np.mean(rates):.2f} | {np.mean(para):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    data = dataset(args)
    out_json = args.out / "vision.json"
    results: dict[str, Any] = {
        "command": "python benchmarks/vision.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "tasks": list(TASKS),
        "paraphrases": PARAPHRASES,
        "dataset": {
            "preset": "mixed",
            "episodes": data.num_episodes,
            "steps": len(data),
            "image_shape": list(data.images.shape[1:]),
            "collect_seconds": data.metadata.get("collect_seconds"),
            "summary": data.metadata.get("summary"),
            "store_bytes_per_step": sum(
                f.stat().st_size for f in (args.work / f"data-seed{args.seed}").iterdir()
            )
            / len(data),
        },
        "agents": {},
    }
    if out_json.exists():  # keep the speed figures of an earlier (quiet) run
        results["speed"] = json.loads(out_json.read_text()).get("speed")
    for name in AGENTS:
        results["agents"][name] = run_agent(name, data, args)
        args.out.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(results, indent=1, default=str))
        (args.out / "vision.md").write_text(table(results))
        print(table(results))
    if args.speed:
        results["speed"] = speed(data, args.threads)
        out_json.write_text(json.dumps(results, indent=1, default=str))
        print(results["speed"])


if __name__ == "__main__":
    main(tyro.cli(Args))
