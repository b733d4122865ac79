r"""Any encoder x any head: :class:`MultiBehaviorModel`.

.. math::
    \mathcal{L} = \sum_k \lambda_k \mathcal{L}^k_{BPR}(\text{head}_k(\text{encoder}(\mathbf{E})))
    + \text{encoder/head loss terms} + \mu \lVert \mathbf{E}^{(0)}_{batch} \rVert^2

(PKEF eq 19-21, COPF eq 16-17). "MB-CGCN + DFME" or "PKEF + DFME" of COPF table 6 is one line::

    model = MultiBehaviorModel(data, CascadeEncoder(...), DFMEHead(...))
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..losses import bpr_loss, l2_loss
from ..nn.encoders.base import BehaviorEmbeddings, MultiBehaviorEncoder
from ..nn.heads.base import MultiTaskHead
from .base import GraphRecommender


class MultiBehaviorModel(GraphRecommender):
    """An encoder and a head trained jointly with per-behavior BPR losses.

    Args:
        data: the multiplex graph.
        encoder: a :class:`~mbgraph.nn.encoders.base.MultiBehaviorEncoder`.
        head: a :class:`~mbgraph.nn.heads.base.MultiTaskHead`.
        lambdas: loss coefficient :math:`\\lambda_k` per behavior (default: 1 for the target,
            and 1 for every other behavior); behaviors with :math:`\\lambda_k = 0` are not
            sampled.
        reg: L2 weight :math:`\\mu` on the batch's initial embeddings.
        embedding_dim: :math:`d`.
    """

    def __init__(self, data: HeteroData, encoder: MultiBehaviorEncoder, head: MultiTaskHead,
                 lambdas: Optional[Mapping[str, float]] = None, reg: float = 1e-4,
                 embedding_dim: int = 64, **kwargs):
        super().__init__(data, embedding_dim, **kwargs)
        self.encoder = encoder
        self.head = head
        self.reg = reg
        lambdas = dict(lambdas) if lambdas is not None else {b: 1.0 for b in self.behaviors}
        unknown = sorted(set(lambdas) - set(self.behaviors))
        if unknown:
            raise ValueError(f'loss coefficients given for unknown behaviors {unknown}; '
                             f'behaviors are {self.behaviors}')
        self.lambdas = {b: float(lambdas.get(b, 0.0)) for b in self.behaviors}
        if all(v == 0.0 for v in self.lambdas.values()):
            raise ValueError('every loss coefficient lambda_k is zero')
        self.train_behaviors = [b for b in self.behaviors if self.lambdas[b] != 0.0]
        # heads whose own loss terms are weighted by lambda_k (PME eq 18/20) share the model's
        if hasattr(head, 'set_default_lambdas'):
            head.set_default_lambdas(self.lambdas)

    def embeddings(self) -> BehaviorEmbeddings:
        """Encoder then the head's whole-graph stage (cached in eval mode)."""
        if not self.training and self._eval_cache is not None:
            return self._eval_cache
        adjacency = self.operators_on_device()
        emb = self.head.precompute(self.encoder(self.ego_embeddings(), adjacency), adjacency)
        if not self.training:
            self._eval_cache = emb
        return emb

    def loss(self, batch: Dict[str, Any]):
        emb = self.embeddings()
        parts: Dict[str, Tensor] = {}
        total = None
        used = []
        for b in self.train_behaviors:
            users, pos, neg = batch[b]
            scores = self.head(emb, users, torch.stack([pos, neg], dim=1), b)
            term = self.lambdas[b] * bpr_loss(scores[:, 0], scores[:, 1])
            parts[f'bpr_{b}'] = term.detach()
            total = term if total is None else total + term
            used += [self.user_emb(users), self.item_emb(pos), self.item_emb(neg)]
        for name, term in {**self.encoder.loss_terms(emb, batch),
                           **self.head.loss_terms(emb, batch)}.items():
            parts[name] = term.detach()
            total = total + term
        reg = self.reg * l2_loss(*used, batch_size=used[0].size(0))
        parts['reg'] = reg.detach()
        return total + reg, parts

    def score(self, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        emb = self.embeddings()
        if items is None:
            return self.head.score_all(emb, users, self.target)
        return self.head(emb, users, items, self.target)
