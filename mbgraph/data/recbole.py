r"""RecBole's atomic interaction files (``<dataset>.inter``) as a multiplex graph.

An atomic file is tab-separated; its first line names each column as ``name:type`` (types
``token``, ``token_seq``, ``float``, ``float_seq``), e.g.::

    user_id:token	item_id:token	behavior:token	timestamp:float
    u1	i7	pv	1511544070

The behavior of a row comes from a behavior column (``behavior``, ``behavior_type``,
``behaviour`` or ``action_type``, or the one named), or, without one, from a ``rating``
column read as the MovieLens reading of this project: ``dislike`` (rating <= 2), ``neutral``
(2 < rating < 4), ``like`` (rating >= 4, the target); ``rating_cuts`` moves the two bounds.
The split is :func:`~mbgraph.data.datasets.graph_from_log`'s leave-one-out on the target, by
``timestamp`` when the file has one.

Example::

    >>> from mbgraph.data.datasets import load_dataset
    >>> data = load_dataset('recbole', root='ml-100k/ml-100k.inter')     # doctest: +SKIP
    >>> data.behaviors                                                    # doctest: +SKIP
    ['dislike', 'neutral', 'like']
"""
from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch_geometric.data import HeteroData

from .datasets import InteractionLog, PathLike, finite_number, graph_from_log
from .datasets._base import _infer_order, _sorted_ids

log = logging.getLogger(__name__)

BEHAVIOR_FIELDS = ('behavior', 'behavior_type', 'behaviour', 'action_type')
RATING_BEHAVIORS = ('dislike', 'neutral', 'like')
FIELD_TYPES = ('token', 'token_seq', 'float', 'float_seq')


def inter_file(path: PathLike) -> Path:
    """``path`` itself when it is a file, else the one ``*.inter`` file of the folder."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob('*.inter'))
        if len(found) == 1:
            return found[0]
        raise FileNotFoundError(f'{path}: expected one RecBole .inter file, found '
                                f'{[p.name for p in found] or "none"}; pass the file')
    raise FileNotFoundError(f'{path}: no such file or folder; expected a RecBole atomic '
                            '.inter file')


def _header(path: Path, first: list[str]) -> dict[str, int]:
    """``{name: column}`` of an atomic file's ``name:type`` header."""
    columns = {}
    for k, field in enumerate(first):
        name, sep, kind = field.partition(':')
        if not sep or not name or kind not in FIELD_TYPES:
            raise ValueError(f'{path}, line 1: header field {field!r} is not name:type with a '
                             f'type of {", ".join(FIELD_TYPES)} (RecBole atomic files are '
                             'tab-separated with a typed header)')
        if name in columns:
            raise ValueError(f'{path}, line 1: column {name!r} appears twice')
        columns[name] = k
    return columns


