r"""Vectorised training-pair sampling.

* :class:`InteractionSet` -- membership of (user, item) pairs via sorted keys and
  ``torch.searchsorted`` (no Python sets, works on any device);
* :func:`sample_negatives` -- items a user has *not* interacted with under a behavior;
* :class:`BPRSampler` -- per-behavior BPR triples ``(u, i, j)`` for one epoch, in batches,
  seeded by ``(seed, epoch)`` so an epoch is reproducible (and a resumed run continues
  identically).
"""
from __future__ import annotations

import math
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .multiplex import behaviors_of, edge_type, num_users_items, target_behavior


class InteractionSet:
    """The set of (user, item) pairs in ``edge_index`` (``[2, E]``), for fast membership."""

    def __init__(self, edge_index: Tensor, num_items: int):
        self.num_items = int(num_items)
        self.keys = torch.unique(edge_index[0].long() * self.num_items + edge_index[1].long())

    def __len__(self) -> int:
        return self.keys.numel()

    def contains(self, users: Tensor, items: Tensor) -> Tensor:
        """Boolean tensor: is ``(users[k], items[k])`` in the set (broadcasts)."""
        q = users.long() * self.num_items + items.long()
        if self.keys.numel() == 0:
            return torch.zeros_like(q, dtype=torch.bool)
        keys = self.keys.to(q.device)
        pos = torch.searchsorted(keys, q.reshape(-1)).clamp_(max=keys.numel() - 1)
        return (keys[pos] == q.reshape(-1)).view(q.shape)

    def to(self, device) -> 'InteractionSet':
        self.keys = self.keys.to(device)
        return self


def sample_negatives(users: Tensor, positives: InteractionSet, num_items: int,
                     generator: Optional[torch.Generator] = None, num: int = 1,
                     max_rounds: int = 200) -> Tensor:
    """For each user draw ``num`` items uniformly among those it has not interacted with
    (rejection sampling, vectorised). Returns ``[len(users)]`` if ``num == 1`` else
    ``[len(users), num]``. Raises ``ValueError`` naming a user who interacted with every item.
    """
    shape = (users.numel(),) if num == 1 else (users.numel(), num)
    u = users.reshape(-1, 1).expand(users.numel(), num).reshape(shape)
    neg = torch.randint(num_items, shape, generator=generator)
    bad = positives.contains(u, neg)
    rounds = 0
    while bool(bad.any()):
        rounds += 1
        if rounds > max_rounds:
            stuck = u[bad].unique()[:5].tolist()
            raise ValueError(f'could not sample a negative item for users {stuck} after '
                             f'{max_rounds} rounds: they have interacted with (nearly) every one '
                             f'of the {num_items} items')
        neg[bad] = torch.randint(num_items, (int(bad.sum()),), generator=generator)
        bad = positives.contains(u, neg)
    return neg


class BPRSampler:
    """BPR triples for every behavior in ``behaviors``, ``batch_size`` per behavior and batch.

    One epoch draws ``num_samples`` triples per behavior (default: the number of training pairs
    of the target behavior), walking each behavior's training pairs in a fresh random order
    (repeating the walk for behaviors with fewer pairs), and pairs each positive with an item
    the user has not interacted with under that behavior.

    Each batch is ``{behavior: LongTensor [3, B]}`` with rows (users, positives, negatives).

    Args:
        data: a multiplex graph (see :mod:`mbgraph.data.multiplex`).
        behaviors: behaviors to sample (default all of ``data.behaviors``).
        batch_size: triples per behavior and batch (global, over all ranks).
        num_samples: triples per behavior and epoch.
        seed: base seed; epoch ``e`` uses ``seed * 1_000_003 + e``.
    """

    def __init__(self, data: HeteroData, behaviors: Optional[Sequence[str]] = None,
                 batch_size: int = 2048, num_samples: Optional[int] = None, seed: int = 0):
        known = behaviors_of(data)
        self.behaviors: List[str] = list(known if behaviors is None else behaviors)
        unknown = [b for b in self.behaviors if b not in known]
        if unknown:
            raise ValueError(f'cannot sample unknown behaviors {unknown}; the data has {known}')
        if batch_size <= 0:
            raise ValueError(f'batch_size must be positive, got {batch_size}')
        self.num_users, self.num_items = num_users_items(data)
        self.edges: Dict[str, Tensor] = {b: data[edge_type(b)].edge_index for b in self.behaviors}
        empty = [b for b, e in self.edges.items() if e.size(1) == 0]
        if empty:
            raise ValueError(f'behaviors {empty} have no training pairs to sample from')
        self.sets = {b: InteractionSet(e, self.num_items) for b, e in self.edges.items()}
        self.num_samples = int(num_samples if num_samples is not None
                               else data[edge_type(target_behavior(data))].edge_index.size(1))
        self.batch_size = int(batch_size)
        self.seed = int(seed)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))

    def epoch_triples(self, epoch: int) -> Dict[str, Tensor]:
        """All triples of ``epoch``: ``{behavior: [3, num_samples]}``."""
        g = self.generator(epoch)
        out = {}
        for b in self.behaviors:
            e = self.edges[b]
            n = e.size(1)
            walks = math.ceil(self.num_samples / n)
            idx = torch.cat([torch.randperm(n, generator=g) for _ in range(walks)])
            idx = idx[:self.num_samples]
            users, pos = e[0, idx], e[1, idx]
            neg = sample_negatives(users, self.sets[b], self.num_items, g)
            out[b] = torch.stack([users, pos, neg])
        return out

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[Dict[str, Tensor]]:
        """Yield the batches of ``epoch``; with ``world_size > 1`` each rank gets the disjoint
        slice ``rank::world_size`` of every global batch."""
        triples = self.epoch_triples(epoch)
        for start in range(0, self.num_samples, self.batch_size):
            yield {b: t[:, start:start + self.batch_size][:, rank::world_size]
                   for b, t in triples.items()}
