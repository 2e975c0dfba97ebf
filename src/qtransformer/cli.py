"""Command line: ``qtransformer train | demo``, built with tyro from the config dataclasses."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Union

import tyro

from qtransformer.config import TrainConfig

log = logging.getLogger("qtransformer")


@dataclass
class TrainArgs:
    """Train a Q-Transformer on an offline dataset (run under torchrun for several processes)."""

    data: Path
    """Dataset file: a .npz of flat arrays (observations, actions, rewards, terminals, timeouts)."""
    out: Path = Path("runs/train")
    """Output directory: checkpoint/, agent/, train_config.json, tb/."""
    resume: bool = False
    """Continue from out/checkpoint if it exists."""
    tensorboard: bool = False
    """Write TensorBoard logs to out/tb."""
    config: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class DemoArgs:
    """Collect a small dataset, train, evaluate, print the table and write the plot."""

    out: Path = Path("runs/demo")
    """Where the dataset, the agent, results.json and the plot go."""
    steps: int = 1500
    """Gradient steps."""
    seed: int = 0
    """Seed of collection and training."""


def run_train(args: TrainArgs) -> None:
    from qtransformer.data.dataset import OfflineDataset
    from qtransformer.trainer import dataset_summary, train

    data = OfflineDataset.load_npz(args.data)
    log.info("dataset %s: %s", args.data, dataset_summary(data))
    train(
        data,
        args.config,
        out_dir=args.out,
        resume=args.resume,
        progress=True,
        tensorboard=args.tensorboard,
    )
    log.info("agent written to %s", args.out / "agent")
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def run_demo(args: DemoArgs) -> None:
    from qtransformer.demo import run_demo as demo

    demo(args.out, steps=args.steps, seed=args.seed)


Commands = Union[  # noqa: UP007 (tyro reads the Annotated members of a typing.Union)
    Annotated[TrainArgs, tyro.conf.subcommand("train")],
    Annotated[DemoArgs, tyro.conf.subcommand("demo")],
]


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = tyro.cli(
        Commands,  # type: ignore[arg-type]
        args=argv,
        config=(tyro.conf.OmitArgPrefixes, tyro.conf.OmitSubcommandPrefixes),
    )
    if isinstance(args, TrainArgs):
        run_train(args)
    else:
        run_demo(args)


if __name__ == "__main__":
    main()
