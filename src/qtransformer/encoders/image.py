"""FiLM-conditioned EfficientNet-style image encoder: a window of frames -> a few tokens each.

Camera frames of the last w steps pass through a convolutional network whose every block is
modulated by the instruction (FiLM), and each frame is reduced to a few tokens for the
Transformer (docs/design.md, 'Pixels and instructions'). Blocks are MBConv (inverted
residual with squeeze-and-excitation), as in EfficientNet, with GroupNorm instead of
BatchNorm: batch statistics would differ between the online and target networks, between
training and acting with one environment, and across data-parallel shards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

EXPAND_RATIO = 4
"""Hidden width of an MBConv block relative to its input (EfficientNet uses 6; 4 is lighter)."""


def _norm(channels: int) -> nn.GroupNorm:
    # At most 8 groups, and a count that divides the channels.
    return nn.GroupNorm(math.gcd(8, channels), channels)


def token_grid(tokens: int) -> tuple[int, int]:
    """The most nearly square ``(rows, cols)`` grid with ``rows * cols == tokens``."""
    if tokens < 1:
        raise ValueError(f"tokens per frame must be at least 1, got {tokens}")
    rows = max(d for d in range(1, math.isqrt(tokens) + 1) if tokens % d == 0)
    return rows, tokens // rows


class FiLM(nn.Module):
    """Feature-wise linear modulation ``x * (1 + gamma(c)) + beta(c)`` per channel.

    Both maps start at zero, so a fresh encoder is the unconditioned one and the instruction
    learns how much to bend each block: random early modulation would only add noise to
    features that are themselves still random.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Linear(cond_dim, channels)
        self.beta = nn.Linear(cond_dim, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in (self.gamma, self.beta):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma(cond)[:, :, None, None]  # (N, C, 1, 1)
        beta = self.beta(cond)[:, :, None, None]
        return x * (1 + gamma) + beta


class SqueezeExcite(nn.Module):
    """Channel attention from globally pooled features (EfficientNet's SE, ratio 1/4)."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class MBConv(nn.Module):
    """1x1 expand, depthwise 3x3 (with stride), squeeze-excite, 1x1 project; residual when
    the shape is kept."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        hidden = c_in * EXPAND_RATIO
        self.expand = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), _norm(hidden), nn.SiLU()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False),
            _norm(hidden),
            nn.SiLU(),
        )
        self.se = SqueezeExcite(hidden, max(1, c_in // 4))
        self.project = nn.Sequential(nn.Conv2d(hidden, c_out, 1, bias=False), _norm(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class ImageEncoder(nn.Module):
    """uint8 frames ``(B, w, H, W, C)`` -> ``(B, w * tokens_per_frame, d_model)``.

    A stride-2 stem, then one stride-2 MBConv block per further width in ``channels``, each
    followed by FiLM from the conditioning vector (instruction embedding or task code) when
    ``cond_dim > 0``; then a 1x1 projection to ``d_model`` and an adaptive average pool to a
    ``token_grid(tokens_per_frame)`` grid, each cell one token. The tokens of a frame stay in
    row-major grid order, so the Transformer's position embedding tells them apart.

    Args:
        image_shape: ``(H, W, C)`` of one frame.
        d_model: Token width.
        tokens_per_frame: Tokens each frame becomes.
        channels: Stem width, then the output width of each MBConv block.
        cond_dim: Size of the conditioning vector; 0 (single task) builds no FiLM layers.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        d_model: int,
        tokens_per_frame: int = 4,
        channels: Sequence[int] = (16, 32, 48, 64),
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
        if len(channels) < 1 or min(channels) < 1:
            raise ValueError(f"channels must be one or more positive widths, got {channels}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.tokens_per_frame = tokens_per_frame
        self.grid = token_grid(tokens_per_frame)
        c_img = self.image_shape[2]
        self.stem = nn.Sequential(
            nn.Conv2d(c_img, channels[0], 3, stride=2, padding=1, bias=False),
            _norm(channels[0]),
            nn.SiLU(),
        )
        self.blocks = nn.ModuleList(
            MBConv(c_in, c_out, stride=2)
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        self.film: nn.ModuleList | None = None
        if cond_dim > 0:
            self.film = nn.ModuleList(FiLM(cond_dim, c) for c in channels[1:])
        self.proj = nn.Conv2d(channels[-1], d_model, 1)

    def reset_film(self) -> None:
        """Put every FiLM layer back to the identity (the model calls this after its own init)."""
        if self.film is not None:
            for layer in self.film:
                layer.reset_parameters()  # type: ignore[operator]

    def check(self, images: torch.Tensor, window: int) -> None:
        """Raise a ValueError naming the expected shape and dtype of a window of frames."""
        H, W, C = self.image_shape
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (0..255), got {images.dtype}")
        if images.dim() != 5 or tuple(images.shape[1:]) != (window, H, W, C):
            raise ValueError(
                f"images must have shape (B, window={window}, {H}, {W}, {C}), "
                f"got {tuple(images.shape)}"
            )

    def forward(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B, w = images.shape[:2]
        self.check(images, w)
        x = images.reshape(B * w, *self.image_shape).permute(0, 3, 1, 2)  # (B w, C, H, W)
        x = x.to(self.proj.weight.dtype) / 255.0 - 0.5  # the network's float type
        c = None
        if self.film is not None:
            if cond is None:
                raise ValueError("this encoder is FiLM-conditioned: pass cond (B, cond_dim)")
            c = cond.repeat_interleave(w, dim=0)  # (B w, cond_dim)
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.film is not None and c is not None:
                x = self.film[i](x, c)
        x = F.adaptive_avg_pool2d(self.proj(x), self.grid)  # (B w, D, rows, cols)
        tokens = x.flatten(2).transpose(1, 2)  # (B w, k, D)
        return tokens.reshape(B, w * self.tokens_per_frame, -1)


def random_shift(
    images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift each sample's frames by up to ``pad`` pixels (replicate-pad, then random crop).

    Every frame of a sample's window gets the same shift, so motion between frames is kept.
    Equivalent to padding by replicating the border and cropping back at a random offset; done
    by clamped indexing, which keeps the dtype (uint8 stays uint8) and needs no padded copy.
    Offsets are drawn on the CPU (from ``generator``, else the global RNG, which training
    checkpoints restore), so a resumed run shifts exactly as an uninterrupted one.

    Args:
        images: ``(B, w, H, W, C)`` or ``(B, H, W, C)`` frames, any dtype.
        pad: Largest shift in pixels; 0 returns the input.
        generator: Optional CPU generator for the offsets.

    Returns:
        Shifted frames, same shape, dtype and device.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if images.dim() not in (4, 5):
        raise ValueError(
            f"images must have shape (B, H, W, C) or (B, w, H, W, C), got {tuple(images.shape)}"
        )
    if pad == 0:
        return images
    x = images if images.dim() == 5 else images[:, None]
    B, _, H, W, _ = x.shape
    shift = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator) - pad
    shift = shift.to(x.device)
    rows = (torch.arange(H, device=x.device)[None] + shift[:, :1]).clamp(0, H - 1)  # (B, H)
    cols = (torch.arange(W, device=x.device)[None] + shift[:, 1:]).clamp(0, W - 1)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    # Indexing (B, H, W, w, C) with (b, rows, cols) broadcast to (B, H, W) picks the pixels.
    out = x.permute(0, 2, 3, 1, 4)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, w, C)
    out = out.permute(0, 3, 1, 2, 4)
    return out if images.dim() == 5 else out[:, 0]
