"""Training configuration: one dataclass, turned into the CLI by tyro."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qtransformer.model import ModelConfig


@dataclass
class TrainConfig:
    """Hyperparameters of a Q-Transformer run."""

    steps: int = 3000
    """Gradient steps."""
    batch_size: int = 128
    """Global batch size (split across processes under torchrun)."""
    n_bins: int = 256
    """Bins per action dimension."""
    gamma: float = 0.98
    """Discount between environment steps (never between action dimensions)."""
    n_step: int = 1
    """Environment steps in the return of the last dimension's target."""
    conservative_weight: float = 1.0
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
    q_heads: int = 1
    """Q output heads; 2 = clipped double Q (min over heads in targets and acting)."""
    task_conditioning: bool = True
    """With several tasks in the data, give the network a task token (one-hot code)."""
    lr: float = 3e-4
    """AdamW learning rate."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """'cosine' decays the learning rate from ``lr`` to 0 over ``steps``."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables it."""
    target_update_rate: float = 0.005
    """Polyak rate tau: target <- (1 - tau) target + tau online, every step."""
    q_max: float | None = None
    """Value bound that scales the sigmoid output. None: 1 when rewards lie in [0, 1]
    and only on terminal steps (sparse success), else max reward / (1 - gamma)."""
    seed: int = 0
    """Seed of the network initialization and of batch sampling."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    log_every: int = 100
    """Steps between logged metrics."""
    checkpoint_every: int = 0
    """Steps between checkpoints when an output directory is given; 0: only at the end."""

    def model_config(self, obs_dim: int, action_dim: int, n_tasks: int = 1) -> ModelConfig:
        """The network shape these hyperparameters describe, for given data dimensions."""
        conditioned = self.task_conditioning and n_tasks > 1
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
            task_dim=n_tasks if conditioned else 0,
        )
