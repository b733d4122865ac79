r"""The building blocks the classical multi-task heads share: :class:`MTLHead` (their base:
configuration checks, towers, the behavior index), :class:`StackedMLP` (one MLP per behavior
or expert, batched), :class:`BehaviorMixture` (the softmax-weighted unified input of the
Shared-Bottom family, :mod:`~mbgraph.nn.heads.shared_bottom`), :func:`pair_features`,
:func:`gather_stacked`, :func:`check_embeddings` and :func:`mix_experts` (a gate's weighted
sum of experts: MMoE, PLE, MESI, PME).
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.nn.resolver import activation_resolver

from ..encoders.base import BehaviorEmbeddings
from .base import MultiTaskHead

PAIRS = ('hadamard', 'concat')


class StackedMLP(nn.Module):
    r"""``G`` independent MLPs with the same layer sizes, evaluated together: every layer is
    one batched matrix product over a leading group axis (experts, gates or towers of several
    tasks), not a Python loop over modules.

    .. math::
        \mathbf{h}^{(l+1)}_g = \sigma\left(\mathbf{h}^{(l)}_g \mathbf{W}^{(l)}_g +
        \mathbf{b}^{(l)}_g\right), \qquad g = 1, \dots, G

    Args:
        num_groups (int): :math:`G`.
        channels (list of int): ``[in, hidden..., out]``; at least two entries.
        act (str or callable, optional): activation between layers (PyG's activation
            resolver). (default: ``'relu'``)
        act_last (bool, optional): also apply it after the last layer (experts do, towers and
            gates do not). (default: ``False``)
        dropout (float, optional): dropout before every layer but the first. (default: ``0.``)
        bias (bool, optional): learn biases. (default: ``True``)

    Shapes:
        - **input:** ``[G, *, in]`` (one input per group), or ``[*, in]`` with
          ``shared=True`` (the same input for every group), or ``[*, in]`` with ``group=g``
          (group ``g`` only).
        - **output:** ``[G, *, out]``, or ``[*, out]`` with ``group=g``.
    """

    def __init__(self, num_groups: int, channels: Sequence[int],
                 act: Union[str, Callable, None] = 'relu', act_last: bool = False,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        channels = [int(c) for c in channels]
        if num_groups < 1:
            raise ValueError(f'StackedMLP needs num_groups >= 1, got {num_groups}')
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f'StackedMLP needs channels [in, ..., out] of positive sizes, '
                             f'got {channels}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1), got {dropout}')
        self.num_groups = int(num_groups)
        self.channels = channels
        self.act_name = act if isinstance(act, str) or act is None else type(act).__name__
        self.act = activation_resolver(act) if isinstance(act, str) else act
        self.act_last = act_last
        self.dropout = dropout
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(num_groups, c_in, c_out))
            for c_in, c_out in zip(channels[:-1], channels[1:]))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.empty(num_groups, c_out)) for c_out in channels[1:]) if bias \
            else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier, as PKEF and COPF initialise every parameter; zero biases
        for w in self.weights:
            bound = math.sqrt(6.0 / (w.size(1) + w.size(2)))
            nn.init.uniform_(w, -bound, bound)
        if self.biases is not None:
            for b in self.biases:
                nn.init.zeros_(b)

    @property
    def in_channels(self) -> int:
        return self.channels[0]

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    def forward(self, x: Tensor, shared: bool = False, group: Optional[int] = None) -> Tensor:
        if x.size(-1) != self.in_channels:
            raise ValueError(f'{self.__class__.__name__} expects {self.in_channels} input '
                             f'features, got input of shape {tuple(x.shape)}')
        last = len(self.weights) - 1
        if group is not None:  # one group: plain matmuls with that group's parameters
            h = x
            for l, w in enumerate(self.weights):
                if l > 0 and self.dropout > 0:
                    h = nn.functional.dropout(h, self.dropout, self.training)
                h = h @ w[group]
                if self.biases is not None:
                    h = h + self.biases[l][group]
                if l < last or self.act_last:
                    h = self.act(h)
            return h
        lead = x.shape[:-1] if shared else x.shape[1:-1]
        if not shared and x.size(0) != self.num_groups:
            raise ValueError(f'{self.__class__.__name__} has {self.num_groups} groups but the '
                             f'input has {x.size(0)} along its leading axis '
                             f'(shape {tuple(x.shape)}); pass shared=True for one shared input')
        h = x.reshape(-1, self.in_channels)
        for l, w in enumerate(self.weights):
            if l > 0 and self.dropout > 0:
                h = nn.functional.dropout(h, self.dropout, self.training)
            if l == 0 and shared:  # [M, in] @ [in, G * out] -> [G, M, out]
                g, c_in, c_out = w.shape
                h = (h @ w.permute(1, 0, 2).reshape(c_in, g * c_out))
                h = h.view(-1, g, c_out).transpose(0, 1)
            else:
                h = torch.bmm(h.view(self.num_groups, -1, w.size(1)), w)
            if self.biases is not None:
                h = h + self.biases[l].unsqueeze(1)
            if l < last or self.act_last:
                h = self.act(h)
        return h.reshape(self.num_groups, *lead, self.out_channels)

    def extra_repr(self) -> str:
        return (f'groups={self.num_groups}, channels={self.channels}, act={self.act_name}, '
                f'act_last={self.act_last}, dropout={self.dropout}')


class BehaviorMixture(nn.Module):
    r"""The weighted sum of the behavior embeddings used as the shared input of Shared Bottom,
    MMoE and PLE (PKEF / COPF table 5): :math:`\sum_k \mathrm{softmax}(\mathbf{a})_k
    \mathbf{e}^{k,*}`.

    Args:
        num_behaviors (int): :math:`K`.
        learnable (bool, optional): learn the logits :math:`\mathbf{a}` (initialised to zero,
            i.e. weights :math:`1/K`); ``False`` keeps the equal weights. (default: ``True``)

    Shapes:
        - **input:** ``[K, *, d]``.
        - **output:** ``[*, d]``.
    """

    def __init__(self, num_behaviors: int, learnable: bool = True):
        super().__init__()
        self.num_behaviors = int(num_behaviors)
        self.learnable = learnable
        logits = torch.zeros(num_behaviors)
        if learnable:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer('logits', logits)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.logits.zero_()

    @property
    def weights(self) -> Tensor:
        """:math:`\\mathrm{softmax}(\\mathbf{a})`, ``[K]``."""
        return torch.softmax(self.logits, dim=0)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weights.view(-1, *([1] * (x.dim() - 1)))
        return (w * x).sum(0)

    def extra_repr(self) -> str:
        return f'num_behaviors={self.num_behaviors}, learnable={self.learnable}'


def pair_features(u: Tensor, v: Tensor, pair: str = 'hadamard') -> Tensor:
    r"""The representation of (user, item) pairs: :math:`\mathbf{e}_u \circ \mathbf{e}_v`
    (``'hadamard'``) or :math:`[\mathbf{e}_u \,\|\, \mathbf{e}_v]` (``'concat'``), broadcasting
    ``u`` ``[*, 1, d]`` against ``v`` ``[*, C, d]``."""
    if pair == 'hadamard':
        return u * v
    if pair == 'concat':
        shape = torch.broadcast_shapes(u.shape, v.shape)
        return torch.cat([u.expand(shape), v.expand(shape)], dim=-1)
    raise ValueError(f'unknown pair representation {pair!r}; expected one of {list(PAIRS)}')


def pair_dim(embedding_dim: int, pair: str) -> int:
    if pair not in PAIRS:
        raise ValueError(f'unknown pair representation {pair!r}; expected one of {list(PAIRS)}')
    return embedding_dim * (2 if pair == 'concat' else 1)


def gather_stacked(emb: BehaviorEmbeddings, users: Tensor, items: Tensor) -> Tuple[Tensor, Tensor]:
    """Every behavior's embeddings of ``users`` ``[B]`` and ``items`` ``[B]`` / ``[B, C]``:
    ``([K, B, d], [K, B, d])`` or ``([K, B, 1, d], [K, B, C, d])`` (broadcastable)."""
    if items.dim() not in (1, 2) or items.size(0) != users.numel() or users.dim() != 1:
        raise ValueError(f'expected users [B] and items [B] or [B, C], got users '
                         f'{tuple(users.shape)} and items {tuple(items.shape)}')
    if emb.nodes is not None:   # one gather from the node table: one zero-filled gradient
        rows = torch.cat([users, items.reshape(-1) + emb.users.size(1)])
        g = emb.nodes[:, rows]
        u = g[:, :users.numel()]
        v = g[:, users.numel():].reshape(g.size(0), *items.shape, g.size(2))
    else:
        u = emb.users[:, users]
        v = emb.items[:, items]
    if items.dim() == 2:
        u = u.unsqueeze(2)
    return u, v


def check_embeddings(emb: BehaviorEmbeddings, num_behaviors: int, embedding_dim: int,
                     head: str) -> None:
    """Raise a ``ValueError`` naming ``head`` when ``emb`` does not have the shapes the head
    was built for."""
    k, d = emb.users.size(0), emb.users.size(-1)
    if k != num_behaviors or d != embedding_dim:
        raise ValueError(f'{head} was built for {num_behaviors} behaviors of dimension '
                         f'{embedding_dim}, but the encoder gave {k} behaviors {emb.behaviors} '
                         f'of dimension {d}')


def _channels(value: Union[int, Sequence[int]]) -> List[int]:
    return [int(value)] if isinstance(value, int) else [int(c) for c in value]


class MTLHead(MultiTaskHead):
    """Common base of the neural multi-task heads: the configuration checks, the behavior
    index and a smaller :attr:`chunk_size` (their per-pair MLPs hold ``[B, C, hidden]``)."""

    chunk_size: int = 1024

    def __init__(self, embedding_dim: int, num_behaviors: int):
        super().__init__()
        if embedding_dim < 1 or num_behaviors < 1:
            raise ValueError(f'{self.__class__.__name__} needs embedding_dim >= 1 and '
                             f'num_behaviors >= 1, got {embedding_dim} and {num_behaviors}')
        self.embedding_dim = int(embedding_dim)
        self.num_behaviors = int(num_behaviors)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, 'reset_parameters'):
                m.reset_parameters()

    def _layers(self, value: Union[int, Sequence[int]], what: str) -> List[int]:
        """Layer sizes from ``value``, at least one (the error names the head and ``what``)."""
        channels = _channels(value)
        if not channels:
            raise ValueError(f'{self.__class__.__name__} needs at least one {what} layer')
        return channels

    def _towers(self, in_channels: int, tower_channels: Union[int, Sequence[int]], act,
                dropout: float) -> 'StackedMLP':
        """One MLP tower :math:`h^k` per behavior, ``in_channels -> tower_channels -> 1``."""
        return StackedMLP(self.num_behaviors, [in_channels, *_channels(tower_channels), 1], act,
                          dropout=dropout)

    def _index(self, emb: BehaviorEmbeddings, behavior: str) -> int:
        check_embeddings(emb, self.num_behaviors, self.embedding_dim, self.__class__.__name__)
        return emb.index(behavior)


def mix_experts(gate: Tensor, experts: Tensor) -> Tensor:
    r""":math:`\sum_e g_e \mathbf{f}_e`: gate ``[*, E]`` (weights), experts ``[E, *, c]`` ->
    ``[*, c]``."""
    return (gate.movedim(-1, 0).unsqueeze(-1) * experts).sum(0)
