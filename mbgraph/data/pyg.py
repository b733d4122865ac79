r"""PyG's own datasets converted to the multiplex schema.

:func:`from_pyg_taobao` takes the graph of :class:`torch_geometric.datasets.Taobao` (the raw
Taobao UserBehavior log): node types ``'user'``, ``'item'`` and ``'category'``, ONE edge type
``('user', 'to', 'item')`` holding every interaction, with per-edge ``behavior`` codes
(PyG's ``{'pv': 0, 'cart': 1, 'buy': 2, 'fav': 3}``) and ``time`` (Unix seconds), plus
``('item', 'to', 'category')``. It becomes one edge type per behavior, in the cascade order
pv -> fav -> cart -> buy (target buy), split by leave-one-out on the last buys in time.

Example::

    >>> from torch_geometric.datasets import Taobao                       # doctest: +SKIP
    >>> data = from_pyg_taobao(Taobao(root='data/Taobao')[0])             # doctest: +SKIP
    >>> data.behaviors                                                     # doctest: +SKIP
    ['pv', 'fav', 'cart', 'buy']
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch_geometric.data import HeteroData

from .datasets import InteractionLog, graph_from_log

#: ``torch_geometric.datasets.Taobao``'s behavior codes (its ``behavior_dict``)
PYG_TAOBAO_CODES = {'pv': 0, 'cart': 1, 'buy': 2, 'fav': 3}
#: the cascade order of those behaviors, target last
PYG_TAOBAO_ORDER = ['pv', 'fav', 'cart', 'buy']


def _user_item_edge_type(data: HeteroData) -> tuple:
    found = [et for et in data.edge_types if et[0] == 'user' and et[2] == 'item']
    if len(found) != 1:
        raise ValueError(f'expected exactly one (user, *, item) edge type holding every '
                         f'interaction with a behavior attribute (PyG Taobao: (user, to, '
                         f'item)), found {found or "none"} among {data.edge_types}')
    return found[0]


def from_pyg_taobao(data: HeteroData, behaviors: Sequence[str] | None = None, *,
                    codes: dict[str, int] | None = None, seed: int = 0,
                    name: str = 'pyg-taobao') -> HeteroData:
    """Convert PyG's Taobao graph (module docstring) to a validated multiplex graph.

    Args:
        data: the ``HeteroData`` of ``torch_geometric.datasets.Taobao`` (``dataset[0]``), or
            any graph of that shape.
        behaviors: the behaviors to keep, upstream -> downstream, target last (default
            ``['pv', 'fav', 'cart', 'buy']``); edges of other behaviors are left out.
        codes: behavior name -> code in ``behavior`` (default PyG's).
        seed: seed of the split when the edges carry no ``time``.
        name: ``data.name`` of the result.

    Node ids stay as they are (users ``0..U-1``, items ``0..I-1``); repeated (user, item)
    pairs of a behavior count once; for users with at least 3 distinct target items the
    last one in time is the test pair and the one before it the validation pair.
    """
    codes = dict(PYG_TAOBAO_CODES if codes is None else codes)
    order = list(PYG_TAOBAO_ORDER if behaviors is None else (str(b) for b in behaviors))
    unknown = [b for b in order if b not in codes]
    if unknown:
        raise ValueError(f'unknown behaviors {unknown}; the codes are {codes}')
    if not order or len(set(order)) != len(order):
        raise ValueError(f'behaviors must be distinct names, target last; got {order}')
    for nt in ('user', 'item'):
        if nt not in data.node_types or data[nt].num_nodes is None:
            raise ValueError(f'node type {nt!r} is missing or has no num_nodes')
    et = _user_item_edge_type(data)
    store = data[et]
    ei = store.get('edge_index')
    if ei is None or ei.dim() != 2 or ei.size(0) != 2:
        raise ValueError(f'edge type {et} needs an edge_index of shape [2, E], got '
                         f'{None if ei is None else tuple(ei.shape)}')
    num_edges = ei.size(1)
    behavior = store.get('behavior')
    if behavior is None:
        raise ValueError(f'edge type {et} has no behavior attribute (one code per edge: '
                         f'{codes})')
    behavior = torch.as_tensor(behavior).view(-1)
    if behavior.numel() != num_edges:
        raise ValueError(f'edge type {et}: behavior has {behavior.numel()} entries for '
                         f'{num_edges} edges')
    stray = ~torch.isin(behavior, torch.tensor(list(codes.values())))
    if stray.any():
        raise ValueError(f'edge type {et}: behavior codes {sorted(set(behavior[stray].tolist()))}'
                         f' are not among {codes}')
    time = store.get('time')
    if time is not None:
        time = torch.as_tensor(time).view(-1)
        if time.numel() != num_edges:
            raise ValueError(f'edge type {et}: time has {time.numel()} entries for '
                             f'{num_edges} edges')
    num_users, num_items = int(data['user'].num_nodes), int(data['item'].num_nodes)
    for row, (kind, n) in enumerate((('user', num_users), ('item', num_items))):
        if num_edges and (int(ei[row].min()) < 0 or int(ei[row].max()) >= n):
            raise ValueError(f'edge type {et} has {kind} ids outside 0..{n - 1}')
    # behavior codes -> positions in the order; edges of other behaviors dropped
    position = torch.full((max(codes.values()) + 1,), -1, dtype=torch.long)
    for k, b in enumerate(order):
        position[codes[b]] = k
    pos = position[behavior.long()]
    keep = pos >= 0
    if not bool((pos == len(order) - 1).any()):
        raise ValueError(f'edge type {et} has no {order[-1]!r} edges (the target)')
    log_ = InteractionLog(user=ei[0, keep].numpy().astype(np.int64),
                          item=ei[1, keep].numpy().astype(np.int64),
                          behavior=pos[keep].numpy(),
                          timestamp=(time[keep].double().numpy() if time is not None else None),
                          behaviors=order,
                          user_raw_id=list(range(num_users)), item_raw_id=list(range(num_items)))
    out = graph_from_log(log_, seed=seed, name=name, source=f'PyG Taobao {et}')
    # ids are PyG's own: no raw-id lists to keep
    del out['user'].raw_id, out['item'].raw_id
    return out


__all__ = ['PYG_TAOBAO_CODES', 'PYG_TAOBAO_ORDER', 'from_pyg_taobao']
