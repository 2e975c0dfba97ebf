"""Why Q-Transformer's successes take more decisions than IQL's on ``push-v3``: diagnostics.

.venv/bin/python benchmarks/finish.py [--preset noisy] [--seed 0] [--variants qt,...]

1. The scripted expert itself, acting through bins: decisions to success with its continuous
   actions, and with each action moved to the centre of its bin (16, 32, 256 bins). What the
   discretization alone costs in speed, whatever the learning.
2. For each Q-Transformer variant (``qt`` is the ``cpu`` profile's; others as in
   ``qtransformer.bench.studies.VARIANTS``), trained on one of the grid's datasets as the grid
   trains it: greedy rollouts that record, at every decision, the Q of the chosen action
   (the agent's estimate of its discounted return) and the gap between the best and the
   second-best bin of every dimension; then, along each successful episode, that estimate
   against the discounted return actually achieved (gamma to the number of decisions left).
   The same comparison on the dataset's own successful episodes (Q of the data's actions).
3. Where the decisions go, for the expert, IQL and each variant: the approach until the puck
   first moves, and the push after it; the shape of the approach (path over straight line,
   rise, z commands, when the gripper closes).
4. The critic's view of IQL's faster approach: at IQL's approach states, each variant's Q of
   its own greedy action, of IQL's action and of the scripted expert's action.

Writes ``benchmarks/results/finish_diagnostics.json`` and ``.md`` (with the machine). One
thread; a few minutes per variant.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

from qtransformer.atomic import write_text_atomically
from qtransformer.bench import PROFILES
from qtransformer.bench.runner import ensure_dataset, qt_config
from qtransformer.bench.studies import Cell
from qtransformer.collection.policies import PolicySpec, make_policy
from qtransformer.data.dataset import OfflineDataset
from qtransformer.discretize import ActionDiscretizer
from qtransformer.envs.metaworld import MetaWorldTask
from qtransformer.evaluate import EVAL_SEED_OFFSET
from qtransformer.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass
class Args:
    preset: str = "noisy"
    seed: int = 0
    variants: str = "qt,qt-gamma-0.95-alpha-0.25"
    episodes: int = 50
    """Greedy evaluation episodes per variant (and expert episodes per binning)."""
    expert_tasks: str = "push-v3,door-open-v3,drawer-close-v3"
    iql: bool = True
    """Also train IQL (the grid's steps) and record how its policy moves."""
    work: Path = Path("runs/bench")
    out: Path = RESULTS / "finish_diagnostics.json"


def policy_rollouts(act: Any, task: str, episodes: int, profile: Any) -> list[dict]:
    """Greedy episodes of any ``act(obs (39,)) -> (4,)`` policy (evaluation seeds), with the
    observations it saw (the last one included) and the actions it took."""
    env = MetaWorldTask(task, profile.max_steps, profile.action_repeat, None, "corner")
    eps = []
    for k in range(episodes):
        env.reset(seed=EVAL_SEED_OFFSET + k)
        obs, done, ok, actions, seen = env.raw_obs, False, False, [], []
        while not done:
            seen.append(obs.copy())
            actions.append(np.asarray(act(obs), np.float32))
            _, _, ok, trunc, _ = env.step(actions[-1])
            obs, done = env.raw_obs, ok or trunc
        seen.append(obs.copy())
        eps.append({
            "success": bool(ok), "actions": np.asarray(actions).tolist(),
            "observations": np.asarray(seen),  # (decisions + 1, 39): hand 0:3, object 4:7
        })  # fmt: skip
    return eps


def expert_act(task: str, bins: int | None = None) -> Any:
    """The scripted expert without noise, its actions at bin centres (None: continuous)."""
    policy, rng = make_policy(task, PolicySpec("expert")), np.random.default_rng(0)
    disc = None if bins is None else ActionDiscretizer(-np.ones(4), np.ones(4), bins)

    def act(obs: np.ndarray) -> np.ndarray:
        a = policy(obs, rng)
        return a if disc is None else disc.to_continuous(disc.to_bins(a, clip=True))

    return act


def agent_rollouts(agent: Any, task: str, episodes: int, profile: Any) -> list[dict]:
    """Greedy episodes that also record, per decision, the chosen action's Q (last
    dimension) and the gap between the best and second-best bin of every dimension."""
    log: list[tuple[float, np.ndarray]] = []

    def act(obs: np.ndarray) -> np.ndarray:
        bins, q = agent.act_bins(obs[None])
        top2 = np.sort(agent.q_values(obs[None], bins)[0], axis=-1)[:, -2:]  # (dA, 2)
        log.append((float(q[0, -1]), top2[:, 1] - top2[:, 0]))
        return agent.discretizer.to_continuous(bins)[0]

    eps = policy_rollouts(act, task, episodes, profile)
    start = 0
    for e in eps:
        n = len(e["actions"])
        e["q"] = [q for q, _ in log[start : start + n]]
        e["margins"] = [m.tolist() for _, m in log[start : start + n]]
        start += n
    return eps


def motion(eps: list[dict]) -> dict:
    """How far and how directly the hand is told to move: mean |a| of the xyz dimensions and
    the share of xyz commands at 0.9 or more of the bound, over all decisions; decisions to
    success and success within 15."""
    a = np.concatenate([np.asarray(e["actions"])[:, :3] for e in eps])
    wins = [len(e["actions"]) for e in eps if e["success"]]
    return {
        "success": len(wins) / len(eps),
        "decisions": float(np.mean(wins)) if wins else None,
        "within_15": sum(n <= 15 for n in wins) / len(eps),
        "mean_abs_xyz": np.abs(a).mean(axis=0).tolist(),
        "saturated_xyz": (np.abs(a) >= 0.9).mean(axis=0).tolist(),
        "approach": approach(eps),
    }


def object_moves(e: dict, moved: float = 0.01) -> int | None:
    """The first decision after which the episode's object (the puck of push-v3) is ``moved``
    m from its start; None for a failed episode or one whose object never moved."""
    obj = e["observations"][:, 4:7]
    shifted = np.linalg.norm(obj - obj[0], axis=1) > moved
    return int(np.argmax(shifted)) if e["success"] and shifted.any() else None


def approach(eps: list[dict], grip: float = 0.3) -> dict:
    """Where the decisions of successful episodes go: the approach until the object (the
    puck of push-v3) first moves (:func:`object_moves`), and the rest. Over the approach:
    the hand's path length over its straight displacement (1: a straight line; the scripted
    expert's 'above the puck, then down' is an L), its highest rise above the start, the mean
    z command, and the first decision whose grip command exceeds ``grip``."""
    rows = []
    for e in eps:
        m = object_moves(e)
        if m is None:
            continue
        hand, a = e["observations"][:, 0:3], np.asarray(e["actions"])
        path = np.linalg.norm(np.diff(hand[: m + 1], axis=0), axis=1).sum()
        closes = np.flatnonzero(a[:, 3] > grip)
        rows.append((
            m, len(a) - m, path / max(np.linalg.norm(hand[m] - hand[0]), 1e-9),
            hand[: m + 1, 2].max() - hand[0, 2], a[:m, 2].mean() if m else 0.0,
            closes[0] if closes.size else np.nan,
        ))  # fmt: skip
    if not rows:
        return {}
    r = np.asarray(rows, float)
    keys = ("approach", "after", "path_ratio", "rise", "mean_z_command", "grip_closes")
    return {k: float(np.nanmean(r[:, i])) for i, k in enumerate(keys)} | {"episodes": len(r)}


def approach_states(eps: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Observations and actions of successful episodes before their object first moves."""
    obs, acts = [], []
    for e in eps:
        m = object_moves(e)
        if m is not None:
            obs.append(e["observations"][:m])
            acts.append(np.asarray(e["actions"], np.float32)[:m])
    return np.concatenate(obs), np.concatenate(acts)


def corner_values(agent: Any, obs: np.ndarray, actions: np.ndarray, task: str) -> dict:
    """At IQL's approach states: Q of the agent's own greedy action, of IQL's action (the
    corner cut) and of the scripted expert's action there (its L), each through the agent's
    bins; whether the critic itself ranks the faster route below its own choice."""
    disc = agent.discretizer
    own_bins, own_q = agent.act_bins(obs)
    expert = expert_act(task)
    expert_actions = np.stack([expert(o) for o in obs])

    def q_of(a: np.ndarray) -> np.ndarray:
        bins = disc.to_bins(a, clip=True)
        return np.take_along_axis(agent.q_values(obs, bins)[:, -1], bins[:, -1:], -1)[:, 0]

    q_iql, q_expert = q_of(actions), q_of(expert_actions)
    return {
        "states": len(obs),
        "q_own": float(own_q[:, -1].mean()),
        "q_iql": float(q_iql.mean()),
        "q_expert": float(q_expert.mean()),
        "iql_at_least_own": float((q_iql >= own_q[:, -1] - 1e-3).mean()),
        "iql_above_expert": float((q_iql > q_expert).mean()),
    }


def calibration(q: list[np.ndarray], g: list[np.ndarray]) -> dict:
    """Q estimates against achieved discounted returns, pooled over decisions."""
    qa, ga = np.concatenate(q), np.concatenate(g)
    return {
        "decisions": int(qa.size),
        "mean_q": float(qa.mean()),
        "mean_return": float(ga.mean()),
        "mean_q_minus_return": float((qa - ga).mean()),
        "corr": float(np.corrcoef(qa, ga)[0, 1]) if qa.size > 2 else None,
        "q_first": float(np.mean([x[0] for x in q])),
        "return_first": float(np.mean([x[0] for x in g])),
    }


def data_calibration(agent: Any, data: OfflineDataset, gamma: float) -> dict:
    """Q of the data's actions along its successful episodes against gamma ** decisions left."""
    ep = data.episodes
    success = data.episode_success()
    obs, acts = np.asarray(data.observations), np.asarray(data.actions)
    disc = agent.discretizer
    q, g = [], []
    for e in np.flatnonzero(success):
        start, end = int(ep.starts[e]), int(ep.ends[e]) + 1
        bins = disc.to_bins(acts[start:end], clip=True)
        full = agent.q_values(obs[start:end], bins)
        q.append(np.take_along_axis(full[:, -1], bins[:, -1:], -1)[:, 0])
        g.append(gamma ** np.arange(end - start - 1, -1, -1, dtype=float))
    return calibration(q, g)


def main(args: Args) -> None:
    from qtransformer.trainer import train

    torch.set_num_threads(1)
    profile = PROFILES["cpu"]
    warnings.simplefilter("ignore", UserWarning)
    out: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine_info(),
        "preset": args.preset,
        "seed": args.seed,
        "expert": [],
        "variants": {},
    }
    for task in args.expert_tasks.split(","):
        for bins in (None, 16, 32, 256):
            m = motion(policy_rollouts(expert_act(task, bins), task, args.episodes, profile))
            out["expert"].append({"task": task, "bins": bins, **m})
            print(out["expert"][-1], flush=True)
    data = OfflineDataset.open(ensure_dataset(args.work, profile, args.preset, args.seed))
    task = data.tasks[0]
    out["motion"] = {
        "expert": motion(policy_rollouts(expert_act(task), task, args.episodes, profile))
    }
    if args.iql:
        from qtransformer.baselines import train_baseline

        iql = train_baseline("iql", data, profile.steps["iql"], seed=args.seed)
        iql_eps = policy_rollouts(lambda o: iql.act(o[None])[0], task, args.episodes, profile)
        out["motion"]["iql"] = motion(iql_eps)
    print(out["motion"], flush=True)
    for variant in args.variants.split(","):
        cfg = qt_config(Cell(variant, args.preset, args.seed), profile)
        t0 = time.perf_counter()
        agent = train(data, cfg)
        seconds = time.perf_counter() - t0
        roll = agent_rollouts(agent, task, args.episodes, profile)
        wins = [e for e in roll if e["success"]]
        q = [np.asarray(e["q"]) for e in wins]
        g = [cfg.gamma ** np.arange(len(e["q"]) - 1, -1, -1, dtype=float) for e in wins]
        margins = np.concatenate([np.asarray(e["margins"]) for e in roll])  # (decisions, dA)
        out["motion"][variant] = motion(roll)
        out["variants"][variant] = {
            "gamma": cfg.gamma,
            "train_seconds": seconds,
            "success": len(wins) / len(roll),
            "decisions": float(np.mean([len(e["q"]) for e in wins])) if wins else None,
            "within_15": sum(len(e["q"]) <= 15 for e in wins) / len(roll),
            "own_episodes": calibration(q, g) if wins else None,
            "data_episodes": data_calibration(agent, data, cfg.gamma),
            "margin_median_per_dim": np.median(margins, axis=0).tolist(),
            "near_ties_per_dim": (margins < 1e-3).mean(axis=0).tolist(),
        }
        if args.iql:
            out["variants"][variant]["corner"] = corner_values(
                agent, *approach_states(iql_eps), task
            )
        print(variant, json.dumps(out["variants"][variant]), flush=True)
    write_text_atomically(args.out, json.dumps(out, indent=1))
    write_text_atomically(args.out.with_suffix(".md"), report(out))


