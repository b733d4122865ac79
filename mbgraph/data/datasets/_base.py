"""What the dataset loaders share: path types, the known behavior orders, the leave-one-out
split, id numbering, delimited-text reading and the errors a malformed file raises."""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import HeteroData

from ..multiplex import deduplicate, validate

log = logging.getLogger(__package__)

PathLike = Union[str, os.PathLike]

#: Orders used to infer the behavior order of a file whose behavior names match one of them.
KNOWN_ORDERS: Tuple[Tuple[str, ...], ...] = (
    ('pv', 'cart', 'buy'),
    ('click', 'collect', 'cart', 'buy'),
    ('view', 'cart', 'buy'),
    ('dislike', 'neutral', 'tag', 'like'),
)


class DataFormatError(ValueError):
    """A data file is malformed (not text in its encoding, a NUL byte, an over-long field,
    non-finite or negative matrix values); the message names the file (and line)."""


#: the longest field a delimited log may hold (Python's csv default)
MAX_FIELD = 131072


def _short(values: Sequence, n: int = 8) -> str:
    """``values`` as a list of at most ``n`` shown, with how many more: keeps messages short
    when a wrong column makes every row's value a "behavior"."""
    values = list(values)
    shown = ', '.join(repr(v)[:60] for v in values[:n])
    return f'[{shown}' + (f', ... ({len(values) - n} more)]' if len(values) > n else ']')


def _infer_order(present: Sequence[str],
                 orders: Sequence[Sequence[str]] = KNOWN_ORDERS) -> Optional[List[str]]:
    """The order of ``present`` behaviors if every one of ``orders`` that holds them all, the
    target (its last) included, agrees on it (the one rule every loader infers orders by)."""
    present = set(present)
    candidates = set()
    for order in orders:
        if present <= set(order) and order[-1] in present:
            candidates.add(tuple(b for b in order if b in present))
    if len(candidates) == 1:
        return list(candidates.pop())
    return None


def resolve_order(directory: Path, present: Sequence[str],
                  behaviors: Optional[Sequence[str]], known: Optional[Sequence[str]],
                  file_of: Callable[[str], str], *, dataset: Optional[str] = None,
                  orders: Sequence[Sequence[str]] = KNOWN_ORDERS,
                  logger: Optional[logging.Logger] = None) -> List[str]:
    """The behavior order that a loader of one file per behavior reads (MB-GMN's
    ``trn_<behavior>``, SSLRec's ``train_mat_<behavior>.pkl``): ``behaviors`` when given
    (distinct, each with its file); else the ``known`` order of the dataset, less the
    behaviors whose file is absent (with a warning; the target's must be there); else the
    order of the files ``present`` that ``orders`` agree on. ``file_of`` names a behavior's
    file, ``dataset`` the dataset in messages; the behaviors present but not read are logged
    (to ``logger``, the loader's; default this package's).
    """
    logger = logger or log
    listed = [file_of(b) for b in present]
    of = f' of {dataset!r}' if dataset else ''
    if behaviors is not None:
        order = [str(b) for b in behaviors]
        if not order or len(set(order)) != len(order):
            raise ValueError(f'behaviors must be distinct names, target last; got {order}')
        missing = [b for b in order if b not in present]
        if missing:
            raise FileNotFoundError(
                f'{directory}: no file for behaviors {missing} (expected '
                f'{", ".join(file_of(b) for b in missing)}); files present: {listed}')
    elif known is not None:
        if known[-1] not in present:
            raise FileNotFoundError(
                f'{Path(directory) / file_of(known[-1])}: missing the target behavior file{of} '
                f'(order {list(known)}); files present: {listed}')
        order = [b for b in known if b in present]
        skipped = [b for b in known if b not in present]
        if skipped:
            logger.warning('%s: no file for behaviors %s%s; loading %s only', directory,
                           skipped, of, order)
    else:
        if not present:
            raise ValueError(f'{directory}: no {file_of("<behavior>")} files')
        order = _infer_order(present, orders)
        if order is None:
            raise ValueError(
                f'{directory}: the behavior order of files {listed}{of} is not known; pass '
                'behaviors=[...] upstream -> downstream with the target last')
    ignored = [b for b in present if b not in order]
    if ignored:
        logger.info('%s: not loading behaviors %s (not in %s)', directory, ignored, order)
    return order


