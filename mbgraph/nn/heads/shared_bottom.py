r"""The Shared-Bottom multi-task head (Caruana, 1997); the building blocks of the classical MTL
heads (:class:`StackedMLP`, :class:`BehaviorMixture`, :func:`pair_features`, :class:`MTLHead`)
are in :mod:`~mbgraph.nn.heads.blocks`.

PKEF (table 5, section 5.3.3) and COPF (table 5, section 5.3.3) compare their heads against
Shared Bottom, MMoE and PLE. Those expect *one* input shared by every task, so "the :math:`K`
separate representations" of the encoder are weighed into a unified one:

.. math::
    \bar{\mathbf{e}}_u = \sum_{k=1}^{K} w_k\, \mathbf{e}_u^{k,*}, \qquad
    \bar{\mathbf{e}}_v = \sum_{k=1}^{K} w_k\, \mathbf{e}_v^{k,*}, \qquad
    \mathbf{w} = \mathrm{softmax}(\mathbf{a}),

with learnable logits :math:`\mathbf{a} \in \mathbb{R}^K` initialised to zero (equal weights
:math:`1/K`; the papers say only "we weigh"; ``learn_weights=False`` keeps them fixed at
:math:`1/K`). A (user, item) pair is then represented by
:math:`\mathbf{x}_{uv} = \bar{\mathbf{e}}_u \circ \bar{\mathbf{e}}_v` (``pair='hadamard'``, the
expert input of PKEF eq 15 and COPF eq 9) or :math:`[\bar{\mathbf{e}}_u \,\|\,
\bar{\mathbf{e}}_v]` (``pair='concat'``).
"""
from __future__ import annotations

from typing import Sequence, Union

from torch import Tensor

from ..encoders.base import BehaviorEmbeddings

# the building blocks live in blocks.py; their old import path stays
from .blocks import (  # noqa: F401
    PAIRS,
    BehaviorMixture,
    MTLHead,
    StackedMLP,
    _channels,
    check_embeddings,
    gather_stacked,
    pair_dim,
    pair_features,
)


class SharedBottomHead(MTLHead):
    r"""Shared Bottom (Caruana, 1997; "SB" in PKEF / COPF table 5): one bottom network on the
    shared input, one tower per behavior.

    .. math::
        \hat y^k_{uv} = h^k\!\left(f(\mathbf{x}_{uv})\right), \qquad
        \mathbf{x}_{uv} = \bar{\mathbf{e}}_u \circ \bar{\mathbf{e}}_v

    with :math:`\bar{\mathbf{e}}` the softmax-weighted sum of the behavior embeddings (module
    docstring), :math:`f` an MLP (ReLU after every layer) and :math:`h^k` the MLP tower of
    behavior :math:`k` (linear last layer, one output).

    Args:
        embedding_dim (int): :math:`d`.
        num_behaviors (int): :math:`K`.
        bottom_channels (int or list of int, optional): hidden sizes of :math:`f`.
            (default: ``(64,)``)
        tower_channels (int or list of int, optional): hidden sizes of each tower.
            (default: ``(32,)``)
        pair (str, optional): ``'hadamard'`` or ``'concat'``. (default: ``'hadamard'``)
        learn_weights (bool, optional): learn the behavior weights. (default: ``True``)
        act (str, optional): activation. (default: ``'relu'``)
        dropout (float, optional): dropout inside the MLPs. (default: ``0.``)

    Shapes:
        - **input:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` ``[K, U, d]`` /
          ``[K, I, d]``, users ``[B]``, items ``[B]`` or ``[B, C]``.
        - **output:** scores ``[B]`` or ``[B, C]``.
    """

    def __init__(self, embedding_dim: int, num_behaviors: int,
                 bottom_channels: Union[int, Sequence[int]] = (64,),
                 tower_channels: Union[int, Sequence[int]] = (32,), pair: str = 'hadamard',
                 learn_weights: bool = True, act: str = 'relu', dropout: float = 0.0):
        super().__init__(embedding_dim, num_behaviors)
        self.pair = pair
        bottom = self._layers(bottom_channels, 'bottom')
        self.mixture = BehaviorMixture(num_behaviors, learn_weights)
        self.bottom = StackedMLP(1, [pair_dim(embedding_dim, pair), *bottom], act,
                                 act_last=True, dropout=dropout)
        self.towers = self._towers(bottom[-1], tower_channels, act, dropout)

    def forward(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                behavior: str) -> Tensor:
        k = self._index(emb, behavior)
        u, v = gather_stacked(emb, users, items)
        x = pair_features(self.mixture(u), self.mixture(v), self.pair)
        return self.towers(self.bottom(x, group=0), group=k).squeeze(-1)

    def extra_repr(self) -> str:
        return (f'embedding_dim={self.embedding_dim}, num_behaviors={self.num_behaviors}, '
                f'pair={self.pair!r}')
