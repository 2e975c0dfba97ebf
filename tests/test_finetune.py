"""Online fine-tuning: exploration, the offline/online mixture, the online episodes on disk,
and exact resume."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from factories import TINY_TRAIN, load_benchmark, make_tiny_arrays

import qtransformer as qt
from qtransformer import collection as mw
from qtransformer.agent import Exploration
from qtransformer.data.minari_io import read_minari
from qtransformer.data.sampler import TransitionSampler
from qtransformer.discretize import ActionDiscretizer
from qtransformer.envs import metaworld as menv
from qtransformer.finetune import (
    ONLINE_ID,
    FinetuneConfig,
    MixedSampler,
    _train_config,
    finetune,
    restart_lr_factor,
)
from qtransformer.learner import Learner


@pytest.fixture(scope="module")
def tiny_agent():
    data = qt.OfflineDataset.from_arrays(**make_tiny_arrays())
    return qt.train(data, qt.TrainConfig(**TINY_TRAIN)), data


def test_exploration_at_zero_is_greedy_and_draws_are_reproducible(tiny_agent) -> None:
    agent, data = tiny_agent
    obs = np.asarray(data.observations[:32])
    greedy = agent.act_bins(obs)[0]
    assert np.array_equal(agent.act_bins(obs, explore=Exploration(0.0, 0.0))[0], greedy)

    def draw(seed: int, temperature: float, epsilon: float = 0.0) -> np.ndarray:
        g = torch.Generator().manual_seed(seed)
        return agent.act_bins(obs, explore=Exploration(temperature, epsilon, g))[0]

    assert np.array_equal(draw(1, 0.05), draw(1, 0.05))
    assert not np.array_equal(draw(1, 1.0), greedy)  # a high temperature leaves the argmax
    uniform = draw(2, 0.0, epsilon=1.0)
    assert len(np.unique(uniform)) > agent.config.n_bins // 2
    with pytest.raises(ValueError, match="epsilon"):
        Exploration(0.0, 1.5)


def test_exploration_draws_by_the_softmax_of_q() -> None:
    """Bins drawn as often as exp(Q / T) says (Q = sigmoid of the logits)."""
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).repeat(20000, 1)
    ex = Exploration(0.2, 0.0, torch.Generator().manual_seed(0))
    counts = np.bincount(ex.choose(logits).numpy(), minlength=4) / len(logits)
    p = torch.softmax(torch.sigmoid(logits[0]) / 0.2, -1).numpy()
    np.testing.assert_allclose(counts, p, atol=0.01)


def test_mixed_batches_hold_the_online_share(tiny_agent) -> None:
    _, data = tiny_agent
    online = qt.OfflineDataset.from_arrays(
        **{
            **make_tiny_arrays(),
            "observations": np.full_like(make_tiny_arrays()["observations"], 7.0),
        }
    )
    disc = ActionDiscretizer(data.action_low, data.action_high, 9)
    mixed = MixedSampler(
        TransitionSampler(data, disc, 0.9, 1, 1), 0.25, torch.Generator().manual_seed(0)
    )
    batch, n_on = mixed.batch(64)
    assert n_on == 0 and len(batch) == 64  # no online data yet: all offline
    mixed.online = TransitionSampler(online, disc, 0.9, 1, 1)
    for _ in range(5):
        batch, n_on = mixed.batch(64)
        from_online = (batch.obs[:, -1] == 7.0).all(dim=1)
        assert n_on == 16 and int(from_online.sum()) == 16 and from_online[-16:].all()
    mixed.online_ratio = 1.0  # online only (learning from scratch)
    batch, n_on = mixed.batch(64)
    assert n_on == 64 and bool((batch.obs[:, -1] == 7.0).all())


def test_cosine_finetuning_rate_decays_to_zero_over_the_planned_updates(tiny_agent) -> None:
    agent, _ = tiny_agent
    cfg = FinetuneConfig(steps=400, updates_per_decision=0.5, lr=1e-3, lr_schedule="cosine")
    tc = _train_config(agent, cfg)
    assert tc.steps == 200 and tc.lr_schedule == "cosine"
    learner = SimpleNamespace(cfg=tc, step=0)
    for step, expected in [(0, 1e-3), (100, 0.5e-3), (50, 1e-3 * (1 + np.cos(np.pi / 4)) / 2),
                           (200, 0.0), (260, 0.0)]:  # fmt: skip
        learner.step = step
        assert Learner.learning_rate(learner) == pytest.approx(expected, abs=1e-12)  # type: ignore[arg-type]
    constant = _train_config(agent, FinetuneConfig(lr=1e-3, lr_schedule="constant"))
    assert constant.lr_schedule == "constant" and constant.steps >= 10**9
    with pytest.raises(ValueError, match="lr_schedule"):
        FinetuneConfig(lr_schedule="linear")  # type: ignore[arg-type]


def test_restart_rate_anneals_within_each_evaluation_period(tiny_agent) -> None:
    # A wave inside the period [0, 1000): positions against the period's length.
    for u in (0, 99, 199):
        at = 200 + 200 * (u + 1) / 200
        expected = (1 + np.cos(np.pi * at / 1000)) / 2
        assert restart_lr_factor(200, 200, u, 200, 1000, False) == pytest.approx(expected)
    # The wave that ends the period (900 -> 1150, an evaluation follows): measured against
    # its end, so its last update runs at rate 0 and none goes back up before the evaluation.
    factors = [restart_lr_factor(900, 250, u, 125, 1000, True) for u in range(125)]
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))
    assert factors[0] == pytest.approx((1 + np.cos(np.pi * 902 / 1150)) / 2)
    # The next period restarts at its own start (1000), not at the previous evaluation.
    assert restart_lr_factor(1150, 100, 0, 100, 1000, False) == pytest.approx(
        (1 + np.cos(np.pi * 0.151)) / 2
    )
    # The learner keeps a constant peak; finetune() applies the factor per update.
    tc = _train_config(tiny_agent[0], FinetuneConfig(lr_schedule="restarts"))
    assert tc.lr_schedule == "constant"


@pytest.fixture(scope="module")
def reach_agent(tmp_path_factory):
    """A tiny agent trained offline on two reach-v3 demonstrations (40-step limit)."""
    root = tmp_path_factory.mktemp("reach")
    recipe = mw.custom_recipe("reach-v3", demos=2, max_steps=40)
    low, high = menv.action_bounds()
    data = qt.OfflineDataset.from_episodes(
        mw.collect(recipe, seed=0, workers=1, progress=False), low, high,
        {"source": "metaworld", "max_steps": 40, "action_repeat": 1},
    )  # fmt: skip
    cfg = qt.TrainConfig(**{**TINY_TRAIN, "batch_size": 32})
    qt.train(data, cfg, out_dir=root / "offline")
    return root / "offline" / "agent", data


def small(**kw) -> FinetuneConfig:
    base = dict(
        steps=120, num_envs=2, updates_per_decision=0.1, temperature=0.1,
        temperature_end=0.1, eval_every=10**6, eval_episodes=2,
    )  # fmt: skip
    return FinetuneConfig(**{**base, **kw})


def interrupt_after_waves(agent_dir, data, cfg: FinetuneConfig, out, waves: int) -> None:
    """Run fine-tuning into ``out`` and kill it (KeyboardInterrupt) when it starts wave
    ``waves + 1``, as a user's Ctrl-C would: the same settings throughout, so that resuming
    must reproduce the uninterrupted run."""
    import qtransformer.finetune as ft

    played = 0
    play = ft.play_wave

    def killed(*args, **kwargs):
        nonlocal played
        if played == waves:
            raise KeyboardInterrupt
        played += 1
        return play(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ft, "play_wave", killed)
        with pytest.raises(KeyboardInterrupt):
            finetune(agent_dir, data, "reach-v3", cfg, out_dir=out)
    assert played == waves


@pytest.mark.slow
def test_finetune_keeps_online_episodes_and_resumes_exactly(reach_agent, tmp_path) -> None:
    agent_dir, data = reach_agent
    whole, history = finetune(agent_dir, data, "reach-v3", small(), out_dir=tmp_path / "a")
    assert history[0]["decisions"] == 0 and history[-1]["decisions"] >= 120
    episodes, meta = read_minari(tmp_path / "a" / ONLINE_ID)
    assert len(episodes) == history[-1]["online_episodes"] and len(episodes) % 2 == 0
    assert all(ep.task == "reach-v3" and len(ep) <= 40 for ep in episodes)
    assert sum(len(ep) for ep in episodes) == history[-1]["decisions"]
    # Interrupted after its first wave, then resumed: the same weights and episodes.
    interrupt_after_waves(agent_dir, data, small(), tmp_path / "b", waves=1)
    with pytest.raises(FileExistsError, match="resume"):
        finetune(agent_dir, data, "reach-v3", small(), out_dir=tmp_path / "b")
    resumed, _ = finetune(agent_dir, data, "reach-v3", small(), out_dir=tmp_path / "b", resume=True)
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    again, _ = read_minari(tmp_path / "b" / ONLINE_ID)
    assert len(again) == len(episodes)
    for a, b in zip(episodes, again, strict=True):
        assert np.array_equal(a.actions, b.actions) and a.terminated == b.terminated
    assert (tmp_path / "a" / "agent" / "model.safetensors").exists()


@pytest.mark.slow
def test_restarts_reach_rate_zero_before_every_evaluation_and_resume_exactly(
    reach_agent, tmp_path, monkeypatch
) -> None:
    agent_dir, data = reach_agent
    factors: dict[int, float] = {}
    update = Learner.update

    def recording(self, batch, metrics=True):
        out = update(self, batch, metrics)
        factors[self.step] = self.lr_factor
        return out

    monkeypatch.setattr(Learner, "update", recording)
    cfg = small(lr_schedule="restarts", eval_every=40, updates_per_decision=0.2)
    whole, history = finetune(agent_dir, data, "reach-v3", cfg, out_dir=tmp_path / "a")
    steps = [int(row["gradient_steps"]) for row in history[1:]]
    assert len(steps) >= 2 and all(s > 0 for s in steps)
    for s in steps:  # the update just before every evaluation ran at rate 0
        assert factors[s] == pytest.approx(0.0, abs=1e-12)
    assert max(factors.values()) > 0.5  # and the rate went back up in between
    interrupt_after_waves(agent_dir, data, cfg, tmp_path / "b", waves=1)
    resumed, _ = finetune(agent_dir, data, "reach-v3", cfg, out_dir=tmp_path / "b", resume=True)
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.slow
def test_cli_finetune_with_relative_paths(reach_agent, tmp_path, monkeypatch) -> None:
    import json

    from qtransformer.cli import main

    agent_dir, data = reach_agent
    monkeypatch.chdir(tmp_path)
    data.save_npz(tmp_path / "reach.npz")
    flags = ["--steps", "40", "--num-envs", "1", "--eval-episodes", "1"]
    main(["finetune", "--agent", str(agent_dir), "--data", "reach.npz", "--env", "reach-v3",
          *flags, "--updates-per-decision", "0.1", "--out", "runs/ft"])  # fmt: skip
    history = json.loads((tmp_path / "runs/ft/history.json").read_text())
    assert history[0]["decisions"] == 0 and history[-1]["decisions"] >= 40
    assert (tmp_path / "runs/ft" / ONLINE_ID).is_dir()
    assert (tmp_path / "runs/ft/agent/model.safetensors").exists()
    with pytest.raises(SystemExit):  # a wrong task is refused by name
        main(["finetune", "--agent", str(agent_dir), "--data", "reach.npz", "--env", "push-v3",
              *flags, "--out", "runs/other"])  # fmt: skip


@pytest.mark.slow
def test_a_diverged_finetune_saves_nothing(reach_agent, tmp_path, monkeypatch) -> None:
    from qtransformer.learner import Learner
    from qtransformer.trainer import TrainingDiverged

    agent_dir, data = reach_agent
    update = Learner.update

    def poisoned(self, batch, metrics=True):
        out = update(self, batch, metrics)
        next(self.model.parameters()).data.fill_(float("nan"))
        return out

    monkeypatch.setattr(Learner, "update", poisoned)
    with pytest.raises(TrainingDiverged, match="NaN"):
        finetune(agent_dir, data, "reach-v3", small(), out_dir=tmp_path / "ft")
    assert not (tmp_path / "ft" / "checkpoint").exists()
    assert not (tmp_path / "ft" / "agent").exists()


def test_chance_dips_match_the_binomial_reference() -> None:
    bench = load_benchmark("finetune")

    def run(p: float, later: int) -> dict:
        return {
            "config": {"eval_episodes": 50},
            "offline_success": p,
            "history": [{}] * (1 + later),
        }

    assert bench.chance_dips([run(1.0, 4)]) == (0.0, 0.0)  # a sure policy never dips
    # One later evaluation: the dip is the difference of two binomial means, mean 0; the
    # larger of two runs' dips is the minimum of two such differences, about -sd / sqrt(pi).
    mean, largest = bench.chance_dips([run(0.5, 1), run(0.5, 1)], draws=100000)
    sd = np.sqrt(2 * 0.25 / 50)
    assert mean == pytest.approx(0.0, abs=0.003)
    assert largest == pytest.approx(-sd / np.sqrt(np.pi), abs=0.003)
    # More evaluations dip further by chance.
    assert bench.chance_dips([run(0.5, 4)])[0] < bench.chance_dips([run(0.5, 1)])[0] - 0.03


def test_runs_on_another_data_size_have_their_own_names_and_folders(tmp_path) -> None:
    bench = load_benchmark("finetune")

    # The default size keeps the names its committed runs were made under.
    assert bench.variant_label("qt", 25) == "qt"
    assert (
        bench.run_folder(tmp_path, "push-v3", "noisy", 0, "qt") == tmp_path / "push-v3-noisy-seed0"
    )
    assert bench.offline_folder(tmp_path, "push-v3", "noisy", 0, 25) == (
        tmp_path / "push-v3-noisy-seed0" / "offline"
    )
    # Another size: neither its offline agent nor its runs are the default size's.
    label = bench.variant_label("qt", 10)
    assert label == "qt-10-episodes" and bench.variant_label("cosine", 10) == "cosine-10-episodes"
    folders = {
        bench.run_folder(tmp_path, "push-v3", "noisy", 0, v)
        for v in ("qt", label, bench.variant_label("cosine", 10), "cosine")
    }
    assert len(folders) == 4
    ten = bench.offline_folder(tmp_path, "push-v3", "noisy", 0, 10)
    assert ten != bench.offline_folder(tmp_path, "push-v3", "noisy", 0, 25)
