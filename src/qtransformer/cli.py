"""Command line, built with tyro: ``qtransformer collect | collect-ogbench | export | train |
finetune | eval | bench | demo``."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import tyro

from qtransformer.bench import BenchArgs
from qtransformer.config import PRESETS, TrainConfig
from qtransformer.finetune import FinetuneConfig

log = logging.getLogger("qtransformer")

PresetName = Literal["default", "paper"]
"""The names of :data:`qtransformer.config.PRESETS` (a test keeps the two in step)."""


@dataclass
class TrainArgs:
    """Train a Q-Transformer on an offline dataset (run under torchrun for several processes).

    --preset paper gives the paper's settings (256 bins, conservative weight 1, 1-step
    returns, one Q head, constant learning rate, 3000 steps) instead of the defaults we
    measured best; flags given with it change the preset (--preset paper --steps 500)."""

    data: str
    """Dataset: a Minari dataset folder or id, a folder saved by OfflineDataset.save, or a .npz
    of flat arrays (observations, actions, rewards, terminals, timeouts)."""
    out: Path = Path("runs/train")
    """Output directory: checkpoint/, agent/, train_config.json, tb/."""
    resume: bool = False
    """Continue from out/checkpoint if it exists (same settings and data, else refused)."""
    overwrite: bool = False
    """Replace an earlier run in --out (without it, a folder holding one is refused)."""
    tensorboard: bool = False
    """Write TensorBoard logs to out/tb."""
    preset: PresetName = "default"
    """Named configuration the other flags start from: 'default' (the settings we measured
    best) or 'paper' (the paper's); the defaults shown below are the chosen preset's."""
    lerobot_state: tuple[str, ...] | None = None
    """LeRobot data: features concatenated into the state (default observation.state, or
    every numeric observation.* feature)."""
    lerobot_action: str = "action"
    """LeRobot data: the action feature."""
    lerobot_camera: str | None = None
    """LeRobot data: the camera read as images (e.g. top); default the first; none: no
    images."""
    lerobot_reward: str | None = None
    """LeRobot data: the reward column (default next.reward, else success from next.success)."""
    label_success: bool = False
    """LeRobot data without rewards (demonstrations): every episode succeeds at its last step."""
    config: TrainConfig = field(default_factory=TrainConfig)

    def lerobot_columns(self) -> Any:
        from qtransformer.data.lerobot import LeRobotColumns

        return LeRobotColumns(
            state=self.lerobot_state,
            action=self.lerobot_action,
            camera=self.lerobot_camera,
            reward=self.lerobot_reward,
            label_success=self.label_success,
        )


@dataclass
class FinetuneArgs:
    """Fine-tune a trained agent online: act in a Meta-World task with exploration, keep the
    episodes (a Minari dataset in OUT/online-v0) and train on them mixed with the offline data.
    Evaluates greedily along the way; resumable."""

    agent: Path
    """The offline agent (runs/x/agent)."""
    data: str
    """The offline dataset it was trained on (mixed into every batch)."""
    env: str
    """The Meta-World task to act in (one of the agent's tasks)."""
    out: Path = Path("runs/finetune")
    """checkpoint/, online-v0/ (the online episodes), agent/, history.json, tb/."""
    resume: bool = False
    """Continue the run in --out."""
    tensorboard: bool = False
    """Write TensorBoard curves (success, Q on the batches, online episodes) to out/tb."""
    config: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass
class ExportArgs:
    """Write a dataset (Minari, saved folder, .npz) as a LeRobot v3.0 dataset folder: parquet
    tables, camera frames as AV1 video (PyAV), readable by LeRobot and by train --data."""

    data: str
    """The dataset to export (anything train --data opens)."""
    out: Path
    """The LeRobot dataset folder to write."""
    fps: float | None = None
    """Decisions per second of the recording; default: Meta-World's 80 Hz divided by the
    data's action repeat, else 10."""
    camera: str | None = None
    """Name of the camera feature (observation.images.NAME); default the data's camera."""
    crf: int = 30
    """Video quality: constant rate factor (lower: closer to the frames, larger files)."""
    codec: Literal["libsvtav1", "h264"] = "libsvtav1"
    """Video codec: AV1 as LeRobot writes, or H.264."""
    overwrite: bool = False
    """Replace an existing folder at --out."""


@dataclass
class CollectArgs:
    """Collect Meta-World episodes (sparse reward) into a Minari dataset (HDF5)."""

    tasks: str = "reach-v3"
    """Comma-separated Meta-World v3 tasks, or MT10 / MT50."""
    out: Path = Path("datasets")
    """Minari root folder: the dataset goes to OUT/NAME (set MINARI_DATASETS_PATH=OUT to
    open it with minari.load_dataset(NAME))."""
    preset: Literal["demos", "mixed", "noisy", "suboptimal"] | None = None
    """A recipe in one of the paper's regimes; overrides --demos/--failures."""
    episodes_per_task: int | None = None
    """Episodes kept per task for a preset (default: the preset's own)."""
    demos: int = 0
    """Expert demonstrations per task (successes only)."""
    failures: int = 0
    """Failed autonomous attempts per task (a degraded expert; only failures are kept)."""
    demo_noise: float = 0.1
    """Gaussian action noise of the demonstrations."""
    max_steps: int = 200
    """Time limit in environment steps."""
    action_repeat: int = 1
    """Environment steps per decision (4 gives ~35-decision episodes, as in the paper)."""
    image_size: int | None = None
    """Also record square camera images of this size in px (64 to 128)."""
    camera: str = "corner"
    """Camera for the images."""
    jpeg: bool = False
    """Store images JPEG-encoded (smaller, lossy)."""
    embed_instructions: bool = False
    """Compute the instruction embeddings now (all-MiniLM-L6-v2, needs the language extra)
    and store them with the dataset, so training on instructions needs no language model."""
    workers: int = 2
    """Collection processes."""
    seed: int = 0
    """Seed of the whole collection: same seed, same data."""
    name: str | None = None
    """Dataset id; default metaworld-PRESET-TASKS-v0."""
    overwrite: bool = False
    """Replace an existing dataset of that name."""
    format: Literal["minari", "lerobot"] = "minari"
    """minari: a Minari dataset (HDF5); lerobot: a LeRobot v3.0 folder (parquet tables, camera
    frames as AV1 video) at OUT/NAME."""


@dataclass
class OGBenchCollectArgs:
    """Generate OGBench manipulation data with OGBench's own scripted oracles and write one
    Minari dataset per single-task task (OGBench's reward: objects at goal minus objects)."""

    family: Literal["cube-single", "cube-double", "scene", "puzzle-3x3"] = "cube-single"
    """OGBench manipulation family."""
    tasks: str = "all"
    """Single-task tasks to write, e.g. "1,2" (1..5), or all."""
    episodes: int = 100
    """Play episodes of 1000 steps (OGBench's datasets have 1000: 100 is a tenth)."""
    dataset_type: Literal["play", "noisy"] = "play"
    """play: plan oracles with smoothed noise; noisy: Markov oracles with Gaussian noise."""
    out: Path = Path("datasets")
    """Minari root folder: datasets go to OUT/ogbench-FAMILY-TYPE-taskK-v0."""
    workers: int = 2
    """Generation processes (the data is the same for any number)."""
    seed: int = 0
    """Seed of the whole generation: same seed, same data."""
    overwrite: bool = False
    """Replace existing datasets of those names."""


@dataclass
class EvalArgs:
    """Evaluate a trained agent on Meta-World tasks: success rates with 95% intervals."""

    agent: Path
    """A saved agent (or checkpoint) folder."""
    tasks: str | None = None
    """Comma-separated tasks, MT10 or MT50; default: the tasks the agent was trained on."""
    episodes: int = 50
    """Episodes per task."""
    num_envs: int = 10
    """Environments stepped together (one batched decode per step)."""
    max_steps: int | None = None
    """Time limit in env steps; default: the one the agent's data was collected with."""
    action_repeat: int | None = None
    """Env steps per decision; default: the one the agent's data was collected with."""
    env_mismatch_ok: bool = False
    """Allow --max-steps / --action-repeat to differ from the agent's recorded settings."""
    seed: int = 0
    """Evaluation seed (episodes never share seeds with collection)."""
    videos: int = 0
    """GIFs of this many episodes per task, written next to the JSON."""
    out: Path = Path("runs/eval/eval.json")
    """Results as JSON."""
    instructions: Path | None = None
    """JSON file {task: instruction} replacing the trained instructions (e.g. held-out
    paraphrases); needs an agent trained with --task-features instruction."""
    compile: bool = False
    """Decode with torch.compile: faster decisions after a one-time compilation (about a
    minute per batch size on a CPU), worth it for long evaluations."""
    act_temperature: float | None = None
    """Act at the softmax(Q / T)-weighted mean of each dimension's bin values (0: the best
    bin's value); default: the agent's own setting."""


@dataclass
class DemoArgs:
    """Collect a small dataset, train, evaluate, print the table and write the plots."""

    env: Literal["metaworld", "grid"] = "metaworld"
    """metaworld: Q-Transformer vs behaviour cloning on push-v3; grid: the stitching task."""
    out: Path = Path("runs/demo")
    """Where the data, results, table and plots go."""
    steps: int = 1500
    """Gradient steps (grid demo)."""
    seed: int = 0
    """Seed of collection and training (grid demo)."""


def run_train(args: TrainArgs) -> None:
    from qtransformer.atomic import recover
    from qtransformer.trainer import RUN_FILES, dataset_summary, train

    # Resolved once here, and checked before any work starts (after tidying what a killed
    # run left, so that a checkpoint moved aside mid-write counts as the run it is).
    args.out = args.out.expanduser().resolve()
    recover(args.out / "checkpoint")
    recover(args.out / "agent")
    earlier = [name for name in RUN_FILES if (args.out / name).exists()]
    if earlier and not (args.resume or args.overwrite):
        raise CliError(
            f"{args.out} holds an earlier run ({', '.join(earlier)}): pass --resume to continue "
            "it, --overwrite to replace it, or choose another --out"
        )
    if args.resume and args.overwrite:
        raise CliError("--resume continues the run in --out and --overwrite replaces it: pick one")
    data = open_training_data(args)
    log.info("dataset %s: %s", args.data, dataset_summary(data))
    train(
        data,
        args.config,
        out_dir=args.out,
        resume=args.resume,
        progress=True,
        tensorboard=args.tensorboard,
    )
    log.info("agent written to %s", args.out / "agent")
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def open_training_data(args: TrainArgs) -> Any:
    from qtransformer.data.dataset import OfflineDataset
    from qtransformer.data.lerobot import LeRobotColumns, is_lerobot

    columns = args.lerobot_columns()
    if is_lerobot(args.data):
        return OfflineDataset.open(args.data, lerobot=columns)
    if columns != LeRobotColumns():
        raise CliError(
            f"--lerobot-* and --label-success choose columns of a LeRobot dataset; {args.data} "
            "is not one (no meta/info.json)"
        )
    return OfflineDataset.open(args.data)


def export_fps(metadata: Mapping[str, Any]) -> float:
    """Decisions per second: Meta-World steps its simulation at 80 Hz, OGBench's
    manipulation at 20 Hz; a decision spans ``action_repeat`` steps. Else 10."""
    base = {"metaworld": 80.0, "ogbench": 20.0}.get(str(metadata.get("source")))
    if base is None:
        return 10.0
    return base / int(metadata.get("action_repeat") or 1)


def run_finetune(args: FinetuneArgs) -> None:
    from qtransformer.data.dataset import OfflineDataset
    from qtransformer.finetune import finetune

    out = args.out.expanduser().resolve()
    data = OfflineDataset.open(args.data)
    _, history = finetune(
        args.agent, data, args.env, args.config, out_dir=out, resume=args.resume,
        progress=True, tensorboard=args.tensorboard,
    )  # fmt: skip
    first, last = history[0], history[-1]
    print(
        f"success {first['success']:.2f} -> {last['success']:.2f} after {last['decisions']:.0f} "
        f"decisions ({last['online_episodes']:.0f} online episodes) -> {out / 'agent'}"
    )


def run_export(args: ExportArgs) -> None:
    from qtransformer.data.dataset import OfflineDataset
    from qtransformer.data.lerobot import write_lerobot
    from qtransformer.data.video import VideoSettings

    out = args.out.expanduser().resolve()
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} exists: pass --overwrite to replace it (nothing was written)")
    if args.fps is not None and not args.fps > 0:
        raise CliError(f"--fps must be positive, got {args.fps}")
    data = OfflineDataset.open(args.data)
    fps = args.fps or export_fps(data.metadata)
    path = write_lerobot(
        data,
        out,
        fps=fps,
        camera=args.camera,
        video=VideoSettings(codec=args.codec, crf=args.crf),
        overwrite=args.overwrite,
    )
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(
        f"{data.num_episodes} episodes, {len(data)} steps, {fps:g} fps, "
        f"{disk / 2**20:.2f} MiB on disk -> {path}"
    )


def run_collect(args: CollectArgs) -> None:
    from qtransformer import collection as mw
    from qtransformer.atomic import locked, recover
    from qtransformer.envs import metaworld as menv

    tasks = menv.resolve_tasks(args.tasks)
    if args.jpeg and args.format == "lerobot":
        raise CliError("--jpeg stores frames in a Minari dataset; --format lerobot stores video")
    if args.preset is not None:
        recipe = mw.preset_recipe(
            args.preset, tasks, args.episodes_per_task, args.max_steps, args.action_repeat
        )
    elif args.demos or args.failures:
        recipe = mw.custom_recipe(
            tasks, args.demos, args.failures, args.demo_noise, args.max_steps, args.action_repeat
        )
    else:
        raise CliError("nothing to collect: give --preset NAME, or --demos N and/or --failures M")
    # Minari ids allow letters, digits, '-' and '_': tasks are joined by '_'.
    label = "_".join(tasks) if len(tasks) <= 3 else args.tasks.split(",")[0].lower()
    name = args.name or f"metaworld-{args.preset or 'custom'}-{label}-v0"
    if not re.fullmatch(r"[A-Za-z0-9_-]+-v\d+", name):
        raise CliError(
            f"--name {name!r}: a Minari dataset id is letters, digits, '-' and '_' ending in a "
            "version, e.g. my-data-v0"
        )
    # Resolved once here: the dataset is built under a temporary folder, and relative paths
    # would be read against it.
    args.out = args.out.expanduser().resolve()
    # One collection per dataset name at a time; the OS releases the lock if it is killed.
    with locked(args.out / f".{name}.lock", f"{args.out / name} (a collection)"):
        recover(args.out / name)  # a replacement killed mid-swap: the old dataset comes back
        if (args.out / name).exists() and not args.overwrite:
            raise CliError(
                f"{args.out / name} exists: pass --overwrite to replace it, or --name to keep "
                "both (nothing was collected)"
            )
        collect_into(args, recipe, tasks, name)


def run_collect_ogbench(args: OGBenchCollectArgs) -> None:
    from qtransformer.atomic import locked
    from qtransformer.collection import ogbench as oc
    from qtransformer.envs import ogbench as oenv

    task_ids = oenv.resolve_task_ids(args.tasks)
    if args.episodes < 1:
        raise CliError(f"--episodes must be at least 1, got {args.episodes}")
    out = args.out.expanduser().resolve()
    names = [oc.dataset_id(args.family, k, args.dataset_type) for k in task_ids]
    existing = [n for n in names if (out / n).exists()]
    if existing and not args.overwrite:
        raise CliError(
            f"{', '.join(str(out / n) for n in existing)} exist: pass --overwrite to replace "
            "them (nothing was generated)"
        )
    with locked(out / f".ogbench-{args.family}.lock", f"{out} (an OGBench generation)"):
        raw = oc.generate(
            args.family,
            args.episodes,
            seed=args.seed,
            dataset_type=args.dataset_type,
            workers=args.workers,
            progress=True,
        )
        paths = oc.write_ogbench(raw, out, task_ids, overwrite=args.overwrite)
    for k, path in paths.items():
        print(f"task{k}: {path}")


def collect_into(args: CollectArgs, recipe: Any, tasks: list[str], name: str) -> None:
    import time

    from rich.console import Console
    from rich.table import Table

    from qtransformer import collection as mw
    from qtransformer.data.minari_io import write_minari
    from qtransformer.envs import metaworld as menv

    t0 = time.perf_counter()
    episodes = mw.collect(
        recipe,
        seed=args.seed,
        workers=args.workers,
        progress=True,
        image_size=args.image_size,
        camera=args.camera,
    )
    vectors, model_name = None, None
    if args.embed_instructions:
        from qtransformer.language import MODEL_NAME, embedding_table

        vectors = embedding_table([ep.instruction for ep in episodes])
        model_name = MODEL_NAME
    env_spec = None
    if len(tasks) == 1:  # Minari can then recreate the environment: recover_environment()
        env_spec = menv.env_spec(
            tasks[0], args.max_steps, args.action_repeat, args.image_size, args.camera
        )
    low, high = menv.action_bounds()
    metadata = {
        "source": "metaworld",
        "preset": args.preset,
        "recipe": [item.as_dict() for item in recipe],
        "seed": args.seed,
        "max_steps": args.max_steps,
        "action_repeat": args.action_repeat,
        "image_size": args.image_size,
        "camera": args.camera if args.image_size else None,
    }
    if args.format == "lerobot":
        import numpy as np

        from qtransformer.data.dataset import OfflineDataset
        from qtransformer.data.lerobot import write_lerobot

        data = OfflineDataset.from_episodes(episodes, low, high, metadata)
        if vectors is not None and model_name is not None:
            data.set_instruction_embeddings(
                np.stack([vectors[t] for t in data.instructions]), model_name
            )
        path = write_lerobot(
            data,
            args.out / name,
            fps=export_fps(metadata),
            camera=args.camera,
            overwrite=args.overwrite,
        )
    else:
        path = write_minari(
            episodes,
            args.out,
            name,
            env_spec=env_spec,
            action_low=low,
            action_high=high,
            metadata=metadata,
            jpeg=args.jpeg,
            overwrite=args.overwrite,
            instruction_embeddings=vectors,
            embedding_model=model_name,
        )
    seconds = time.perf_counter() - t0
    info = mw.summary(episodes)
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    table = Table(title=f"collected {name}")
    for col in ("task", "episodes", "successes", "steps"):
        table.add_column(col)
    for task, t in info["per_task"].items():
        table.add_row(task, str(t["episodes"]), str(t["successes"]), str(t["steps"]))
    table.add_row("all", str(info["episodes"]), str(info["successes"]), str(info["steps"]))
    Console().print(table)
    Console().print(
        f"{info['episodes']} episodes, {info['successes']} successes, {info['steps']} steps "
        f"({info['env_steps']} env steps), {disk / 2**20:.1f} MiB on disk, {seconds:.0f} s "
        f"-> {path}"
    )


def run_eval(args: EvalArgs) -> None:
    import json

    from rich.console import Console
    from rich.table import Table

    from qtransformer.agent import load_agent
    from qtransformer.envs import metaworld as menv
    from qtransformer.evaluate import env_settings, evaluate_metaworld
    from qtransformer.policy import AgentPolicy

    agent = load_agent(args.agent)
    if args.act_temperature is not None:
        agent.act_temperature = args.act_temperature
    if args.compile:
        agent.compile()
    if not args.env_mismatch_ok:
        check_env_flags(args, agent.env)
    tasks = menv.resolve_tasks(args.tasks) if args.tasks else agent.tasks
    instructions = None
    if args.instructions is not None:
        instructions = json.loads(args.instructions.read_text())
        if not isinstance(instructions, dict):
            raise SystemExit(f"{args.instructions} must hold a JSON object {{task: instruction}}")
    policy = AgentPolicy(agent)
    env = env_settings(policy.observes, args.max_steps, args.action_repeat)
    log.info(
        "evaluating in %s",
        ", ".join(f"{k}={v}" for k, v in env.as_dict().items() if v is not None),
    )
    ogbench = ogbench_tasks(agent.tasks) if args.tasks is None else None
    if ogbench is not None:
        from qtransformer.envs.ogbench import evaluate_ogbench

        results = {}
        for family in sorted({f for f, _ in ogbench}):
            ids = [k for f, k in ogbench if f == family]
            results.update(
                evaluate_ogbench(
                    policy, family, ids, args.episodes, args.num_envs, args.seed, env.max_steps
                )
            )
    else:
        results = evaluate_metaworld(
            policy,
            tasks,
            args.episodes,
            args.num_envs,
            seed=args.seed,
            max_steps=env.max_steps,
            action_repeat=env.action_repeat,
            multi_task=agent.config.task_dim > 0,
            video_dir=args.out.parent / "videos",
            video_episodes=args.videos,
            progress=True,
            instructions=instructions,
            image_size=env.image_size,
            camera=env.camera,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "agent": str(args.agent),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "env": env.as_dict(),
        "act_temperature": agent.act_temperature,
        "results": {t: r.as_dict() for t, r in results.items()},
    }
    args.out.write_text(json.dumps(payload, indent=2))
    table = Table(title=f"evaluation of {args.agent}")
    for col in ("task", "success", "95% interval", "decisions to success"):
        table.add_column(col)
    for t, r in results.items():
        table.add_row(
            t,
            f"{r.success_rate:.2f}",
            f"[{r.ci_low:.2f}, {r.ci_high:.2f}]",
            f"{r.mean_success_length:.1f}",
        )
    Console().print(table)
    Console().print(f"-> {args.out}")


def ogbench_tasks(names: Sequence[str]) -> list[tuple[str, int]] | None:
    """``[(family, task id)]`` when every name is an OGBench task (``"cube-single-task1"``,
    what agents trained on OGBench data call their tasks), else None."""
    from qtransformer.envs.ogbench import FAMILIES, TASK_IDS

    out = []
    for name in names:
        m = re.fullmatch(r"(.+)-task(\d+)", name)
        if m is None or m.group(1) not in FAMILIES or int(m.group(2)) not in TASK_IDS:
            return None
        out.append((m.group(1), int(m.group(2))))
    return out


ENV_FLAGS = {
    "max_steps": ("--max-steps", "a time limit of {} env steps"),
    "action_repeat": ("--action-repeat", "action repeat {}"),
}


def check_env_flags(args: EvalArgs, recorded: Mapping[str, Any]) -> None:
    """Refuse --max-steps / --action-repeat values other than the agent's recorded ones.

    Raises:
        SystemExit: naming the flag, both values and the agent folder.
    """
    for key, (flag, phrase) in ENV_FLAGS.items():
        given, known = getattr(args, key), recorded.get(key)
        if given is not None and known is not None and int(given) != int(known):
            raise SystemExit(
                f"{flag} {given}, but {args.agent} was trained on data collected with "
                f"{phrase.format(known)}; drop the flag, or pass --env-mismatch-ok to evaluate "
                "under other settings on purpose"
            )


def run_bench(args: BenchArgs) -> None:
    from qtransformer.bench import main as bench

    bench(args)


def run_demo(args: DemoArgs) -> None:
    from qtransformer.demo import run_demo, run_metaworld_demo

    if args.env == "grid":
        run_demo(args.out, steps=args.steps, seed=args.seed)
    else:
        run_metaworld_demo(args.out)


def preset_of(argv: Sequence[str]) -> str:
    """The ``--preset NAME`` (or ``--preset=NAME``) of a ``train`` command line, else
    ``"default"``; an unknown name is left for tyro to reject."""
    subcommands = {"collect", "collect-ogbench", "train", "eval", "bench", "demo"}
    first = next((a for a in argv if a in subcommands), None)
    if first != "train":
        return "default"
    rest = list(argv[list(argv).index("train") + 1 :])
    for i, a in enumerate(rest):
        name = None
        if a == "--preset" and i + 1 < len(rest):
            name = rest[i + 1]
        elif a.startswith("--preset="):
            name = a.split("=", 1)[1]
        if name in PRESETS:
            return name
    return "default"


def commands(preset: str = "default") -> Any:
    """The subcommands, with ``train``'s defaults taken from the configuration ``preset``."""
    train_default = TrainArgs(
        data=tyro.MISSING,  # type: ignore[arg-type]
        preset=preset,  # type: ignore[arg-type]
        config=TrainConfig.preset(preset),
    )
    return Union[  # noqa: UP007 (tyro reads the Annotated members of a typing.Union)
        Annotated[CollectArgs, tyro.conf.subcommand("collect")],
        Annotated[OGBenchCollectArgs, tyro.conf.subcommand("collect-ogbench")],
        Annotated[ExportArgs, tyro.conf.subcommand("export")],
        Annotated[FinetuneArgs, tyro.conf.subcommand("finetune")],
        Annotated[TrainArgs, tyro.conf.subcommand("train", default=train_default)],
        Annotated[EvalArgs, tyro.conf.subcommand("eval")],
        Annotated[BenchArgs, tyro.conf.subcommand("bench")],
        Annotated[DemoArgs, tyro.conf.subcommand("demo")],
    ]


class CliError(Exception):
    """A command given something it cannot use: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> None:
    """Run a subcommand. Problems with what was given (bad data, settings, paths, a refused
    resume, a locked output) and a diverged run end with a one-line message naming the file,
    field or flag, and a non-zero exit status, instead of a traceback."""
    from qtransformer.atomic import OutputLocked
    from qtransformer.trainer import TrainingDiverged

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        dispatch(argv)
    except CliError as e:
        log.error("error: %s", e)
        raise SystemExit(2) from None
    except (ValueError, FileNotFoundError, FileExistsError, OutputLocked) as e:
        log.error("error: %s", e)
        raise SystemExit(2) from None
    except TrainingDiverged as e:
        log.error("error: %s", e)
        raise SystemExit(3) from None


def dispatch(argv: list[str] | None) -> None:
    args = tyro.cli(
        commands(preset_of(sys.argv[1:] if argv is None else argv)),
        args=argv,
        config=(tyro.conf.OmitArgPrefixes, tyro.conf.OmitSubcommandPrefixes),
    )
    if isinstance(args, CollectArgs):
        run_collect(args)
    elif isinstance(args, OGBenchCollectArgs):
        run_collect_ogbench(args)
    elif isinstance(args, ExportArgs):
        run_export(args)
    elif isinstance(args, FinetuneArgs):
        run_finetune(args)
    elif isinstance(args, TrainArgs):
        run_train(args)
    elif isinstance(args, EvalArgs):
        run_eval(args)
    elif isinstance(args, BenchArgs):
        run_bench(args)
    else:
        run_demo(args)


if __name__ == "__main__":
    main()
