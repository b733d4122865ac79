r"""Multi-Expert with Separate Input (MESI, the multi-task head of CIGF, Guo et al., KDD 2023;
"MESI" in COPF table 5).

Unlike MMoE, the input is *decoupled*: expert :math:`j` sees only behavior :math:`j`'s pair
representation, so a task's gradient reaches the other behaviors only through its gate:

.. math::
    \mathbf{x}^j_{uv} = \mathbf{e}_u^{j,*} \circ \mathbf{e}_v^{j,*}, \qquad
    \mathbf{g}^k = \mathrm{softmax}(\mathbf{W}^k_g \mathbf{x}^k_{uv} + \mathbf{b}^k_g), \qquad
    \hat y^k_{uv} = h^k\!\left(\sum_{j=1}^{K} g^k_j\, f_j(\mathbf{x}^j_{uv})\right)

with one expert MLP :math:`f_j` per behavior, the gate of task :math:`k` fed with the task's own
pair representation, and an MLP tower :math:`h^k` per behavior.
"""
from __future__ import annotations

from typing import Sequence, Union

from torch import Tensor

from ..encoders.base import BehaviorEmbeddings
from .blocks import MTLHead, StackedMLP, gather_stacked, mix_experts, pair_dim, pair_features


class MESIHead(MTLHead):
    r"""MESI head: one expert per behavior on that behavior's own embeddings, a softmax gate
    and an MLP tower per behavior.

    Args:
        embedding_dim (int): :math:`d`.
        num_behaviors (int): :math:`K` (= number of experts).
        expert_channels (int or list of int, optional): layer sizes of each expert (ReLU after
            every layer). (default: ``(64,)``)
        tower_channels (int or list of int, optional): hidden sizes of each tower.
            (default: ``(32,)``)
        pair (str, optional): ``'hadamard'`` or ``'concat'``. (default: ``'hadamard'``)
        act (str, optional): activation. (default: ``'relu'``)
        dropout (float, optional): dropout inside the MLPs. (default: ``0.``)

    Shapes:
        - **input:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings`, users ``[B]``,
          items ``[B]`` or ``[B, C]``.
        - **output:** scores ``[B]`` or ``[B, C]``.
    """

    def __init__(self, embedding_dim: int, num_behaviors: int,
                 expert_channels: Union[int, Sequence[int]] = (64,),
                 tower_channels: Union[int, Sequence[int]] = (32,), pair: str = 'hadamard',
                 act: str = 'relu', dropout: float = 0.0):
        super().__init__(embedding_dim, num_behaviors)
        experts = self._layers(expert_channels, 'expert')
        self.pair = pair
        in_dim = pair_dim(embedding_dim, pair)
        self.experts = StackedMLP(num_behaviors, [in_dim, *experts], act, act_last=True,
                                  dropout=dropout)
        self.gates = StackedMLP(num_behaviors, [in_dim, num_behaviors], act=None)
        self.towers = self._towers(experts[-1], tower_channels, act, dropout)

    def forward(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                behavior: str) -> Tensor:
        k = self._index(emb, behavior)
        u, v = gather_stacked(emb, users, items)
        x = pair_features(u, v, self.pair)                  # [K, B, (C), in]: one per behavior
        experts = self.experts(x)                           # [K, B, (C), c]
        gate = self.gates(x[k], group=k).softmax(dim=-1)    # [B, (C), K]
        return self.towers(mix_experts(gate, experts), group=k).squeeze(-1)

    def extra_repr(self) -> str:
        return (f'embedding_dim={self.embedding_dim}, num_behaviors={self.num_behaviors}, '
                f'pair={self.pair!r}')
