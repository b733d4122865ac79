r"""MB-CGCN (Cheng et al., "Multi-Behavior Recommendation with Cascading Graph Convolution
Networks", WWW 2023): cascading LightGCNs linked by feature transformations. No paper file is
bundled; the reading below is stated explicitly and every deviation is a named option.

Each behavior :math:`k` runs LightGCN over its own graph,

.. math::
    \mathbf{e}^{k,l+1} = \hat{\mathbf{A}}_k\,\mathbf{e}^{k,l}, \qquad
    \mathbf{e}^{k,*} = \operatorname{combine}_{l=0}^{L_k} \mathbf{e}^{k,l}
    \quad (\text{mean over layers, as LightGCN}),

and the next behavior starts from a feature transformation of it, with separate user and item
matrices (row vectors)

.. math::
    \mathbf{e}_u^{k+1,0} = \mathbf{e}_u^{k,*}\,\mathbf{W}_u^{k}, \qquad
    \mathbf{e}_v^{k+1,0} = \mathbf{e}_v^{k,*}\,\mathbf{W}_v^{k}
    \qquad (\texttt{link='transform'}).

The prediction of the target behavior uses the sum of all behaviors' embeddings,
:math:`\mathbf{e}_u = \sum_k \mathbf{e}_u^{k,*}` (``aggregate_target=True`` writes it into the
target's slot). PKEF restates this cascade without the transformation as a residual link
(PKEF eq 10), available as ``link='residual'``:

.. math::
    \mathbf{e}^{k+1,0} = \mathbf{e}^{k,L_k} + \mathbf{e}^{k,0}.

``normalize_output=True`` L2-normalises each :math:`\mathbf{e}^{k,*}` (rows; before the
transformation and the sum; see the scale note of :mod:`mbgraph.nn.encoders.cascade`); the
encoder default stays the bare equations (``False``). ``weight_init`` starts each
:math:`\mathbf{W}^k` at Xavier, the identity, or normal with std 0.01 (``'normal'``, the
authors' code, MBCGCN.py ``_init_weights``). The authors' code
(``docs/reference_mbcgcn_crgcn.md``) also lets the L2 term cover the four transforms
(``regularize_weight=True``), which no equation names.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import COMBINES, combine_layers
from .base import LayerSpec, check_choice
from .cascade import CascadeEncoder

LINKS = ('transform', 'residual')
WEIGHT_INITS = ('xavier', 'identity', 'normal')


class MBCGCNEncoder(CascadeEncoder):
    r"""MB-CGCN's cascade (module docstring for the update rules and the reading).

    Args:
        num_layers (int or sequence of int, optional): :math:`L_k`, one for every behavior or
            one per behavior (upstream -> target). (default: :obj:`2`)
        norm (str, optional): normalisation of :math:`\mathbf{A}_k` (see
            :meth:`~mbgraph.data.adjacency.BehaviorAdjacency.operator`).
            (default: :obj:`'symmetric'`)
        link (str, optional): ``'transform'`` (the paper's :math:`\mathbf{e}^{k,*}
            \mathbf{W}^k`, needs ``embedding_dim`` and the number of behaviors) or
            ``'residual'`` (PKEF eq 10's restatement, :math:`\mathbf{e}^{k,L_k} +
            \mathbf{e}^{k,0}`). (default: :obj:`'transform'`)
        combine (str, optional): layer combination of :math:`\mathbf{e}^{k,*}`, ``'mean'``
            (LightGCN, the MB-CGCN code), ``'sum'`` (PKEF eq 14) or ``'last'``.
            (default: :obj:`'mean'`)
        aggregate_target (bool, optional): the prediction embedding: replace the target
            behavior's output by :math:`\sum_k \mathbf{e}^{k,*}`. (default: :obj:`True`)
        embedding_dim (int, optional): :math:`d`, needed by ``link='transform'`` and
            ``bias``.
        num_behaviors (int, optional): :math:`K`, needed by ``link='transform'`` when
            ``num_layers`` is a single ``int``.
        normalize_output (bool, optional): L2-normalise every :math:`\mathbf{e}^{k,*}` (rows)
            before it feeds the next behavior and the target's sum. (default: :obj:`False`)
        weight_init (str, optional): ``link='transform'`` only: ``'xavier'``,
            ``'identity'`` or ``'normal'`` (std 0.01, the authors' code).
            (default: :obj:`'xavier'`)
        regularize_weight (bool, optional): the model's L2 term covers :math:`\mathbf{W}^k`
            too (:meth:`regularized_parameters`, the authors' code). (default: :obj:`False`)
        bias (bool, optional): a learnable bias after every propagation layer, zero-initialised
            (:class:`~mbgraph.nn.encoders.cascade.CascadeEncoder`). (default: :obj:`False`)

    Shapes:
        - **input:** ego embeddings ``[U + I, d]`` (users first) or an ``x_dict``, and
          the graph: a :class:`~mbgraph.data.adjacency.BehaviorAdjacency`, a PyG
          ``HeteroData`` or an ``edge_index_dict``
          (:meth:`~mbgraph.nn.encoders.base.MultiBehaviorEncoder.inputs`).
        - **output:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` with users
          ``[K, U, d]`` and items ``[K, I, d]`` (:math:`\mathbf{e}^{k,*}`).
    """

    mode = 'mbcgcn'
    #: MB-CGCN has no residual normalisation (CRGCN's ``normalize``)
    normalize = False

    def __init__(self, num_layers: LayerSpec = 2, norm: str = 'symmetric',
                 link: str = 'transform', combine: str = 'mean', aggregate_target: bool = True,
                 embedding_dim: Optional[int] = None, num_behaviors: Optional[int] = None,
                 normalize_output: bool = False, weight_init: str = 'xavier',
                 regularize_weight: bool = False, bias: bool = False):
        super().__init__(num_layers, norm, aggregate_target, embedding_dim, num_behaviors)
        self.link = check_choice('link', link, LINKS)
        self.combine = check_choice('combine', combine, COMBINES)
        self.normalize_output = bool(normalize_output)
        self.weight_init = check_choice('weight_init', weight_init, WEIGHT_INITS)
        if self.link == 'transform':
            if embedding_dim is None or embedding_dim <= 0:
                raise ValueError("link='transform' learns d x d matrices: pass "
                                 f'embedding_dim (got {embedding_dim!r})')
            if self.num_behaviors is None:
                raise ValueError("link='transform' learns one pair of matrices per behavior "
                                 'transition: pass num_behaviors or one layer count per '
                                 'behavior')
            # W^k for the transitions k -> k+1, [K - 1, 2 (user, item), d, d]
            self.weight = nn.Parameter(torch.empty(self.num_behaviors - 1, 2, embedding_dim,
                                                   embedding_dim))
        else:
            self.register_parameter('weight', None)
        self.regularize_weight = bool(regularize_weight)
        self._init_bias(bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            for w in self.weight.view(-1, *self.weight.shape[-2:]):
                if self.weight_init == 'identity':
                    with torch.no_grad():
                        w.copy_(torch.eye(w.size(0), dtype=w.dtype, device=w.device))
                elif self.weight_init == 'normal':
                    nn.init.normal_(w, std=0.01)
                else:
                    nn.init.xavier_uniform_(w)
        super().reset_parameters()

    def regularized_parameters(self) -> List[Tensor]:
        """``[W]`` with ``regularize_weight=True`` (MB-CGCN's code), else none."""
        return [self.weight] if self.regularize_weight and self.weight is not None else []

    def check_dim(self, ego: Tensor) -> None:
        if self.weight is not None and ego.size(1) != self.weight.size(-1):
            raise ValueError(f'{type(self).__name__} was built for embedding_dim='
                             f'{self.weight.size(-1)}, got ego embeddings of dimension '
                             f'{ego.size(1)}')
        super().check_dim(ego)

    def behavior_output(self, k: int, layers: Sequence[Tensor], num_users: int,
                        last: bool) -> Tuple[Tensor, Optional[Tensor]]:
        out = combine_layers(layers, self.combine)
        if self.normalize_output:
            out = F.normalize(out, dim=-1)
        if last:
            return out, None
        if self.link == 'residual':
            return out, layers[-1] + layers[0]                   # PKEF eq 10
        return out, torch.cat([out[:num_users] @ self.weight[k, 0],
                               out[num_users:] @ self.weight[k, 1]])

    def extra_repr(self) -> str:
        middle = [f'link={self.link!r}', f'combine={self.combine!r}']
        if self.normalize_output:
            middle.append('normalize_output=True')
        if self.weight is not None and self.weight_init != 'xavier':
            middle.append(f'weight_init={self.weight_init!r}')
        return self._repr_parts(middle, ['regularize_weight=True'] if self.regularize_weight
                                else [])
