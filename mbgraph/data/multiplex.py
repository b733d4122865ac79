r"""The multiplex user-item graph: one :class:`~torch_geometric.data.HeteroData` schema for
every loader, model and evaluator in mbgraph.

Schema
------
* node types ``'user'`` and ``'item'`` with ``num_nodes`` set;
* one edge type ``('user', b, 'item')`` per behavior ``b`` whose ``edge_index`` (``[2, E_b]``,
  row 0 user ids, row 1 item ids) holds the *training* interactions of that behavior;
* ``data.behaviors``: the behavior names ordered upstream -> downstream, the last one is the
  target behavior (e.g. ``['pv', 'cart', 'buy']``);
* on the target behavior's edge store: ``val_edge_index`` and ``test_edge_index`` (``[2, N]``),
  the held-out interactions of the target behavior (either may be absent);
* on an auxiliary behavior's edge store, optionally ``held_edge_index``: its interactions
  with the validation pairs, kept out of training while validation is held out
  (:func:`holdout_validation` with ``unseen``) and returned by :func:`merge_validation`.

Example::

    >>> import torch
    >>> from mbgraph.data import make_multiplex, validate
    >>> data = make_multiplex(
    ...     num_users=3, num_items=4, behaviors=['cart', 'buy'],
    ...     edges={'cart': torch.tensor([[0, 1], [2, 3]]), 'buy': torch.tensor([[0], [2]])},
    ...     test=torch.tensor([[1], [1]]))
    >>> data.behaviors
    ['cart', 'buy']
    >>> validate(data)
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

log = logging.getLogger(__name__)

USER = 'user'
ITEM = 'item'
SPLITS = ('val', 'test')


class MultiplexValidationError(ValueError):
    """Raised by :func:`validate`; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: List[str]):
        self.problems = list(problems)
        super().__init__('invalid multi-behavior graph:\n  - ' + '\n  - '.join(self.problems))


def edge_type(behavior: str) -> tuple:
    """The PyG edge type of ``behavior``: ``('user', behavior, 'item')``."""
    return (USER, behavior, ITEM)


def behaviors_of(data: HeteroData) -> List[str]:
    """The behavior order of ``data`` (upstream -> downstream, last = target)."""
    behaviors = getattr(data, 'behaviors', None)
    if behaviors is None:
        raise ValueError("data has no 'behaviors' attribute: a multi-behavior graph must say its "
                         "behavior order (upstream -> downstream, last = target); build it with "
                         "mbgraph.data.make_multiplex")
    return list(behaviors)


def target_behavior(data: HeteroData) -> str:
    """The target behavior (the last one of ``data.behaviors``)."""
    return behaviors_of(data)[-1]


def num_users_items(data: HeteroData) -> tuple:
    return int(data[USER].num_nodes), int(data[ITEM].num_nodes)


