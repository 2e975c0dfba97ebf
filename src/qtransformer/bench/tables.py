"""The results tables: pure functions from cell records (or their rows) to text.

A record is what :func:`qtransformer.bench.runner.run_cell` returns: ``cell``, ``rows`` (one
per task and evaluation point) and, for Q-Transformer cells, ``q_success_start`` and
``q_failure_start``. ``records`` below maps cell keys to records.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qtransformer.bench.studies import (
    HARD_PRESETS,
    SCALE_ALGOS,
    STUDIES,
    TIME_LIMITS,
    Cell,
    Profile,
    Study,
)

Record = dict[str, Any]
Row = dict[str, Any]

CSV_COLUMNS = (
    "algo",
    "dataset",
    "task",
    "seed",
    "steps",
    "success_rate",
    "ci_low",
    "ci_high",
    "mean_success_length",
    "mean_length",
    "episodes",
)
PRESET_ORDER = {"demos": 0, "mixed": 1, "noisy": 2, "suboptimal": 3}


def _study(name: str) -> Study:
    study = STUDIES[name]
    assert isinstance(study, Study)
    return study


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def csv_text(rows: list[Row]) -> str:
    """metaworld.csv: every evaluation row, sorted, floats at 4 significant digits."""
    lines = [",".join(CSV_COLUMNS)]
    for r in sorted(
        rows, key=lambda r: (r["algo"], r["dataset"], r["task"], r["seed"], r["steps"])
    ):
        lines.append(",".join(_fmt(r[c]) for c in CSV_COLUMNS))
    return "\n".join(lines) + "\n"


def final_rows(rows: list[Row]) -> list[Row]:
    """Each cell's rows at the end of its training (one per task)."""
    last: dict[tuple, Row] = {}
    for r in rows:
        k = (r["algo"], r["dataset"], r["task"], r["seed"])
        if k not in last or r["steps"] > last[k]["steps"]:
            last[k] = r
    return list(last.values())


def preset_order(presets: set[str]) -> list[str]:
    """Presets from easy to hard, unknown ones last."""
    return sorted(presets, key=lambda p: (p not in PRESET_ORDER, PRESET_ORDER.get(p, 9)))


def cell_stats(final: list[Row], algo: str, preset: str) -> tuple[float, float, int, float]:
    """Mean and std over seeds of the final success (averaged over tasks), the number of
    seeds and the mean decisions to success."""
    per_seed: dict[int, list[Row]] = {}
    for r in final:
        if r["algo"] == algo and r["dataset"] == preset:
            per_seed.setdefault(r["seed"], []).append(r)
    if not per_seed:
        return math.nan, math.nan, 0, math.nan
    means = [np.mean([r["success_rate"] for r in rs]) for rs in per_seed.values()]
    lengths = [
        r["mean_success_length"]
        for rs in per_seed.values()
        for r in rs
        if not math.isnan(r["mean_success_length"])
    ]
    return (
        float(np.mean(means)),
        float(np.std(means)),
        len(means),
        float(np.mean(lengths)) if lengths else math.nan,
    )


def success_table(final: list[Row], algos: list[str]) -> str:
    """Algorithms x presets: final success, mean ± std over seeds, decisions to success."""
    presets = preset_order({r["dataset"] for r in final})
    head = "| algo | " + " | ".join(presets) + " | mean |\n|---|" + "---|" * (len(presets) + 1)
    body = []
    for a in algos:
        stats = [cell_stats(final, a, p) for p in presets]
        cells_txt = [
            f"{m:.2f} ± {sd:.2f} (n={n}, {L:.0f} dec.)" if n else "-" for m, sd, n, L in stats
        ]
        means = [m for m, _, n, _ in stats if n]
        overall = f"{np.mean(means):.2f}" if len(means) == len(presets) else "incomplete"
        body.append(f"| {a} | " + " | ".join(cells_txt) + f" | {overall} |")
    return head + "\n" + "\n".join(body) + "\n"


def metaworld_table(final: list[Row], algos: list[str], profile_name: str) -> str:
    """metaworld.md (without the partial-grid note)."""
    return success_table(final, algos) + (
        f"\nSuccess rate at the end of training, mean ± std over seeds (n seeds), profile "
        f"`{profile_name}`; 'dec.' = mean decisions to success. Rows of metaworld.csv hold every "
        "evaluation point.\n"
    )


def partial_note(done: int, planned: int, profile_name: str) -> str:
    """What metaworld.md says under a grid with unfinished cells; empty when complete."""
    if done >= planned:
        return ""
    return (
        f"\n**Partial: {done} of {planned} cells of the `{profile_name}` grid "
        "finished**; cells show their number of seeds.\n"
    )


