"""The training loop: sampling, updates, logging, checkpoints, resume, data parallelism.

Under ``torchrun`` (``WORLD_SIZE > 1``) every process draws the same global batch indices
from the same seeded generator and trains on its own equal slice; DistributedDataParallel
averages the gradients, so the result matches one process on the whole global batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from qtransformer.agent import Agent
from qtransformer.atomic import (
    file_digest,
    locked,
    recover,
    write_dir_atomically,
    write_text_atomically,
)
from qtransformer.config import TrainConfig
from qtransformer.data.dataset import OfflineDataset
from qtransformer.data.loader import BatchStream
from qtransformer.data.sampler import TransitionSampler
from qtransformer.data.video import VideoFrames
from qtransformer.discretize import ActionDiscretizer
from qtransformer.encoders.pretrained import PretrainedImageEncoder
from qtransformer.learner import Learner

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss or non-finite weights; nothing was saved from it."""


_DIVERGED_HINT = "learning rate too high or gradient clipping off (--lr, --grad-clip)"


class _LossWatch:
    """Remembers, on the device, the first step whose loss was NaN or inf: recording costs no
    host synchronization, so the hot loop stays free of them; :meth:`check` reads it (one
    scalar, and one small all-reduce under torchrun) at log, evaluation and checkpoint steps
    and at the end, so every process stops at the same step and nothing diverged is saved."""

    def __init__(self, device: torch.device) -> None:
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.loss = torch.zeros((), device=device)

    def record(self, loss: torch.Tensor | None, step: int) -> None:
        if loss is None:
            return
        new = ~torch.isfinite(loss) & (self.first < 0)
        self.first.masked_fill_(new, step)
        self.loss = torch.where(new, loss.float(), self.loss)

    def check(self, step: int, world: int) -> None:
        first = self.first.clone()
        if world > 1:  # the first bad step of any process; then all raise together
            flag = torch.where(first < 0, torch.iinfo(torch.long).max, first)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            first = torch.where(flag == torch.iinfo(torch.long).max, -1, flag)
        k = int(first)
        if k >= 0:
            value = float(self.loss) if int(self.first) == k else float("nan")
            raise TrainingDiverged(
                f"training diverged at step {k}: loss = {value} (noticed at step {step}); "
                f"likely cause: {_DIVERGED_HINT}. Nothing was saved from step {k} on; the last "
                "good checkpoint, if any, is kept"
            )


def _check_weights(learner: Learner, step: int) -> None:
    """Raise :class:`TrainingDiverged` when the online network holds NaN or inf weights."""
    flags = [torch.isfinite(t).all() for t in learner.model.state_dict().values()]
    if flags and not bool(torch.stack(flags).all()):
        raise TrainingDiverged(
            f"training diverged at step {step}: the network's weights contain NaN or inf; "
            f"likely cause: {_DIVERGED_HINT}. Not saving them; the last good checkpoint, if "
            "any, is kept"
        )


def _write_config(out: Path | None, cfg: TrainConfig) -> None:
    """``out/train_config.json``, written only beside weights that were saved (so a run that
    diverged or was refused leaves no config without its agent), and atomically."""
    if out is None:
        return
    write_text_atomically(out / "train_config.json", json.dumps(asdict(cfg), indent=2))


RUN_FILES = ("checkpoint", "agent", "train_config.json")


def _clear_run(out: Path) -> None:
    """A fresh run into ``out`` replaces what an earlier run left there, from the start, so
    the folder never mixes the agent of one run with the checkpoint or config of another."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found:
        log.warning("replacing the earlier run in %s (%s)", out, ", ".join(found))
    for name in found:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


Callback = Callable[[int, dict[str, float], Learner], None]
Evaluation = Callable[[Agent, int], "Mapping[str, float] | None"]
"""``evaluate(agent, step)`` along training; numbers it returns are logged under ``eval/``."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and dist.is_available() and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def _init_distributed(device_name: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        use_cuda = device_name != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


RESUMABLE_CHANGES = (
    "device",
    "precision",
    "compile",
    "log_every",
    "checkpoint_every",
    "steps",
    "data_workers",
    "act_temperature",
)
"""Settings a resumed run may change; any other difference is a different run. ``steps``
extends (or shortens) a run; the learning-rate schedule then spans the new total."""


