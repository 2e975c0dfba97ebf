"""Online fine-tuning of the d3rlpy baselines (IQL, Cal-QL): the offline/online batch mixture,
the online episodes as d3rlpy sees them (rewards, ends, Cal-QL's returns-to-go), and a tiny
resumable benchmark run. Real d3rlpy, real Meta-World."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from factories import load_benchmark

import qtransformer as qt
from qtransformer import collection as mw
from qtransformer.baselines import to_mdp_dataset
from qtransformer.baselines.online import (
    OnlineConfig,
    finetune_baseline,
    mixed_batch,
    online_mdp_dataset,
    play_episodes,
    train_offline,
)
from qtransformer.envs import metaworld as menv

MAX_STEPS = 40


@pytest.fixture(scope="module")
def reach():
    """Two reach-v3 demonstrations (40-step limit, no action repeat), Cal-QL trained on them
    for two steps, and a wave of two episodes it played (failures: they time out)."""
    recipe = mw.custom_recipe("reach-v3", demos=2, max_steps=MAX_STEPS)
    low, high = menv.action_bounds()
    demos = mw.collect(recipe, seed=0, workers=1, progress=False)
    data = qt.OfflineDataset.from_episodes(
        demos, low, high, {"source": "metaworld", "max_steps": MAX_STEPS, "action_repeat": 1}
    )
    policy = train_offline("cal-ql", data, steps=2, seed=0)
    played = play_episodes(policy, "reach-v3", [11, 12], MAX_STEPS, 1)
    return data, demos, policy, played


def test_mixed_batches_hold_the_online_share(reach) -> None:
    data, _, policy, played = reach
    offline = to_mdp_dataset(data)
    online = online_mdp_dataset(played, data, "reach-v3")
    seen_offline = {o.tobytes() for o in np.asarray(data.observations, np.float32)}
    for ratio, size, n_on in [(0.5, 256, 128), (0.25, 64, 16), (0.3, 10, 3), (1.0, 8, 8)]:
        batch = mixed_batch(offline, online, size, ratio)
        assert len(batch) == size
        from_offline = np.array([o.tobytes() in seen_offline for o in batch.observations])
        # offline rows first, then exactly round(ratio * size) online rows
        assert from_offline[: size - n_on].all() and not from_offline[size - n_on :].any()
    batch = mixed_batch(offline, None, 32, 0.5)  # no online data yet: all offline
    assert all(o.tobytes() in seen_offline for o in batch.observations)
    assert policy.algo.config.batch_size == 256  # what fine-tuning draws: 128 + 128


def test_online_episodes_keep_rewards_ends_and_returns_to_go(reach) -> None:
    from d3rlpy.dataset import TransitionMiniBatch
    from d3rlpy.torch_utility import TorchMiniBatch

    data, demos, policy, played = reach
    algo = policy.algo
    assert algo.need_returns_to_go  # Cal-QL asks d3rlpy for Monte Carlo returns
    episodes = [*demos, *played]  # successes (terminated) and failures (timed out)
    assert any(ep.terminated for ep in episodes) and any(ep.truncated for ep in episodes)
    buffer = online_mdp_dataset(episodes, data, "reach-v3")
    assert len(buffer.episodes) == len(episodes)
    gamma = algo.config.gamma
    for ep, stored in zip(episodes, buffer.episodes, strict=True):
        assert stored.terminated == ep.terminated
        np.testing.assert_array_equal(stored.rewards[:, 0], ep.rewards)
        np.testing.assert_array_equal(stored.observations, ep.observations[:-1])
        assert ep.rewards.sum() == (1.0 if ep.terminated else 0.0)  # sparse: 1 at a success
        # A success's last step is a transition to a terminal; a time-out's has no next state.
        assert stored.transition_count == len(ep) - (0 if ep.terminated else 1)
        rows = [buffer.transition_picker(stored, i) for i in range(stored.transition_count)]
        terminals = [t.terminal for t in rows]
        assert terminals == [float(ep.terminated and i == len(ep) - 1) for i in range(len(rows))]
        reference = np.zeros(len(ep))  # G_t = r_t + gamma * G_{t+1}
        g = 0.0
        for t in reversed(range(len(ep))):
            g = ep.rewards[t] + gamma * g
            reference[t] = g
        batch = TorchMiniBatch.from_batch(
            TransitionMiniBatch.from_transitions(rows),
            gamma=gamma,
            compute_returns_to_go=algo.need_returns_to_go,
            device=algo._device,
            reward_scaler=algo.config.reward_scaler,
        )
        rtg = batch.returns_to_go.numpy()[:, 0]
        np.testing.assert_allclose(rtg, reference[: len(rows)], rtol=1e-5, atol=1e-7)
        if ep.terminated:
            assert rtg[-1] == pytest.approx(1.0) and rtg[0] == pytest.approx(gamma ** (len(ep) - 1))


def test_finetune_updates_once_per_decision_and_evaluates(reach) -> None:
    data, _, _, _ = reach
    policy = train_offline("iql", data, steps=2, seed=0)
    cfg = OnlineConfig(steps=1, num_envs=2, updates_per_decision=0.05, eval_every=10**6,
                       eval_episodes=2)  # fmt: skip
    history = finetune_baseline(policy, data, "reach-v3", cfg)
    assert [h["decisions"] for h in history][0] == 0 and len(history) == 2
    end = history[-1]
    assert end["online_episodes"] == 2 and 2 <= end["decisions"] <= 2 * MAX_STEPS
    assert end["gradient_steps"] == round(0.05 * end["decisions"])
    # IQL's actor learning rate is back at its base rate, no longer on the offline schedule.
    actor = policy.algo.impl._modules.actor_optim
    assert actor._lr_scheduler is None
    assert actor.optim.param_groups[0]["lr"] == policy.algo.config.actor_learning_rate
    with pytest.raises(ValueError, match="not in the data's tasks"):
        finetune_baseline(policy, data, "push-v3", cfg)


def test_tiny_benchmark_run_records_and_resumes(tmp_path) -> None:
    bench = load_benchmark("finetune_baselines")
    args = bench.Args(
        algos=["iql", "cal-ql"], tasks=["reach-v3"], presets=["demos"], seeds=[0], episodes=2,
        offline_steps=2,
        config=OnlineConfig(steps=1, num_envs=2, updates_per_decision=0.02, eval_every=10**6,
                            eval_episodes=2),
        work=tmp_path / "runs", out=tmp_path / "results", qt_results=tmp_path / "none.jsonl",
    )  # fmt: skip
    first = bench.main(args)
    # A data size other than the default 25 episodes is in every run's name and folder.
    assert [r["variant"] for r in first] == ["cal-ql-2-episodes", "iql-2-episodes"]
    for r in first:
        assert r["task"] == "reach-v3" and r["preset"] == "demos" and r["seed"] == 0
        assert r["history"][0]["decisions"] == 0 and r["history"][-1]["online_episodes"] == 2
        assert r["offline_success"] == r["history"][0]["success"]
        assert r["min_success"] <= min(r["offline_success"], r["final_success"])
        assert r["config"]["online_ratio"] == 0.5 and r["offline"]["steps"] == 2
        assert "cpu_model" in r["machine"]
    record = tmp_path / "runs" / "cal-ql-2-episodes-reach-v3-demos-seed0" / "record.json"
    stamp = record.stat().st_mtime_ns
    second = bench.main(args)  # every run is there: nothing is trained again
    assert json.dumps(second) == json.dumps(first) and record.stat().st_mtime_ns == stamp
    # Another size is a run of its own: it neither resumes nor replaces the first size's.
    third = bench.main(replace(args, algos=["iql"], episodes=3))
    variants = ["cal-ql-2-episodes", "iql-2-episodes", "iql-3-episodes"]
    assert [r["variant"] for r in third] == variants and record.stat().st_mtime_ns == stamp
    assert third[2]["episodes"] == 3 and json.dumps(third[:2]) == json.dumps(first)
    lines = (tmp_path / "results" / "finetune_baselines.jsonl").read_text().splitlines()
    assert [json.loads(x)["variant"] for x in lines] == variants
    table = (tmp_path / "results" / "finetune_baselines.md").read_text()
    assert "| cal-ql-2-episodes | reach-v3 | demos | 0 |" in table
    with pytest.raises(ValueError, match="unknown algorithm 'cql'"):
        bench.main(bench.Args(algos=["cql"], work=tmp_path / "runs", out=tmp_path / "results"))
