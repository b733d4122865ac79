r"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018; "MMOE" in PKEF / COPF table 5).

On the shared input :math:`\mathbf{x}_{uv}` (the softmax-weighted behavior embeddings, paired by
a Hadamard product; see :mod:`~mbgraph.nn.heads.shared_bottom`):

.. math::
    \mathbf{g}^k = \mathrm{softmax}(\mathbf{W}^k_g \mathbf{x}_{uv} + \mathbf{b}^k_g), \qquad
    \hat y^k_{uv} = h^k\!\left(\sum_{e=1}^{E} g^k_e\, f_e(\mathbf{x}_{uv})\right)

with :math:`E` expert MLPs :math:`f_e` shared by all tasks, one gate per behavior and one MLP
tower :math:`h^k` per behavior.
"""
from __future__ import annotations

from typing import Sequence, Union

from torch import Tensor

from ..encoders.base import BehaviorEmbeddings
from .blocks import (  # noqa: F401  (mix_experts: its old import path)
    BehaviorMixture,
    MTLHead,
    StackedMLP,
    gather_stacked,
    mix_experts,
    pair_dim,
    pair_features,
)


class MMoEHead(MTLHead):
    r"""MMoE head: shared experts, a softmax gate and an MLP tower per behavior.

    Args:
        embedding_dim (int): :math:`d`.
        num_behaviors (int): :math:`K`.
        num_experts (int, optional): :math:`E`. (default: ``4``)
        expert_channels (int or list of int, optional): layer sizes of each expert (ReLU after
            every layer). (default: ``(64,)``)
        tower_channels (int or list of int, optional): hidden sizes of each tower.
            (default: ``(32,)``)
        pair (str, optional): ``'hadamard'`` or ``'concat'``. (default: ``'hadamard'``)
        learn_weights (bool, optional): learn the behavior weights of the shared input.
            (default: ``True``)
        act (str, optional): activation. (default: ``'relu'``)
        dropout (float, optional): dropout inside the MLPs. (default: ``0.``)

    Shapes:
        - **input:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings`, users ``[B]``,
          items ``[B]`` or ``[B, C]``.
        - **output:** scores ``[B]`` or ``[B, C]``.
    """

    def __init__(self, embedding_dim: int, num_behaviors: int, num_experts: int = 4,
                 expert_channels: Union[int, Sequence[int]] = (64,),
                 tower_channels: Union[int, Sequence[int]] = (32,), pair: str = 'hadamard',
                 learn_weights: bool = True, act: str = 'relu', dropout: float = 0.0):
        super().__init__(embedding_dim, num_behaviors)
        if num_experts < 1:
            raise ValueError(f'MMoEHead needs num_experts >= 1, got {num_experts}')
        experts = self._layers(expert_channels, 'expert')
        self.pair = pair
        self.num_experts = int(num_experts)
        in_dim = pair_dim(embedding_dim, pair)
        self.mixture = BehaviorMixture(num_behaviors, learn_weights)
        self.experts = StackedMLP(num_experts, [in_dim, *experts], act, act_last=True,
                                  dropout=dropout)
        self.gates = StackedMLP(num_behaviors, [in_dim, num_experts], act=None)
        self.towers = self._towers(experts[-1], tower_channels, act, dropout)

    def forward(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                behavior: str) -> Tensor:
        k = self._index(emb, behavior)
        u, v = gather_stacked(emb, users, items)
        x = pair_features(self.mixture(u), self.mixture(v), self.pair)    # [B, (C), in]
        experts = self.experts(x, shared=True)                             # [E, B, (C), c]
        gate = self.gates(x, group=k).softmax(dim=-1)                      # [B, (C), E]
        return self.towers(mix_experts(gate, experts), group=k).squeeze(-1)

    def extra_repr(self) -> str:
        return (f'embedding_dim={self.embedding_dim}, num_behaviors={self.num_behaviors}, '
                f'num_experts={self.num_experts}, pair={self.pair!r}')
