"""The pixel study: one multi-task agent per row, trained from 64 px frames (or, for
comparison, states) with evaluations along training, then evaluated with held-out
paraphrases of the instructions.

Every stage is saved under the study's work folder and skipped on a rerun:
``data-seed<s>/`` (the dataset), ``<agent>-seed<s>/result.json`` and ``<agent>-seed<s>-agent/``.
The summary writes ``vision.json`` (dataset, agents' records, speed) and ``vision.md``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from qtransformer.bench.runner import eval_steps
from qtransformer.bench.studies import PixelStudy
from qtransformer.data.dataset import OfflineDataset

log = logging.getLogger(__name__)

Record = dict[str, Any]


def data_path(study: PixelStudy, work: Path, preset: str, seed: int) -> Path:
    return work / f"data-{preset}-seed{seed}"


def dataset(study: PixelStudy, work: Path, preset: str, seed: int) -> OfflineDataset:
    """A preset on the study's tasks with camera frames, collected once per seed."""
    from qtransformer import collection as mw
    from qtransformer.envs import metaworld as menv
    from qtransformer.language import ensure_instruction_embeddings

    path = data_path(study, work, preset, seed)
    if not (path / "dataset.json").exists():
        recipe = mw.preset_recipe(
            preset,
            list(study.tasks),
            study.episodes_per_task,
            study.max_steps,
            study.action_repeat,
        )
        t0 = time.perf_counter()
        episodes = mw.collect(
            recipe, seed=seed, workers=study.collect_workers, image_size=study.image_size
        )
        seconds = time.perf_counter() - t0
        meta = {
            "camera": "corner",
            "collect_seconds": seconds,
            "summary": mw.summary(episodes),
        }
        data = OfflineDataset.from_episodes(episodes, *menv.action_bounds(), metadata=meta)
        ensure_instruction_embeddings(data)
        data.save(path)
    return OfflineDataset.open(path)


def successes_only(data: OfflineDataset) -> OfflineDataset:
    """The successful episodes of ``data``, with its instruction embeddings."""
    keep = data.episode_success()
    episodes = [e for e, ok in zip(data.to_episodes(), keep, strict=True) if ok]
    out = OfflineDataset.from_episodes(
        episodes, data.action_low, data.action_high, metadata=data.metadata
    )
    out.set_instruction_embeddings(
        np.asarray(data.instruction_embeddings), data.instruction_embedding_model
    )
    return out


def evaluate_agent(
    policy: Any, study: PixelStudy, seed: int, instructions: dict[str, str] | None = None
) -> dict[str, Record]:
    """Per task: the evaluation's results (with other wordings of the instructions if given)."""
    from qtransformer.evaluate import evaluate_metaworld

    res = evaluate_metaworld(
        policy,
        list(study.tasks),
        study.eval_episodes,
        num_envs=study.eval_envs,
        seed=study.eval_seed + seed,
        max_steps=study.max_steps,
        action_repeat=study.action_repeat,
        instructions=instructions,
    )
    return {task: r.as_dict() for task, r in res.items()}


def agent_config(study: PixelStudy, name: str, seed: int | None = None) -> Any:
    """The training config of one of the study's agents (``successes_only`` is not a field)."""
    change = {k: v for k, v in study.agents[name].items() if k not in NOT_CONFIG}
    seed = study.seeds[0] if seed is None else seed
    return replace(study.config, **{"seed": seed, "steps": study.steps, **change})


NOT_CONFIG = ("successes_only", "baseline")
"""Keys of a study's agent that are not :class:`TrainConfig` fields: train on the successful
episodes only; a d3rlpy baseline (from the frozen trunk's features) instead of our network."""


def trains_on_successes(study: PixelStudy, name: str) -> bool:
    return bool(study.agents[name].get("successes_only", False))


def result_path(study: PixelStudy, work: Path, name: str, preset: str, seed: int) -> Path:
    return work / f"{name}-{preset}-seed{seed}" / "result.json"


