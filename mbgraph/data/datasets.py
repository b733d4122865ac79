r"""Dataset loaders: every one returns a validated multiplex graph in mbgraph's schema
(:mod:`mbgraph.data.multiplex`).

* :func:`load_dataset` -- one entry point by name (``DATASETS`` lists the names);
* :func:`load_mbgmn` -- the MB-GMN / KHGT / PKEF pickle format (Taobao, Beibei, Tmall);
* :func:`load_interaction_log` -- a generic CSV/TSV log of (user, item, behavior[, timestamp]);
* :func:`read_movielens_log` / :func:`load_movielens` -- MovieLens ml-latest-small read as
  dislike / neutral / tag / like;
* :func:`synthetic` -- a seeded generator of cascading behaviors (view -> cart -> buy);
* :func:`describe` -- the per-behavior statistics as a plain-text table.

Id maps: loaders of raw logs (CSV, MovieLens) number users and items ``0..n-1`` in sorted order
of their raw ids (numerically when every raw id is an integer, else as strings) and keep the raw
ids on the graph as Python lists: ``data['user'].raw_id[u]`` is the raw id of user ``u``
(likewise for items); entries are ``int`` when every raw id of that node type is an integer,
else ``str``.

Example::

    >>> from mbgraph.data.datasets import load_dataset, describe
    >>> data = load_dataset('synthetic', num_users=200, num_items=100, seed=1)
    >>> data.behaviors
    ['view', 'cart', 'buy']
"""
from __future__ import annotations

import csv
import importlib
import io
import logging
import os
import pickle
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import HeteroData

from .multiplex import (
    ITEM, USER, deduplicate, holdout_validation, make_multiplex, statistics,
    validate,
)

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Behavior orders (upstream -> downstream, last = target) of the public MB-GMN datasets.
MBGMN_BEHAVIORS: Dict[str, List[str]] = {
    'taobao': ['pv', 'cart', 'buy'],
    'beibei': ['pv', 'cart', 'buy'],
    'tmall': ['click', 'collect', 'cart', 'buy'],
}

#: Orders used to infer the behavior order of a file whose behavior names match one of them.
KNOWN_ORDERS: Tuple[Tuple[str, ...], ...] = (
    ('pv', 'cart', 'buy'),
    ('click', 'collect', 'cart', 'buy'),
    ('view', 'cart', 'buy'),
    ('dislike', 'neutral', 'tag', 'like'),
)

MOVIELENS_BEHAVIORS = ['dislike', 'neutral', 'tag', 'like']


# --------------------------------------------------------------------------------------------
# restricted unpickling
# --------------------------------------------------------------------------------------------

class RestrictedUnpicklingError(pickle.UnpicklingError):
    """A pickle referenced something other than the scipy/numpy types a dataset file may hold."""


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


def _numpy_attr(name: str, submodule: str = 'multiarray'):
    """``numpy._core.<submodule>.<name>`` (numpy >= 2) or ``numpy.core.<submodule>.<name>``."""
    for module in (f'numpy._core.{submodule}', f'numpy.core.{submodule}'):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f'numpy has no {submodule}.{name}')


def _latin1_encode(obj, encoding='utf-8', errors='strict'):
    """Stand-in for ``_codecs.encode`` limited to what protocol-2 pickles of ``bytes`` use:
    ``encode(text, 'latin1')``."""
    if not isinstance(obj, str) or str(encoding).lower().replace('_', '-') not in (
            'latin1', 'latin-1', 'iso-8859-1'):
        raise RestrictedUnpicklingError(
            f'refused _codecs.encode with encoding {encoding!r}: only latin1 text is allowed')
    return obj.encode('latin1', errors)


def _bytes(*args):
    """Stand-in for ``bytes`` as protocol-2 pickles call it: ``bytes()`` for an empty buffer
    (scipy's empty matrices pickle their data that way); nothing else."""
    if args and not (len(args) == 1 and isinstance(args[0], (bytes, bytearray))):
        raise RestrictedUnpicklingError(f'refused bytes{tuple(type(a).__name__ for a in args)}: '
                                        'only bytes() of an empty buffer is allowed')
    return bytes(*args)


