r"""Cascading encoders: behavior :math:`k`'s graph convolution starts from what behavior
:math:`k-1` learned.

Two published cascades (no paper file is bundled for either; the readings below are stated
explicitly and every deviation is a named option):

**MB-CGCN** (Cheng et al., "Multi-Behavior Recommendation with Cascading Graph Convolution
Networks", WWW 2023). Each behavior :math:`k` runs LightGCN over its own graph,

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

**CRGCN** (Yan et al., "Cascading Residual Graph Convolutional Network for Multi-Behavior
Recommendation", TOIS 2023). Behavior :math:`k`'s LightGCN starts from the previous behavior's
output and its output is the residual sum of that input and the last propagation layer:

.. math::
    \mathbf{e}^{1,0} = \mathbf{E}^{(0)}, \quad \mathbf{e}^{k,0} = \mathbf{e}^{k-1,*}, \quad
    \mathbf{e}^{k,l+1} = \hat{\mathbf{A}}_k\,\mathbf{e}^{k,l}, \quad
    \mathbf{e}^{k,*} = \mathbf{e}^{k,0} + g(\mathbf{e}^{k,L_k}),

with :math:`g` the row-wise L2 normalisation (``normalize=True``, the default: the authors'
released code, which we take as the published method) or the identity (``normalize=False``,
the bare equation). CRGCN adds no parameter besides the embeddings.

**Scale (why the normalisation matters).** The initial embeddings are Xavier-initialised
(row norms about 0.2 to 0.3 here) and :math:`\hat{\mathbf{A}}_k^L\mathbf{e}` of random
rows is smaller still, and zero for a node without behavior-:math:`k` edges. Unnormalised,
every cascade output is dominated by the raw ID embedding :math:`\mathbf{e}^{(0)}`, so the
bilinear BPR fits it like matrix factorisation on the (sparse) target: the validation metric
peaks after one to three epochs and then falls, below LightGCN. Unit-norm propagated terms
make the collaborative (graph) signal dominate and equalise its scale across nodes of
different degree. MB-CGCN's ``normalize_output=True`` applies the same L2 normalisation to
each :math:`\mathbf{e}^{k,*}` (before the transformation and the sum); its encoder default
stays the bare equations (``False``); ``weight_init`` starts each :math:`\mathbf{W}^k` at
Xavier, the identity, or normal with std 0.01 (``'normal'``, the authors' code, MBCGCN.py
``_init_weights``).

**The authors' code** (``docs/reference_mbcgcn_crgcn.md``) adds two things no equation above
names: MB-CGCN's L2 term covers the four transforms (``regularize_weight=True``), and CRGCN's
propagation layers are PyG-style ``GCNConv`` layers with a learnable bias, zero at the start,
:math:`\mathbf{e}^{k,l+1} = \hat{\mathbf{A}}_k\mathbf{e}^{k,l} + \mathbf{b}^{k,l}`
(``bias=True``; the bias is added to every node, users and items).

In both, :math:`\hat{\mathbf{A}}_k = \mathrm{norm}(\mathbf{A}_k)` is behavior :math:`k`'s
cached operator (``norm='symmetric'``: LightGCN's
:math:`\mathbf{D}^{-1/2}\mathbf{A}_k\mathbf{D}^{-1/2}`; see
:mod:`mbgraph.data.adjacency`). The plumbing shared by the per-behavior encoders (layer counts
per behavior, input checks, stacking) is :class:`~mbgraph.nn.encoders.base.PerBehaviorEncoder`.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the shared plumbing moved to base.py and the engine to nn/functional.py; re-exported here
# for the old import paths
from ...data.adjacency import NORMS
from ..functional import COMBINES, combine_layers, propagate
from .base import BehaviorEmbeddings, LayerSpec, PerBehaviorEncoder, check_choice, resolve_layers

__all__ = ['CascadeEncoder', 'LayerSpec', 'PerBehaviorEncoder', 'check_choice', 'resolve_layers',
           'propagate', 'combine_layers']

MODES = ('mbcgcn', 'crgcn')
LINKS = ('transform', 'residual')
WEIGHT_INITS = ('xavier', 'identity', 'normal')


class CascadeEncoder(PerBehaviorEncoder):
    r"""MB-CGCN and CRGCN cascades (module docstring for the update rules and readings).

    Args:
        num_layers (int or sequence of int, optional): :math:`L_k`, one for every behavior or
            one per behavior (upstream -> target). (default: :obj:`2`)
        mode (str, optional): ``'mbcgcn'`` or ``'crgcn'``. (default: :obj:`'mbcgcn'`)
        norm (str, optional): normalisation of :math:`\mathbf{A}_k` (see
            :meth:`~mbgraph.data.adjacency.BehaviorAdjacency.operator`).
            (default: :obj:`'symmetric'`)
        link (str, optional): MB-CGCN only: ``'transform'`` (the paper's
            :math:`\mathbf{e}^{k,*}\mathbf{W}^k`, needs ``embedding_dim`` and the number of
            behaviors) or ``'residual'`` (PKEF eq 10's restatement,
            :math:`\mathbf{e}^{k,L_k} + \mathbf{e}^{k,0}`). (default: :obj:`'transform'`)
        combine (str, optional): MB-CGCN only: layer combination of
            :math:`\mathbf{e}^{k,*}`, ``'mean'`` (LightGCN, the MB-CGCN code), ``'sum'``
            (PKEF eq 14) or ``'last'``. (default: :obj:`'mean'`)
        aggregate_target (bool, optional): MB-CGCN's prediction embedding: replace the target
            behavior's output by :math:`\sum_k \mathbf{e}^{k,*}`. ``None``: ``True`` for
            ``'mbcgcn'``, ``False`` for ``'crgcn'``. (default: :obj:`None`)
        normalize (bool, optional): CRGCN only: L2-normalise :math:`\mathbf{e}^{k,L_k}`
            before the residual sum (the authors' code). ``None``: ``True`` for ``'crgcn'``.
            (default: :obj:`None`)
        normalize_output (bool, optional): MB-CGCN only: L2-normalise every
            :math:`\mathbf{e}^{k,*}` (rows) before it feeds the next behavior and the target's
            sum. (default: :obj:`False`)
        weight_init (str, optional): MB-CGCN ``link='transform'`` only: ``'xavier'``,
            ``'identity'`` or ``'normal'`` (std 0.01, the authors' code).
            (default: :obj:`'xavier'`)
        regularize_weight (bool, optional): MB-CGCN: the model's L2 term covers
            :math:`\mathbf{W}^k` too (:meth:`regularized_parameters`, the authors' code).
            (default: :obj:`False`)
        bias (bool, optional): a learnable bias :math:`\mathbf{b}^{k,l}` after every
            propagation layer, zero-initialised (CRGCN's code: ``GCNConv`` keeps its bias).
            Needs one layer count per behavior (or ``num_behaviors``). (default: :obj:`False`)
        embedding_dim (int, optional): :math:`d`, needed by ``link='transform'``.
        num_behaviors (int, optional): :math:`K`, needed by ``link='transform'`` when
            ``num_layers`` is a single ``int``.

    Shapes:
        - **input:** ego embeddings ``[U + I, d]`` (users first) and a
          :class:`~mbgraph.data.adjacency.BehaviorAdjacency`.
        - **output:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` with users
          ``[K, U, d]`` and items ``[K, I, d]`` (:math:`\mathbf{e}^{k,*}`).
    """

    def __init__(self, num_layers: LayerSpec = 2, mode: str = 'mbcgcn',
                 norm: str = 'symmetric', link: Optional[str] = None,
                 combine: Optional[str] = None, aggregate_target: Optional[bool] = None,
                 normalize: Optional[bool] = None, embedding_dim: Optional[int] = None,
                 num_behaviors: Optional[int] = None, normalize_output: bool = False,
                 weight_init: str = 'xavier', regularize_weight: bool = False,
                 bias: bool = False):
        super().__init__(num_layers, num_behaviors)
        self.mode = check_choice('mode', mode, MODES)
        self.norm = check_choice('norm', norm, NORMS)
        if mode == 'crgcn':
            for name, value in (('link', link), ('combine', combine)):
                if value is not None:
                    raise ValueError(f"{name}={value!r} applies to mode='mbcgcn' only; CRGCN "
                                     f"sums its input and its last propagation layer")
            if normalize_output:
                raise ValueError("normalize_output=True applies to mode='mbcgcn' only; CRGCN "
                                 "uses normalize")
            self.link = None
            self.combine = 'last'
            normalize = True if normalize is None else normalize
        else:
            if normalize:
                raise ValueError("normalize=True applies to mode='crgcn' only")
            normalize = False
            self.link = check_choice('link', link or 'transform', LINKS)
            self.combine = check_choice('combine', combine or 'mean', COMBINES)
        self.aggregate_target = (mode == 'mbcgcn') if aggregate_target is None \
            else bool(aggregate_target)
        self.normalize = bool(normalize)
        self.normalize_output = bool(normalize_output)
        self.weight_init = check_choice('weight_init', weight_init, WEIGHT_INITS)
        self.embedding_dim = embedding_dim
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
        if bias:
            if self.layers is None or not embedding_dim:
                raise ValueError('bias=True learns one bias per propagation layer: pass '
                                 'embedding_dim and one layer count per behavior (or '
                                 'num_behaviors)')
            self.bias = nn.Parameter(torch.zeros(sum(self.layers), embedding_dim))
        else:
            self.register_parameter('bias', None)
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
        if getattr(self, 'bias', None) is not None:
            with torch.no_grad():
                self.bias.zero_()

    def regularized_parameters(self) -> List[Tensor]:
        """``[W]`` with ``regularize_weight=True`` (MB-CGCN's code), else none."""
        return [self.weight] if self.regularize_weight and self.weight is not None else []

    def _bias_step(self, start: int):
        r"""``None`` (LightGCN's :math:`\hat{\mathbf{A}}\mathbf{h}`) without a bias, else the
        step :math:`\hat{\mathbf{A}}\mathbf{h} + \mathbf{b}^{k,l}` (GCNConv's, every node)
        of the behavior whose first layer is the ``start``-th over all behaviors."""
        if self.bias is None:
            return None

        def step(op, h: Tensor, layer: int) -> Tensor:
            return op @ h + self.bias[start + layer]
        return step

    def forward(self, ego: Tensor, adjacency) -> BehaviorEmbeddings:
        behaviors = self.check_input(ego, adjacency)
        layers = self.layers_for(behaviors)
        num_users = adjacency.num_users
        if self.weight is not None and ego.size(1) != self.weight.size(-1):
            raise ValueError(f'CascadeEncoder was built for embedding_dim='
                             f'{self.weight.size(-1)}, got ego embeddings of dimension '
                             f'{ego.size(1)}')
        if self.bias is not None and self.bias.size(1) != ego.size(1):
            raise ValueError(f'CascadeEncoder was built with a bias of dimension '
                             f'{self.bias.size(1)}, got ego embeddings of dimension '
                             f'{ego.size(1)}')
        outputs = []
        x = ego  # e^{k,0}
        for k, b in enumerate(behaviors):
            op = adjacency.operator(b, norm=self.norm)
            hs = propagate(x, op, layers[k], step=self._bias_step(sum(layers[:k])))
            if self.mode == 'crgcn':
                last = F.normalize(hs[-1], dim=-1) if self.normalize else hs[-1]
                out = x + last
                x = out
            else:
                out = combine_layers(hs, self.combine)
                if self.normalize_output:
                    out = F.normalize(out, dim=-1)
                if k + 1 < len(behaviors):
                    if self.link == 'residual':
                        x = hs[-1] + hs[0]  # PKEF eq 10
                    else:
                        x = torch.cat([out[:num_users] @ self.weight[k, 0],
                                       out[num_users:] @ self.weight[k, 1]])
            outputs.append(out)
        if self.aggregate_target:
            outputs[-1] = torch.stack(outputs).sum(0)
        return self.stack(behaviors, outputs, num_users)

    def extra_repr(self) -> str:
        parts = [f'num_layers={self._layers_repr()}', f'mode={self.mode!r}',
                 f'norm={self.norm!r}']
        if self.mode == 'mbcgcn':
            parts += [f'link={self.link!r}', f'combine={self.combine!r}']
            if self.normalize_output:
                parts.append('normalize_output=True')
            if self.weight is not None and self.weight_init != 'xavier':
                parts.append(f'weight_init={self.weight_init!r}')
        else:
            parts.append(f'normalize={self.normalize}')
        parts.append(f'aggregate_target={self.aggregate_target}')
        if self.regularize_weight:
            parts.append('regularize_weight=True')
        if self.bias is not None:
            parts.append('bias=True')
        if self.embedding_dim is not None:
            parts.append(f'embedding_dim={self.embedding_dim}')
        return ', '.join(parts)
