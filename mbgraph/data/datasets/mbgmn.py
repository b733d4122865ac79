"""The MB-GMN / KHGT / PKEF pickle format (Taobao, Beibei, Tmall): :func:`load_mbgmn`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch_geometric.data import HeteroData

from ..multiplex import deduplicate, holdout_validation, make_multiplex, validate
from ._base import DataFormatError, PathLike, _edge, resolve_order
from .pickles import safe_unpickle

log = logging.getLogger(__package__)

#: Behavior orders (upstream -> downstream, last = target) of the public MB-GMN datasets.
MBGMN_BEHAVIORS: Dict[str, List[str]] = {
    'taobao': ['pv', 'cart', 'buy'],
    'beibei': ['pv', 'cart', 'buy'],
    'tmall': ['click', 'collect', 'cart', 'buy'],
}


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
    order = resolve_order(directory, present, behaviors, MBGMN_BEHAVIORS.get(name),
                          lambda b: f'trn_{b}', dataset=name)
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
