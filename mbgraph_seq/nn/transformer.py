r"""Causal self-attention blocks of SASRec (Kang & McAuley, "Self-Attentive Sequential
Recommendation", ICDM 2018, sec. III-B/C), shared by the sequence models.

One block (the paper's eq 2-4 with the layer normalisation, residuals and dropout of its
sec. III-C, in the pre-normalised order of the authors' code)::

    Q = LN_1(X)
    X = Q + Drop(Attention(Q, X, X))          # causal, padding keys masked
    X = LN_2(X)
    X = X + Drop(FFN(X))                      # ReLU point-wise FFN
    X = X * mask                              # padding rows set to zero

The attention at position ``t`` sees positions ``<= t`` that are real events, so the output at
``t`` never depends on later positions. (:func:`bidirectional_attention_mask` lifts the causal
restriction for EBM's self-attention variant, :class:`mbgraph_seq.nn.filter.SelfAttentionLayer`.)
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def causal_attention_mask(mask: Tensor) -> Tensor:
    """``[B, 1, L, L]`` boolean mask (True = may attend) for queries ``i`` and keys ``j``:
    ``j <= i`` and key ``j`` real; every position may attend to itself so that no row is
    empty (padding rows are zeroed afterwards)."""
    L = mask.size(1)
    causal = torch.ones(L, L, dtype=torch.bool, device=mask.device).tril_()
    allowed = causal.unsqueeze(0) & mask.unsqueeze(1)                     # [B, L, L]
    allowed = allowed | torch.eye(L, dtype=torch.bool, device=mask.device).unsqueeze(0)
    return allowed.unsqueeze(1)


def bidirectional_attention_mask(mask: Tensor) -> Tensor:
    """``[B, 1, L, L]`` boolean mask (True = may attend) for queries ``i`` and keys ``j``: key
    ``j`` real, before or after ``i`` (no causal restriction: EBM's "w/o DS" attention). As in
    :func:`causal_attention_mask`, every position may attend to itself so that no row is empty
    (the rows of padding queries are zeroed afterwards)."""
    L = mask.size(1)
    allowed = mask.unsqueeze(1).expand(-1, L, -1)                           # [B, L, L]
    allowed = allowed | torch.eye(L, dtype=torch.bool, device=mask.device).unsqueeze(0)
    return allowed.unsqueeze(1)


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product multi-head attention (queries from ``q``, keys/values from ``kv``)."""

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'dim={dim} must be divisible by num_heads={num_heads}')
        self.num_heads, self.head_dim = int(num_heads), dim // num_heads
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.out = nn.Linear(dim, dim)
        self.dropout = float(dropout)

    def forward(self, q: Tensor, kv: Tensor, attn_mask: Tensor) -> Tensor:
        B, L, d = q.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(B, -1, self.num_heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q(q)), heads(self.k(kv)), heads(self.v(kv)), attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(B, L, d))


class SASRecBlock(nn.Module):
    """One causal self-attention block (see the module docstring)."""

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        if attn_mask is None:
            attn_mask = causal_attention_mask(mask)
        q = self.norm1(x)
        x = q + self.dropout(self.attn(q, x, attn_mask))
        x = self.norm2(x)
        x = x + self.dropout(self.ffn(x))
        return x * mask.unsqueeze(-1).to(x.dtype)


class CausalTransformer(nn.Module):
    """A stack of :class:`SASRecBlock` and a final LayerNorm: ``[B, L, d] -> [B, L, d]``."""

    def __init__(self, dim: int, num_layers: int = 2, num_heads: int = 1, dropout: float = 0.2):
        super().__init__()
        self.blocks = nn.ModuleList(SASRecBlock(dim, num_heads, dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        attn_mask = causal_attention_mask(mask)
        x = x * mask.unsqueeze(-1).to(x.dtype)
        for block in self.blocks:
            x = block(x, mask, attn_mask)
        return self.norm(x) * mask.unsqueeze(-1).to(x.dtype)


class SequenceEmbedding(nn.Module):
    r"""Item (+ position) (+ behavior) embeddings of left-padded sequences (DPCPL eq 1:
    :math:`e = e_v + e_p + e_b`; SASRec: :math:`\sqrt d\,e_v + e_p`).

    Position ``p`` of a ``[B, M]`` input uses position embedding ``max_len - M + p``, so the
    most recent event always has the last position embedding.

    Args:
        num_items: real items (id + 1 is looked up, 0 = padding).
        dim: embedding size.
        max_len: positions.
        num_behaviors: behaviors (``0`` disables the behavior embedding).
        scale_items: multiply item embeddings by :math:`\sqrt d` (SASRec).
    """

    def __init__(self, num_items: int, dim: int, max_len: int, num_behaviors: int = 0,
                 scale_items: bool = False):
        super().__init__()
        self.items = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        self.behaviors = (nn.Embedding(num_behaviors + 1, dim, padding_idx=0)
                          if num_behaviors else None)
        self.max_len, self.scale = int(max_len), math.sqrt(dim) if scale_items else 1.0

    def forward(self, items: Tensor, behaviors: Optional[Tensor] = None) -> Tensor:
        M = items.size(1)
        if M > self.max_len:
            raise ValueError(f'sequences of {M} positions exceed max_len={self.max_len}')
        pos = torch.arange(self.max_len - M, self.max_len, device=items.device)
        x = self.items(items) * self.scale + self.positions(pos).unsqueeze(0)
        if self.behaviors is not None:
            if behaviors is None:
                raise ValueError('behavior ids are required by a behavior-aware embedding')
            x = x + self.behaviors(behaviors)
        return x


__all__ = ['causal_attention_mask', 'bidirectional_attention_mask', 'MultiHeadSelfAttention',
           'SASRecBlock', 'CausalTransformer', 'SequenceEmbedding']
