"""Generic delimited interaction logs (user, item, behavior[, timestamp]): the typed record
:class:`InteractionLog` that every log reader returns, :func:`read_interaction_log`,
:func:`load_interaction_log` and :func:`graph_from_log`."""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

import numpy as np
from torch_geometric.data import HeteroData

from ..multiplex import ITEM, USER, make_multiplex
from ._base import (
    DataFormatError,
    PathLike,
    _csv_rows,
    _edge,
    _finish,
    _infer_order,
    _leave_one_out,
    _short,
    _sorted_ids,
    _text_encoding,
    finite_number,
)

log = logging.getLogger(__package__)


@dataclass(frozen=True)
class InteractionLog:
    """An interaction log read into arrays, in the reader's order: what every log reader
    returns (:func:`read_interaction_log`, :func:`~mbgraph.data.datasets.read_movielens_log`,
    :func:`~mbgraph.data.recbole.read_recbole_log`) and :func:`graph_from_log` builds a graph
    from.

    Attributes:
        user, item: ``int64`` arrays of contiguous ids ``0..n-1``.
        behavior: ``int64`` codes into :attr:`behaviors`.
        timestamp: one time per interaction, or ``None`` when the log has none.
        behaviors: the behavior names, upstream -> downstream, target last.
        user_raw_id, item_raw_id: the raw id of each contiguous id.
        rating: the rating of each interaction (NaN where it has none), or ``None``.

    ``log['user']`` reads a field as well, the interface of the dict these readers returned
    before, for code written against it.
    """
    user: np.ndarray
    item: np.ndarray
    behavior: np.ndarray
    timestamp: Optional[np.ndarray]
    behaviors: List[str]
    user_raw_id: Sequence[Any]
    item_raw_id: Sequence[Any]
    rating: Optional[np.ndarray] = None

    @property
    def num_users(self) -> int:
        return len(self.user_raw_id)

    @property
    def num_items(self) -> int:
        return len(self.item_raw_id)

    def __len__(self) -> int:
        """The number of interactions."""
        return int(len(self.user))

    # the readers returned a 7-key dict before this record: log['user'] keeps that code working
    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> List[str]:
        """The field names (``rating`` only when the log has ratings)."""
        return [f.name for f in fields(self) if f.name != 'rating' or self.rating is not None]

    @classmethod
    def of(cls, log_: Union['InteractionLog', Mapping[str, Any]]) -> 'InteractionLog':
        """``log_`` itself, or the record of a mapping with the same keys."""
        return log_ if isinstance(log_, cls) else cls(**log_)


def _sniff_sep(path: Path, encoding: str) -> str:
    suffix = path.suffix.lower()
    if suffix in ('.tsv', '.tab'):
        return '\t'
    if suffix == '.csv':
        return ','
    try:
        with open(path, newline='', encoding=_text_encoding(encoding)) as f:
            sample = f.read(65536)
    except UnicodeDecodeError as e:
        raise DataFormatError(f'{path}: not {encoding} text (byte 0x{e.object[e.start]:02x} at '
                              f'offset {e.start}); convert the file to {encoding} or pass '
                              'encoding=...') from None
    try:
        return csv.Sniffer().sniff(sample, delimiters=',\t;| ').delimiter
    except csv.Error:
        raise ValueError(f'{path}: cannot tell the field separator from the extension or the '
                         'content; pass sep=...') from None


