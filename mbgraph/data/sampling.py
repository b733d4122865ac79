r"""Vectorised training-pair sampling.

* :class:`InteractionSet` -- membership of (user, item) pairs via sorted keys and
  ``torch.searchsorted`` (no Python sets, works on any device);
* :func:`sample_negatives` -- items a user has *not* interacted with under a behavior;
* :class:`BPRSampler` -- per-behavior BPR triples ``(u, i, j)`` for one epoch, in batches,
  seeded by ``(seed, epoch)`` so an epoch is reproducible (and a resumed run continues
  identically).
* :class:`UniquePairSampler` -- the BPR triples plus PKEF's unique-loss pairs (eq 20);
* :class:`UserBatchSampler` -- the PKEF / COPF authors' batches: 256 users a batch, up to 40
  positives per user and behavior drawn with replacement (the ``'code'`` readings); with
  ``draws='independent'`` MB-CGCN's (every batch a fresh sample of users), with
  ``negatives='any'`` CRGCN's (negatives not interacted under any behavior).
"""
from __future__ import annotations

import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .multiplex import behaviors_of, edge_type, num_users_items, target_behavior

#: BPR triples per behavior and step when neither the caller nor a model's reading says
DEFAULT_BATCH_SIZE = 2048


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


def _sampled_behaviors(known: List[str], behaviors: Optional[Sequence[str]]) -> List[str]:
    """``behaviors`` (default all of ``known``), each of which must be known."""
    out = list(known if behaviors is None else behaviors)
    unknown = [b for b in out if b not in known]
    if unknown:
        raise ValueError(f'cannot sample unknown behaviors {unknown}; the data has {known}')
    return out


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
                 batch_size: int = DEFAULT_BATCH_SIZE, num_samples: Optional[int] = None,
                 seed: int = 0):
        known = behaviors_of(data)
        self.behaviors: List[str] = _sampled_behaviors(known, behaviors)
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

    def triples_per_epoch(self, epoch: int = 1) -> Dict[str, int]:
        """Triples per behavior that an epoch draws."""
        return {b: self.num_samples for b in self.behaviors}

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
                 batch_size: int = DEFAULT_BATCH_SIZE, num_samples: Optional[int] = None,
                 seed: int = 0, *,
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

    def triples_per_epoch(self, epoch: int = 1) -> Dict[str, int]:
        """Triples per behavior and per unique pair (as ``"k'|k"``) that an epoch draws."""
        total = len(self) * self.unique_batch_size
        return {**super().triples_per_epoch(epoch), **{f'{kp}|{k}': total for kp, k in self.pairs}}

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


