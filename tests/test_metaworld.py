from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest

from qtransformer.data.episodes import validate_episode

mw = pytest.importorskip("qtransformer.collection")
menv = pytest.importorskip("qtransformer.envs.metaworld")

EXPERT = mw.PolicySpec("expert")
DEGRADED = mw.PolicySpec("degraded", noise=0.8, perturb_prob=0.05, perturb_len=5)


def same(a, b) -> bool:
    arrays = ("observations", "actions", "rewards", "images")
    return all(
        (getattr(a, k) is None and getattr(b, k) is None)
        or np.array_equal(getattr(a, k), getattr(b, k))
        for k in arrays
    ) and (a.task, a.kind, a.info, a.terminated, a.truncated) == (
        b.task,
        b.kind,
        b.info,
        b.terminated,
        b.truncated,
    )


def test_instructions_cover_every_v3_task() -> None:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    assert set(menv.INSTRUCTIONS) == set(ALL_V3_ENVIRONMENTS) and len(menv.INSTRUCTIONS) == 50
    assert all(text and text == text.strip() for text in menv.INSTRUCTIONS.values())
    assert len(menv.MT10) == 10 and set(menv.MT10) < set(menv.MT50) and len(menv.MT50) == 50


def test_resolve_tasks() -> None:
    assert menv.resolve_tasks("MT10") == menv.MT10
    assert menv.resolve_tasks("mt50") == menv.MT50
    assert menv.resolve_tasks("reach-v3, push-v3,reach-v3") == ["reach-v3", "push-v3"]
    assert menv.resolve_tasks(["push-v3"]) == ["push-v3"]
    assert menv.resolve_tasks(["MT10"]) == menv.MT10
    assert menv.resolve_tasks(["push-v3", "mt10"]) == [
        "push-v3",
        *[t for t in menv.MT10 if t != "push-v3"],
    ]
    with pytest.raises(ValueError, match="pushh-v3"):
        menv.resolve_tasks("reach-v3,pushh-v3")
    with pytest.raises(ValueError):
        menv.resolve_tasks(" , ")


def test_same_seed_same_episode_and_different_seed_differs() -> None:
    a = mw.collect_episode("push-v3", DEGRADED, seed=5, max_steps=40)
    mw.collect_episode("push-v3", EXPERT, seed=6, max_steps=40)  # the env is reused
    b = mw.collect_episode("push-v3", DEGRADED, seed=5, max_steps=40)
    c = mw.collect_episode("push-v3", DEGRADED, seed=7, max_steps=40)
    assert same(a, b)
    assert not np.array_equal(a.observations[0], c.observations[0])  # another placement
    assert not np.array_equal(a.actions, c.actions)


def test_successes_end_with_the_only_reward_and_failures_are_truncated() -> None:
    win = mw.collect_episode("reach-v3", EXPERT, seed=0, max_steps=150)
    lose = mw.collect_episode("push-v3", mw.PolicySpec("random"), seed=0, max_steps=30)
    assert win.success and win.terminated and not win.truncated
    assert win.rewards[-1] == 1.0 and np.count_nonzero(win.rewards) == 1
    assert win.info["env_steps"] == len(win) < 150 and win.info["success"]
    assert not lose.success and lose.truncated and not lose.terminated
    assert not lose.rewards.any() and len(lose) == 30
    for i, ep in enumerate((win, lose)):
        validate_episode(ep, i, -np.ones(4), np.ones(4), tasks=menv.MT50)
        assert ep.observations.dtype == np.float32 and ep.observations.shape == (len(ep) + 1, 39)
        assert ep.actions.shape == (len(ep), 4) and ep.images is None
        assert ep.instruction == menv.INSTRUCTIONS[ep.task] and ep.kind == ep.info["policy"]["kind"]
        assert set(ep.info) >= {"seed", "policy", "action_repeat", "env_steps", "success"}
        json.dumps(ep.info)


