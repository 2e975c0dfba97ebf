"""The studies and profiles as declared: cells, keys, folders and configs."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from qtransformer.baselines import BASELINES
from qtransformer.bench import PROFILES, QT_CPU, STUDIES, BenchArgs, PixelStudy, Study
from qtransformer.bench.runner import (
    TABLES,
    dataset_path,
    qt_config,
    records_file,
    work_of,
)
from qtransformer.bench.runner_pixels import agent_config
from qtransformer.bench.studies import ABLATIONS, EXPLORATION, Cell

CPU = PROFILES["cpu"]


def study(name: str) -> Study:
    s = STUDIES[name]
    assert isinstance(s, Study)
    return s


def test_cpu_q_transformer_is_the_one_the_committed_results_were_measured_with() -> None:
    """``act_temperature`` 0.05: the grid, data-scale and transfer studies' ``qt`` cells were
    rerun with it; cells of other studies recorded without it acted greedily, and ``bench``
    runs them again (``BEFORE_FIELDS``)."""
    assert asdict(CPU.qt) == {
        "steps": 1000,
        "epochs": None,
        "batch_size": 128,
        "n_bins": 16,
        "bin_layout": "centres",
        "gamma": 0.98,
        "n_step": 3,
        "conservative_weight": 0.5,
        "conservative": "mse",
        "mc_lower_bound": True,
        "window": 1,
        "d_model": 128,
        "n_layers": 2,
        "n_heads": 4,
        "dropout": 0.0,
        "q_heads": 2,
        "task_conditioning": True,
        "task_features": "onehot",
        "observation": "state",
        "image_tokens": 4,
        "image_channels": (16, 32, 48, 64),
        "image_encoder": "scratch",
        "image_frozen_blocks": 11,
        "image_last_block": 15,
        "image_feature_norm": False,
        "image_trunk_lr_scale": 0.1,
        "instruction_noise": 0.0,
        "augment": False,
        "augment_pad": 4,
        "loss": "q",
        "act_temperature": 0.05,
        "lr": 3e-4,
        "lr_schedule": "cosine",
        "weight_decay": 0.01,
        "grad_clip": 1.0,
        "target_update_rate": 0.005,
        "q_max": None,
        "q_min": None,
        "seed": 0,
        "device": "auto",
        "precision": "fp32",
        "compile": False,
        "data_workers": None,
        "log_every": 250,
        "checkpoint_every": 0,
    }
    assert PROFILES["demo"].qt == QT_CPU


def test_variants_change_their_base_by_their_name() -> None:
    cell = Cell("qt-16-bins", "noisy", 1)
    base = replace(QT_CPU, n_bins=32, lr_schedule="constant", conservative_weight=1.0)
    assert qt_config(cell, CPU) == replace(base, n_bins=16, seed=1)
    assert qt_config(Cell("qt-2500-steps", "noisy", 0), CPU) == replace(base, steps=2500)
    assert qt_config(Cell("qt-1-step", "noisy", 2), CPU) == replace(QT_CPU, n_step=1, seed=2)
    assert qt_config(Cell("qt", "demos", 0), PROFILES["tiny"]) == PROFILES["tiny"].qt


def test_every_study_names_tables_the_summary_knows() -> None:
    assert set(STUDIES) == {
        "grid",
        "explore",
        "scale",
        "finish",
        "small",
        "mt10",
        "transfer",
        "transfer-pick-place",
        "pixels",
        "pretrained",
        "ogbench",
    }
    for s in STUDIES.values():
        assert s.name in STUDIES and STUDIES[s.name] is s
        if isinstance(s, Study):
            assert all(t in TABLES or t.endswith(".png") for t in s.tables), s.name
            assert set(s.uses) <= set(STUDIES)
    # The grid's baselines: all but ReBRAC, which came later for OGBench.
    assert study("grid").algos == ("qt", *(b for b in BASELINES if b != "rebrac"))


def test_studies_sharing_the_work_folder_own_disjoint_cells() -> None:
    shared = [study(n) for n in ("grid", "explore", "scale", "finish", "small")]
    assert all(s.folder is None for s in shared)
    keys: set[str] = set()
    for s in shared:
        cells = s.cells(CPU)
        assert len({c.key for c in cells}) == len(cells)
        assert not keys & {c.key for c in cells}
        keys |= {c.key for c in cells}
        for other in shared:
            owned = [other.owns(asdict(c)) for c in cells]
            assert all(owned) if other is s else not any(owned)
    assert len(study("explore").cells(CPU)) == len(EXPLORATION) * 2 * 2
    assert len(study("grid").cells(CPU)) == 6 * 4 * 3 + len(ABLATIONS) * 3


def test_transfer_study_runs_door_open_in_its_own_folder() -> None:
    s = study("transfer")
    profile = s.profile(CPU)
    assert profile.tasks == ("door-open-v3",)
    assert replace(profile, tasks=CPU.tasks) == CPU  # otherwise the cpu profile's sizes
    cells = s.cells(profile)
    assert len(cells) == 3 * 2 * 3
    assert {c.algo for c in cells} == {"qt", "iql", "bc-success"}
    assert {c.preset for c in cells} == {"noisy", "suboptimal"} and {c.seed for c in cells} == {
        0,
        1,
        2,
    }
    assert Cell("iql", "noisy", 2).key == "iql__noisy__seed2"
    work = work_of(Path("runs/bench"), s)
    assert work == Path("runs/bench/transfer")
    assert dataset_path(work, profile, "noisy", 1) == Path(
        "runs/bench/transfer/data/noisy-door-open-v3-r4-seed1"
    )
    assert records_file(Path("r"), "transfer", "cpu") == Path("r/transfer.jsonl")
    assert records_file(Path("r"), "transfer", "tiny") == Path("r/transfer-tiny.jsonl")
    assert BenchArgs().study == "grid" and not BenchArgs().summarize_only


def test_pixel_agents_keep_their_measured_configs() -> None:
    s = STUDIES["pixels"]
    assert isinstance(s, PixelStudy)
    assert agent_config(s, "qt-pixels") == replace(
        QT_CPU,
        steps=1500,
        conservative_weight=1.0,
        batch_size=64,
        observation="image",
        task_features="instruction",
        augment=True,
    )
    state = agent_config(s, "qt-state")
    assert (state.steps, state.batch_size, state.observation, state.augment) == (
        1000,
        128,
        "state",
        False,
    )
    assert state.conservative_weight == 1.0 and state.task_features == "instruction"
    bc = agent_config(s, "bc-pixels")
    assert bc.loss == "bc" and bc.q_heads == 1 and bc.steps == 1500
    assert agent_config(s, "qt-pixels-alpha-0.5").conservative_weight == 0.5
