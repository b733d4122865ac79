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
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

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


def batch_bounds(num_samples: int, batch_size: int, world_size: int = 1) -> List[Tuple[int, int]]:
    """``[start, end)`` of the global batches of an epoch of ``num_samples`` samples.

    Batches hold ``batch_size`` samples, the last one the rest. Split over ``world_size``
    ranks (each rank takes ``rank::world_size`` of a batch), a last batch of fewer than
    ``world_size`` samples would leave a rank with nothing (a NaN mean loss, and a rank that
    skips a step the others' gradient all-reduce waits for), so it is merged into the batch
    before it: nothing is dropped.
    """
    if world_size < 1:
        raise ValueError(f'world_size must be >= 1, got {world_size}')
    if batch_size < world_size:
        raise ValueError(f'a global batch of {batch_size} cannot give each of {world_size} '
                         'ranks a share: raise the batch size or use fewer processes')
    if num_samples < world_size:
        raise ValueError(f'an epoch of {num_samples} samples cannot give each of '
                         f'{world_size} ranks a share: use fewer processes')
    bounds = [(s, min(s + batch_size, num_samples)) for s in range(0, num_samples, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < world_size:
        bounds[-2:] = [(bounds[-2][0], num_samples)]
    return bounds


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
            raise ValueError(f'behaviors {empty} have no training pairs to sample from; '
                             'leave them out (--behaviors, or select_behaviors)')
        self.sets = {b: InteractionSet(e, self.num_items) for b, e in self.edges.items()}
        self.num_samples = int(num_samples if num_samples is not None
                               else data[edge_type(target_behavior(data))].edge_index.size(1))
        self.batch_size = int(batch_size)
        self.seed = int(seed)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def num_batches(self, world_size: int = 1) -> int:
        """Global batches per epoch when split over ``world_size`` ranks."""
        return len(batch_bounds(self.num_samples, self.batch_size, world_size))

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

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1,
                device: Optional[torch.device] = None) -> Iterator[Dict[str, Tensor]]:
        """Yield the batches of ``epoch``; with ``world_size > 1`` each rank gets the disjoint
        slice ``rank::world_size`` of every global batch (see :func:`batch_bounds`).
        ``device``: move the epoch's triples there once, before the first batch."""
        triples = self.epoch_triples(epoch)
        if device is not None:      # one copy per epoch, none inside the training steps
            triples = {b: t.to(device) for b, t in triples.items()}
        for start, end in batch_bounds(self.num_samples, self.batch_size, world_size):
            yield {b: t[:, start:end][:, rank::world_size] for b, t in triples.items()}


def _unique_negatives(users: Tensor, positives: Tensor, aux: InteractionSet,
                      task: InteractionSet, num_items: int,
                      generator: Optional[torch.Generator] = None,
                      max_rounds: int = 200) -> Tensor:
    r"""For each ``(users[n], positives[n])`` of :math:`\mathcal{T}_{k',k}` draw an item
    :math:`t` uniformly from :math:`O^-_k \cup (O^+_{k'} \cap O^+_k)`, i.e. reject :math:`t`
    when the user has it under ``task`` (:math:`k`) but not under ``aux`` (:math:`k'`).
    The positive itself is always admissible (it is in :math:`O^-_k`); a draw still rejected
    after ``max_rounds`` rounds falls back to it (a constant, gradient-free BPR term)."""
    neg = torch.randint(num_items, (users.numel(),), generator=generator)
    bad = task.contains(users, neg) & ~aux.contains(users, neg)
    rounds = 0
    while bool(bad.any()):
        rounds += 1
        if rounds > max_rounds:
            neg[bad] = positives[bad]
            break
        neg[bad] = torch.randint(num_items, (int(bad.sum()),), generator=generator)
        bad = task.contains(users, neg) & ~aux.contains(users, neg)
    return neg


class UniquePairSampler(BPRSampler):
    r"""The BPR triples of :class:`BPRSampler` plus the triples of PKEF's unique loss (eq 20)
    in the same batches, so that one batch source serves PKEF.

    For a pair of behaviors :math:`(k', k)`, :math:`k' \ne k`,

    .. math::
        \mathcal{T}_{k',k} = \{(u, s, t) \mid (u, s) \in O^+_{k'} \cap O^-_k,\
        (u, t) \in O^-_k \cup (O^+_{k'} \cap O^+_k)\}:

    positives are the pairs of :math:`k'` that are not pairs of :math:`k` ("``k'`` without
    ``k``"), negatives are drawn uniformly from the items the user has not interacted with
    under :math:`k`, or has under both behaviors (vectorised rejection sampling).

    Each batch is the :class:`BPRSampler` batch ``{behavior: [3, B]}`` plus
    ``batch['unique'] = {(k_prime, k): LongTensor [3, B_u]}`` (users, positives, negatives).
    Every epoch walks each pair's positives in a fresh random order (repeating the walk when
    there are fewer), ``unique_batch_size`` triples per pair and batch; with several ranks each
    gets the slice ``rank::world_size`` as for the BPR triples. The BPR triples are exactly
    those of a :class:`BPRSampler` with the same arguments (the unique triples use their own
    random stream).

    Args:
        data: a multiplex graph (see :mod:`mbgraph.data.multiplex`).
        behaviors: behaviors to sample BPR triples for (default all), e.g. the model's
            ``train_behaviors`` (those with :math:`\lambda_k \ne 0`).
        batch_size: BPR triples per behavior and batch.
        num_samples: BPR triples per behavior and epoch.
        seed: base seed.
        pairs: the :math:`(k', k)` to sample. Default: every ordered pair with :math:`k` in
            ``behaviors`` (eq 20 weighs :math:`\mathcal{T}_{k',k}` by :math:`\lambda_k`),
            :math:`k'` any other behavior of the data, and at least one "``k'`` without ``k``"
            pair (e.g. none for ``(buy, view)`` when every buy was viewed).
        unique_batch_size: triples per pair and batch (default ``batch_size``).
    """

    def __init__(self, data: HeteroData, behaviors: Optional[Sequence[str]] = None,
                 batch_size: int = 2048, num_samples: Optional[int] = None, seed: int = 0, *,
                 pairs: Optional[Sequence[Sequence[str]]] = None,
                 unique_batch_size: Optional[int] = None):
        super().__init__(data, behaviors, batch_size, num_samples, seed)
        known = behaviors_of(data)
        if 'unique' in known:
            raise ValueError("a behavior named 'unique' clashes with the batch key 'unique' of "
                             "UniquePairSampler; rename the behavior")
        self.unique_batch_size = int(unique_batch_size if unique_batch_size is not None
                                     else batch_size)
        if self.unique_batch_size <= 0:
            raise ValueError(f'unique_batch_size must be positive, got {self.unique_batch_size}')
        self.all_sets = {b: InteractionSet(data[edge_type(b)].edge_index, self.num_items)
                         for b in known}
        explicit = pairs is not None
        if pairs is None:
            pairs = [(kp, k) for k in self.behaviors for kp in known if kp != k]
        self.pairs: List[tuple] = []
        self.unique_edges: Dict[tuple, Tensor] = {}
        for pair in pairs:
            if len(pair) != 2 or pair[0] == pair[1] or any(b not in known for b in pair):
                raise ValueError(f'unique pair {tuple(pair)!r} must be two different behaviors '
                                 f'of {known}')
            kp, k = pair
            keys = self.all_sets[kp].keys
            users, items = keys // self.num_items, keys % self.num_items
            only = ~self.all_sets[k].contains(users, items)
            if not bool(only.any()):
                if explicit:
                    raise ValueError(f"unique pair ({kp!r}, {k!r}) has no training pair of "
                                     f"{kp!r} without {k!r} to sample")
                continue
            self.pairs.append((kp, k))
            self.unique_edges[(kp, k)] = torch.stack([users[only], items[only]])

    def unique_generator(self, epoch: int) -> torch.Generator:
        # a stream of its own, so that the BPR triples equal BPRSampler's
        mixed = (self.seed * 1_000_003 + int(epoch)) * 6_364_136_223_846_793_005 + 1_442_695_041
        return torch.Generator().manual_seed(mixed % (2 ** 63))

    def epoch_unique(self, epoch: int) -> Dict[tuple, Tensor]:
        """All unique-loss triples of ``epoch``: ``{(k_prime, k): [3, len(self) *
        unique_batch_size]}``."""
        g = self.unique_generator(epoch)
        total = len(self) * self.unique_batch_size
        out = {}
        for kp, k in self.pairs:
            e = self.unique_edges[(kp, k)]
            n = e.size(1)
            idx = torch.cat([torch.randperm(n, generator=g)
                             for _ in range(math.ceil(total / n))])[:total]
            users, pos = e[0, idx], e[1, idx]
            neg = _unique_negatives(users, pos, self.all_sets[kp], self.all_sets[k],
                                    self.num_items, g)
            out[(kp, k)] = torch.stack([users, pos, neg])
        return out

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1,
                device: Optional[torch.device] = None) -> Iterator[dict]:
        """The :class:`BPRSampler` batches of ``epoch``, each with ``'unique'`` added."""
        unique = self.epoch_unique(epoch)
        if device is not None:
            unique = {pair: t.to(device) for pair, t in unique.items()}
        step = self.unique_batch_size
        if step < world_size:
            raise ValueError(f'unique_batch_size {step} is smaller than the {world_size} ranks: '
                             'some ranks would get no unique-loss triples')
        last = self.num_batches(world_size) - 1
        for i, batch in enumerate(super().batches(epoch, rank, world_size, device)):
            # a merged last batch (see batch_bounds) takes the rest of the unique triples too
            end = (i + 1) * step if i < last else None
            batch['unique'] = {pair: t[:, i * step:end][:, rank::world_size]
                               for pair, t in unique.items()}
            yield batch

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(behaviors={self.behaviors}, '
                f'batch_size={self.batch_size}, num_samples={self.num_samples}, '
                f'pairs={self.pairs}, unique_batch_size={self.unique_batch_size})')
