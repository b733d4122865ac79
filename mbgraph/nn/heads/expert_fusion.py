r"""The aggregation schemes of COPF's table 4 (Meng et al., KDD 2025, section 5.3.2): DFME
with its whole aggregation of eq 10-14 (fitting experts, gate and stop-gradient) replaced by
one of five alternatives, the contrastive term of eq 8 kept in every one
(:class:`~mbgraph.nn.heads.contrastive.BehaviorContrastive`).

The schemes are PKEF's fusion functions (:func:`~mbgraph.nn.encoders.pkf.fuse`, PKEF eq 12-13
and its table 4), applied between the behavior-specific experts of eq 9 with the task's own
expert as the base:

.. math::
    \hat o^k_{uv} = \mathrm{mean}\Big(\mathbf{e}^k + \sum_{j \ne k}
        \mathbf{f}_{k,j}(\mathbf{e}^k, \mathbf{e}^j)\Big), \qquad
    \mathbf{e}^j = \mathbf{e}_u^{j,*} \circ \mathbf{e}_v^{j,*},

with :math:`\mathbf{f}` = :math:`\mathbf{0}` (``'none'``, *No Aggregation*),
:math:`\mathbf{e}^j` (``'sum'``, *Summation*), :math:`\mathbf{W}_{k,j}\mathbf{e}^j`
(``'linear'``, *Linear Trans.*, :math:`\mathbf{W}_{k,j} \in \mathbb{R}^{d \times d}`),
PKEF eq 13's gated mixture of :math:`[\mathbf{e}^k, \mathbf{e}^j, \mathbf{e}^k -
\mathbf{e}^j, \mathbf{e}^k \circ \mathbf{e}^j]` with its gate :math:`\mathbf{W}_{k,j} \in
\mathbb{R}^{4 \times 4d}`, :math:`\mathbf{b}_{k,j} \in \mathbb{R}^4` (``'vanilla'``,
*Vanilla Fusion*) or the part of :math:`\mathbf{e}^j` collinear with :math:`\mathbf{e}^k`,
:math:`\frac{\mathbf{e}^j \cdot \mathbf{e}^k}{\lVert \mathbf{e}^k \rVert^2 + \epsilon}
\mathbf{e}^k` (``'projection'``, *Projection Fusion*; PKEF eq 12 / PME eq 16). The paper
names the schemes without equations; the readings taken here: the base is the task's own
expert (as PKF's cascade vector is), one :math:`\mathbf{W}_{k,j}` per (task, other
behavior) pair, and no stop-gradient (eq 14's is part of DFME's own scheme).

On COGCN's embeddings the vanilla scheme is unstable: its fourth feature
:math:`\mathbf{e}^k \circ \mathbf{e}^j` is of fourth order in the embeddings, whose norms
COGCN's operators already multiply (see :class:`~mbgraph.nn.heads.dfme.DFMEHead`, *Gate
initialisation*), so its scores start large and its BPR terms grow instead of falling
(docs/RESULTS.md, *COPF table 4 on Taobao*). The other schemes stay of second order.

``DFMEHead(aggregation=...)`` with one of these names builds this head (the name
``aggregation='gated'`` is DFME's own eq 10-15), so ``--set head.aggregation=sum`` on
``copf`` selects it as the benchmark's ``copf_t4`` table does.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..encoders.base import BehaviorEmbeddings
from ..functional import fuse
from .blocks import MTLHead, check_embeddings
from .contrastive import CONTRASTIVE_OPTIONS, BehaviorContrastive, contrastive_option

#: ``aggregation``: the five alternatives of COPF table 4
AGGREGATIONS = ('none', 'sum', 'linear', 'vanilla', 'projection')
#: ``tower``: eq 15's average over d, or the code's sum
TOWERS = ('mean', 'sum')


class ExpertFusionHead(MTLHead):
    r"""COPF table 4's aggregation schemes: the task's own expert plus a fusion of every other
    behavior's expert (module docstring), with eq 8's contrastive term.

    Args:
        embedding_dim (int): :math:`d`.
        num_behaviors (int): :math:`K` (the last behavior is the target).
        aggregation (str): ``'none'``, ``'sum'``, ``'linear'``, ``'vanilla'`` or
            ``'projection'`` (module docstring).
        score_scale (float, optional): factor on the scores (the code's ``mult``: ``300``).
            (default: ``1.0``)
        tower (str, optional): eq 15's ``'mean'`` over :math:`d`, or the code's ``'sum'``.
            (default: ``'mean'``)
        contrastive (bool, optional): eq 8 on. (default: ``True``)
        tau, gamma, cosine, negatives, cl_norm, cl_anchors: eq 8's options, as
            :class:`~mbgraph.nn.heads.contrastive.BehaviorContrastive` takes them (held as
            :attr:`contrastive_term`).

    Shapes:
        - **input:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` ``[K, U, d]`` /
          ``[K, I, d]``, users ``[B]``, items ``[B]`` or ``[B, C]``.
        - **output:** scores ``[B]`` or ``[B, C]``; :meth:`score_all` ``[B, I]``.
    """

    chunk_size: int = 4096  # score_all is matrix products: [B, chunk] at a time
    # eq 8's options, read from (and set on) contrastive_term
    tau, gamma, cosine, negatives, cl_norm, cl_anchors = (contrastive_option(name)
                                                          for name in CONTRASTIVE_OPTIONS)

    def __init__(self, embedding_dim: int, num_behaviors: int, aggregation: str,
                 score_scale: float = 1.0, tower: str = 'mean', contrastive: bool = True,
                 tau: float = 0.1, gamma: float = 1.0, cosine: bool = True,
                 negatives: str = 'all', cl_norm: str = 'triples', cl_anchors: str = 'unique'):
        super().__init__(embedding_dim, num_behaviors)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f'unknown aggregation {aggregation!r}; expected one of '
                             f'{list(AGGREGATIONS)}')
        if tower not in TOWERS:
            raise ValueError(f'unknown tower {tower!r}; expected one of {list(TOWERS)}')
        self.contrastive_term = BehaviorContrastive(tau, gamma, cosine, negatives, cl_norm,
                                                    cl_anchors)
        self.aggregation = aggregation
        self.score_scale = float(score_scale)
        self.tower = tower
        self.contrastive = contrastive
        d, k = embedding_dim, num_behaviors
        self.register_parameter('fusion_weight', None)
        self.register_parameter('fusion_bias', None)
        if aggregation == 'linear':     # W_{k,j}, j != k (pair index: _pair_params)
            self.fusion_weight = nn.Parameter(torch.empty(k, k - 1, d, d))
        elif aggregation == 'vanilla':  # the gate of PKEF eq 13 per (k, j)
            self.fusion_weight = nn.Parameter(torch.empty(k, k - 1, 4, 4 * d))
            self.fusion_bias = nn.Parameter(torch.empty(k, k - 1, 4))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier, as COPF initialises every parameter
        matrices: List[Tensor] = []
        if self.fusion_weight is not None:
            matrices += list(self.fusion_weight.flatten(0, 1))
        for p in matrices:
            bound = math.sqrt(6.0 / (p.size(0) + p.size(1)))
            nn.init.uniform_(p, -bound, bound)
        if self.fusion_bias is not None:
            nn.init.zeros_(self.fusion_bias)

    def precompute(self, emb: BehaviorEmbeddings, adjacency) -> BehaviorEmbeddings:
        """Nothing to compute over the graph: the schemes read the embeddings as they are."""
        check_embeddings(emb, self.num_behaviors, self.embedding_dim, self.__class__.__name__)
        return emb

    def _reduce(self, x: Tensor) -> Tensor:
        """The tower over the last axis: eq 15's mean, or the code's sum."""
        return x.sum(-1) if self.tower == 'sum' else x.mean(-1)

    def _pair_params(self, k: int, j: int) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        r""":math:`\mathbf{W}_{k,j}` (and the vanilla gate's bias) of task ``k``, behavior
        ``j != k``."""
        p = j if j < k else j - 1
        weight = None if self.fusion_weight is None else self.fusion_weight[k, p]
        bias = None if self.fusion_bias is None else self.fusion_bias[k, p]
        return weight, bias

    def forward(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                behavior: str) -> Tensor:
        k = self._index(emb, behavior)
        u, v = emb.users[:, users], emb.items[:, items]                  # [K, B, d], [K, B, (C), d]
        if items.dim() == 2:
            u = u.unsqueeze(2)
        own = out = u[k] * v[k]                                          # e^k, eq 9
        if self.aggregation != 'none':
            for j in range(self.num_behaviors):
                if j != k:
                    out = out + fuse(self.aggregation, own, u[j] * v[j],
                                     *self._pair_params(k, j))
        return self.score_scale * self._reduce(out)

    def score_all(self, emb: BehaviorEmbeddings, users: Tensor, behavior: str) -> Tensor:
        r"""``[B, I]`` by matrix products. Every sum over :math:`d` of a product of pair
        experts is one: :math:`\mathbf{w} \cdot (\mathbf{e}^a \circ \mathbf{e}^b) =
        (\mathbf{w} \circ \mathbf{e}_u^a \circ \mathbf{e}_u^b) \cdot (\mathbf{e}_v^a \circ
        \mathbf{e}_v^b)`; ``'linear'`` sums :math:`\mathbf{W}_{k,j}\mathbf{e}^j` through the
        column sums of :math:`\mathbf{W}_{k,j}`, ``'vanilla'`` splits its gate's
        :math:`[4, 4d]` weight into the four feature blocks."""
        k = self._index(emb, behavior)
        d = self.embedding_dim
        u = emb.users[:, users]                                          # [K, B, d]
        uk = u[k]
        out = []
        for start in range(0, emb.items.size(1), self.chunk_size):
            v = emb.items[:, start:start + self.chunk_size]              # [K, C, d]
            vk = v[k]
            own = uk @ vk.t()                                            # sum_d e^k
            total = own
            for j in range(self.num_behaviors):
                if j == k or self.aggregation == 'none':
                    continue
                uj, vj = u[j], v[j]
                weight, bias = self._pair_params(k, j)
                if self.aggregation == 'sum':
                    total = total + uj @ vj.t()
                elif self.aggregation == 'linear':
                    total = total + (uj * weight.sum(0)) @ vj.t()
                elif self.aggregation == 'projection':
                    dot = (uk * uj) @ (vk * vj).t()                      # e^j . e^k
                    sq = uk.pow(2) @ vk.pow(2).t()                       # ||e^k||^2
                    total = total + dot / (sq + 1e-12) * own
                else:  # vanilla: logits_i = W_i . [e^k, e^j, e^k - e^j, e^k o e^j] + b_i
                    wk, wj, wdiff, wprod = weight.view(4, 4, d).unbind(1)  # [4, d] each
                    ukj, vkj = uk * uj, vk * vj
                    logits = (torch.matmul((wk + wdiff).unsqueeze(1) * uk, vk.t())
                              + torch.matmul((wj - wdiff).unsqueeze(1) * uj, vj.t())
                              + torch.matmul(wprod.unsqueeze(1) * ukj, vkj.t())
                              + bias.view(4, 1, 1))                      # [4, B, C]
                    other, both = uj @ vj.t(), ukj @ vkj.t()
                    sums = torch.stack([own, other, own - other, both])  # sum_d of each feature
                    total = total + (logits.softmax(dim=0) * sums).sum(0)
            out.append(total * (self.score_scale / (d if self.tower == 'mean' else 1)))
        return torch.cat(out, dim=1)

    def loss_terms(self, emb: BehaviorEmbeddings, batch: Dict[str, Any]) -> Dict[str, Tensor]:
        """Eq 8's term, kept in every scheme (``{}`` with ``contrastive=False``)."""
        if not self.contrastive or self.contrastive_term.gamma == 0.0 or self.num_behaviors < 2:
            return {}
        check_embeddings(emb, self.num_behaviors, self.embedding_dim, self.__class__.__name__)
        return self.contrastive_term.loss_terms(emb, batch, self.__class__.__name__)

    def extra_repr(self) -> str:
        return (f'embedding_dim={self.embedding_dim}, num_behaviors={self.num_behaviors}, '
                f'aggregation={self.aggregation!r}, score_scale={self.score_scale}, '
                f'tower={self.tower!r}, contrastive={self.contrastive}')
