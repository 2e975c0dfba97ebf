"""The autoregressive Q network (ALGORITHM.md sections 2, 6 and 7). It knows nothing of losses.

Token sequence for one sample:

    [task] [frame_1 .. frame_w tokens] [start] [bin of dim 1] ... [bin of dim dA-1]
                                   |          |                    |
                                 Q dim 1    Q dim 2      ...     Q dim dA

A causal mask lets the output at action token i see the observations and the bins of
dims < i only, so one teacher-forced pass gives every dimension's Q at once, and greedy
decoding can reuse the attention cache: one pass over the prefix, then one token per dim.
The task token (multi-task data) projects a row of a fixed task feature table: a one-hot
code or an instruction embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qtransformer.encoders import StateEncoder

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

    @property
    def prefix_len(self) -> int:
        """Tokens before the start token: the task token (if any) and the frames."""
        return int(self.task_dim > 0) + self.window * StateEncoder.tokens_per_frame

    @property
    def seq_len(self) -> int:
        return self.prefix_len + self.action_dim


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
        if past is None:
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

    Values are normalized: callers scale by the value bound ``q_max`` (ALGORITHM.md
    section 3); with sparse rewards in {0, 1} that bound is 1.
    """

    task_table: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
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
        self.apply(self._init)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.start, std=0.02)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def _check_obs(self, obs: torch.Tensor) -> None:
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
        self.task_table.copy_(features)

    def _prefix(self, obs: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        """[task] + observation tokens + the start token, with positions. (B, P + 1, D)"""
        self._check_obs(obs)
        B = obs.shape[0]
        parts = [self.encoder(obs), self.start.expand(B, 1, -1)]
        if self.task_proj is not None:
            if task is None:
                raise ValueError(
                    f"this model is conditioned on {self.cfg.n_tasks} tasks: pass task"
                )
            feats = self.task_table[task]  # (B, task_dim)
            parts.insert(0, self.task_proj(feats)[:, None])
        x = torch.cat(parts, dim=1)
        return x + self.pos[: x.shape[1]]

    def _run(self, x: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        x = self.drop(x)
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.ln_f(x), new_cache

    def _q(self, h: torch.Tensor) -> torch.Tensor:
        """(B, L, D) hidden states -> (B, q_heads, L, N) normalized Q-values."""
        B, L, _ = h.shape
        logits = self.head(h).view(B, L, self.cfg.q_heads, self.cfg.n_bins)
        return torch.sigmoid(logits).transpose(1, 2)

    def forward(
        self, obs: torch.Tensor, bins: torch.Tensor, task: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced Q for every dimension.

        Args:
            obs: ``(B, w, obs_dim)`` observation windows.
            bins: ``(B, dA)`` bins taken; only dims ``< dA - 1`` are read.
            task: ``(B,)`` task indices (required when the model has a task token).

        Returns:
            ``(B, q_heads, dA, N)``: row i holds Q(s, bins[:, :i], a^i = b) for every b.
        """
        P = self.cfg.prefix_len
        x = self._prefix(obs, task)
        if self.cfg.action_dim > 1:
            tail = self._bin_tokens(bins[:, :-1], 0) + self.pos[P + 1 :]
            x = torch.cat([x, tail], dim=1)  # (B, P + dA, D)
        h, _ = self._run(x)
        return self._q(h[:, P:])  # (B, H, dA, N)

    def first_dim_q(self, obs: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Q of every bin of dim 1 only, ``(B, q_heads, N)``: the bootstrap value at s'."""
        h, _ = self._run(self._prefix(obs, task))
        return self._q(h[:, -1:])[:, :, 0]

    @torch.no_grad()
    def greedy(
        self, obs: torch.Tensor, task: torch.Tensor | None = None, use_cache: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding, one dimension at a time (ALGORITHM.md section 7).

        Q heads are combined by their minimum, as in the clipped double-Q backup.

        Returns:
            ``(bins, q)``: chosen bins ``(B, dA)`` and Q of each chosen bin ``(B, dA)``.
        """
        cfg = self.cfg
        B, P = obs.shape[0], cfg.prefix_len
        bins = torch.zeros(B, cfg.action_dim, dtype=torch.long, device=obs.device)
        qs = torch.zeros(B, cfg.action_dim, device=obs.device)
        x = self._prefix(obs, task)
        h, cache = self._run(x)
        for i in range(cfg.action_dim):
            q = self._q(h[:, -1:])[:, :, 0].amin(dim=1)  # (B, N)
            qs[:, i], bins[:, i] = q.max(dim=-1)
            if i == cfg.action_dim - 1:
                break
            tok = self._bin_tokens(bins[:, i : i + 1], i) + self.pos[P + 1 + i]  # (B, 1, D)
            if use_cache:
                h, cache = self._run(tok, cache)
            else:
                x = torch.cat([x, tok], dim=1)
                h, _ = self._run(x)
        return bins, qs