def split_edge_index(data: HeteroData, split: str) -> Optional[Tensor]:
    """The held-out ``split`` ('val' or 'test') pairs of the target behavior, or None."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    store = data[edge_type(target_behavior(data))]
    return getattr(store, f'{split}_edge_index', None)


def _as_edge_index(value, what: str) -> Tensor:
    t = torch.as_tensor(value)
    if t.dim() != 2 or t.size(0) != 2:
        raise ValueError(f"{what} must have shape [2, num_edges] (row 0 users, row 1 items), "
                         f"got {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{what} must hold integer ids, got dtype {t.dtype}")
    return t.long().contiguous()


def make_multiplex(num_users: int, num_items: int, behaviors: Sequence[str],
                   edges: Mapping[str, Tensor], val: Optional[Tensor] = None,
                   test: Optional[Tensor] = None, name: Optional[str] = None) -> HeteroData:
    """Build a multiplex graph in mbgraph's schema (see the module docstring).

    Args:
        num_users, num_items: node counts.
        behaviors: behavior names ordered upstream -> downstream; the last is the target.
        edges: ``{behavior: edge_index [2, E]}`` training interactions, one entry per behavior.
        val, test: optional held-out ``[2, N]`` pairs of the target behavior.
        name: dataset name kept on the object (``data.name``).
    """
    behaviors = [str(b) for b in behaviors]
    if len(behaviors) == 0:
        raise ValueError('at least one behavior is required (the last one is the target)')
    if len(set(behaviors)) != len(behaviors):
        raise ValueError(f'behavior names must be unique, got {behaviors}')
    unknown = sorted(set(edges) - set(behaviors))
    if unknown:
        raise ValueError(f'edges given for unknown behaviors {unknown}; behaviors are {behaviors}')
    missing = [b for b in behaviors if b not in edges]
    if missing:
        raise ValueError(f'no edges given for behaviors {missing}; behaviors are {behaviors}')
    data = HeteroData()
    data[USER].num_nodes = int(num_users)
    data[ITEM].num_nodes = int(num_items)
    for b in behaviors:
        data[edge_type(b)].edge_index = _as_edge_index(edges[b], f"edges[{b!r}]")
    data.behaviors = behaviors
    target = data[edge_type(behaviors[-1])]
    if val is not None:
        target.val_edge_index = _as_edge_index(val, 'val')
    if test is not None:
        target.test_edge_index = _as_edge_index(test, 'test')
    if name is not None:
        data.name = name
    return data


def _keys(edge_index: Tensor, num_items: int) -> Tensor:
    return edge_index[0] * num_items + edge_index[1]


def _range_problems(edge_index: Tensor, num_users: int, num_items: int, where: str) -> List[str]:
    problems = []
    if edge_index.numel() == 0:
        return problems
    for row, (kind, n) in enumerate(((USER, num_users), (ITEM, num_items))):
        lo, hi = int(edge_index[row].min()), int(edge_index[row].max())
        if lo < 0:
            problems.append(f'{where} has {kind} index {lo} < 0')
        if hi >= n:
            problems.append(f'{where} has {kind} index {hi} >= num_{kind}s {n}')
    return problems


def count_duplicates(edge_index: Tensor, num_items: int) -> int:
    """Number of repeated (user, item) pairs in ``edge_index``."""
    if edge_index.numel() == 0:
        return 0
    return edge_index.size(1) - int(torch.unique(_keys(edge_index, num_items)).numel())


def validate(data: HeteroData) -> None:
    """Check ``data`` against mbgraph's schema and raise :class:`MultiplexValidationError`
    naming every problem: missing node counts, unknown or missing behaviors, ids out of range,
    duplicate (user, item) pairs within a behavior (fix with :func:`deduplicate`), an empty
    target behavior, held-out pairs that are also training pairs of the target behavior, or a
    pair both in validation and test.
    """
    problems: List[str] = []
    try:
        behaviors = behaviors_of(data)
    except ValueError as e:
        raise MultiplexValidationError([str(e)]) from None
    for nt in (USER, ITEM):
        if nt not in data.node_types or data[nt].num_nodes is None:
            problems.append(f"node type {nt!r} is missing or has no num_nodes")
    if problems:
        raise MultiplexValidationError(problems)
    num_users, num_items = num_users_items(data)
    if len(behaviors) == 0:
        problems.append('data.behaviors is empty')
    if len(set(behaviors)) != len(behaviors):
        problems.append(f'behavior names are not unique: {behaviors}')
    present = {et[1] for et in data.edge_types if et[0] == USER and et[2] == ITEM}
    for b in behaviors:
        if b not in present:
            problems.append(f"behavior {b!r} is listed in data.behaviors but edge type "
                            f"{edge_type(b)} is missing")
    for b in sorted(present - set(behaviors)):
        problems.append(f"edge type {edge_type(b)} is not one of data.behaviors {behaviors}")
    for b in behaviors:
        if b not in present:
            continue
        ei = data[edge_type(b)].get('edge_index')
        if ei is None:
            problems.append(f'edge type {edge_type(b)} has no edge_index')
            continue
        problems += _range_problems(ei, num_users, num_items, f'edge type {edge_type(b)}')
        dup = count_duplicates(ei, num_items) if not problems else 0
        if dup:
            problems.append(f'edge type {edge_type(b)} has {dup} duplicate (user, item) pairs; '
                            'remove them with mbgraph.data.deduplicate(data)')
    if problems:
        raise MultiplexValidationError(problems)

    target = behaviors[-1]
    train = data[edge_type(target)].edge_index
    if train.size(1) == 0:
        problems.append(f'target behavior {target!r} has no training interactions')
    train_keys = torch.unique(_keys(train, num_items))
    split_keys = {}
    for split in SPLITS:
        ei = split_edge_index(data, split)
        if ei is None:
            continue
        where = f'{split} split of {target!r}'
        rp = _range_problems(ei, num_users, num_items, where)
        if rp:
            problems += rp
            continue
        if ei.size(1) == 0:
            problems.append(f'{where} is empty')
        keys = _keys(ei, num_items)
        split_keys[split] = keys
        overlap = int(torch.isin(keys, train_keys).sum())
        if overlap:
            problems.append(f'{where} has {overlap} pairs that are also training pairs of '
                            f'{target!r} (held-out pairs must be unseen in training)')
    if len(split_keys) == 2:
        both = int(torch.isin(split_keys['val'], split_keys['test']).sum())
        if both:
            problems.append(f'{both} pairs of {target!r} are in both the val and test splits')
    if problems:
        raise MultiplexValidationError(problems)


def deduplicate(data: HeteroData) -> Dict[str, int]:
    """Remove repeated (user, item) pairs within each behavior's training edges, in place.

    Returns ``{behavior: number removed}`` and logs a warning for every behavior that had
    duplicates, so the cleaning is never silent. The first occurrence's order is kept sorted by
    (user, item).
    """
    _, num_items = num_users_items(data)
    removed = {}
    for b in behaviors_of(data):
        store = data[edge_type(b)]
        ei = store.edge_index
        keys = torch.unique(_keys(ei, num_items))
        n = ei.size(1) - keys.numel()
        removed[b] = n
        if n:
            store.edge_index = torch.stack([keys // num_items, keys % num_items])
            log.warning('behavior %r: removed %d duplicate (user, item) pairs (%d remain)',
                        b, n, keys.numel())
    return removed


def statistics(data: HeteroData) -> List[dict]:
    """Per-behavior statistics in the layout of the papers' table 1."""
    num_users, num_items = num_users_items(data)
    rows = []
    for b in behaviors_of(data):
        ei = data[edge_type(b)].edge_index
        n = ei.size(1)
        rows.append({
            'behavior': b,
            'interactions': n,
            'users': int(torch.unique(ei[0]).numel()) if n else 0,
            'items': int(torch.unique(ei[1]).numel()) if n else 0,
            'density': n / max(num_users * num_items, 1),
        })
    for split in SPLITS:
        ei = split_edge_index(data, split)
        if ei is not None:
            rows.append({'behavior': f'{target_behavior(data)} ({split})',
                         'interactions': ei.size(1),
                         'users': int(torch.unique(ei[0]).numel()) if ei.numel() else 0,
                         'items': int(torch.unique(ei[1]).numel()) if ei.numel() else 0,
                         'density': ei.size(1) / max(num_users * num_items, 1)})
    return rows