def cells(study: PixelStudy) -> list[tuple[str, str, int]]:
    """Every (agent, preset, seed) of the study, seeds outermost, so that a partial run has
    every agent and preset of the first seeds."""
    return [(a, p, s) for s in study.seeds for p in study.presets for a in study.agents]


def run_agent(
    study: PixelStudy, name: str, preset: str, seed: int, data: OfflineDataset, work: Path
) -> Record:
    """Train one agent with evaluations along the way; saves its record and agent."""
    from qtransformer.atomic import write_dir_atomically
    from qtransformer.policy import AgentPolicy
    from qtransformer.trainer import train

    cfg = agent_config(study, name, seed)
    train_data = successes_only(data) if trains_on_successes(study, name) else data
    curve: list[Record] = []
    timing = {"train_seconds": 0.0, "eval_seconds": 0.0}

    def evaluate(agent: Any, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        policy = AgentPolicy(agent) if hasattr(agent, "model") else agent
        curve.append({"steps": step, "tasks": evaluate_agent(policy, study, seed)})
        timing["eval_seconds"] += time.perf_counter() - t0
        return {t: r["success_rate"] for t, r in curve[-1]["tasks"].items()}

    t0 = time.perf_counter()
    points = eval_steps(cfg.steps, study.eval_points)
    baseline = study.agents[name].get("baseline")
    agent: Any
    if baseline is not None:
        from qtransformer.baselines.pixels import FrozenFeaturePolicy, train_on_frozen_features

        trunk: list[Any] = []

        def evaluate_baseline(step: int, inner: Any) -> None:
            if step in points:
                evaluate(FrozenFeaturePolicy(inner, trunk[0], "corner"), step)

        # The wrapper's trunk exists once training starts; the callback reads it then.
        agent = train_on_frozen_features(
            baseline,
            train_data,
            cfg.steps,
            cfg.image_frozen_blocks,
            seed=seed,
            callback=lambda step, inner: evaluate_baseline(step, inner) if trunk else None,
            trunk_out=trunk,
        )
        policy: Any = agent
    else:
        agent = train(train_data, cfg, evaluate=evaluate, eval_steps=points)
        policy = AgentPolicy(agent)
    timing["train_seconds"] = time.perf_counter() - t0 - timing["eval_seconds"]
    t0 = time.perf_counter()
    paraphrased: Record = {}
    if name in study.paraphrase_agents:
        paraphrased = evaluate_agent(policy, study, seed, study.paraphrases)
    timing["eval_seconds"] += time.perf_counter() - t0
    record = {
        "agent": name,
        "preset": preset,
        "seed": seed,
        "config": asdict(cfg) if baseline is None else {"baseline": baseline},
        "train_episodes": train_data.num_episodes,
        "train_steps_in_data": len(train_data),
        "curve": curve,
        "paraphrased": paraphrased,
        **timing,
    }
    if baseline is None:
        agent.save(work / f"{name}-{preset}-seed{seed}-agent")
    else:
        record["baseline"] = agent.inner.record()

    def write(tmp: Path) -> None:
        (tmp / "result.json").write_text(json.dumps(record, default=str))

    write_dir_atomically(result_path(study, work, name, preset, seed).parent, write)
    return record


def committed_cells(study: PixelStudy, out: Path) -> set[tuple[str, str, int]]:
    """The (agent, preset, seed) cells whose records are already in the study's committed
    JSON under ``out``: a fresh clone resumes the study instead of training them again."""
    path = out / study.tables[0]
    if study.tables[0] == "vision.json" or not path.exists():
        return set()
    records = json.loads(path.read_text()).get("records", [])
    return {(r["agent"], r["preset"], int(r["seed"])) for r in records}


def run_pixels(
    study: PixelStudy,
    work: Path,
    threads: int = 2,
    max_cells: int | None = None,
    out: Path | None = None,
) -> list[str]:
    """Train every (agent, preset, seed) that has no record yet, neither in ``work`` nor
    committed under ``out`` (at most ``max_cells``), one after the other on ``threads``
    threads; returns the cells trained now."""
    import torch

    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    every = cells(study)
    skip = committed_cells(study, out) if out is not None else set()
    todo = [c for c in every if c not in skip and not result_path(study, work, *c).exists()]
    log.info("%d cells finished before, %d to train", len(every) - len(todo), len(todo))
    todo = todo[:max_cells] if max_cells is not None else todo
    done = []
    for name, preset, seed in todo:
        data = dataset(study, work, preset, seed)
        run_agent(study, name, preset, seed, data, work)
        done.append(f"{name}-{preset}-seed{seed}")
        log.info("finished %s", done[-1])
    return done


def vision_table(results: Record) -> str:
    """vision.md: each agent's final success per task, the mean, and the mean with the
    paraphrased instructions."""
    tasks = results["tasks"]
    lines = [
        "| agent | " + " | ".join(tasks) + " | mean | paraphrased mean |",
        "|---|" + "---|" * (len(tasks) + 2),
    ]
    for name, r in results["agents"].items():
        last = r["curve"][-1]["tasks"]
        rates = [last[t]["success_rate"] for t in tasks]
        para = [r["paraphrased"][t]["success_rate"] for t in tasks]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{x:.2f}" for x in rates)
            + f" | {np.mean(rates):.2f} | {np.mean(para):.2f} |"
        )
    return "\n".join(lines) + "\n"


