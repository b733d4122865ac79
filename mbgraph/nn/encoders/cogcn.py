r"""COPF's Combinatorial Optimization Graph Convolutional Network (Meng et al.,
"Combinatorial Optimization Perspective based Framework for Multi-behavior Recommendation",
KDD 2025, section 4.2), its ablations of table 3, and the "w/o COGCN" baseline.

COGCN constrains how behavior :math:`k`'s encoder sees the others at three stages.

**In-behavior constraint** (def. 4, eq 2 and 5): behavior :math:`k` propagates over its own
graph and its upstream behaviors' graphs, never downstream ones,

.. math::
    \mathbf{E}^{k,l+1} = \sum_{k'=1}^{k} \big(\mathbf{D}_{k'}^{-1}\mathbf{A}_{k'} +
    \mathbf{I}\big)\,\mathbf{E}^{k,l},

computed with ONE cached sparse operator per behavior
(:meth:`~mbgraph.data.adjacency.BehaviorAdjacency.cumulative`, ``cumulative='paper'``). The
authors' code instead sums the raw interaction matrices of behaviors :math:`1..k` and
left-normalises the sum once (``cumulative='union'``),

.. math::
    \mathbf{S}_k = \sum_{k'=1}^{k} \mathbf{A}_{k'}, \qquad
    \mathbf{E}^{k,l+1} = \mathbf{D}_{\mathbf{S}_k}^{-1}\mathbf{S}_k\,\mathbf{E}^{k,l} +
    \mathbf{E}^{k,l},

so a pair present in :math:`m` of the behaviors weighs :math:`m` (the sum is not binarised)
and there is one degree matrix instead of one per behavior. It uses the cached
``adj.cumulative(b, norm='none')`` (:math:`\mathbf{S}_k`) and scales rows by the inverse row
sums, one sparse product per layer as well. ``union_norm='symmetric'`` (not in the paper or
the code) normalises that sum on both sides instead,
:math:`\mathbf{D}_{\mathbf{S}_k}^{-1/2}\mathbf{S}_k\mathbf{D}_{\mathbf{S}_k}^{-1/2}
\mathbf{E}^{k,l} + \mathbf{E}^{k,l}`: with the left form an item's row is the mean of its
users' rows whatever its popularity, with the symmetric form (LightGCN's) popular items keep
longer rows; the option measures what that choice does to a ranking (docs/RESULTS.md).

**Pre-behavior constraint** (def. 3, eq 6): behavior :math:`k + 1` starts from the initial
embedding plus the last layers of every upstream behavior,

.. math::
    \mathbf{E}^{1,0} = \mathbf{E}_u \| \mathbf{E}_v, \qquad
    \mathbf{E}^{k+1,0} = \sum_{k'=1}^{k} \mathbf{E}^{k',L_{k'}} + \mathbf{E}^{1,0}.

**Post-behavior constraint** (def. 5, eq 7): decoupled outputs, one representation per
behavior for the multi-task head,

.. math::
    \mathbf{e}^{k,*} = \sum_{l=0}^{L_k} \mathbf{e}^{k,l}.

Ablations (table 3, section 5.3.1), via :meth:`COGCNEncoder.variant` or ``variant=``:

==========  ============================================  =====================================
variant     switch                                        reading
==========  ============================================  =====================================
COPF-P      ``pre_behavior=False``                        every behavior starts from
                                                          :math:`\mathbf{E}^{1,0}`
COPF-A      ``in_behavior=False``                         every behavior propagates over ALL
                                                          behaviors (downstream included)
COPF-D      ``post_behavior=False``                       one coupled output shared by every
                                                          behavior (``coupled_output``)
COPF-F      ``pre_behavior=False, in_behavior=False``     P and A together
COPF-C      ``strict_cascade=True``                       strict pre AND strict in: a plain
                                                          cascade (B and H together)
COPF-B      ``strict_pre=True``                           :math:`\mathbf{E}^{k+1,0} =
                                                          \mathbf{E}^{k,L_k} + \mathbf{E}^{1,0}`
                                                          (most recent upstream only)
COPF-H      ``strict_in=True``                            behavior :math:`k`'s graph only,
                                                          :math:`\mathbf{D}_k^{-1}\mathbf{A}_k
                                                          + \mathbf{I}`
==========  ============================================  =====================================

Why COPF-C is "strict pre + strict in": eq 6 satisfies
:math:`\mathbf{E}^{k+1,0} = \mathbf{E}^{k,L_k} + \mathbf{E}^{k,0}`, i.e. it already *is* the
residual cascade link of MB-CGCN/PKEF (eq 10 there), so a "strict cascading paradigm" can only
differ from COGCN by restricting both the input (most recent upstream behavior) and the graph
(current behavior), as the cascades MB-CGCN and CRGCN do. The paper gives no equations for the
variants; the table above is this module's reading, one line each.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ...data.adjacency import NORMS
from ..functional import COMBINES, combine_layers, propagate
from .base import BehaviorEmbeddings, LayerSpec, PerBehaviorEncoder, check_choice

CUMULATIVE = ('paper', 'union')
UNION_NORMS = ('left', 'symmetric')
COUPLED = ('sum', 'target')

#: table 3's COGCN variants -> the switches that build them
VARIANTS: Dict[str, Dict[str, bool]] = {
    'COPF': {},
    'P': {'pre_behavior': False},
    'A': {'in_behavior': False},
    'D': {'post_behavior': False},
    'F': {'pre_behavior': False, 'in_behavior': False},
    'C': {'strict_cascade': True},
    'B': {'strict_pre': True},
    'H': {'strict_in': True},
}
_SWITCH_DEFAULTS = {'pre_behavior': True, 'in_behavior': True, 'post_behavior': True,
                    'strict_pre': False, 'strict_in': False, 'strict_cascade': False}


def _variant_key(name: str) -> str:
    key = str(name).upper()
    if key.startswith('COPF-'):
        key = key[len('COPF-'):]
    if key not in VARIANTS:
        raise ValueError(f'unknown COGCN variant {name!r}; expected one of '
                         f"{['COPF'] + ['COPF-' + v for v in VARIANTS if v != 'COPF']} "
                         f"(or the letter alone)")
    return key


class COGCNEncoder(PerBehaviorEncoder):
    r"""COPF's COGCN encoder (module docstring: eq 5-7 and the variants of table 3).

    Args:
        num_layers (int or sequence of int, optional): :math:`L` (one for all behaviors, as
            the paper) or :math:`L_k` per behavior. (default: :obj:`2`)
        pre_behavior (bool, optional): pre-behavior constraint, eq 6. (default: :obj:`True`)
        in_behavior (bool, optional): in-behavior constraint, eq 5 (else every behavior
            propagates over all behaviors' graphs). (default: :obj:`True`)
        post_behavior (bool, optional): decoupled outputs, eq 7 (else one coupled output,
            see ``coupled_output``). (default: :obj:`True`)
        strict_pre (bool, optional): input from the most recent upstream behavior only.
            (default: :obj:`False`)
        strict_in (bool, optional): propagate over the current behavior's graph only.
            (default: :obj:`False`)
        strict_cascade (bool, optional): ``strict_pre`` and ``strict_in`` together (COPF-C).
            (default: :obj:`False`)
        cumulative (str, optional): ``'paper'`` (:math:`\sum_{k' \le k}(\mathbf{D}_{k'}^{-1}
            \mathbf{A}_{k'} + \mathbf{I})`) or ``'union'`` (the authors' code:
            :math:`\mathbf{D}_{\mathbf{S}}^{-1}\mathbf{S} + \mathbf{I}` with
            :math:`\mathbf{S}` the raw sum of the behaviors' graphs). (default:
            :obj:`'paper'`)
        union_norm (str, optional): with ``cumulative='union'``, ``'left'``
            (:math:`\mathbf{D}_{\mathbf{S}}^{-1}\mathbf{S}`, the code) or ``'symmetric'``
            (:math:`\mathbf{D}_{\mathbf{S}}^{-1/2}\mathbf{S}\mathbf{D}_{\mathbf{S}}^{-1/2}`,
            every behavior's graph, the first one's too). (default: :obj:`'left'`)
        coupled_output (str, optional): the output shared by every behavior when
            ``post_behavior=False``: ``'sum'`` (:math:`\sum_k \mathbf{e}^{k,*}`) or
            ``'target'`` (:math:`\mathbf{e}^{K,*}`). (default: :obj:`'sum'`)
        variant (str, optional): ``'P'``, ``'A'``, ``'D'``, ``'F'``, ``'C'``, ``'B'``,
            ``'H'`` (or ``'COPF-P'``, ...; ``'COPF'`` is the full model): sets the switches
            above, which must then be left unset. (default: :obj:`None`)
        num_behaviors (int, optional): :math:`K`, only to check the graph at forward time.

    Shapes:
        - **input:** ego embeddings ``[U + I, d]`` (users first) or an ``x_dict``, and
          the graph: a :class:`~mbgraph.data.adjacency.BehaviorAdjacency`, a PyG
          ``HeteroData`` or an ``edge_index_dict``
          (:meth:`~mbgraph.nn.encoders.base.MultiBehaviorEncoder.inputs`).
        - **output:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` ``[K, U, d]`` /
          ``[K, I, d]`` (:math:`\mathbf{e}^{k,*}`).
    """

    def __init__(self, num_layers: LayerSpec = 2, pre_behavior: Optional[bool] = None,
                 in_behavior: Optional[bool] = None, post_behavior: Optional[bool] = None,
                 strict_pre: Optional[bool] = None, strict_in: Optional[bool] = None,
                 strict_cascade: Optional[bool] = None, cumulative: str = 'paper',
                 coupled_output: str = 'sum', variant: Optional[str] = None,
                 num_behaviors: Optional[int] = None, union_norm: str = 'left'):
        super().__init__(num_layers, num_behaviors)
        given = {'pre_behavior': pre_behavior, 'in_behavior': in_behavior,
                 'post_behavior': post_behavior, 'strict_pre': strict_pre,
                 'strict_in': strict_in, 'strict_cascade': strict_cascade}
        given = {k: bool(v) for k, v in given.items() if v is not None}
        switches = dict(_SWITCH_DEFAULTS)
        self.variant_name: Optional[str] = None
        if variant is not None:
            key = _variant_key(variant)
            if given:
                raise ValueError(f'variant={variant!r} sets the constraint switches itself; '
                                 f'do not also pass {sorted(given)}')
            switches.update(VARIANTS[key])
            self.variant_name = 'COPF' if key == 'COPF' else f'COPF-{key}'
        switches.update(given)
        for name, value in switches.items():
            setattr(self, name, value)
        if (self.strict_pre or self.strict_cascade) and not self.pre_behavior:
            raise ValueError('strict_pre/strict_cascade restrict the pre-behavior constraint, '
                             'which pre_behavior=False removes: choose one')
        if (self.strict_in or self.strict_cascade) and not self.in_behavior:
            raise ValueError('strict_in/strict_cascade restrict the in-behavior constraint, '
                             'which in_behavior=False removes: choose one')
        self.cumulative = check_choice('cumulative', cumulative, CUMULATIVE)
        self.union_norm = check_choice('union_norm', union_norm, UNION_NORMS)
        if self.union_norm != 'left' and self.cumulative != 'union':
            raise ValueError(f"union_norm={union_norm!r} normalises the union of the graphs: "
                             "it needs cumulative='union'")
        self.coupled_output = check_choice('coupled_output', coupled_output, COUPLED)

    @classmethod
    def variant(cls, name: str, **kwargs) -> 'COGCNEncoder':
        """Table 3's variant ``name`` (``'P'``, ``'COPF-B'``, ...); ``kwargs`` go to the
        constructor (``num_layers``, ``cumulative``, ...)."""
        return cls(variant=name, **kwargs)

    @property
    def uses_strict_pre(self) -> bool:
        return self.strict_pre or self.strict_cascade

    @property
    def uses_strict_in(self) -> bool:
        return self.strict_in or self.strict_cascade

    def graph_behaviors(self, behaviors: Sequence[str], k: int) -> List[str]:
        """The behaviors whose graphs behavior index ``k`` propagates over."""
        if self.uses_strict_in:
            return [behaviors[k]]
        return list(behaviors[:k + 1] if self.in_behavior else behaviors)

    def layers_of(self, x: Tensor, adjacency, k: int, num_layers: int) -> List[Tensor]:
        r""":math:`[\mathbf{E}^{k,0}, \dots, \mathbf{E}^{k,L_k}]` from ``x`` (eq 5)."""
        graph = self.graph_behaviors(adjacency.behaviors, k)
        if self.union_norm == 'symmetric':  # D_S^-1/2 S D_S^-1/2 E + E
            s = (adjacency.operator(graph[0], norm='none') if len(graph) == 1
                 else adjacency.cumulative(graph[-1], norm='none'))
            deg = s @ x.new_ones(x.size(0), 1)
            half = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))

            def sym_step(op, h: Tensor, layer: int) -> Tensor:
                return half * (op @ (half * h)) + h

            return propagate(x, s, num_layers, step=sym_step)
        if len(graph) == 1:  # both readings: (D_k^-1 A_k + I) E
            return propagate(x, adjacency.operator(graph[0], norm='left_plus_identity'),
                             num_layers)
        if self.cumulative == 'paper':  # sum_k' (D_k'^-1 A_k' + I) E, one operator
            return propagate(x, adjacency.cumulative(graph[-1], norm='left_plus_identity'),
                             num_layers)
        s = adjacency.cumulative(graph[-1], norm='none')  # raw sum S of the graphs
        deg = s @ x.new_ones(x.size(0), 1)
        inv = torch.where(deg > 0, deg.reciprocal(), torch.zeros_like(deg))

        def code_step(op, h: Tensor, layer: int) -> Tensor:  # D_S^-1 S E + E
            return inv * (op @ h) + h

        return propagate(x, s, num_layers, step=code_step)

    def forward(self, ego: Tensor, adjacency) -> BehaviorEmbeddings:
        ego, adjacency = self.inputs(ego, adjacency)
        behaviors = self.check_input(ego, adjacency)
        layers = self.layers_for(behaviors)
        outputs = []
        upstream_last = None  # sum over k' < k of E^{k',L}
        prev_last = None      # E^{k-1,L}
        for k in range(len(behaviors)):
            if k == 0 or not self.pre_behavior:
                x = ego
            elif self.uses_strict_pre:
                x = prev_last + ego
            else:
                x = upstream_last + ego                                  # eq 6
            hs = self.layers_of(x, adjacency, k, layers[k])               # eq 5
            outputs.append(combine_layers(hs, 'sum'))                     # eq 7
            prev_last = hs[-1]
            upstream_last = hs[-1] if upstream_last is None else upstream_last + hs[-1]
        if not self.post_behavior:
            shared = torch.stack(outputs).sum(0) if self.coupled_output == 'sum' \
                else outputs[-1]
            outputs = [shared] * len(behaviors)
        return self.stack(behaviors, outputs, adjacency.num_users)

    def extra_repr(self) -> str:
        parts = [f'num_layers={self._layers_repr()}']
        if self.variant_name is not None:
            parts.append(f'variant={self.variant_name!r}')
        parts += [f'{name}={getattr(self, name)}' for name in _SWITCH_DEFAULTS]
        parts.append(f'cumulative={self.cumulative!r}')
        if self.union_norm != 'left':
            parts.append(f'union_norm={self.union_norm!r}')
        if not self.post_behavior:
            parts.append(f'coupled_output={self.coupled_output!r}')
        return ', '.join(parts)


class PerBehaviorLightGCN(PerBehaviorEncoder):
    r"""One LightGCN per behavior, all from the shared initial embeddings (COPF table 3's
    "w/o COGCN": COGCN replaced with multiple LightGCN):

    .. math::
        \mathbf{e}^{k,l+1} = \hat{\mathbf{A}}_k \mathbf{e}^{k,l}, \quad
        \mathbf{e}^{k,0} = \mathbf{E}^{(0)}, \quad
        \mathbf{e}^{k,*} = \frac{1}{L_k + 1}\sum_{l=0}^{L_k} \mathbf{e}^{k,l}

    with :math:`\hat{\mathbf{A}}_k = \mathbf{D}_k^{-1/2}\mathbf{A}_k\mathbf{D}_k^{-1/2}` by
    default (LightGCN, He et al. SIGIR 2020).

    Args:
        num_layers (int or sequence of int, optional): :math:`L_k`. (default: :obj:`2`)
        norm (str, optional): normalisation of :math:`\mathbf{A}_k`. (default:
            :obj:`'symmetric'`)
        combine (str, optional): ``'mean'`` (LightGCN), ``'sum'`` or ``'last'``. (default:
            :obj:`'mean'`)
        num_behaviors (int, optional): :math:`K`, only to check the graph at forward time.

    Shapes:
        - **input:** ego embeddings ``[U + I, d]`` (users first) or an ``x_dict``, and
          the graph: a :class:`~mbgraph.data.adjacency.BehaviorAdjacency`, a PyG
          ``HeteroData`` or an ``edge_index_dict``
          (:meth:`~mbgraph.nn.encoders.base.MultiBehaviorEncoder.inputs`).
        - **output:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` ``[K, U, d]`` /
          ``[K, I, d]``.
    """

    def __init__(self, num_layers: LayerSpec = 2, norm: str = 'symmetric',
                 combine: str = 'mean', num_behaviors: Optional[int] = None):
        super().__init__(num_layers, num_behaviors)
        self.norm = check_choice('norm', norm, NORMS)
        self.combine = check_choice('combine', combine, COMBINES)

    def forward(self, ego: Tensor, adjacency) -> BehaviorEmbeddings:
        ego, adjacency = self.inputs(ego, adjacency)
        behaviors = self.check_input(ego, adjacency)
        layers = self.layers_for(behaviors)
        outputs = [propagate(ego, adjacency.operator(b, norm=self.norm), layers[k],
                             combine=self.combine)
                   for k, b in enumerate(behaviors)]
        return self.stack(behaviors, outputs, adjacency.num_users)

    def extra_repr(self) -> str:
        return (f'num_layers={self._layers_repr()}, norm={self.norm!r}, '
                f'combine={self.combine!r}')