def holdout_validation(data: HeteroData, seed: int = 0, unseen: bool = False) -> int:
    """Move one seeded random training interaction of the target behavior per user (for users
    with at least two) into ``val_edge_index``, in place; returns the number moved.

    Used when a dataset ships a test split but no validation split (the MB-GMN pickle format);
    the loaders log that they did so. With ``unseen`` the held-out (user, item) pairs also
    leave every auxiliary behavior's training edges, so that, like a test split whose items
    the user never touched in training (SSLRec's RetailRocket), validation does not reward
    ranking the user's own viewed / carted items first
    (:func:`mbgraph.data.shortcuts.shortcut_shares` of the test split is 0 then).
    """
    target = data[edge_type(target_behavior(data))]
    if getattr(target, 'val_edge_index', None) is not None:
        raise ValueError('data already has a validation split')
    ei = target.edge_index
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(ei.size(1), generator=g)
    users = ei[0, perm]
    # first occurrence of each user in the random permutation = that user's held-out pair
    order = torch.argsort(users, stable=True)
    sorted_users = users[order]
    first = torch.ones_like(sorted_users, dtype=torch.bool)
    first[1:] = sorted_users[1:] != sorted_users[:-1]
    counts = torch.bincount(users, minlength=int(data[USER].num_nodes))
    chosen = order[first]
    chosen = chosen[counts[users[chosen]] >= 2]
    held = perm[chosen]
    keep = torch.ones(ei.size(1), dtype=torch.bool)
    keep[held] = False
    target.val_edge_index = ei[:, held]
    target.edge_index = ei[:, keep]
    if unseen:
        num_items = int(data[ITEM].num_nodes)
        held_keys = torch.unique(target.val_edge_index[0].long() * num_items
                                 + target.val_edge_index[1].long())
        for b in behaviors_of(data)[:-1]:
            store = data[edge_type(b)]
            keys = store.edge_index[0].long() * num_items + store.edge_index[1].long()
            out = torch.isin(keys, held_keys)
            store.held_edge_index = store.edge_index[:, out]     # merge_validation returns it
            store.edge_index = store.edge_index[:, ~out]
    return int(held.numel())