def _dataset_entry(study: PixelStudy, work: Path, preset: str, seed: int) -> Record:
    path = data_path(study, work, preset, seed)
    data = OfflineDataset.open(path)
    assert data.images is not None
    return {
        "preset": preset,
        "seed": seed,
        "episodes": data.num_episodes,
        "successes": int(data.episode_success().sum()),
        "steps": len(data),
        "image_shape": list(data.images.shape[1:]),
        "collect_seconds": data.metadata.get("collect_seconds"),
        "summary": data.metadata.get("summary"),
        "store_bytes_per_step": sum(f.stat().st_size for f in path.iterdir()) / len(data),
    }


def summarize_pixels(
    study: PixelStudy,
    work: Path,
    out: Path,
    summarize_only: bool = False,
    command: str | None = None,
) -> list[str]:
    """Merge the work folder's records into the study's committed JSON (``study.tables[0]``;
    a record of the work folder replaces the committed one of its cell; speed figures stay)
    and write its markdown table from it. ``summarize_only``: only the table, from the
    committed file."""
    from qtransformer.machine import machine_info

    json_name, md_name = study.tables[0], study.tables[1]
    path = out / json_name
    committed: Record = json.loads(path.read_text()) if path.exists() else {}
    done = {c: result_path(study, work, *c) for c in cells(study)}
    done = {c: p for c, p in done.items() if p.exists()}
    table = vision_table if json_name == "vision.json" else pretrained_table
    if summarize_only or not done:
        if not committed:
            log.info("no finished agents of the %s study: nothing written", study.name)
            return []
        (out / md_name).write_text(table(committed))
        return [md_name]
    results: Record = {
        "command": command or f"qtransformer bench --study {study.name}",
        "machine": machine_info(),
        "tasks": list(study.tasks),
        "paraphrases": study.paraphrases,
    }
    if json_name == "vision.json":  # one preset and seed, agents by name
        agents = dict(committed.get("agents", {}))
        agents.update({c[0]: json.loads(p.read_text()) for c, p in done.items()})
        preset, seed = study.presets[0], study.seeds[0]
        results["dataset"] = _dataset_entry(study, work, preset, seed)
        results["agents"] = {n: agents[n] for n in study.agents if n in agents}
    else:
        records = {(r["agent"], r["preset"], r["seed"]): r for r in committed.get("records", [])}
        records.update({c: json.loads(p.read_text()) for c, p in done.items()})
        datasets = {d["preset"] + f"-seed{d['seed']}": d for d in committed.get("datasets", [])}
        for _, preset, seed in done:
            datasets[f"{preset}-seed{seed}"] = _dataset_entry(study, work, preset, seed)
        results["datasets"] = sorted(datasets.values(), key=lambda d: (d["seed"], d["preset"]))
        results["records"] = [records[c] for c in cells(study) if c in records]
    if committed.get("speed"):  # keep the speed figures of an earlier (quiet) run
        results["speed"] = committed["speed"]
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))
    (out / md_name).write_text(table(results))
    written = [json_name, md_name]
    if "records" in results and len(study.tables) > 2:
        from qtransformer.bench.plots import curves_plot

        rows = [
            {
                "algo": r["agent"],
                "dataset": r["preset"],
                "steps": point["steps"],
                "success_rate": _mean_success(point["tasks"], list(study.tasks)),
            }
            for r in results["records"]
            for point in r["curve"]
        ]
        curves_plot(rows, list(study.agents), out / study.tables[2])
        written.append(study.tables[2])
    return written


