"""Training configuration: one dataclass, turned into the CLI by tyro."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from qtransformer.discretize import BIN_LAYOUTS
from qtransformer.model import (
    IMAGE_ENCODERS,
    ImageEncoderKind,
    ModelConfig,
    ObservationKind,
    TaskFeatures,
)

PRECISIONS = ("fp32", "bf16")
FLOAT32_MAX = 3.4028234663852886e38
"""Largest float32: values are scaled by q_max in float32 on the device."""


@dataclass
class TrainConfig:
    """Hyperparameters of a Q-Transformer run.

    The defaults are the settings we measured best (16 bins, alpha 0.5, 3-step returns, two Q
    heads, a cosine learning-rate decay, 1000 steps, acting at Q-weighted bin values with
    temperature 0.05): see the README's defaults table.
    ``TrainConfig.preset("paper")`` gives the paper's own settings (256 bins, alpha 1,
    1-step returns, one head, constant rate).
    """

    steps: int = 1000
    """Gradient steps (replaced by the data's size when ``epochs`` is set)."""
    epochs: float | None = None
    """Training length in passes over the data: ``steps = ceil(epochs * transitions /
    batch_size)``, so a smaller dataset gets fewer steps; None: ``steps`` as given."""
    batch_size: int = 128
    """Global batch size (split across processes under torchrun)."""
    n_bins: int = 16
    """Bins per action dimension."""
    bin_layout: Literal["centres", "bounds"] = "centres"
    """``centres``: equal bins, each acting at its centre (the paper's); ``bounds``: evenly
    spaced values from the action bounds inclusive, so that actions on the bounds stay exact."""
    gamma: float = 0.98
    """Discount between environment steps (never between action dimensions)."""
    n_step: int = 3
    """Environment steps in the return of the last dimension's target."""
    conservative_weight: float = 0.5
    """alpha of paper eq. 2; 0 disables the conservative regularizer."""
    conservative: Literal["mse", "softmax"] = "mse"
    """Regularizer form: the paper's regression to 0, or CQL's softmax (ablation)."""
    mc_lower_bound: bool = True
    """Lower-bound every target by the transition's Monte Carlo return-to-go."""
    window: int = 1
    """Past observations the network reads."""
    d_model: int = 128
    """Transformer width."""
    n_layers: int = 2
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads."""
    dropout: float = 0.0
    """Dropout in the Transformer during training."""
    q_heads: int = 2
    """Q output heads; 2 = clipped double Q (min over heads in targets and acting). Behaviour
    cloning (``loss='bc'``) always trains one."""
    task_conditioning: bool = True
    """Give the network a task token when the data has several tasks (or, with
    task_features='instruction', always), and FiLM-condition its image encoder on it."""
    task_features: TaskFeatures = "onehot"
    """What conditions the network: 'onehot' task codes, or 'instruction' embeddings
    (all-MiniLM-L6-v2, cached with the dataset; acting on new instructions then works)."""
    observation: ObservationKind = "state"
    """What the network sees of each step: 'state' vectors, camera 'image's, or 'both'."""
    image_tokens: int = 4
    """Tokens per camera frame."""
    image_channels: tuple[int, ...] = (16, 32, 48, 64)
    """Image encoder widths: the stride-2 stem's, then one stride-2 MBConv block per entry."""
    image_encoder: ImageEncoderKind = "scratch"
    """'scratch': the small FiLM-conditioned MBConv encoder trained from random weights;
    'lite0': ImageNet EfficientNet-Lite0 (the pretrained extra), its first
    ``image_frozen_blocks`` blocks frozen and cached per frame, the rest fine-tuned with FiLM."""
    image_frozen_blocks: int = 11
    """'lite0': blocks run frozen, without FiLM (their output is computed once per frame)."""
    image_last_block: int = 15
    """'lite0': last EfficientNet block used (0..15); later blocks and the head are dropped."""
    image_feature_norm: bool = False
    """'lite0': standardize each channel and position of the trunk's output with the training
    frames' mean and deviation (set once from the cached features, saved with the agent), as
    state vectors are standardized."""
    image_trunk_lr_scale: float = 0.1
    """'lite0': learning rate of the fine-tuned pretrained blocks, relative to ``lr``."""
    instruction_noise: float = 0.0
    """With task_features='instruction': Gaussian noise added in training to each unit-length
    instruction embedding (``sigma`` is the expected length of the noise), then renormalized,
    so that other wordings of an instruction, whose embeddings lie near it, act alike."""
    augment: bool = False
    """Random-shift augmentation of the images during training (replicate pad and crop)."""
    augment_pad: int = 4
    """Largest shift in pixels of the augmentation."""
    loss: Literal["q", "bc"] = "q"
    """'q': Q-Transformer (paper eq. 1 and 2); 'bc': behaviour cloning on the same network,
    cross-entropy of the data's bins per dimension, teacher-forced (greedy decoding then
    gives the most likely action)."""
    act_temperature: float = 0.05
    """How the trained agent acts (training is the same whatever it is): 0 takes each
    dimension's best bin (the paper's greedy decoding); T > 0 the mean of the bin values
    weighted by softmax(Q / T), Q in [0, 1], which averages out the noise of nearly equal bins
    (README, 'Acting at Q-weighted bin values': 0.05 was chosen on push-v3 and checked on
    door-open-v3 and pick-place-v3). Saved with the agent; ``Agent.act_temperature`` changes
    it afterwards."""
    lr: float = 3e-4
    """AdamW learning rate."""
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    """'cosine' decays the learning rate from ``lr`` to 0 over ``steps``."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables it."""
    target_update_rate: float = 0.005
    """Polyak rate tau: target <- (1 - tau) target + tau online, every step."""
    q_max: float | None = None
    """Upper end of the value range that the sigmoid output maps onto. None: 1 when rewards
    lie in [0, 1] and only on terminal steps (sparse success), else max(max reward, 0) /
    (1 - gamma)."""
    q_min: float | None = None
    """Lower end of the value range: the value the conservative term pulls unseen bins to,
    and the value assumed after a time-limit cut in the Monte Carlo bound. None: 0 for
    non-negative rewards, else min reward / (1 - gamma)."""
    seed: int = 0
    """Seed of the network initialization and of batch sampling."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """'bf16': the networks' forward and backward passes under bfloat16 autocast (CPU and
    CUDA); the logits are cast back to float32 before the sigmoid, and the targets, the loss
    and the optimizer stay in float32, because bins' Q-values differ by less than bfloat16's
    resolution near 1 (8 bits of mantissa: steps of 1/256 below 1)."""
    compile: bool = False
    """``torch.compile`` the update's passes and loss into one graph: faster steps after a
    one-time compilation of about a minute (benchmarks/speed.py measures both)."""
    data_workers: int | None = None
    """Processes that assemble batches ahead of the learner (read observations, decode video
    frames); the batches are the same for any number. None: 2 when the learner trains on
    camera frames kept in video files (a LeRobot dataset), else 0 (in the training loop)."""
    log_every: int = 100
    """Steps between logged metrics."""
    checkpoint_every: int = 0
    """Steps between checkpoints when an output directory is given; 0: only at the end."""

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> TrainConfig:
        """The config an agent's ``config.json`` records: JSON lists back to tuples, fields
        this version no longer has left out."""
        names = {f.name for f in fields(cls)}
        kept: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names
        }
        return cls(**kept)

    def __post_init__(self) -> None:
        if self.loss not in ("q", "bc"):
            raise ValueError(f"loss must be 'q' or 'bc', got {self.loss!r}")
        if self.loss == "bc":
            # Cross-entropy of the data's bins has no use for a second value head.
            self.q_heads = 1
        for name, low in _AT_LEAST.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.data_workers is not None and (
            isinstance(self.data_workers, bool)
            or not isinstance(self.data_workers, numbers.Integral)
            or self.data_workers < 0
        ):
            raise ValueError(
                f"data_workers must be None or an integer >= 0, got {self.data_workers!r}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={self.d_model} and "
                f"n_heads={self.n_heads}"
            )
        for name, (lo, hi) in _IN_RANGE.items():
            number = getattr(self, name)
            if not (math.isfinite(number) and lo <= number <= hi):
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {number}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.target_update_rate <= 1:
            raise ValueError(f"target_update_rate must be in (0, 1], got {self.target_update_rate}")
        if not (math.isfinite(self.gamma) and 0.0 <= self.gamma <= 1.0):
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(
                f"grad_clip must be finite and >= 0 (0 disables it), got {self.grad_clip}"
            )
        if self.bin_layout not in BIN_LAYOUTS:
            raise ValueError(f"bin_layout must be one of {BIN_LAYOUTS}, got {self.bin_layout!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.image_encoder not in IMAGE_ENCODERS:
            raise ValueError(
                f"image_encoder must be one of {IMAGE_ENCODERS}, got {self.image_encoder!r}"
            )
        if not 1 <= self.image_frozen_blocks <= self.image_last_block + 1:
            raise ValueError(
                f"image_frozen_blocks must be in [1, image_last_block + 1 = "
                f"{self.image_last_block + 1}], got {self.image_frozen_blocks}"
            )
        if self.image_encoder == "lite0" and self.augment and self.observation != "state":
            raise ValueError(
                "augment=True shifts pixels, but image_encoder='lite0' trains from cached "
                "features of its frozen blocks: set augment=False"
            )
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(
                f"epochs must be finite and > 0 (or None: use steps), got {self.epochs}"
            )
        for name in ("q_min", "q_max"):
            v = getattr(self, name)
            if v is not None and not (-FLOAT32_MAX <= v <= FLOAT32_MAX):  # also false for NaN
                raise ValueError(
                    f"{name} must be a finite float32 (or None: derived from the rewards), got {v}"
                )
        if self.q_min is not None and self.q_max is not None and not self.q_min < self.q_max:
            raise ValueError(
                f"q_min must be below q_max (the value range), got q_min={self.q_min}, "
                f"q_max={self.q_max}"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A named configuration, with ``overrides`` on top.

        Args:
            name: ``"default"`` (what ``TrainConfig()`` gives: the settings we measured best)
                or ``"paper"`` (Chebotar et al.'s algorithm settings at our network size:
                256 bins, conservative weight 1, 1-step returns, one Q head, constant
                learning rate, 3000 steps, greedy acting).
            overrides: Fields to change.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return replace(cls(**PRESETS[name]), **overrides)

    def steps_for(self, transitions: int) -> int:
        """Gradient steps on a dataset of ``transitions`` steps: ``steps``, or with ``epochs``
        set, ``ceil(epochs * transitions / batch_size)`` (at least 1)."""
        if self.epochs is None:
            return self.steps
        return max(1, math.ceil(self.epochs * transitions / self.batch_size))

    def conditioned(self, n_tasks: int) -> bool:
        """Whether the network gets a task token for data with ``n_tasks`` tasks."""
        wanted = n_tasks > 1 or self.task_features == "instruction"
        return self.task_conditioning and wanted

    def model_config(
        self,
        obs_dim: int,
        action_dim: int,
        n_tasks: int = 1,
        image_shape: tuple[int, int, int] | None = None,
        task_dim: int | None = None,
    ) -> ModelConfig:
        """The network shape these hyperparameters describe, for given data dimensions.

        Args:
            obs_dim: Length of a state vector.
            action_dim: Action dimensions.
            n_tasks: Tasks in the data.
            image_shape: ``(H, W, C)`` of the data's frames (needed to observe images).
            task_dim: Length of a task feature vector; default ``n_tasks`` (one-hot).
        """
        conditioned = self.conditioned(n_tasks)
        if self.observation != "state" and image_shape is None:
            raise ValueError(
                f"observation={self.observation!r} needs a dataset with images "
                "(collect with --image-size 64)"
            )
        return ModelConfig(
            obs_dim=obs_dim,
            action_dim=action_dim,
            n_bins=self.n_bins,
            window=self.window,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            dropout=self.dropout,
            q_heads=self.q_heads,
            n_tasks=n_tasks,
            task_dim=(n_tasks if task_dim is None else task_dim) if conditioned else 0,
            task_features=self.task_features,
            observation=self.observation,
            image_shape=image_shape if self.observation != "state" else None,
            image_tokens=self.image_tokens,
            image_channels=tuple(self.image_channels),
            image_encoder=self.image_encoder,
            image_frozen_blocks=self.image_frozen_blocks,
            image_last_block=self.image_last_block,
            image_feature_norm=self.image_feature_norm,
        )


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {
        "n_bins": 256,
        "conservative_weight": 1.0,
        "n_step": 1,
        "q_heads": 1,
        "lr_schedule": "constant",
        "steps": 3000,
        "act_temperature": 0.0,
    },
}
"""Named configurations as changes to ``TrainConfig()``; ``"paper"`` is also what
``TrainConfig()`` gave before our measurements replaced its defaults."""

_AT_LEAST: dict[str, int] = {
    "steps": 0,
    "batch_size": 1,
    "n_bins": 2,
    "n_step": 1,
    "window": 1,
    "d_model": 1,
    "n_layers": 1,
    "n_heads": 1,
    "q_heads": 1,
    "image_tokens": 1,
    "image_last_block": 0,
    "augment_pad": 0,
    "log_every": 1,
    "checkpoint_every": 0,
}
"""Integer fields and their smallest allowed value."""
_IN_RANGE: dict[str, tuple[float, float]] = {
    "conservative_weight": (0.0, 1e6),
    "act_temperature": (0.0, 1e6),
    "image_trunk_lr_scale": (0.0, 1e3),
    "instruction_noise": (0.0, 10.0),
    "weight_decay": (0.0, 1e6),
}
"""Float fields and their allowed closed range."""