def _allowed_globals() -> Dict[Tuple[str, str], Callable]:
    import scipy.sparse
    csr = scipy.sparse.csr_matrix
    coo = scipy.sparse.coo_matrix
    reconstruct = _numpy_attr('_reconstruct')
    scalar = _numpy_attr('scalar')
    frombuffer = _numpy_attr('_frombuffer', 'numeric')
    return {
        # the CSR class under its current and its pre-1.8 scipy module path
        ('scipy.sparse._csr', 'csr_matrix'): csr,
        ('scipy.sparse.csr', 'csr_matrix'): csr,
        # COO as well: the SSLRec toolkit's test_mat.pkl is one
        ('scipy.sparse._coo', 'coo_matrix'): coo,
        ('scipy.sparse.coo', 'coo_matrix'): coo,
        # numpy array (and array scalar) reconstruction, numpy >= 2 and older module paths
        ('numpy._core.multiarray', '_reconstruct'): reconstruct,
        ('numpy.core.multiarray', '_reconstruct'): reconstruct,
        ('numpy._core.multiarray', 'scalar'): scalar,
        ('numpy.core.multiarray', 'scalar'): scalar,
        # protocol 5 pickles of arrays: _frombuffer(bytes, dtype, shape, order)
        ('numpy._core.numeric', '_frombuffer'): frombuffer,
        ('numpy.core.numeric', '_frombuffer'): frombuffer,
        ('numpy', 'ndarray'): np.ndarray,
        ('numpy', 'dtype'): np.dtype,
        # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, 'latin1')
        # (the real taobao trn_pv does)
        ('_codecs', 'encode'): _latin1_encode,
        # ... and an empty bytes object as bytes() (scipy's empty matrices)
        ('__builtin__', 'bytes'): _bytes,
        ('builtins', 'bytes'): _bytes,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only scipy CSR / COO matrices and numpy arrays; any other global
    (``os.system``, ``builtins.eval``, ...) raises :class:`RestrictedUnpicklingError` naming
    it and the file, before anything is called."""

    def __init__(self, file, source: str = '<pickle>'):
        # latin1 lets numpy arrays written by Python 2 (str buffers) load; it does not change
        # how Python 3 pickles are read
        super().__init__(file, encoding='latin1')
        self.source = source
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise RestrictedUnpicklingError(
                f'{self.source}: refused to unpickle {module}.{name}: dataset pickles may hold '
                'only scipy.sparse.csr_matrix / coo_matrix and numpy arrays')
        return obj


def safe_unpickle(path: PathLike):
    """Load ``path`` with :class:`RestrictedUnpickler` (scipy CSR / COO, numpy arrays, plain Python
    containers only)."""
    path = Path(path)
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        return RestrictedUnpickler(io.BytesIO(raw), source=str(path)).load()
    except RestrictedUnpicklingError:
        raise
    except Exception as e:  # truncated / corrupt files
        raise pickle.UnpicklingError(f'{path}: could not unpickle: {e!r}') from e


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------

def _infer_order(present: Sequence[str]) -> Optional[List[str]]:
    """The order of ``present`` behaviors if every known order containing them agrees."""
    present = set(present)
    candidates = set()
    for order in KNOWN_ORDERS:
        if present <= set(order) and order[-1] in present:
            candidates.add(tuple(b for b in order if b in present))
    if len(candidates) == 1:
        return list(candidates.pop())
    return None


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


# --------------------------------------------------------------------------------------------
# MB-GMN pickle format
# --------------------------------------------------------------------------------------------

def _read_csr(path: Path):
    import scipy.sparse
    m = safe_unpickle(path)
    if not isinstance(m, scipy.sparse.csr_matrix):
        raise ValueError(f'{path}: expected a pickled scipy.sparse.csr_matrix (users x items), '
                         f'got {type(m).__name__}')
    try:
        m.check_format(full_check=True)
    except Exception as e:
        raise ValueError(f'{path}: malformed CSR matrix: {e}') from e
    return m


def _csr_edges(m, path: Path, behavior: str) -> torch.Tensor:
    """Training edges of a CSR matrix: one per stored non-zero entry; repeated entries are kept
    here (``deduplicate`` removes them, logged) and values > 1 count as one interaction."""
    indptr = np.asarray(m.indptr, dtype=np.int64)
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(indptr))
    cols = np.asarray(m.indices, dtype=np.int64)
    values = np.asarray(m.data)
    if values.dtype.kind == 'f' and not np.isfinite(values).all():
        raise DataFormatError(f'{path}: {int((~np.isfinite(values)).sum())} stored values are NaN '
                              f'or infinite; expected interaction counts (>= 0)')
    if values.dtype.kind in 'if' and (values < 0).any():
        raise DataFormatError(f'{path}: {int((values < 0).sum())} stored values are negative '
                              f'(the smallest {values.min()}); expected interaction counts (>= 0)')
    if values.dtype.kind not in 'iufb':
        raise DataFormatError(f'{path}: stored values of dtype {values.dtype}; expected numbers')
    nonzero = values != 0
    if not nonzero.all():
        log.warning('%s: ignored %d explicitly stored zeros (not interactions)',
                    path, int((~nonzero).sum()))
        rows, cols, values = rows[nonzero], cols[nonzero], values[nonzero]
    big = int((values > 1).sum()) if values.dtype.kind in 'iuf' else 0
    if big:
        log.info('%s: %d entries have values > 1 (interaction counts); each counts as one '
                 '%r interaction', path, big, behavior)
    return _edge(rows, cols)


def _read_tst_int(path: Path, num_users: int, num_items: int) -> torch.Tensor:
    obj = safe_unpickle(path)
    if isinstance(obj, np.ndarray):
        if obj.ndim != 1:
            raise ValueError(f'{path}: expected a 1-D array of test items, got shape {obj.shape}')
        entries = obj.tolist()
    elif isinstance(obj, (list, tuple)):
        entries = list(obj)
    else:
        raise ValueError(f'{path}: expected a list or numpy array of one test item per user, '
                         f'got {type(obj).__name__}')
    if len(entries) != num_users:
        raise ValueError(f'{path}: has {len(entries)} entries but the training matrices have '
                         f'{num_users} users (one test item or None per user expected)')
    users, items = [], []
    for u, it in enumerate(entries):
        if it is None:
            continue
        if isinstance(it, (bool, np.bool_)) or not isinstance(it, (int, np.integer)):
            raise ValueError(f'{path}: entry {u} is {it!r}; expected an item id or None')
        if not 0 <= int(it) < num_items:
            raise ValueError(f'{path}: entry {u} is item {it}, outside 0..{num_items - 1}')
        users.append(u)
        items.append(int(it))
    return _edge(np.array(users, dtype=np.int64), np.array(items, dtype=np.int64))


def load_mbgmn(directory: PathLike, behaviors: Optional[Sequence[str]] = None,
               name: Optional[str] = None, seed: int = 0) -> HeteroData:
    """Load a dataset in the MB-GMN / KHGT / PKEF pickle format.

    The directory holds ``trn_<behavior>`` (pickled ``scipy.sparse.csr_matrix``, users x items,
    non-zero = a training interaction) and ``tst_int`` (a pickled list or numpy object array of
    length ``num_users``: one held-out target item per user, or None). Pickles are read with
    :class:`RestrictedUnpickler`, which refuses anything but CSR matrices and numpy arrays.

    Args:
        directory: the folder with the files.
        behaviors: behavior order upstream -> downstream (last = target); only these files are
            loaded and all must exist. Default: the known order of ``name`` (taobao / beibei:
            pv, cart, buy; tmall: click, collect, cart, buy), skipping (with a warning) the
            non-target behaviors whose file is absent, or an order inferred from the files
            present when their names match a known order.
        name: dataset name (default: the directory name without a ``-mbgmn`` suffix).
        seed: seed of the validation holdout.

    The format has no validation split: one seeded random training target interaction per user
    (users with at least two) is moved to ``val_edge_index`` (logged). Duplicate entries are
    removed with :func:`~mbgraph.data.multiplex.deduplicate` (logged); a test pair that is
    also a training pair of the target makes :func:`~mbgraph.data.multiplex.validate` raise.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f'{directory}: no such directory; expected a folder with MB-GMN '
                                'files trn_<behavior> (pickled CSR) and tst_int')
    if name is None:
        name = directory.name.lower()
        if name.endswith('-mbgmn'):
            name = name[:-len('-mbgmn')]
    present = sorted(p.name[len('trn_'):] for p in directory.glob('trn_*') if p.is_file())
    if behaviors is not None:
        order = [str(b) for b in behaviors]
        missing = [b for b in order if b not in present]
        if missing:
            raise FileNotFoundError(
                f'{directory}: no file for behaviors {missing} (expected '
                f'{", ".join("trn_" + b for b in missing)}); files present: '
                f'{["trn_" + b for b in present]}')
    else:
        known = MBGMN_BEHAVIORS.get(name)
        if known is not None:
            target = known[-1]
            if target not in present:
                raise FileNotFoundError(
                    f'{directory / ("trn_" + target)}: missing the target behavior file of '
                    f'{name!r} (order {known}); files present: {["trn_" + b for b in present]}')
            order = [b for b in known if b in present]
            skipped = [b for b in known if b not in present]
            if skipped:
                log.warning('%s: no file for behaviors %s of %r; loading %s only',
                            directory, skipped, name, order)
        else:
            order = _infer_order(present) if present else None
            if order is None:
                raise ValueError(
                    f'{directory}: unknown dataset {name!r} and the behavior order of files '
                    f'{["trn_" + b for b in present]} cannot be inferred; pass behaviors=[...] '
                    'upstream -> downstream with the target last')
    ignored = [b for b in present if b not in order]
    if ignored:
        log.info('%s: not loading behaviors %s (not in %s)', directory, ignored, order)
    tst_path = directory / 'tst_int'
    if not tst_path.is_file():
        raise FileNotFoundError(f'{tst_path}: missing; expected the pickled per-user test items')

    mats = {b: _read_csr(directory / f'trn_{b}') for b in order}
    shapes = {b: m.shape for b, m in mats.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f'{directory}: the training matrices differ in shape: {shapes}')
    num_users, num_items = shapes[order[-1]]
    edges = {b: _csr_edges(m, directory / f'trn_{b}', b) for b, m in mats.items()}
    test = _read_tst_int(tst_path, num_users, num_items)
    data = make_multiplex(num_users, num_items, order, edges, test=test, name=name)
    removed = deduplicate(data)
    if any(removed.values()):
        log.info('%s: removed duplicate training pairs per behavior: %s', directory, removed)
    validate(data)  # a test pair that is also a training pair of the target fails here
    held = holdout_validation(data, seed)
    log.info('%s: the format has no validation split; held out one seeded (seed=%d) random '
             'training %r interaction per user with at least two as validation: %d pairs',
             directory, seed, order[-1], held)
    validate(data)
    return data


