r"""A trained model's score plus the user's own history: the benchmark's shortcut, used openly.

On the papers' Taobao files 81.9% of the test buys are items the same user viewed in training,
and the full-ranking protocol leaves those items among the candidates
(:mod:`mbgraph.data.shortcuts`). A model that ranks the user's own items first is rewarded for
it whether or not it learned anything about preferences. :class:`HistoryHybrid` makes that
signal an explicit, measured part of a model instead of something a graph model half-learns
through its auxiliary-behavior propagation, so that the two questions stay apart:

* the pure models answer "how well does the model rank items from the learned preferences";
* a hybrid answers "how well can one rank the test buys when the history shortcut is
  exploited", the question training-free rankers such as CascadingRank answer too.

``build_model('hybrid:lightgcn', data)`` (``mbgraph train --model hybrid:pkef``) wraps any
registered model.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from ..data.multiplex import behaviors_of, edge_type, num_users_items
from ..data.sampling import DEFAULT_BATCH_SIZE
from ..losses import bpr_loss

#: the registry prefix: ``'hybrid:' + base model name``
PREFIX = 'hybrid:'


class _UserItems:
    """The training items of one behavior per user: sorted keys ``u * I + i`` for membership
    tests of (user, item) pairs and a per-user CSR for scattering into score rows."""

    def __init__(self, edge_index: Tensor, num_users: int, num_items: int):
        keys = torch.unique(edge_index[0].long() * num_items + edge_index[1].long())
        self.num_items = num_items
        self.keys = keys                                  # sorted
        self.items = keys % num_items
        self.ptr = torch.zeros(num_users + 1, dtype=torch.long)
        self.ptr[1:] = torch.cumsum(torch.bincount(keys // num_items, minlength=num_users), 0)

    def to(self, device) -> '_UserItems':
        self.keys, self.items, self.ptr = (t.to(device) for t in (self.keys, self.items,
                                                                  self.ptr))
        return self

    def contains(self, users: Tensor, items: Tensor) -> Tensor:
        """Float ``1.0`` where the user had the item, same shape as ``users``."""
        if self.keys.numel() == 0:
            return torch.zeros(users.shape, device=users.device)
        q = users.long() * self.num_items + items.long()
        pos = torch.searchsorted(self.keys, q).clamp_max(self.keys.numel() - 1)
        return (self.keys[pos] == q).float()

    def rows(self, users: Tensor) -> Tuple[Tensor, Tensor]:
        """``(row, item)`` of every training item of ``users``, row = position in ``users``."""
        start, end = self.ptr[users], self.ptr[users + 1]
        lengths = end - start
        row = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), lengths)
        offset = torch.arange(int(lengths.sum()), device=users.device) - \
            torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        return row, self.items[torch.repeat_interleave(start, lengths) + offset]


class HistoryHybrid(nn.Module):
    r"""Any model's score, standardised per user, plus a learned bias per auxiliary behavior
    for the items the user had under it in training.

    With :math:`f(u, i)` the base model's score, :math:`\mu_u, \sigma_u` its mean and standard
    deviation over all items for user :math:`u`, and :math:`h_k(u, i) \in \{0, 1\}` whether
    :math:`u` had :math:`i` under auxiliary behavior :math:`k` (every behavior but the target)
    in training,

    .. math::
        s(u, i) = \frac{f(u, i) - \mu_u}{\sigma_u} + \sum_{k < K} b_k\, h_k(u, i),
        \qquad b_k = \beta\, \theta_k

    Design choices:

    * **Standardised base score.** The models' raw scores live on arbitrary, per-user scales
      (dot products grow with the embedding norms); after standardisation :math:`b_k` is in
      units of "standard deviations of the user's scores", one scale for every base model and
      user, so a bias learned for one user means the same for another.
    * **One bias per behavior, no count term.** The loaders keep one pair per (user, item,
      behavior), so the only "count" is the number of auxiliary behaviors, which the sum of
      the per-behavior biases already spans. A carted-and-viewed item gets
      :math:`b_{pv} + b_{cart}`.
    * **Trained jointly, the base detached.** The loss is the base model's own loss plus BPR
      on the hybrid score of the target's training triples,
      :math:`-\ln\sigma(s(u, i) - s(u, j))`, with the standardised base score computed
      without gradient: the base model trains exactly as it would alone (same loss, same
      batches, same parameters), and the biases learn how much the history is worth on top
      of it. The hybrid's base is therefore the pure model of the same run, and the two
      numbers compare the shortcut's worth, not two trainings. The cost is one more forward
      pass of the base per batch (the scores of the batch's users over all items, for
      :math:`\mu_u, \sigma_u`).
    * **Initial biases from the data.** :math:`b_k` starts at
      :math:`\ln(P[h_k = 1 \mid \text{training target pair}] /
      P[h_k = 1 \mid \text{random item}])` (the log-likelihood ratio of the history feature,
      clamped to [0, 10]), and :math:`b_k = \beta \theta_k` with :math:`\beta` =
      ``bias_scale`` lets one Adam step at the base model's learning rate move :math:`b_k` by
      :math:`\beta` times as much: a few parameters need not wait the base's hundreds of steps.
    * The training target pairs are the data that fit the biases. The base model fits those
      same pairs, so their standardised base scores are higher than a held-out pair's: the
      biases are if anything underestimated for the test. The validation split (when there is
      one) stays for early stopping.

    A training-free base (``'hybrid:cascadingrank'``) works too: only the biases train, on
    BPR triples of the target drawn by :class:`~mbgraph.data.sampling.BPRSampler`.

    Args:
        data: the multiplex graph (at least one auxiliary behavior).
        base: the base model's registry name (``'lightgcn'``, ``'pkef'``, ``'mbcgcn+dfme'``,
            ...) or a built model.
        standardise: standardise the base score per user (else the raw score is used).
        bias_scale: :math:`\beta`.
        bias_reg: L2 weight on :math:`b_k` in the loss.
        init_bias: ``'data'`` (the log-likelihood ratio above) or ``'zero'``.
        **base_kwargs: the base model's hyperparameters (``embedding_dim``, ``num_layers``,
            ``reg``, ``reading``, ``encoder.*``, ...).
    """

    def __init__(self, data: HeteroData, base: Any = 'lightgcn', standardise: bool = True,
                 bias_scale: float = 10.0, bias_reg: float = 0.0, init_bias: str = 'data',
                 **base_kwargs):
        super().__init__()
        self.behaviors = behaviors_of(data)
        self.target = self.behaviors[-1]
        self.aux = self.behaviors[:-1]
        if not self.aux:
            raise ValueError(f'HistoryHybrid needs at least one auxiliary behavior for a '
                             f'history; the data has only {self.behaviors}')
        if bias_scale <= 0:
            raise ValueError(f'bias_scale must be > 0, got {bias_scale}')
        if bias_reg < 0:
            raise ValueError(f'bias_reg must be >= 0, got {bias_reg}')
        if init_bias not in ('data', 'zero'):
            raise ValueError(f"init_bias must be 'data' or 'zero', got {init_bias!r}")
        self.num_users, self.num_items = num_users_items(data)
        if isinstance(base, str):
            if base.lower().startswith(PREFIX):
                raise ValueError(f'the base of a hybrid cannot be a hybrid, got {base!r}')
            from . import build_model
            self.base_name = base.lower()
            self.base = build_model(base, data, **base_kwargs)
        else:
            if base_kwargs:
                raise ValueError(f'options {sorted(base_kwargs)} are for building the base '
                                 'model; the given base is already built')
            self.base_name = type(base).__name__.lower()
            self.base = base
        self.standardise = bool(standardise)
        self.bias_scale, self.bias_reg = float(bias_scale), float(bias_reg)
        self.init_bias = init_bias
        self.history = [_UserItems(data[edge_type(b)].edge_index, self.num_users,
                                   self.num_items) for b in self.aux]
        self._history_device = torch.device('cpu')
        self.theta = nn.Parameter(torch.zeros(len(self.aux)))
        self._initial = self._data_bias(data) if init_bias == 'data' else \
            torch.zeros(len(self.aux))
        self.reset_parameters()
        base_train = list(getattr(self.base, 'train_behaviors', []))
        self.train_behaviors = base_train + ([self.target] if self.target not in base_train
                                             else [])

    def _data_bias(self, data: HeteroData) -> Tensor:
        """:math:`\\ln(P[h_k \\mid \\text{target pair}] / P[h_k \\mid \\text{random item}])`
        per auxiliary behavior, clamped to [0, 10]."""
        users, items = data[edge_type(self.target)].edge_index
        out = []
        for h in self.history:
            hit = float(h.contains(users, items).mean()) if users.numel() else 0.0
            density = h.keys.numel() / float(self.num_users * self.num_items)
            ratio = (hit + 1e-9) / (density + 1e-9)
            out.append(min(10.0, max(0.0, math.log(ratio))))
        return torch.tensor(out)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.theta.copy_(self._initial / self.bias_scale)
        if hasattr(self.base, 'reset_parameters'):
            self.base.reset_parameters()

    # ---- the base model's settings, as the CLI and the Trainer read them ----------------
    @property
    def schedule(self) -> Optional[Dict[str, Any]]:
        return getattr(self.base, 'schedule', None)

    @property
    def batches(self) -> Optional[Dict[str, Any]]:
        return getattr(self.base, 'batches', None)

    @property
    def reading(self) -> Optional[str]:
        return getattr(self.base, 'reading', None)

    @property
    def device(self) -> torch.device:
        return self.theta.device

    @property
    def bias(self) -> Tensor:
        """:math:`b_k`, one per auxiliary behavior (upstream -> downstream)."""
        return self.bias_scale * self.theta

    def batch_source(self, data: HeteroData, batch_size: int = DEFAULT_BATCH_SIZE,
                     seed: int = 0):
        source = self.base.batch_source(data, batch_size=batch_size, seed=seed) \
            if hasattr(self.base, 'batch_source') else None
        if source is None:         # a training-free base: the biases' own target triples
            from ..data.sampling import BPRSampler
            return BPRSampler(data, [self.target], batch_size=batch_size, seed=seed)
        sampled = getattr(source, 'behaviors', None)
        if sampled is not None and self.target not in sampled:
            raise ValueError(f'the hybrid trains its biases on target triples, but the base '
                             f'model {self.base_name!r} samples only {list(sampled)}')
        return source

    def prepare_eval(self, split: str) -> None:
        if hasattr(self.base, 'prepare_eval'):
            self.base.prepare_eval(split)

    def _histories(self):
        if self._history_device != self.device:
            self.history = [h.to(self.device) for h in self.history]
            self._history_device = self.device
        return self.history

    # ---- scores --------------------------------------------------------------------------
    def base_scores(self, users: Tensor) -> Tensor:
        """``[B, num_items]`` base scores, standardised per user (if ``standardise``)."""
        scores = self.base.score(users).float()
        if not self.standardise:
            return scores
        mean = scores.mean(1, keepdim=True)
        std = scores.std(1, keepdim=True).clamp_min(1e-8)
        return (scores - mean) / std

    def history_bonus(self, users: Tensor, items: Tensor) -> Tensor:
        r""":math:`\sum_k b_k h_k(u, i)` for pairs (any shape, ``users`` like ``items``)."""
        bias = self.bias
        out = torch.zeros(items.shape, device=items.device)
        for k, h in enumerate(self._histories()):
            out = out + bias[k] * h.contains(users.expand_as(items), items)
        return out

    def score(self, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        users = users.to(self.device)
        scores = self.base_scores(users)
        bias = self.bias.detach().to(scores.dtype)
        for k, h in enumerate(self._histories()):
            row, item = h.rows(users)
            scores[row, item] += bias[k]
        if items is None:
            return scores
        return scores.gather(1, items.to(scores.device))

    def loss(self, batch):
        trains_base = any(p.requires_grad for p in self.base.parameters())
        if trains_base:
            out = self.base.loss(batch)
            base_loss, parts = out if isinstance(out, tuple) else (out, {})
            parts = dict(parts)
        else:
            base_loss, parts = torch.zeros((), device=self.device), {}
        users, pos, neg = (t.to(self.device) for t in batch[self.target])
        with torch.no_grad():                        # the base trains as it would alone
            uniq, inverse = torch.unique(users, return_inverse=True)
            z = self.base_scores(uniq)
            z_pos, z_neg = z[inverse, pos], z[inverse, neg]
        hybrid = bpr_loss(z_pos + self.history_bonus(users, pos),
                          z_neg + self.history_bonus(users, neg))
        total = base_loss + hybrid
        parts['hybrid_bpr'] = hybrid.detach()
        if self.bias_reg > 0:
            reg = self.bias_reg * (self.bias ** 2).sum()
            total = total + reg
            parts['hybrid_reg'] = reg.detach()
        return total, parts

    def extra_repr(self) -> str:
        biases = ', '.join(f'{b}={v:.3f}' for b, v in zip(self.aux, self.bias.tolist()))
        return (f'base={self.base_name!r}, standardise={self.standardise}, '
                f'bias_scale={self.bias_scale}, bias=({biases})')


def build_hybrid(name: str, data: HeteroData, **kwargs) -> HistoryHybrid:
    """``'hybrid:BASE'`` -> ``HistoryHybrid(data, base='BASE', **kwargs)``."""
    base = name[len(PREFIX):]
    if not base:
        raise ValueError(f"{name!r}: expected 'hybrid:BASE' with BASE a model name, e.g. "
                         "'hybrid:lightgcn'")
    return HistoryHybrid(data, base=base, **kwargs)


__all__ = ['HistoryHybrid', 'PREFIX', 'build_hybrid']
