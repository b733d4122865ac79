r"""What an encoder hands to a head: per-behavior user and item embeddings.

An encoder maps the initial embeddings ``ego [U + I, d]`` (users first) and the cached
operators of a :class:`~mbgraph.data.adjacency.BehaviorAdjacency` to a
:class:`BehaviorEmbeddings`: for every behavior :math:`k` the final user and item
representations (:math:`\mathbf{e}_u^{k,*}, \mathbf{e}_v^{k,*}`), stacked along a leading
behavior axis in the data's behavior order. An encoder never samples and never scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn


@dataclass
class BehaviorEmbeddings:
    """Per-behavior embeddings.

    Attributes:
        behaviors: behavior names, upstream -> downstream (last = target).
        users: ``[K, U, d]`` user embeddings per behavior.
        items: ``[K, I, d]`` item embeddings per behavior.
        extras: anything else an encoder or head computed over the whole graph that a head or
            loss term needs (e.g. PKF's parallel stream under ``'parallel'``, DFME's fitting
            experts), keyed by name.
        nodes: optionally the ``[K, U + I, d]`` tensor of which ``users`` and ``items`` are
            the two views (users first), when the encoder computed one: a head that needs
            users and items in one table reads it instead of concatenating them again, and
            its gradient then reaches the encoder without two zero-filled slice gradients.
    """
    behaviors: List[str]
    users: Tensor
    items: Tensor
    extras: Dict[str, Any] = field(default_factory=dict)
    nodes: Optional[Tensor] = None

    def __post_init__(self):
        k = len(self.behaviors)
        if self.users.dim() != 3 or self.items.dim() != 3:
            raise ValueError('BehaviorEmbeddings expects users [K, U, d] and items [K, I, d], got '
                             f'{tuple(self.users.shape)} and {tuple(self.items.shape)}')
        if self.users.size(0) != k or self.items.size(0) != k:
            raise ValueError(f'{k} behaviors {self.behaviors} but embeddings for '
                             f'{self.users.size(0)} (users) and {self.items.size(0)} (items)')
        if self.nodes is not None and tuple(self.nodes.shape) != (
                k, self.users.size(1) + self.items.size(1), self.users.size(2)):
            raise ValueError(f'BehaviorEmbeddings nodes must be [K, U + I, d] = '
                             f'{[k, self.users.size(1) + self.items.size(1), self.users.size(2)]}'
                             f', got {list(self.nodes.shape)}')

    def node_table(self) -> Tensor:
        """``[K, U + I, d]``, users first: :attr:`nodes` when the encoder kept it, otherwise
        ``users`` and ``items`` concatenated."""
        if self.nodes is not None:
            return self.nodes
        return torch.cat([self.users, self.items], dim=1)

    def replace(self, **changes) -> 'BehaviorEmbeddings':
        """A copy with the fields in ``changes`` replaced (``nodes`` is dropped when
        ``users`` or ``items`` change, unless given)."""
        fields = {'behaviors': self.behaviors, 'users': self.users, 'items': self.items,
                  'extras': self.extras, 'nodes': self.nodes}
        if ('users' in changes or 'items' in changes) and 'nodes' not in changes:
            fields['nodes'] = None
        fields.update(changes)
        return BehaviorEmbeddings(**fields)

    def index(self, behavior: str) -> int:
        try:
            return self.behaviors.index(behavior)
        except ValueError:
            raise ValueError(f'unknown behavior {behavior!r}; behaviors are '
                             f'{self.behaviors}') from None

    def user(self, behavior: str) -> Tensor:
        return self.users[self.index(behavior)]

    def item(self, behavior: str) -> Tensor:
        return self.items[self.index(behavior)]

    @property
    def target(self) -> str:
        return self.behaviors[-1]


def reset_children(module: nn.Module) -> None:
    """Call ``reset_parameters()`` on every direct child of ``module`` that has one."""
    for m in module.children():
        if hasattr(m, 'reset_parameters'):
            m.reset_parameters()


class MultiBehaviorEncoder(nn.Module):
    """Base class: ``forward(ego, adjacency) -> BehaviorEmbeddings``; ``loss_terms`` adds
    encoder-specific losses (default none)."""

    def forward(self, ego: Tensor, adjacency) -> BehaviorEmbeddings:  # pragma: no cover
        raise NotImplementedError

    def loss_terms(self, emb: BehaviorEmbeddings, batch: Dict[str, Any]) -> Dict[str, Tensor]:
        return {}

    def regularized_parameters(self) -> List[Tensor]:
        """The encoder's parameters that the model's L2 term covers besides the embeddings
        (e.g. MB-CGCN's transforms in its authors' code); none by default."""
        return []

    def reset_parameters(self) -> None:
        reset_children(self)
