r"""Any encoder x any head: :class:`MultiBehaviorModel`.

.. math::
    \mathcal{L} = \sum_k \lambda_k \mathcal{L}^k_{BPR}(\text{head}_k(\text{encoder}(\mathbf{E})))
    + \text{encoder/head loss terms} + \mu \lVert \mathbf{E}^{(0)}_{batch} \rVert^2

(PKEF eq 19-21, COPF eq 16-17). "MB-CGCN + DFME" or "PKEF + DFME" of COPF table 6 is one line::

    model = MultiBehaviorModel(data, MBCGCNEncoder(...), DFMEHead(...))

The model trains on :meth:`MultiBehaviorModel.batch_source`, which feeds what its head
declares it needs (:meth:`~mbgraph.nn.heads.base.MultiTaskHead.batch_needs`): a hand-built
``MultiBehaviorModel(data, encoder, PMEHead(...))`` gets PME's unique pairs as the named PKEF
does. A hand-built model takes the classes' defaults (the equations as printed); the named
models (``COPF(data)``, ``build_model('copf', data)``, ``mbgraph train --model copf``) take
a whole reading of :mod:`mbgraph.models.readings`, the same one in all three.
"""
from __future__ import annotations

import math
from typing import Any, Dict, FrozenSet, Mapping, Optional

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.sampling import DEFAULT_BATCH_SIZE, BPRSampler, UniquePairSampler, UserBatchSampler
from ..distributed import rank_and_world_size
from ..losses import bpr_loss, l2_loss
from ..nn.encoders.base import BehaviorEmbeddings, MultiBehaviorEncoder
from ..nn.heads.base import MultiTaskHead
from .base import GraphRecommender

#: ``reg_scope``: the batch's rows, the whole tables (+ gates), every parameter, the tables'
#: Frobenius norms (CRGCN's code)
REG_SCOPES = ('batch', 'tables', 'all', 'norms')
#: ``bpr_mean``: over a behavior's triples, or over the batch's users (CRGCN's code)
BPR_MEANS = ('triples', 'users')


