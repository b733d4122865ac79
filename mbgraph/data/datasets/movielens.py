"""MovieLens ml-latest-small read as dislike / neutral / tag / like."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from torch_geometric.data import HeteroData

from ..multiplex import ITEM, USER, make_multiplex
from ._base import PathLike, _csv_rows, _edge, _finish, _leave_one_out
from .logs import InteractionLog

log = logging.getLogger(__package__)

MOVIELENS_BEHAVIORS = ['dislike', 'neutral', 'tag', 'like']


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


def read_movielens_log(directory: PathLike, with_tags: bool = True) -> InteractionLog:
    """The MovieLens (ml-latest-small) interactions as a time-ordered multi-behavior log.

    ``ratings.csv`` rows become ``dislike`` (rating <= 2), ``neutral`` (2 < rating < 4) or
    ``like`` (rating >= 4); with ``with_tags`` every ``tags.csv`` row is a ``tag`` interaction.

    Returns an :class:`~mbgraph.data.datasets.logs.InteractionLog`: ``user``, ``item``
    (contiguous ids), ``behavior`` (int code into ``behaviors``), ``timestamp`` (int64
    seconds) and ``rating`` (float, NaN for tags), sorted by user, then timestamp, then file
    order (ratings.csv rows before tags.csv rows); ``behaviors`` (names, upstream ->
    downstream, target ``'like'`` last) and ``user_raw_id`` / ``item_raw_id`` (int64 arrays:
    raw userId / movieId of each contiguous id, in sorted order). Repeated (user, item) pairs
    (several tags on one movie) are kept here; :func:`load_movielens` removes them.
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
    return InteractionLog(
        user=u[order].astype(np.int64),
        item=i[order].astype(np.int64),
        behavior=np.asarray(acts, dtype=np.int64)[order],
        timestamp=t[order],
        rating=np.asarray(ratings, dtype=np.float64)[order],
        behaviors=behaviors,
        user_raw_id=user_raw,
        item_raw_id=item_raw,
    )


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
    names = ml.behaviors
    order = list(names) if behaviors is None else [str(b) for b in behaviors]
    unknown = [b for b in order if b not in names]
    if unknown:
        raise ValueError(f'unknown MovieLens behaviors {unknown}; available: {names}')
    u, i, b = ml.user, ml.item, ml.behavior
    num_users, num_items = ml.num_users, ml.num_items
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
    data[USER].raw_id = ml.user_raw_id.tolist()
    data[ITEM].raw_id = ml.item_raw_id.tolist()
    log.info('MovieLens: leave-one-out by timestamp on %r: %d test, %d validation pairs',
             order[-1], test.size, val.size)
    return _finish(data)


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
