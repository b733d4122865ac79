r"""Progressive Layered Extraction (Tang et al., RecSys 2020; "PLE" in PKEF / COPF table 5).

Each extraction level :math:`l` holds :math:`S` experts specific to every behavior and :math:`M`
shared experts. Behavior :math:`k`'s gate mixes its own and the shared experts; a shared gate
(every level but the last) mixes all of them into the next level's shared input:

.. math::
    \mathbf{x}^{k,l+1} &= \sum_{e} \mathrm{softmax}(\mathbf{W}^{k,l}\mathbf{x}^{k,l})_e\,
        \left[\mathbf{f}^{k,l}_{1..S}(\mathbf{x}^{k,l}),\ \mathbf{f}^{s,l}_{1..M}
        (\mathbf{x}^{s,l})\right]_e \\
    \mathbf{x}^{s,l+1} &= \sum_{e} \mathrm{softmax}(\mathbf{W}^{s,l}\mathbf{x}^{s,l})_e\,
        \left[\mathbf{f}^{1,l}_{1..S}, \dots, \mathbf{f}^{K,l}_{1..S},\
        \mathbf{f}^{s,l}_{1..M}\right]_e \\
    \hat y^k_{uv} &= h^k(\mathbf{x}^{k,L})

starting from :math:`\mathbf{x}^{k,0} = \mathbf{x}^{s,0} = \mathbf{x}_{uv}`, the shared input of
:mod:`~mbgraph.nn.heads.shared_bottom`. With one level this is CGC.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..encoders.base import BehaviorEmbeddings
from .blocks import (
    BehaviorMixture,
    MTLHead,
    StackedMLP,
    gather_stacked,
    mix_experts,
    pair_dim,
    pair_features,
)


class ExtractionLevel(nn.Module):
    r"""One PLE extraction level (a CGC block, plus the shared gate unless it is the last).

    Shapes:
        - **input:** task inputs ``[K, *, in]``, shared input ``[*, in]``.
        - **output:** task outputs ``[K, *, out]``, shared output ``[*, out]`` (``None`` for the
          last level).
    """

    def __init__(self, in_channels: int, expert_channels: Sequence[int], num_behaviors: int,
                 num_specific: int, num_shared: int, last: bool, act: str = 'relu',
                 dropout: float = 0.0):
        super().__init__()
        k, s, m = num_behaviors, num_specific, num_shared
        self.num_behaviors, self.num_specific, self.num_shared, self.last = k, s, m, last
        channels = [in_channels, *expert_channels]
        self.specific = StackedMLP(k * s, channels, act, act_last=True, dropout=dropout)
        self.shared = StackedMLP(m, channels, act, act_last=True, dropout=dropout)
        self.task_gates = StackedMLP(k, [in_channels, s + m], act=None)
        self.shared_gate = None if last else StackedMLP(1, [in_channels, k * s + m], act=None)

    def forward(self, x_tasks: Tensor, x_shared: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        k, s, m = self.num_behaviors, self.num_specific, self.num_shared
        lead = x_shared.shape[:-1]
        spec_in = x_tasks.unsqueeze(1).expand(k, s, *x_tasks.shape[1:])
        spec = self.specific(spec_in.reshape(k * s, *x_tasks.shape[1:]))    # [K*S, *, c]
        shared = self.shared(x_shared, shared=True)                          # [M, *, c]
        c = spec.size(-1)
        spec = spec.view(k, s, *lead, c)
        cand = torch.cat([spec, shared.unsqueeze(0).expand(k, m, *lead, c)], dim=1)
        gates = self.task_gates(x_tasks).softmax(dim=-1)                     # [K, *, S+M]
        # mix over the S + M candidates of each task: gates [K, *, S+M], cand [K, S+M, *, c]
        out_tasks = (gates.movedim(-1, 1).unsqueeze(-1) * cand).sum(1)
        if self.shared_gate is None:
            return out_tasks, None
        g = self.shared_gate(x_shared, group=0).softmax(dim=-1)             # [*, K*S+M]
        out_shared = mix_experts(g, torch.cat([spec.reshape(k * s, *lead, c), shared]))
        return out_tasks, out_shared

    def extra_repr(self) -> str:
        return (f'num_behaviors={self.num_behaviors}, specific={self.num_specific}, '
                f'shared={self.num_shared}, last={self.last}')


class PLEHead(MTLHead):
    r"""PLE head: ``num_levels`` extraction levels and an MLP tower per behavior.

    Args:
        embedding_dim (int): :math:`d`.
        num_behaviors (int): :math:`K`.
        num_specific (int, optional): :math:`S`, experts per behavior and level. (default: ``1``)
        num_shared (int, optional): :math:`M`, shared experts per level. (default: ``1``)
        num_levels (int, optional): extraction levels (``1`` = CGC). (default: ``1``)
        expert_channels (int or list of int, optional): layer sizes of each expert (ReLU after
            every layer), the same at every level. (default: ``(64,)``)
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

    def __init__(self, embedding_dim: int, num_behaviors: int, num_specific: int = 1,
                 num_shared: int = 1, num_levels: int = 1,
                 expert_channels: Union[int, Sequence[int]] = (64,),
                 tower_channels: Union[int, Sequence[int]] = (32,), pair: str = 'hadamard',
                 learn_weights: bool = True, act: str = 'relu', dropout: float = 0.0):
        super().__init__(embedding_dim, num_behaviors)
        if num_specific < 1 or num_shared < 1 or num_levels < 1:
            raise ValueError(f'PLEHead needs num_specific >= 1, num_shared >= 1 and '
                             f'num_levels >= 1, got {num_specific}, {num_shared}, {num_levels}')
        experts = self._layers(expert_channels, 'expert')
        self.pair = pair
        self.num_specific, self.num_shared, self.num_levels = num_specific, num_shared, num_levels
        self.mixture = BehaviorMixture(num_behaviors, learn_weights)
        dims = [pair_dim(embedding_dim, pair)] + [experts[-1]] * num_levels
        self.levels = nn.ModuleList(
            ExtractionLevel(dims[l], experts, num_behaviors, num_specific, num_shared,
                            last=(l == num_levels - 1), act=act, dropout=dropout)
            for l in range(num_levels))
        self.towers = self._towers(experts[-1], tower_channels, act, dropout)

    def forward(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                behavior: str) -> Tensor:
        k = self._index(emb, behavior)
        u, v = gather_stacked(emb, users, items)
        x = pair_features(self.mixture(u), self.mixture(v), self.pair)     # [B, (C), in]
        x_tasks, x_shared = x.unsqueeze(0).expand(self.num_behaviors, *x.shape), x
        for level in self.levels:
            x_tasks, x_shared = level(x_tasks, x_shared)
        return self.towers(x_tasks[k], group=k).squeeze(-1)

    def extra_repr(self) -> str:
        return (f'embedding_dim={self.embedding_dim}, num_behaviors={self.num_behaviors}, '
                f'num_specific={self.num_specific}, num_shared={self.num_shared}, '
                f'num_levels={self.num_levels}, pair={self.pair!r}')
