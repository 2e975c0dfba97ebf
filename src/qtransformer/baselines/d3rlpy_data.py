"""Our datasets as d3rlpy sees them: episode selection, one-hot task codes, ``MDPDataset``.

d3rlpy itself is imported here, quietly and only when a baseline is trained or converted.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from qtransformer.data.dataset import OfflineDataset


def import_d3rlpy() -> Any:
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
class TrainingArrays:
    """The training arrays as d3rlpy gets them, after episode selection and task codes."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray


def one_hot(ids: np.ndarray, n: int) -> np.ndarray:
    code = np.zeros((len(ids), n), np.float32)
    code[np.arange(len(ids)), ids] = 1.0
    return code


def training_arrays(data: OfflineDataset, success_only: bool) -> TrainingArrays:
    """The arrays d3rlpy trains on: all episodes, or the successful ones
    (:meth:`~qtransformer.data.dataset.OfflineDataset.episode_success`); a one-hot task code
    appended to the observations of multi-task data; every episode explicitly ended."""
    ep = data.episodes
    rewards = np.asarray(data.rewards, np.float32)
    returns = np.bincount(
        ep.episode_of_step, weights=rewards.astype(np.float64), minlength=data.num_episodes
    )
    keep = data.episode_success() if success_only else np.ones(len(returns), bool)
    if not keep.any():
        raise ValueError(
            f"no successful episode (reward sum > 0) among the {len(returns)} episodes: "
            "bc-success has nothing to train on"
        )
    steps = keep[ep.episode_of_step]
    obs = np.asarray(data.observations, np.float32)[steps]
    if len(data.tasks) > 1:
        ids = np.asarray(data.task_ids, np.int64)[steps]
        obs = np.concatenate([obs, one_hot(ids, len(data.tasks))], axis=1)
    terminals = np.asarray(data.terminals, bool).copy()
    timeouts = np.asarray(data.timeouts, bool) & ~terminals
    # The dataset may stop without flagging its last step: d3rlpy needs an explicit end.
    timeouts[ep.ends] |= ~terminals[ep.ends]
    return TrainingArrays(
        observations=obs,
        actions=np.asarray(data.actions, np.float32)[steps],
        rewards=rewards[steps],
        terminals=terminals[steps],
        timeouts=timeouts[steps],
        episode_returns=returns[keep],
        episode_lengths=ep.lengths[keep],
    )


def mdp_dataset(d3rlpy: Any, arrays: TrainingArrays) -> Any:
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
    """Convert to a ``d3rlpy.dataset.MDPDataset`` as
    :func:`~qtransformer.baselines.train_baseline` does.

    Args:
        data: Flat D4RL-style dataset.
        success_only: Keep only episodes whose reward sum is positive.

    Returns:
        The d3rlpy dataset; with more than one task, observations carry a one-hot task code.

    Raises:
        ValueError: If ``success_only`` and no episode has a positive reward sum.
    """
    return mdp_dataset(import_d3rlpy(), training_arrays(data, success_only))
