"""d3rlpy 2.8.1 baselines (BC, BC on successes, IQL, CQL, Decision Transformer) on our datasets.

Every baseline trains on the same :class:`~qtransformer.data.dataset.OfflineDataset` as
Q-Transformer. Observations are standardized (d3rlpy ``StandardObservationScaler``, mean and
standard deviation of the training data; features constant in the data keep scale 1 instead
of being blown up by ``1 / eps``), and actions are mapped from ``[action_low, action_high]`` to
d3rlpy's tanh range ``[-1, 1]`` and back (``MinMaxActionScaler``). For multi-task data a
one-hot task code is appended to every observation, so baselines see the task as
Q-Transformer's task token does, and ``act`` takes ``task`` as :meth:`Agent.act` does.

Hyperparameters are d3rlpy's own for D4RL continuous control (its ``reproductions/offline``
scripts, or the config defaults where it has no script); each settings class says which.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from qtransformer.agent import TaskArg, resolve_task_ids

if TYPE_CHECKING:
    from qtransformer.data.dataset import OfflineDataset

log = logging.getLogger(__name__)

BASELINES = ("bc", "bc-success", "iql", "cql", "dt")
"""Names accepted by :func:`train_baseline`."""


@dataclass(frozen=True)
class BCSettings:
    """Behaviour cloning: an MLP regressing the data's action (d3rlpy ``BC``, MSE loss).

    d3rlpy has no BC reproduction script; these are its ``BCConfig`` defaults.
    """

    batch_size: int = 100
    learning_rate: float = 1e-3
    policy_type: str = "deterministic"
    hidden_units: tuple[int, ...] = (256, 256)
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

    Fields left None are filled from the data and the step budget by :func:`train_baseline`.
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


BaselineSettings = Union[BCSettings, IQLSettings, CQLSettings, DTSettings]  # noqa: UP007


def default_settings(name: str) -> BaselineSettings:
    """The settings :func:`train_baseline` uses for baseline ``name`` unless told otherwise."""
    if name == "bc":
        return BCSettings()
    if name == "bc-success":
        return BCSettings(success_only=True)
    if name == "iql":
        return IQLSettings()
    if name == "cql":
        return CQLSettings()
    if name == "dt":
        return DTSettings()
    raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")


def _import_d3rlpy() -> Any:
    """Import d3rlpy quietly and send its structlog messages to stdlib ``logging``.

    d3rlpy imports the old ``gym`` (for its space classes), which prints a deprecation notice
    to stderr on import; that notice is swallowed. d3rlpy configures structlog globally to
    print to stdout; this reconfigures it to log through the ``d3rlpy.*`` stdlib loggers, which
    stay at WARNING unless their level was set already.
    """
    with contextlib.redirect_stderr(io.StringIO()):
        import d3rlpy
    import structlog

    structlog.configure(
        processors=[
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    d3rlpy_log = logging.getLogger("d3rlpy")
    if d3rlpy_log.level == logging.NOTSET:
        d3rlpy_log.setLevel(logging.WARNING)
    return d3rlpy


@dataclass(frozen=True)
class _Arrays:
    """The training arrays as d3rlpy gets them, after episode selection and task codes."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray


def _one_hot(ids: np.ndarray, n: int) -> np.ndarray:
    code = np.zeros((len(ids), n), np.float32)
    code[np.arange(len(ids)), ids] = 1.0
    return code


