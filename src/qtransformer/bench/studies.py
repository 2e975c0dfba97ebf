"""Every benchmark study and profile, declared once, as data.

A :class:`Profile` gives the sizes of one run (tasks, data, evaluation, training steps); a
:class:`Study` says which algorithms run on which presets, seeds and data sizes of a profile,
and which tables it writes. ``qtransformer bench --study NAME`` runs one of :data:`STUDIES`.
Measured results live in ``benchmarks/results``, never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from qtransformer.baselines import BASELINES
from qtransformer.config import TrainConfig

BASELINE_ALGOS: tuple[str, ...] = tuple(BASELINES)
ALGOS = ("qt", *BASELINE_ALGOS)
GRID_ALGOS = ("qt", "bc", "bc-success", "iql", "cql", "dt")
"""The Meta-World grid's algorithms (ReBRAC came later, for OGBench)."""
ABLATIONS: dict[str, dict[str, Any]] = {
    "qt-no-conservative": {"conservative_weight": 0.0},
    "qt-no-mc-bound": {"mc_lower_bound": False},
    "qt-1-step": {"n_step": 1},
    "qt-softmax-conservative": {"conservative": "softmax"},
    "qt-alpha-1": {"conservative_weight": 1.0},
    "qt-alpha-2": {"conservative_weight": 2.0},
}
"""Q-Transformer variants of the paper's figure 6, run on the profile's ablation preset, and
the conservative weight alpha (0 is ``qt-no-conservative``)."""
EXPLORE_BASE: dict[str, Any] = {"n_bins": 32, "lr_schedule": "constant", "conservative_weight": 1.0}
"""The exploration's base: the ``cpu`` Q-Transformer before it took 16 bins, the cosine
schedule and alpha 0.5."""
EXPLORATION: dict[str, dict[str, Any]] = {
    "qt-32-bins-constant-lr": {},
    "qt-2500-steps": {"steps": 2500},
    "qt-cosine-lr": {"lr_schedule": "cosine"},
    "qt-16-bins": {"n_bins": 16},
    "qt-dropout-0.1": {"dropout": 0.1},
    "qt-alpha-0.5": {"conservative_weight": 0.5},
    "qt-16-bins-cosine": {"n_bins": 16, "lr_schedule": "cosine"},
    "qt-16-bins-cosine-2000-steps": {"n_bins": 16, "lr_schedule": "cosine", "steps": 2000},
    "qt-16-bins-cosine-alpha-0.25": {
        "n_bins": 16,
        "lr_schedule": "cosine",
        "conservative_weight": 0.25,
    },
}
"""Changes to :data:`EXPLORE_BASE`, one at a time, then combined: training length,
learning-rate decay, coarser bins, dropout and the conservative weight."""
SPEED_VARIANTS: dict[str, dict[str, Any]] = {
    "qt-bf16": {"precision": "bf16"},
    "qt-compiled": {"compile": True},
}
"""The profile's Q-Transformer in bf16 autocast, and compiled: what the faster settings do to
learning and to a cell's time (``benchmarks/precision.py``)."""
SMALL_DATA_DROPOUT = {"dropout": 0.1}
"""Dropout, the best of the 25-episode variants, also measured at the profile's size."""
FINISH: dict[str, dict[str, Any]] = {
    "qt-gamma-0.95": {"gamma": 0.95},
    "qt-gamma-0.9": {"gamma": 0.9},
    "qt-gamma-0.95-alpha-0.25": {"gamma": 0.95, "conservative_weight": 0.25},
    "qt-gamma-0.9-alpha-0.1": {"gamma": 0.9, "conservative_weight": 0.1},
    "qt-gamma-0.95-alpha-0.25-2000-steps": {
        "gamma": 0.95,
        "conservative_weight": 0.25,
        "steps": 2000,
    },
    "qt-1-head": {"q_heads": 1},
    "qt-bins-on-bounds": {"bin_layout": "bounds"},
    "qt-with-dropout-0.1": SMALL_DATA_DROPOUT,
    "qt-alpha-0.25": {"conservative_weight": 0.25},
    "qt-alpha-0.1": {"conservative_weight": 0.1},
    "qt-n-step-5": {"n_step": 5},
    "qt-n-step-10": {"n_step": 10},
}
"""Shorter horizons: at gamma 0.98 a decision saved is worth 2% of Q, at 0.9 about 10%, so the
value of finishing sooner stands out further above the conservative term's pull towards the
data's frequent (expert-speed) bins; one Q head (less pessimism); and bins that reach the
action bounds, where the expert's commands often sit (16 bin centres cost it 0.3-1.0
decisions, ``benchmarks/finish.py``); a weaker conservative term at the profile's gamma (its
regression of the bins the data did not take towards 0 might favour the data's frequent
actions, the expert's speed, over rarer faster ones; measured: it makes the policy slower);
longer n-step returns (fewer bootstraps, each of which the conservative term pulls down, so
less of the underestimation that compresses the gap between fast and slow actions)."""
SMALL_DATA: dict[str, dict[str, Any]] = {
    "qt-epochs-40": {"epochs": 40},
    "qt-3000-steps": {"steps": 3000},
    "qt-alpha-0.25": FINISH["qt-alpha-0.25"],
    "qt-alpha-1": {"conservative_weight": 1.0},
    "qt-with-dropout-0.1": SMALL_DATA_DROPOUT,
}
"""Training length and regularization where Q-Transformer loses at 25 episodes: steps from the
data's size (40 passes: about the grid's 1000 steps at 100 episodes), three times the steps
(IQL's), a weaker and a stronger conservative term, dropout."""
VARIANTS: dict[str, dict[str, Any]] = {
    **ABLATIONS,
    **SPEED_VARIANTS,
    **FINISH,
    **SMALL_DATA,
    **{name: {**EXPLORE_BASE, **change} for name, change in EXPLORATION.items()},
}
"""Every Q-Transformer variant, as changes to the profile's Q-Transformer (``steps`` among
them replaces the profile's)."""
HARD_PRESETS = ("noisy", "suboptimal")
SCALE_ALGOS = ("qt", "iql", "bc-success")
MT10_ALGOS = ("qt", "iql", "bc-success", "bc")
"""The multi-task study's algorithms: one agent each for all ten tasks, every one told the
task as a one-hot code. Q-Transformer gets a third of the baselines' gradient steps, as in the
``cpu`` profile, because one of its steps costs about three of theirs on this CPU (so each
cell trains for about the same wall-clock time)."""
TIME_LIMITS = (12, 15, 20)
"""Decisions allowed in the time-limit table, besides the profile's own limit."""


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run."""

    tasks: tuple[str, ...]
    presets: tuple[str, ...]
    seeds: tuple[int, ...]
    episodes_per_task: int
    max_steps: int
    action_repeat: int
    eval_episodes: int
    eval_envs: int
    eval_points: int
    steps: dict[str, int]
    qt: TrainConfig
    ablation_preset: str = "noisy"


# The adopted defaults (TrainConfig()), chosen on this profile: explore.md and ablations.md.
QT_CPU = TrainConfig(log_every=250)

PROFILES: dict[str, Profile] = {
    # Everything in about 90 minutes on 2 CPU cores (two cells at a time).
    "cpu": Profile(
        tasks=("push-v3",),
        presets=("demos", "mixed", "noisy", "suboptimal"),
        seeds=(0, 1, 2),
        episodes_per_task=100,
        max_steps=200,
        action_repeat=4,
        eval_episodes=50,
        eval_envs=10,
        eval_points=3,
        steps={"qt": 1000, "bc": 3000, "bc-success": 3000, "iql": 3000, "cql": 600, "dt": 600},
        qt=QT_CPU,
    ),
    # Paper-like scale, for a GPU: MT10, more data, long training.
    "full": Profile(
        tasks=("MT10",),
        presets=("demos", "mixed", "noisy", "suboptimal"),
        seeds=(0, 1, 2),
        episodes_per_task=100,
        max_steps=200,
        action_repeat=4,
        eval_episodes=100,
        eval_envs=25,
        eval_points=10,
        steps={
            "qt": 100_000,
            "bc": 100_000,
            "bc-success": 100_000,
            "iql": 100_000,
            "cql": 100_000,
            "dt": 100_000,
        },
        qt=replace(
            QT_CPU,
            steps=100_000,
            batch_size=256,
            d_model=256,
            n_layers=4,
            n_heads=8,
            n_bins=64,
            log_every=1000,
            device="auto",
        ),
    ),
    # make demo: one task and regime, a few minutes on a laptop CPU.
    "demo": Profile(
        tasks=("push-v3",),
        presets=("suboptimal",),
        seeds=(0,),
        episodes_per_task=60,
        max_steps=200,
        action_repeat=4,
        eval_episodes=20,
        eval_envs=10,
        eval_points=3,
        steps={"qt": 1000, "bc": 1500, "bc-success": 1500, "iql": 1500, "cql": 300, "dt": 300},
        qt=QT_CPU,
    ),
    # A few seconds, for tests of the machinery.
    "tiny": Profile(
        tasks=("reach-v3",),
        presets=("demos",),
        seeds=(0,),
        episodes_per_task=4,
        max_steps=100,
        action_repeat=4,
        eval_episodes=2,
        eval_envs=2,
        eval_points=1,
        steps={"qt": 4, "bc": 4, "bc-success": 4, "iql": 4, "cql": 2, "dt": 2},
        qt=replace(QT_CPU, steps=4, batch_size=16, n_bins=8, d_model=16, n_layers=1, n_heads=2),
    ),
}


@dataclass(frozen=True)
class Cell:
    """One training run: an algorithm (or variant) on one preset's data with one seed."""

    algo: str
    preset: str
    seed: int
    episodes: int | None = None
    """Episodes per task when not the profile's (the data-scale study)."""

    @property
    def key(self) -> str:
        size = f"__{self.episodes}eps" if self.episodes is not None else ""
        return f"{self.algo}__{self.preset}__seed{self.seed}{size}"