def report(out: dict) -> str:
    lines = [
        "| task | actions | expert success | decisions | ≤ 15 dec. |",
        "|---|---|---|---|---|",
    ]
    for r in out["expert"]:
        kind = "continuous" if r["bins"] is None else f"{r['bins']} bin centres"
        dec = f"{r['decisions']:.1f}" if r["decisions"] is not None else "-"
        lines.append(
            f"| {r['task']} | {kind} | {r['success']:.2f} | {dec} | {r['within_15']:.2f} |"
        )
    lines += [
        "",
        "| variant | gamma | success | dec. | ≤ 15 dec. | Q at start / achieved return "
        "(own successes) | Q - return along own successes (corr.) | Q - return along the "
        "data's successes (corr.) | bins within 0.001 of the best, per dim |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in out["variants"].items():
        own, dat = v["own_episodes"], v["data_episodes"]
        own_txt = (
            (
                f"{own['q_first']:.3f} / {own['return_first']:.3f}",
                f"{own['mean_q_minus_return']:+.3f} ({own['corr']:.2f})",
            )
            if own
            else ("-", "-")
        )
        ties = ", ".join(f"{t:.2f}" for t in v["near_ties_per_dim"])
        lines.append(
            f"| {name} | {v['gamma']} | {v['success']:.2f} | {v['decisions']:.1f} | "
            f"{v['within_15']:.2f} | {own_txt[0]} | {own_txt[1]} | "
            f"{dat['mean_q_minus_return']:+.3f} ({dat['corr']:.2f}) | {ties} |"
        )
    lines += [
        "",
        "| policy | success | dec. | ≤ 15 dec. | mean abs(x, y, z) command | share of x, y, z "
        "commands at 0.9 or more |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in out["motion"].items():
        dec = f"{m['decisions']:.1f}" if m["decisions"] is not None else "-"
        lines.append(
            f"| {name} | {m['success']:.2f} | {dec} | {m['within_15']:.2f} | "
            + ", ".join(f"{x:.2f}" for x in m["mean_abs_xyz"])
            + " | "
            + ", ".join(f"{x:.2f}" for x in m["saturated_xyz"])
            + " |"
        )
    lines += [
        "",
        "Where the decisions go (successful episodes): the approach until the puck first moves "
        "1 cm, then the push to the goal; over the approach, the hand's path length over its "
        "straight displacement, its highest rise above the start, the mean z command, and the "
        "first decision with a grip command above 0.3.",
        "",
        "| policy | episodes | approach (dec.) | after (dec.) | path / displacement | rise (m) "
        "| mean z command | grip closes at (dec.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in out["motion"].items():
        ap = m.get("approach")
        if ap:
            lines.append(
                f"| {name} | {ap['episodes']} | {ap['approach']:.1f} | {ap['after']:.1f} | "
                f"{ap['path_ratio']:.2f} | {ap['rise']:.3f} | {ap['mean_z_command']:+.2f} | "
                f"{ap['grip_closes']:.1f} |"
            )
    corners = {n: v["corner"] for n, v in out["variants"].items() if v.get("corner")}
    if corners:
        lines += [
            "",
            "The critic's view of the corner: at IQL's approach states (its successful episodes, "
            "before the puck moves), each variant's Q of its own greedy action, of IQL's action "
            "and of the scripted expert's action there, each through the variant's bins.",
            "",
            "| variant | states | Q own choice | Q IQL's action | Q expert's action | IQL's "
            "within 0.001 of own | IQL's above expert's |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, c in corners.items():
            lines.append(
                f"| {name} | {c['states']} | {c['q_own']:.3f} | {c['q_iql']:.3f} | "
                f"{c['q_expert']:.3f} | {c['iql_at_least_own']:.2f} | "
                f"{c['iql_above_expert']:.2f} |"
            )
    lines.append(
        f"\n`{out['command']}`; preset `{out['preset']}`, seed {out['seed']}, "
        f"{out['machine']['cpu_model']}, torch {out['machine']['torch']}. Expert: "
        "Meta-World's scripted policy without noise; "
        "'achieved return' is gamma to the decisions left until success.\n"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main(tyro.cli(Args))
