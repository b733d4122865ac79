r"""Cascading encoders: behavior :math:`k`'s graph convolution starts from what behavior
:math:`k-1` learned. This module holds what the two published cascades share,
:class:`CascadeEncoder`; the cascades themselves are
:class:`~mbgraph.nn.encoders.mbcgcn.MBCGCNEncoder` (MB-CGCN, WWW 2023) and
:class:`~mbgraph.nn.encoders.crgcn.CRGCNEncoder` (CRGCN, TOIS 2023), one file each. No paper
file is bundled for either; their readings are stated in their modules and every deviation is
a named option.

Both run, behavior after behavior (upstream -> target), LightGCN over behavior :math:`k`'s
graph from an input that the previous behavior's output decides,

.. math::
    \mathbf{e}^{1,0} = \mathbf{E}^{(0)}, \qquad
    \mathbf{e}^{k,l+1} = \hat{\mathbf{A}}_k\,\mathbf{e}^{k,l} \;(+\, \mathbf{b}^{k,l}),
    \qquad \mathbf{e}^{k+1,0} = \mathrm{link}(\mathbf{e}^{k,0}, \dots, \mathbf{e}^{k,L_k}),

and differ in the output :math:`\mathbf{e}^{k,*}` of a behavior and the link. Shared:
:math:`\hat{\mathbf{A}}_k = \mathrm{norm}(\mathbf{A}_k)` is behavior :math:`k`'s cached
operator (``norm='symmetric'``: LightGCN's :math:`\mathbf{D}^{-1/2}\mathbf{A}_k
\mathbf{D}^{-1/2}`; see :mod:`mbgraph.data.adjacency`); ``bias=True`` adds a learnable bias
:math:`\mathbf{b}^{k,l}`, zero at the start, to every node after every propagation layer (the
CRGCN authors' code: its layers are PyG-style ``GCNConv`` layers, which keep their bias); and
``aggregate_target=True`` replaces the target behavior's output by the sum of all behaviors'
outputs, :math:`\sum_k \mathbf{e}^{k,*}` (MB-CGCN's prediction embedding).

**Scale (why the cascades normalise).** The initial embeddings are Xavier-initialised
(row norms about 0.2 to 0.3 here) and :math:`\hat{\mathbf{A}}_k^L\mathbf{e}` of random
rows is smaller still, and zero for a node without behavior-:math:`k` edges. Unnormalised,
every cascade output is dominated by the raw ID embedding :math:`\mathbf{e}^{(0)}`, so the
bilinear BPR fits it like matrix factorisation on the (sparse) target: the validation metric
peaks after one to three epochs and then falls, below LightGCN. Unit-norm propagated terms
make the collaborative (graph) signal dominate and equalise its scale across nodes of
different degree: CRGCN's ``normalize=True`` and MB-CGCN's ``normalize_output=True``.

``CascadeEncoder(mode='mbcgcn' | 'crgcn', ...)``, the single class both cascades used to be,
still builds them (deprecated): it returns an ``MBCGCNEncoder`` or a ``CRGCNEncoder``, with the
same arguments, parameters and state-dict keys as before.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

# the shared plumbing moved to base.py and the engine to nn/functional.py; re-exported here
# for the old import paths
from ...data.adjacency import NORMS
from ..functional import combine_layers, propagate
from .base import BehaviorEmbeddings, LayerSpec, PerBehaviorEncoder, check_choice, resolve_layers

__all__ = ['CascadeEncoder', 'MODES', 'LayerSpec', 'PerBehaviorEncoder', 'check_choice',
           'resolve_layers', 'propagate', 'combine_layers']

#: the cascades ``CascadeEncoder(mode=...)`` builds
MODES = ('mbcgcn', 'crgcn')


class _ByMode(type(PerBehaviorEncoder)):
    """Calling :class:`CascadeEncoder` itself builds the cascade its ``mode`` names (the old
    single-class interface); its subclasses are built as any class."""

    def __call__(cls, *args, **kwargs):
        if cls is CascadeEncoder:
            return _from_mode(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class CascadeEncoder(PerBehaviorEncoder, metaclass=_ByMode):
    r"""What the cascades share (module docstring): the behavior loop, the optional bias of
    every propagation layer, and ``aggregate_target``. A subclass says what a behavior outputs
    and what the next behavior starts from (:meth:`behavior_output`).

    ``CascadeEncoder(num_layers, mode='mbcgcn', ...)`` itself is the deprecated factory of
    the old single class: ``mode='mbcgcn'`` returns
    :class:`~mbgraph.nn.encoders.mbcgcn.MBCGCNEncoder`, ``mode='crgcn'``
    :class:`~mbgraph.nn.encoders.crgcn.CRGCNEncoder`, and every other argument keeps its old
    meaning.

    Args:
        num_layers (int or sequence of int): :math:`L_k`, one for every behavior or one per
            behavior (upstream -> target).
        norm (str): normalisation of :math:`\mathbf{A}_k` (see
            :meth:`~mbgraph.data.adjacency.BehaviorAdjacency.operator`).
        aggregate_target (bool): replace the target behavior's output by
            :math:`\sum_k \mathbf{e}^{k,*}`.
        embedding_dim (int, optional): :math:`d`.
        num_behaviors (int, optional): :math:`K`.
        bias (bool): a learnable bias :math:`\mathbf{b}^{k,l}` after every propagation layer,
            zero-initialised. Needs ``embedding_dim`` and one layer count per behavior (or
            ``num_behaviors``).
    """

    #: the name of this cascade under the old ``CascadeEncoder(mode=...)``
    mode: str = ''

    def __init__(self, num_layers: LayerSpec, norm: str, aggregate_target: bool,
                 embedding_dim: Optional[int], num_behaviors: Optional[int]):
        super().__init__(num_layers, num_behaviors)
        self.norm = check_choice('norm', norm, NORMS)
        self.aggregate_target = bool(aggregate_target)
        self.embedding_dim = embedding_dim

    def _init_bias(self, bias: bool) -> None:
        """Register :math:`\\mathbf{b}^{k,l}` (``[sum_k L_k, d]``), or ``None``; a subclass
        calls it after its own parameters (the state-dict order of the old class)."""
        if bias:
            if self.layers is None or not self.embedding_dim:
                raise ValueError('bias=True learns one bias per propagation layer: pass '
                                 'embedding_dim and one layer count per behavior (or '
                                 'num_behaviors)')
            self.bias = nn.Parameter(torch.zeros(sum(self.layers), self.embedding_dim))
        else:
            self.register_parameter('bias', None)

    def reset_parameters(self) -> None:
        if getattr(self, 'bias', None) is not None:
            with torch.no_grad():
                self.bias.zero_()

    def check_dim(self, ego: Tensor) -> None:
        """A clear error when ``ego``'s dimension is not the one the parameters were built
        for."""
        if self.bias is not None and self.bias.size(1) != ego.size(1):
            raise ValueError(f'{type(self).__name__} was built with a bias of dimension '
                             f'{self.bias.size(1)}, got ego embeddings of dimension '
                             f'{ego.size(1)}')

    def _bias_step(self, start: int):
        r"""``None`` (LightGCN's :math:`\hat{\mathbf{A}}\mathbf{h}`) without a bias, else the
        step :math:`\hat{\mathbf{A}}\mathbf{h} + \mathbf{b}^{k,l}` (GCNConv's, every node)
        of the behavior whose first layer is the ``start``-th over all behaviors."""
        if self.bias is None:
            return None

        def step(op, h: Tensor, layer: int) -> Tensor:
            return op @ h + self.bias[start + layer]
        return step

    def behavior_output(self, k: int, layers: Sequence[Tensor], num_users: int,
                        last: bool) -> Tuple[Tensor, Optional[Tensor]]:
        r"""``(e^{k,*}, e^{k+1,0})`` from behavior ``k``'s layers
        :math:`[\mathbf{e}^{k,0}, \dots, \mathbf{e}^{k,L_k}]`; the second may be ``None``
        when ``last`` (the target behavior: nothing follows)."""
        raise NotImplementedError  # pragma: no cover

    def forward(self, ego: Tensor, adjacency) -> BehaviorEmbeddings:
        ego, adjacency = self.inputs(ego, adjacency)
        behaviors = self.check_input(ego, adjacency)
        layers = self.layers_for(behaviors)
        self.check_dim(ego)
        num_users = adjacency.num_users
        outputs = []
        x = ego  # e^{k,0}
        for k, b in enumerate(behaviors):
            op = adjacency.operator(b, norm=self.norm)
            hs = propagate(x, op, layers[k], step=self._bias_step(sum(layers[:k])))
            out, x = self.behavior_output(k, hs, num_users, last=k + 1 == len(behaviors))
            outputs.append(out)
        if self.aggregate_target:
            outputs[-1] = torch.stack(outputs).sum(0)
        return self.stack(behaviors, outputs, num_users)

    def _repr_parts(self, middle: Sequence[str], after: Sequence[str] = ()) -> str:
        parts = [f'num_layers={self._layers_repr()}', f'mode={self.mode!r}',
                 f'norm={self.norm!r}', *middle, f'aggregate_target={self.aggregate_target}',
                 *after]
        if self.bias is not None:
            parts.append('bias=True')
        if self.embedding_dim is not None:
            parts.append(f'embedding_dim={self.embedding_dim}')
        return ', '.join(parts)


def _from_mode(num_layers: LayerSpec = 2, mode: str = 'mbcgcn', norm: str = 'symmetric',
               link: Optional[str] = None, combine: Optional[str] = None,
               aggregate_target: Optional[bool] = None, normalize: Optional[bool] = None,
               embedding_dim: Optional[int] = None, num_behaviors: Optional[int] = None,
               normalize_output: bool = False, weight_init: str = 'xavier',
               regularize_weight: bool = False, bias: bool = False) -> CascadeEncoder:
    """The old ``CascadeEncoder(...)`` constructor: its arguments, checks and defaults, now
    building the cascade ``mode`` names."""
    check_choice('mode', mode, MODES)
    warnings.warn(f"CascadeEncoder(mode={mode!r}) is deprecated; use "
                  f"{'MBCGCNEncoder' if mode == 'mbcgcn' else 'CRGCNEncoder'}(...) from "
                  f"mbgraph.nn", DeprecationWarning, stacklevel=3)
    if mode == 'crgcn':
        for name, value in (('link', link), ('combine', combine)):
            if value is not None:
                raise ValueError(f"{name}={value!r} applies to mode='mbcgcn' only; CRGCN "
                                 f"sums its input and its last propagation layer")
        if normalize_output:
            raise ValueError("normalize_output=True applies to mode='mbcgcn' only; CRGCN "
                             "uses normalize")
        check_choice('weight_init', weight_init, ('xavier', 'identity', 'normal'))
        from .crgcn import CRGCNEncoder
        # weight_init and regularize_weight never acted on CRGCN, which has no transform
        return CRGCNEncoder(num_layers, norm=norm,
                            normalize=True if normalize is None else normalize,
                            aggregate_target=bool(aggregate_target), embedding_dim=embedding_dim,
                            num_behaviors=num_behaviors, bias=bias)
    if normalize:
        raise ValueError("normalize=True applies to mode='crgcn' only")
    from .mbcgcn import MBCGCNEncoder
    return MBCGCNEncoder(num_layers, norm=norm, link=link or 'transform',
                         combine=combine or 'mean',
                         aggregate_target=True if aggregate_target is None else aggregate_target,
                         embedding_dim=embedding_dim, num_behaviors=num_behaviors,
                         normalize_output=normalize_output, weight_init=weight_init,
                         regularize_weight=regularize_weight, bias=bias)