@dataclass(frozen=True)
class Study:
    """Which cells of a profile one study runs, and which tables it writes.

    Its cells are every algorithm on every preset, seed and data size it names, plus its
    ``variants`` on the profile's ablation preset.
    """

    name: str
    algos: tuple[str, ...]
    """``qt``, baselines and Q-Transformer variants (names of :data:`VARIANTS`)."""
    tables: tuple[str, ...]
    """Files the summary writes (from ``benchmarks/results/cells/<name>.jsonl``)."""
    presets: tuple[str, ...] | None = None
    """Data presets; None: the profile's."""
    seeds: int | None = None
    """How many of the profile's seeds (the first ones); None: all."""
    more_seeds: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Seeds run besides those at a data size (episodes per task -> seeds): where the
    profile's seeds leave two algorithms within each other's spread."""
    episodes: tuple[int | None, ...] = (None,)
    """Episodes per task of its datasets; None: the profile's."""
    tasks: tuple[str, ...] | None = None
    """Meta-World tasks; None: the profile's."""
    variants: tuple[str, ...] = ()
    """Q-Transformer variants also run on the profile's ablation preset."""
    folder: str | None = None
    """Its work folder below ``--work`` (cells and data); None: ``--work`` itself, shared by
    the studies that ran there before studies had folders (their keys never collide)."""
    uses: tuple[str, ...] = ()
    """Other studies whose records its tables read."""
    sizes: dict[str, Any] | None = None
    """Changes to the profile's sizes (``Profile`` fields: data, evaluation, steps) for this
    study; None: the profile's."""

    def profile(self, profile: Profile) -> Profile:
        """The profile with this study's tasks and sizes."""
        if self.tasks is not None:
            profile = replace(profile, tasks=self.tasks)
        return profile if self.sizes is None else replace(profile, **self.sizes)

    def seeds_of(self, profile: Profile) -> tuple[int, ...]:
        return profile.seeds if self.seeds is None else profile.seeds[: self.seeds]

    def seeds_at(self, profile: Profile, episodes: int | None) -> tuple[int, ...]:
        """The seeds of its cells with ``episodes`` per task."""
        extra = self.more_seeds.get(episodes, ()) if episodes is not None else ()
        return (*self.seeds_of(profile), *extra)

    def cells(
        self, profile: Profile, algos: Sequence[str] | None = None, variants: bool = True
    ) -> list[Cell]:
        """Its cells on ``profile``: ``algos`` (default its own) on every data size, seed
        and preset, then (when ``variants``) its variants on the ablation preset."""
        presets = self.presets or profile.presets
        seeds = self.seeds_of(profile)
        out = [
            Cell(a, p, s, n)
            for n in self.episodes
            for s in self.seeds_at(profile, n)
            for p in presets
            for a in (self.algos if algos is None else algos)
        ]
        if variants:
            out += [Cell(a, profile.ablation_preset, s) for s in seeds for a in self.variants]
        return out

    def owns(self, cell: dict[str, Any]) -> bool:
        """Whether a finished cell (a record's ``cell``) belongs to this study."""
        algos = (*self.algos, *self.variants)
        return cell["algo"] in algos and cell.get("episodes") in self.episodes