def _q_mean(records: list[Record], name: str) -> float:
    return float(np.nanmean([c.get(name, np.nan) for c in records])) if records else math.nan


def ablation_table(
    final: list[Row], algos: list[str], records: dict[str, Record], preset: str
) -> str:
    """ablations.md: each variant's final success on ``preset`` and its mean Q at the start of
    the data's successful and failed episodes."""
    lines = [
        f"| variant | {preset} success | Q at success starts | Q at failure starts |",
        "|---|---|---|---|",
    ]
    for a in algos:
        m, sd, n, _ = cell_stats(final, a, preset)
        qs = [
            c for c in records.values() if c["cell"]["algo"] == a and c["cell"]["preset"] == preset
        ]
        qsucc, qfail = _q_mean(qs, "q_success_start"), _q_mean(qs, "q_failure_start")
        lines.append(f"| {a} | {m:.2f} ± {sd:.2f} (n={n}) | {qsucc:.2f} | {qfail:.2f} |")
    return "\n".join(lines) + "\n"


def last_row(record: Record) -> Row:
    """A cell's evaluation at the end of its training."""
    return max(record["rows"], key=lambda r: r["steps"])


def explore_keys(profile: Profile) -> set[str]:
    """The cells the exploration table reads: its variants, and the grid's ``qt`` on the same
    presets and seeds."""
    study = _study("explore")
    presets = study.presets or profile.presets
    keys = {c.key for c in study.cells(profile)}
    return keys | {Cell("qt", p, s).key for s in study.seeds_of(profile) for p in presets}


def explore_table(records: dict[str, Record], profile: Profile) -> str:
    """Per variant and preset: success at every evaluation point (mean over the exploration
    seeds), decisions to success and Q at the start of successful vs failed episodes."""
    study = _study("explore")
    keys = explore_keys(profile)
    presets = study.presets or profile.presets
    chosen = [c for k, c in records.items() if k in keys]
    lines = [
        "| variant | preset | seeds | success along training (step: rate) | final | dec. "
        "| Q success / failure starts |",
        "|---|---|---|---|---|---|---|",
    ]
    for algo in (*study.algos, "qt"):
        for preset in presets:
            cs = [c for c in chosen if c["cell"]["algo"] == algo and c["cell"]["preset"] == preset]
            if not cs:
                continue
            by_step: dict[int, list[float]] = {}
            lengths = []
            for c in cs:
                for r in c["rows"]:
                    by_step.setdefault(r["steps"], []).append(r["success_rate"])
                last = last_row(c)
                if not math.isnan(last["mean_success_length"]):
                    lengths.append(last["mean_success_length"])
            curve = ", ".join(f"{k}: {np.mean(v):.2f}" for k, v in sorted(by_step.items()))
            final = np.mean(by_step[max(by_step)])
            qs = np.nanmean([c.get("q_success_start", np.nan) for c in cs])
            qf = np.nanmean([c.get("q_failure_start", np.nan) for c in cs])
            dec = f"{np.mean(lengths):.1f}" if lengths else "-"
            lines.append(
                f"| {algo} | {preset} | {len(cs)} | {curve} | {final:.2f} | {dec} "
                f"| {qs:.2f} / {qf:.2f} |"
            )
    return (
        "\n".join(lines)
        + "\n\nSeeds "
        + ", ".join(map(str, study.seeds_of(profile)))
        + f" of the `{profile.tasks[0]}` presets, {profile.eval_episodes} evaluation episodes "
        "per point. `qt-32-bins-constant-lr` is the base (32 bins, constant learning rate, "
        "alpha 1); each `qt-...` variant below it changes the settings its name gives; `qt` is "
        "the `cpu` profile's Q-Transformer (16 bins, the cosine schedule and alpha 0.5), from "
        "the grid.\n"
    )


def study_finals(records: dict[str, Record]) -> list[tuple[dict, Row]]:
    """``(cell, final row)`` of the cells of the data-scale algorithms on the hard presets."""
    return [
        (c["cell"], last_row(c))
        for c in records.values()
        if c["cell"]["algo"] in SCALE_ALGOS and c["cell"]["preset"] in HARD_PRESETS and c["rows"]
    ]


