"""The baselines' hyperparameters and the one registry of baselines: name -> settings, blurb.

Hyperparameters are d3rlpy's own for D4RL continuous control (its ``reproductions/offline``
scripts, or the config defaults where it has no script); each settings class says which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class BCSettings:
    """Behaviour cloning: an MLP regressing the data's action (d3rlpy ``BC``, MSE loss).

    d3rlpy has no BC reproduction script; these are its ``BCConfig`` defaults.
    """

    batch_size: int = 100
    learning_rate: float = 1e-3
    policy_type: str = "deterministic"
    hidden_units: tuple[int, ...] = (256, 256)
    layer_norm: bool = False
    """Layer normalization after every hidden layer."""
    success_only: bool = False
    """Train only on episodes whose reward sum is positive (``bc-success``, RT-1's setting)."""
    source: str = "d3rlpy 2.8.1 BCConfig defaults"


@dataclass(frozen=True)
class IQLSettings:
    """Implicit Q-Learning (Kostrikov et al. 2021), d3rlpy's D4RL locomotion settings."""

    batch_size: int = 256
    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4
    actor_cosine_t_max: int | None = None
    """Cosine decay of the actor's learning rate over this many steps; None: all steps."""
    gamma: float = 0.99
    tau: float = 0.005
    n_critics: int = 2
    expectile: float = 0.7
    weight_temp: float = 3.0
    max_weight: float = 100.0
    return_scale: float | None = 1000.0
    """Rewards times ``return_scale / (max - min episode return)`` (``ReturnBasedRewardScaler``);
    None leaves rewards as they are."""
    hidden_units: tuple[int, ...] = (256, 256)
    layer_norm: bool = False
    """Layer normalization after every hidden layer."""
    source: str = "d3rlpy reproductions/offline/iql.py (D4RL locomotion)"


@dataclass(frozen=True)
class CQLSettings:
    """Conservative Q-Learning (Kumar et al. 2020), d3rlpy's D4RL reproduction settings.

    The conservative weight is the script's 5.0 (it uses 10.0 only for ``*-medium-v0``).
    """

    batch_size: int = 256
    actor_learning_rate: float = 1e-4
    critic_learning_rate: float = 3e-4
    temp_learning_rate: float = 1e-4
    alpha_learning_rate: float = 0.0
    """0: the conservative weight stays fixed (no Lagrangian tuning), as in the script."""
    initial_alpha: float = 1.0
    initial_temperature: float = 1.0
    conservative_weight: float = 5.0
    n_action_samples: int = 10
    gamma: float = 0.99
    tau: float = 0.005
    n_critics: int = 2
    hidden_units: tuple[int, ...] = (256, 256, 256)
    source: str = "d3rlpy reproductions/offline/cql.py (D4RL locomotion)"


@dataclass(frozen=True)
class DTSettings:
    """Decision Transformer (Chen et al. 2021), d3rlpy's D4RL reproduction settings.

    Fields left None are filled from the data and the step budget by
    :func:`~qtransformer.baselines.train_baseline`.
    """

    batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    clip_grad_norm: float = 0.25
    warmup_steps: int | None = None
    """Linear learning-rate warmup; None: the script's 10% of training, at most 10,000."""
    context_size: int = 20
    num_heads: int = 1
    num_layers: int = 3
    hidden_units: tuple[int, ...] = (128,)
    dropout: float = 0.1
    """Attention, residual and embedding dropout."""
    reward_scale: float | None = None
    """Rewards and returns-to-go are multiplied by this; None: 1 / the largest absolute episode
    return (at least 1), so the target return is about 1 (the script's 0.001 does the same for
    returns in the thousands)."""
    target_return: float | None = None
    """Return-to-go the policy is conditioned on; None: the largest episode return in the data."""
    max_timestep: int | None = None
    """Size of the timestep embedding; None: max(1000, longest episode + 1)."""
    source: str = "d3rlpy reproductions/offline/decision_transformer.py (D4RL)"


@dataclass(frozen=True)
class ReBRACSettings:
    """ReBRAC (Tarasov et al. 2023): TD3+BC with a behaviour penalty in the critic's target too,
    layer-normalized critics and large batches (d3rlpy ``ReBRAC``).

    The actor minimizes ``-Q / mean|Q| + actor_beta * ||a - a_data||^2``; the critic's target
    subtracts ``critic_beta * ||a' - a'_data||^2``. Defaults: the OGBench manipulation settings
    of the Flow Q-Learning paper's ReBRAC (4 x 512 layer-normalized networks, batch 256,
    actor updated every 2 steps); its behaviour weights are per task family
    (:data:`qtransformer.bench.studies.OGBENCH_BASELINES`).
    """

    batch_size: int = 256
    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    n_critics: int = 2
    actor_beta: float = 1.0
    critic_beta: float = 0.0
    target_smoothing_sigma: float = 0.2
    target_smoothing_clip: float = 0.5
    update_actor_interval: int = 2
    hidden_units: tuple[int, ...] = (512, 512, 512, 512)
    layer_norm: bool = True
    """Layer normalization after every hidden layer (critics and actor alike in d3rlpy)."""
    source: str = "Flow Q-Learning paper (Park et al. 2025), ReBRAC on OGBench"


BaselineSettings = Union[BCSettings, IQLSettings, CQLSettings, DTSettings, ReBRACSettings]  # noqa: UP007


@dataclass(frozen=True)
class BaselineSpec:
    """One entry of :data:`BASELINES`.

    Attributes:
        settings: Makes the settings :func:`~qtransformer.baselines.train_baseline` uses
            unless told otherwise.
        description: One line for tables and ``--help``.
    """

    settings: Callable[[], BaselineSettings]
    description: str


BASELINES: dict[str, BaselineSpec] = {
    "bc": BaselineSpec(BCSettings, "behaviour cloning on all episodes (d3rlpy BC, MSE)"),
    "bc-success": BaselineSpec(
        lambda: BCSettings(success_only=True),
        "behaviour cloning on the successful episodes only (RT-1's setting)",
    ),
    "iql": BaselineSpec(IQLSettings, "Implicit Q-Learning (Kostrikov et al. 2021)"),
    "cql": BaselineSpec(CQLSettings, "Conservative Q-Learning (Kumar et al. 2020)"),
    "rebrac": BaselineSpec(ReBRACSettings, "ReBRAC, TD3+BC revisited (Tarasov et al. 2023)"),
    "dt": BaselineSpec(DTSettings, "Decision Transformer (Chen et al. 2021)"),
}
"""Every baseline :func:`~qtransformer.baselines.train_baseline` accepts, in table order."""


def default_settings(name: str) -> BaselineSettings:
    """The settings :func:`~qtransformer.baselines.train_baseline` uses for baseline ``name``
    unless told otherwise.

    Raises:
        ValueError: For a name not in :data:`BASELINES`.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {tuple(BASELINES)}")
    return BASELINES[name].settings()