@dataclass(frozen=True)
class PixelStudy:
    """Multi-task agents from 64 px frames, each with its own training config (``agents``:
    changes to ``config``, and ``successes_only: True`` to train on the successful episodes),
    on every preset and seed; evaluated along training on every task, and at the end with
    held-out paraphrases of the instructions."""

    name: str
    tasks: tuple[str, ...]
    paraphrases: dict[str, str]
    config: TrainConfig
    """The pixel agents' config; ``agents`` change it."""
    agents: dict[str, dict[str, Any]]
    tables: tuple[str, ...] = ("vision.json", "vision.md")
    presets: tuple[str, ...] = ("mixed",)
    seeds: tuple[int, ...] = (0,)
    paraphrase_agents: tuple[str, ...] = ()
    """Agents also evaluated, at the end, with :attr:`paraphrases` as their instructions."""
    steps: int = 1500
    """Gradient steps of an agent that does not set its own."""
    episodes_per_task: int = 40
    image_size: int = 64
    max_steps: int = 200
    action_repeat: int = 4
    eval_episodes: int = 25
    eval_envs: int = 5
    eval_points: int = 3
    eval_seed: int = 1000
    """Added to the seed for the evaluation environments."""
    collect_workers: int = 2
    folder: str = "pixels"
    uses: tuple[str, ...] = ()


