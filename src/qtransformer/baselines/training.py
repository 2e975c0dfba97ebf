"""Training a d3rlpy baseline on an :class:`~qtransformer.data.dataset.OfflineDataset`.

Observations are standardized (d3rlpy ``StandardObservationScaler``, mean and standard
deviation of the training data; features constant in the data keep scale 1 instead of being
blown up by ``1 / eps``), and actions are mapped from ``[action_low, action_high]`` to d3rlpy's
tanh range ``[-1, 1]`` and back (``MinMaxActionScaler``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from qtransformer.baselines.d3rlpy_data import (
    TrainingArrays,
    import_d3rlpy,
    mdp_dataset,
    training_arrays,
)
from qtransformer.baselines.policies import BaselinePolicy, DecisionTransformerPolicy
from qtransformer.baselines.settings import (
    BASELINES,
    BaselineSettings,
    BCSettings,
    CQLSettings,
    DTSettings,
    IQLSettings,
    ReBRACSettings,
    default_settings,
)

if TYPE_CHECKING:
    from qtransformer.data.dataset import OfflineDataset

log = logging.getLogger(__name__)


def _observation_scaler(d3rlpy: Any, obs: np.ndarray) -> Any:
    mean = obs.mean(axis=0, dtype=np.float64)
    std = obs.std(axis=0, dtype=np.float64)
    std = np.where(std < 1e-6, 1.0, std)
    return d3rlpy.preprocessing.StandardObservationScaler(mean=mean, std=std)


def _resolve(settings: BaselineSettings, arrays: TrainingArrays, steps: int) -> BaselineSettings:
    """Fill the settings left None from the data and the step budget."""
    if isinstance(settings, IQLSettings) and settings.actor_cosine_t_max is None:
        return replace(settings, actor_cosine_t_max=steps)
    if isinstance(settings, DTSettings):
        top = float(arrays.episode_returns.max())
        biggest = float(np.abs(arrays.episode_returns).max())
        return replace(
            settings,
            warmup_steps=settings.warmup_steps
            if settings.warmup_steps is not None
            else min(10_000, max(1, steps // 10)),
            reward_scale=settings.reward_scale
            if settings.reward_scale is not None
            else 1.0 / max(1.0, biggest),
            target_return=settings.target_return if settings.target_return is not None else top,
            max_timestep=settings.max_timestep
            if settings.max_timestep is not None
            else max(1000, int(arrays.episode_lengths.max()) + 1),
        )
    return settings


def _make_algo(
    d3rlpy: Any,
    s: BaselineSettings,
    arrays: TrainingArrays,
    low: np.ndarray,
    high: np.ndarray,
    device: str,
) -> Any:
    scalers: dict[str, Any] = {
        "observation_scaler": _observation_scaler(d3rlpy, arrays.observations),
        "action_scaler": d3rlpy.preprocessing.MinMaxActionScaler(minimum=low, maximum=high),
    }
    encoder = d3rlpy.models.VectorEncoderFactory(
        list(s.hidden_units), use_layer_norm=getattr(s, "layer_norm", False)
    )
    if isinstance(s, BCSettings):
        return d3rlpy.algos.BCConfig(
            batch_size=s.batch_size,
            learning_rate=s.learning_rate,
            policy_type=s.policy_type,
            encoder_factory=encoder,
            **scalers,
        ).create(device=device)
    if isinstance(s, IQLSettings):
        if s.return_scale is not None:
            rmax = float(arrays.episode_returns.max())
            rmin = float(arrays.episode_returns.min())
            if rmax <= rmin:  # all returns equal: keep the reward unit
                rmin = rmax - 1.0
            scalers["reward_scaler"] = d3rlpy.preprocessing.ReturnBasedRewardScaler(
                return_max=rmax, return_min=rmin, multiplier=s.return_scale
            )
        assert s.actor_cosine_t_max is not None
        return d3rlpy.algos.IQLConfig(
            batch_size=s.batch_size,
            actor_learning_rate=s.actor_learning_rate,
            critic_learning_rate=s.critic_learning_rate,
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(
                lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(
                    T_max=s.actor_cosine_t_max
                )
            ),
            actor_encoder_factory=encoder,
            critic_encoder_factory=encoder,
            value_encoder_factory=encoder,
            gamma=s.gamma,
            tau=s.tau,
            n_critics=s.n_critics,
            expectile=s.expectile,
            weight_temp=s.weight_temp,
            max_weight=s.max_weight,
            **scalers,
        ).create(device=device)
    if isinstance(s, ReBRACSettings):
        return d3rlpy.algos.ReBRACConfig(
            batch_size=s.batch_size,
            actor_learning_rate=s.actor_learning_rate,
            critic_learning_rate=s.critic_learning_rate,
            actor_encoder_factory=encoder,
            critic_encoder_factory=encoder,
            gamma=s.gamma,
            tau=s.tau,
            n_critics=s.n_critics,
            actor_beta=s.actor_beta,
            critic_beta=s.critic_beta,
            target_smoothing_sigma=s.target_smoothing_sigma,
            target_smoothing_clip=s.target_smoothing_clip,
            update_actor_interval=s.update_actor_interval,
            **scalers,
        ).create(device=device)
    if isinstance(s, CQLSettings):
        return d3rlpy.algos.CQLConfig(
            batch_size=s.batch_size,
            actor_learning_rate=s.actor_learning_rate,
            critic_learning_rate=s.critic_learning_rate,
            temp_learning_rate=s.temp_learning_rate,
            alpha_learning_rate=s.alpha_learning_rate,
            initial_alpha=s.initial_alpha,
            initial_temperature=s.initial_temperature,
            conservative_weight=s.conservative_weight,
            n_action_samples=s.n_action_samples,
            actor_encoder_factory=encoder,
            critic_encoder_factory=encoder,
            gamma=s.gamma,
            tau=s.tau,
            n_critics=s.n_critics,
            **scalers,
        ).create(device=device)
    assert s.warmup_steps is not None and s.max_timestep is not None
    return d3rlpy.algos.DecisionTransformerConfig(
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        optim_factory=d3rlpy.optimizers.AdamWFactory(
            weight_decay=s.weight_decay,
            clip_grad_norm=s.clip_grad_norm,
            lr_scheduler_factory=d3rlpy.optimizers.WarmupSchedulerFactory(
                warmup_steps=s.warmup_steps
            ),
        ),
        encoder_factory=d3rlpy.models.VectorEncoderFactory(
            list(s.hidden_units), exclude_last_activation=True
        ),
        reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(multiplier=s.reward_scale),
        position_encoding_type=d3rlpy.PositionEncodingType.SIMPLE,
        context_size=s.context_size,
        num_heads=s.num_heads,
        num_layers=s.num_layers,
        attn_dropout=s.dropout,
        resid_dropout=s.dropout,
        embed_dropout=s.dropout,
        max_timestep=s.max_timestep,
        **scalers,
    ).create(device=device)


def train_baseline(
    name: str,
    data: OfflineDataset,
    steps: int,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int | None = None,
    settings: BaselineSettings | None = None,
    callback: Callable[[int, BaselinePolicy], None] | None = None,
) -> BaselinePolicy:
    """Train a d3rlpy baseline on ``data`` and return it as a policy.

    Args:
        name: A key of :data:`~qtransformer.baselines.BASELINES`: ``bc`` (all episodes),
            ``bc-success`` (the successful episodes only), ``iql``, ``cql``, ``rebrac`` or
            ``dt`` (Decision Transformer).
        data: The offline dataset Q-Transformer trains on.
        steps: Gradient steps.
        seed: Seeds d3rlpy (Python, numpy's global generator, torch).
        device: Torch device, e.g. ``"cpu"`` or ``"cuda:0"``.
        batch_size: Overrides the settings' batch size.
        settings: Hyperparameters; default :func:`default_settings` of ``name``.
        callback: ``callback(step, policy)`` after every gradient step (d3rlpy's callback),
            e.g. to evaluate along training.

    Returns:
        A :class:`BaselinePolicy`, or a stateful :class:`DecisionTransformerPolicy` for ``dt``.
        Its ``settings`` hold the values used, :meth:`BaselinePolicy.record` all facts, and
        its ``observes.env`` the environment settings of ``data`` (what evaluation uses).

    Raises:
        ValueError: For an unknown name, settings of another algorithm, ``steps < 1``, or
            ``bc-success`` on data without a successful episode.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {tuple(BASELINES)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    s = settings if settings is not None else default_settings(name)
    if type(s) is not type(default_settings(name)):
        raise ValueError(f"baseline {name!r} takes {type(default_settings(name)).__name__}")
    if batch_size is not None:
        s = replace(s, batch_size=batch_size)
    if name in ("bc", "bc-success"):
        assert isinstance(s, BCSettings)
        s = replace(s, success_only=name == "bc-success")

    d3rlpy = import_d3rlpy()
    arrays = training_arrays(data, success_only=isinstance(s, BCSettings) and s.success_only)
    dataset = mdp_dataset(d3rlpy, arrays)
    s = _resolve(s, arrays, steps)
    low = np.asarray(data.action_low, np.float64)
    high = np.asarray(data.action_high, np.float64)

    d3rlpy.seed(seed)
    torch.manual_seed(seed)
    algo = _make_algo(d3rlpy, s, arrays, low, high, device)
    cls = DecisionTransformerPolicy if name == "dt" else BaselinePolicy
    return fit_policy(cls(name, algo, s, *_policy_facts(data, arrays, dataset, steps, seed)),
                      dataset, callback)  # fmt: skip


def _policy_facts(
    data: OfflineDataset, arrays: TrainingArrays, dataset: Any, steps: int, seed: int
) -> tuple[Any, ...]:
    """The arguments of :class:`BaselinePolicy` after its name, algorithm and settings."""
    return (
        data.tasks,
        data.obs_dim,
        np.asarray(data.action_low, np.float64),
        np.asarray(data.action_high, np.float64),
        steps,
        seed,
        len(arrays.rewards),
        len(arrays.episode_returns),
        int(dataset.transition_count),
        0.0,
        data.env_settings(),
    )


def fit_policy(
    policy: BaselinePolicy,
    dataset: Any,
    callback: Callable[[int, BaselinePolicy], None] | None = None,
) -> BaselinePolicy:
    """Train ``policy.algo`` on the d3rlpy ``dataset`` for ``policy.steps`` gradient steps
    (``callback(step, policy)`` after each), record the time, and return the policy."""
    d3rlpy = import_d3rlpy()
    start = time.perf_counter()
    policy.algo.fit(
        dataset,
        n_steps=policy.steps,
        n_steps_per_epoch=policy.steps,
        experiment_name=f"{policy.name}_seed{policy.seed}",
        with_timestamp=False,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
        show_progress=False,
        callback=None if callback is None else lambda _a, _e, step: callback(step, policy),
    )
    policy.train_seconds = time.perf_counter() - start
    log.info(
        "%s: %d steps on %d transitions (%d episodes) in %.1fs (%.1f steps/s)",
        policy.name,
        policy.steps,
        policy.num_transitions,
        policy.num_episodes,
        policy.train_seconds,
        policy.steps_per_second,
    )
    return policy