def _training_arrays(data: OfflineDataset, success_only: bool) -> _Arrays:
    ep = data.episodes
    rewards = np.asarray(data.rewards, np.float32)
    returns = np.add.reduceat(rewards.astype(np.float64), ep.starts)
    keep = returns > 0 if success_only else np.ones(len(returns), bool)
    if not keep.any():
        raise ValueError(
            f"no successful episode (reward sum > 0) among the {len(returns)} episodes: "
            "bc-success has nothing to train on"
        )
    steps = keep[ep.episode_of_step]
    obs = np.asarray(data.observations, np.float32)[steps]
    if len(data.tasks) > 1:
        ids = np.asarray(data.task_ids, np.int64)[steps]
        obs = np.concatenate([obs, _one_hot(ids, len(data.tasks))], axis=1)
    terminals = np.asarray(data.terminals, bool).copy()
    timeouts = np.asarray(data.timeouts, bool) & ~terminals
    # The dataset may stop without flagging its last step: d3rlpy needs an explicit end.
    timeouts[ep.ends] |= ~terminals[ep.ends]
    return _Arrays(
        observations=obs,
        actions=np.asarray(data.actions, np.float32)[steps],
        rewards=rewards[steps],
        terminals=terminals[steps],
        timeouts=timeouts[steps],
        episode_returns=returns[keep],
        episode_lengths=ep.lengths[keep],
    )


def _mdp_dataset(d3rlpy: Any, arrays: _Arrays) -> Any:
    return d3rlpy.dataset.MDPDataset(
        observations=arrays.observations,
        actions=arrays.actions,
        rewards=arrays.rewards,
        terminals=arrays.terminals.astype(np.float32),
        timeouts=arrays.timeouts.astype(np.float32),
        action_space=d3rlpy.ActionSpace.CONTINUOUS,
        action_size=arrays.actions.shape[1],
    )


def to_mdp_dataset(data: OfflineDataset, success_only: bool = False) -> Any:
    """Convert to a ``d3rlpy.dataset.MDPDataset`` as :func:`train_baseline` does.

    Args:
        data: Flat D4RL-style dataset.
        success_only: Keep only episodes whose reward sum is positive.

    Returns:
        The d3rlpy dataset; with more than one task, observations carry a one-hot task code.

    Raises:
        ValueError: If ``success_only`` and no episode has a positive reward sum.
    """
    return _mdp_dataset(_import_d3rlpy(), _training_arrays(data, success_only))


def _observation_scaler(d3rlpy: Any, obs: np.ndarray) -> Any:
    mean = obs.mean(axis=0, dtype=np.float64)
    std = obs.std(axis=0, dtype=np.float64)
    std = np.where(std < 1e-6, 1.0, std)
    return d3rlpy.preprocessing.StandardObservationScaler(mean=mean, std=std)


def _resolve(settings: BaselineSettings, arrays: _Arrays, steps: int) -> BaselineSettings:
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
    arrays: _Arrays,
    low: np.ndarray,
    high: np.ndarray,
    device: str,
) -> Any:
    scalers: dict[str, Any] = {
        "observation_scaler": _observation_scaler(d3rlpy, arrays.observations),
        "action_scaler": d3rlpy.preprocessing.MinMaxActionScaler(minimum=low, maximum=high),
    }
    encoder = d3rlpy.models.VectorEncoderFactory(list(s.hidden_units))
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


