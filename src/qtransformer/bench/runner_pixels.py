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


def data_path(study: PixelStudy, work: Path) -> Path:
    return work / f"data-seed{study.seed}"


def dataset(study: PixelStudy, work: Path) -> OfflineDataset:
    """The study's preset on its tasks with camera frames, collected once."""
    from qtransformer import collection as mw
    from qtransformer.envs import metaworld as menv
    from qtransformer.language import ensure_instruction_embeddings

    path = data_path(study, work)
    if not (path / "dataset.json").exists():
        recipe = mw.preset_recipe(
            study.preset,
            list(study.tasks),
            study.episodes_per_task,
            study.max_steps,
            study.action_repeat,
        )
        t0 = time.perf_counter()
        episodes = mw.collect(
            recipe, seed=study.seed, workers=study.collect_workers, image_size=study.image_size
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


def evaluate_agent(policy: Any, study: PixelStudy, paraphrased: bool = False) -> dict[str, Record]:
    """Per task: the evaluation's results (with the paraphrases as instructions if asked)."""
    from qtransformer.evaluate import evaluate_metaworld

    res = evaluate_metaworld(
        policy,
        list(study.tasks),
        study.eval_episodes,
        num_envs=study.eval_envs,
        seed=study.eval_seed + study.seed,
        max_steps=study.max_steps,
        action_repeat=study.action_repeat,
        instructions=study.paraphrases if paraphrased else None,
    )
    return {task: r.as_dict() for task, r in res.items()}


def agent_config(study: PixelStudy, name: str) -> Any:
    """The training config of one of the study's agents."""
    return replace(study.config, **{"seed": study.seed, "steps": study.steps, **study.agents[name]})


def result_path(study: PixelStudy, work: Path, name: str) -> Path:
    return work / f"{name}-seed{study.seed}" / "result.json"


def run_agent(study: PixelStudy, name: str, data: OfflineDataset, work: Path) -> Record:
    """Train one agent with evaluations along the way; saves its record and agent."""
    from qtransformer.atomic import write_dir_atomically
    from qtransformer.policy import AgentPolicy
    from qtransformer.trainer import train

    cfg = agent_config(study, name)
    train_data = successes_only(data) if cfg.loss == "bc" else data
    curve: list[Record] = []
    timing = {"train_seconds": 0.0, "eval_seconds": 0.0}

    def evaluate(agent: Any, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        curve.append({"steps": step, "tasks": evaluate_agent(AgentPolicy(agent), study)})
        timing["eval_seconds"] += time.perf_counter() - t0
        return {t: r["success_rate"] for t, r in curve[-1]["tasks"].items()}

    t0 = time.perf_counter()
    points = eval_steps(cfg.steps, study.eval_points)
    agent = train(train_data, cfg, evaluate=evaluate, eval_steps=points)
    timing["train_seconds"] = time.perf_counter() - t0 - timing["eval_seconds"]
    t0 = time.perf_counter()
    paraphrased = evaluate_agent(AgentPolicy(agent), study, paraphrased=True)
    timing["eval_seconds"] += time.perf_counter() - t0
    record = {
        "agent": name,
        "seed": study.seed,
        "config": asdict(cfg),
        "train_episodes": train_data.num_episodes,
        "train_steps_in_data": len(train_data),
        "curve": curve,
        "paraphrased": paraphrased,
        **timing,
    }
    agent.save(work / f"{name}-seed{study.seed}-agent")

    def write(tmp: Path) -> None:
        (tmp / "result.json").write_text(json.dumps(record, default=str))

    write_dir_atomically(result_path(study, work, name).parent, write)
    return record


def run_pixels(
    study: PixelStudy, work: Path, threads: int = 2, max_cells: int | None = None
) -> list[str]:
    """Train every agent that has no record yet (at most ``max_cells``), one after the other
    on ``threads`` threads; returns the names trained now."""
    import torch

    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    todo = [n for n in study.agents if not result_path(study, work, n).exists()]
    log.info("%d agents finished before, %d to train", len(study.agents) - len(todo), len(todo))
    todo = todo[:max_cells] if max_cells is not None else todo
    if not todo:
        return []
    data = dataset(study, work)
    for name in todo:
        run_agent(study, name, data, work)
        log.info("finished %s", name)
    return todo


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


def _dataset_entry(study: PixelStudy, work: Path) -> Record:
    data = OfflineDataset.open(data_path(study, work))
    assert data.images is not None
    return {
        "preset": study.preset,
        "episodes": data.num_episodes,
        "steps": len(data),
        "image_shape": list(data.images.shape[1:]),
        "collect_seconds": data.metadata.get("collect_seconds"),
        "summary": data.metadata.get("summary"),
        "store_bytes_per_step": sum(f.stat().st_size for f in data_path(study, work).iterdir())
        / len(data),
    }


def summarize_pixels(
    study: PixelStudy,
    work: Path,
    out: Path,
    summarize_only: bool = False,
    command: str | None = None,
) -> list[str]:
    """Merge the agents' records into ``out/vision.json`` (the committed results: the work
    folder's agents replace its own; its speed figures stay) and write ``vision.md`` from it.
    ``summarize_only``: only ``vision.md``, from the committed file."""
    from qtransformer.machine import machine_info

    path = out / "vision.json"
    committed: Record = json.loads(path.read_text()) if path.exists() else {}
    done = {n: result_path(study, work, n) for n in study.agents}
    done = {n: p for n, p in done.items() if p.exists()}
    if summarize_only or not done:
        if not committed:
            log.info("no finished agents of the %s study: nothing written", study.name)
            return []
        (out / "vision.md").write_text(vision_table(committed))
        return ["vision.md"]
    agents = dict(committed.get("agents", {}))
    agents.update({n: json.loads(p.read_text()) for n, p in done.items()})
    results: Record = {
        "command": command or "qtransformer bench --study pixels",
        "machine": machine_info(),
        "tasks": list(study.tasks),
        "paraphrases": study.paraphrases,
        "dataset": _dataset_entry(study, work),
        "agents": {n: agents[n] for n in study.agents if n in agents},
    }
    if committed.get("speed"):  # keep the speed figures of an earlier (quiet) run
        results["speed"] = committed["speed"]
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))
    (out / "vision.md").write_text(vision_table(results))
    return ["vision.json", "vision.md"]