def scale_table(records: dict[str, Record], profile: Profile) -> str:
    """Final success per algorithm, hard preset and data size (mean ± std over seeds), with
    decisions to success; the profile's own size comes from the grid's cells."""
    study = _study("scale")
    sizes = (*(n for n in study.episodes if n is not None), profile.episodes_per_task)
    final: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for cell, last in study_finals(records):
        n = cell.get("episodes") or profile.episodes_per_task
        if n not in sizes:
            continue
        final.setdefault((cell["algo"], cell["preset"], n), []).append(
            (last["success_rate"], last["mean_success_length"])
        )
    head = "| algo | preset | " + " | ".join(f"{n} episodes" for n in sizes) + " |"
    lines = [head, "|---|---|" + "---|" * len(sizes)]
    for preset in HARD_PRESETS:
        for algo in SCALE_ALGOS:
            txt = []
            for n in sizes:
                got = final.get((algo, preset, n), [])
                if not got:
                    txt.append("-")
                    continue
                rates = [r for r, _ in got]
                dec = [d for _, d in got if not math.isnan(d)]
                d = f", {np.mean(dec):.0f} dec." if dec else ""
                txt.append(f"{np.mean(rates):.2f} ± {np.std(rates):.2f} (n={len(rates)}{d})")
            lines.append(f"| {algo} | {preset} | " + " | ".join(txt) + " |")
    return (
        "\n".join(lines)
        + f"\n\nSuccess at the end of training, mean ± std over seeds, on `{profile.tasks[0]}`"
        f" with {', '.join(map(str, sizes))} episodes per task; the same training steps at every"
        f" size; {profile.eval_episodes} evaluation episodes per cell.\n"
    )


def time_limit_table(records: dict[str, Record], profile: Profile) -> str:
    """Success under shorter time limits, from the decisions each successful evaluation
    episode took at the end of training (exact: the policies do not see the time). Covers the
    grid cells of the data-scale algorithms on the hard presets that recorded those lengths;
    empty when none did."""
    full = math.ceil(profile.max_steps / profile.action_repeat)
    limits = (*TIME_LIMITS, full)
    rates: dict[tuple[str, str], list[list[float]]] = {}
    for cell, last in study_finals(records):
        if "success_lengths" not in last:
            continue
        n = np.asarray(last["success_lengths"])
        rates.setdefault((cell["algo"], cell["preset"]), []).append(
            [float((n <= t).sum()) / last["episodes"] for t in limits]
        )
    if not rates:
        return ""
    lines = [
        "| algo | preset | seeds | " + " | ".join(f"≤ {t} decisions" for t in limits) + " |",
        "|---|---|---|" + "---|" * len(limits),
    ]
    for preset in HARD_PRESETS:
        for algo in SCALE_ALGOS:
            got = rates.get((algo, preset))
            if got:
                mean = np.mean(got, axis=0)
                lines.append(
                    f"| {algo} | {preset} | {len(got)} | "
                    + " | ".join(f"{m:.2f}" for m in mean)
                    + " |"
                )
    return (
        "\n".join(lines)
        + f"\n\nSuccess within a time limit of T decisions ({profile.action_repeat} env steps "
        f"each; the evaluation ran with {full}), at the end of training, mean over seeds.\n"
    )


def transfer_table(records: dict[str, Record], profile: Profile, name: str = "transfer") -> str:
    """transfer.md: a transfer study's algorithms x presets, as in metaworld.md."""
    study = _study(name)
    final = final_rows([r for c in records.values() for r in c["rows"]])
    algos = [a for a in study.algos if any(r["algo"] == a for r in final)]
    tasks = ", ".join(f"`{t}`" for t in (study.tasks or profile.tasks))
    return success_table(final, algos) + (
        f"\nSuccess rate at the end of training, mean ± std over seeds (n seeds), on {tasks}: "
        "the adopted Q-Transformer defaults and the two strongest baselines on a task the "
        f"defaults were not chosen on ({profile.episodes_per_task} episodes per task, "
        f"{profile.eval_episodes} evaluation episodes per cell); 'dec.' = mean decisions to "
        "success.\n"
    )


def cells_of(
    records: dict[str, Record], algo: str, preset: str, episodes: int | None
) -> list[Record]:
    """The finished records (with rows) of one algorithm on one preset and data size (None:
    the profile's)."""
    return [
        c
        for c in records.values()
        if c["cell"]["algo"] == algo
        and c["cell"]["preset"] == preset
        and c["cell"].get("episodes") == episodes
        and c["rows"]
    ]


