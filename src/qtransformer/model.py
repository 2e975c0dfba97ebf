"""The autoregressive Q network (docs/design.md, 'Tokens and the network').

It knows nothing of losses. Token sequence for one sample:

    [task] [frame_1 tokens] .. [frame_w tokens] [start] [bin of dim 1] ... [bin of dim dA-1]
                                                   |          |                    |
                                                 Q dim 1    Q dim 2      ...     Q dim dA

where a frame is ``[image tokens] [state token]``, either part optional
(``ModelConfig.observation``). A causal mask lets the output at action token i see the
observations and the bins of dims < i only, so one teacher-forced pass gives every
dimension's Q at once, and greedy decoding can reuse the attention cache: one pass over the
prefix, then one token per dim.

Conditioning (multi-task data, or instructions) is a feature vector per sample: a one-hot
task code or an instruction embedding. Callers give either task indices into the model's
fixed task feature table, or the vectors themselves (an instruction never seen in training).
The vector is projected to the task token and, for image models, modulates every block of
the image encoder (FiLM).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from qtransformer.encoders import ImageEncoder, StateEncoder
from qtransformer.encoders.pretrained import PretrainedImageEncoder

ObservationKind = Literal["state", "image", "both"]
TaskFeatures = Literal["onehot", "instruction"]
ImageEncoderKind = Literal["scratch", "lite0"]
IMAGE_ENCODERS = ("scratch", "lite0")
OBSERVATION_KINDS = ("state", "image", "both")

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the Q network."""

    obs_dim: int
    """Length of a state observation vector."""
    action_dim: int
    """Number of action dimensions dA."""
    n_bins: int = 256
    """Bins per action dimension N."""
    window: int = 1
    """Number of past observations w the network reads."""
    d_model: int = 128
    """Width of the Transformer."""
    n_layers: int = 2
    """Number of Transformer blocks."""
    n_heads: int = 4
    """Attention heads per block."""
    dropout: float = 0.0
    """Dropout inside the Transformer (training only)."""
    q_heads: int = 1
    """Independent Q output heads; 2 enables clipped double Q (min over heads)."""
    n_tasks: int = 1
    """Number of tasks (rows of the task feature table)."""
    task_dim: int = 0
    """Size of a task's feature vector (one-hot or instruction embedding); 0: no task token."""
    task_features: TaskFeatures = "onehot"
    """What the task feature table holds: one-hot task codes or instruction embeddings."""
    observation: ObservationKind = "state"
    """What a frame is made of: the state vector, the camera image, or both."""
    image_shape: tuple[int, int, int] | None = None
    """``(H, W, C)`` of a camera frame; required when images are observed."""
    image_tokens: int = 4
    """Tokens per camera frame (an adaptive average pool to a near-square grid)."""
    image_channels: tuple[int, ...] = (16, 32, 48, 64)
    """Image encoder widths: the stem's, then one stride-2 MBConv block per further entry."""
    image_encoder: ImageEncoderKind = "scratch"
    """'scratch' (:class:`ImageEncoder`) or 'lite0' (:class:`PretrainedImageEncoder`)."""
    image_frozen_blocks: int = 11
    """'lite0': blocks run frozen and unmodulated (cacheable)."""
    image_last_block: int = 15
    """'lite0': last EfficientNet block used."""
    image_feature_norm: bool = False
    """'lite0': standardize the trunk's output with the training frames' statistics."""

    def __post_init__(self) -> None:
        # JSON gives lists back; the config is frozen and compared, so store tuples.
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        object.__setattr__(self, "image_channels", tuple(int(c) for c in self.image_channels))
        if self.observation not in OBSERVATION_KINDS:
            raise ValueError(
                f"observation must be one of {OBSERVATION_KINDS}, got {self.observation!r}"
            )
        if self.uses_images and (self.image_shape is None or len(self.image_shape) != 3):
            raise ValueError(
                f"observation={self.observation!r} needs image_shape (H, W, C), "
                f"got {self.image_shape}"
            )
        if self.task_features not in ("onehot", "instruction"):
            raise ValueError(
                f"task_features must be 'onehot' or 'instruction', got {self.task_features!r}"
            )

    @property
    def uses_images(self) -> bool:
        return self.observation in ("image", "both")

    @property
    def uses_state(self) -> bool:
        return self.observation in ("state", "both")

    @property
    def tokens_per_frame(self) -> int:
        image = self.image_tokens if self.uses_images else 0
        return image + int(self.uses_state) * StateEncoder.tokens_per_frame

    @property
    def prefix_len(self) -> int:
        """Tokens before the start token: the task token (if any) and the frames."""
        return int(self.task_dim > 0) + self.window * self.tokens_per_frame

    @property
    def seq_len(self) -> int:
        return self.prefix_len + self.action_dim


