"""Baselines from pixels through the frozen pretrained trunk.

d3rlpy's algorithms read vectors. :func:`train_on_frozen_features` gives them the pixels the
way Q-Transformer's ``lite0`` encoder first sees them: each frame through the ImageNet
EfficientNet-Lite0 blocks that Q-Transformer keeps frozen (the same blocks, the same weights),
flattened, with the task's one-hot code appended as for any multi-task baseline. Only the
blocks Q-Transformer fine-tunes and the FiLM from the instruction are missing: the baseline
gets the frozen trunk, not ours. :class:`FrozenFeaturePolicy` renders and encodes frames the
same way when it acts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from qtransformer.agent import InstructionArg, TaskArg
from qtransformer.baselines.policies import BaselinePolicy
from qtransformer.baselines.training import train_baseline
from qtransformer.data.dataset import OfflineDataset
from qtransformer.encoders.pretrained import PretrainedImageEncoder
from qtransformer.policy import Observes


def frozen_trunk(image_shape: tuple[int, int, int], frozen_blocks: int) -> PretrainedImageEncoder:
    """The ImageNet trunk's first ``frozen_blocks`` blocks (the rest is never run here)."""
    encoder = PretrainedImageEncoder(
        image_shape, 8, 1, 0, frozen_blocks=frozen_blocks, last_block=frozen_blocks - 1
    )
    encoder.load_pretrained()
    return encoder.eval()


class FrozenFeaturePolicy:
    """A baseline trained on frozen-trunk features, acting on rendered frames.

    Args:
        inner: The baseline, trained on the flattened features.
        trunk: The frozen trunk that made them.
        camera: Camera of the training frames.
    """

    def __init__(self, inner: BaselinePolicy, trunk: PretrainedImageEncoder, camera: str) -> None:
        self.inner = inner
        self.trunk = trunk
        self.camera = camera

    @property
    def observes(self) -> Observes:
        return Observes(
            observation="image",
            image_size=self.trunk.image_shape[0],
            camera=self.camera,
            env=self.inner.env,
        )

    def reset(self, num_envs: int) -> None:
        self.inner.reset(num_envs)

    def act(
        self, observations: Any, task: TaskArg = None, instruction: InstructionArg = None
    ) -> np.ndarray:
        if not isinstance(observations, dict) or "image" not in observations:
            raise ValueError("this policy reads frames: pass {'image': uint8 (B, H, W, 3)}")
        frames = torch.from_numpy(np.ascontiguousarray(observations["image"]))
        features = self.trunk.prefix(frames).flatten(1).numpy()  # (B, C h w)
        return self.inner.act(features, task=task, instruction=instruction)


def train_on_frozen_features(
    name: str,
    data: OfflineDataset,
    steps: int,
    frozen_blocks: int,
    seed: int = 0,
    trunk_out: list[PretrainedImageEncoder] | None = None,
    **kw: Any,
) -> FrozenFeaturePolicy:
    """Train the d3rlpy baseline ``name`` on the frozen-trunk features of ``data``'s frames.

    Args:
        name: A key of :data:`~qtransformer.baselines.BASELINES`.
        data: Episodes with frames.
        steps: Gradient steps.
        frozen_blocks: Trunk blocks to run (Q-Transformer's ``image_frozen_blocks``).
        seed: Training seed.
        trunk_out: If given, the trunk is appended to it before training starts (for a
            ``callback`` in ``kw`` that wraps the baseline to evaluate it along the way).
        kw: Passed to :func:`~qtransformer.baselines.train_baseline`.

    Raises:
        ValueError: when ``data`` has no frames.
    """
    if data.images is None:
        raise ValueError("the dataset has no images to encode (collect with --image-size 64)")
    shape = tuple(int(s) for s in data.images.shape[1:])
    trunk = frozen_trunk(shape, frozen_blocks)  # type: ignore[arg-type]
    if trunk_out is not None:
        trunk_out.append(trunk)
    features = trunk.cache(data.images).reshape(len(data), -1)  # (T, C h w)
    vectors = OfflineDataset(
        features,
        np.asarray(data.actions),
        np.asarray(data.rewards),
        np.asarray(data.terminals),
        np.asarray(data.timeouts),
        data.action_low,
        data.action_high,
        np.asarray(data.task_ids),
        data.tasks,
        data.instructions,
        metadata=data.metadata,
    )
    inner = train_baseline(name, vectors, steps, seed=seed, **kw)
    assert isinstance(inner, BaselinePolicy)
    return FrozenFeaturePolicy(inner, trunk, str(data.metadata.get("camera") or "corner"))