def finish_table(
    records: dict[str, Record], profile: Profile, algos: tuple[str, ...], note: str = ""
) -> str:
    """Per algorithm and hard preset, at the end of training (mean over seeds, episodes of
    every task pooled): success ± std, mean decisions to success, and success within 12, 15
    and 20 decisions. Cells run with other data sizes than the profile's are left out."""
    limits = TIME_LIMITS
    lines = [
        "| algo | preset | seeds | success | dec. | "
        + " | ".join(f"≤ {t} dec." for t in limits)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(limits),
    ]
    for preset in HARD_PRESETS:
        for algo in algos:
            cells = cells_of(records, algo, preset, None)
            if not cells:
                continue
            rates, within, lengths = [], [], []
            for c in cells:
                last_step = max(r["steps"] for r in c["rows"])
                final = [r for r in c["rows"] if r["steps"] == last_step]
                episodes = sum(r["episodes"] for r in final)
                rates.append(sum(r["success_rate"] * r["episodes"] for r in final) / episodes)
                n = np.concatenate([np.asarray(r.get("success_lengths", []), float) for r in final])
                lengths += n.tolist()
                if all("success_lengths" in r for r in final):
                    within.append([float((n <= t).sum()) / episodes for t in limits])
            dec = f"{np.mean(lengths):.1f}" if lengths else "-"
            win = (
                " | ".join(f"{m:.2f}" for m in np.mean(within, axis=0))
                if within
                else " | ".join("-" for _ in limits)
            )
            lines.append(
                f"| {algo} | {preset} | {len(cells)} | {np.mean(rates):.2f} ± "
                f"{np.std(rates):.2f} | {dec} | {win} |"
            )
    tasks = ", ".join(profile.tasks)
    return (
        "\n".join(lines)
        + f"\n\nProfile `cpu` on {tasks}; {profile.eval_episodes} evaluation episodes per task "
        f"and seed at the end of training; 'dec.' = mean decisions ({profile.action_repeat} env "
        "steps each) over the successful episodes; '≤ T dec.' = success within T decisions "
        "(exact from each success's length: the policies do not see the time)."
        + (f" {note}" if note else "")
        + "\n"
    )


def task_table(final: list[Row], algos: list[str]) -> str:
    """Tasks x algorithms: final success, mean over presets and seeds, with the mean decisions
    to success, and the mean over tasks in the last line."""
    tasks = sorted({r["task"] for r in final})
    lines = [
        "| task | " + " | ".join(algos) + " |",
        "|---|" + "---|" * len(algos),
    ]
    means: dict[str, list[float]] = {a: [] for a in algos}
    for task in tasks:
        txt = []
        for a in algos:
            rs = [r for r in final if r["algo"] == a and r["task"] == task]
            if not rs:
                txt.append("-")
                continue
            rate = float(np.mean([r["success_rate"] for r in rs]))
            means[a].append(rate)
            dec = [r["mean_success_length"] for r in rs if not math.isnan(r["mean_success_length"])]
            txt.append(f"{rate:.2f} ({np.mean(dec):.0f} dec.)" if dec else f"{rate:.2f}")
        lines.append(f"| {task} | " + " | ".join(txt) + " |")
    lines.append(
        "| **mean** | "
        + " | ".join(f"**{np.mean(means[a]):.2f}**" if means[a] else "-" for a in algos)
        + " |"
    )
    return "\n".join(lines) + "\n"


def variant_table(
    records: dict[str, Record], algos: tuple[str, ...], episodes: tuple[int | None, ...]
) -> str:
    """Per algorithm (or variant), preset and data size: success along training (mean over
    seeds at each evaluation point), final success ± std and decisions to success."""
    lines = [
        "| algo | preset | episodes per task | seeds | success along training (step: rate) "
        "| final | dec. |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in episodes:
        for preset in HARD_PRESETS:
            for algo in algos:
                cs = cells_of(records, algo, preset, n)
                if not cs:
                    continue
                by_step: dict[int, list[float]] = {}
                for c in cs:
                    for r in c["rows"]:
                        by_step.setdefault(r["steps"], []).append(r["success_rate"])
                finals = [last_row(c)["success_rate"] for c in cs]
                lengths = [
                    last_row(c)["mean_success_length"]
                    for c in cs
                    if not math.isnan(last_row(c)["mean_success_length"])
                ]
                curve = ", ".join(f"{k}: {np.mean(v):.2f}" for k, v in sorted(by_step.items()))
                dec = f"{np.mean(lengths):.1f}" if lengths else "-"
                lines.append(
                    f"| {algo} | {preset} | {n or 'profile'} | {len(cs)} | {curve} | "
                    f"{np.mean(finals):.2f} ± {np.std(finals):.2f} | {dec} |"
                )
    return "\n".join(lines) + "\n"


def cell_time_note(records: dict[str, Record], profile: Profile) -> str:
    """Mean minutes per cell and gradient steps of each algorithm: how the training budget
    was shared (wall time, with other cells running beside it on the machine)."""
    seconds: dict[str, list[float]] = {}
    for r in records.values():
        if "seconds" in r:
            seconds.setdefault(r["cell"]["algo"], []).append(r["seconds"])
    if not seconds:
        return ""
    parts = [
        f"{a} {np.mean(v) / 60:.1f} min for {profile.steps.get(a, '?')} steps (n={len(v)})"
        for a, v in seconds.items()
    ]
    return (
        "\nWall time per cell (training and evaluation, with other cells running beside it on "
        "the machine's cores), mean over its cells: " + "; ".join(parts) + ".\n"
    )
