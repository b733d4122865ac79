r"""The bilinear (inner-product) head:
:math:`\hat y^k_{uv} = \mathbf{e}_u^{k,*\top}\mathbf{e}_v^{k,*}`.

The scoring of MB-CGCN and CRGCN, and the "w/o DFME" variant of COPF table 3.
"""
from __future__ import annotations

from torch import Tensor

from ..encoders.base import BehaviorEmbeddings
from .base import MultiTaskHead, gather_pairs


class BilinearHead(MultiTaskHead):
    """Inner product of the behavior's user and item embeddings (no parameters).

    Shapes:
        - **input:** users ``[B]``, items ``[B]`` or ``[B, C]``.
        - **output:** ``[B]`` or ``[B, C]``.
    """

    def forward(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                behavior: str) -> Tensor:
        u, v = gather_pairs(emb, emb.index(behavior), users, items)
        return (u * v).sum(-1)

    def score_all(self, emb: BehaviorEmbeddings, users: Tensor, behavior: str) -> Tensor:
        k = emb.index(behavior)
        return emb.users[k][users] @ emb.items[k].t()