class BaselinePolicy:
    """A trained d3rlpy algorithm as a stateless :class:`~qtransformer.baselines.Policy`.

    Attributes:
        name: Baseline name (one of :data:`BASELINES`).
        algo: The trained d3rlpy algorithm.
        settings: The hyperparameters used, with data-dependent fields filled in.
        tasks: Task names, in the order of the task ids of the training data.
        action_low: Lower action bounds ``(dA,)``.
        action_high: Upper action bounds ``(dA,)``.
        steps: Gradient steps trained.
        seed: Training seed.
        num_steps: Dataset steps it trained on (after the ``bc-success`` filter).
        num_episodes: Episodes it trained on.
        num_transitions: d3rlpy's transition count (truncated episodes lose their last step).
        train_seconds: Wall time of training.
    """

    def __init__(
        self,
        name: str,
        algo: Any,
        settings: BaselineSettings,
        tasks: Sequence[str],
        obs_dim: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        steps: int,
        seed: int,
        num_steps: int,
        num_episodes: int,
        num_transitions: int,
        train_seconds: float,
    ) -> None:
        self.name = name
        self.algo = algo
        self.settings = settings
        self.tasks = list(tasks)
        self.obs_dim = obs_dim
        self.action_low = np.asarray(action_low, np.float32)
        self.action_high = np.asarray(action_high, np.float32)
        self.steps = steps
        self.seed = seed
        self.num_steps = num_steps
        self.num_episodes = num_episodes
        self.num_transitions = num_transitions
        self.train_seconds = train_seconds

    @property
    def steps_per_second(self) -> float:
        return self.steps / max(self.train_seconds, 1e-9)

    def record(self) -> dict[str, Any]:
        """Everything a results table should state about this baseline."""
        return {
            "baseline": self.name,
            "algorithm": type(self.algo).__name__,
            "settings": asdict(self.settings),
            "steps": self.steps,
            "seed": self.seed,
            "num_steps": self.num_steps,
            "num_episodes": self.num_episodes,
            "num_transitions": self.num_transitions,
            "train_seconds": self.train_seconds,
            "steps_per_second": self.steps_per_second,
            "observation_scaler": "standard (data mean/std; constant features scale 1)",
            "action_scaler": "min-max from the dataset's action bounds",
            "task_code": "one-hot appended" if len(self.tasks) > 1 else "none",
        }

    def _task_ids(self, task: TaskArg, batch: int) -> np.ndarray:
        return resolve_task_ids(task, self.tasks, batch)

    def _inputs(self, observations: np.ndarray, task: TaskArg) -> np.ndarray:
        obs = np.asarray(observations, np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(
                f"observations must have shape (B, {self.obs_dim}), got {tuple(obs.shape)}"
            )
        if len(self.tasks) > 1:
            codes = _one_hot(self._task_ids(task, len(obs)), len(self.tasks))
            obs = np.concatenate([obs, codes], axis=1)
        return obs

    def _clip(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(actions, np.float32), self.action_low, self.action_high)

    def reset(self, num_envs: int) -> None:
        """Nothing to reset: the policy keeps no history."""

    def act(self, observations: np.ndarray, task: TaskArg = None) -> np.ndarray:
        """Greedy actions ``(B, dA)`` within the dataset's action bounds.

        Args:
            observations: ``(B, obs_dim)``.
            task: For multi-task data: a task name or id, or one per row.
        """
        return self._clip(self.algo.predict(self._inputs(observations, task)))


class DecisionTransformerPolicy(BaselinePolicy):
    """Decision Transformer with a context of past steps per environment.

    Stateful: :meth:`reset` starts new episodes in ``num_envs`` environments, and :meth:`act`
    must then be called once per environment step with the observations of all of them (it
    appends them to each environment's history). Returns-to-go start at ``target_return`` and
    drop by the rewards passed to :meth:`act`; without rewards they stay at the target, which
    is exact for sparse rewards that arrive only as an episode ends.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.settings, DTSettings)
        assert self.settings.target_return is not None and self.settings.max_timestep is not None
        self.target_return = float(self.settings.target_return)
        self.max_timestep = int(self.settings.max_timestep)
        self._wrappers: list[Any] = []
        self._t = np.zeros(0, np.int64)

    def reset(self, num_envs: int, mask: np.ndarray | None = None) -> None:
        """Start new episodes in all ``num_envs`` environments, or only where ``mask`` is True.

        Args:
            num_envs: Number of environments stepped together.
            mask: ``(num_envs,)``: which environments start a new episode; None: all.
        """
        if mask is not None and len(self._wrappers) == num_envs:
            for i in np.flatnonzero(np.asarray(mask, bool)):
                self._wrappers[i].reset()
                self._t[i] = 0
            return
        self._wrappers = [
            self.algo.as_stateful_wrapper(target_return=self.target_return) for _ in range(num_envs)
        ]
        self._t = np.zeros(num_envs, np.int64)

    def act(
        self,
        observations: np.ndarray,
        task: TaskArg = None,
        rewards: np.ndarray | None = None,
    ) -> np.ndarray:
        """Next actions ``(num_envs, dA)``, one environment step for every environment.

        Args:
            observations: ``(num_envs, obs_dim)``, row i from environment i.
            task: For multi-task data: a task name or id, or one per environment.
            rewards: ``(num_envs,)`` rewards received since the previous call (0 at an
                episode start); None: all 0.

        Raises:
            ValueError: If the batch does not match :meth:`reset`'s ``num_envs`` or an episode
                outgrows the timestep embedding (``settings.max_timestep - 1`` steps).
        """
        x = self._inputs(observations, task)
        if not self._wrappers:
            self.reset(len(x))
        if len(x) != len(self._wrappers):
            raise ValueError(
                f"got {len(x)} observations for {len(self._wrappers)} environments; "
                "call reset(num_envs) when the number of environments changes"
            )
        if (self._t + 1 >= self.max_timestep).any():
            raise ValueError(
                f"episode longer than {self.max_timestep - 1} steps: "
                "train with a larger DTSettings.max_timestep"
            )
        r = np.zeros(len(x)) if rewards is None else np.asarray(rewards, np.float64).reshape(-1)
        actions = np.stack([w.predict(x[i], float(r[i])) for i, w in enumerate(self._wrappers)])
        self._t += 1
        return self._clip(actions)


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
        name: One of :data:`BASELINES`: ``bc`` (all episodes), ``bc-success`` (episodes with a
            positive reward sum only), ``iql``, ``cql`` or ``dt`` (Decision Transformer).
        data: The offline dataset Q-Transformer trains on.
        steps: Gradient steps.
        seed: Seeds d3rlpy (Python, numpy's global generator, torch).
        device: Torch device, e.g. ``"cpu"`` or ``"cuda:0"``.
        batch_size: Overrides the settings' batch size.
        settings: Hyperparameters; default :func:`default_settings` of ``name``.

    Returns:
        A :class:`BaselinePolicy`, or a stateful :class:`DecisionTransformerPolicy` for ``dt``.
        Its ``settings`` hold the values used and :meth:`BaselinePolicy.record` all facts.

    Raises:
        ValueError: For an unknown name, settings of another algorithm, ``steps < 1``, or
            ``bc-success`` on data without a successful episode.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")
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

    d3rlpy = _import_d3rlpy()
    arrays = _training_arrays(data, success_only=isinstance(s, BCSettings) and s.success_only)
    dataset = _mdp_dataset(d3rlpy, arrays)
    s = _resolve(s, arrays, steps)
    low = np.asarray(data.action_low, np.float64)
    high = np.asarray(data.action_high, np.float64)

    d3rlpy.seed(seed)
    torch.manual_seed(seed)
    algo = _make_algo(d3rlpy, s, arrays, low, high, device)
    cls = DecisionTransformerPolicy if name == "dt" else BaselinePolicy
    policy = cls(
        name,
        algo,
        s,
        data.tasks,
        data.obs_dim,
        low,
        high,
        steps,
        seed,
        num_steps=len(arrays.rewards),
        num_episodes=len(arrays.episode_returns),
        num_transitions=int(dataset.transition_count),
        train_seconds=0.0,
    )
    start = time.perf_counter()
    algo.fit(
        dataset,
        n_steps=steps,
        n_steps_per_epoch=steps,
        experiment_name=f"{name}_seed{seed}",
        with_timestamp=False,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
        show_progress=False,
        callback=None if callback is None else lambda _a, _e, step: callback(step, policy),
    )
    policy.train_seconds = time.perf_counter() - start
    log.info(
        "%s: %d steps on %d transitions (%d episodes) in %.1fs (%.1f steps/s)",
        name,
        steps,
        policy.num_transitions,
        policy.num_episodes,
        policy.train_seconds,
        policy.steps_per_second,
    )
    return policy
