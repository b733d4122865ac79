r"""What an encoder hands to a head: per-behavior user and item embeddings.

An encoder maps the initial embeddings ``ego [U + I, d]`` (users first) and the cached
operators of a :class:`~mbgraph.data.adjacency.BehaviorAdjacency` to a
:class:`BehaviorEmbeddings`: for every behavior :math:`k` the final user and item
representations (:math:`\mathbf{e}_u^{k,*}, \mathbf{e}_v^{k,*}`), stacked along a leading
behavior axis in the data's behavior order. An encoder never samples and never scores.

This module also holds the plumbing shared by the per-behavior encoders
(:class:`PerBehaviorEncoder`: layer counts per behavior, input checks, stacking;
:func:`check_choice`, :func:`resolve_layers`); their propagation is
:func:`mbgraph.nn.functional.propagate`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from ...data.adjacency import BehaviorAdjacency
from ...data.multiplex import make_multiplex

#: a layer specification: one count for every behavior, or one per behavior
LayerSpec = Union[int, Sequence[int]]


@dataclass
class BehaviorEmbeddings:
    """Per-behavior embeddings.

    Attributes:
        behaviors: behavior names, upstream -> downstream (last = target).
        users: ``[K, U, d]`` user embeddings per behavior.
        items: ``[K, I, d]`` item embeddings per behavior.
        extras: anything else an encoder or head computed over the whole graph that a head or
            loss term needs (e.g. PKF's parallel stream under ``'parallel'``, DFME's fitting
            experts), keyed by name.
        nodes: optionally the ``[K, U + I, d]`` tensor of which ``users`` and ``items`` are
            the two views (users first), when the encoder computed one: a head that needs
            users and items in one table reads it instead of concatenating them again, and
            its gradient then reaches the encoder without two zero-filled slice gradients.
    """
    behaviors: List[str]
    users: Tensor
    items: Tensor
    extras: Dict[str, Any] = field(default_factory=dict)
    nodes: Optional[Tensor] = None

    def __post_init__(self):
        k = len(self.behaviors)
        if self.users.dim() != 3 or self.items.dim() != 3:
            raise ValueError('BehaviorEmbeddings expects users [K, U, d] and items [K, I, d], got '
                             f'{tuple(self.users.shape)} and {tuple(self.items.shape)}')
        if self.users.size(0) != k or self.items.size(0) != k:
            raise ValueError(f'{k} behaviors {self.behaviors} but embeddings for '
                             f'{self.users.size(0)} (users) and {self.items.size(0)} (items)')
        if self.nodes is not None and tuple(self.nodes.shape) != (
                k, self.users.size(1) + self.items.size(1), self.users.size(2)):
            raise ValueError(f'BehaviorEmbeddings nodes must be [K, U + I, d] = '
                             f'{[k, self.users.size(1) + self.items.size(1), self.users.size(2)]}'
                             f', got {list(self.nodes.shape)}')

    def node_table(self) -> Tensor:
        """``[K, U + I, d]``, users first: :attr:`nodes` when the encoder kept it, otherwise
        ``users`` and ``items`` concatenated."""
        if self.nodes is not None:
            return self.nodes
        return torch.cat([self.users, self.items], dim=1)

    def replace(self, **changes) -> 'BehaviorEmbeddings':
        """A copy with the fields in ``changes`` replaced (``nodes`` is dropped when
        ``users`` or ``items`` change, unless given)."""
        fields = {'behaviors': self.behaviors, 'users': self.users, 'items': self.items,
                  'extras': self.extras, 'nodes': self.nodes}
        if ('users' in changes or 'items' in changes) and 'nodes' not in changes:
            fields['nodes'] = None
        fields.update(changes)
        return BehaviorEmbeddings(**fields)

    def index(self, behavior: str) -> int:
        try:
            return self.behaviors.index(behavior)
        except ValueError:
            raise ValueError(f'unknown behavior {behavior!r}; behaviors are '
                             f'{self.behaviors}') from None

    def user(self, behavior: str) -> Tensor:
        return self.users[self.index(behavior)]

    def item(self, behavior: str) -> Tensor:
        return self.items[self.index(behavior)]

    @property
    def target(self) -> str:
        return self.behaviors[-1]


def reset_children(module: nn.Module) -> None:
    """Call ``reset_parameters()`` on every direct child of ``module`` that has one."""
    for m in module.children():
        if hasattr(m, 'reset_parameters'):
            m.reset_parameters()


def _user_item_edges(graph: Mapping) -> Dict[str, Tensor]:
    """``{behavior: edge_index}`` of an edge_index dict keyed by behavior names or by PyG's
    ``('user', behavior, 'item')`` edge types (others, e.g. reverse edges, skipped)."""
    edges: Dict[str, Tensor] = {}
    for key, ei in graph.items():
        if isinstance(key, tuple):
            if len(key) != 3:
                raise ValueError(f'edge type {key!r}: expected (src, relation, dst)')
            if key[0] != 'user' or key[2] != 'item':
                continue                          # e.g. ('item', 'rev_buy', 'user')
            key = key[1]
        edges[str(key)] = ei
    if not edges:
        raise ValueError('the edge_index dict holds no user -> item edge type')
    return edges


def graph_operators(owner: nn.Module, graph, num_users: Optional[int],
                    num_items: Optional[int], device: torch.device, dtype: torch.dtype):
    """A :class:`~mbgraph.data.adjacency.BehaviorAdjacency` for ``graph`` (see
    :meth:`MultiBehaviorEncoder.inputs`): returned as is if it is one (or anything that is not
    a ``HeteroData`` or an edge_index dict), else built from the ``HeteroData`` or from the
    per-behavior ``edge_index`` dict (which needs the node counts) and kept on ``owner`` (one
    graph per module) while the same edge tensors come back."""
    name = type(owner).__name__
    if isinstance(graph, HeteroData):
        behaviors = getattr(graph, 'behaviors', None)
        if behaviors is None:
            behaviors = [rel for src, rel, dst in graph.edge_types
                         if src == 'user' and dst == 'item']
        edges = {b: graph['user', b, 'item'].edge_index for b in behaviors}
        sizes = (int(graph['user'].num_nodes), int(graph['item'].num_nodes))
        if num_users is not None and sizes != (num_users, num_items):
            raise ValueError(f'{name}: the inputs have {num_users} users and {num_items} '
                             f'items, the graph {sizes[0]} and {sizes[1]}')
        num_users, num_items = sizes
    elif isinstance(graph, Mapping):
        if num_users is None:
            raise ValueError(f'{name}: with an edge_index dict pass x as '
                             "{'user': X_u, 'item': X_i} (it gives the node counts)")
        edges = _user_item_edges(graph)
    else:
        return graph                      # a BehaviorAdjacency (or anything shaped like it)
    key = (torch.device(device), dtype, num_users, num_items,
           tuple((b, e.data_ptr(), tuple(e.shape)) for b, e in edges.items()))
    cached = getattr(owner, '_graph_cache', None)
    if cached is not None and cached[0] == key:
        return cached[1]
    data = make_multiplex(num_users, num_items, list(edges), edges)
    adjacency = BehaviorAdjacency(data, device=device, dtype=dtype)
    owner._graph_cache = (key, adjacency)
    return adjacency


class MultiBehaviorEncoder(nn.Module):
    """Base class: ``forward(ego, adjacency) -> BehaviorEmbeddings``; ``loss_terms`` adds
    encoder-specific losses (default none).

    Every encoder takes its graph as PyG layers do (:meth:`inputs`): ``encoder(ego, adj)``
    with a :class:`~mbgraph.data.adjacency.BehaviorAdjacency` (its cached operators; what the
    models pass), ``encoder(ego, data)`` with a :class:`~torch_geometric.data.HeteroData`, or
    ``encoder(x_dict, edge_index_dict)`` with ``{'user': X_u, 'item': X_i}`` and one
    ``edge_index`` per ``('user', behavior, 'item')`` edge type.
    """

    def forward(self, ego: Tensor, adjacency) -> BehaviorEmbeddings:  # pragma: no cover
        raise NotImplementedError

    def inputs(self, x: Union[Tensor, Mapping[str, Tensor]], graph
               ) -> Tuple[Tensor, Any]:
        """``(ego [U + I, d], BehaviorAdjacency)`` from PyG-style inputs.

        ``x``: ``ego`` (users first) or ``{'user': [U, d], 'item': [I, d]}``. ``graph``: a
        ``BehaviorAdjacency`` (returned as is), a ``HeteroData`` (its ``behaviors`` order,
        else its ``('user', b, 'item')`` edge types in the order they were added, the last
        one the target), or an ``edge_index`` dict in behavior order (keys: behavior names or
        edge types; then ``x`` must be the dict, which gives the node counts). A graph built
        here is kept (one per encoder) while the same edge tensors come back, so a training
        loop pays for the normalisation once.
        """
        num_users = num_items = None
        if isinstance(x, Mapping):
            missing = [t for t in ('user', 'item') if t not in x]
            if missing:
                raise ValueError(f'{type(self).__name__}: x_dict needs the node types '
                                 f"'user' and 'item' (missing {missing})")
            num_users, num_items = int(x['user'].size(0)), int(x['item'].size(0))
            x = torch.cat([x['user'], x['item']], dim=0)
        return x, graph_operators(self, graph, num_users, num_items, x.device, x.dtype)

    def loss_terms(self, emb: BehaviorEmbeddings, batch: Dict[str, Any]) -> Dict[str, Tensor]:
        return {}

    def regularized_parameters(self) -> List[Tensor]:
        """The encoder's parameters that the model's L2 term covers besides the embeddings
        (e.g. MB-CGCN's transforms in its authors' code); none by default."""
        return []

    def reset_parameters(self) -> None:
        reset_children(self)


def check_choice(name: str, value: str, options: Sequence[str]) -> str:
    """``value`` if it is one of ``options``, else a ``ValueError`` naming both."""
    if value not in options:
        raise ValueError(f'unknown {name} {value!r}; expected one of {list(options)}')
    return value


def resolve_layers(num_layers: LayerSpec,
                   num_behaviors: Optional[int] = None) -> Tuple[Optional[Tuple[int, ...]],
                                                                 Optional[int]]:
    """Normalise a layer specification.

    Returns ``(layers, num_behaviors)``: ``layers`` is the per-behavior tuple, or ``None`` when
    a single ``int`` was given and the number of behaviors is not known yet (it is broadcast
    at the first forward call).
    """
    if isinstance(num_layers, bool):
        raise TypeError(f'num_layers must be an int or a sequence of ints, got {num_layers!r}')
    if isinstance(num_layers, int):
        if num_layers < 0:
            raise ValueError(f'num_layers must be >= 0, got {num_layers}')
        if num_behaviors is None:
            return None, None
        layers = (num_layers,) * int(num_behaviors)
    else:
        layers = tuple(num_layers)
        if not layers or not all(isinstance(n, int) and not isinstance(n, bool)
                                 for n in layers):
            raise TypeError(f'num_layers must be an int or a non-empty sequence of ints, got '
                            f'{num_layers!r}')
        bad = [n for n in layers if n < 0]
        if bad:
            raise ValueError(f'layer counts must be >= 0, got {list(layers)}')
        if num_behaviors is not None and len(layers) != num_behaviors:
            raise ValueError(f'{len(layers)} layer counts {list(layers)} given for '
                             f'num_behaviors={num_behaviors}')
    if num_behaviors is not None and num_behaviors < 1:
        raise ValueError(f'num_behaviors must be >= 1, got {num_behaviors}')
    return layers, len(layers)


class PerBehaviorEncoder(MultiBehaviorEncoder):
    """Shared plumbing of the per-behavior graph encoders (not used on its own).

    Holds the per-behavior layer counts :math:`L_k` (``num_layers``: one ``int`` for every
    behavior, or one per behavior in the data's order), checks the input against the
    adjacency, and stacks per-behavior node embeddings into a
    :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings`.
    """

    def __init__(self, num_layers: LayerSpec, num_behaviors: Optional[int] = None):
        super().__init__()
        self._num_layers_arg = num_layers
        self.layers, self.num_behaviors = resolve_layers(num_layers, num_behaviors)

    def layers_for(self, behaviors: Sequence[str]) -> Tuple[int, ...]:
        """:math:`(L_1, \\dots, L_K)` for the adjacency's behaviors."""
        if self.layers is None:
            return (int(self._num_layers_arg),) * len(behaviors)
        if len(self.layers) != len(behaviors):
            raise ValueError(f'{type(self).__name__} was built for {len(self.layers)} behaviors '
                             f'(layer counts {list(self.layers)}) but the graph has '
                             f'{len(behaviors)}: {list(behaviors)}')
        return self.layers

    def check_input(self, ego: Tensor, adjacency) -> List[str]:
        """The adjacency's behaviors, after checking ``ego`` is ``[U + I, d]``."""
        if ego.dim() != 2 or ego.size(0) != adjacency.num_nodes:
            raise ValueError(f'{type(self).__name__} expects ego embeddings of shape '
                             f'[num_users + num_items = {adjacency.num_nodes}, d], got '
                             f'{tuple(ego.shape)}')
        return list(adjacency.behaviors)

    @staticmethod
    def stack(behaviors: Sequence[str], nodes: Sequence[Tensor], num_users: int,
              extras: Optional[Dict] = None) -> BehaviorEmbeddings:
        """``K`` node tensors ``[U + I, d]`` -> ``BehaviorEmbeddings`` ``[K, U, d]`` /
        ``[K, I, d]``."""
        x = torch.stack(list(nodes))
        return BehaviorEmbeddings(list(behaviors), x[:, :num_users], x[:, num_users:],
                                  dict(extras or {}), nodes=x)

    def _layers_repr(self) -> str:
        return repr(list(self.layers)) if self.layers is not None else repr(self._num_layers_arg)
