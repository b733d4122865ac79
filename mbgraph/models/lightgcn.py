r"""LightGCN (He et al., SIGIR 2020) on the target behavior, and LightGCN_M on all behaviors
merged into one graph (the baseline of COPF table 6)."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.adjacency import NORMS
from ..losses import bpr_loss, l2_loss
from ..nn.encoders import LightGCNEncoder
from ..nn.encoders.base import check_choice
from .base import GraphRecommender


class LightGCN(GraphRecommender):
    r"""LightGCN: symmetric-normalised propagation, layer mean, dot-product scores, BPR on the
    target behavior plus L2 on the batch's initial embeddings.

    .. math::
        \mathcal{L} = \sum_{(u,i,j)} -\ln\sigma(\hat y_{ui} - \hat y_{uj})
        + \lambda \lVert \mathbf{E}^{(0)}_{u,i,j} \rVert^2

    Args:
        data: the multiplex graph.
        embedding_dim: :math:`d` (64 as the papers).
        num_layers: :math:`L`.
        reg: :math:`\lambda`.
        merged: propagate over the union of all behaviors (LightGCN_M) instead of the target
            behavior alone; the loss stays on the target behavior.
        behavior: train on this behavior's graph and pairs instead of the target's (default:
            the target), e.g. ``'pv'`` to pre-train tables on views for another model
            (``mbgraph train --init-from``, as MB-CGCN's README pre-trains on view); the
            evaluation stays on the target's held-out pairs.
        norm: the graph's normalisation (:data:`mbgraph.data.adjacency.NORMS`):
            ``'symmetric'`` :math:`\mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` is
            LightGCN's; ``'left'`` :math:`\mathbf{D}^{-1}\mathbf{A}` (what PKEF's and COPF's
            code propagate with) is there to measure what that choice alone does to a ranking
            (an item's row becomes the mean of its users' rows, whatever its popularity).
    """

    def __init__(self, data: HeteroData, embedding_dim: int = 64, num_layers: int = 3,
                 reg: float = 1e-4, merged: bool = False, behavior: Optional[str] = None,
                 norm: str = 'symmetric', **kwargs):
        super().__init__(data, embedding_dim, **kwargs)
        self.reg = reg
        self.norm = check_choice('norm', norm, NORMS)
        self.merged = merged
        if behavior is not None and behavior not in self.behaviors:
            raise ValueError(f'behavior={behavior!r} is not a behavior of the data '
                             f'({", ".join(self.behaviors)})')
        self.behavior = behavior or self.target
        self.graph_behaviors = list(self.behaviors) if merged else [self.behavior]
        self.train_behaviors = [self.behavior]
        self.encoder = LightGCNEncoder(num_layers, combine='mean')

    def propagate(self) -> Tuple[Tensor, Tensor]:
        op = self.operators_on_device().operator(self.graph_behaviors, norm=self.norm)
        return self.split(self.encoder(self.ego_embeddings(), op))

    def loss(self, batch: Dict[str, Tensor]):
        users, pos, neg = batch[self.behavior]
        user_final, item_final = self.propagate()
        u = user_final[users]
        bpr = bpr_loss((u * item_final[pos]).sum(-1), (u * item_final[neg]).sum(-1))
        reg = self.reg * l2_loss(self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
        return bpr + reg, {'bpr': bpr.detach(), 'reg': reg.detach()}


def LightGCN_M(data: HeteroData, **kwargs) -> LightGCN:
    """LightGCN over all behaviors merged into one graph (COPF table 6's LightGCN_M)."""
    return LightGCN(data, merged=True, **kwargs)