def _csr_from_keys(keys: Tensor, num_users: int, num_items: int) -> Tuple[Tensor, Tensor]:
    """``(indptr [U + 1], items)`` from sorted ``user * num_items + item`` keys: every user's
    items contiguous, in increasing order."""
    users, items = keys // num_items, keys % num_items
    counts = torch.bincount(users, minlength=num_users)
    indptr = torch.zeros(num_users + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr, items


def _draw_per_user(users: Tensor, indptr: Tensor, items: Tensor, cap: Tensor,
                   generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    r"""For each user ``users[n]`` draw ``cap[n]`` of its items (``indptr``/``items``)
    uniformly *with replacement*. Returns ``(slot_user_position [M], item [M])``, grouped by
    user in the order of ``users`` (``M = cap.sum()``)."""
    slot = torch.repeat_interleave(torch.arange(users.numel()), cap)
    u = users[slot]
    start, deg = indptr[u], indptr[u + 1] - indptr[u]
    offset = (torch.rand(slot.numel(), generator=generator, dtype=torch.float64)
              * deg).long().clamp_(max=(deg - 1).clamp(min=0))
    return slot, items[start + offset]


class UserBatchSampler:
    r"""The training batches of the PKEF and COPF authors' code: batches of *users*, not of
    pairs (REFERENCE_NOTES, "Training batches").

    An epoch is a seeded permutation of the users (all of them, or the first
    ``users_per_epoch``: PKEF's code samples 10,000), cut into batches of
    ``users_per_batch`` (256). For every user of a batch and every behavior :math:`k` in
    ``behaviors``, :math:`\min(P, |\mathcal{N}_k(u)|)` positives are drawn uniformly *with
    replacement* from the user's training items of :math:`k` (:math:`P` =
    ``max_positives``, 40), each with a negative drawn uniformly from the items the user has
    *not* interacted with under :math:`k`. A user without items of :math:`k` contributes no
    pair of :math:`k` (the code's ``sampleTrainBatch_ori``: its loop runs ``min(P, 0) = 0``
    times).

    ``unique='code'`` adds the pairs of PKEF's unique loss as the code samples them
    (``sampleTrainBatch``): for a task :math:`k` in ``behaviors`` and every other behavior
    :math:`k'` of the data that has at least one training pair "in :math:`k` but not in
    :math:`k'`", :math:`\min(P, |\mathcal{N}_k(u)|, |\mathcal{N}_{k \setminus k'}(u)|)`
    positives from the user's pairs in :math:`k \setminus k'` and negatives from the items
    *not* in :math:`k \setminus k'` for the user, under ``batch['unique'][(k', k)]`` (the key
    of :class:`~mbgraph.nn.heads.pme.PMEHead`: the residual of :math:`k'` against
    :math:`k`, weighted by :math:`\lambda_k`). The direction is the code's; the paper's eq 20
    (":math:`k'` without :math:`k`") is :class:`UniquePairSampler`.

    ``draws='independent'`` is MB-CGCN's code (``load_data.py`` ``sample``): an epoch is
    ``batches_per_epoch`` batches, each a fresh sample of ``users_per_batch`` distinct users
    (with replacement when the pool is smaller) from the users with a training item of a
    sampled behavior; ``batches_per_epoch='pairs'`` is the code's ``n_train // batch_size +
    1`` with ``n_train`` the training pairs of the first sampled behavior.
    ``negatives='any'`` draws each negative among the items the user has not interacted with
    under *any* behavior of the data (CRGCN's ``all_dict``), ``'behavior'`` under the triple's
    own behavior.

    Each batch is ``{behavior: LongTensor [3, n_k]}`` (users, positives, negatives; the
    triples grouped by user in batch order), plus ``'unique'`` with ``unique='code'`` and
    ``'users'`` (the batch's users on this rank, ``LongTensor [n]``) with
    ``batch_users=True`` (a loss averaged over the batch's users needs them: CRGCN).
    Everything is vectorised over a whole epoch and drawn from ``(seed, epoch)`` alone, so a
    resumed run draws the same batches. With ``world_size > 1`` rank ``r`` gets the triples of
    the batch's users at positions ``r, r + world_size, ...`` (disjoint, nothing dropped).

    Args:
        data: a multiplex graph.
        behaviors: behaviors to sample (default all), e.g. a model's ``train_behaviors``.
        users_per_batch: :math:`U`, users per (global) batch. (default: ``256``)
        max_positives: :math:`P`. (default: ``40``)
        users_per_epoch: users drawn per epoch (default: every user once).
        seed: base seed; epoch ``e`` uses ``seed * 1_000_003 + e``.
        unique: ``None`` or ``'code'`` (see above). (default: ``None``)
        draws: ``'permutation'`` or ``'independent'`` (see above). (default:
            ``'permutation'``)
        batches_per_epoch: ``draws='independent'`` only: an ``int`` or ``'pairs'``.
            (default: ``'pairs'``)
        negatives: ``'behavior'`` or ``'any'``. (default: ``'behavior'``)
        batch_users: add ``batch['users']``. (default: ``False``)
    """

    def __init__(self, data: HeteroData, behaviors: Optional[Sequence[str]] = None,
                 users_per_batch: int = 256, max_positives: int = 40,
                 users_per_epoch: Optional[int] = None, seed: int = 0,
                 unique: Optional[str] = None, draws: str = 'permutation',
                 batches_per_epoch: Optional[object] = None, negatives: str = 'behavior',
                 batch_users: bool = False):
        known = behaviors_of(data)
        if draws not in ('permutation', 'independent'):
            raise ValueError(f"draws must be 'permutation' or 'independent', got {draws!r}")
        if negatives not in ('behavior', 'any'):
            raise ValueError(f"negatives must be 'behavior' or 'any', got {negatives!r}")
        if batches_per_epoch is not None and draws != 'independent':
            raise ValueError("batches_per_epoch applies to draws='independent' only")
        self.behaviors: List[str] = _sampled_behaviors(known, behaviors)
        if users_per_batch <= 0:
            raise ValueError(f'users_per_batch must be positive, got {users_per_batch}')
        if max_positives <= 0:
            raise ValueError(f'max_positives must be positive, got {max_positives}')
        if unique not in (None, 'code'):
            raise ValueError(f"unique must be None or 'code', got {unique!r}")
        if 'unique' in known and unique is not None:
            raise ValueError("a behavior named 'unique' clashes with the batch key 'unique'; "
                             'rename the behavior')
        if 'users' in known and batch_users:
            raise ValueError("a behavior named 'users' clashes with the batch key 'users'; "
                             'rename the behavior')
        self.num_users, self.num_items = num_users_items(data)
        if users_per_epoch is None:
            users_per_epoch = self.num_users
        if not 0 < int(users_per_epoch):
            raise ValueError(f'users_per_epoch must be positive, got {users_per_epoch}')
        self.users_per_epoch = min(int(users_per_epoch), self.num_users)
        self.users_per_batch = int(users_per_batch)
        self.max_positives = int(max_positives)
        self.seed = int(seed)
        self.unique = unique
        sets = {b: InteractionSet(data[edge_type(b)].edge_index, self.num_items) for b in known}
        empty = [b for b in self.behaviors if len(sets[b]) == 0]
        if empty:
            raise ValueError(f'behaviors {empty} have no training pairs to sample from')
        self.sets = {b: sets[b] for b in self.behaviors}
        self.draws, self.negatives, self.batch_users = draws, negatives, bool(batch_users)
        if negatives == 'any':
            union = InteractionSet(torch.cat([data[edge_type(b)].edge_index for b in known], 1),
                                   self.num_items)
            self.reject = {b: union for b in self.behaviors}
        else:
            self.reject = dict(self.sets)
        if draws == 'independent':
            keys = torch.cat([self.sets[b].keys for b in self.behaviors])
            self.pool = torch.unique(keys // self.num_items)
            n = batches_per_epoch if batches_per_epoch is not None else 'pairs'
            if n == 'pairs':
                n = len(self.sets[self.behaviors[0]]) // self.users_per_batch + 1
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                raise ValueError(f"batches_per_epoch must be a positive int or 'pairs', got "
                                 f'{batches_per_epoch!r}')
            self.batches_per_epoch = n
            self.users_per_epoch = n * self.users_per_batch
        else:
            self.pool = None
            self.batches_per_epoch = None
        self.csr = {b: _csr_from_keys(sets[b].keys, self.num_users, self.num_items)
                    for b in self.behaviors}
        # (k', k) -> (InteractionSet, csr) of the pairs in k but not in k'
        self.unique_sets: Dict[tuple, InteractionSet] = {}
        self.unique_csr: Dict[tuple, Tuple[Tensor, Tensor]] = {}
        if unique == 'code':
            for k in self.behaviors:
                for kp in known:
                    if kp == k:
                        continue
                    keys = sets[k].keys
                    only = keys[~sets[kp].contains(keys // self.num_items,
                                                   keys % self.num_items)]
                    if only.numel() == 0:
                        continue
                    pair_set = InteractionSet(torch.stack([only // self.num_items,
                                                           only % self.num_items]),
                                              self.num_items)
                    self.unique_sets[(kp, k)] = pair_set
                    self.unique_csr[(kp, k)] = _csr_from_keys(pair_set.keys, self.num_users,
                                                              self.num_items)
        self.pairs: List[tuple] = list(self.unique_sets)

    def __len__(self) -> int:
        return math.ceil(self.users_per_epoch / self.users_per_batch)

    def num_batches(self, world_size: int = 1) -> int:
        if self.users_per_batch < world_size:
            raise ValueError(f'a batch of {self.users_per_batch} users cannot give each of '
                             f'{world_size} ranks a share: raise users_per_batch')
        return len(batch_bounds(self.users_per_epoch, self.users_per_batch, world_size))

    def generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))

    def triples_per_epoch(self, epoch: int = 1) -> Dict[str, int]:
        """Triples per behavior (and unique pair, as ``"k'|k"``) that ``epoch`` draws."""
        caps = self._caps(self.epoch_users(self.generator(epoch)))
        return {key if isinstance(key, str) else f'{key[0]}|{key[1]}': int(cap.sum())
                for key, cap in caps.items()}

    def _caps(self, users: Tensor) -> Dict:
        """Triples per user of ``users`` for every behavior and unique pair: min(P, the
        user's positives) (for a pair also at most the user's pairs of its task)."""
        def degree(indptr: Tensor) -> Tensor:
            return indptr[users + 1] - indptr[users]
        out: Dict = {b: degree(self.csr[b][0]).clamp(max=self.max_positives)
                     for b in self.behaviors}
        for pair in self.pairs:
            out[pair] = torch.minimum(degree(self.unique_csr[pair][0]),
                                      degree(self.csr[pair[1]][0])).clamp(max=self.max_positives)
        return out

    def epoch_users(self, generator: torch.Generator) -> Tensor:
        if self.draws == 'independent':
            n, size = self.pool.numel(), self.users_per_batch
            parts = [self.pool[torch.randperm(n, generator=generator)[:size]] if size <= n
                     else self.pool[torch.randint(n, (size,), generator=generator)]
                     for _ in range(self.batches_per_epoch)]
            return torch.cat(parts)
        return torch.randperm(self.num_users, generator=generator)[:self.users_per_epoch]

    def _sample(self, users: Tensor, indptr: Tensor, items: Tensor, cap: Tensor,
                reject: InteractionSet, g: torch.Generator) -> Tuple[Tensor, Tensor]:
        """``(position of each triple's user in users, [3, M] triples)``."""
        slot, pos = _draw_per_user(users, indptr, items, cap, g)
        u = users[slot]
        neg = sample_negatives(u, reject, self.num_items, g)
        return slot, torch.stack([u, pos, neg])

    def epoch_batches(self, epoch: int, world_size: int = 1):
        """``(bounds, {key: (slot, triples)})`` of a whole epoch, ``key`` a behavior or a
        unique pair; ``slot`` is the position of each triple's user in the epoch's user order.
        """
        g = self.generator(epoch)
        users = self.epoch_users(g)
        caps = self._caps(users)
        out = {}
        for b in self.behaviors:
            out[b] = self._sample(users, *self.csr[b], caps[b], self.reject[b], g)
        for pair in self.pairs:
            out[pair] = self._sample(users, *self.unique_csr[pair], caps[pair],
                                     self.unique_sets[pair], g)
        if self.batch_users:
            out['users'] = (torch.arange(users.numel()), users.view(1, -1))
        return batch_bounds(self.users_per_epoch, self.users_per_batch, world_size), out

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1,
                device: Optional[torch.device] = None) -> Iterator[Dict]:
        """Yield the batches of ``epoch`` (this rank's share with ``world_size > 1``)."""
        bounds, drawn = self.epoch_batches(epoch, world_size)
        if device is not None:
            drawn = {key: (slot, t.to(device)) for key, (slot, t) in drawn.items()}
        # triples are grouped by user in epoch order: a batch is a contiguous range
        ranges = {key: torch.searchsorted(slot, torch.tensor([s for s, _ in bounds] +
                                                             [bounds[-1][1]]))
                  for key, (slot, _) in drawn.items()}
        for i, (start, _) in enumerate(bounds):
            batch: Dict = {}
            unique: Dict = {}
            for key, (slot, t) in drawn.items():
                lo, hi = int(ranges[key][i]), int(ranges[key][i + 1])
                part = t[:, lo:hi]
                if world_size > 1:
                    mine = ((slot[lo:hi] - start) % world_size == rank).to(part.device)
                    part = part[:, mine]
                if key == 'users':
                    part = part[0]
                (unique if isinstance(key, tuple) else batch)[key] = part
            if self.unique is not None:
                batch['unique'] = unique
            yield batch

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(behaviors={self.behaviors}, '
                f'users_per_batch={self.users_per_batch}, max_positives={self.max_positives}, '
                f'users_per_epoch={self.users_per_epoch}, unique={self.unique!r}, '
                f'draws={self.draws!r}, negatives={self.negatives!r})')