@pytest.mark.parametrize("task", ["reach-v3", "push-v3"])
def test_expert_succeeds_quickly(task: str) -> None:
    episodes = [mw.collect_episode(task, EXPERT, seed=s, max_steps=120) for s in range(3)]
    assert all(ep.success for ep in episodes)


def test_action_repeat_decides_every_k_env_steps() -> None:
    one = mw.collect_episode("push-v3", EXPERT, seed=1, max_steps=150)
    four = mw.collect_episode("push-v3", EXPERT, seed=1, max_steps=150, action_repeat=4)
    assert one.success and four.success
    assert len(four) == math.ceil(four.info["env_steps"] / 4)
    assert 3 <= len(one) / len(four) <= 5
    cut = mw.collect_episode(
        "push-v3", mw.PolicySpec("random"), seed=1, max_steps=10, action_repeat=4
    )
    assert len(cut) == 3 and cut.info["env_steps"] == 10 and cut.truncated


def test_policy_modifiers() -> None:
    obs = mw.collect_episode("push-v3", EXPERT, seed=0, max_steps=1).observations[0]
    obs = obs.astype(np.float64)
    rng = np.random.default_rng(0)
    expert = mw.make_policy("push-v3", EXPERT)(obs, rng)
    slow = mw.make_policy("push-v3", mw.PolicySpec("slow", speed=0.25))(obs, rng)
    np.testing.assert_allclose(slow[:3], 0.25 * expert[:3], atol=1e-12)
    assert slow[3] == expert[3]
    pause = mw.make_policy("push-v3", mw.PolicySpec("hesitant", pause_prob=1.0, pause_len=3))
    assert all(not pause(obs, rng)[:3].any() for _ in range(3))
    for spec in (mw.PolicySpec("random"), mw.PolicySpec("noisy", noise=5.0), DEGRADED):
        policy = mw.make_policy("push-v3", spec)
        actions = np.stack([policy(obs, rng) for _ in range(50)])
        assert np.abs(actions).max() <= 1.0 and actions.std(0).min() > 0.1
    with pytest.raises(ValueError, match="kind"):
        mw.PolicySpec("teleop")
    with pytest.raises(ValueError, match="speed"):
        mw.PolicySpec("slow", speed=0.0)
    assert mw.PolicySpec(**json.loads(json.dumps(asdict(DEGRADED)))) == DEGRADED


