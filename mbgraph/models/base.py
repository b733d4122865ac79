r"""The model contract shared by every mbgraph model, and the graph-model base class.

A model is a ``torch.nn.Module`` with

* ``loss(batch) -> Tensor`` or ``(Tensor, {part: value})``: the training loss of one batch
  from its batch source (for graph models, a :class:`~mbgraph.data.sampling.BPRSampler` batch
  ``{behavior: [3, B]}`` of (users, positives, negatives));
* ``score(users, items=None) -> Tensor``: ``[B, num_items]`` scores of every item for
  ``users`` (``items=None``), or ``[B, C]`` scores of candidate items ``items [B, C]``;
* ``train_behaviors``: the behaviors its loss needs triples for.

The :class:`~mbgraph.training.Trainer` and the evaluators use nothing else.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from ..data.adjacency import BehaviorAdjacency
from ..data.multiplex import behaviors_of, num_users_items
from ..data.sampling import DEFAULT_BATCH_SIZE, BPRSampler


class GraphRecommender(nn.Module):
    """Base of the graph models: user and item embedding tables (Xavier-initialised, as
    PKEF/COPF), the cached sparse operators of the training graph, and scoring from the final
    user/item embeddings of the target behavior.

    Subclasses implement :meth:`propagate` returning ``(user_emb [U, d], item_emb [I, d])``
    for the target behavior (or override :meth:`target_embeddings`). During evaluation
    (``model.eval()``) the propagated embeddings are computed once and reused for every batch
    of users; ``model.train()`` drops them.
    """

    #: ``init``: Xavier-uniform tables (PKEF, COPF, CRGCN), or normal with std 0.01 (the
    #: MB-CGCN code's ``tf.random_normal_initializer(stddev=0.01)``)
    INITS = ('xavier', 'normal')

    def __init__(self, data: HeteroData, embedding_dim: int = 64,
                 adjacency: Optional[BehaviorAdjacency] = None, init: str = 'xavier'):
        super().__init__()
        if embedding_dim <= 0:
            raise ValueError(f'embedding_dim must be positive, got {embedding_dim}')
        if init not in self.INITS:
            raise ValueError(f'unknown init {init!r}; expected one of {list(self.INITS)}')
        self.init = init
        self.behaviors: List[str] = behaviors_of(data)
        self.target = self.behaviors[-1]
        self.num_users, self.num_items = num_users_items(data)
        self.embedding_dim = embedding_dim
        self.user_emb = nn.Embedding(self.num_users, embedding_dim)
        self.item_emb = nn.Embedding(self.num_items, embedding_dim)
        self.adjacency = adjacency if adjacency is not None else BehaviorAdjacency(data)
        self._eval_cache: Optional[Tuple[Tensor, Tensor]] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for table in (self.user_emb.weight, self.item_emb.weight):
            if getattr(self, 'init', 'xavier') == 'normal':
                nn.init.normal_(table, std=0.01)
            else:
                nn.init.xavier_uniform_(table)

    @property
    def device(self) -> torch.device:
        return self.user_emb.weight.device

    def ego_embeddings(self) -> Tensor:
        """Initial embeddings of all nodes, users first: ``[U + I, d]``."""
        return torch.cat([self.user_emb.weight, self.item_emb.weight], dim=0)

    def operators_on_device(self) -> BehaviorAdjacency:
        """The cached operators, moved (once) to the model's device."""
        if self.adjacency.device != self.device:
            self.adjacency.to(self.device)
        return self.adjacency

    def split(self, nodes: Tensor) -> Tuple[Tensor, Tensor]:
        """``[U + I, d]`` -> ``([U, d], [I, d])``."""
        return nodes[:self.num_users], nodes[self.num_users:]

    def propagate(self) -> Tuple[Tensor, Tensor]:
        raise NotImplementedError

    def target_embeddings(self) -> Tuple[Tensor, Tensor]:
        """Final user and item embeddings used for scoring (cached in eval mode)."""
        if self.training:
            return self.propagate()
        if self._eval_cache is None:
            self._eval_cache = self.propagate()
        return self._eval_cache

    def train(self, mode: bool = True):
        self._eval_cache = None
        return super().train(mode)

    @property
    def fresh_scores(self) -> bool:
        """``score(users)`` returns a new tensor every call, so the evaluator may set the
        masked items to -inf in place instead of cloning the ``[B, num_items]`` rows first
        (~13% of a LightGCN evaluation pass). True for this class's :meth:`score` (an inner
        product); a subclass that overrides :meth:`score` is not assumed fresh."""
        return type(self).score is GraphRecommender.score

    def score(self, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        user_final, item_final = self.target_embeddings()
        u = user_final[users]
        if items is None:
            return u @ item_final.t()
        return (u.unsqueeze(1) * item_final[items]).sum(-1)

    def batch_source(self, data: HeteroData, batch_size: int = DEFAULT_BATCH_SIZE,
                     seed: int = 0):
        """The training batch source this model's :meth:`loss` expects (BPR triples of
        :attr:`train_behaviors` by default)."""
        return BPRSampler(data, self.train_behaviors, batch_size=batch_size, seed=seed)

    def extra_repr(self) -> str:
        return (f'users={self.num_users}, items={self.num_items}, dim={self.embedding_dim}, '
                f'behaviors={self.behaviors}')
