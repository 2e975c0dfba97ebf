"""The pretrained image encoder: ImageNet EfficientNet-Lite0, a frozen prefix, FiLM after every
trained block, a few tokens per frame.

Blocks ``0 .. frozen_blocks - 1`` (and the stem) keep their ImageNet weights and are never
trained, and nothing modulates them, so their output is a function of the frame alone: training
computes it once per frame of the dataset (:meth:`PretrainedImageEncoder.prefix`) and reads it
from that cache, which is what makes the trunk affordable on a CPU. Blocks
``frozen_blocks .. last_block`` start from ImageNet too and are fine-tuned (at a smaller
learning rate, ``TrainConfig.image_trunk_lr_scale``), each followed by FiLM from the
instruction embedding (identity at initialization); a 1x1 projection to ``d_model`` and an
adaptive average pool to a ``token_grid(tokens_per_frame)`` grid make the tokens. BatchNorm
statistics are frozen everywhere, so the online and target networks and every data-parallel
shard compute the same function of a frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qtransformer.encoders.efficientnet import (
    NUM_BLOCKS,
    EfficientNetLite0,
    block_channels,
    feature_size,
)
from qtransformer.encoders.image import FiLM, token_grid


class PretrainedImageEncoder(nn.Module):
    """uint8 frames ``(B, w, H, W, C)``, or cached prefix features ``(B, w, C', h, w')``,
    -> ``(B, w * tokens_per_frame, d_model)``.

    Args:
        image_shape: ``(H, W, 3)`` of one frame.
        d_model: Token width.
        tokens_per_frame: Tokens each frame becomes.
        cond_dim: Size of the conditioning vector; 0 builds no FiLM layers.
        frozen_blocks: Blocks run frozen and unmodulated (cacheable), 1..last_block + 1;
            the stem is always frozen.
        last_block: Last block run (0..15); later blocks and the 1280-wide head are dropped.
        feature_norm: Standardize the trunk's output per channel and position with the
            training frames' statistics (:meth:`fit_feature_norm`) before the projection, as
            state vectors are: ImageNet's BatchNorm statistics leave the few features that
            vary between frames of one scene (the arm, the object) small beside constant ones.
    """

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(
        self,
        image_shape: Sequence[int],
        d_model: int,
        tokens_per_frame: int = 4,
        cond_dim: int = 0,
        frozen_blocks: int = 11,
        last_block: int = 15,
        feature_norm: bool = False,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or int(image_shape[2]) != 3:
            raise ValueError(
                f"the pretrained encoder reads RGB frames (H, W, 3), got {tuple(image_shape)}"
            )
        if not 0 <= last_block < NUM_BLOCKS:
            raise ValueError(f"image_last_block must be in [0, {NUM_BLOCKS - 1}], got {last_block}")
        if not 1 <= frozen_blocks <= last_block + 1:
            raise ValueError(
                f"image_frozen_blocks must be in [1, image_last_block + 1 = {last_block + 1}], "
                f"got {frozen_blocks}"
            )
        self.image_shape = tuple(int(s) for s in image_shape)
        self.tokens_per_frame = tokens_per_frame
        self.grid = token_grid(tokens_per_frame)
        self.frozen_blocks = frozen_blocks
        self.last_block = last_block
        self.trunk = EfficientNetLite0(classifier=False)
        del self.trunk.blocks[last_block + 1 :]
        self.trunk.head = None  # type: ignore[assignment]
        for module in (self.trunk.stem, *self.trunk.blocks[:frozen_blocks]):
            module.requires_grad_(False)
        channels = block_channels()
        self.film: nn.ModuleList | None = None
        if cond_dim > 0:
            self.film = nn.ModuleList(
                FiLM(cond_dim, channels[i]) for i in range(frozen_blocks, last_block + 1)
            )
        self.proj = nn.Conv2d(channels[last_block], d_model, 1)
        H, W = self.image_shape[:2]
        self.feature_norm = feature_norm
        if feature_norm:
            shape = (channels[last_block], *feature_size((H, W), last_block))
            self.register_buffer("feature_mean", torch.zeros(shape))
            self.register_buffer("feature_std", torch.ones(shape))
        self.prefix_shape = (channels[frozen_blocks - 1], *feature_size((H, W), frozen_blocks - 1))
        """``(C', h, w')`` of the frozen prefix's output for one frame (what a cache holds)."""

    def load_pretrained(self) -> None:
        """Load the ImageNet weights (strictly) into the trunk's kept blocks.

        Raises:
            ModuleNotFoundError: without the optional package of the weights.
        """
        full = EfficientNetLite0.pretrained(classifier=False)
        kept = {k: v for k, v in full.state_dict().items() if k in self.trunk.state_dict()}
        self.trunk.load_state_dict(kept, strict=True)

    def reset_film(self) -> None:
        """Put every FiLM layer back to the identity (the model calls this after its own init)."""
        if self.film is not None:
            for layer in self.film:
                layer.reset_parameters()  # type: ignore[operator]

    def trunk_parameters(self) -> list[nn.Parameter]:
        """The fine-tuned pretrained blocks' parameters (trained at a smaller rate)."""
        return [p for p in self.trunk.parameters() if p.requires_grad]

    @torch.no_grad()
    def prefix(self, frames: torch.Tensor) -> torch.Tensor:
        """The frozen part on uint8 frames ``(N, H, W, 3)`` -> ``(N, *prefix_shape)``."""
        x = self.trunk.run_stem(frames)  # (N, 32, H/2, W/2)
        return self.trunk.run_blocks(x, 0, self.frozen_blocks)  # (N, C', h, w')

    def cache(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """The prefix of every frame of a dataset: uint8 ``(T, H, W, 3)`` (a memory map is
        read in chunks) -> float32 ``(T, *prefix_shape)``, computed on this module's device.

        float32, the precision acting computes the prefix in, so training sees exactly the
        features the agent will see.
        """
        device = self.proj.weight.device
        out = np.empty((len(frames), *self.prefix_shape), np.float32)
        for start in range(0, len(frames), batch):
            chunk = torch.from_numpy(np.array(frames[start : start + batch]))  # a writable copy
            out[start : start + len(chunk)] = self.prefix(chunk.to(device)).float().cpu().numpy()
        return out

    @torch.no_grad()
    def fit_feature_norm(self, prefix: np.ndarray, max_frames: int = 4096) -> None:
        """Set the output standardization (``feature_norm=True``) from cached prefix features
        ``(T, *prefix_shape)`` of the training frames: the trainable blocks (FiLM at its
        identity) run on at most ``max_frames`` evenly spaced frames, then the mean and the
        standard deviation of each channel and position are kept. A deviation below a tenth
        of the median one is raised to it, so that a feature nearly constant in the data
        does not blow up on a new frame."""
        if not self.feature_norm:
            raise ValueError("this encoder was built without feature_norm")
        device = self.proj.weight.device
        rows = np.linspace(0, len(prefix) - 1, min(len(prefix), max_frames)).astype(np.int64)
        outs = []
        for start in range(0, len(rows), 256):
            x = torch.from_numpy(np.asarray(prefix[rows[start : start + 256]])).to(device)
            outs.append(self.trunk.run_blocks(x, self.frozen_blocks, self.last_block + 1))
        feats = torch.cat(outs).double()
        std = feats.std(0)
        floor = 0.1 * std.median().clamp_min(1e-6)
        self.feature_mean.copy_(feats.mean(0).float())
        self.feature_std.copy_(std.clamp_min(floor).float())

    def check(self, images: torch.Tensor, window: int) -> None:
        """Raise a ValueError naming the expected shape and dtype of a window of frames."""
        H, W, C = self.image_shape
        if images.dtype == torch.uint8:
            if images.dim() != 5 or tuple(images.shape[1:]) != (window, H, W, C):
                raise ValueError(
                    f"images must have shape (B, window={window}, {H}, {W}, {C}), "
                    f"got {tuple(images.shape)}"
                )
            return
        if images.dim() != 5 or tuple(images.shape[1:]) != (window, *self.prefix_shape):
            raise ValueError(
                f"images must be uint8 (B, window={window}, {H}, {W}, {C}) frames or cached "
                f"features (B, {window}, {', '.join(map(str, self.prefix_shape))}), got "
                f"{images.dtype} {tuple(images.shape)}"
            )

    def forward(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B, w = images.shape[:2]
        self.check(images, w)
        if images.dtype == torch.uint8:
            x = self.prefix(images.reshape(B * w, *self.image_shape))  # (B w, C', h, w')
        else:
            x = images.reshape(B * w, *self.prefix_shape)
        # Channels-last: the CPU's convolution kernels (forward and backward) run about 1.2x
        # faster on the fine-tuned blocks' small maps (benchmarks/pixel_speed.py); the values
        # are the same, only the memory order changes.
        x = x.to(self.proj.weight.dtype).contiguous(memory_format=torch.channels_last)
        c = None
        if self.film is not None:
            if cond is None:
                raise ValueError("this encoder is FiLM-conditioned: pass cond (B, cond_dim)")
            c = cond.repeat_interleave(w, dim=0)  # (B w, cond_dim)
        film = None
        if self.film is not None and c is not None:
            layers, first, cond_rows = self.film, self.frozen_blocks, c

            def film(i: int, y: torch.Tensor) -> torch.Tensor:
                return layers[i - first](y, cond_rows)  # (B w, C_i, h_i, w_i)

        x = self.trunk.run_blocks(x, self.frozen_blocks, self.last_block + 1, film)
        if self.feature_norm:
            x = (x - self.feature_mean) / self.feature_std
        x = F.adaptive_avg_pool2d(self.proj(x), self.grid)  # (B w, D, rows, cols)
        tokens = x.flatten(2).transpose(1, 2)  # (B w, k, D)
        return tokens.reshape(B, w * self.tokens_per_frame, -1)
