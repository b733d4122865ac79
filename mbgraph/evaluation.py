r"""Top-K evaluation shared by the graph and sequence models.

Two protocols:

* :class:`FullRankingEvaluator` -- rank *all* items for each user with a held-out pair of the
  target behavior, with the user's other known target items masked (its training items of the
  target behavior, and the other held-out split's item): the protocol of PKEF, COPF, CRGCN, MBGCN.
  ``mask_behaviors='all'`` masks the user's training items of every behavior as well (the
  candidates are then the items the user never met, as sampled negatives are).
* :class:`SampledEvaluator` -- rank the held-out item among ``num_negatives`` seeded random items
  the user never interacted with (MB-GMN, KHGT, HMAR: 99; DPCPL: 100; PoMRec: 999).

Both turn scores into top-K index lists and hand them to
:class:`torch_geometric.metrics.LinkPredMetricCollection` (HR@K, NDCG@K, Recall@K): no
hand-written metric math. A model only needs ``score(users, items=None)`` returning
``[B, num_items]`` scores (``items=None``) or ``[B, C]`` scores for candidate items ``[B, C]``.
A model whose ``score(users)`` is a new tensor every call may say so with
``fresh_scores = True`` (``GraphRecommender``'s inner product does): its rows are masked in
place instead of cloned first. A model that scores from context that differs per split (a
sequence model reads the history before the held-out item) may define
``prepare_eval(split)``; the evaluator calls it with its split name (``'val'``, ``'test'`` or
``None``) before scoring.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.metrics import (
    LinkPredHitRatio,
    LinkPredMetricCollection,
    LinkPredNDCG,
    LinkPredRecall,
)

from . import distributed as dist_utils
from .data.multiplex import (
    SPLITS,
    behaviors_of,
    edge_type,
    num_users_items,
    split_edge_index,
    target_behavior,
)
from .data.sampling import InteractionSet, sample_negatives
from .data.shortcuts import met_in_training

METRICS = {'hr': LinkPredHitRatio, 'ndcg': LinkPredNDCG, 'recall': LinkPredRecall}


def metric_collection(ks: Sequence[int] = (10,), metrics: Sequence[str] = ('hr', 'ndcg')
                      ) -> LinkPredMetricCollection:
    """A PyG metric collection named ``'hr@10'``, ``'ndcg@10'``, ..."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f'unknown metrics {unknown}; known: {sorted(METRICS)}')
    return LinkPredMetricCollection({f'{m}@{k}': METRICS[m](k) for m in metrics for k in ks})


def _group_pairs(pairs: Tensor):
    """Sort held-out pairs by user: (unique users, per-pair row index into them, items)."""
    order = torch.argsort(pairs[0], stable=True)
    users, items = pairs[0, order], pairs[1, order]
    uniq, row = torch.unique_consecutive(users, return_inverse=True)
    return uniq, row, items


class _Evaluator:
    def __init__(self, pairs: Tensor, num_items: int, ks: Sequence[int],
                 metrics: Sequence[str], batch_size: int, split: Optional[str] = None):
        self.split = split
        if pairs is None or pairs.numel() == 0:
            raise ValueError('cannot evaluate on an empty split: it has no held-out pairs')
        self.users, self.rows, self.items = _group_pairs(pairs)
        self.num_items = int(num_items)
        self.ks = tuple(ks)
        self.metric_names = tuple(metrics)
        self.batch_size = int(batch_size)
        self.last_seconds: Optional[float] = None

    def _batches(self) -> Iterable[tuple]:
        for start in range(0, self.users.numel(), self.batch_size):
            users = self.users[start:start + self.batch_size]
            sel = (self.rows >= start) & (self.rows < start + users.numel())
            yield start, users, self.rows[sel] - start, self.items[sel]

    @torch.no_grad()
    def evaluate(self, model, device=None, distributed: Optional[bool] = None
                 ) -> Dict[str, float]:
        """Metrics of ``model`` as ``{'hr@10': ..., 'ndcg@10': ...}`` (floats).

        Inside a ``torch.distributed`` process group of several ranks (``distributed=None``
        detects it) every rank scores every ``world_size``-th batch of users and the metrics'
        sums and counts are added up over ranks, so all ranks return the metrics of the whole
        split (a collective: every rank must call it)."""
        if distributed is None:
            distributed = dist_utils.is_distributed()
        rank, world = dist_utils.rank_and_world_size() if distributed else (0, 1)
        was_training = model.training
        model.eval()
        if hasattr(model, 'prepare_eval'):
            model.prepare_eval(self.split)
        device = device or _device_of(model)
        collection = metric_collection(self.ks, self.metric_names).to(device)
        t0 = time.perf_counter()
        try:
            for i, (start, users, rows, items) in enumerate(self._batches()):
                if i % world != rank:
                    continue
                pred, labels = self._rank(model, start, users.to(device), rows.to(device),
                                          items.to(device))
                collection.update(pred, labels)
        finally:
            model.train(was_training)
        if world > 1:
            # PyG's link-prediction metrics are a sum (accum) over a count (total) of users
            names = list(collection.keys())
            state = torch.stack([torch.stack([collection[n].accum.double(),
                                              collection[n].total.double()]) for n in names])
            state = dist_utils.all_reduce_sum(state)
            out = {n: float(a / t) if t > 0 else 0.0 for n, (a, t) in zip(names, state.tolist())}
        else:
            out = {name: float(v) for name, v in collection.compute().items()}
        self.last_seconds = time.perf_counter() - t0
        return out