# alpha 1: the weight the first three agents were measured with (vision.md); the last one
# measures the state profile's later alpha 0.5 from pixels.
PIXEL = replace(
    QT_CPU,
    conservative_weight=1.0,
    batch_size=64,
    observation="image",
    task_features="instruction",
    augment=True,
    log_every=250,
)

PIXEL_TASKS = ("drawer-open-v3", "drawer-close-v3", "button-press-topdown-v3", "door-open-v3")
LITE0 = replace(
    QT_CPU,
    batch_size=64,
    observation="image",
    task_features="instruction",
    image_encoder="lite0",
    image_frozen_blocks=10,
    image_last_block=10,
    image_tokens=16,
    augment=False,
    log_every=250,
)
"""The pretrained-encoder agents: the state profile's Q-Transformer (alpha 0.5, 16 bins,
cosine) reading 64 px frames through ImageNet EfficientNet-Lite0: blocks 0-9 frozen and
cached, block 10 (112 channels at 4 x 4) fine-tuned at a tenth of the rate with FiLM from
the instruction, each of its 16 cells a token."""

STATE_REFERENCE: dict[str, Any] = {
    "observation": "state",
    "augment": False,
    "steps": QT_CPU.steps,
    "batch_size": QT_CPU.batch_size,
}
"""A pixel study's upper reference: its agents' network and instruction, reading the state
vector with the state profile's steps and batch."""


