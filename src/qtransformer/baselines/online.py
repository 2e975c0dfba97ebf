"""Offline-to-online fine-tuning of the d3rlpy baselines IQL and Cal-QL, under the protocol
of Q-Transformer's fine-tuning (:mod:`qtransformer.finetune`), so that success against
decisions taken compares directly::

    policy = train_offline("cal-ql", data, steps=3000, seed=0)
    history = finetune_baseline(policy, data, "push-v3", OnlineConfig(seed=0))

What is shared with :func:`qtransformer.finetune.finetune`, and how:

- Acting: waves of one episode in each of ``num_envs`` environments, played by
  :func:`qtransformer.finetune.play_wave` itself (same environment wrapper, sparse reward,
  time limit, action repeat and episode seeds). The exploration is the baseline's own: actions
  drawn from its stochastic policy (d3rlpy ``sample_action``: IQL's Gaussian clipped to the
  action box, Cal-QL's tanh-squashed Gaussian), as Q-Transformer draws bins from its softmax.
- Storing: the online episodes go through the same conversion as the offline data
  (``OfflineDataset.from_episodes``, then :func:`~qtransformer.baselines.d3rlpy_data.
  training_arrays` and ``MDPDataset``), so a success is a terminal with reward 1 and a time-out
  a ``timeout``, exactly as offline. d3rlpy computes Cal-QL's Monte Carlo returns-to-go from
  each sampled transition's remaining episode rewards (``Transition.rewards_to_go`` of its
  ``BasicTransitionPicker``, discounted by ``gamma`` and reward-scaled when a batch becomes a
  ``TorchMiniBatch``), for online transitions as for offline ones.
- Learning: after every wave, ``round(updates_per_decision * decisions)`` gradient steps
  (``algo.update``) on batches of ``round(online_ratio * batch_size)`` online transitions and
  the rest offline, each drawn uniformly (:func:`mixed_batch`). Learning rates stay the
  offline ones, constant (IQL's actor leaves its cosine decay, see :func:`_constant_actor_lr`).
- Evaluating: greedy (d3rlpy ``predict``) through
  :class:`~qtransformer.baselines.BaselinePolicy` with
  :func:`~qtransformer.evaluate.evaluate_metaworld`, with the same episodes, environments and
  seed as Q-Transformer's fine-tuning evaluations.

Why Cal-QL's returns-to-go need no special picker here: rewards are 1 at a success and 0
otherwise, so every Q-value is at least 0 and a failed (timed-out) episode's Monte Carlo
return 0 is a valid lower bound however many steps the time limit cut off; the correction for
failed episodes under a negative step reward (a constant ``failure_return``) has nothing to
correct.

Unlike :func:`qtransformer.finetune.finetune`, a run keeps no checkpoint: it takes minutes
(IQL) to half an hour (Cal-QL) on one core, and an interrupted one is run again from its
start (benchmarks/finetune_baselines.py skips the runs that finished).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from qtransformer.baselines.d3rlpy_data import import_d3rlpy, mdp_dataset, training_arrays
from qtransformer.baselines.policies import BaselinePolicy
from qtransformer.baselines.settings import CQLSettings
from qtransformer.baselines.training import (
    _make_algo,
    _policy_facts,
    fit_policy,
    train_baseline,
)
from qtransformer.finetune import FINETUNE_SEED_OFFSET, FinetuneConfig, evaluate_finetuning

if TYPE_CHECKING:
    from qtransformer.data.dataset import OfflineDataset
    from qtransformer.data.episodes import Episode

log = logging.getLogger(__name__)

ONLINE_ALGOS = ("iql", "cal-ql")
"""The baselines :func:`train_offline` and :func:`finetune_baseline` take."""


@dataclass(frozen=True)
class CalQLSettings(CQLSettings):
    """Calibrated Q-Learning (Nakamoto et al. 2023): CQL whose conservative penalty pushes Q
    down on policy actions only to the Monte Carlo return of the data (d3rlpy ``CalQL``).

    Every hyperparameter is CQL's (:class:`~qtransformer.baselines.CQLSettings`): Cal-QL
    changes the penalty's target, not what CQL is tuned for, and keeping them equal makes the
    difference between the two the calibration alone. The conservative weight stays fixed
    (no Lagrangian tuning), as for CQL.
    """

    source: str = "CQLSettings with Cal-QL's calibrated conservative penalty"


def _check_algo(name: str) -> None:
    if name not in ONLINE_ALGOS:
        raise ValueError(f"unknown online baseline {name!r}; choose one of {ONLINE_ALGOS}")


def train_offline(
    name: str,
    data: OfflineDataset,
    steps: int,
    seed: int = 0,
    settings: CQLSettings | None = None,
    device: str = "cpu",
) -> BaselinePolicy:
    """Train ``iql`` or ``cal-ql`` offline on ``data``, as a policy ready to fine-tune.

    IQL is :func:`~qtransformer.baselines.train_baseline` itself. Cal-QL follows the same
    steps with d3rlpy ``CalQLConfig``: the settings, scalers and encoders of CQL are built
    exactly as :func:`~qtransformer.baselines.train_baseline` builds them for ``cql`` (none of
    CQL's settings is filled from the data), then carried over field by field into a
    ``CalQLConfig`` (it has CQL's fields and no others), so the two differ only in the
    calibrated penalty.

    Args:
        name: ``"iql"`` or ``"cal-ql"``.
        data: The offline dataset.
        steps: Gradient steps.
        seed: Seeds d3rlpy (Python, numpy's global generator, torch).
        settings: Cal-QL's hyperparameters (default :class:`CalQLSettings`); IQL takes its
            defaults.
        device: Torch device.

    Raises:
        ValueError: For another name, settings given for IQL, or ``steps < 1``.
    """
    _check_algo(name)
    if name == "iql":
        if settings is not None:
            raise ValueError("iql takes its default settings here; give settings for cal-ql only")
        return train_baseline("iql", data, steps, seed=seed, device=device)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    import torch

    s = settings if settings is not None else CalQLSettings()
    d3rlpy = import_d3rlpy()
    arrays = training_arrays(data, success_only=False)
    dataset = mdp_dataset(d3rlpy, arrays)
    d3rlpy.seed(seed)
    torch.manual_seed(seed)
    facts = _policy_facts(data, arrays, dataset, steps, seed)
    cql = _make_algo(d3rlpy, s, arrays, facts[2], facts[3], device)
    config = d3rlpy.algos.CalQLConfig(
        **{f.name: getattr(cql.config, f.name) for f in dataclasses.fields(cql.config)}
    )
    policy = BaselinePolicy(name, config.create(device=device), s, *facts)
    return fit_policy(policy, dataset)


@dataclass
class OnlineConfig:
    """Online fine-tuning settings of the baselines: the fields of
    :class:`~qtransformer.finetune.FinetuneConfig` that mean the same for them, with its
    defaults (its temperatures, conservative weight and learning rate are Q-Transformer's;
    a baseline explores with its own policy and keeps its offline learning rates, IQL's actor
    at its base rate rather than where its cosine decay ended)."""

    steps: int = FinetuneConfig.steps
    """Decisions taken in the environment, summed over the parallel environments."""
    num_envs: int = FinetuneConfig.num_envs
    """Environments stepped together: one wave is one episode in each."""
    updates_per_decision: float = 1.0
    """Gradient steps per decision taken (1, as the baselines' committed runs were made;
    Q-Transformer's default is 0.25)."""
    online_ratio: float = FinetuneConfig.online_ratio
    """Share of every batch drawn from the online episodes (the rest from the offline data)."""
    eval_every: int = FinetuneConfig.eval_every
    """Decisions between greedy evaluations (and one before any acting)."""
    eval_episodes: int = FinetuneConfig.eval_episodes
    """Episodes per evaluation."""
    seed: int = 0
    """Seed of the environments' episodes, the policy's draws and batch sampling."""

    def __post_init__(self) -> None:
        # The same checks as Q-Transformer's fine-tuning settings, with the same messages.
        FinetuneConfig(**dataclasses.asdict(self))


class SampledActions:
    """A baseline acting with its stochastic policy, in the shape
    :func:`qtransformer.finetune.play_wave` asks of an agent (``tasks``, ``act``): the
    observations are prepared and the actions clipped as :class:`BaselinePolicy` does for its
    greedy ones, so only the draw differs from evaluation."""

    def __init__(self, policy: BaselinePolicy) -> None:
        self.policy = policy
        self.tasks = policy.tasks

    def act(self, observations: Any, task: Any = None, explore: Any = None) -> np.ndarray:
        """Actions drawn from the policy (``explore`` is unused: the policy is the explorer)."""
        p = self.policy
        return p._clip(p.algo.sample_action(p._inputs(observations, task)))


def play_episodes(
    policy: BaselinePolicy, task: str, seeds: list[int], max_steps: int, action_repeat: int
) -> list[Episode]:
    """One episode per seed with actions drawn from the policy, by Q-Transformer's
    :func:`~qtransformer.finetune.play_wave` (the same environments, rewards and ends)."""
    from qtransformer.agent import Agent, Exploration
    from qtransformer.finetune import play_wave

    actor = cast(Agent, SampledActions(policy))
    return play_wave(actor, task, cast(Exploration, None), seeds, max_steps, action_repeat)


def online_mdp_dataset(episodes: list[Episode], data: OfflineDataset, task: str) -> Any:
    """The online episodes as a d3rlpy ``MDPDataset``, converted as the offline data was
    (task codes numbered as the offline data's, explicit ends: terminal at a success,
    timeout at the time limit)."""
    from qtransformer.finetune import _online_dataset

    return mdp_dataset(
        import_d3rlpy(), training_arrays(_online_dataset(episodes, data, task), False)
    )


def mixed_batch(offline: Any, online: Any, batch_size: int, online_ratio: float) -> Any:
    """A d3rlpy ``TransitionMiniBatch``: ``batch_size - n`` transitions drawn uniformly from
    ``offline``, then ``n = round(online_ratio * batch_size)`` from ``online`` (None: none).

    This is d3rlpy's ``MixedReplayBuffer`` sampling (each buffer's ``sample_transition``,
    numpy's global generator, which ``d3rlpy.seed`` seeds), with the online count rounded as
    Q-Transformer's :class:`~qtransformer.finetune.MixedSampler` rounds it (d3rlpy truncates
    the primary share, one row off for some ratios) and in the same order.
    """
    from d3rlpy.dataset import TransitionMiniBatch

    n_on = round(online_ratio * batch_size) if online is not None else 0
    rows = [offline.sample_transition() for _ in range(batch_size - n_on)]
    rows += [online.sample_transition() for _ in range(n_on)]
    return TransitionMiniBatch.from_transitions(rows)


def _constant_actor_lr(policy: BaselinePolicy) -> None:
    """IQL's actor learning rate decays to 0 over offline training (cosine): fine-tuning
    continues at its base rate, without the schedule, as Q-Transformer's fine-tuning
    continues at its offline rate with a constant schedule."""
    if policy.name != "iql":
        return
    optim = policy.algo.impl._modules.actor_optim
    for group in optim.optim.param_groups:
        group["lr"] = policy.algo.config.actor_learning_rate
    optim._lr_scheduler = None


def finetune_baseline(
    policy: BaselinePolicy,
    data: OfflineDataset,
    task: str,
    config: OnlineConfig | None = None,
    on_evaluation: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Fine-tune an offline-trained IQL or Cal-QL online on one Meta-World task, in place.

    Args:
        policy: From :func:`train_offline` (its d3rlpy algorithm is updated in place).
        data: The offline data it was trained on (mixed into every batch).
        task: Meta-World task to act in; one of the data's tasks.
        config: :class:`OnlineConfig`.
        on_evaluation: Called with every history row as it is made (progress).

    Returns:
        The evaluation history, one row per evaluation with the keys of Q-Transformer's:
        decisions taken, gradient steps, greedy success, online episodes and their success.

    Raises:
        ValueError: For another baseline, a task not in the data, or a policy trained on
            other tasks.
        FloatingPointError: When an update's losses turn NaN or infinite.
    """
    from qtransformer.envs.metaworld import resolve_tasks

    _check_algo(policy.name)
    cfg = config or OnlineConfig()
    resolve_tasks(task)
    if task not in data.tasks:
        raise ValueError(f"task {task!r} is not in the data's tasks {data.tasks}")
    if list(policy.tasks) != list(data.tasks):
        raise ValueError(
            f"the {policy.name} policy was trained on tasks {policy.tasks}, the data has "
            f"{data.tasks}: give the data it was trained on"
        )
    d3rlpy = import_d3rlpy()
    env = data.env_settings()
    max_steps = int(env.get("max_steps") or 200)
    action_repeat = int(env.get("action_repeat") or 1)
    algo = policy.algo
    offline = mdp_dataset(d3rlpy, training_arrays(data, success_only=False))
    _constant_actor_lr(policy)
    # Draws of actions and batches from here on depend on the fine-tuning seed alone.
    d3rlpy.seed(FINETUNE_SEED_OFFSET + cfg.seed)
    online: list[Episode] = []
    history: list[dict[str, float]] = []
    decisions = updates = 0

    def evaluate_now() -> None:
        result = evaluate_finetuning(
            policy, task, cfg, len(data.tasks) > 1, max_steps, action_repeat
        )
        row = {
            "decisions": float(decisions),
            "gradient_steps": float(updates),
            "success": result.success_rate,
            "online_episodes": float(len(online)),
            "online_success": float(np.mean([ep.success for ep in online]))
            if online
            else float("nan"),
        }
        history.append(row)
        log.info("finetune %s %s", policy.name, " ".join(f"{k}={v:.4g}" for k, v in row.items()))
        if on_evaluation is not None:
            on_evaluation(row)

    evaluate_now()
    while decisions < cfg.steps:
        first = FINETUNE_SEED_OFFSET + cfg.seed * 1_000_000 + len(online)
        wave = play_episodes(
            policy, task, list(range(first, first + cfg.num_envs)), max_steps, action_repeat
        )
        online += wave
        taken = sum(len(ep) for ep in wave)
        before = decisions
        decisions += taken
        buffer = online_mdp_dataset(online, data, task)
        for _ in range(round(cfg.updates_per_decision * taken)):
            batch = mixed_batch(offline, buffer, algo.config.batch_size, cfg.online_ratio)
            losses = algo.update(batch)
            updates += 1
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                raise FloatingPointError(
                    f"{policy.name} diverged at online update {updates} ({decisions} "
                    f"decisions): non-finite losses {bad}"
                )
        if decisions // cfg.eval_every > before // cfg.eval_every or decisions >= cfg.steps:
            evaluate_now()
    return history
