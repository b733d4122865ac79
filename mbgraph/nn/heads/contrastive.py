r"""The contrastive alignment of COPF's DFME (Meng et al., KDD 2025, eq 8 and its weight in
eq 17), as a module any head can hold: COPF's table 6 adds DFME, and so this term, to other
backbones, and its table 4 keeps it in every alternative aggregation scheme.

The target behavior :math:`K` and every auxiliary behavior :math:`k` are pulled together per
user (and per item),

.. math::
    \mathcal{L}_{cl,U}^{K,k} = \frac{1}{|U|} \sum_{u \in U} -\log
    \frac{\exp(\varphi(\mathbf{e}_u^{K,*}, \mathbf{e}_u^{k,*})/\tau)}
    {\sum_{u' \in U} \exp(\varphi(\mathbf{e}_u^{K,*}, \mathbf{e}_{u'}^{k,*})/\tau)},
    \qquad \mathcal{L} \mathrel{+}= \gamma \sum_{k<K}
    (\mathcal{L}_{cl,U}^{K,k} + \mathcal{L}_{cl,V}^{K,k})   \quad \text{(eq 17)}.

The anchors :math:`u` are the users (items: positives and negatives) of the batch's
target-behavior triples, as in the authors' code (all users of the graph as anchors would be
:math:`O(|U|^2)`); the denominator runs over all users (``negatives='all'``, the paper and the
code) or the batch's (``negatives='batch'``). :math:`\varphi` is the cosine similarity, the
code's (``cosine=True``, the default), or the inner product, the paper's example ("e.g.,
inner product"; ``cosine=False``). The inner product makes eq 8 grow with
:math:`\lVert \mathbf{e}^{K,*} \rVert \lVert \mathbf{e}^{k,*} \rVert / \tau`: on embeddings
far from unit scale, as COGCN's are, its logits are large, the softmax over the users is a
hard maximum and the term outweighs BPR at any of the weights below (docs/RESULTS.md,
*Measurements behind the DFME head's defaults*).

**Weight of the contrastive term against BPR** (``cl_norm``). Eq 16 *sums* the BPR terms
over the training triples, eq 8 *averages* the contrastive term over the users, and eq 17 adds
the two with :math:`\gamma = 1`. :class:`~mbgraph.models.composed.MultiBehaviorModel` averages
each behavior's BPR terms over the batch's :math:`B` triples, i.e. divides the batch's eq 16
by :math:`B`; dividing the batch's eq 17 by the same :math:`B` leaves the contrastive term as
:math:`\frac{\gamma}{B}` times its mean over the anchors (``cl_norm='triples'``, the default).
``cl_norm='batch'`` (the plain anchor mean next to the BPR mean) weighs it :math:`B` times
more than eq 17 does (2048 times with the CLI's batch); ``cl_norm='total'`` is the code's sum
over the anchors divided by :math:`|U|`, next to BPR logits that the code multiplies by
``mult`` = 300 and sums over :math:`d` (:math:`300 d` = 19200 times eq 15's average). With
eq 15's average and no multiplier, ``'batch'`` lets the contrastive gradients swamp the ranking
loss (docs/RESULTS.md, same section).

Every term is one call of :func:`mbgraph.losses.info_nce`, the fused InfoNCE.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ...losses import info_nce
from ..encoders.base import BehaviorEmbeddings

#: ``negatives``: eq 8's denominator over every user (item), or over the batch's anchors
NEGATIVES = ('all', 'batch')
#: ``cl_anchors``: the batch's distinct users/items, or the code's one anchor per target pair
CL_ANCHORS = ('unique', 'pairs')
#: ``cl_norm``: what the sum over the anchors is divided by (class docstring)
CL_NORMS = ('triples', 'batch', 'total', 'users')


class BehaviorContrastive(nn.Module):
    r"""COPF's eq 8 between the target behavior (the last) and every other behavior, weighted
    by :math:`\gamma` as eq 17 adds it (module docstring). No parameters: it reads the
    :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` a head receives.

    Args:
        tau (float, optional): temperature :math:`\tau`. (default: ``0.1``)
        gamma (float, optional): weight :math:`\gamma` of the loss. (default: ``1.0``)
        cosine (bool, optional): cosine similarity for :math:`\varphi` (the code); ``False``
            is the inner product (the paper's example). (default: ``True``)
        negatives (str, optional): ``'all'`` or ``'batch'`` (eq 8's denominator).
            (default: ``'all'``)
        cl_norm (str, optional): what the sum over the anchors is divided by:
            ``'triples'``, their number times the number :math:`B` of the batch's triples
            per behavior (eq 16 sums BPR over the triples, eq 8 averages over the users; see
            the module docstring), ``'batch'``, their number (a mean over the anchors), or
            ``'total'``, :math:`|U|` (:math:`|V|`) whatever the batch, or ``'users'``,
            :math:`|U|` for both sums (the code: each batch carries its share of the all-user
            sum, the item side divided by the users too). (default: ``'triples'``)
        cl_anchors (str, optional): eq 8's anchors: ``'unique'``, the batch's distinct
            target-behavior users and items (positives and negatives), or ``'pairs'``, the
            code's one user anchor per target pair and the pairs' positive items, repeats
            counted (each distinct anchor computed once and weighted by its count: exact).
            ``cl_norm='users'`` is the code's divisor of both sums, :math:`|U|`.
            (default: ``'unique'``)

    Shapes:
        - **input:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` ``[K, U, d]`` /
          ``[K, I, d]`` and a training batch ``{behavior: [2 + C, B] triples}``.
        - **output:** a scalar (:meth:`forward`), or ``{'contrastive': scalar}``
          (:meth:`loss_terms`, what a head returns from its own ``loss_terms``).
    """

    def __init__(self, tau: float = 0.1, gamma: float = 1.0, cosine: bool = True,
                 negatives: str = 'all', cl_norm: str = 'triples', cl_anchors: str = 'unique'):
        super().__init__()
        for name, value, options in (('negatives', negatives, NEGATIVES),
                                     ('cl_norm', cl_norm, CL_NORMS),
                                     ('cl_anchors', cl_anchors, CL_ANCHORS)):
            if value not in options:
                raise ValueError(f'unknown {name} {value!r}; expected one of {list(options)}')
        if tau <= 0:
            raise ValueError(f'temperature tau must be > 0, got {tau}')
        self.tau, self.gamma = float(tau), float(gamma)
        self.cosine, self.negatives = cosine, negatives
        self.cl_norm, self.cl_anchors = cl_norm, cl_anchors

    def loss(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
             num_triples: int = 1, user_counts: Optional[Tensor] = None,
             item_counts: Optional[Tensor] = None) -> Tensor:
        r""":math:`\sum_{k<K} (\mathcal{L}_{cl,U}^{K,k} + \mathcal{L}_{cl,V}^{K,k})` with
        anchors ``users`` and ``items`` (distinct ids; ``*_counts`` how often each one is an
        anchor, default once: every distinct anchor is computed once and weighted, which is
        exact), normalised as ``cl_norm`` says (``num_triples``: the batch's triples per
        behavior, :math:`B` of ``'triples'``), not weighted by :math:`\gamma`."""
        target = emb.users.size(0) - 1
        total = emb.users.new_zeros(())
        num_users = emb.users.size(1)
        tables_u, tables_v = emb.users.unbind(0), emb.items.unbind(0)   # no select gradients
        for k in range(target):
            for table, ids, counts in ((tables_u, users, user_counts),
                                       (tables_v, items, item_counts)):
                if ids.numel() == 0:
                    continue
                weight = None if counts is None else counts.to(table[k].dtype)
                if self.negatives == 'all':   # the positives are rows ids of the candidates
                    term = info_nce(table[target][ids], None, self.tau, candidates=table[k],
                                    cosine=self.cosine, positive_index=ids, weight=weight)
                else:
                    term = info_nce(table[target][ids], table[k][ids], self.tau,
                                    cosine=self.cosine, weight=weight)
                n = ids.numel() if counts is None else float(counts.sum())
                if self.cl_norm == 'total':  # sum over the anchors / |U| (|V|)
                    term = term * (n / table[k].size(0))
                elif self.cl_norm == 'users':  # the code: both sums / |U|
                    term = term * (n / num_users)
                total = total + term
        if self.cl_norm == 'triples':        # eq 17 over eq 16's sum, divided by B
            total = total / max(int(num_triples), 1)
        return total

    def anchors(self, emb: BehaviorEmbeddings, batch: Dict[str, Any], owner: str = ''
                ) -> Tuple[Tensor, Tensor, int, Optional[Tensor], Optional[Tensor]]:
        """The batch's anchors as :meth:`loss` takes them: ``(users, items, num_triples,
        user_counts, item_counts)``, from the target behavior's triples (``cl_anchors``), or
        from every behavior's when the batch has no target triples (:math:`\\lambda_K = 0`).
        ``owner`` names the head in the error of a batch without any triples."""
        target = emb.target
        if target in batch:
            triples = [batch[target]]
        else:  # target not sampled (lambda_K = 0): the batch's users and items of any behavior
            triples = [t for b, t in batch.items() if b in emb.behaviors]
        if not triples:
            raise ValueError(f'{owner or self.__class__.__name__} contrastive loss: the batch '
                             f'has no triples of the behaviors {emb.behaviors} '
                             f'(keys: {list(batch)})')
        num_triples = max(t[0].numel() for t in triples)        # B, the BPR mean's divisor
        if self.cl_anchors == 'pairs':   # the code: a user per pair, the positive items
            users, user_counts = torch.cat([t[0] for t in triples]).unique(return_counts=True)
            items, item_counts = torch.cat([t[1] for t in triples]).unique(return_counts=True)
        else:
            users = torch.cat([t[0] for t in triples]).unique()
            items = torch.cat([t[1:].reshape(-1) for t in triples]).unique()
            user_counts = item_counts = None
        return users, items, num_triples, user_counts, item_counts

    def forward(self, emb: BehaviorEmbeddings, batch: Dict[str, Any], owner: str = ''
                ) -> Tensor:
        r""":math:`\gamma` times :meth:`loss` over the batch's :meth:`anchors`."""
        return self.gamma * self.loss(emb, *self.anchors(emb, batch, owner))

    def loss_terms(self, emb: BehaviorEmbeddings, batch: Dict[str, Any], owner: str = ''
                   ) -> Dict[str, Tensor]:
        """``{'contrastive': self(emb, batch)}``, or nothing when :math:`\\gamma = 0` or there
        is no auxiliary behavior to align with."""
        if self.gamma == 0.0 or emb.users.size(0) < 2:
            return {}
        return {'contrastive': self(emb, batch, owner)}

    def extra_repr(self) -> str:
        return (f'tau={self.tau}, gamma={self.gamma}, cosine={self.cosine}, '
                f'negatives={self.negatives!r}, cl_norm={self.cl_norm!r}, '
                f'cl_anchors={self.cl_anchors!r}')


def contrastive_option(name: str) -> property:
    """A head's property that reads (and sets) option ``name`` of its
    :class:`BehaviorContrastive` ``contrastive_term``: ``head.tau``, ``head.gamma``, ... stay
    where a reading's ``head.`` keys and the command line's ``--set head.tau=...`` put them."""

    def get(head):
        return getattr(head.contrastive_term, name)

    def set_(head, value):
        setattr(head.contrastive_term, name, value)

    return property(get, set_, doc=f'``{name}`` of :attr:`contrastive_term` (eq 8).')


#: the options a head passes on to its :class:`BehaviorContrastive`
CONTRASTIVE_OPTIONS = ('tau', 'gamma', 'cosine', 'negatives', 'cl_norm', 'cl_anchors')