def _short_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float
) -> torch.Tensor:
    """Causal attention written out with broadcasts, for ``torch.compile``: the queries are
    the last ``L`` of the ``S`` positions. Our sequences are a few tokens long, where the
    attention kernel pays for one tiny matrix product per sample and head; compiled, these
    broadcasts become one loop (about twice as fast forward and backward on the CPU)."""
    L, S, hd = q.shape[2], k.shape[2], q.shape[3]
    scores = (q[:, :, :, None] * k[:, :, None]).sum(-1) * hd**-0.5  # (B, h, L, S)
    keep = torch.ones(L, S, dtype=torch.bool, device=q.device).tril(S - L)
    weights = F.dropout(scores.masked_fill(~keep, float("-inf")).softmax(-1), dropout)
    return (weights[..., None] * v[:, :, None]).sum(-2)  # (B, h, L, hd)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model={cfg.d_model} must be divisible by n_heads={cfg.n_heads}")
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, h, P + L, hd)
            v = torch.cat([past[1], v], dim=2)
        p = self.dropout if self.training else 0.0
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # The CPU's bfloat16 attention kernel is slower than its float32 one (about 2.5x
            # at these sizes, benchmarks/op_profile.py); scores are few, so they stay float32.
            q, k, v = q.float(), k.float(), v.float()
        if torch.compiler.is_compiling():
            y = _short_attention(q, k, v, p)
        elif past is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        elif L == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            offset = k.shape[2] - L
            mask = torch.ones(L, k.shape[2], dtype=torch.bool, device=x.device).tril(offset)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        return self.proj(y), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model),
            nn.GELU(),
            nn.Linear(4 * cfg.d_model, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, kv = self.attn(self.ln1(x), past)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class QTransformer(nn.Module):
    """Q(s_{t-w+1:t}, a^{1:i-1}, a^i = b) for every dimension i and bin b, in [0, 1].

    Values are normalized: callers scale by the value bound ``q_max`` (docs/design.md,
    'Value range'); with sparse rewards in {0, 1} that bound is 1.
    """

    task_table: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Named `encoder` as before images existed, so saved state models still load.
        self.encoder: StateEncoder | None = None
        if cfg.uses_state:
            self.encoder = StateEncoder(cfg.obs_dim, cfg.d_model)
        self.task_proj: nn.Linear | None = None
        if cfg.task_dim > 0:
            self.register_buffer("task_table", torch.eye(cfg.n_tasks, cfg.task_dim))
            self.task_proj = nn.Linear(cfg.task_dim, cfg.d_model)
        self.start = nn.Parameter(torch.zeros(cfg.d_model))
        # Bin b of dim i feeds token i + 1; every dimension has its own bin vocabulary.
        self.bin_embed = nn.Embedding(cfg.action_dim * cfg.n_bins, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(cfg.seq_len, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.q_heads * cfg.n_bins)
        # Built last, so a state-only network draws the same initial weights as ever.
        self.image_encoder: ImageEncoder | PretrainedImageEncoder | None = None
        if cfg.uses_images and cfg.image_encoder == "lite0":
            assert cfg.image_shape is not None  # checked by ModelConfig
            # Random weights here; the learner loads ImageNet's before training, and a saved
            # agent's come from its own file, so acting needs no weights package.
            self.image_encoder = PretrainedImageEncoder(
                cfg.image_shape,
                cfg.d_model,
                cfg.image_tokens,
                cfg.task_dim,
                cfg.image_frozen_blocks,
                cfg.image_last_block,
                cfg.image_feature_norm,
            )
        elif cfg.uses_images:
            assert cfg.image_shape is not None  # checked by ModelConfig
            self.image_encoder = ImageEncoder(
                cfg.image_shape, cfg.d_model, cfg.image_tokens, cfg.image_channels, cfg.task_dim
            )
        self.apply(self._init)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.start, std=0.02)
        for name, p in self.named_parameters():
            if name.startswith("image_encoder."):
                continue  # convolutions keep their own init
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))
        if self.image_encoder is not None:
            self.image_encoder.reset_film()  # identity at init, as the FiLM docstring says

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def _check_obs(self, obs: torch.Tensor | None) -> None:
        if obs is None:
            raise ValueError(
                f"this model reads state vectors (observation={self.cfg.observation!r}): "
                f"pass obs (B, window={self.cfg.window}, {self.cfg.obs_dim})"
            )
        if obs.dim() != 3 or obs.shape[1] != self.cfg.window:
            raise ValueError(
                f"observations must have shape (B, window={self.cfg.window}, obs_dim), "
                f"got {tuple(obs.shape)}"
            )

    def _bin_tokens(self, bins: torch.Tensor, first_dim: int) -> torch.Tensor:
        """Embed bins of dims first_dim.. as the inputs of the following action tokens."""
        dims = torch.arange(first_dim, first_dim + bins.shape[1], device=bins.device)
        return self.bin_embed(dims * self.cfg.n_bins + bins)  # (B, k, D)

    def set_task_features(self, features: torch.Tensor) -> None:
        """Set the task feature table ``(n_tasks, task_dim)`` (instruction embeddings)."""
        if self.task_proj is None:
            raise ValueError("this model has no task token (task_dim = 0)")
        if tuple(features.shape) != tuple(self.task_table.shape):
            raise ValueError(
                f"task features must have shape {tuple(self.task_table.shape)}, "
                f"got {tuple(features.shape)}"
            )
        self.task_table.copy_(features)

    def task_vectors(self, task: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Conditioning vectors ``(B, task_dim)`` from task indices ``(B,)`` or the vectors
        themselves ``(B, task_dim)``; None when the model has no task token."""
        if self.task_proj is None:
            return None
        c = self.cfg
        if task is None:
            raise ValueError(f"this model is conditioned on {c.n_tasks} tasks: pass task")
        if not task.is_floating_point():
            if task.shape != (batch,):
                raise ValueError(
                    f"task indices must have shape ({batch},), got {tuple(task.shape)}"
                )
            return self.task_table[task]  # (B, task_dim)
        if task.shape != (batch, c.task_dim):
            raise ValueError(
                f"task feature vectors must have shape ({batch}, task_dim={c.task_dim}), "
                f"got {tuple(task.shape)}"
            )
        return task.to(self.task_table.dtype)

    def _frames(
        self, obs: torch.Tensor | None, images: torch.Tensor | None, cond: torch.Tensor | None
    ) -> torch.Tensor:
        """Observation tokens, frame by frame: ``(B, w * tokens_per_frame, D)``."""
        c = self.cfg
        parts = []
        if self.image_encoder is not None:
            if images is None:
                raise ValueError(
                    f"this model reads images (observation={c.observation!r}): pass images "
                    f"(B, window={c.window}, H, W, C) uint8"
                )
            self.image_encoder.check(images, c.window)
            tok = self.image_encoder(images, cond)  # (B, w k, D)
            parts.append(tok.view(tok.shape[0], c.window, c.image_tokens, -1))
        if self.encoder is not None:
            self._check_obs(obs)
            assert obs is not None
            parts.append(self.encoder(obs)[:, :, None])  # (B, w, 1, D)
        x = torch.cat(parts, dim=2)  # (B, w, tokens_per_frame, D)
        return x.flatten(1, 2)

    @staticmethod
    def _batch_size(obs: torch.Tensor | None, images: torch.Tensor | None) -> int:
        ref = images if images is not None else obs
        if ref is None:
            raise ValueError("pass observations: obs (B, w, obs_dim) and/or images")
        return int(ref.shape[0])

    def _prefix(
        self,
        obs: torch.Tensor | None,
        task: torch.Tensor | None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[task] + observation tokens + the start token, with positions. (B, P + 1, D)"""
        B = self._batch_size(obs, images)
        cond = self.task_vectors(task, B)
        parts = [self._frames(obs, images, cond), self.start.expand(B, 1, -1)]
        if self.task_proj is not None and cond is not None:
            parts.insert(0, self.task_proj(cond)[:, None])
        x = torch.cat(parts, dim=1)
        return x + self.pos[: x.shape[1]]

    def _run(self, x: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        x = self.drop(x)
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.ln_f(x), new_cache

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """(B, L, D) hidden states -> (B, q_heads, L, N) logits."""
        B, L, _ = h.shape
        # float32 whatever the autocast precision: bins' Q-values near 1 differ by less than
        # bfloat16 resolves after the sigmoid.
        z = self.head(h).float()
        return z.view(B, L, self.cfg.q_heads, self.cfg.n_bins).transpose(1, 2)

    def _q(self, h: torch.Tensor) -> torch.Tensor:
        """(B, L, D) hidden states -> (B, q_heads, L, N) normalized Q-values."""
        return torch.sigmoid(self._logits(h))

    def forward(
        self,
        obs: torch.Tensor | None,
        bins: torch.Tensor,
        task: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        logits: bool = False,
    ) -> torch.Tensor:
        """Teacher-forced Q for every dimension.

        Args:
            obs: ``(B, w, obs_dim)`` state windows (None for an image-only model).
            bins: ``(B, dA)`` bins taken; only dims ``< dA - 1`` are read.
            task: ``(B,)`` task indices or ``(B, task_dim)`` feature vectors (required when
                the model has a task token).
            images: ``(B, w, H, W, C)`` uint8 frames (required when the model reads images).
            logits: Return the head's logits instead of Q (for the behaviour-cloning loss).

        Returns:
            ``(B, q_heads, dA, N)``: row i holds Q(s, bins[:, :i], a^i = b) for every b.
        """
        P = self.cfg.prefix_len
        x = self._prefix(obs, task, images)
        if self.cfg.action_dim > 1:
            tail = self._bin_tokens(bins[:, :-1], 0) + self.pos[P + 1 :]
            x = torch.cat([x, tail], dim=1)  # (B, P + dA, D)
        h, _ = self._run(x)
        out = self._logits(h[:, P:])  # (B, H, dA, N)
        return out if logits else torch.sigmoid(out)

    def first_dim_q(
        self,
        obs: torch.Tensor | None,
        task: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Q of every bin of dim 1 only, ``(B, q_heads, N)``: the bootstrap value at s'."""
        h, _ = self._run(self._prefix(obs, task, images))
        return self._q(h[:, -1:])[:, :, 0]

    @torch.no_grad()
    def greedy(
        self,
        obs: torch.Tensor | None,
        task: torch.Tensor | None = None,
        use_cache: bool = True,
        images: torch.Tensor | None = None,
        choose: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding, one dimension at a time (docs/design.md, 'Tokens and the network').

        ``choose`` replaces the argmax: given the min-over-heads logits ``(B, N)`` of the
        dimension being decoded, it returns the bins ``(B,)`` to take (exploration), and the
        following dimensions are decoded given them.

        Q heads are combined by their minimum, as in the clipped double-Q backup. Bins are
        compared on logits (the sigmoid is monotone, so the argmax is the same), which keeps
        apart bins whose sigmoids both round to 1 in float32, as behaviour-cloning logits do.

        Returns:
            ``(bins, q)``: chosen bins ``(B, dA)`` and Q of each chosen bin ``(B, dA)``.
        """
        bins, qs, _ = self.decode(obs, task, use_cache, images, choose)
        return bins, qs

    @torch.no_grad()
    def decode(
        self,
        obs: torch.Tensor | None,
        task: torch.Tensor | None = None,
        use_cache: bool = True,
        images: torch.Tensor | None = None,
        choose: Callable[[torch.Tensor], torch.Tensor] | None = None,
        temperature: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`greedy`, and for each dimension also the bin position the agent acts at.

        With ``temperature`` T > 0 the position of dimension i is the mean bin index under
        ``softmax(Q_i / T)`` over its bins, Q in [0, 1] (the network's scale): ``sum_b w_b
        b``. Bin values are affine in the index, so this position maps to the Q-weighted mean
        of the bin values. The following dimensions are still decoded given the chosen
        (greedy) bin, so every Q read is one the network was trained on. At T = 0 the position
        is the chosen bin.

        Returns:
            ``(bins, q, position)``: chosen bins ``(B, dA)``, Q of each chosen bin ``(B, dA)``
            and the positions ``(B, dA)`` (float, in ``[0, N - 1]``).
        """
        cfg = self.cfg
        B, P = self._batch_size(obs, images), cfg.prefix_len
        device = self.start.device
        bins = torch.zeros(B, cfg.action_dim, dtype=torch.long, device=device)
        qs = torch.zeros(B, cfg.action_dim, device=device)
        position = torch.zeros(B, cfg.action_dim, device=device)
        index = torch.arange(cfg.n_bins, device=device, dtype=torch.float32)
        x = self._prefix(obs, task, images)
        h, cache = self._run(x)
        for i in range(cfg.action_dim):
            z = self._logits(h[:, -1:])[:, :, 0].amin(dim=1)  # (B, N)
            if choose is None:
                best, bins[:, i] = z.max(dim=-1)
            else:
                bins[:, i] = choose(z)
                best = z.gather(-1, bins[:, i : i + 1])[:, 0]
            qs[:, i] = torch.sigmoid(best)
            if temperature > 0:
                w = torch.softmax(torch.sigmoid(z.float()) / temperature, dim=-1)  # (B, N)
                mean = w @ index
                # Non-finite Q (inputs far outside the data) has no weighted mean: act greedily.
                position[:, i] = torch.where(mean.isfinite(), mean, bins[:, i].float())
            else:
                position[:, i] = bins[:, i].float()
            if i == cfg.action_dim - 1:
                break
            tok = self._bin_tokens(bins[:, i : i + 1], i) + self.pos[P + 1 + i]  # (B, 1, D)
            if use_cache:
                h, cache = self._run(tok, cache)
            else:
                x = torch.cat([x, tok], dim=1)
                h, _ = self._run(x)
        return bins, qs, position