# --------------------------------------------------------------------------------------------
# generic interaction log
# --------------------------------------------------------------------------------------------

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
                         encoding: str = 'utf-8') -> dict:
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

    Returns a dict with numpy arrays ``'user'``, ``'item'`` (raw ids remapped to ``0..n-1`` in
    sorted raw-id order), ``'behavior'`` (int code into ``'behaviors'``), ``'timestamp'``
    (float64, or ``None`` when the file has no timestamp column), and ``'behaviors'`` (the
    order), ``'user_raw_id'``, ``'item_raw_id'``. Bad rows (missing fields, a non-numeric
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
    return {'user': u, 'item': i, 'behavior': b,
            'timestamp': np.asarray(times, dtype=np.float64) if it is not None else None,
            'behaviors': order, 'user_raw_id': user_raw, 'item_raw_id': item_raw}


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


def graph_from_log(log_: dict, *, seed: int = 0, name: str | None = None,
                   source: str = '<log>') -> HeteroData:
    """The multiplex graph of an interaction log in the layout :func:`read_interaction_log`
    returns (``'user'``, ``'item'``, ``'behavior'`` codes into ``'behaviors'``, ``'timestamp'``
    or None, ``'user_raw_id'``, ``'item_raw_id'``), split by leave-one-out on the target as
    :func:`load_interaction_log` describes. ``source`` names the log in messages."""
    path = source
    u, i, b, order = log_['user'], log_['item'], log_['behavior'], log_['behaviors']
    user_raw, item_raw = log_['user_raw_id'], log_['item_raw_id']
    num_users, num_items = len(user_raw), len(item_raw)
    times, it = log_['timestamp'], (None if log_['timestamp'] is None else 3)

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


# --------------------------------------------------------------------------------------------
# MovieLens
# --------------------------------------------------------------------------------------------

def _movielens_file(directory: Path, fname: str) -> Path:
    p = directory / fname
    if not p.is_file():
        raise FileNotFoundError(f'{p}: missing; expected MovieLens ml-latest-small '
                                f'{fname} in {directory}')
    return p


def _read_ml_csv(path: Path, fields: Sequence[str]):
    """Rows of a MovieLens csv as (line, [values of ``fields``])."""
    rows = _csv_rows(path, ',')
    first = next(rows, None)
    if first is None or any(f not in first[1] for f in fields):
        raise ValueError(f'{path}: expected a header with columns {list(fields)}')
    idx = [first[1].index(f) for f in fields]
    need = max(idx)
    for line, row in rows:
        if len(row) <= need or any(row[i] == '' for i in idx):
            raise ValueError(f'{path}, line {line}: missing fields (expected {list(fields)}): '
                             f'{row}')
        yield line, [row[i] for i in idx]


def read_movielens_log(directory: PathLike, with_tags: bool = True) -> dict:
    """The MovieLens (ml-latest-small) interactions as a time-ordered multi-behavior log.

    ``ratings.csv`` rows become ``dislike`` (rating <= 2), ``neutral`` (2 < rating < 4) or
    ``like`` (rating >= 4); with ``with_tags`` every ``tags.csv`` row is a ``tag`` interaction.

    Returns a dict with numpy arrays ``'user'``, ``'item'`` (contiguous ids), ``'behavior'``
    (int code into ``'behaviors'``), ``'timestamp'`` (int64 seconds) and ``'rating'`` (float,
    NaN for tags), sorted by user, then timestamp, then file order (ratings.csv rows before
    tags.csv rows); plus ``'behaviors'`` (names, upstream -> downstream, target ``'like'``
    last) and ``'user_raw_id'`` / ``'item_raw_id'`` (int64 arrays: raw userId / movieId of
    each contiguous id, in sorted order). Repeated (user, item) pairs (several tags on one
    movie) are kept here; :func:`load_movielens` removes them.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f'{directory}: no such directory; expected MovieLens '
                                'ml-latest-small with ratings.csv' +
                                (' and tags.csv' if with_tags else ''))
    behaviors = list(MOVIELENS_BEHAVIORS) if with_tags else ['dislike', 'neutral', 'like']
    code = {b: k for k, b in enumerate(behaviors)}
    users, items, acts, times, ratings = [], [], [], [], []

    ratings_path = _movielens_file(directory, 'ratings.csv')
    tags_path = _movielens_file(directory, 'tags.csv') if with_tags else None
    for line, (uid, mid, r, t) in _read_ml_csv(ratings_path,
                                               ('userId', 'movieId', 'rating', 'timestamp')):
        try:
            users.append(int(uid))
            items.append(int(mid))
            rating = float(r)
            times.append(int(t))
        except ValueError:
            raise ValueError(f'{ratings_path}, line {line}: non-numeric userId, movieId, rating '
                             f'or timestamp: {[uid, mid, r, t]}') from None
        if not np.isfinite(rating):
            raise ValueError(f'{ratings_path}, line {line}: rating {r!r} is not finite')
        ratings.append(rating)
        acts.append(code['dislike'] if rating <= 2 else
                    code['like'] if rating >= 4 else code['neutral'])
    if with_tags:
        for line, (uid, mid, t) in _read_ml_csv(tags_path, ('userId', 'movieId', 'timestamp')):
            try:
                users.append(int(uid))
                items.append(int(mid))
                times.append(int(t))
            except ValueError:
                raise ValueError(f'{tags_path}, line {line}: non-numeric userId, movieId or '
                                 f'timestamp: {[uid, mid, t]}') from None
            ratings.append(float('nan'))
            acts.append(code['tag'])
    users_a = np.asarray(users, dtype=np.int64)
    items_a = np.asarray(items, dtype=np.int64)
    user_raw, u = np.unique(users_a, return_inverse=True)
    item_raw, i = np.unique(items_a, return_inverse=True)
    t = np.asarray(times, dtype=np.int64)
    order = np.lexsort((np.arange(t.size), t, u))
    return {
        'user': u[order].astype(np.int64),
        'item': i[order].astype(np.int64),
        'behavior': np.asarray(acts, dtype=np.int64)[order],
        'timestamp': t[order],
        'rating': np.asarray(ratings, dtype=np.float64)[order],
        'behaviors': behaviors,
        'user_raw_id': user_raw,
        'item_raw_id': item_raw,
    }


def load_movielens(directory: PathLike, with_tags: bool = True,
                   behaviors: Optional[Sequence[str]] = None) -> HeteroData:
    """MovieLens ml-latest-small as a multiplex graph built on :func:`read_movielens_log`.

    Behaviors ``['dislike', 'neutral', 'tag', 'like']`` (without ``tag`` when ``with_tags`` is
    False); ``behaviors`` may select and order a subset (its last is the target). Split:
    leave-one-out on the target (``like``) by timestamp, ties broken by file order: for users
    with at least 3 likes the last like is the test pair and the like before it the validation
    pair. Repeated (user, item) pairs within a behavior (several tags on one movie) are removed
    with :func:`~mbgraph.data.multiplex.deduplicate` (logged). Raw ids: ``data['user'].raw_id``
    (userId) and ``data['item'].raw_id`` (movieId), lists of int.
    """
    if behaviors is not None and 'tag' in behaviors:
        with_tags = True
    ml = read_movielens_log(directory, with_tags=with_tags)
    names = ml['behaviors']
    order = list(names) if behaviors is None else [str(b) for b in behaviors]
    unknown = [b for b in order if b not in names]
    if unknown:
        raise ValueError(f'unknown MovieLens behaviors {unknown}; available: {names}')
    u, i, b = ml['user'], ml['item'], ml['behavior']
    num_users, num_items = len(ml['user_raw_id']), len(ml['item_raw_id'])
    target = names.index(order[-1])
    tgt = np.flatnonzero(b == target)
    # the log is already in (user, timestamp, file order): its position is the time key
    train, val, test, repeated = _leave_one_out(u[tgt], i[tgt], tgt.astype(np.float64),
                                                num_items)
    if repeated:
        log.warning('%d repeated %r (user, item) pairs counted once', repeated, order[-1])
    edges = {}
    for beh in order:
        idx = tgt[train] if beh == order[-1] else np.flatnonzero(b == names.index(beh))
        edges[beh] = _edge(u[idx], i[idx])
    data = make_multiplex(num_users, num_items, order, edges,
                          val=_edge(u[tgt[val]], i[tgt[val]]),
                          test=_edge(u[tgt[test]], i[tgt[test]]), name='ml-latest-small')
    data[USER].raw_id = ml['user_raw_id'].tolist()
    data[ITEM].raw_id = ml['item_raw_id'].tolist()
    log.info('MovieLens: leave-one-out by timestamp on %r: %d test, %d validation pairs',
             order[-1], test.size, val.size)
    return _finish(data)


# --------------------------------------------------------------------------------------------
# synthetic
# --------------------------------------------------------------------------------------------

def synthetic(num_users: int = 3000, num_items: int = 1500,
              behaviors: Sequence[str] = ('view', 'cart', 'buy'), seed: int = 0, *,
              views_per_user: float = 40.0,
              funnel: Union[None, float, Sequence[float]] = None,
              subset_prob: float = 0.85, dim: int = 8, zipf: float = 0.8,
              preference: float = 2.0) -> HeteroData:
    """A seeded synthetic multi-behavior dataset with cascading behaviors.

    Item popularity follows a Zipf-like power law (exponent ``zipf``); user activity is
    log-normal around ``views_per_user`` first-behavior interactions. Users and items have
    low-rank latent factors (``dim``); a user's affinity to an item is ``preference`` times
    their scaled dot product plus log popularity, and each behavior picks items by Gumbel top-k
    sampling from it (so preferences are learnable beyond popularity). Behavior ``k`` has about
    ``funnel[k-1]`` times as many interactions per user as behavior ``k-1``; each of them lies
    within the user's behavior ``k-1`` items with probability ``subset_prob`` (views -> carts ->
    buys cascade), and otherwise is a new item. Downstream behaviors weigh preference more.
    Default ``funnel``: 0.25 per step and 0.45 for the last (Taobao's view -> cart -> buy
    ratios are about 0.22 and 0.47).

    Split: for users with at least 3 target interactions a random one is the test pair and
    another the validation pair. Deterministic for a given ``seed``; ``data.name`` is
    ``'synthetic'``.
    """
    behaviors = [str(b) for b in behaviors]
    K = len(behaviors)
    if K == 0:
        raise ValueError('at least one behavior is required')
    if funnel is None:
        funnel = [0.25] * max(K - 2, 0) + [0.45] * (K > 1)
    elif np.ndim(funnel) == 0:
        funnel = [float(funnel)] * (K - 1)
    funnel = [float(f) for f in funnel]
    if len(funnel) < K - 1:
        raise ValueError(f'funnel needs {K - 1} ratios for behaviors {behaviors}, got {funnel}')
    if num_users < 1 or num_items < 2:
        raise ValueError('synthetic needs num_users >= 1 and num_items >= 2')
    rng = np.random.default_rng(seed)
    f32 = np.float32
    ranks = rng.permutation(num_items).astype(f32) + 1
    log_pop = -zipf * np.log(ranks)
    pu = rng.standard_normal((num_users, dim)).astype(f32)
    qi = rng.standard_normal((num_items, dim)).astype(f32)
    affinity = (pu @ qi.T) / f32(np.sqrt(dim))

    sigma = 0.6
    activity = rng.lognormal(np.log(views_per_user) - sigma ** 2 / 2, sigma, num_users)
    counts = np.clip(np.round(activity), 3, max(3, num_items // 2)).astype(np.int64)
    counts = np.minimum(counts, num_items)
    rows = np.arange(num_users)

    def gumbel() -> np.ndarray:
        return -np.log(-np.log(rng.random((num_users, num_items), dtype=f32) + f32(1e-12)))

    def top_k(key: np.ndarray, k: np.ndarray) -> np.ndarray:
        """mask of each row's k largest keys (k may be 0)."""
        srt = -np.sort(-key, axis=1)
        thr = srt[rows, np.maximum(k, 1) - 1]
        mask = key >= thr[:, None]
        mask[k == 0] = False
        return mask

    masks = []
    scale = preference
    prev = top_k(scale * affinity + log_pop + gumbel(), counts)
    masks.append(prev)
    for k in range(1, K):
        scale = scale * 1.25
        n_prev = prev.sum(1)
        n_k = rng.binomial(n_prev, min(max(funnel[k - 1], 0.0), 1.0))
        n_in = rng.binomial(n_k, subset_prob)
        n_out = np.minimum(n_k - n_in, num_items - n_prev)
        key = scale * affinity + log_pop + gumbel()
        # rank previous-behavior items first: one sort serves both the inside and outside picks
        big = f32(key.max() - key.min() + 1)  # small enough to keep float32 keys distinct
        shifted = np.where(prev, key + big, key)
        srt = -np.sort(-shifted, axis=1)
        thr_in = srt[rows, np.maximum(n_in, 1) - 1]
        inside = prev & (shifted >= thr_in[:, None])
        inside[n_in == 0] = False
        thr_out = srt[rows, np.minimum(n_prev + np.maximum(n_out, 1) - 1, num_items - 1)]
        outside = ~prev & (shifted >= thr_out[:, None])
        outside[n_out == 0] = False
        prev = inside | outside
        masks.append(prev)

    edges = {}
    for beh, mask in zip(behaviors[:-1], masks[:-1]):
        uu, ii = np.nonzero(mask)
        edges[beh] = _edge(uu, ii)
    tu, ti = np.nonzero(masks[-1])
    train, val, test, _ = _leave_one_out(tu, ti, rng.random(tu.size), num_items)
    edges[behaviors[-1]] = _edge(tu[train], ti[train])
    data = make_multiplex(num_users, num_items, behaviors, edges,
                          val=_edge(tu[val], ti[val]), test=_edge(tu[test], ti[test]),
                          name='synthetic')
    validate(data)
    return data


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

