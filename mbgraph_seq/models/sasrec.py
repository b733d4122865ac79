r"""SASRec (Kang & McAuley, ICDM 2018) and the scoring base shared by the sequence models.

:class:`SequenceRecommender` implements mbgraph's model contract for sequence models:

* ``prepare_eval(split)`` picks the dataset's evaluation inputs of that split (the history
  before each user's held-out event, :meth:`mbgraph_seq.data.SequenceDataset.eval_inputs`);
* ``score(users, items=None)`` encodes those inputs to one vector per user (subclasses define
  :meth:`~SequenceRecommender.user_representation`) and scores items by the dot product with
  the item embeddings (0-based item ids; ``[B, num_items]`` or ``[B, C]``).

:class:`SASRec`: item embeddings scaled by :math:`\sqrt d` plus learned positions, causal
self-attention blocks (:mod:`mbgraph_seq.nn.transformer`), and the next-item loss at every
position: binary cross-entropy (the paper's eq 6) or BPR.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import EvalInputs, SequenceBatch, SequenceDataset
from ..nn.transformer import CausalTransformer, SequenceEmbedding


def dot_scores(user: Tensor, item_weight: Tensor, items: Optional[Tensor] = None) -> Tensor:
    """Scores :math:`u^\\top e_v`. ``item_weight`` is the ``[num_items + 1, d]`` table with the
    padding row 0; ``items`` are 0-based ids ``[B, C]`` (None: all items, ``[B, num_items]``)."""
    if items is None:
        return user @ item_weight[1:].t()
    return torch.einsum('bd,bcd->bc', user, item_weight[items.long() + 1])


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


class SequenceRecommender(nn.Module):
    """Base of the sequence models: evaluation inputs, ``prepare_eval`` and dot-product
    ``score``. Subclasses set :attr:`causal` and :attr:`train_layout` and implement
    :meth:`user_representation` and :meth:`item_weight`."""

    #: True when the output at a position never depends on later positions (then every
    #: position of a full training sequence can be a next-item target).
    causal: bool = True
    #: ``prefixes`` argument for :meth:`SequenceDataset.train_source` (None: full sequences).
    train_layout: Optional[Union[int, str]] = None
    #: ``target_only`` argument for :meth:`SequenceDataset.train_source`.
    target_only: bool = False

    def __init__(self, dataset: SequenceDataset):
        super().__init__()
        self.num_users, self.num_items = dataset.num_users, dataset.num_items
        self.num_behaviors, self.max_len = dataset.num_behaviors, dataset.max_len
        self.eval_inputs = EvalInputs(dataset)

    def prepare_eval(self, split: Optional[str]) -> None:
        """Use the evaluation inputs of ``split`` ('val' or 'test') in :meth:`score`."""
        self.eval_inputs.prepare(split)

    def item_weight(self) -> Tensor:
        """``[num_items + 1, d]`` item embeddings used for scoring (row 0 = padding)."""
        raise NotImplementedError

    def user_representation(self, batch: SequenceBatch) -> Tensor:
        """``[B, d]`` representation of each input sequence (after its most recent event)."""
        raise NotImplementedError

    def score(self, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        """Scores of ``items`` (0-based ``[B, C]``; None: all items) for ``users``, from the
        history before their held-out event of the split given to :meth:`prepare_eval`."""
        device = next(self.parameters()).device
        batch = self.eval_inputs.batch(users, device)
        return dot_scores(self.user_representation(batch), self.item_weight(),
                          None if items is None else items.to(device))


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
