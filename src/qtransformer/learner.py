"""Optimizer, target network and one ``update(batch) -> metrics`` step."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from qtransformer.config import TrainConfig
from qtransformer.data.sampler import Batch
from qtransformer.encoders import random_shift
from qtransformer.encoders.pretrained import PretrainedImageEncoder
from qtransformer.loss import (
    LossOutput,
    behaviour_cloning_loss,
    normalized_returns,
    per_dimension_targets,
    q_transformer_loss,
)
from qtransformer.model import QTransformer


class Learner:
    """Q-Transformer learner: AdamW on the online network, Polyak-averaged target.

    With ``cfg.loss == "bc"`` the same network is trained by behaviour cloning instead
    (:func:`~qtransformer.loss.behaviour_cloning_loss`); the target is then left unused.

    Args:
        cfg: Training hyperparameters (they include the network's shape).
        obs_dim: Length of an observation vector.
        action_dim: Number of action dimensions.
        n_tasks: Number of tasks in the data (a task token is added when above 1).
        q_max: Upper end of the value range ``[q_min, q_max]`` that the network's [0, 1]
            output maps onto affinely (docs/design.md, 'Value range').
        device: Where the networks live.
        obs_mean: Per-feature observation mean for the encoder's normalization.
        obs_std: Per-feature observation standard deviation.
        distributed: Wrap the online network in DistributedDataParallel (process group
            must already be initialized).
        image_shape: ``(H, W, C)`` of the data's camera frames, for image observations.
        task_features: The task feature table ``(n_tasks, task_dim)`` (instruction
            embeddings); default: one-hot codes.
        q_min: Lower end of the value range (0 for non-negative rewards).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        obs_dim: int,
        action_dim: int,
        q_max: float,
        n_tasks: int = 1,
        device: torch.device | str = "cpu",
        obs_mean: torch.Tensor | None = None,
        obs_std: torch.Tensor | None = None,
        distributed: bool = False,
        image_shape: tuple[int, int, int] | None = None,
        task_features: torch.Tensor | None = None,
        q_min: float = 0.0,
    ) -> None:
        if not (math.isfinite(q_min) and math.isfinite(q_max) and q_min < q_max):
            raise ValueError(f"the value range needs finite q_min < q_max, got [{q_min}, {q_max}]")
        self.cfg = cfg
        self.q_min = float(q_min)
        self.q_max = float(q_max)
        self.device = torch.device(device)
        # Initialization depends on the seed alone, without touching the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            task_dim = None if task_features is None else int(task_features.shape[1])
            mcfg = cfg.model_config(obs_dim, action_dim, n_tasks, image_shape, task_dim)
            self.model = QTransformer(mcfg)
        if isinstance(self.model.image_encoder, PretrainedImageEncoder):
            self.model.image_encoder.load_pretrained()  # ImageNet weights (pretrained extra)
        if task_features is not None and self.model.task_proj is not None:
            self.model.set_task_features(task_features)
        if obs_mean is not None and obs_std is not None and self.model.encoder is not None:
            self.model.encoder.set_normalization(obs_mean, obs_std)
        self.model.to(self.device)
        # The target is evaluated in eval mode (no dropout) and never trained directly.
        self.target = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.net: nn.Module = self.model
        if distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        # Fine-tuned pretrained blocks learn at image_trunk_lr_scale times the rate; frozen
        # ones are not given to the optimizer at all.
        slow = set()
        if isinstance(self.model.image_encoder, PretrainedImageEncoder):
            slow = {id(p) for p in self.model.image_encoder.trunk_parameters()}
        groups = []
        for scale, members in ((1.0, False), (cfg.image_trunk_lr_scale, True)):
            params = [
                p for p in self.model.parameters() if p.requires_grad and (id(p) in slow) == members
            ]
            for decay in (True, False):
                chosen = [p for p in params if (p.dim() >= 2) == decay]
                if chosen:
                    groups.append(
                        {
                            "params": chosen,
                            "weight_decay": cfg.weight_decay if decay else 0.0,
                            "lr_scale": scale,
                        }
                    )
        # The fused kernel updates every parameter in one call (CPU and CUDA); the default
        # loops over parameters in Python on the CPU.
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
        self._online_params: list[torch.Tensor] = list(self.model.parameters())
        self._target_params: list[torch.Tensor] = list(self.target.parameters())
        self._q_losses = self._q_losses_eager
        if cfg.compile:
            # One graph for both target passes, the targets, the online pass and the loss;
            # shapes are static (fixed batch), so it compiles once.
            self._q_losses = torch.compile(self._q_losses_eager, dynamic=False)
        self.step = 0
        self.lr_factor = 1.0
        """Multiplies the scheduled rate (online fine-tuning's per-period restarts set it)."""
        self.last_loss: torch.Tensor | None = None
        """Loss of the latest update, detached and on the device (reading it syncs)."""

    def update(self, batch: Batch, metrics: bool = True) -> dict[str, float]:
        """One gradient step on ``batch``.

        Returns:
            Metrics named ``train/...``; empty when ``metrics`` is False, which saves a
            device synchronization per step on GPUs.
        """
        cfg = self.cfg
        self.model.train()
        b = batch.to(self.device)
        task = self._task(b.task) if self.model.task_proj is not None else None
        images, next_images = self._images(b)
        if cfg.loss == "bc":
            return self._bc_update(b, task, images, metrics)
        out = self._q_losses(b, task, images, next_images)
        grad_norm = self._step(out.total)
        if not metrics:
            return {}
        values = torch.stack(
            [
                out.total,
                out.td,
                out.conservative,
                self.value(out.q_data.mean()),
                self.value(out.targets.mean()),
                grad_norm,
            ]
        ).tolist()  # one synchronization for all metrics
        names = ("loss", "td_loss", "conservative_loss", "q_data", "target", "grad_norm")
        return {f"train/{n}": v for n, v in zip(names, values, strict=True)}

    def _q_losses_eager(
        self,
        b: Batch,
        task: torch.Tensor | None,
        images: torch.Tensor | None,
        next_images: torch.Tensor | None,
    ) -> LossOutput:
        """The target network's passes, the per-dimension targets, the online pass and the
        loss: what ``compile=True`` compiles into one graph."""
        cfg = self.cfg
        with torch.no_grad(), self._autocast():
            target_q = self.target(b.obs, b.bins, task, images)  # (B, H, dA, N)
            next_q = self.target.first_dim_q(b.next_obs, task, next_images)  # (B, H, N)
        with torch.no_grad():
            reward, mc = normalized_returns(
                b.reward_sum, b.bootstrap_discount, b.mc_return, self.q_min, self.q_max
            )
            targets = per_dimension_targets(
                target_q, next_q, reward, b.bootstrap_discount, mc if cfg.mc_lower_bound else None
            )
        with self._autocast():
            q = self.net(b.obs, b.bins, task, images)  # (B, H, dA, N), float32
        return q_transformer_loss(
            q, b.bins, targets, b.td_valid, cfg.conservative_weight, cfg.conservative
        )

    def value(self, q: torch.Tensor) -> torch.Tensor:
        """Normalized Q in [0, 1] -> Q in the value range ``[q_min, q_max]``."""
        return self.q_min + (self.q_max - self.q_min) * q

    def _autocast(self) -> torch.autocast:
        """bfloat16 autocast of the networks' passes when ``precision='bf16'``; the model
        returns float32 logits, so targets, loss and optimizer stay in float32."""
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"
        )

    def _task(self, ids: torch.Tensor) -> torch.Tensor:
        """Task ids, or with ``instruction_noise`` the instruction embeddings plus Gaussian
        noise, back on the unit sphere (the embeddings are unit vectors): a paraphrase moves
        the embedding a little, and the agent should not notice."""
        sigma = self.cfg.instruction_noise
        if sigma <= 0 or self.model.cfg.task_features != "instruction":
            return ids
        vectors = self.model.task_table[ids]  # (B, task_dim)
        noisy = vectors + sigma * torch.randn_like(vectors) / vectors.shape[1] ** 0.5
        return noisy / noisy.norm(dim=1, keepdim=True).clamp_min(1e-6)

    def learning_rate(self) -> float:
        """Learning rate of the next update (a function of the step, so resume is exact)."""
        cfg = self.cfg
        if cfg.lr_schedule == "constant":
            return cfg.lr
        progress = min(self.step / max(cfg.steps, 1), 1.0)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _images(self, b: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The batch's frame windows, randomly shifted when augmentation is on.

        The online and the target network see the same shifted frames of a step, so the
        target of a dimension is computed on exactly the input its Q is regressed from.
        """
        if self.model.image_encoder is None:
            return None, None
        if b.images is None or b.next_images is None:
            raise ValueError("this model reads images: the batch has none (sampler images=True)")
        if not self.cfg.augment:
            return b.images, b.next_images
        pad = self.cfg.augment_pad
        return random_shift(b.images, pad), random_shift(b.next_images, pad)

    def _step(self, loss: torch.Tensor) -> torch.Tensor:
        """Backward, clip, AdamW step and target update; returns the gradient norm."""
        cfg = self.cfg
        self.last_loss = loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(
            self.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        )
        lr = self.learning_rate() * self.lr_factor
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.optimizer.step()
        self._update_target()
        self.step += 1
        return grad_norm

    def _bc_update(
        self,
        b: Batch,
        task: torch.Tensor | None,
        images: torch.Tensor | None,
        metrics: bool,
    ) -> dict[str, float]:
        with self._autocast():
            logits = self.net(b.obs, b.bins, task, images, logits=True)  # (B, H, dA, N)
        out = behaviour_cloning_loss(logits, b.bins)
        grad_norm = self._step(out.total)
        if not metrics:
            return {}
        values = torch.stack([out.total.detach(), out.accuracy, grad_norm]).tolist()
        names = ("loss", "bc_accuracy", "grad_norm")
        return {f"train/{n}": v for n, v in zip(names, values, strict=True)}

    @torch.no_grad()
    def _update_target(self) -> None:
        tau = self.cfg.target_update_rate
        # One multi-tensor call instead of one per parameter (Python time on small networks).
        torch._foreach_lerp_(self._target_params, self._online_params, tau)
        for b_t, b in zip(self.target.buffers(), self.model.buffers(), strict=True):
            b_t.copy_(b)