def _leave_one_out(user: np.ndarray, item: np.ndarray, key: np.ndarray, num_items: int,
                   min_count: int = 3) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Leave-one-out on the target behavior's interactions.

    ``key`` orders each user's interactions (a timestamp plus file order, or random numbers);
    ties are broken by position in the arrays. Repeated (user, item) pairs are first reduced to
    their earliest occurrence. For users with at least ``min_count`` distinct items the last
    interaction is the test pair and the one before it the validation pair.

    Returns ``(train_idx, val_idx, test_idx, num_repeated)`` as indices into the input arrays.
    """
    n = user.shape[0]
    pos = np.arange(n)
    # earliest occurrence of each (user, item)
    order = np.lexsort((pos, key, item, user))
    pair = user[order].astype(np.int64) * num_items + item[order]
    first = np.ones(n, dtype=bool)
    first[1:] = pair[1:] != pair[:-1]
    unique = order[first]
    repeated = n - unique.size
    # per-user chronological order of the distinct pairs
    unique = unique[np.lexsort((unique, key[unique], user[unique]))]
    u = user[unique]
    counts = np.bincount(u) if u.size else np.zeros(0, dtype=np.int64)
    is_last = np.ones(u.size, dtype=bool)
    is_last[:-1] = u[1:] != u[:-1]
    eligible = counts[u] >= min_count if u.size else np.zeros(0, dtype=bool)
    test_mask = is_last & eligible
    val_mask = np.zeros(u.size, dtype=bool)
    val_mask[:-1] = test_mask[1:]
    train_mask = ~(test_mask | val_mask)
    return unique[train_mask], unique[val_mask], unique[test_mask], repeated


def _edge(user: np.ndarray, item: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(user, dtype=np.int64),
                                      np.asarray(item, dtype=np.int64)]))


def _finish(data: HeteroData) -> HeteroData:
    removed = deduplicate(data)
    if any(removed.values()):
        log.info('removed duplicate (user, item) pairs: %s', removed)
    validate(data)
    return data


def _sorted_ids(raw: Sequence[str]) -> Tuple[list, Dict[str, int]]:
    """Number distinct raw ids in sorted order (numeric when all are integers)."""
    distinct = set(raw)
    try:
        as_int = {r: int(r) for r in distinct}
    except ValueError:
        ids = sorted(distinct)
        return ids, {r: i for i, r in enumerate(ids)}
    if len(set(as_int.values())) != len(distinct):  # e.g. '7' and '07': keep them apart
        ids = sorted(distinct)
        return ids, {r: i for i, r in enumerate(ids)}
    ordered = sorted(distinct, key=as_int.__getitem__)
    return [as_int[r] for r in ordered], {r: i for i, r in enumerate(ordered)}


def _text_encoding(encoding: str) -> str:
    """utf-8 reads as utf-8-sig: a byte-order mark is not part of the first field."""
    return 'utf-8-sig' if encoding.lower().replace('_', '-') in ('utf-8', 'utf8') else encoding


def _csv_rows(path: Path, sep: str, encoding: str = 'utf-8') -> Iterator[Tuple[int, List[str]]]:
    """(line number, fields) of each non-blank record of a delimited file; a byte-order mark
    is dropped, and text that is not ``encoding``, a NUL byte or a field longer than
    :data:`MAX_FIELD` raise :class:`DataFormatError` naming the file and line."""
    line = 0
    try:
        with open(path, newline='', encoding=_text_encoding(encoding)) as f:
            reader = csv.reader(f, delimiter=sep)
            for row in reader:
                line = reader.line_num
                if not row or all(not field.strip() for field in row):
                    continue
                if any('\x00' in field for field in row):
                    raise DataFormatError(f'{path}, line {line}: a NUL byte in a field (a binary '
                                          'or UTF-16 file?); expected delimited text')
                yield line, [field.strip() for field in row]
    except UnicodeDecodeError as e:
        where = f' after line {line}' if line else ''
        raise DataFormatError(f'{path}: not {encoding} text (byte 0x{e.object[e.start]:02x}'
                              f'{where}); convert the file to {encoding} or pass '
                              'encoding=...') from None
    except csv.Error as e:
        hint = (' (a wrong separator or an unclosed quote?)' if 'field limit' in str(e) else '')
        raise DataFormatError(f'{path}, line {line + 1}: {e}{hint}') from None


def finite_number(value: str, path, line: int, what: str) -> float:
    """``float(value)``, or a ``ValueError`` naming the file, the line and ``what`` when the
    field is not a finite number."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f'{path}, line {line}: {what} {value!r} is not a number') from None
    if not np.isfinite(number):
        raise ValueError(f'{path}, line {line}: {what} {value!r} is not finite')
    return number