@dataclass(frozen=True)
class OGBenchStudy:
    """Single-task OGBench manipulation (its protocol: one agent per task, trained on the
    family's play data relabelled with that task's reward, evaluated on that task): every
    algorithm on every family, task and seed, on data generated here with OGBench's oracles.

    Every algorithm gets the same number of gradient steps (``steps``; batch 256 for the
    baselines as in OGBench, Q-Transformer its default 128) and the same evaluation
    (``eval_episodes`` per task at the end of training)."""

    name: str
    families: tuple[str, ...]
    task_ids: tuple[int, ...] | None
    """Tasks of every family; None: each family's default task (OGBench's representative)."""
    algos: tuple[str, ...]
    seeds: tuple[int, ...]
    episodes: int
    """Play episodes generated per family (OGBench's datasets: 1000 of 1000 steps)."""
    steps: int
    """Gradient steps of every algorithm."""
    qt: TrainConfig
    """Q-Transformer's config (steps and seed are set per cell)."""
    episode_steps: int = 1000
    """Steps per play episode (OGBench's)."""
    eval_episodes: int = 10
    eval_envs: int = 5
    eval_points: int = 1
    """Evaluations evenly along training (the last at the end)."""
    data_seed: int = 0
    """One dataset per family for every training seed, as OGBench ships one."""
    folder: str = "ogbench"
    tables: tuple[str, ...] = ("ogbench.csv", "ogbench.md", "ogbench_bars.png")
    uses: tuple[str, ...] = ()


OGBENCH_QT = TrainConfig(gamma=0.99, log_every=500)
"""Q-Transformer on OGBench: the package defaults (batch 128: half the baselines' 256, for
the CPU budget) with OGBench's discount, 0.99, as every baseline there."""

OGBENCH_BASELINES: dict[str, dict[str, dict[str, Any]]] = {
    # The Flow Q-Learning paper's settings for OGBench manipulation (batch 256, discount 0.99,
    # layer-normalized networks; IQL with expectile 0.9 and its AWR temperature per family,
    # ReBRAC with its actor and critic behaviour weights per family), but 2 x 256 networks
    # instead of its 4 x 512: a step of those costs 0.16 s on one core, which the CPU budget
    # cannot pay for the steps a comparison needs.
    # (The per-family weights are the paper appendix's as we recorded them; its code's defaults
    # are IQL temperature 10 and ReBRAC weights 0.)
    "iql": {
        "*": dict(
            expectile=0.9,
            hidden_units=(256, 256),
            layer_norm=True,
            return_scale=None,
            source="Flow Q-Learning paper (Park et al. 2025), IQL on OGBench",
        ),
        "cube-single": dict(weight_temp=1.0),
        "cube-double": dict(weight_temp=0.3),
        "scene": dict(weight_temp=10.0),
        "puzzle-3x3": dict(weight_temp=10.0),
    },
    "rebrac": {
        "*": dict(hidden_units=(256, 256)),
        "cube-single": dict(actor_beta=1.0, critic_beta=0.0),
        "cube-double": dict(actor_beta=0.1, critic_beta=0.0),
        "scene": dict(actor_beta=0.1, critic_beta=0.01),
        "puzzle-3x3": dict(actor_beta=0.3, critic_beta=0.01),
    },
    "bc": {
        "*": dict(
            batch_size=256,
            learning_rate=3e-4,
            hidden_units=(256, 256),
            source="d3rlpy BC (MSE) with the OGBench batch and learning rate",
        )
    },
}
"""Changes to each baseline's default settings on OGBench: ``"*"`` for every family, then per
family."""


