r"""The SSLRec toolkit's multi-behavior format (HKUDS/SSLRec, ``datasets/multi_behavior/``).

A folder holds one pickled users x items matrix per behavior, ``train_mat_<behavior>.pkl``
(non-zero = a training interaction), and ``test_mat.pkl``, the held-out target interactions
(a matrix of the same shape; SSLRec's own files hold one buy per test user). Matrices may be
``scipy.sparse.csr_matrix`` or ``coo_matrix``; they are read with the restricted unpickler of
:mod:`mbgraph.data.datasets`, which refuses anything but those and numpy arrays.

SSLRec reads ``test_mat.pkl`` as its validation set too. Here validation and test stay apart:
as for the MB-GMN files, one seeded random training target interaction per user (users with at
least two) is held out of training as the validation split. Where no test item was
interacted with by its user in training under any behavior (RetailRocket's files), the
held-out pairs leave the auxiliary behaviors' training edges as well, so that validation asks
the test's question (:func:`mbgraph.data.multiplex.holdout_validation` with ``unseen``).

Example::

    >>> from mbgraph.data.datasets import load_dataset
    >>> data = load_dataset('retailrocket', root='../shared/data')      # doctest: +SKIP
    >>> data.behaviors                                                   # doctest: +SKIP
    ['view', 'cart', 'buy']
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import HeteroData

from .datasets import KNOWN_ORDERS, PathLike, safe_unpickle
from .datasets._base import resolve_order
from .multiplex import deduplicate, holdout_validation, make_multiplex, validate
from .shortcuts import shortcut_shares

log = logging.getLogger(__name__)

#: Behavior orders (upstream -> downstream, last = target) of SSLRec's multi-behavior datasets.
SSLREC_BEHAVIORS: dict[str, list[str]] = {
    'retail_rocket': ['view', 'cart', 'buy'],
    'tmall': ['pv', 'fav', 'cart', 'buy'],
    'ijcai_15': ['click', 'fav', 'cart', 'buy'],
}

#: the orders a folder's behavior order is inferred from: SSLRec's, then mbgraph's
SSLREC_ORDERS = (*map(tuple, SSLREC_BEHAVIORS.values()), *KNOWN_ORDERS)

#: other spellings of the dataset names above (folder names, this project's dataset names)
_ALIASES = {'retailrocket': 'retail_rocket', 'retail-rocket': 'retail_rocket',
            'ijcai15': 'ijcai_15', 'ijcai-15': 'ijcai_15', 'ijcai': 'ijcai_15'}

TRAIN_PREFIX, TRAIN_SUFFIX, TEST_FILE = 'train_mat_', '.pkl', 'test_mat.pkl'


def sslrec_name(name: str | None) -> str | None:
    """The SSLRec dataset a (folder) name stands for, e.g. ``'retailrocket-sslrec'`` ->
    ``'retail_rocket'``; None when it is none of :data:`SSLREC_BEHAVIORS`."""
    if not name:
        return None
    key = str(name).lower()
    for suffix in ('-sslrec', '_sslrec'):
        key = key.removesuffix(suffix)
    key = _ALIASES.get(key, key)
    return key if key in SSLREC_BEHAVIORS else None


def behavior_files(directory: PathLike) -> dict[str, Path]:
    """``{behavior: path}`` of the ``train_mat_<behavior>.pkl`` files in ``directory``."""
    directory = Path(directory)
    out = {}
    for p in sorted(directory.glob(f'{TRAIN_PREFIX}*{TRAIN_SUFFIX}')):
        behavior = p.name[len(TRAIN_PREFIX):-len(TRAIN_SUFFIX)]
        if behavior and p.is_file():
            out[behavior] = p
    return out


def read_sparse_pairs(path: PathLike, shape: tuple[int, int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(rows, cols, shape) of the non-zero entries of a pickled CSR or COO matrix.

    Checks what an unpickled matrix does not check by itself: CSR structure, COO index arrays
    of one length and inside the shape, finite non-negative values, and (given ``shape``) the
    shape. Explicitly stored zeros are not interactions (dropped, logged); values > 1 count as
    one interaction.
    """
    import scipy.sparse
    path = Path(path)
    m = safe_unpickle(path)
    if isinstance(m, scipy.sparse.csr_matrix):
        try:
            m.check_format(full_check=True)
        except Exception as e:
            raise ValueError(f'{path}: malformed CSR matrix: {e}') from e
        indptr = np.asarray(m.indptr, dtype=np.int64)
        rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(indptr))
        cols = np.asarray(m.indices, dtype=np.int64)
    elif isinstance(m, scipy.sparse.coo_matrix):
        try:
            rows = np.asarray(m.row, dtype=np.int64)
            cols = np.asarray(m.col, dtype=np.int64)
        except (AttributeError, TypeError, ValueError) as e:
            raise ValueError(f'{path}: malformed COO matrix (row/col): {e!r}') from e
        if rows.ndim != 1 or rows.shape != cols.shape or np.shape(m.data) != rows.shape:
            raise ValueError(f'{path}: malformed COO matrix: row, col and data have lengths '
                             f'{np.shape(m.row)}, {np.shape(m.col)}, {np.shape(m.data)}')
        for what, idx, n in (('row', rows, m.shape[0]), ('column', cols, m.shape[1])):
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                bad = idx.min() if idx.min() < 0 else idx.max()
                raise ValueError(f'{path}: malformed COO matrix: {what} index {bad} outside '
                                 f'0..{n - 1} of shape {m.shape}')
    else:
        # a file of the wrong content is a bad value, as for the MB-GMN loader
        got = type(m).__name__
        raise ValueError(f'{path}: expected a pickled scipy.sparse csr_matrix or '  # noqa: TRY004
                         f'coo_matrix (users x items), got {got}')
    if len(m.shape) != 2:
        raise ValueError(f'{path}: expected a 2-D users x items matrix, got shape {m.shape}')
    values = np.asarray(m.data)
    if values.dtype.kind not in 'biuf':
        raise ValueError(f'{path}: matrix values have dtype {values.dtype}; expected numbers')
    values = values.astype(np.float64)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f'{path}: {int(bad.sum())} entries are negative or not finite (first: '
                         f'row {rows[k]}, column {cols[k]}, value {values[k]}); expected '
                         'interaction indicators or counts >= 0')
    nonzero = values != 0
    if not nonzero.all():
        log.warning('%s: ignored %d explicitly stored zeros (not interactions)', path,
                    int((~nonzero).sum()))
        rows, cols = rows[nonzero], cols[nonzero]
    shape_ = (int(m.shape[0]), int(m.shape[1]))
    if shape is not None and shape_ != tuple(shape):
        raise ValueError(f'{path}: shape {shape_} differs from the other matrices\' {tuple(shape)}'
                         ' (users x items)')
    return rows, cols, shape_


