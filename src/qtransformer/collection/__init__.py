"""Offline datasets from Meta-World v3 with its scripted experts, in the Q-Transformer regimes.

Policies are the scripted expert of each task, degraded in documented ways
(:class:`PolicySpec`); recipes (:class:`RecipeItem`, :func:`preset_recipe`) say how many
episodes of which policy to keep: demonstrations, failed autonomous attempts, noisy replays,
successes of uneven quality; :func:`collect` runs them in parallel processes. The environment
itself is :class:`qtransformer.envs.metaworld.MetaWorldTask`.
"""

# isort: off
# First: the environment module sets MUJOCO_GL before anything below imports MuJoCo.
import qtransformer.envs.metaworld  # noqa: F401

# isort: on

from qtransformer.collection.collector import (
    CollectionError,
    collect,
    collect_episode,
    episode_seed,
    summary,
)
from qtransformer.collection.noise import (
    FALLBACK_NOISE,
    NOISE_FOR_40_PERCENT,
    calibrate_noise,
    noise_for_task,
)
from qtransformer.collection.policies import (
    KEEP_RULES,
    POLICY_KINDS,
    PolicySpec,
    RecipeItem,
    make_policy,
)
from qtransformer.collection.recipes import (
    DEFAULT_EPISODES_PER_TASK,
    PRESETS,
    custom_recipe,
    preset_recipe,
)

__all__ = [
    "DEFAULT_EPISODES_PER_TASK",
    "FALLBACK_NOISE",
    "KEEP_RULES",
    "NOISE_FOR_40_PERCENT",
    "POLICY_KINDS",
    "PRESETS",
    "CollectionError",
    "PolicySpec",
    "RecipeItem",
    "calibrate_noise",
    "collect",
    "collect_episode",
    "custom_recipe",
    "episode_seed",
    "make_policy",
    "noise_for_task",
    "preset_recipe",
    "summary",
]
