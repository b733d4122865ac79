r"""SASRec (Kang & McAuley, ICDM 2018), on the sequence models' base
(:class:`~mbgraph_seq.models.base.SequenceRecommender`).

:class:`SASRec`: item embeddings scaled by :math:`\sqrt d` plus learned positions, causal
self-attention blocks (:mod:`mbgraph_seq.nn.transformer`), and the next-item loss at every
position: binary cross-entropy (the paper's eq 6) or BPR.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import SequenceBatch, SequenceDataset
from ..nn.transformer import CausalTransformer, SequenceEmbedding
from .base import SequenceRecommender, dot_scores  # moved to .base; re-exported from here


def next_item_loss(h: Tensor, item_weight: Tensor, pos: Tensor, neg: Tensor,
                   kind: str = 'bce') -> Tensor:
    r"""Next-item loss over the positions with a target (``pos > 0``).

    ``h`` ``[B, M, d]`` position outputs, ``pos`` ``[B, M]`` and ``neg`` ``[B, M, n]`` ids + 1.

    * ``'bce'`` (SASRec eq 6): :math:`-\log\sigma(r_{pos}) - \frac1n\sum_j \log(1 -
      \sigma(r_{neg_j}))`;
    * ``'bpr'``: :math:`-\frac1n\sum_j \log\sigma(r_{pos} - r_{neg_j})`;

    averaged over target positions.
    """
    target = pos > 0
    if not bool(target.any()):
        raise ValueError('the batch has no next-item targets (every pos is 0)')
    if neg.dim() != 3 or neg.size(-1) == 0:
        raise ValueError(f'neg must be [B, M, n_neg] with n_neg >= 1, got {tuple(neg.shape)}')
    hs = h[target]                                   # [T, d]
    rp = (hs * item_weight[pos[target]]).sum(-1)     # [T]
    rn = torch.einsum('td,tnd->tn', hs, item_weight[neg[target]])
    if kind == 'bce':
        return (F.softplus(-rp) + F.softplus(rn).mean(-1)).mean()
    if kind == 'bpr':
        return F.softplus(rn - rp.unsqueeze(-1)).mean()
    raise ValueError(f"unknown loss {kind!r}; expected 'bce' or 'bpr'")


class SASRec(SequenceRecommender):
    """Self-Attentive Sequential Recommendation (Kang & McAuley 2018).

    Args:
        dataset: the :class:`~mbgraph_seq.data.SequenceDataset` (sizes and evaluation inputs).
        dim: embedding size ``d``.
        num_layers: self-attention blocks.
        num_heads: attention heads.
        dropout: dropout rate (embeddings, attention, FFN).
        loss: ``'bce'`` (the paper) or ``'bpr'``.
        use_behaviors: add a behavior embedding to the input (the "MB-X" variant of DPCPL's
            baselines); False is the paper's item-only SASRec.
    """

    causal = True
    train_layout = None

    def __init__(self, dataset: SequenceDataset, dim: int = 64, num_layers: int = 2,
                 num_heads: int = 1, dropout: float = 0.2, loss: str = 'bce',
                 use_behaviors: bool = False):
        super().__init__(dataset)
        if loss not in ('bce', 'bpr'):
            raise ValueError(f"unknown loss {loss!r}; expected 'bce' or 'bpr'")
        self.loss_kind = loss
        self.use_behaviors = bool(use_behaviors)
        self.embedding = SequenceEmbedding(dataset.num_items, dim, dataset.max_len,
                                           dataset.num_behaviors if use_behaviors else 0,
                                           scale_items=True)
        self.dropout = nn.Dropout(dropout)
        self.encoder = CausalTransformer(dim, num_layers, num_heads, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.embedding.items.weight[0].zero_()
            if self.embedding.behaviors is not None:
                self.embedding.behaviors.weight[0].zero_()

    def item_weight(self) -> Tensor:
        return self.embedding.items.weight

    def encode(self, batch: SequenceBatch) -> Tensor:
        """``[B, M, d]`` outputs; position ``t`` depends on positions ``<= t`` only."""
        x = self.embedding(batch.items, batch.behaviors if self.use_behaviors else None)
        return self.encoder(self.dropout(x), batch.mask)

    def user_representation(self, batch: SequenceBatch) -> Tensor:
        return self.encode(batch)[:, -1]

    def loss(self, batch: SequenceBatch) -> Tuple[Tensor, Dict[str, float]]:
        h = self.encode(batch)
        loss = next_item_loss(h, self.item_weight(), batch.pos, batch.neg, self.loss_kind)
        return loss, {}


__all__ = ['SequenceRecommender', 'SASRec', 'dot_scores', 'next_item_loss']