def _centroids(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (row, col) of the red robot's pixels and of the brown wooden table's."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    robot = (r > 90) & (g < 40) & (b < 40)
    table = (r > g + 10) & (g > b + 5) & (r < 200) & ~robot
    assert robot.mean() > 0.03 and table.mean() > 0.1
    return np.argwhere(robot).mean(0), np.argwhere(table).mean(0)


def test_images_are_right_way_up_and_not_mirrored() -> None:
    corner = mw.collect_episode("reach-v3", EXPERT, 0, max_steps=3, image_size=64)
    assert corner.images.shape == (4, 64, 64, 3) and corner.images.dtype == np.uint8
    assert corner.info["camera"] == "corner"
    robot, table = _centroids(corner.images[0])
    # Seen from the front-left corner: the table lies below and left of the arm's base.
    assert table[0] > robot[0] + 10 and table[1] < robot[1] - 10
    top = mw.collect_episode("reach-v3", EXPERT, 0, max_steps=3, image_size=64, camera="topview")
    robot, table = _centroids(top.images[0])
    assert robot[0] > table[0] + 10  # from above: the robot stands at the near (bottom) edge
    no_images = mw.collect_episode("reach-v3", EXPERT, 0, max_steps=3)
    np.testing.assert_array_equal(corner.observations, no_images.observations)
    with pytest.raises(ValueError, match="camera"):
        mw.collect_episode("reach-v3", EXPERT, 0, max_steps=3, image_size=64, camera="nope")


def _run_with_egl(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with EGL rendering; it must exit 0."""
    env = {**os.environ, "MUJOCO_GL": "egl"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_collect_with_images_in_egl_worker_processes() -> None:
    code = (
        "from qtransformer import collection as mw\n"
        "if __name__ == '__main__':\n"
        "    item = mw.RecipeItem('reach-v3', mw.PolicySpec('expert'), 2, max_steps=20)\n"
        "    eps = mw.collect([item], seed=0, workers=2, progress=False, image_size=32)\n"
        "    print([ep.images.shape for ep in eps], eps[0].images.dtype)\n"
    )
    out = _run_with_egl(code)
    assert out.stdout.strip() == "[(21, 32, 32, 3), (21, 32, 32, 3)] uint8"


def test_exit_is_quiet_when_egl_is_torn_down_before_our_renderers_close() -> None:
    # The order of exit hooks is not ours to choose: if EGL is gone first, closing the
    # renderers must neither raise nor leave their destructors to print EGL errors.
    code = (
        "from mujoco import egl\n"
        "from qtransformer.envs import metaworld as menv\n"
        "env = menv.MetaWorldTask('reach-v3', image_size=32)\n"
        "env.reset(seed=0)\n"
        "egl.EGL.eglTerminate(egl.EGL_DISPLAY)\n"
        "menv._close_renderers()\n"
        "print(env.renderer._gl_context is None)\n"
    )
    out = _run_with_egl(code)
    assert out.stdout.strip() == "True"
    assert "EGLError" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr


def test_collect_is_deterministic_whatever_the_workers() -> None:
    recipe = mw.preset_recipe("mixed", ["reach-v3", "push-v3"], 3, max_steps=100, calibrate=False)
    serial = mw.collect(recipe, seed=11, workers=1, progress=False)
    parallel = mw.collect(recipe, seed=11, workers=2, progress=False)
    assert len(serial) == len(parallel) == 6
    assert all(same(a, b) for a, b in zip(serial, parallel, strict=True))
    alone = mw.collect(recipe[:2], seed=11, workers=1, progress=False)  # reach-v3 only
    assert all(same(a, b) for a, b in zip(alone, serial[:3], strict=True))
    other = mw.collect(recipe, seed=12, workers=1, progress=False)
    assert not np.array_equal(serial[0].observations[0], other[0].observations[0])
    s = mw.summary(serial)
    assert s["episodes"] == 6 and s["successes"] == 4
    assert s["steps"] == sum(len(ep) for ep in serial) and s["bytes"] > 0
    assert s["per_task"]["push-v3"]["episodes"] == 3
    assert set(s["per_kind"]) == {"demo", "degraded"}
    assert s["per_kind"]["degraded"]["successes"] == 0


@pytest.mark.parametrize(
    "preset,kinds",
    [
        ("demos", {"demo": "success"}),
        ("mixed", {"demo": "success", "degraded": "failure"}),
        ("noisy", {"noisy": "all", "demo": "success"}),
        (
            "suboptimal",
            {
                "demo": "success",
                "slow": "success",
                "hesitant": "success",
                "perturbed": "success",
                "degraded": "failure",
            },
        ),
    ],
)
def test_presets_have_their_kinds_and_keep_rules(preset: str, kinds: dict[str, str]) -> None:
    n = 10 if preset == "noisy" else 5
    recipe = mw.preset_recipe(preset, "reach-v3", n)
    assert {item.spec.kind: item.keep for item in recipe} == kinds
    assert sum(item.count for item in recipe) == n
    assert all(item.max_steps == 200 and item.action_repeat == 1 for item in recipe)
    if preset != "demos":
        noisy = [item.spec.noise for item in recipe if item.spec.kind in ("noisy", "degraded")]
        assert noisy == [mw.NOISE_FOR_40_PERCENT["reach-v3"]]
    episodes = mw.collect(recipe, seed=0, workers=1, progress=False)
    assert [ep.kind for ep in episodes] == [i.spec.kind for i in recipe for _ in range(i.count)]
    for ep in episodes:
        keep = ep.info["keep"]
        assert keep == kinds[ep.kind]
        assert keep == "all" or ep.success == (keep == "success")
    json.dumps([item.as_dict() for item in recipe])


def test_mixed_is_two_demos_to_one_failure() -> None:
    recipe = mw.preset_recipe("mixed", "reach-v3,push-v3", 9)
    counts = [(item.task, item.spec.kind, item.count) for item in recipe]
    assert counts == [
        ("reach-v3", "demo", 6),
        ("reach-v3", "degraded", 3),
        ("push-v3", "demo", 6),
        ("push-v3", "degraded", 3),
    ]
    custom = mw.custom_recipe("reach-v3,push-v3", demos=6, failures=3, demo_noise=0.1)
    assert [(i.task, i.spec, i.count, i.keep) for i in custom] == [
        (i.task, i.spec, i.count, i.keep) for i in recipe
    ]
    with pytest.raises(ValueError, match="preset"):
        mw.preset_recipe("teleop", "reach-v3")


def test_task_env_replays_collection_and_instances_are_independent() -> None:
    ep = mw.collect_episode("reach-v3", EXPERT, seed=5, max_steps=150)
    a = menv.MetaWorldTask("reach-v3", max_steps=150)
    b = menv.MetaWorldTask("reach-v3", max_steps=150)
    obs_a, _ = a.reset(seed=5)
    obs_b, _ = b.reset(seed=6)
    np.testing.assert_array_equal(obs_a, ep.observations[0])
    assert not np.array_equal(obs_a, obs_b)
    # Replaying the recorded actions in one env while stepping the other leaves it unchanged.
    for t, action in enumerate(ep.actions):
        b.step(np.zeros(4, np.float32))
        obs_a, reward, terminated, truncated, info = a.step(action)
        np.testing.assert_allclose(obs_a, ep.observations[t + 1], atol=1e-6)
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        a.step(np.zeros(4, np.float32))


def test_task_env_truncates_at_the_time_limit_with_action_repeat() -> None:
    env = menv.MetaWorldTask("push-v3", max_steps=10, action_repeat=4)
    env.reset(seed=0)
    flags = [env.step(np.zeros(4, np.float32))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    assert env.env_steps == 10


def test_collection_gives_up_with_a_clear_error() -> None:
    never = mw.RecipeItem("reach-v3", EXPERT, count=2, keep="failure", max_steps=120)
    with pytest.raises(mw.CollectionError, match="reach-v3.*3 attempts"):
        mw.collect([never], seed=0, workers=1, progress=False, max_attempts_factor=1.5)


def test_noise_table_and_fallback(caplog) -> None:
    assert set(menv.MT10) <= set(mw.NOISE_FOR_40_PERCENT)
    assert mw.noise_for_task("push-v3") == mw.NOISE_FOR_40_PERCENT["push-v3"]
    with caplog.at_level(logging.WARNING):
        assert mw.noise_for_task("assembly-v3", calibrate=False) == mw.FALLBACK_NOISE
        assert mw.noise_for_task("push-v3", max_steps=100, calibrate=False) == pytest.approx(
            mw.NOISE_FOR_40_PERCENT["push-v3"]
        )
    assert "assembly-v3" in caplog.text and "push-v3" in caplog.text


def test_logistic_fit_finds_the_crossing() -> None:
    rng = np.random.default_rng(0)
    x = np.repeat(np.linspace(-1.0, 2.0, 7), 400)
    p = 1 / (1 + np.exp(-(3.0 - 4.0 * x)))  # p = 0.4 at x = (3 + log(1.5)) / 4
    y = (rng.random(x.size) < p).astype(float)
    assert mw.noise._fit_crossing(x, y, 0.4) == pytest.approx((3 + math.log(1.5)) / 4, abs=0.03)
    assert mw.noise._fit_crossing(x, 1 - y, 0.4) is None  # success rising with noise: no answer


def test_calibrate_noise_lands_in_range() -> None:
    noise = mw.calibrate_noise("reach-v3", episodes=6, iterations=2, max_steps=80)
    assert 0.05 <= noise <= 8.0