def _resolve_mbgmn_dir(root: Optional[PathLike], name: str) -> Path:
    if root is None:
        raise FileNotFoundError(f'dataset {name!r} needs root=<folder holding {name}/ or '
                                f'{name}-mbgmn/ with trn_<behavior> and tst_int files>')
    root = Path(root)
    candidates = [root / name, root / f'{name}-mbgmn', root]
    for c in candidates:
        if c.is_dir() and any(p.is_file() for p in c.glob('trn_*')):
            # the files do not say which dataset they are: a folder named after another
            # dataset is that one's (e.g. --dataset beibei --data-root .../taobao-mbgmn)
            other = [d for d in MBGMN_BEHAVIORS if d != name and d in c.name.lower()]
            if c == root and other:
                raise FileNotFoundError(
                    f'dataset {name!r}: {c} holds MB-GMN files but is named after {other[0]!r}; '
                    f'pass the folder that holds {name}/ or {name}-mbgmn/')
            return c
    raise FileNotFoundError(
        f'dataset {name!r}: no MB-GMN files (trn_<behavior>, tst_int) in any of '
        f'{[str(c) for c in candidates]}')


def _mbgmn_entry(name: str):
    def load(root: Optional[PathLike] = None, *, behaviors=None, seed: int = 0, **kwargs):
        if kwargs:
            raise TypeError(f'unexpected arguments for dataset {name!r}: {sorted(kwargs)}')
        return load_mbgmn(_resolve_mbgmn_dir(root, name), behaviors=behaviors, name=name,
                          seed=seed)
    load.__doc__ = f'{name} in the MB-GMN pickle format (root/{name}, root/{name}-mbgmn or root).'
    return load