def merge_validation(data: HeteroData) -> int:
    """Move the validation pairs of the target behavior back into its training pairs, in
    place (the papers' protocol: every training interaction trains, no validation split), and
    the auxiliary interactions an ``unseen`` holdout kept out with them back into theirs;
    returns the number of validation pairs moved (0 when there is no validation split)."""
    target = data[edge_type(target_behavior(data))]
    val = getattr(target, 'val_edge_index', None)
    if val is None:
        return 0
    target.edge_index = torch.cat([target.edge_index, val], dim=1)
    del target.val_edge_index
    for b in behaviors_of(data)[:-1]:      # what an ``unseen`` holdout took out of them
        store = data[edge_type(b)]
        held = getattr(store, 'held_edge_index', None)
        if held is not None:
            store.edge_index = torch.cat([store.edge_index, held], dim=1)
            del store.held_edge_index
    return int(val.size(1))


def select_behaviors(data: HeteroData, behaviors: Sequence[str]) -> HeteroData:
    """A copy of ``data`` restricted to ``behaviors`` (in that order, e.g. ``['cart', 'buy']``
    of a pv -> cart -> buy graph). The target behavior, which carries the held-out splits, must
    stay last. Unknown behavior names raise ``ValueError`` listing the known ones."""
    known = behaviors_of(data)
    behaviors = [str(b) for b in behaviors]
    unknown = [b for b in behaviors if b not in known]
    if unknown:
        raise ValueError(f'unknown behaviors {unknown}; this dataset has {known}')
    if not behaviors or behaviors[-1] != known[-1]:
        raise ValueError(f'the target behavior {known[-1]!r} (which holds the held-out splits) '
                         f'must be the last of the selected behaviors, got {behaviors}')
    if len(set(behaviors)) != len(behaviors):
        raise ValueError(f'behaviors listed twice in {behaviors}')
    target = data[edge_type(known[-1])]
    out = make_multiplex(data[USER].num_nodes, data[ITEM].num_nodes, behaviors,
                         {b: data[edge_type(b)].edge_index for b in behaviors},
                         val=getattr(target, 'val_edge_index', None),
                         test=getattr(target, 'test_edge_index', None),
                         name=getattr(data, 'name', None))
    for b in behaviors[:-1]:
        held = getattr(data[edge_type(b)], 'held_edge_index', None)
        if held is not None:
            out[edge_type(b)].held_edge_index = held
    return out
