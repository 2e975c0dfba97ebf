"""d3rlpy 2.8.1 baselines (BC, BC on successes, IQL, CQL, ReBRAC, Decision Transformer) on our
datasets.

Every baseline trains on the same :class:`~qtransformer.data.dataset.OfflineDataset` as
Q-Transformer and comes back as a :class:`~qtransformer.policy.Policy`, so the evaluation code
that runs a Q-Transformer agent (through :class:`~qtransformer.policy.AgentPolicy`) runs them
too, in the environment settings their data was collected with::

    policy = train_baseline("iql", data, steps=100_000)
    results = evaluate_metaworld(policy, ["reach-v3"], episodes=100)

For multi-task data a one-hot task code is appended to every observation, so baselines see
the task as Q-Transformer's task token does, and ``act`` takes ``task`` as the agent does.
:data:`BASELINES` is the one list of them (name -> default settings and a description).

Modules: :mod:`.settings` (hyperparameters and the registry), :mod:`.d3rlpy_data` (the data
as d3rlpy gets it), :mod:`.training` (:func:`train_baseline`), :mod:`.policies` (the trained
algorithms as policies). d3rlpy itself is imported only when a baseline is trained.
"""

from __future__ import annotations

from qtransformer.baselines.d3rlpy_data import to_mdp_dataset
from qtransformer.baselines.policies import BaselinePolicy, DecisionTransformerPolicy
from qtransformer.baselines.settings import (
    BASELINES,
    BaselineSettings,
    BaselineSpec,
    BCSettings,
    CQLSettings,
    DTSettings,
    IQLSettings,
    ReBRACSettings,
    default_settings,
)
from qtransformer.baselines.training import train_baseline

__all__ = [
    "BASELINES",
    "BCSettings",
    "BaselinePolicy",
    "BaselineSettings",
    "BaselineSpec",
    "CQLSettings",
    "DTSettings",
    "DecisionTransformerPolicy",
    "IQLSettings",
    "ReBRACSettings",
    "default_settings",
    "to_mdp_dataset",
    "train_baseline",
]
