r"""How much of a held-out split the user's own training history already gives away.

The full-ranking protocol masks only the user's training items of the *target* behavior, so a
test buy of an item the user viewed or carted in training stays among the candidates, and a
ranking that puts the user's own viewed and carted items first (the ``history`` baseline)
gets those right without learning anything. :func:`shortcut_shares` measures it: for each
auxiliary behavior, the share of held-out (user, item) pairs that are training pairs of that
behavior. On the papers' Taobao files 81.9% of the test buys were viewed and 21.9% carted by the
same user in training; SSLRec's RetailRocket files have none.

Example::

    >>> from mbgraph.data.datasets import synthetic
    >>> shares = shortcut_shares(synthetic(num_users=200, num_items=100))
    >>> sorted(shares['share'])
    ['cart', 'view']
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .multiplex import behaviors_of, edge_type, num_users_items, split_edge_index


def met_in_training(data: HeteroData, pairs: Tensor,
                    behaviors: Optional[Sequence[str]] = None) -> dict[str, Tensor]:
    """For each of ``behaviors`` (default: every behavior, the target included), a boolean
    ``[N]`` tensor: which of the ``[2, N]`` (user, item) ``pairs`` are training pairs of it."""
    _, num_items = num_users_items(data)
    keys = pairs[0].long() * num_items + pairs[1].long()
    out = {}
    for b in behaviors_of(data) if behaviors is None else behaviors:
        ei = data[edge_type(b)].edge_index
        out[b] = torch.isin(keys, ei[0].long() * num_items + ei[1].long())
    return out


def shortcut_shares(data: HeteroData, split: str = 'test') -> dict[str, Any]:
    """Share of the ``split`` pairs of the target that the user had under each auxiliary
    behavior in training.

    Returns ``{'split': split, 'pairs': N, 'share': {behavior: fraction}, 'any': fraction}``
    with one entry per auxiliary behavior (upstream of the target, in order) and ``'any'`` the
    share in at least one of them; fractions are None when the split is empty or absent.
    """
    behaviors = behaviors_of(data)
    pairs = split_edge_index(data, split)
    n = 0 if pairs is None else int(pairs.size(1))
    out: dict[str, Any] = {'split': split, 'pairs': n, 'share': {}, 'any': None}
    if n == 0:
        out['share'] = {b: None for b in behaviors[:-1]}
        return out
    hit_any = torch.zeros(n, dtype=torch.bool)
    for b, hit in met_in_training(data, pairs, behaviors[:-1]).items():
        out['share'][b] = int(hit.sum()) / n
        hit_any |= hit
    out['any'] = int(hit_any.sum()) / n
    return out


def format_shortcuts(shares: dict[str, Any]) -> str:
    """One line: ``test: 2,174 pairs; in training view 0.0%, cart 0.0%; any 0.0%``."""
    if not shares['pairs']:
        return f"{shares['split']}: no held-out pairs"
    parts = ', '.join(f'{b} {100 * v:.1f}%' for b, v in shares['share'].items())
    return (f"{shares['split']}: {shares['pairs']:,} pairs; already in the user's training "
            f"{parts or '(no auxiliary behavior)'}; any {100 * shares['any']:.1f}%")


__all__ = ['format_shortcuts', 'met_in_training', 'shortcut_shares']
