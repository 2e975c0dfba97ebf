"""The studies' plots: success along training per preset, and final success per preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qtransformer.bench.tables import PRESET_ORDER, cell_stats


def grid_plots(
    rows: list[dict[str, Any]], final: list[dict[str, Any]], algos: list[str], out: Path
) -> None:
    """Write ``metaworld_curves.png`` and ``metaworld_bars.png`` into ``out``."""
    presets = curves_plot(rows, algos, out / "metaworld_curves.png")  # sets the Agg backend
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(1, len(algos))
    for i, a in enumerate(algos):
        stats = [cell_stats(final, a, p) for p in presets]
        ax.bar(
            np.arange(len(presets)) + i * width,
            [m for m, *_ in stats],
            width,
            yerr=[sd for _, sd, *_ in stats],
            label=a,
        )
    ax.set_xticks(np.arange(len(presets)) + 0.4 - width / 2, presets)
    ax.set(ylabel="success rate", ylim=(0, 1.05), title="final success per regime")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(out / "metaworld_bars.png", dpi=110)
    plt.close(fig)


def curves_plot(rows: list[dict[str, Any]], algos: list[str], path: Path) -> list[str]:
    """Mean success along training, one panel per preset; ``rows`` hold ``algo``,
    ``dataset`` (the preset), ``steps`` and ``success_rate``. Returns the presets drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = sorted({r["dataset"] for r in rows}, key=lambda p: PRESET_ORDER.get(p, 9))
    fig, axes = plt.subplots(1, len(presets), figsize=(3.2 * len(presets), 3), squeeze=False)
    for ax, preset in zip(axes[0], presets, strict=True):
        for a in algos:
            pts: dict[int, list[float]] = {}
            for r in rows:
                if r["algo"] == a and r["dataset"] == preset:
                    pts.setdefault(r["steps"], []).append(r["success_rate"])
            if pts:
                xs = sorted(pts)
                ax.plot(xs, [np.mean(pts[x]) for x in xs], "o-", ms=3, label=a)
        ax.set(title=preset, xlabel="gradient steps", ylim=(-0.02, 1.02))
    axes[0][0].set_ylabel("success rate")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return presets


def tasks_plot(final: list[dict[str, Any]], algos: list[str], path: Path) -> None:
    """Final success per task (mean over presets and seeds), one bar per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in final})
    fig, ax = plt.subplots(figsize=(9, 3.4))
    width = 0.8 / max(1, len(algos))
    for i, a in enumerate(algos):
        means = [
            np.mean([r["success_rate"] for r in final if r["algo"] == a and r["task"] == t] or [0])
            for t in tasks
        ]
        ax.bar(np.arange(len(tasks)) + i * width, means, width, label=a)
    ax.set_xticks(
        np.arange(len(tasks)) + 0.4 - width / 2,
        [t.removesuffix("-v3") for t in tasks],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set(ylabel="success rate", ylim=(0, 1.2), title="final success per task")
    ax.legend(fontsize=7, ncol=len(algos), loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