def load_sslrec(directory: PathLike, behaviors: Sequence[str] | None = None,
                name: str | None = None, seed: int = 0) -> HeteroData:
    """Load a folder in SSLRec's multi-behavior format (module docstring).

    Args:
        directory: the folder with ``train_mat_<behavior>.pkl`` and ``test_mat.pkl``.
        behaviors: behavior order upstream -> downstream (last = target); only these files are
            read and all must exist. Default: the known order of the dataset (``name``, else
            the folder's name: retail_rocket view, cart, buy; tmall pv, fav, cart, buy;
            ijcai_15 click, fav, cart, buy), loading the behaviors whose file is present (the
            target's must be), or an order inferred from the file names when they match one
            known order.
        name: dataset name kept as ``data.name`` (default: the folder's name).
        seed: seed of the validation holdout.

    Test pairs may cover only some users (users without one are simply not evaluated);
    repeated entries are read once. A test pair that is also a training pair of the target
    raises ``ValueError``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f'{directory}: no such folder; expected SSLRec files '
                                f'{TRAIN_PREFIX}<behavior>{TRAIN_SUFFIX} and {TEST_FILE}')
    files = behavior_files(directory)
    present = list(files)
    name = name or directory.name
    known = SSLREC_BEHAVIORS.get(sslrec_name(name) or sslrec_name(directory.name) or '')
    order = resolve_order(directory, present, behaviors, known,
                          lambda b: f'{TRAIN_PREFIX}{b}{TRAIN_SUFFIX}', orders=SSLREC_ORDERS,
                          logger=log)
    test_path = directory / TEST_FILE
    if not test_path.is_file():
        raise FileNotFoundError(f'{test_path}: missing; expected the pickled users x items '
                                'matrix of held-out target interactions')

    shape = None
    edges = {}
    for b in order:
        rows, cols, shape = read_sparse_pairs(files[b], shape)
        edges[b] = torch.from_numpy(np.stack([rows, cols]))
    num_users, num_items = shape
    t_rows, t_cols, _ = read_sparse_pairs(test_path, shape)
    test_keys = np.unique(t_rows * num_items + t_cols)
    if test_keys.size < t_rows.size:
        log.info('%s: %d repeated test entries read once', test_path,
                 t_rows.size - test_keys.size)
    if test_keys.size == 0:
        raise ValueError(f'{test_path}: holds no test interactions')
    target = order[-1]
    train_keys = edges[target][0].numpy() * num_items + edges[target][1].numpy()
    seen = np.isin(test_keys, train_keys)
    if seen.any():
        k = int(test_keys[seen][0])
        raise ValueError(
            f'{test_path}: {int(seen.sum())} test pairs are also training pairs in '
            f'{files[target].name} (first: user {k // num_items}, item {k % num_items}); '
            'held-out pairs must be unseen in training')
    test = torch.from_numpy(np.stack([test_keys // num_items, test_keys % num_items]))
    data = make_multiplex(num_users, num_items, order, edges, test=test, name=name)
    removed = deduplicate(data)
    if any(removed.values()):
        log.info('%s: removed duplicate training pairs per behavior: %s', directory, removed)
    # a validation split built like the test: where no test item was touched by its user in
    # training, the held-out pairs leave the auxiliary behaviors too (else validation
    # rewards the user's own viewed / carted items, which the test never asks for)
    unseen = shortcut_shares(data, 'test')['any'] == 0
    held = holdout_validation(data, seed, unseen=unseen)
    log.info('%s: SSLRec reads %s as validation too; held out one seeded (seed=%d) random '
             'training %r interaction per user with at least two as validation instead: %d '
             'pairs%s', directory, TEST_FILE, seed, target, held,
             ' (like the test, unseen in training: also removed from every other behavior)'
             if unseen else '')
    validate(data)
    return data


def resolve_sslrec_dir(root: PathLike | None, name: str) -> Path:
    """The SSLRec folder of dataset ``name`` under ``root``: ``root/<name>-sslrec``,
    ``root/<name>``, ``root/<SSLRec's name>`` (e.g. ``retail_rocket``) or ``root`` itself."""
    if root is None:
        raise FileNotFoundError(f'dataset {name!r} needs root=<folder holding {name}-sslrec/ '
                                f'with {TRAIN_PREFIX}<behavior>{TRAIN_SUFFIX} and {TEST_FILE}>')
    root = Path(root)
    candidates = [root / f'{name}-sslrec', root / name]
    official = sslrec_name(name)
    if official and official != name:
        candidates.append(root / official)
    candidates.append(root)
    for c in candidates:
        if c.is_dir() and behavior_files(c):
            return c
    raise FileNotFoundError(f'dataset {name!r}: no SSLRec files ({TRAIN_PREFIX}<behavior>'
                            f'{TRAIN_SUFFIX}, {TEST_FILE}) in any of '
                            f'{[str(c) for c in candidates]}')