def read_interaction_log(path: PathLike, behaviors: Optional[Sequence[str]] = None,
                         sep: Optional[str] = None,
                         columns: Sequence[Union[str, int]] = ('user', 'item', 'behavior',
                                                               'timestamp'),
                         header: Union[str, bool, None] = 'infer',
                         encoding: str = 'utf-8') -> InteractionLog:
    """Read a delimited interaction log with one (user, item, behavior[, timestamp]) per row
    into arrays, in file order (what :func:`load_interaction_log` builds a graph from and
    :meth:`mbgraph_seq.data.SequenceDataset.from_csv` builds sequences from).

    Args:
        path: the file.
        behaviors: behavior order upstream -> downstream (last = target). Required when the
            file holds several behavior names whose order is not one of ``KNOWN_ORDERS``;
            behavior values in the file that are not listed raise ``ValueError``.
        sep: field separator; default from the extension (``.csv`` comma, ``.tsv`` tab) or
            sniffed from the content.
        columns: the user, item, behavior and (optional) timestamp fields, each a header name
            or a 0-based column index. Without a header row, names are taken as positions in
            the order given (user = column 0, ...).
        header: ``'infer'`` (the first row is a header when it contains the user, item and
            behavior names of ``columns``), ``True`` or ``False``.

    Returns an :class:`InteractionLog`: ``user``, ``item`` (raw ids remapped to ``0..n-1`` in
    sorted raw-id order), ``behavior`` (int code into ``behaviors``), ``timestamp`` (float64,
    or ``None`` when the file has no timestamp column), ``behaviors`` (the order),
    ``user_raw_id``, ``item_raw_id``. Bad rows (missing fields, a non-numeric
    timestamp) raise ``ValueError`` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        what = ('is a folder' if path.is_dir() else 'is not a regular file' if path.exists()
                else 'no such file')
        raise FileNotFoundError(f'{path}: {what}; expected a delimited log with user, '
                                'item, behavior[, timestamp] columns')
    if sep is None:
        sep = _sniff_sep(path, encoding)
    columns = list(columns)
    if len(columns) not in (3, 4):
        raise ValueError(f'columns must name user, item, behavior[, timestamp], got {columns}')
    rows = _csv_rows(path, sep, encoding)
    first = next(rows, None)
    if first is None:
        raise ValueError(f'{path}: the file has no rows')
    names = [c for c in columns[:3] if isinstance(c, str)]
    if header == 'infer':
        has_header = bool(names) and all(c in first[1] for c in names)
    elif header in (True, False, None):
        has_header = bool(header)
    else:
        raise ValueError(f"header must be 'infer', True or False, got {header!r}")
    index: List[Optional[int]] = []
    for pos, c in enumerate(columns):
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            index.append(int(c))
        elif has_header:
            if c in first[1]:
                index.append(first[1].index(c))
            elif pos == 3:
                index.append(None)  # no timestamp column
            else:
                raise ValueError(f'{path}: header {_short(first[1], 20)} has no column {c!r}')
        else:
            index.append(pos)
    if len(index) == 4 and index[3] is not None and not has_header:
        # a headerless file may simply have no timestamp column
        if index[3] >= len(first[1]) and isinstance(columns[3], str):
            index[3] = None
    if len(index) == 3:
        index.append(None)
    iu, ii, ib, it = index
    needed = max(i for i in index if i is not None)

    users: List[str] = []
    items: List[str] = []
    acts: List[str] = []
    times: List[float] = []
    lines: List[int] = []

    def parse(line: int, row: List[str]) -> None:
        if len(row) <= needed:
            raise ValueError(f'{path}, line {line}: expected at least {needed + 1} fields, got '
                             f'{len(row)}: {_short(row)}')
        for what, i in (('user', iu), ('item', ii), ('behavior', ib)):
            if row[i] == '':
                raise ValueError(f'{path}, line {line}: empty {what} field')
        users.append(row[iu])
        items.append(row[ii])
        acts.append(row[ib])
        if it is not None:
            times.append(finite_number(row[it], path, line, 'timestamp'))
        lines.append(line)

    if not has_header:
        parse(*first)
    for line, row in rows:
        parse(line, row)
    if not users:
        raise ValueError(f'{path}: the file has a header but no interactions')

    found = sorted(set(acts))
    if behaviors is None:
        order = found if len(found) == 1 else _infer_order(found)
        if order is None:
            raise ValueError(f'{path}: the file has {len(found)} behaviors {_short(found)}; '
                             'pass behaviors=[...] in order upstream -> downstream with the '
                             'target last' + (' (so many behavior values: is the behavior '
                                              'column the right one?)' if len(found) > 8 else ''))
    else:
        order = [str(b) for b in behaviors]
        unknown = [b for b in found if b not in order]
        if unknown:
            raise ValueError(f'{path}: {len(unknown)} behavior values {_short(unknown)} in the '
                             f'file are not in behaviors={_short(order)}')
        absent = [b for b in order if b not in found]
        if absent:
            log.warning('%s: behaviors %s have no interactions in the file', path, absent)

    user_raw, user_map = _sorted_ids(users)
    item_raw, item_map = _sorted_ids(items)
    u = np.fromiter((user_map[x] for x in users), dtype=np.int64, count=len(users))
    i = np.fromiter((item_map[x] for x in items), dtype=np.int64, count=len(items))
    code = {b: k for k, b in enumerate(order)}
    b = np.fromiter((code[x] for x in acts), dtype=np.int64, count=len(acts))
    return InteractionLog(
        user=u, item=i, behavior=b,
        timestamp=np.asarray(times, dtype=np.float64) if it is not None else None,
        behaviors=order, user_raw_id=user_raw, item_raw_id=item_raw)


def load_interaction_log(path: PathLike, behaviors: Optional[Sequence[str]] = None,
                         sep: Optional[str] = None,
                         columns: Sequence[Union[str, int]] = ('user', 'item', 'behavior',
                                                               'timestamp'),
                         header: Union[str, bool, None] = 'infer', *, seed: int = 0,
                         name: Optional[str] = None, encoding: str = 'utf-8') -> HeteroData:
    """Load a delimited interaction log with one (user, item, behavior[, timestamp]) per row.

    Args:
        path, behaviors, sep, columns, header, encoding: as :func:`read_interaction_log`.
        seed: seed of the random split when there are no timestamps.
        name: dataset name (default: the file stem).

    Raw ids are remapped to ``0..n-1`` (see the module docstring: ``data['user'].raw_id``,
    ``data['item'].raw_id``). Split: leave-one-out on the target behavior for users with at
    least 3 distinct target items -- by timestamp when the file has one (ties keep file order),
    otherwise in a seeded random order: the last interaction is the test pair, the one before
    it the validation pair; other users keep all their interactions in training. A repeated
    target (user, item) pair counts at its first occurrence. Bad rows (missing fields, a
    non-numeric timestamp) raise ``ValueError`` naming the file and line.
    """
    path = Path(path)
    log_ = read_interaction_log(path, behaviors, sep, columns, header, encoding)
    return graph_from_log(log_, seed=seed, name=name if name is not None else path.stem,
                          source=str(path))


def graph_from_log(log_: Union[InteractionLog, Mapping[str, Any]], *, seed: int = 0,
                   name: str | None = None, source: str = '<log>') -> HeteroData:
    """The multiplex graph of an :class:`InteractionLog` (or a mapping with its fields), split
    by leave-one-out on the target as :func:`load_interaction_log` describes. ``source``
    names the log in messages."""
    path = source
    log_ = InteractionLog.of(log_)
    u, i, b, order = log_.user, log_.item, log_.behavior, log_.behaviors
    user_raw, item_raw = log_.user_raw_id, log_.item_raw_id
    num_users, num_items = len(user_raw), len(item_raw)
    times, it = log_.timestamp, (None if log_.timestamp is None else 3)

    target = len(order) - 1
    tgt = np.flatnonzero(b == target)
    if it is not None:
        key = times[tgt]
        how = 'by timestamp'
    else:
        key = np.random.default_rng(seed).random(tgt.size)
        how = f'in random order (seed={seed}, no timestamp column)'
    train, val, test, repeated = _leave_one_out(u[tgt], i[tgt], key, num_items)
    if repeated:
        log.warning('%s: %d repeated %r (user, item) pairs counted once (first occurrence)',
                    path, repeated, order[-1])
    log.info('%s: leave-one-out %s on %r: %d test and %d validation pairs', path, how,
             order[-1], test.size, val.size)
    edges = {}
    for k, beh in enumerate(order):
        idx = np.flatnonzero(b == k) if k != target else tgt[train]
        edges[beh] = _edge(u[idx], i[idx])
    data = make_multiplex(num_users, num_items, order, edges,
                          val=_edge(u[tgt[val]], i[tgt[val]]),
                          test=_edge(u[tgt[test]], i[tgt[test]]), name=name)
    data[USER].raw_id = user_raw
    data[ITEM].raw_id = item_raw
    return _finish(data)


def _csv_entry(root: Optional[PathLike] = None, *, behaviors=None, seed: int = 0,
               **kwargs) -> HeteroData:
    """A CSV/TSV interaction log (path=... or root = the file)."""
    path = kwargs.pop('path', None) or root
    if path is None:
        raise FileNotFoundError("dataset 'csv' needs path=<file with user, item, behavior"
                                "[, timestamp] columns>")
    return load_interaction_log(path, behaviors=behaviors, seed=seed, **kwargs)