def _movielens_entry(root: Optional[PathLike] = None, *, behaviors=None, seed: int = 0,
                     **kwargs) -> HeteroData:
    """MovieLens ml-latest-small (root/ml-latest-small or root)."""
    if root is None:
        raise FileNotFoundError('dataset ml-latest-small needs root=<folder holding '
                                'ml-latest-small/ratings.csv>')
    root = Path(root)
    candidates = [root / 'ml-latest-small', root]
    for c in candidates:
        if (c / 'ratings.csv').is_file():
            return load_movielens(c, behaviors=behaviors, **kwargs)
    raise FileNotFoundError(f'dataset ml-latest-small: no ratings.csv in any of '
                            f'{[str(c) for c in candidates]}')


def _synthetic_entry(root: Optional[PathLike] = None, *, behaviors=None, seed: int = 0,
                     **kwargs) -> HeteroData:
    """Seeded synthetic cascade (no files)."""
    if behaviors is not None:
        kwargs['behaviors'] = behaviors
    return synthetic(seed=seed, **kwargs)


def _csv_entry(root: Optional[PathLike] = None, *, behaviors=None, seed: int = 0,
               **kwargs) -> HeteroData:
    """A CSV/TSV interaction log (path=... or root = the file)."""
    path = kwargs.pop('path', None) or root
    if path is None:
        raise FileNotFoundError("dataset 'csv' needs path=<file with user, item, behavior"
                                "[, timestamp] columns>")
    return load_interaction_log(path, behaviors=behaviors, seed=seed, **kwargs)