class CheckpointMismatch(ValueError):
    """``--resume`` found a checkpoint of another run (settings or data), or a damaged one."""


WEIGHT_FILES = ("model.safetensors", "target.safetensors")


def save_checkpoint(
    path: str | Path,
    learner: Learner,
    agent: Agent,
    generator: torch.Generator,
    fingerprint: str = "",
) -> None:
    """Atomically write everything needed to act (model + config) and to resume exactly,
    with what identifies the run: its training config, the dataset's fingerprint and a
    checksum of each weight file, which :func:`load_checkpoint` checks."""

    def write(tmp: Path) -> None:
        model_digest = agent.write_files(tmp)
        save_file(learner.target.state_dict(), str(tmp / "target.safetensors"))
        torch.save(
            {
                "optimizer": learner.optimizer.state_dict(),
                "step": learner.step,
                "torch_rng": torch.get_rng_state(),
                "sampler_rng": generator.get_state(),
                "config": json.dumps(asdict(learner.cfg), sort_keys=True),
                "data_fingerprint": fingerprint,
                "weights_sha256": {
                    "model.safetensors": model_digest,
                    "target.safetensors": file_digest(tmp / "target.safetensors"),
                },
            },
            tmp / "trainer_state.pt",
        )

    write_dir_atomically(path, write)


def _differences(saved: Mapping[str, object], now: Mapping[str, object]) -> list[str]:
    keys = sorted((set(saved) | set(now)) - set(RESUMABLE_CHANGES))
    return [
        f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}"
        for k in keys
        if saved.get(k) != now.get(k)
    ]


def load_checkpoint(
    path: str | Path,
    learner: Learner,
    generator: torch.Generator,
    fingerprint: str | None = None,
) -> None:
    """Restore a checkpoint written by :func:`save_checkpoint` into ``learner``.

    Raises:
        CheckpointMismatch: naming the checkpoint and what differs: the training settings
            (every differing field but those in :data:`RESUMABLE_CHANGES`), the dataset
            (``fingerprint``), a weight file whose checksum does not match, or a missing file.
    """
    path = Path(path)
    state_file = path / "trainer_state.pt"
    for name in ("trainer_state.pt", *WEIGHT_FILES):
        if not (path / name).is_file():
            raise CheckpointMismatch(
                f"{path} is an incomplete checkpoint ({name} is missing); not starting over on "
                "top of it: move it away to train from step 0"
            )
    try:
        state = torch.load(state_file, weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise CheckpointMismatch(f"{state_file} is damaged ({type(e).__name__}: {e})") from None
    if "config" not in state or "weights_sha256" not in state:
        raise CheckpointMismatch(
            f"{state_file} records no training config or weight checksums (written by an "
            "older version), so resuming it cannot be checked; train into another --out"
        )
    now = json.loads(json.dumps(asdict(learner.cfg)))  # tuples as lists, as stored
    diffs = _differences(json.loads(state["config"]), now)
    if diffs:
        raise CheckpointMismatch(
            f"{path} was trained with other settings; --resume continues a run with the same "
            "ones (or train into another --out): " + "; ".join(diffs)
        )
    if fingerprint is not None and state.get("data_fingerprint") != fingerprint:
        raise CheckpointMismatch(
            f"{path} was trained on another dataset (fingerprint "
            f"{str(state.get('data_fingerprint'))[:12]}..., this one {fingerprint[:12]}...); "
            "resume with the same data, or train into another --out"
        )
    for name, digest in state["weights_sha256"].items():
        if file_digest(path / name) != digest:
            raise CheckpointMismatch(
                f"{path / name} does not match the checksum recorded when it was written "
                "(damaged or partly copied); restore it or train into another --out"
            )
    learner.model.load_state_dict(load_file(str(path / "model.safetensors")))
    learner.target.load_state_dict(load_file(str(path / "target.safetensors")))
    learner.optimizer.load_state_dict(state["optimizer"])
    learner.step = int(state["step"])
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["sampler_rng"])


