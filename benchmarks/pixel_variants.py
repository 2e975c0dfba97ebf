"""Which blocks of the pretrained trunk to freeze, fine-tune or drop, and how many tokens per
frame: Q-Transformer variants on the pretrained study's ``noisy`` data (seed 0), each trained
1000 steps and evaluated on 20 episodes per task, a quick screen before the study.

.venv/bin/python benchmarks/pixel_variants.py [--variants b10-t16,frozen-all-t16] [--episodes 20]

Needs the study's dataset (``qtransformer bench --study pretrained`` collects it first, under
``runs/bench/pretrained/data-noisy-seed0``). Appends one record per variant to
benchmarks/results/pixel_variants.jsonl.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import tyro

from qtransformer.bench.jsonl import append_jsonl
from qtransformer.bench.runner_pixels import evaluate_agent
from qtransformer.bench.studies import STUDIES, PixelStudy
from qtransformer.data.dataset import OfflineDataset
from qtransformer.machine import machine_info
from qtransformer.policy import AgentPolicy
from qtransformer.trainer import train

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "b11-15-t4": {"image_frozen_blocks": 11, "image_last_block": 15, "image_tokens": 4},
    "b10-t4": {"image_frozen_blocks": 10, "image_last_block": 10, "image_tokens": 4},
    "b10-t16": {"image_frozen_blocks": 10, "image_last_block": 10, "image_tokens": 16},
    "frozen-all-t16": {"image_frozen_blocks": 11, "image_last_block": 10, "image_tokens": 16},
    "frozen-all-t16-norm": {
        "image_frozen_blocks": 11,
        "image_last_block": 10,
        "image_tokens": 16,
        "image_feature_norm": True,
    },
    "b10-t16-norm": {
        "image_frozen_blocks": 10,
        "image_last_block": 10,
        "image_tokens": 16,
        "image_feature_norm": True,
    },
}
"""``b<first>-<last>``: blocks fine-tuned with FiLM (the ones before are frozen and cached);
``frozen-all``: blocks 0-10 frozen, no FiLM, the instruction only through the task token;
``t<k>``: tokens per frame; ``-norm``: the trunk's output standardized per channel and
position with the training frames' statistics."""


@dataclass
class Args:
    variants: str = "b10-t16,frozen-all-t16"
    episodes: int = 20
    """Evaluation episodes per task."""
    data: Path = Path("runs/bench/pretrained/data-noisy-seed0")
    threads: int = 2


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    study = STUDIES["pretrained"]
    assert isinstance(study, PixelStudy)
    study = replace(study, eval_episodes=args.episodes)
    data = OfflineDataset.open(args.data)
    out = ROOT / "benchmarks" / "results" / "pixel_variants.jsonl"
    for name in args.variants.split(","):
        cfg = replace(study.config, steps=1000, seed=0, **VARIANTS[name])
        t0 = time.perf_counter()
        agent = train(data, cfg)
        t1 = time.perf_counter()
        res = evaluate_agent(AgentPolicy(agent), study, 0)
        rates = {t: r["success_rate"] for t, r in res.items()}
        record = {
            "variant": name,
            "change": VARIANTS[name],
            "data": str(args.data),
            "eval_episodes_per_task": args.episodes,
            "rates": rates,
            "mean": sum(rates.values()) / len(rates),
            "train_seconds": t1 - t0,
            "eval_seconds": time.perf_counter() - t1,
            "command": "python benchmarks/pixel_variants.py " + " ".join(sys.argv[1:]),
            "machine": machine_info(),
        }
        print(json.dumps({k: record[k] for k in ("variant", "rates", "mean")}), flush=True)
        append_jsonl(out, record)


if __name__ == "__main__":
    main(tyro.cli(Args))