def _mean_success(tasks: Record, names: list[str]) -> float:
    return float(np.mean([tasks[t]["success_rate"] for t in names]))


def pretrained_table(results: Record) -> str:
    """The pretrained-encoder study: per preset, each agent's final success (mean over tasks,
    then mean and range over seeds), the mean over ``noisy`` and ``suboptimal``, decisions to
    success, and the success kept with other wordings of the instructions; then per task."""
    tasks = results["tasks"]
    recs = results["records"]
    presets = list(dict.fromkeys(r["preset"] for r in recs))
    agents = list(dict.fromkeys(r["agent"] for r in recs))
    hard = [p for p in presets if p in ("noisy", "suboptimal")]
    hard = hard if len(hard) == 2 else []  # the mean of both, or no such column

    def final(r: Record) -> float:
        return _mean_success(r["curve"][-1]["tasks"], tasks)

    def cell(agent: str, preset: str) -> list[Record]:
        return [r for r in recs if r["agent"] == agent and r["preset"] == preset]

    head = "| agent | " + " | ".join(presets) + (" | noisy + suboptimal" if hard else "")
    lines = [
        head + " | decisions to success | paraphrased / original |",
        "|---|" + "---|" * (len(presets) + bool(hard) + 2),
    ]
    for a in agents:
        row, hard_means, lengths, kept = [], [], [], []
        for p in presets:
            vals = [final(r) for r in cell(a, p)]
            if not vals:
                row.append("")
                continue
            seeds = len(vals)
            spread = f" ({min(vals):.2f}-{max(vals):.2f})" if seeds > 1 else ""
            row.append(f"{np.mean(vals):.2f}{spread} [{seeds}]")
            if p in hard:
                hard_means.append(float(np.mean(vals)))
            for r in cell(a, p):
                last = r["curve"][-1]["tasks"]
                lengths += [last[t]["mean_success_length"] for t in tasks]
                if r.get("paraphrased"):
                    para = _mean_success(r["paraphrased"], tasks)
                    kept.append(para / max(final(r), 1e-9))
        complete = hard and len(hard_means) == len(hard)
        hard_cell = [f"{np.mean(hard_means):.2f}" if complete else ""]
        finite = [x for x in lengths if x == x]  # NaN when a task never succeeded
        lines.append(
            f"| {a} | "
            + " | ".join(row + (hard_cell if hard else []))
            + f" | {np.mean(finite):.1f} | "
            + (f"{np.mean(kept):.2f}" if kept else "")
            + " |"
        )
    lines += ["", "Per task (mean over seeds):", ""]
    lines += [
        "| agent | preset | " + " | ".join(tasks) + " |",
        "|---|---|" + "---|" * len(tasks),
    ]
    for p in presets:
        for a in agents:
            rs = cell(a, p)
            if rs:
                per = [
                    np.mean([r["curve"][-1]["tasks"][t]["success_rate"] for r in rs]) for t in tasks
                ]
                lines.append(f"| {a} | {p} | " + " | ".join(f"{x:.2f}" for x in per) + " |")
    return "\n".join(lines) + "\n"