def sslrec_entry(root: PathLike | None = None, *, behaviors=None, seed: int = 0,
                 name: str | None = None, **kwargs) -> HeteroData:
    """``load_dataset('sslrec', root=FOLDER, behaviors=[...])``: any folder in SSLRec's format
    (``path=...`` may stand for ``root``)."""
    folder = kwargs.pop('path', None) or root
    if kwargs:
        raise TypeError(f"unexpected arguments for dataset 'sslrec': {sorted(kwargs)}")
    if folder is None:
        raise FileNotFoundError("dataset 'sslrec' needs root=<folder with "
                                f"{TRAIN_PREFIX}<behavior>{TRAIN_SUFFIX} and {TEST_FILE}>")
    return load_sslrec(folder, behaviors=behaviors, name=name, seed=seed)


def retailrocket_entry(root: PathLike | None = None, *, behaviors=None, seed: int = 0,
                       **kwargs) -> HeteroData:
    """RetailRocket in SSLRec's files (root/retailrocket-sslrec, root/retailrocket or root)."""
    if kwargs:
        raise TypeError(f"unexpected arguments for dataset 'retailrocket': {sorted(kwargs)}")
    return load_sslrec(resolve_sslrec_dir(root, 'retailrocket'), behaviors=behaviors,
                       name='retailrocket', seed=seed)


__all__ = ['SSLREC_BEHAVIORS', 'behavior_files', 'load_sslrec', 'read_sparse_pairs',
           'resolve_sslrec_dir', 'sslrec_name']
