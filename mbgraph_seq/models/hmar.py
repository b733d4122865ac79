r"""HMAR: Hierarchical Masked Attention for multi-behaviour recommendation (Elsayed, Rashed &
Schmidt-Thieme; building blocks in :mod:`mbgraph_seq.nn.hmar`).

* input encoding :math:`g_j = \mathrm{concat}(v'_j, c'_j) W_r + B_r + P_j` with the **causal**
  historical behavior indicators :math:`c_j` (per-behavior counts of the item at positions up to
  and including ``j``; eq 1-4);
* ``K`` masked behavior encoders with ReZero residuals, summed (eq 5-10), then the sequence
  encoder across behaviors (eq 11-13), all causal;
* ranking score :math:`\hat Y_{t+1} = \sigma(z_t \cdot q^o_{t+1})` (eq 14), where
  :math:`q^o` is eq 3 applied to the candidate item with its indicator *given the history up to*
  ``t`` (zero counts for items the user never met);
* loss :math:`\mathcal{L}_{rank} + \theta\,\mathcal{L}_{class}` (eq 15-18) over every next
  interaction of a training sequence, the ranking term weighted by the next behavior's
  :math:`\alpha_b`.

Scores returned by :meth:`HMAR.score` are the logits :math:`z \cdot q^o` (the sigmoid of eq 14
is monotone and does not change rankings).

The authors' released settings: lr 6e-4 (Adam), hidden 80, max length 150,
dropout 0.45, 1 block, 1 head, :math:`\alpha` 0.7 for the target behavior and 0.1 for the
others, :math:`\theta = 0.1`; evaluation: 1 positive + 99 sampled negatives.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..data import SequenceBatch, SequenceDataset
from ..nn.hmar import (
    BehaviorClassifier,
    HierarchicalMaskedAttention,
    HMAREmbedding,
    history_behavior_counts,
    hmar_loss,
    prefix_behavior_counts,
    resolve_alpha,
)
from .base import SequenceRecommender


def crop_batch(batch: SequenceBatch, length: int) -> SequenceBatch:
    """The last ``length`` positions of every ``[B, M, ...]`` tensor of ``batch`` (the most
    recent events; unchanged when ``M <= length``)."""
    M = batch.items.size(1)
    if M <= length:
        return batch
    cut = M - length
    return SequenceBatch(
        users=batch.users, items=batch.items[:, cut:], behaviors=batch.behaviors[:, cut:],
        mask=batch.mask[:, cut:], pos=batch.pos[:, cut:],
        pos_behaviors=batch.pos_behaviors[:, cut:], neg=batch.neg[:, cut:],
        timestamps=None if batch.timestamps is None else batch.timestamps[:, cut:],
        features=batch.features)


class HMAR(SequenceRecommender):
    """Hierarchical Masked Attention for multi-behavior sequential recommendation.

    Train it on full sequences (``dataset.train_source(prefixes=None)``: every position is a
    next-item target, the encoders being causal) with ``lr=6e-4``.

    Args:
        dataset: the :class:`~mbgraph_seq.data.SequenceDataset` (sizes, behavior names,
            evaluation inputs).
        dim: hidden size ``d`` of every layer (80).
        max_len: positions the model reads (150); inputs longer than this keep their most recent
            events; the effective length is ``min(max_len, dataset.max_len)``.
        num_blocks: stacked hierarchies (1).
        num_heads: attention heads ``H`` (1).
        dropout: dropout rate on the input encodings, attention weights and FFNs (0.45).
        alpha: per-behavior ranking weights :math:`\\alpha_b` (eq 15): ``None`` = 0.7 for the
            target behavior and 0.1 for the others, a sequence of ``K`` floats, or a mapping
            ``{behavior name: weight}``.
        beta: negative-sample weight :math:`\\beta` (eq 15; 1).
        theta: weight of the behavior classification loss (eq 18; 0.1).
        log_counts: feed :math:`\\log(1 + c)` to the indicator layer instead of raw counts.
        target_indicators: ``True``: candidates are encoded with their indicator given the
            history (eq 3 for :math:`q^o`); ``False``: with zero counts.
    """

    causal = True
    train_layout = None
    target_only = False

    def __init__(self, dataset: SequenceDataset, dim: int = 80, max_len: int = 150,
                 num_blocks: int = 1, num_heads: int = 1, dropout: float = 0.45,
                 alpha: Optional[Union[Sequence[float], Mapping[str, float]]] = None,
                 beta: float = 1.0, theta: float = 0.1, log_counts: bool = False,
                 target_indicators: bool = True):
        super().__init__(dataset)
        if dim <= 0 or max_len <= 0:
            raise ValueError(f'dim and max_len must be positive, got {dim} and {max_len}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1), got {dropout}')
        self.dim = int(dim)
        self.seq_len = min(int(max_len), int(dataset.max_len))
        self.beta, self.theta = float(beta), float(theta)
        self.target_indicators = bool(target_indicators)
        self.register_buffer('alpha', resolve_alpha(alpha, dataset.behavior_names))
        self.embedding = HMAREmbedding(dataset.num_items, dataset.num_behaviors, dim,
                                       self.seq_len, log_counts=log_counts)
        self.dropout = nn.Dropout(dropout)
        self.encoder = HierarchicalMaskedAttention(dim, dataset.num_behaviors, num_blocks,
                                                   num_heads, dropout)
        self.classifier = BehaviorClassifier(dim, dataset.num_behaviors)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal weights, zero biases, ReZero weights at 0, zero padding row."""
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.xavier_normal_(p)
            else:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.embedding.items.weight[0].zero_()

    def item_weight(self) -> Tensor:
        """The item table :math:`W_v` (row 0 = padding). Scores use :meth:`candidate_encoding`,
        not this table alone."""
        return self.embedding.items.weight

    # ------------------------------------------------------------------ encoders
    def encode(self, batch: SequenceBatch) -> Tensor:
        """``[B, M, d]`` sequence-encoder outputs :math:`Z` (eq 1-13); position ``t`` depends on
        positions ``<= t`` only. ``batch`` must already be cropped to ``seq_len``."""
        g, _ = self.embedding(batch.items, batch.behaviors, batch.mask)
        g = self.dropout(g)
        return self.encoder(g, batch.behaviors, batch.mask)

    def candidate_encoding(self, candidates: Tensor, counts: Tensor) -> Tensor:
        """:math:`q^o` (eq 3) of candidate ids + 1 with their indicators ``counts``."""
        if not self.target_indicators:
            counts = torch.zeros_like(counts)
        return self.embedding.item_encoding(candidates, counts)

    def user_representation(self, batch: SequenceBatch) -> Tensor:
        return self.encode(crop_batch(batch, self.seq_len))[:, -1]

    # ------------------------------------------------------------------ training
    def loss(self, batch: SequenceBatch) -> Tuple[Tensor, Dict[str, float]]:
        """Eq 18 over every position with a next-item target (``pos > 0``)."""
        batch = crop_batch(batch, self.seq_len)
        target = batch.pos > 0
        if not bool(target.any()):
            raise ValueError('the batch has no next-item targets (every pos is 0)')
        if batch.neg.dim() != 3 or batch.neg.size(-1) == 0:
            raise ValueError(f'neg must be [B, M, n_neg] with n_neg >= 1, got '
                             f'{tuple(batch.neg.shape)}')
        if bool((batch.pos_behaviors[target] < 1).any()):
            raise ValueError('every next-item target needs its behavior in pos_behaviors')
        z = self.encode(batch)                                               # [B, M, d]
        cand = torch.cat([batch.pos.unsqueeze(-1), batch.neg], dim=-1)       # [B, M, 1 + n]
        counts = prefix_behavior_counts(batch.items, batch.behaviors, batch.mask, cand,
                                        self.num_behaviors)                  # [B, M, 1+n, K]
        q = self.candidate_encoding(cand[target], counts[target])            # [T, 1 + n, d]
        zt = z[target]                                                       # [T, d]
        logits = torch.einsum('td,tcd->tc', zt, q)                           # eq 14 (logits)
        class_logits = self.classifier(zt, q[:, 0])                          # eq 16
        loss, parts = hmar_loss(logits[:, 0], logits[:, 1:], class_logits,
                                batch.pos_behaviors[target] - 1, self.alpha, self.beta,
                                self.theta)
        return loss, {k: float(v.detach()) for k, v in parts.items()}

    # ------------------------------------------------------------------ scoring
    def score(self, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        """Logits :math:`z \\cdot q^o` of ``items`` (0-based ``[B, C]``; None: all items,
        ``[B, num_items]``) after the history before each user's held-out event of the split
        given to :meth:`prepare_eval`."""
        device = next(self.parameters()).device
        batch = crop_batch(self.eval_inputs.batch(users, device), self.seq_len)
        z = self.encode(batch)[:, -1]                                        # [B, d]
        if items is not None:
            cand = items.to(device).long() + 1
            counts = history_behavior_counts(batch.items, batch.behaviors, batch.mask, cand,
                                             self.num_behaviors)
            return torch.einsum('bd,bcd->bc', z, self.candidate_encoding(cand, counts))
        # all items: q is affine in the counts, so score with zero counts and add the shift
        # of the items present in the history (items absent from it have zero counts)
        every = torch.arange(1, self.num_items + 1, device=device)
        base = self.embedding.item_encoding(
            every, torch.zeros(self.num_items, self.num_behaviors, device=device))
        scores = z @ base.t()                                                # [B, I]
        if self.target_indicators:
            counts = history_behavior_counts(batch.items, batch.behaviors, batch.mask,
                                             batch.items, self.num_behaviors)  # [B, M, K]
            shift = (self.embedding.indicator_shift(counts) * z.unsqueeze(1)).sum(-1)
            rows, cols = batch.mask.nonzero(as_tuple=True)
            hist = batch.items[rows, cols] - 1
            # a repeated item has the same counts, hence the same shift, at each of its
            # positions: assigning base + shift (not accumulating) is exact
            scores.index_put_((rows, hist), scores[rows, hist] + shift[rows, cols])
        return scores


__all__ = ['HMAR', 'crop_batch']