def agent_of(learner: Learner, data: OfflineDataset) -> Agent:
    """An agent acting with the learner's online network (weights shared, not copied), as
    ``train`` returns it; callbacks use it to evaluate along the way."""
    cfg = replace(learner.cfg, q_min=learner.q_min, q_max=learner.q_max)
    uses_instructions = cfg.task_features == "instruction" and cfg.conditioned(len(data.tasks))
    return Agent(
        learner.model,
        ActionDiscretizer(data.action_low, data.action_high, cfg.n_bins, cfg.bin_layout),
        learner.q_max,
        asdict(cfg),
        data.tasks,
        data.instructions,
        embedding_model=data.instruction_embedding_model if uses_instructions else None,
        camera=data.metadata.get("camera"),
        env=data.env_settings(),
        q_min=learner.q_min,
    )


def train(
    data: OfflineDataset,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callback: Callback | None = None,
    progress: bool = False,
    tensorboard: bool = False,
    evaluate: Evaluation | None = None,
    eval_steps: Sequence[int] = (),
) -> Agent:
    """Train a Q-Transformer on an offline dataset.

    Args:
        data: The episodes.
        config: Hyperparameters; defaults to ``TrainConfig()``.
        out_dir: Directory for checkpoints (``checkpoint/``), the final agent (``agent/``)
            and TensorBoard logs; nothing is written when None.
        resume: Continue from ``out_dir/checkpoint`` if it exists, exactly where it stopped;
            a checkpoint of other settings or data, or a damaged one, is refused
            (:class:`CheckpointMismatch`). Without it, an earlier run in ``out_dir`` is
            replaced. ``out_dir`` is locked for the life of the run (another run into it
            stops at once with :class:`qtransformer.atomic.OutputLocked`).
        callback: Called as ``callback(step, metrics, learner)`` after every update
            (metrics are then computed every step).
        progress: Show a progress bar.
        tensorboard: Write metrics to ``out_dir/tb`` every ``log_every`` steps.
        evaluate: Called as ``evaluate(agent, step)`` after the update of every step in
            ``eval_steps`` (on the first process only), with the agent acting through the
            online network in eval mode; training continues in train mode afterwards. The
            numbers it returns are logged, and written to TensorBoard as ``eval/<name>``.
        eval_steps: Steps at which to evaluate.

    Returns:
        The trained agent (online network, eval mode).
    """
    cfg = config or TrainConfig()
    rank, world = _init_distributed(cfg.device)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by {world} processes")
    device = resolve_device(cfg.device)
    q_min, q_max = data.value_range(cfg.gamma, cfg.q_min, cfg.q_max)
    cfg = replace(cfg, q_min=q_min, q_max=q_max, steps=cfg.steps_for(len(data.actions)))
    discretizer = ActionDiscretizer(data.action_low, data.action_high, cfg.n_bins, cfg.bin_layout)
    image_shape = None
    use_images = cfg.observation != "state"
    if use_images:
        if data.images is None:
            raise ValueError(
                f"TrainConfig.observation={cfg.observation!r} needs a dataset with images "
                "(collect with --image-size 64)"
            )
        H, W, C = (int(s) for s in data.images.shape[1:])
        image_shape = (H, W, C)
    task_features = None
    if cfg.task_features == "instruction" and cfg.conditioned(len(data.tasks)):
        from qtransformer.language import ensure_instruction_embeddings

        task_features = torch.from_numpy(ensure_instruction_embeddings(data))
    # Streams through a memory-mapped dataset once; float64 keeps large sums exact enough.
    obs_mean = np.asarray(data.observations).mean(0, dtype=np.float64)
    obs_std = np.asarray(data.observations).std(0, dtype=np.float64)
    # Seeds the global RNG too (dropout); checkpoints restore its state on resume.
    torch.manual_seed(cfg.seed)
    learner = Learner(
        cfg,
        data.obs_dim,
        data.action_dim,
        q_max,
        len(data.tasks),
        device,
        obs_mean=torch.as_tensor(obs_mean, dtype=torch.float32),
        obs_std=torch.as_tensor(obs_std, dtype=torch.float32),
        distributed=world > 1,
        image_shape=image_shape,
        task_features=task_features,
        q_min=q_min,
    )
    image_source = None
    encoder = learner.model.image_encoder
    if isinstance(encoder, PretrainedImageEncoder) and data.images is not None:
        t0 = time.perf_counter()
        image_source = encoder.cache(data.images)
        log.info(
            "cached the frozen EfficientNet blocks' features of %d frames in %.0f s (%.1f MB)",
            len(image_source),
            time.perf_counter() - t0,
            image_source.nbytes / 1e6,
        )
        if encoder.feature_norm:
            encoder.fit_feature_norm(image_source)
            learner.target.load_state_dict(learner.model.state_dict())
    sampler = TransitionSampler(
        data,
        discretizer,
        cfg.gamma,
        cfg.n_step,
        cfg.window,
        images=use_images,
        image_source=image_source,
        q_min=q_min,
    )
    agent = agent_of(learner, data)
    generator = torch.Generator().manual_seed(cfg.seed)
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / "checkpoint" if out is not None else None
    fingerprint = data.fingerprint() if out is not None else ""
    held = contextlib.ExitStack()  # the lock on out, for the life of the run
    if out is not None and ckpt is not None:
        if rank == 0:
            held.enter_context(locked(out / ".lock", f"{out} (a training run)"))
            recover(ckpt)  # a checkpoint write killed midway: the previous one comes back
            if not resume:
                _clear_run(out)
        if world > 1:
            dist.barrier()
        if resume and ckpt.exists():
            try:
                load_checkpoint(ckpt, learner, generator, fingerprint)
            except BaseException:
                held.close()
                raise
            log.info("resumed from %s at step %d", ckpt, learner.step)
        elif resume:
            log.info("no checkpoint in %s: starting from step 0", out)
    writer = None
    if tensorboard and out is not None and rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))

    local = cfg.batch_size // world
    eval_at = set(eval_steps)
    watch = _LossWatch(device)
    if rank == 0:
        log.info("training on %d process(es) on %s, %d samples each per step", world, device, local)
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=learner.step, desc="train", unit="step")
    workers = cfg.data_workers
    if workers is None:
        # Decoding video frames costs more than assembling a batch from arrays.
        workers = 2 if isinstance(sampler.images, VideoFrames) else 0
    if learner.step >= cfg.steps:
        workers = 0  # nothing left to train: no processes to start
    stream: BatchStream | None = None
    try:
        stream = BatchStream(
            sampler,
            cfg.batch_size,
            generator,
            workers,
            part=slice(rank * local, (rank + 1) * local),
        )
        if workers:
            log.info("%d worker process(es) assemble batches ahead of the learner", workers)
        while learner.step < cfg.steps:
            step = learner.step + 1
            log_now = step % cfg.log_every == 0 or step == cfg.steps
            metrics = learner.update(next(stream), metrics=log_now or callback is not None)
            watch.record(learner.last_loss, step)
            periodic = cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0
            saving = ckpt is not None and (periodic or step == cfg.steps)
            if log_now or saving or step in eval_at:
                watch.check(step, world)
            if callback is not None:
                callback(step, metrics, learner)
            if evaluate is not None and step in eval_at and rank == 0:
                learner.model.eval()
                results = evaluate(agent, step) or {}
                learner.model.train()
                for k, v in results.items():
                    if writer is not None:
                        writer.add_scalar(f"eval/{k}", v, step)
                if results:
                    log.info(
                        "eval at step %d %s",
                        step,
                        " ".join(f"{k}={v:.4g}" for k, v in results.items()),
                    )
            if log_now:
                if writer is not None:
                    for k, v in metrics.items():
                        writer.add_scalar(k, v, step)
                log.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
                if bar is not None:
                    shown = {"loss": f"{metrics['train/loss']:.4f}"}
                    if "train/q_data" in metrics:
                        shown["q"] = f"{metrics['train/q_data']:.3f}"
                    bar.set_postfix(**shown)
            if bar is not None:
                bar.update(1)
            if saving and ckpt is not None:
                _check_weights(learner, step)  # on every process, so all stop together
                if rank == 0:
                    save_checkpoint(ckpt, learner, agent, generator, fingerprint)
                    _write_config(out, cfg)
        watch.check(learner.step, world)
        _check_weights(learner, learner.step)  # never return (or save) a NaN agent
        if out is not None and rank == 0:
            agent.save(out / "agent")
            _write_config(out, cfg)
    finally:  # also when training diverges or a callback raises
        if stream is not None:
            stream.close()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        held.close()
    agent.model.eval()
    return agent


def dataset_summary(data: OfflineDataset) -> dict[str, float]:
    """Episodes, steps and successes (episodes whose rewards sum above 0) of a dataset."""
    return {
        "episodes": data.num_episodes,
        "steps": len(data),
        "successes": int(data.episode_success().sum()),
        "mean_length": float(data.episodes.lengths.mean()),
    }
