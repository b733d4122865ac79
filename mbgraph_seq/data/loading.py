"""Loading an interaction log into per-user event sequences.

A log is four aligned arrays (user, item, behavior, timestamp), one entry per event.
:func:`log_arrays` checks and converts them (integer ids, behavior codes from codes or names,
finite times, ids inside their ranges); :func:`group_by_user` orders the events of every user
chronologically and returns them in CSR layout (user ``u``'s events are ``ptr[u]:ptr[u+1]``).
:func:`event_pairs` reads the distinct (user, item) pairs of ranges of those sequences;
:func:`sslrec_log` and :func:`synthetic_log` read the logs that
:meth:`~mbgraph_seq.data.SequenceDataset.from_sslrec` and
:meth:`~mbgraph_seq.data.SequenceDataset.synthetic` build sequences from.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

TIE_ORDERS = ('log', 'shuffle')
ArrayLike = Union[np.ndarray, Tensor, Sequence]
#: (users, items, behavior codes, timestamps) of a log, one entry per event
LogArrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _as_int_array(values: ArrayLike, what: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f'{what} must be one-dimensional, got shape {arr.shape}')
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            return arr.astype(np.int64)
        raise ValueError(f'{what} must hold integer ids, got dtype {arr.dtype}')
    return arr.astype(np.int64)


def _behavior_codes(behaviors: ArrayLike, names: Sequence[str]) -> np.ndarray:
    """Behavior codes ``0..K-1`` from integer codes or behavior names."""
    if isinstance(behaviors, Tensor):
        behaviors = behaviors.detach().cpu().numpy()
    arr = np.asarray(behaviors)
    if arr.ndim != 1:
        raise ValueError(f'behaviors must be one-dimensional, got shape {arr.shape}')
    if arr.size and arr.dtype.kind in 'OUS':
        code = {b: k for k, b in enumerate(names)}
        unknown = sorted({str(b) for b in arr.tolist() if b not in code})
        if unknown:
            raise ValueError(f'unknown behaviors {unknown[:10]} in the log; behavior_names are '
                             f'{list(names)}')
        return np.fromiter((code[b] for b in arr.tolist()), dtype=np.int64, count=arr.size)
    arr = _as_int_array(arr, 'behaviors')
    bad = (arr < 0) | (arr >= len(names))
    if bad.any():
        raise ValueError(f'unknown behavior codes {sorted(set(arr[bad].tolist()))[:10]}: codes '
                         f'must index behavior_names {list(names)} (0..{len(names) - 1})')
    return arr



def _timed_entries(path) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Tuple[int, int]]:
    """(rows, cols, values, shape) of the non-zero entries of a pickled scipy CSR / COO
    matrix, values as float64 (event times for :meth:`SequenceDataset.from_sslrec`)."""
    import scipy.sparse

    from mbgraph.data.datasets import safe_unpickle
    m = safe_unpickle(path)
    if not isinstance(m, (scipy.sparse.csr_matrix, scipy.sparse.coo_matrix)):
        raise ValueError(f'{path}: expected a pickled scipy.sparse csr_matrix or coo_matrix, '
                         f'got {type(m).__name__}')
    m = m.tocoo()
    values = np.asarray(m.data, dtype=np.float64)
    keep = values != 0
    if not np.isfinite(values).all():
        raise ValueError(f'{path}: matrix values must be finite event times')
    return (np.asarray(m.row, dtype=np.int64)[keep], np.asarray(m.col, dtype=np.int64)[keep],
            values[keep], (int(m.shape[0]), int(m.shape[1])))



def log_arrays(users: ArrayLike, items: ArrayLike, behaviors: ArrayLike,
               timestamps: ArrayLike, names: Sequence[str], num_users: Optional[int] = None,
               num_items: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray,
                                                         np.ndarray, int, int]:
    """The log as ``(u, i, b, t, num_users, num_items)``: int64 ids and behavior codes into
    ``names``, float64 times, the id ranges (default: max id + 1). Raises ``ValueError`` naming
    the first bad row (a non-finite time, an id outside its range) or the mismatched
    lengths."""
    u = _as_int_array(users, 'users')
    i = _as_int_array(items, 'items')
    b = _behavior_codes(behaviors, names)
    t = np.asarray(timestamps.detach().cpu().numpy() if isinstance(timestamps, Tensor)
                   else timestamps, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f'timestamps must be one-dimensional, got shape {t.shape}')
    n = u.size
    if not (i.size == b.size == t.size == n):
        raise ValueError(f'users, items, behaviors and timestamps must have the same length, '
                         f'got {u.size}, {i.size}, {b.size}, {t.size}')
    if n and not np.isfinite(t).all():
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise ValueError(f'timestamp of log row {bad} is {t[bad]}: timestamps must be finite')
    num_users = int(u.max() + 1 if n else 0) if num_users is None else int(num_users)
    num_items = int(i.max() + 1 if n else 0) if num_items is None else int(num_items)
    for arr, lim, kind in ((u, num_users, 'user'), (i, num_items, 'item')):
        if n and (arr.min() < 0 or arr.max() >= lim):
            bad = int(np.flatnonzero((arr < 0) | (arr >= lim))[0])
            raise ValueError(f'log row {bad} has {kind} id {arr[bad]} outside '
                             f'[0, num_{kind}s={lim})')
    return u, i, b, t, num_users, num_items


def group_by_user(u: np.ndarray, i: np.ndarray, b: np.ndarray, t: np.ndarray,
                  num_users: int, *, sort: bool = True, tie_order: str = 'log',
                  seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          np.ndarray]:
    """The events grouped by user, each user's in time order: ``(ptr, u, i, b, t)`` with the
    arrays reordered and ``ptr`` the ``[num_users + 1]`` CSR pointers.

    ``sort=True`` sorts each user's events by time (stable: ties keep log order); ``sort=False``
    keeps the log order inside a user and raises ``ValueError`` at the first event earlier than
    the one before it. ``tie_order='shuffle'`` then puts events of one user with equal times in
    a random order drawn from ``seed``."""
    n = u.size
    row = np.arange(n)
    if sort:
        order = np.lexsort((row, t, u))
    else:
        order = np.lexsort((row, u))  # group users, keep log order inside a user
        tu, uu = t[order], u[order]
        back = (uu[1:] == uu[:-1]) & (tu[1:] < tu[:-1])
        if back.any():
            k = int(np.flatnonzero(back)[0]) + 1
            raise ValueError(
                f'unsorted timestamps for user {uu[k]}: log row {order[k]} has time '
                f'{tu[k]:g} after log row {order[k - 1]} with time {tu[k - 1]:g}; pass '
                'sort=True to sort each user\'s events by time (ties keep log order)')
    if tie_order == 'shuffle':
        # a random key below the time: only events of one user with equal times move
        key = np.random.default_rng(seed).permutation(n)
        order = np.lexsort((key, t, u))
    u, i, b, t = u[order], i[order], b[order], t[order]
    ptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(u, minlength=num_users), out=ptr[1:])
    return ptr, u, i, b, t


def event_pairs(ptr: np.ndarray, items: np.ndarray, behaviors: np.ndarray, num_items: int,
                lo: np.ndarray, hi: np.ndarray,
                behavior: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(users, items) of the events at positions ``[lo[u], hi[u])`` of every user's sequence
    (CSR layout ``ptr``; optionally of one behavior code), duplicates removed, sorted by
    (user, item)."""
    num_users = ptr.size - 1
    length = np.maximum(hi - lo, 0)
    users = np.repeat(np.arange(num_users), length)
    first = np.repeat(ptr[:-1] + lo - np.cumsum(length) + length, length)
    idx = first + np.arange(users.size)
    if behavior is not None:
        keep = behaviors[idx] == behavior
        users, idx = users[keep], idx[keep]
    keys = np.unique(users * num_items + items[idx])
    return keys // num_items, keys % num_items