def _elsewhere(module: str, entry: str) -> Callable[..., HeteroData]:
    """A registry entry whose loader lives in ``mbgraph.data.<module>`` (imported on first
    use: those modules import this one)."""
    def load(root: PathLike | None = None, **kwargs) -> HeteroData:
        loader = getattr(importlib.import_module(f'{__package__}.{module}'), entry)
        return loader(root, **kwargs)
    load.__doc__ = f'mbgraph.data.{module}.{entry}'
    return load


#: name -> loader ``(root=None, *, behaviors=None, seed=0, **kwargs) -> HeteroData``
DATASETS: Dict[str, Callable[..., HeteroData]] = {
    'synthetic': _synthetic_entry,
    'taobao': _mbgmn_entry('taobao'),
    'beibei': _mbgmn_entry('beibei'),
    'tmall': _mbgmn_entry('tmall'),
    'ml-latest-small': _movielens_entry,
    'movielens': _movielens_entry,
    'csv': _csv_entry,
    'sslrec': _elsewhere('sslrec', 'sslrec_entry'),
    'retailrocket': _elsewhere('sslrec', 'retailrocket_entry'),
    'recbole': _elsewhere('recbole', 'recbole_entry'),
    'behavior_txt': _elsewhere('behavior_txt', 'behavior_txt_entry'),
}