class MultiBehaviorModel(GraphRecommender):
    """An encoder and a head trained jointly with per-behavior BPR losses.

    Args:
        data: the multiplex graph.
        encoder: a :class:`~mbgraph.nn.encoders.base.MultiBehaviorEncoder`.
        head: a :class:`~mbgraph.nn.heads.base.MultiTaskHead`.
        lambdas: loss coefficient :math:`\\lambda_k` per behavior (default: 1 for the target,
            and 1 for every other behavior); behaviors with :math:`\\lambda_k = 0` are not
            sampled.
        reg: L2 weight :math:`\\mu`.
        reg_scope: what the L2 term covers: ``'batch'``, the initial embeddings of the rows
            the batch used, :math:`\\frac{\\mu}{2B} \\sum \\lVert \\mathbf{e} \\rVert^2`
            (the BPR-MF convention); ``'tables'``, the whole user and item tables plus the
            head's :meth:`~mbgraph.nn.heads.base.MultiTaskHead.regularized_parameters` (the
            gates), :math:`\\mu \\sum \\lVert \\cdot \\rVert^2` at every step (the PKEF and
            COPF authors' code); ``'all'``, every parameter, :math:`\\mu
            \\lVert \\Theta \\rVert^2` (PKEF eq 21, COPF eq 17); ``'norms'``, the Frobenius
            norms (not squared) of the user and item tables divided by the item count plus
            one, :math:`\\mu (\\lVert \\mathbf{E}_U \\rVert_F + \\lVert \\mathbf{E}_I
            \\rVert_F) / (|\\mathcal{I}| + 1)` (CRGCN's ``EmbLoss``: its tables carry a padding
            row 0, the divisor is the padded item table's row count). ``'batch'`` also covers
            the encoder's ``regularized_parameters()`` (MB-CGCN's transforms in its code),
            over the same :math:`2B`.
        bpr_mean: ``'triples'``, each BPR term is the mean over the behavior's triples;
            ``'users'``, the sum over them divided by the batch's users (``batch['users']``),
            a user without a triple of the behavior counting :math:`\\log 2` (CRGCN's code:
            such a user's dummy triple ``[0, 0, 0]`` scores its positive and negative alike).
            Needs one triple per user and behavior at most.
        bpr_scale: factor on every BPR term, the head's unique and parallel terms included
            (the authors' code multiplies each by 3).
        embedding_dim: :math:`d`.

    Attributes:
        batches: the batch settings of the reading a named model was built under (``None``:
            pair batches of :data:`~mbgraph.data.sampling.DEFAULT_BATCH_SIZE` triples per behavior).
    """

    batches: Optional[Dict[str, Any]] = None

    def __init__(self, data: HeteroData, encoder: MultiBehaviorEncoder, head: MultiTaskHead,
                 lambdas: Optional[Mapping[str, float]] = None, reg: float = 1e-4,
                 embedding_dim: int = 64, reg_scope: str = 'batch', bpr_scale: float = 1.0,
                 bpr_mean: str = 'triples', **kwargs):
        super().__init__(data, embedding_dim, **kwargs)
        self.encoder = encoder
        self.head = head
        self.reg = reg
        if reg_scope not in REG_SCOPES:
            raise ValueError(f'unknown reg_scope {reg_scope!r}; expected one of '
                             f'{list(REG_SCOPES)}')
        self.reg_scope = reg_scope
        if bpr_mean not in BPR_MEANS:
            raise ValueError(f'unknown bpr_mean {bpr_mean!r}; expected one of {list(BPR_MEANS)}')
        self.bpr_mean = bpr_mean
        if not bpr_scale > 0:
            raise ValueError(f'bpr_scale must be > 0, got {bpr_scale}')
        self.bpr_scale = float(bpr_scale)
        if lambdas is not None and not isinstance(lambdas, Mapping):
            raise ValueError(f'lambdas must map behaviors to loss weights, e.g. '
                             f'{{{self.behaviors[-1]!r}: 1.0}}, got {lambdas!r} (with --set, '
                             'write the numbers out: 0.3333, not 1/3)')
        lambdas = dict(lambdas) if lambdas is not None else {b: 1.0 for b in self.behaviors}
        unknown = sorted(set(lambdas) - set(self.behaviors))
        if unknown:
            raise ValueError(f'loss coefficients given for unknown behaviors {unknown}; '
                             f'behaviors are {self.behaviors}')
        self.lambdas = {b: float(lambdas.get(b, 0.0)) for b in self.behaviors}
        if all(v == 0.0 for v in self.lambdas.values()):
            raise ValueError('every loss coefficient lambda_k is zero')
        self.train_behaviors = [b for b in self.behaviors if self.lambdas[b] != 0.0]
        # heads whose own loss terms are weighted by lambda_k (PME eq 18/20) share the model's
        if hasattr(head, 'set_default_lambdas'):
            head.set_default_lambdas({b: self.bpr_scale * v for b, v in self.lambdas.items()})

    def batch_needs(self) -> FrozenSet[str]:
        """The batch keys beyond the BPR triples that the encoder's and the head's loss terms
        read (:meth:`~mbgraph.nn.heads.base.MultiTaskHead.batch_needs`)."""
        needs = frozenset()
        for part in (self.encoder, self.head):
            declared = getattr(part, 'batch_needs', None)
            if declared is not None:
                needs |= declared()
        return needs

    def batch_source(self, data: HeteroData, batch_size: Optional[int] = None,
                     seed: int = 0):
        """The batch source that feeds this model's loss: heads that need the "k' without k"
        pairs (``'unique'``, PME's eq 20) get a
        :class:`~mbgraph.data.sampling.UniquePairSampler`, or their user-batch form; a model
        whose reading trains on the authors' user batches (``batches['kind'] == 'users'``) a
        :class:`~mbgraph.data.sampling.UserBatchSampler`; any other a
        :class:`~mbgraph.data.sampling.BPRSampler`. ``batch_size`` is triples per behavior for
        pair batches and users per batch for user batches (default: the reading's, else
        :data:`~mbgraph.data.sampling.DEFAULT_BATCH_SIZE`)."""
        settings = dict(self.batches or {'kind': 'pairs', 'batch_size': DEFAULT_BATCH_SIZE})
        needs = self.batch_needs()
        unknown = sorted(needs - {'unique'})
        if unknown:
            raise ValueError(f'no batch source feeds the batch keys {unknown} that the encoder '
                             'or head declares it needs')
        unique = 'unique' in needs
        if settings['kind'] == 'users':
            return UserBatchSampler(
                data, self.train_behaviors,
                users_per_batch=batch_size or settings['users_per_batch'],
                max_positives=settings['max_positives'],
                users_per_epoch=settings.get('users_per_epoch'), seed=seed,
                unique=settings.get('unique') if unique else None,
                draws=settings.get('draws', 'permutation'),
                batches_per_epoch=settings.get('batches_per_epoch'),
                negatives=settings.get('negatives', 'behavior'),
                batch_users=getattr(self, 'bpr_mean', 'triples') == 'users')
        batch_size = batch_size or settings.get('batch_size', DEFAULT_BATCH_SIZE)
        if unique:
            return UniquePairSampler(data, self.train_behaviors, batch_size=batch_size,
                                     seed=seed)
        return BPRSampler(data, self.train_behaviors, batch_size=batch_size, seed=seed)

    def embeddings(self) -> BehaviorEmbeddings:
        """Encoder then the head's whole-graph stage (cached in eval mode)."""
        if not self.training and self._eval_cache is not None:
            return self._eval_cache
        adjacency = self.operators_on_device()
        emb = self.head.precompute(self.encoder(self.ego_embeddings(), adjacency), adjacency)
        if not self.training:
            self._eval_cache = emb
        return emb

    def loss(self, batch: Dict[str, Any]):
        emb = self.embeddings()
        parts: Dict[str, Tensor] = {}
        total = None
        used = []
        per_user = self.bpr_mean == 'users'
        if per_user and 'users' not in batch:
            raise ValueError("bpr_mean='users' needs the batch's users (batch['users']): use a "
                             'UserBatchSampler with batch_users=True')
        for b in self.train_behaviors:
            users, pos, neg = batch[b]
            if users.numel() == 0 and not per_user:   # nobody in the batch has pairs of b
                continue
            scores = self.head(emb, users, torch.stack([pos, neg], dim=1), b)
            if per_user:
                n = batch['users'].numel()
                if users.numel() > n:
                    raise ValueError(f"bpr_mean='users' allows one triple per user and "
                                     f'behavior: {users.numel()} triples of {b} for {n} users')
                fit = (bpr_loss(scores[:, 0], scores[:, 1], reduction='sum')
                       + (n - users.numel()) * math.log(2.0)) / max(n, 1)
            else:
                fit = bpr_loss(scores[:, 0], scores[:, 1])
            term = self.bpr_scale * self.lambdas[b] * fit
            parts[f'bpr_{b}'] = term.detach()
            total = term if total is None else total + term
            used += [self.user_emb(users), self.item_emb(pos), self.item_emb(neg)]
        if total is None:
            total = self.user_emb.weight.new_zeros(())
        for name, term in {**self.encoder.loss_terms(emb, batch),
                           **self.head.loss_terms(emb, batch)}.items():
            parts[name] = term.detach()
            total = total + term
        reg = self.reg * self.l2_term(used)
        parts['reg'] = reg.detach()
        return total + reg, parts

    def l2_term(self, used) -> Tensor:
        """The L2 sum that ``reg`` weighs (``reg_scope``); ``used``: the batch's embeddings."""
        if self.reg_scope == 'batch':
            if not used:
                return self.user_emb.weight.new_zeros(())
            term = l2_loss(*used, batch_size=used[0].size(0))
            extra = self.encoder.regularized_parameters()
            if extra:   # whole parameters, over the global batch (one rank holds 1/world)
                world = rank_and_world_size()[1]
                term = term + l2_loss(*extra, batch_size=used[0].size(0) * world)
            return term
        if self.reg_scope == 'norms':
            return (self.user_emb.weight.norm() + self.item_emb.weight.norm()) / \
                (self.num_items + 1)
        if self.reg_scope == 'tables':
            params = [self.user_emb.weight, self.item_emb.weight,
                      *self.head.regularized_parameters()]
        else:
            params = [p for p in self.parameters() if p.requires_grad]
        return sum(p.pow(2).sum() for p in params)

    @property
    def fresh_scores(self) -> bool:
        """Whether :meth:`score` returns a new tensor every call: when its head's
        ``score_all`` does (:attr:`MultiTaskHead.fresh_scores`) and this class's :meth:`score`
        is not overridden."""
        return (type(self).score is MultiBehaviorModel.score
                and getattr(self.head, 'fresh_scores', False) is True)

    def score(self, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        emb = self.embeddings()
        if items is None:
            return self.head.score_all(emb, users, self.target)
        return self.head(emb, users, items, self.target)