def sslrec_log(directory: Union[str, os.PathLike], behaviors: Optional[Sequence[str]] = None
               ) -> Tuple[LogArrays, List[str], Tuple[int, int]]:
    """The events of an SSLRec multi-behavior folder whose matrix values are event times (see
    :meth:`~mbgraph_seq.data.SequenceDataset.from_sslrec`): ``((u, i, b, t), order, shape)``
    with ``order`` the behavior names (target last) and ``shape`` ``(num_users,
    num_items)``."""
    from mbgraph.data.datasets._base import resolve_order
    from mbgraph.data.sslrec import (
        SSLREC_ORDERS,
        TEST_FILE,
        TRAIN_PREFIX,
        TRAIN_SUFFIX,
        behavior_files,
    )
    directory = Path(directory)
    files = behavior_files(directory)
    try:   # the graph loader's rule: given, else the order the files agree on
        order = resolve_order(directory, list(files), behaviors, None,
                              lambda b: f'{TRAIN_PREFIX}{b}{TRAIN_SUFFIX}',
                              orders=SSLREC_ORDERS)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f'{directory}: expected train_mat_<behavior>.pkl files of known '
                         f'order (found {sorted(files)}); pass behaviors=[..., target] '
                         f'({e})') from None
    parts = [(k, files[b]) for k, b in enumerate(order)]
    if (directory / TEST_FILE).is_file():
        parts.append((len(order) - 1, directory / TEST_FILE))
    cols = [[], [], [], []]
    shape = None
    for code, path in parts:
        u, i, t, shape_ = _timed_entries(path)
        if shape is not None and shape_ != shape:
            raise ValueError(f'{path}: shape {shape_} differs from {shape}')
        shape = shape_
        for c, v in zip(cols, (u, i, np.full(u.size, code), t)):
            c.append(v)
    u, i, b, t = (np.concatenate(c) for c in cols)
    if t.size and np.all(t == 1):
        raise ValueError(f'{directory}: every matrix value is 1: the files hold no event '
                         'times, and sequences need them')
    return (u, i, b, t), order, shape