def load_dataset(name: str, root: Optional[PathLike] = None, *,
                 behaviors: Optional[Sequence[str]] = None, seed: int = 0,
                 **kwargs) -> HeteroData:
    """Load a dataset by name (one of ``DATASETS``) as a validated multiplex graph.

    Args:
        name: 'synthetic', 'taobao', 'beibei', 'tmall', 'retailrocket', 'ml-latest-small' /
            'movielens', or a format: 'csv', 'sslrec', 'recbole', 'behavior_txt'.
        root: data folder. MB-GMN datasets are looked up in ``root/<name>``,
            ``root/<name>-mbgmn`` or ``root`` itself; 'retailrocket' in
            ``root/retailrocket-sslrec`` (SSLRec's files, :mod:`mbgraph.data.sslrec`) or
            ``root``; MovieLens in ``root/ml-latest-small`` or ``root``; 'sslrec' and
            'behavior_txt' (:mod:`mbgraph.data.behavior_txt`) take the folder itself, 'csv' and
            'recbole' (:mod:`mbgraph.data.recbole`) the file (or ``path=...``); 'synthetic'
            needs none. PyG's Taobao object is converted by
            :func:`mbgraph.data.pyg.from_pyg_taobao`.
        behaviors: behavior order / subset (last = target); dataset default when None.
        seed: seed of random splits (validation holdout, synthetic generation).
        kwargs: passed to the loader (e.g. ``num_users`` for synthetic, ``sep`` for csv,
            ``with_tags`` for MovieLens).

    Raises:
        ValueError: unknown name. FileNotFoundError: missing root or files.
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise ValueError(f'unknown dataset {name!r}; known datasets: {", ".join(DATASETS)}')
    return DATASETS[key](root, behaviors=behaviors, seed=seed, **kwargs)


# --------------------------------------------------------------------------------------------
# description
# --------------------------------------------------------------------------------------------

def describe(data: HeteroData) -> str:
    """Per-behavior statistics of ``data`` as a plain-text table (the papers' table 1):
    behavior, #users, #items, #interactions, density; then training totals and splits."""
    rows = statistics(data)
    num_users, num_items = int(data[USER].num_nodes), int(data[ITEM].num_nodes)
    name = getattr(data, 'name', None) or 'dataset'
    behaviors = list(data.behaviors)
    header = ('Behavior', '#Users', '#Items', '#Interactions', 'Density')
    body = []
    total = 0
    for r in rows:
        body.append((r['behavior'], f"{r['users']:,}", f"{r['items']:,}",
                     f"{r['interactions']:,}", f"{r['density']:.2e}"))
        if r['behavior'] in behaviors:
            total += r['interactions']
    body.insert(len(behaviors), ('all training', f'{num_users:,}', f'{num_items:,}',
                                 f'{total:,}', f'{total / max(num_users * num_items, 1):.2e}'))
    widths = [max(len(h), *(len(b[k]) for b in body)) for k, h in enumerate(header)]

    def fmt(cells) -> str:
        return '  '.join(c.ljust(w) if k == 0 else c.rjust(w)
                         for k, (c, w) in enumerate(zip(cells, widths)))

    lines = [f'{name}: {num_users:,} users, {num_items:,} items, behaviors '
             f'{" -> ".join(behaviors)} (target {behaviors[-1]!r})',
             fmt(header), fmt(['-' * w for w in widths])]
    lines += [fmt(b) for b in body[:len(behaviors) + 1]]
    if len(body) > len(behaviors) + 1:
        lines.append(fmt(['-' * w for w in widths]))
        lines += [fmt(b) for b in body[len(behaviors) + 1:]]
    return '\n'.join(lines)


__all__ = [
    'DATASETS', 'KNOWN_ORDERS', 'MBGMN_BEHAVIORS', 'RestrictedUnpickler',
    'RestrictedUnpicklingError', 'describe', 'load_dataset', 'load_interaction_log',
    'load_mbgmn', 'load_movielens', 'read_interaction_log', 'read_movielens_log',
    'safe_unpickle', 'synthetic',
]
