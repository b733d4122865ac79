r"""Stateless building blocks shared by the encoders and the heads, as
``torch.nn.functional`` is for torch's layers: the one propagation engine, its layer
combination, and the fusion functions of PKEF.

**Propagation.** Every graph encoder of mbgraph (and DFME's fitting experts) computes a list
of layers from one cached operator :math:`\hat{\mathbf{A}}`,

.. math::
    \mathbf{h}^{0} = \mathbf{x}, \qquad
    \mathbf{h}^{l+1} = \mathrm{step}(\hat{\mathbf{A}}, \mathbf{h}^{l}, l), \qquad
    l = 0, \dots, L - 1,

and combines them. The default step is LightGCN's :math:`\hat{\mathbf{A}}\mathbf{h}`; the
models differ only in the step, passed as a callback (:func:`residual_step` is the common
:math:`\hat{\mathbf{A}}\mathbf{h} + \mathbf{h}`; COGCN's union reading, CRGCN's bias, PKEF's
fusion and DFME's :math:`\hat{\mathbf{A}}(\mathbf{h} \circ \mathbf{r}^{l}) (+ \mathbf{h})`
write their own). Example, two LightGCN layers averaged::

    >>> import torch
    >>> a = torch.tensor([[0., 1.], [1., 0.]])
    >>> propagate(torch.tensor([[1.], [3.]]), a, 2, combine='mean')
    tensor([[1.6667],
            [2.3333]])

The normalisations of the operators are :func:`mbgraph.data.adjacency.normalize_edges`
(re-exported here): the data side builds the operators with it, and ``data`` does not import
``nn``.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Union

import torch
from torch import Tensor

from ..data.adjacency import normalize_edges

#: the layer combinations of :func:`combine_layers`
COMBINES = ('mean', 'sum', 'last')

#: ``step(op, h, layer) -> next h``: one propagation layer (``layer`` counts from 0)
Step = Callable[[object, Tensor, int], Tensor]


def lightgcn_step(op, h: Tensor, layer: int) -> Tensor:
    r""":math:`\hat{\mathbf{A}}\mathbf{h}` (LightGCN; COGCN's paper step, whose operator is
    :math:`\mathbf{D}^{-1}\mathbf{A} + \mathbf{I}`)."""
    return op @ h


def residual_step(op, h: Tensor, layer: int) -> Tensor:
    r""":math:`\hat{\mathbf{A}}\mathbf{h} + \mathbf{h}` (PKEF eq 9 and 11, the COPF code's
    :math:`\mathbf{A}\mathbf{E} + \mathbf{E}`)."""
    return op @ h + h


def _check_combine(combine: str) -> None:
    if combine not in COMBINES:
        raise ValueError(f'unknown combine {combine!r}; expected one of {list(COMBINES)}')


def combine_layers(layers: Sequence[Tensor], combine: str) -> Tensor:
    """``'mean'``, ``'sum'`` or ``'last'`` of a list of layer embeddings."""
    _check_combine(combine)
    if combine == 'last':
        return layers[-1]
    total = torch.stack(list(layers)).sum(0)
    return total / len(layers) if combine == 'mean' else total


def propagate(x: Any, op, num_layers: int, *, step: Optional[Step] = None,
              combine: Optional[str] = None,
              running: bool = False) -> Union[List[Tensor], Tensor]:
    r"""The propagation engine: the layers :math:`[\mathbf{h}^0 = \mathbf{x}, \dots,
    \mathbf{h}^{L}]` over one operator (``L + 1`` tensors), or their combination.

    Args:
        x (Tensor): :math:`\mathbf{h}^0`, ``[N, d]`` (or any layer state that ``step``
            understands: PKEF's two streams advance as one pair ``(z, p)``; ``combine`` then
            needs tensors).
        op: the operator (a :class:`~mbgraph.data.adjacency.SparseOperator`, a torch sparse
            or dense matrix: anything with ``op @ h``), handed to ``step``.
        num_layers (int): :math:`L \ge 0`.
        step (callable, optional): ``step(op, h, layer) -> next h``; ``None`` is
            :func:`lightgcn_step`.
        combine (str, optional): ``None`` returns the list of layers; ``'mean'``, ``'sum'``
            or ``'last'`` their :func:`combine_layers`.
        running (bool, optional): with ``combine``, add each layer to a running total as it
            is computed (``h0 + h1 + ...``, left to right) instead of stacking the layers and
            reducing them at the end. The same sum up to float rounding (bitwise the same
            for up to four layers on CPU; the backward pass accumulates in another order);
            :class:`~mbgraph.nn.encoders.lightgcn.LightGCNEncoder` and DFME's fitting
            experts have always summed this way, and keep their exact numbers.
            (default: :obj:`False`)
    """
    if num_layers < 0:
        raise ValueError(f'num_layers must be >= 0, got {num_layers}')
    if combine is not None:
        _check_combine(combine)
    step = lightgcn_step if step is None else step
    running = running and combine in ('mean', 'sum')
    layers = [x]
    total = x
    for layer in range(num_layers):
        layers.append(step(op, layers[-1], layer))
        if running:
            total = total + layers[-1]
    if combine is None:
        return layers
    if not running:
        return combine_layers(layers, combine)
    return total / len(layers) if combine == 'mean' else total


#: PKEF's fusion functions (section 4.2, table 4), :func:`fuse`
FUSIONS = ('projection', 'vanilla', 'sum', 'linear', 'none')


def fuse(fusion: str, base: Tensor, other: Tensor, weight: Optional[Tensor] = None,
         bias: Optional[Tensor] = None, projection_scale: float = 1.0,
         gate_input: str = 'concat', eps: float = 1e-12) -> Optional[Tensor]:
    r"""One fusion function of PKEF (:mod:`mbgraph.nn.encoders.pkf`),
    :math:`\mathbf{f}(\mathbf{base}, \mathbf{other})` over the last axis (``base`` is
    :math:`\mathbf{e}_{cas}`, ``other`` :math:`\mathbf{e}_{par}`; any broadcastable leading
    shape). ``weight`` is :math:`\mathbf{W}` (``[d, d]`` for ``'linear'``, ``[4, 4d]`` or
    ``[4, d]`` for ``'vanilla'``), ``bias`` the vanilla gate's ``[4]``. ``None`` for
    ``'none'``. Also used by :class:`~mbgraph.nn.heads.expert_fusion.ExpertFusionHead` for
    COPF table 4's aggregation schemes."""
    if fusion == 'none':
        return None
    if fusion == 'sum':
        return other
    if fusion == 'linear':
        return other @ weight.t()
    if fusion == 'projection':
        coef = (other * base).sum(-1, keepdim=True) / (
            base.pow(2).sum(-1, keepdim=True) + eps)
        return projection_scale * coef * base
    if fusion != 'vanilla':
        raise ValueError(f'unknown fusion {fusion!r}; expected one of {list(FUSIONS)}')
    base, other = torch.broadcast_tensors(base, other)
    feats = torch.stack([base, other, base - other, base * other], dim=-2)   # [..., 4, d]
    gate_in = feats.flatten(-2) if gate_input == 'concat' else base
    w = torch.softmax(gate_in @ weight.t() + bias, dim=-1)                   # [..., 4]
    return (w.unsqueeze(-1) * feats).sum(-2)


__all__ = ['COMBINES', 'FUSIONS', 'Step', 'combine_layers', 'fuse', 'lightgcn_step',
           'normalize_edges', 'propagate', 'residual_step']
