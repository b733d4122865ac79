r"""PKEF's Parallel Knowledge Fusion (Meng et al., "Parallel Knowledge Enhancement based
Framework for Multi-behavior Recommendation", CIKM 2023, section 4.2).

Two streams run over the same per-behavior operators
:math:`\hat{\mathbf{A}}_k = \hat{\mathbf{D}}^{-1}(\mathbf{A}_k + \mathbf{I})` (eq 8-9,
``norm='left_self_loop'``).

**Cascade stream** (eq 9-10): behavior :math:`k` starts from the upstream behavior's last layer
plus its input,

.. math::
    \mathbf{z}^{1,0} = \mathbf{x}_u \| \mathbf{y}_v, \qquad
    \mathbf{z}^{k+1,0} = \mathbf{z}^{k,L_k} + \mathbf{z}^{k,0}.

**Parallel stream** (eq 11): every behavior independently from the initial embeddings
(:math:`\mathbf{p}^{k,0} = \mathbf{x}_u \| \mathbf{y}_v` for every :math:`k`; the paper writes
:math:`\mathbf{p}^{1,0}` only, the authors' code starts every behavior there),

.. math::
    \mathbf{p}^{k,l+1} = \hat{\mathbf{A}}_k \mathbf{p}^{k,l} + \mathbf{p}^{k,l}.

**Fusion, per layer.** With :math:`\mathbf{e}_{cas}^{k,l} = \hat{\mathbf{A}}_k
\mathbf{z}^{k,l}` and :math:`\mathbf{e}_{par}^{k,l} = \hat{\mathbf{A}}_k \mathbf{p}^{k,l}`,

.. math::
    \mathbf{z}^{k,l+1} = \mathbf{e}_{cas}^{k,l} + \mathbf{z}^{k,l} +
    \mathbf{f}\big(\mathbf{e}_{cas}^{k,l}, \mathbf{e}_{par}^{k,l}\big)

where, per node, :math:`\mathbf{f}` is

* ``'projection'`` (eq 12): the component of the parallel vector collinear with the cascade
  one, :math:`\mathbf{p}_{col}^{k,l} = s\,\frac{\mathbf{e}_{par} \cdot \mathbf{e}_{cas}}
  {\lVert\mathbf{e}_{cas}\rVert^2 + \epsilon}\,\mathbf{e}_{cas}` with
  :math:`s` = ``projection_scale`` (1 in the paper, 0.3 in the authors' code);
* ``'vanilla'`` (eq 13): :math:`\mathbf{F} = [\mathbf{e}_{cas}, \mathbf{e}_{par},
  \mathbf{e}_{cas} - \mathbf{e}_{par}, \mathbf{e}_{cas} \circ \mathbf{e}_{par}]`,
  :math:`\mathbf{w} = \mathrm{Softmax}(\mathbf{W}_{k,l}\,\mathbf{g} + \mathbf{b}_{k,l}) \in
  \mathbb{R}^4` and :math:`\mathbf{f} = \sum_{j=1}^{4} w_j \mathbf{F}_j`. The paper gives
  :math:`\mathbf{W}_{k,l} \in \mathbb{R}^{4 \times 4d}` but writes its input as
  :math:`\mathbf{e}_{cas}`; the default ``gate_input='concat'`` follows the stated shape
  (:math:`\mathbf{g} = \mathrm{Concat}(\mathbf{F}) \in \mathbb{R}^{4d}`), ``'cascade'``
  the written input (:math:`\mathbf{g} = \mathbf{e}_{cas}`, :math:`\mathbf{W}_{k,l} \in
  \mathbb{R}^{4 \times d}`);
* ``'sum'`` (table 4's *Summation*): :math:`\mathbf{f} = \mathbf{e}_{par}`;
* ``'linear'`` (table 4's *Linear Trans.*): :math:`\mathbf{f} = \mathbf{W}_{k,l}
  \mathbf{e}_{par}`, :math:`\mathbf{W}_{k,l} \in \mathbb{R}^{d \times d}`, no bias;
* ``'none'``: :math:`\mathbf{f} = \mathbf{0}` (the cascade stream of eq 9-10 alone; the
  parallel stream is still computed and returned for the parallel loss).

The parameters of ``'vanilla'`` and ``'linear'`` are per behavior and layer
(:math:`\mathbf{W}_{k,l}`), stored stacked over all :math:`\sum_k L_k` layers.

**Outputs** (eq 14): :math:`\mathbf{z}^{k,*} = \sum_{l=0}^{L_k} \mathbf{z}^{k,l}` are the
encoder's :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings`;
:math:`\mathbf{p}^{k,*} = \sum_{l=0}^{L_k} \mathbf{p}^{k,l}` go to ``extras['parallel']`` (a
``BehaviorEmbeddings`` too), which :class:`~mbgraph.nn.heads.pme.PMEHead` turns into the
parallel loss of eq 18.

Code notes (REFERENCE_NOTES): the authors left-normalise without self loops
(``norm='left'``) and project the parallel stream's *next layer*
:math:`\hat{\mathbf{A}}_k\mathbf{p} + \mathbf{p}` rather than :math:`\mathbf{e}_{par}`; the
default here is the paper's eq 12.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ...data.adjacency import NORMS

# fuse moved to nn/functional.py; re-exported here for the old import path
from ..functional import FUSIONS, combine_layers, fuse, propagate
from .base import BehaviorEmbeddings, LayerSpec, PerBehaviorEncoder, check_choice

__all__ = ['PKFEncoder', 'fuse', 'FUSIONS', 'GATE_INPUTS', 'PARALLEL_INPUTS']

GATE_INPUTS = ('concat', 'cascade')
#: what eq 12-13 fuse with the cascade: the parallel aggregate A p (paper) or p's next layer
PARALLEL_INPUTS = ('aggregate', 'next_layer')


class PKFEncoder(PerBehaviorEncoder):
    r"""PKEF's Parallel Knowledge Fusion encoder (module docstring: eq 8-14).

    Args:
        num_layers (int or sequence of int, optional): :math:`L_k` per behavior (upstream ->
            target), or one ``int`` for all. The paper's best for three behaviors is
            ``(4, 1, 1)``. (default: :obj:`(4, 1, 1)`)
        fusion (str, optional): ``'projection'`` (eq 12), ``'vanilla'`` (eq 13), ``'sum'``,
            ``'linear'`` (table 4) or ``'none'``. (default: :obj:`'projection'`)
        embedding_dim (int, optional): :math:`d`, needed by ``'vanilla'`` and ``'linear'``.
        norm (str, optional): normalisation of :math:`\mathbf{A}_k`: ``'left_self_loop'``
            (eq 9) or the code's ``'left'``, or any other norm of
            :class:`~mbgraph.data.adjacency.BehaviorAdjacency`. (default:
            :obj:`'left_self_loop'`)
        projection_scale (float, optional): :math:`s` of eq 12 (the authors' code: ``0.3``).
            (default: :obj:`1.0`)
        gate_input (str, optional): input of the ``'vanilla'`` gate, ``'concat'`` or
            ``'cascade'``. (default: :obj:`'concat'`)
        eps (float, optional): :math:`\epsilon` of eq 12. (default: :obj:`1e-12`)
        num_behaviors (int, optional): :math:`K`, needed with an ``int`` ``num_layers`` and a
            fusion with parameters.
        parallel_input (str, optional): the parallel vector fused with
            :math:`\mathbf{e}_{cas}`: ``'aggregate'`` (:math:`\mathbf{e}_{par} =
            \hat{\mathbf{A}}_k \mathbf{p}^{k,l}`, eq 12-13) or ``'next_layer'``
            (:math:`\mathbf{p}^{k,l+1} = \hat{\mathbf{A}}_k \mathbf{p}^{k,l} +
            \mathbf{p}^{k,l}`, the authors' code). (default: :obj:`'aggregate'`)

    Shapes:
        - **input:** ego embeddings ``[U + I, d]`` (users first) or an ``x_dict``, and
          the graph: a :class:`~mbgraph.data.adjacency.BehaviorAdjacency`, a PyG
          ``HeteroData`` or an ``edge_index_dict``
          (:meth:`~mbgraph.nn.encoders.base.MultiBehaviorEncoder.inputs`).
        - **output:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` ``[K, U, d]`` /
          ``[K, I, d]`` (:math:`\mathbf{z}^{k,*}`), with ``extras['parallel']`` the
          ``BehaviorEmbeddings`` of :math:`\mathbf{p}^{k,*}`.
    """

    def __init__(self, num_layers: LayerSpec = (4, 1, 1), fusion: str = 'projection',
                 embedding_dim: Optional[int] = None, norm: str = 'left_self_loop',
                 projection_scale: float = 1.0, gate_input: str = 'concat',
                 eps: float = 1e-12, num_behaviors: Optional[int] = None,
                 parallel_input: str = 'aggregate'):
        super().__init__(num_layers, num_behaviors)
        self.fusion = check_choice('fusion', fusion, FUSIONS)
        self.parallel_input = check_choice('parallel_input', parallel_input, PARALLEL_INPUTS)
        self.norm = check_choice('norm', norm, NORMS)
        self.gate_input = check_choice('gate_input', gate_input, GATE_INPUTS)
        self.projection_scale = float(projection_scale)
        self.eps = float(eps)
        self.embedding_dim = embedding_dim
        self.register_parameter('weight', None)
        self.register_parameter('bias', None)
        if fusion in ('vanilla', 'linear'):
            if embedding_dim is None or embedding_dim <= 0:
                raise ValueError(f"fusion={fusion!r} learns W_(k,l): pass embedding_dim (got "
                                 f'{embedding_dim!r})')
            if self.layers is None:
                raise ValueError(f"fusion={fusion!r} learns W_(k,l) per behavior and layer: "
                                 'pass one layer count per behavior or num_behaviors')
            total, d = sum(self.layers), embedding_dim
            if fusion == 'vanilla':
                in_dim = 4 * d if gate_input == 'concat' else d
                self.weight = nn.Parameter(torch.empty(total, 4, in_dim))
                self.bias = nn.Parameter(torch.empty(total, 4))
            else:
                self.weight = nn.Parameter(torch.empty(total, d, d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            for w in self.weight:
                nn.init.xavier_uniform_(w)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def fuse(self, e_cas: Tensor, e_par: Tensor, t: int) -> Optional[Tensor]:
        r""":math:`\mathbf{f}(\mathbf{e}_{cas}, \mathbf{e}_{par})` of the ``t``-th layer
        (counted over all behaviors), ``None`` for ``'none'``."""
        return fuse(self.fusion, e_cas, e_par,
                    None if self.weight is None else self.weight[t],
                    None if self.bias is None else self.bias[t],
                    self.projection_scale, self.gate_input, self.eps)

    def _step(self, op, state: Tuple[Tensor, Tensor], layer: int,
              t: int) -> Tuple[Tensor, Tensor]:
        """One layer of both streams, ``(z, p) -> (z', p')`` (eq 9, 11, 12-13), the
        behavior's ``layer``-th; ``t`` counts the layers of the behaviors before it."""
        z, p = state
        # one sparse product per stream: measured faster than A_k [z | p] with its
        # concatenation and the two zero-filled slice gradients
        e_cas, e_par = op @ z, op @ p
        z_next = e_cas + z                                    # eq 9
        p_next = e_par + p                                    # eq 11
        fused = self.fuse(e_cas, p_next if self.parallel_input == 'next_layer' else e_par,
                          t + layer)                          # eq 12 / 13 / table 4
        return (z_next if fused is None else z_next + fused), p_next

    def forward(self, ego: Tensor, adjacency) -> BehaviorEmbeddings:
        ego, adjacency = self.inputs(ego, adjacency)
        behaviors = self.check_input(ego, adjacency)
        layers = self.layers_for(behaviors)
        d = ego.size(1)
        if self.embedding_dim is not None and self.weight is not None \
                and d != self.embedding_dim:
            raise ValueError(f'PKFEncoder was built for embedding_dim={self.embedding_dim}, '
                             f'got ego embeddings of dimension {d}')
        cascade, parallel = [], []
        z0 = ego   # z^{k,0}
        t = 0      # layer index over all behaviors, for W_(k,l)
        for k, b in enumerate(behaviors):
            op = adjacency.operator(b, norm=self.norm)
            # the two streams advance together, one layer state (z, p)
            zs, ps = (list(s) for s in zip(*propagate((z0, ego), op, layers[k],
                                                      step=functools.partial(self._step, t=t))))
            cascade.append(combine_layers(zs, 'sum'))                 # eq 14
            parallel.append(combine_layers(ps, 'sum'))
            z0 = zs[-1] + zs[0]                                       # eq 10
            t += layers[k]
        num_users = adjacency.num_users
        par = self.stack(behaviors, parallel, num_users)
        return self.stack(behaviors, cascade, num_users, {'parallel': par})

    def extra_repr(self) -> str:
        parts = [f'num_layers={self._layers_repr()}', f'fusion={self.fusion!r}',
                 f'norm={self.norm!r}']
        if self.fusion == 'projection':
            parts.append(f'projection_scale={self.projection_scale}')
        if self.fusion == 'vanilla':
            parts.append(f'gate_input={self.gate_input!r}')
        if self.parallel_input != 'aggregate':
            parts.append(f'parallel_input={self.parallel_input!r}')
        if self.embedding_dim is not None:
            parts.append(f'embedding_dim={self.embedding_dim}')
        return ', '.join(parts)