def _mask_behaviors(data: HeteroData, which: Optional[Union[str, Sequence[str]]]
                    ) -> Tuple[str, ...]:
    """The behaviors whose training pairs a full ranking masks: the target alone (``None``),
    every behavior (``'all'``) or the named ones (the target always among them)."""
    behaviors = behaviors_of(data)
    target = behaviors[-1]
    if which is None:
        return (target,)
    if isinstance(which, str):
        if which != 'all':
            raise ValueError(f"mask_behaviors must be None, 'all' or a list of behaviors, "
                             f"got {which!r}")
        return tuple(behaviors)
    unknown = [b for b in which if b not in behaviors]
    if unknown:
        raise ValueError(f'mask_behaviors names unknown behaviors {unknown}; the data has '
                         f'{behaviors}')
    return tuple(dict.fromkeys([*which, target]))


def _device_of(model) -> torch.device:
    """The device of a model's parameters, else of its buffers (training-free models have
    buffers only), else the CPU."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device('cpu')


class FullRankingEvaluator(_Evaluator):
    """Full ranking over all items on one split of the target behavior.

    Args:
        data: the multiplex graph.
        split: ``'val'`` or ``'test'``.
        ks: cut-offs K.
        metrics: any of ``'hr'``, ``'ndcg'``, ``'recall'``.
        batch_size: users scored at once.
        mask_other_split: also mask the user's pair of the other held-out split (it is a known
            positive, not a candidate); the training pairs of the target are always masked.
        mask_behaviors: ``None`` (the papers' protocol): only the target behavior's training
            pairs are masked; ``'all'`` or a list of behavior names: the training pairs of
            those behaviors are masked too, so that a user's candidates are the items it has
            not met in training (the full-ranking counterpart of sampled negatives, which are
            never items the user interacted with). The evaluated split's own held-out pairs
            are never masked: a held-out item the user also met under another behavior stays
            a candidate.
        novel_only: evaluate only the held-out pairs whose item the user met under no
            behavior in training (with ``mask_behaviors='all'``: every candidate, the
            held-out one included, is an item the user never met, so the user's history
            cannot single out the answer). Users left without a pair are not evaluated;
            :attr:`num_pairs` counts the pairs kept. Raises ``ValueError`` when none is left.
    """

    def __init__(self, data: HeteroData, split: str = 'test', ks: Sequence[int] = (10,),
                 metrics: Sequence[str] = ('hr', 'ndcg'), batch_size: int = 1024,
                 mask_other_split: bool = True,
                 mask_behaviors: Optional[Union[str, Sequence[str]]] = None,
                 novel_only: bool = False):
        pairs = split_edge_index(data, split)
        if pairs is None:
            raise ValueError(f'the data has no {split!r} split of target behavior '
                             f'{target_behavior(data)!r}')
        _, num_items = num_users_items(data)
        if novel_only:
            met = torch.stack(list(met_in_training(data, pairs).values())).any(dim=0)
            pairs = pairs[:, ~met]
            if pairs.size(1) == 0:
                raise ValueError(f'novel_only: every {split!r} pair is an item its user met '
                                 f'in training; none is left to evaluate')
        self.num_pairs = int(pairs.size(1))
        super().__init__(pairs, num_items, ks, metrics, batch_size, split)
        self.mask_behaviors = _mask_behaviors(data, mask_behaviors)    # the target among them
        masked = [data[edge_type(b)].edge_index for b in self.mask_behaviors]
        if mask_other_split:
            other = split_edge_index(data, [s for s in SPLITS if s != split][0])
            if other is not None:
                masked.append(other)
        self.mask = InteractionSet(torch.cat(masked, dim=1), num_items)
        if len(self.mask_behaviors) > 1:
            # another behavior's training pair may be the held-out pair itself: keep it
            held = pairs[0].long() * num_items + pairs[1].long()
            self.mask.keys = self.mask.keys[~torch.isin(self.mask.keys, held)]
        # per evaluated user: positions of its masked items, as a CSR-like (ptr, items) pair
        keys = self.mask.keys
        mu, mi = keys // num_items, keys % num_items
        keep = torch.isin(mu, self.users)
        self._mask_user_row = torch.searchsorted(self.users, mu[keep])
        self._mask_item = mi[keep]

    def _rank(self, model, start, users, rows, items):
        # a model whose score(users) is always a new tensor (GraphRecommender.fresh_scores)
        # is not cloned before its masked items are overwritten
        return self._rank_scores(model.score(users), start, users, rows, items,
                                 fresh=getattr(model, 'fresh_scores', False) is True)

    def _rank_scores(self, scores: Tensor, start, users, rows, items, fresh: bool = False):
        """Top-K of ``scores`` (``[B, num_items]``) with the masked items at -inf; ``fresh``:
        the tensor is the caller's to overwrite (else it is cloned first: a model may return
        a view of a cached table)."""
        if scores.shape != (users.numel(), self.num_items):
            raise ValueError(f'model.score returned shape {tuple(scores.shape)}, expected '
                             f'({users.numel()}, {self.num_items})')
        sel = (self._mask_user_row >= start) & (self._mask_user_row < start + users.numel())
        if not fresh:
            scores = scores.clone()
        scores[(self._mask_user_row[sel] - start).to(scores.device),
               self._mask_item[sel].to(scores.device)] = float('-inf')
        k = min(max(self.ks), self.num_items)
        pred = scores.topk(k, dim=1).indices
        return pred, torch.stack([rows, items])

    @torch.no_grad()
    def evaluate_variants(self, variants: Callable[[Tensor], Sequence[Tensor]],
                          num_variants: int, device=None) -> List[Dict[str, float]]:
        """Metrics of several rankings that share per-batch work, in one pass over the users.

        ``variants(users)`` returns (or yields: one at a time keeps memory flat)
        ``num_variants`` fresh ``[B, num_items]`` score tensors (overwritten here: masked
        items are set to -inf); e.g. blends of the same members'
        scores at several weights (:func:`mbgraph.models.blend.fit_blend_weights`), whose
        members are scored once per batch instead of once per variant. Returns one metrics
        dict per variant, in order. One process (no ``torch.distributed`` split)."""
        device = device or torch.device('cpu')
        collections = [metric_collection(self.ks, self.metric_names).to(device)
                       for _ in range(num_variants)]
        t0 = time.perf_counter()
        for start, users, rows, items in self._batches():
            users, rows, items = users.to(device), rows.to(device), items.to(device)
            count = 0
            for s in variants(users):       # one at a time: a generator keeps memory flat
                if count == num_variants:
                    raise ValueError(f'variants returned more than {num_variants} score '
                                     'tensors')
                collections[count].update(*self._rank_scores(s, start, users, rows, items,
                                                             fresh=True))
                count += 1
            if count != num_variants:
                raise ValueError(f'variants returned {count} score tensors, expected '
                                 f'{num_variants}')
        self.last_seconds = time.perf_counter() - t0
        return [{name: float(v) for name, v in c.compute().items()} for c in collections]


class SampledEvaluator(_Evaluator):
    """Rank each held-out item among ``num_negatives`` items the user never interacted with.

    Negatives are drawn once, seeded, from items absent from ``exclude`` for that user (all of
    its known interactions), so every evaluation of every model sees the same candidates.

    Args:
        pairs: held-out ``[2, N]`` (user, item) pairs.
        num_items: item count.
        exclude: ``[2, E]`` pairs the negatives must avoid (the user's whole history).
        num_negatives: candidates besides the positive (99, 100, 999 in the papers).
        split: the split name handed to ``model.prepare_eval`` (if the model has it).
    """

    def __init__(self, pairs: Tensor, num_items: int, exclude: Tensor,
                 num_negatives: int = 99, ks: Sequence[int] = (10,),
                 metrics: Sequence[str] = ('hr', 'ndcg'), batch_size: int = 1024, seed: int = 0,
                 split: Optional[str] = None):
        super().__init__(pairs, num_items, ks, metrics, batch_size, split)
        if num_negatives <= 0:
            raise ValueError(f'num_negatives must be positive, got {num_negatives}')
        if num_negatives >= num_items:
            raise ValueError(f'num_negatives={num_negatives}: expected fewer than the '
                             f'{num_items} items (each negative is an item the user never '
                             'interacted with)')
        seen = InteractionSet(torch.cat([exclude, pairs], dim=1), num_items)
        g = torch.Generator().manual_seed(seed)
        pair_users = self.users[self.rows]
        neg = sample_negatives(pair_users, seen, num_items, g, num=num_negatives)
        neg = neg.view(-1, num_negatives)   # [N] when num_negatives == 1
        self.candidates = torch.cat([self.items.view(-1, 1), neg], dim=1)  # positive at column 0

    def _batches(self):
        # one row per held-out pair (a user may have several)
        for start in range(0, self.rows.numel(), self.batch_size):
            idx = torch.arange(start, min(start + self.batch_size, self.rows.numel()))
            yield start, self.users[self.rows[idx]], idx - start, self.candidates[idx]

    def _rank(self, model, start, users, rows, candidates):
        scores = model.score(users, candidates)
        if scores.shape != candidates.shape:
            raise ValueError(f'model.score(users, items) returned shape {tuple(scores.shape)}, '
                             f'expected {tuple(candidates.shape)}')
        k = min(max(self.ks), candidates.size(1))
        pred = scores.topk(k, dim=1).indices  # positions among the candidates
        return pred, torch.stack([rows, torch.zeros_like(rows)])
