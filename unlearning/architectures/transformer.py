"""Tiny GPT-style causal language model (pre-norm blocks, learned positions, untied LM head)."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from unlearning.architectures.registry import ArchConfig, IOSpec, bounded_int, register_architecture
from unlearning.errors import InvalidInputError


class TinyTransformerConfig(ArchConfig):
    vocab_size: bounded_int(1_000_000)  # type: ignore[valid-type]
    max_len: bounded_int(1 << 16)  # type: ignore[valid-type]
    d_model: bounded_int(1 << 14)  # type: ignore[valid-type]
    n_layers: bounded_int(128)  # type: ignore[valid-type]
    n_heads: bounded_int(256)  # type: ignore[valid-type]
    d_ff: bounded_int(1 << 16) | None = None  # type: ignore[valid-type]  # default 4 * d_model
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TinyTransformerConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        # [N, T, 3, H, Dh] → three [N, H, T, Dh]
        q, k, v = self.qkv(x).view(n, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(n, t, d)))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        # No bias, as in GPT-2: the LM head is a plain projection onto the vocabulary.
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def features(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.max_len:
            raise InvalidInputError(f"sequence length {t} exceeds max_len {self.max_len}")
        pos = torch.arange(t, device=input_ids.device)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(input_ids))


def _describe(cfg: TinyTransformerConfig) -> IOSpec:
    return IOSpec(
        input_kind="tokens", num_classes=cfg.vocab_size, max_len=cfg.max_len, vocab_size=cfg.vocab_size
    )


@register_architecture(
    "tiny-transformer", task="causal-lm", config_model=TinyTransformerConfig, describe=_describe
)
def build_tiny_transformer(cfg: TinyTransformerConfig) -> TinyTransformer:
    return TinyTransformer(
        cfg.vocab_size,
        cfg.max_len,
        cfg.d_model,
        cfg.n_layers,
        cfg.n_heads,
        cfg.d_ff or 4 * cfg.d_model,
        cfg.dropout,
    )
