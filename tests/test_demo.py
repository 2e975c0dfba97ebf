from __future__ import annotations

import json

import pytest

from qtransformer.demo import run_demo

pytestmark = pytest.mark.slow


def test_demo_collects_trains_evaluates_and_plots(tmp_path) -> None:
    result = run_demo(tmp_path, steps=1000, seed=0)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "dataset.npz",
        "agent",
        "results.json",
        "demo.png",
    }
    rows = {r["policy"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    assert rows["demonstrations in the data"]["steps"] == 8.0
    assert rows["Q-Transformer (greedy)"]["success"] == 1.0
    assert rows["Q-Transformer (greedy)"]["steps"] == 6.0
    assert result["curve"][-1]["step"] == 1000