def read_recbole_log(path: PathLike, behaviors: Sequence[str] | None = None, *,
                     user_field: str = 'user_id', item_field: str = 'item_id',
                     behavior_field: str | None = None, rating_field: str = 'rating',
                     time_field: str = 'timestamp',
                     rating_cuts: tuple[float, float] = (2.0, 4.0),
                     encoding: str = 'utf-8') -> InteractionLog:
    """Read an atomic ``.inter`` file into the :class:`~mbgraph.data.datasets.InteractionLog`
    that :func:`~mbgraph.data.datasets.read_interaction_log` returns too.

    Args:
        path: the file, or a folder holding exactly one ``*.inter`` file.
        behaviors: behavior order upstream -> downstream (last = target); rows of other
            behaviors are left out (logged). Default: the file's behaviors when their order is
            a known one (or the rating reading's order).
        user_field, item_field, time_field: column names (without ``:type``); the time
            column is optional.
        behavior_field: the behavior column; default the first of :data:`BEHAVIOR_FIELDS`
            present, else the rating column is read.
        rating_field: the rating column used without a behavior column.
        rating_cuts: ``(low, high)``: dislike <= low < neutral < high <= like.
    """
    path = inter_file(path)
    with open(path, newline='', encoding=encoding) as f:
        rows = [(n, row) for n, row in enumerate(csv.reader(f, delimiter='\t'), start=1)
                if row and any(c.strip() for c in row)]
    if not rows:
        raise ValueError(f'{path}: the file is empty; expected a name:type header line')
    columns = _header(path, [c.strip() for c in rows[0][1]])
    for what, name in (('user', user_field), ('item', item_field)):
        if name not in columns:
            raise ValueError(f'{path}: no {what} column {name!r} in the header '
                             f'{list(columns)}')
    if behavior_field is None:
        behavior_field = next((c for c in BEHAVIOR_FIELDS if c in columns), None)
    elif behavior_field not in columns:
        raise ValueError(f'{path}: no behavior column {behavior_field!r} in the header '
                         f'{list(columns)}')
    if behavior_field is None and rating_field not in columns:
        raise ValueError(f'{path}: no behavior column ({", ".join(BEHAVIOR_FIELDS)}) and no '
                         f'rating column {rating_field!r} in the header {list(columns)}')
    low, high = (float(c) for c in rating_cuts)
    if not low < high:
        raise ValueError(f'rating_cuts must be (low, high) with low < high, got {rating_cuts}')
    iu, ii = columns[user_field], columns[item_field]
    ib = columns[behavior_field] if behavior_field is not None else columns[rating_field]
    it = columns.get(time_field)
    width = len(columns)
    users, items, acts, times = [], [], [], []
    for line, row in rows[1:]:
        if len(row) != width:
            raise ValueError(f'{path}, line {line}: {len(row)} fields, the header has {width} '
                             '(fields are tab-separated)')
        row = [c.strip() for c in row]
        for what, k in (('user', iu), ('item', ii), ('behavior' if behavior_field else
                                                     'rating', ib)):
            if row[k] == '':
                raise ValueError(f'{path}, line {line}: empty {what} field')
        if behavior_field is not None:
            acts.append(row[ib])
        else:
            r = finite_number(row[ib], path, line, 'rating')
            acts.append('dislike' if r <= low else 'like' if r >= high else 'neutral')
        if it is not None:
            times.append(finite_number(row[it], path, line, 'timestamp'))
        users.append(row[iu])
        items.append(row[ii])
    if not users:
        raise ValueError(f'{path}: the file has a header but no interactions')

    found = sorted(set(acts))
    if behaviors is not None:
        order = [str(b) for b in behaviors]
        if not order or len(set(order)) != len(order):
            raise ValueError(f'behaviors must be distinct names, target last; got {order}')
        absent = [b for b in order if b not in found]
        if absent:
            raise ValueError(f'{path}: behaviors {absent} have no rows; the file has {found}')
    elif behavior_field is None:
        order = [b for b in RATING_BEHAVIORS if b in found]
        if order[-1:] != ['like']:
            raise ValueError(f'{path}: no rating >= {high} (the target behavior like)')
    else:
        order = found if len(found) == 1 else _infer_order(found)
        if order is None:
            raise ValueError(f'{path}: the file has behaviors {found}; pass behaviors=[...] '
                             'in order upstream -> downstream with the target last')
    wanted = set(order)
    keep = np.fromiter((a in wanted for a in acts), dtype=bool, count=len(acts))
    if not keep.all():
        log.info('%s: left out %d rows of behaviors %s (not in %s)', path,
                 int((~keep).sum()), sorted(set(found) - set(order)), order)
    idx = np.flatnonzero(keep)
    users = [users[k] for k in idx]
    items = [items[k] for k in idx]
    code = {b: k for k, b in enumerate(order)}
    user_raw, user_map = _sorted_ids(users)
    item_raw, item_map = _sorted_ids(items)
    return InteractionLog(
        user=np.fromiter((user_map[x] for x in users), dtype=np.int64, count=len(users)),
        item=np.fromiter((item_map[x] for x in items), dtype=np.int64, count=len(items)),
        behavior=np.fromiter((code[acts[k]] for k in idx), dtype=np.int64, count=idx.size),
        timestamp=np.asarray(times, dtype=np.float64)[idx] if it is not None else None,
        behaviors=order, user_raw_id=user_raw, item_raw_id=item_raw,
    )


def load_recbole(path: PathLike, behaviors: Sequence[str] | None = None, *, seed: int = 0,
                 name: str | None = None, **kwargs) -> HeteroData:
    """A RecBole atomic ``.inter`` file as a validated multiplex graph.

    Args:
        path, behaviors, kwargs: as :func:`read_recbole_log`.
        seed: seed of the split when the file has no timestamp column.
        name: dataset name (default: the file's stem).

    Raw ids are kept as ``data['user'].raw_id`` / ``data['item'].raw_id``; the split is
    leave-one-out on the target for users with at least 3 distinct target items.
    """
    file = inter_file(path)
    log_ = read_recbole_log(file, behaviors, **kwargs)
    return graph_from_log(log_, seed=seed, name=name or file.stem, source=str(file))


def recbole_entry(root: PathLike | None = None, *, behaviors=None, seed: int = 0,
                  **kwargs) -> HeteroData:
    """``load_dataset('recbole', root=FILE)`` (or ``path=FILE``, or a folder with one
    ``.inter`` file)."""
    path = kwargs.pop('path', None) or root
    if path is None:
        raise FileNotFoundError("dataset 'recbole' needs root=<a RecBole atomic .inter file>")
    return load_recbole(path, behaviors, seed=seed, **kwargs)


__all__ = ['BEHAVIOR_FIELDS', 'inter_file', 'load_recbole', 'read_recbole_log']