def synthetic_log(num_users: int = 1000, num_items: int = 600, seed: int = 0
                  ) -> Tuple[LogArrays, List[str]]:
    """The events of :func:`mbgraph.data.datasets.synthetic`'s cascading graph with seeded
    times (see :meth:`~mbgraph_seq.data.SequenceDataset.synthetic`): ``((u, i, b, t),
    names)``."""
    from mbgraph.data.datasets import synthetic
    from mbgraph.data.multiplex import edge_type, split_edge_index
    graph = synthetic(num_users=num_users, num_items=num_items, seed=seed)
    names = list(graph.behaviors)
    parts = [graph[edge_type(b)].edge_index for b in names]
    codes = [np.full(p.size(1), k) for k, p in enumerate(parts)]
    for split in ('val', 'test'):
        held = split_edge_index(graph, split)
        parts.append(held)
        codes.append(np.full(held.size(1), len(names) - 1))
    ei = torch.cat(parts, dim=1).numpy()
    code = np.concatenate(codes)
    rng = np.random.default_rng(seed)
    # the user views item i at a random time, carts it a random delay later and buys it
    # another delay after that: view < cart < buy per item, other items interleaved
    shape = (num_users, num_items)
    meet = rng.random(shape)
    delay = rng.exponential(0.1, (len(names),) + shape).cumsum(axis=0)
    times = meet[ei[0], ei[1]] + np.where(code > 0, delay[np.maximum(code - 1, 0), ei[0],
                                                          ei[1]], 0.0)
    return (ei[0], ei[1], code, times), names


__all__ = ['TIE_ORDERS', 'ArrayLike', 'LogArrays', 'log_arrays', 'group_by_user',
           'event_pairs', 'sslrec_log', 'synthetic_log']