STUDIES: dict[str, Study | PixelStudy | OGBenchStudy] = {
    "grid": Study(
        "grid",
        algos=GRID_ALGOS,
        variants=tuple(ABLATIONS),
        tables=(
            "metaworld.csv",
            "metaworld.md",
            "metaworld_run.json",
            "ablations.md",
            "time_limits.md",
            "metaworld_curves.png",
            "metaworld_bars.png",
        ),
    ),
    "explore": Study(
        "explore",
        algos=tuple(EXPLORATION),
        presets=HARD_PRESETS,
        seeds=2,
        tables=("explore.md",),
        uses=("grid",),
    ),
    "scale": Study(
        "scale",
        algos=SCALE_ALGOS,
        presets=HARD_PRESETS,
        episodes=(25, 50),
        more_seeds={25: (3, 4)},
        tables=("scale.md",),
        uses=("grid",),
    ),
    "finish": Study(
        "finish",
        algos=tuple(FINISH),
        presets=HARD_PRESETS,
        tables=("finish.md",),
        uses=("grid",),
    ),
    "small": Study(
        "small",
        algos=tuple(SMALL_DATA),
        presets=HARD_PRESETS,
        episodes=(25,),
        tables=("small.md",),
        uses=("scale",),
    ),
    "mt10": Study(
        "mt10",
        algos=MT10_ALGOS,
        presets=("mixed", "noisy", "suboptimal"),
        tasks=("MT10",),
        folder="mt10",
        sizes={
            "episodes_per_task": 50,
            "eval_points": 1,
            "steps": {"qt": 3000, "bc": 9000, "bc-success": 9000, "iql": 9000},
        },
        tables=(
            "mt10.csv",
            "mt10.md",
            "mt10_tasks.md",
            "mt10_time_limits.md",
            "mt10_run.json",
            "mt10_bars.png",
        ),
    ),
    "transfer": Study(
        "transfer",
        algos=("qt", "iql", "bc-success"),
        presets=HARD_PRESETS,
        tasks=("door-open-v3",),
        folder="transfer",
        tables=("transfer.md", "transfer_run.json"),
    ),
    "transfer-pick-place": Study(
        "transfer-pick-place",
        algos=("qt", "iql", "bc-success"),
        presets=HARD_PRESETS,
        tasks=("pick-place-v3",),
        folder="transfer-pick-place",
        tables=("transfer_pick_place.md", "transfer_pick_place_run.json"),
    ),
    "pixels": PixelStudy(
        "pixels",
        tasks=PIXEL_TASKS,
        paraphrases={
            "drawer-open-v3": "pull the drawer out",
            "drawer-close-v3": "push the drawer shut",
            "button-press-topdown-v3": "push the button down from above",
            "door-open-v3": "swing the door open",
        },
        config=PIXEL,
        agents={
            "qt-pixels": {},
            "qt-state": STATE_REFERENCE,
            "bc-pixels": {"loss": "bc", "q_heads": 1, "successes_only": True},
            "qt-pixels-alpha-0.5": {"conservative_weight": 0.5},
        },
        paraphrase_agents=("qt-pixels", "qt-state", "bc-pixels", "qt-pixels-alpha-0.5"),
    ),
    "pretrained": PixelStudy(
        "pretrained",
        tasks=PIXEL_TASKS,
        paraphrases={
            "drawer-open-v3": "slide the drawer open",
            "drawer-close-v3": "close the drawer all the way",
            "button-press-topdown-v3": "press down on the button",
            "door-open-v3": "pull the door open",
        },
        config=LITE0,
        agents={
            "qt-lite0": {},
            "bc-lite0": {"loss": "bc", "q_heads": 1},
            "bc-success-lite0": {"loss": "bc", "q_heads": 1, "successes_only": True},
            "iql-lite0-features": {"baseline": "iql"},
            "qt-state": STATE_REFERENCE,
            "qt-lite0-instruction-noise": {"instruction_noise": 0.5},
        },
        presets=("noisy", "suboptimal", "mixed"),
        seeds=(0, 1, 2),
        paraphrase_agents=("qt-lite0", "bc-success-lite0", "qt-lite0-instruction-noise"),
        tables=("pixels_pretrained.json", "pixels_pretrained.md", "pixels_pretrained.png"),
        steps=1000,
        episodes_per_task=50,
        eval_episodes=50,
        eval_envs=10,
        eval_points=2,
        folder="pretrained",
    ),
    # OGBench single-task manipulation on generated play data (a tenth of OGBench's size):
    # each family's default task, every algorithm for the same gradient steps, evaluated
    # along training; about 110 minutes on 2 CPU cores (36 per seed).
    "ogbench": OGBenchStudy(
        "ogbench",
        families=("cube-single", "puzzle-3x3"),
        task_ids=None,
        algos=("qt", "iql", "rebrac", "bc"),
        seeds=(0, 1, 2),
        episodes=100,
        steps=8000,
        qt=OGBENCH_QT,
        eval_points=4,
    ),
}
"""Every study by name: ``qtransformer bench --study NAME``."""
