r"""Multi-behavior interaction logs as per-user sequences.

A :class:`SequenceDataset` turns a time-ordered log of ``(user, item, behavior, timestamp)``
events into one chronological sequence per user and derives from it everything the sequence
models, the shared :class:`mbgraph.training.Trainer` and the evaluators of
:mod:`mbgraph.evaluation` need:

* **leave-one-out on the target behavior** (the last behavior name): for every user with at
  least ``min_target`` target interactions, the last target interaction is the *test* event and
  the target interaction before it the *validation* event (DPCPL sec. 5.1.4, HMAR, MB-STR). The
  input for an event is the user's history strictly before it, so the test input contains the
  validation item. Events after the test event are in the future of every prediction and are
  never used as input (their number is logged).
* **training prefixes**: a user's events before its validation event (its whole sequence when
  it has no held-out events). A training sequence ``x_1..x_n`` gives inputs ``x_1..x_{n-1}`` and
  next-item targets ``x_2..x_n`` (Kang & McAuley 2018), with the next event's behavior.
* **padding**: sequences are LEFT padded to ``max_len`` positions (most recent event last);
  item and behavior ids are shifted by one so that ``0`` is padding.
* **truncation** is explicit: with ``truncate=True`` (default) a history longer than
  ``max_len`` keeps its most recent ``max_len`` events (the number of users affected is logged);
  with ``truncate=False`` such a history raises ``ValueError`` naming the user and its length.
* the DPCPL **pre-train / prompt-tune time split** (:meth:`SequenceDataset.pretrain_finetune_split`)
  and **user statistics** for its prompts (:meth:`SequenceDataset.user_statistics`).
* the **mbgraph views**: :meth:`~SequenceDataset.split_pairs`,
  :meth:`~SequenceDataset.history_pairs` (for :class:`~mbgraph.evaluation.SampledEvaluator`) and
  :meth:`~SequenceDataset.to_multiplex` (for :class:`~mbgraph.evaluation.FullRankingEvaluator`).

"Training data" (statistics, negative-sampling exclusions, the multiplex graph's training
edges) always means a user's events before its validation event, counted from the user's first
event, so no validation or test interaction leaks into it.

Example::

    >>> import numpy as np
    >>> ds = SequenceDataset.from_log(
    ...     users=np.array([0, 0, 0, 0, 0]), items=np.array([3, 1, 2, 0, 4]),
    ...     behaviors=np.array([0, 1, 1, 0, 1]), timestamps=np.array([1, 2, 3, 4, 5]),
    ...     behavior_names=['click', 'buy'], num_users=1, num_items=5, max_len=4)
    >>> ds.split_pairs('test').tolist(), ds.split_pairs('val').tolist()
    ([[0], [4]], [[0], [2]])
    >>> ds.eval_inputs('test').items.tolist()   # item id + 1, left padded
    [[4, 2, 3, 1]]
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mbgraph.data.multiplex import make_multiplex
from mbgraph.data.sampling import InteractionSet, batch_bounds, sample_negatives

log = logging.getLogger(__name__)

SPLITS = ('val', 'test')
TIE_ORDERS = ('log', 'shuffle')
ArrayLike = Union[np.ndarray, Tensor, Sequence]


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------

@dataclass
class SequenceBatch:
    """A batch of left-padded behavior-aware sequences.

    All tensors are ``LongTensor`` unless said otherwise; ids are shifted by one so that ``0``
    is padding; the most recent event is in the last column.

    Attributes:
        users: ``[B]`` user ids (0-based).
        items: ``[B, M]`` item id + 1 of each input event, 0 = padding.
        behaviors: ``[B, M]`` behavior index + 1 of each input event, 0 = padding.
        mask: ``[B, M]`` bool, True at real events.
        pos: ``[B, M]`` item id + 1 of the event that follows each input position (the
            next-item target), 0 where there is none (padding; evaluation inputs).
        pos_behaviors: ``[B, M]`` behavior index + 1 of that next event, 0 where none. In
            evaluation inputs the last column holds the target behavior (the behavior whose
            item is being predicted) and the rest is 0.
        neg: ``[B, M, n_neg]`` sampled negative item ids + 1 per target position (items the
            user never interacted with in its training data), 0 where there is no target.
        timestamps: ``[B, M]`` float64 event times (exact for integer seconds; 0 at padding),
            or None.
        features: ``[B, F]`` float user features (statistics, then attributes), or None.
    """
    users: Tensor
    items: Tensor
    behaviors: Tensor
    mask: Tensor
    pos: Tensor
    pos_behaviors: Tensor
    neg: Tensor
    timestamps: Optional[Tensor] = None
    features: Optional[Tensor] = None

    def __len__(self) -> int:
        return int(self.users.numel())

    @property
    def max_len(self) -> int:
        """Number of positions ``M``."""
        return int(self.items.size(1))

    def _map(self, fn) -> 'SequenceBatch':
        return SequenceBatch(**{f.name: (None if getattr(self, f.name) is None
                                         else fn(getattr(self, f.name)))
                                for f in fields(self)})

    def to(self, device, non_blocking: bool = False) -> 'SequenceBatch':
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def index_select(self, rows: Tensor) -> 'SequenceBatch':
        """The rows ``rows`` (a LongTensor of row positions) of every tensor."""
        rows = rows.to(self.users.device)
        return self._map(lambda t: t.index_select(0, rows))

    def last_targets(self, model: str) -> Tuple[Tensor, Tensor, Tensor]:
        """The one target per row (last column) of a prefix batch (``train_source(prefixes=
        ...)``): ``pos`` ``[B]``, ``pos_behaviors`` ``[B]``, ``neg`` ``[B, n]`` (ids + 1), for
        encoders that are not causal. ``model`` says why, in the error raised when the batch
        has targets elsewhere (a full-sequence batch, whose later targets such an encoder
        would see)."""
        if bool((self.pos[:, :-1] > 0).any()):
            raise ValueError(f'{model} is not causal: train it on prefix batches '
                             "(dataset.train_source(prefixes='all' or an int)), whose only "
                             'target is in the last column')
        pos = self.pos[:, -1]
        if not bool((pos > 0).all()):
            raise ValueError('every row of a prefix batch needs a target in its last column')
        if self.neg.size(-1) == 0:
            raise ValueError('the batch has no negative items (neg has width 0)')
        return pos, self.pos_behaviors[:, -1], self.neg[:, -1]

    def select_users(self, users: Tensor) -> 'SequenceBatch':
        """The rows of ``users`` (user ids) in a batch whose ``users`` are sorted and unique, as
        :meth:`SequenceDataset.eval_inputs` returns. Raises ``KeyError`` naming the users that
        have no row (e.g. scoring a user without a held-out event of the split)."""
        users = users.to(self.users.device).long()
        if self.users.numel() == 0:
            raise KeyError(f'no input sequence for users {users[:5].tolist()}: the batch is empty')
        row = torch.searchsorted(self.users, users).clamp_(max=self.users.numel() - 1)
        missing = self.users[row] != users
        if bool(missing.any()):
            raise KeyError(f'no input sequence for users {users[missing][:5].tolist()} '
                           f'({int(missing.sum())} in all): they have no held-out event in the '
                           'split these inputs were built for')
        return self.index_select(row)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

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


def _left_pad(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: int,
              shift: int = 0, fill=0) -> np.ndarray:
    """Rows ``values[lo[r]:hi[r]]`` (keeping at most the last ``width``), left padded with
    ``fill`` to ``[R, width]``, each value plus ``shift``."""
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    length = np.minimum(hi - lo, width)
    col = np.arange(width, dtype=np.int64)
    valid = col[None, :] >= (width - length)[:, None]
    src = hi[:, None] - width + col[None, :]
    out = np.full((lo.size, width), fill, dtype=values.dtype)
    out[valid] = values[src[valid]] + shift
    return out


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


def _filter_min_interactions(u, i, b, t, num_users: int, num_items: int, k: int, meta):
    """The events of the users and items that keep at least ``k`` events once the others are
    gone (repeated to a fixed point), with both renumbered contiguously (old order kept) and
    ``meta``'s raw ids narrowed to the survivors; also returns the old ids of the kept
    users."""
    keep = np.ones(u.size, dtype=bool)
    while True:
        uc = np.bincount(u[keep], minlength=num_users)
        ic = np.bincount(i[keep], minlength=num_items)
        drop = keep & ((uc[u] < k) | (ic[i] < k))
        if not drop.any():
            break
        keep &= ~drop
    users = np.flatnonzero(np.bincount(u[keep], minlength=num_users) > 0)
    items = np.flatnonzero(np.bincount(i[keep], minlength=num_items) > 0)
    log.info('min_interactions=%d: %d of %d users, %d of %d items and %d of %d events kept',
             k, users.size, num_users, items.size, num_items, int(keep.sum()), u.size)
    if users.size == 0:
        raise ValueError(f'min_interactions={k}: no user and item keep {k} events')
    new_u = np.full(num_users, -1, dtype=np.int64)
    new_u[users] = np.arange(users.size)
    new_i = np.full(num_items, -1, dtype=np.int64)
    new_i[items] = np.arange(items.size)
    meta = dict(meta)
    for key, old in (('user_raw_id', users), ('item_raw_id', items)):
        raw = meta.get(key)
        meta[key] = old.copy() if raw is None else np.asarray(raw)[old]
    return (new_u[u[keep]], new_i[i[keep]], b[keep], t[keep], int(users.size), int(items.size),
            meta, users)


# --------------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------------

class SequenceDataset:
    """Per-user behavior-aware sequences with leave-one-out splits on the target behavior.

    Build it with :meth:`from_log` or :meth:`from_movielens` (see the module docstring for the
    protocol). Internally every user's events are stored chronologically in CSR layout
    (``ptr[u]:ptr[u+1]``); a user's *window* ``[start, end)`` (absolute positions in its
    sequence) bounds what models see (the whole sequence, or one side of a
    :meth:`pretrain_finetune_split`), and ``val_pos`` / ``test_pos`` hold the positions of its
    held-out events (-1 when it has none).

    Attributes:
        behavior_names: behavior names, upstream -> downstream; the last is the target.
        target: the target behavior's name.
        num_users, num_items, num_behaviors, max_len: sizes.
        truncate: whether histories longer than ``max_len`` keep their last ``max_len`` events.
        user_attributes: optional ``[num_users, A]`` float attributes (DPCPL's ``a^u``).
        user_raw_id, item_raw_id: optional raw ids of the contiguous ids.
    """

    def __init__(self, *, ptr: np.ndarray, items: np.ndarray, behaviors: np.ndarray,
                 timestamps: np.ndarray, start: np.ndarray, end: np.ndarray,
                 val_pos: np.ndarray, test_pos: np.ndarray, behavior_names: Sequence[str],
                 num_users: int, num_items: int, max_len: int = 50, truncate: bool = True,
                 user_attributes: Optional[Tensor] = None, seed: int = 0,
                 user_raw_id: Optional[np.ndarray] = None,
                 item_raw_id: Optional[np.ndarray] = None, name: Optional[str] = None):
        if max_len < 1:
            raise ValueError(f'max_len must be >= 1, got {max_len}')
        self.ptr, self.items, self.behaviors, self.timestamps = ptr, items, behaviors, timestamps
        self.start, self.end, self.val_pos, self.test_pos = start, end, val_pos, test_pos
        self.behavior_names: List[str] = [str(b) for b in behavior_names]
        self.target: str = self.behavior_names[-1]
        self.target_index: int = len(self.behavior_names) - 1
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.num_behaviors = len(self.behavior_names)
        self.max_len, self.truncate, self.seed = int(max_len), bool(truncate), int(seed)
        self.user_raw_id, self.item_raw_id, self.name = user_raw_id, item_raw_id, name
        if user_attributes is not None:
            user_attributes = torch.as_tensor(user_attributes, dtype=torch.float32)
            if user_attributes.dim() != 2 or user_attributes.size(0) != self.num_users:
                raise ValueError(f'user_attributes must have shape [num_users={self.num_users}, '
                                 f'A], got {tuple(user_attributes.shape)}')
        self.user_attributes = user_attributes
        #: how the log was read (from_log's min_interactions, tie_order, min_target)
        self.options: Dict[str, object] = {}
        self._stats: Optional[Tensor] = None
        self._eval_cache: Dict[str, SequenceBatch] = {}
        self._check_lengths()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_log(cls, users: ArrayLike, items: ArrayLike, behaviors: ArrayLike,
                 timestamps: ArrayLike, behavior_names: Sequence[str],
                 num_users: Optional[int] = None, num_items: Optional[int] = None,
                 max_len: int = 50, truncate: bool = True, seed: int = 0, *,
                 sort: bool = True, min_target: int = 3, min_interactions: int = 0,
                 tie_order: str = 'log', user_attributes: Optional[Tensor] = None,
                 **meta) -> 'SequenceDataset':
        """Build the dataset from an interaction log.

        Args:
            users, items: 0-based integer ids, one entry per event.
            behaviors: behavior codes ``0..K-1`` indexing ``behavior_names``, or the names.
            timestamps: event times (any real numbers). Events of a user with equal times keep
                their order in the log (``tie_order='log'``) or are shuffled.
            behavior_names: ``K`` names, upstream -> downstream, the last is the target.
            num_users, num_items: id ranges (default: max id + 1).
            max_len: positions per sequence ``M``.
            truncate: ``True``: a history longer than ``max_len`` keeps its most recent
                ``max_len`` events; ``False``: such a history raises ``ValueError``.
            seed: default seed of :meth:`train_source`.
            sort: ``True`` sorts each user's events by time (stable); ``False`` requires each
                user's events to be in non-decreasing time order already (users may be
                interleaved) and raises ``ValueError`` naming the first violation.
            min_target: users with at least this many target events get a validation and a test
                event (3, as :func:`mbgraph.data.datasets.load_movielens`, so that a training
                target event remains); others are training-only.
            min_interactions: drop the users and the items with fewer events than this (every
                behavior counts; DPCPL sec. 5.1.1: "We filter out user and item data with fewer
                than 20 interactions"), repeated until every remaining user and item has that
                many (reading taken: the filtered data itself meets the condition; one pass
                would leave users below it after their rare items are gone). Users and items
                are renumbered contiguously in their old order; ``user_raw_id`` /
                ``item_raw_id`` keep the raw ids of the survivors (the old contiguous ids when
                none were given). 0 (default): keep everything.
            tie_order: the order of a user's events that share a timestamp. ``'log'``
                (default): their order in the log (ml-latest-small's ratings file lists a
                user's movies by movieId, so equal-second events come in movieId order, a
                pattern position-aware models can learn); ``'shuffle'``: a random order drawn
                from ``seed`` (``numpy.random.default_rng(seed)``: the same seed, the same
                order), events with different times untouched. With ``sort=False`` the log
                must still be in time order per user; only the ties are shuffled.
            user_attributes: optional ``[num_users, A]`` float user attributes.
            **meta: ``user_raw_id``, ``item_raw_id``, ``name`` kept on the dataset.
        """
        names = [str(b) for b in behavior_names]
        if len(names) == 0:
            raise ValueError('behavior_names is empty: at least the target behavior is needed')
        if len(set(names)) != len(names):
            raise ValueError(f'behavior names must be unique, got {names}')
        if min_target < 2:
            raise ValueError(f'min_target must be >= 2 (a validation and a test event), got '
                             f'{min_target}')
        if tie_order not in TIE_ORDERS:
            raise ValueError(f'tie_order must be one of {TIE_ORDERS}, got {tie_order!r}')
        if (isinstance(min_interactions, bool) or not isinstance(min_interactions,
                                                                 (int, np.integer))
                or min_interactions < 0):
            raise ValueError(f'min_interactions must be an integer >= 0, got '
                             f'{min_interactions!r}')
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
        if min_interactions > 0:
            u, i, b, t, num_users, num_items, meta, kept = _filter_min_interactions(
                u, i, b, t, num_users, num_items, int(min_interactions), meta)
            n = u.size
            if user_attributes is not None:
                user_attributes = torch.as_tensor(user_attributes)[torch.from_numpy(kept)]
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
        length = np.diff(ptr)

        # leave-one-out on the target: positions (within each user) of its last two target events
        target = len(names) - 1
        local = np.arange(n) - ptr[u]
        is_t = b == target
        t_users, t_local = u[is_t], local[is_t]
        t_count = np.bincount(t_users, minlength=num_users)
        val_pos = np.full(num_users, -1, dtype=np.int64)
        test_pos = np.full(num_users, -1, dtype=np.int64)
        if t_users.size:
            last = np.ones(t_users.size, dtype=bool)
            last[:-1] = t_users[1:] != t_users[:-1]
            eligible = t_count[t_users] >= min_target
            sel = last & eligible
            test_pos[t_users[sel]] = t_local[sel]
            before = np.zeros_like(sel)
            before[:-1] = sel[1:]
            val_pos[t_users[before]] = t_local[before]
        held = test_pos >= 0
        after = int((length - 1 - test_pos)[held].sum())
        if after:
            log.info('%d events come after their user\'s test event and are never used as input '
                     '(they are in the future of every prediction)', after)
        short = int(((t_count > 0) & (t_count < min_target)).sum())
        if short:
            log.info('%d users have 1..%d %r events: no held-out event, training only', short,
                     min_target - 1, names[-1])
        ds = cls(ptr=ptr, items=i, behaviors=b, timestamps=t,
                 start=np.zeros(num_users, dtype=np.int64), end=length.copy(),
                 val_pos=val_pos, test_pos=test_pos, behavior_names=names,
                 num_users=num_users, num_items=num_items, max_len=max_len, truncate=truncate,
                 user_attributes=user_attributes, seed=seed, **meta)
        ds.options = {'min_interactions': int(min_interactions), 'tie_order': tie_order,
                      'min_target': int(min_target)}
        return ds

    @classmethod
    def from_movielens(cls, directory: Union[str, os.PathLike], max_len: int = 50,
                       with_tags: bool = True, **kw) -> 'SequenceDataset':
        """MovieLens ml-latest-small as sequences of dislike / neutral / tag / like events (read
        by :func:`mbgraph.data.datasets.read_movielens_log`; target ``like``). Repeated tags of
        one movie are separate events. ``kw`` goes to :meth:`from_log`."""
        from mbgraph.data.datasets import read_movielens_log
        ml = read_movielens_log(directory, with_tags=with_tags)
        return cls.from_log(ml['user'], ml['item'], ml['behavior'], ml['timestamp'],
                            ml['behaviors'], num_users=len(ml['user_raw_id']),
                            num_items=len(ml['item_raw_id']), max_len=max_len,
                            user_raw_id=ml['user_raw_id'], item_raw_id=ml['item_raw_id'],
                            name='ml-latest-small', **kw)

    @classmethod
    def from_csv(cls, path: Union[str, os.PathLike], behaviors: Optional[Sequence[str]] = None,
                 max_len: int = 50, *, sep: Optional[str] = None,
                 columns: Sequence[Union[str, int]] = ('user', 'item', 'behavior', 'timestamp'),
                 **kw) -> 'SequenceDataset':
        """A delimited ``user, item, behavior, timestamp`` log (read by
        :func:`mbgraph.data.datasets.read_interaction_log`: raw ids remapped, behavior order
        from ``behaviors`` or a known order) as sequences. Sequences need the time column: a
        log without one raises ``ValueError``. ``kw`` goes to :meth:`from_log`."""
        from mbgraph.data.datasets import read_interaction_log
        log_ = read_interaction_log(path, behaviors, sep=sep, columns=columns)
        if log_['timestamp'] is None:
            raise ValueError(f'{path}: sequence models need a timestamp column (columns '
                             f'{list(columns)}); the file has none')
        return cls.from_log(log_['user'], log_['item'], log_['behavior'], log_['timestamp'],
                            log_['behaviors'], num_users=len(log_['user_raw_id']),
                            num_items=len(log_['item_raw_id']), max_len=max_len,
                            user_raw_id=log_['user_raw_id'], item_raw_id=log_['item_raw_id'],
                            name=kw.pop('name', Path(path).stem), **kw)

    @classmethod
    def from_sslrec(cls, directory: Union[str, os.PathLike],
                    behaviors: Optional[Sequence[str]] = None, max_len: int = 50,
                    **kw) -> 'SequenceDataset':
        """An SSLRec multi-behavior folder (``train_mat_<behavior>.pkl`` + ``test_mat.pkl``,
        e.g. ``retailrocket-sslrec``: view / cart / buy, 2,174 users, 30,113 items) as
        sequences, when its matrix values are event times (RetailRocket's are Unix seconds):
        every non-zero ``(user, item)`` of a behavior's matrix is one event at that time, the
        test matrix's entries buy events. The files keep one entry per (user, item, behavior),
        so repeats are not in the sequences. Leave-one-out then works as for every log (the
        last two target events by time), not on SSLRec's own test split. Matrices whose values
        are all 1 hold no times and raise ``ValueError``. Unpickling is restricted to
        scipy/numpy types (:func:`mbgraph.data.datasets.safe_unpickle`). ``behaviors``: their
        order, target last (default: SSLRec's known order of the files present); ``kw`` goes
        to :meth:`from_log`."""
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
        return cls.from_log(u, i, b, t, order, num_users=shape[0], num_items=shape[1],
                            max_len=max_len, name=kw.pop('name', directory.name), **kw)

    @classmethod
    def synthetic(cls, num_users: int = 1000, num_items: int = 600, max_len: int = 50,
                  seed: int = 0, **kw) -> 'SequenceDataset':
        """Sequences from :func:`mbgraph.data.datasets.synthetic`'s cascading graph (all its
        interactions, held-out buys included) with seeded times: each user meets its items in
        a random order and carts, then buys, an item after random delays, so view < cart < buy
        per item with other items in between. Needs no files (the CLI's default
        data for the sequence models). ``kw`` goes to :meth:`from_log`."""
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
        return cls.from_log(ei[0], ei[1], code, times, names, num_users=num_users,
                            num_items=num_items, max_len=max_len, seed=seed, name='synthetic',
                            **kw)

    def _replace(self, **changes) -> 'SequenceDataset':
        kw = dict(ptr=self.ptr, items=self.items, behaviors=self.behaviors,
                  timestamps=self.timestamps, start=self.start, end=self.end,
                  val_pos=self.val_pos, test_pos=self.test_pos,
                  behavior_names=self.behavior_names, num_users=self.num_users,
                  num_items=self.num_items, max_len=self.max_len, truncate=self.truncate,
                  user_attributes=self.user_attributes, seed=self.seed,
                  user_raw_id=self.user_raw_id, item_raw_id=self.item_raw_id, name=self.name)
        kw.update(changes)
        out = SequenceDataset(**kw)
        out.options = dict(self.options)
        return out

    # ------------------------------------------------------------------ basic views
    def __repr__(self) -> str:
        return (f'SequenceDataset({self.name or "log"}: {self.num_users} users, {self.num_items} '
                f'items, {self.items.size} events, behaviors {self.behavior_names}, '
                f'{int((self.test_pos >= 0).sum())} test users, max_len={self.max_len})')

    @property
    def num_events(self) -> int:
        return int(self.items.size)

    def _train_end(self) -> np.ndarray:
        """End (absolute position) of each user's training data: its validation event, or its
        window end when it has none."""
        return np.where(self.val_pos >= 0, self.val_pos, self.end)

    def _split_pos(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')
        return self.val_pos if split == 'val' else self.test_pos

    def _check_lengths(self) -> None:
        """With ``truncate=False`` raise if any input sequence is longer than ``max_len``."""
        # the longest input of a user: before its test event, or its training inputs (n - 1)
        longest = np.where(self.test_pos >= 0, self.test_pos - self.start,
                           self._train_end() - self.start - 1)
        over = longest > self.max_len
        if not over.any():
            return
        if not self.truncate:
            u = int(np.flatnonzero(over)[np.argmax(longest[over])])
            raw = '' if self.user_raw_id is None else f' (raw id {self.user_raw_id[u]})'
            raise ValueError(f'user {u}{raw} has a history of {int(longest[u])} events, longer '
                             f'than max_len={self.max_len}, and truncate=False '
                             f'({int(over.sum())} users are longer); raise max_len or pass '
                             'truncate=True to keep the most recent max_len events')
        log.info('%d users have histories longer than max_len=%d (longest %d): their most '
                 'recent %d events are kept', int(over.sum()), self.max_len,
                 int(longest.max()), self.max_len)

    def sequence(self, user: int) -> Dict[str, np.ndarray]:
        """The events of ``user`` inside its window: ``{'items', 'behaviors', 'timestamps'}``."""
        lo = self.ptr[user] + self.start[user]
        hi = self.ptr[user] + self.end[user]
        return {'items': self.items[lo:hi], 'behaviors': self.behaviors[lo:hi],
                'timestamps': self.timestamps[lo:hi]}

    # ------------------------------------------------------------------ splits / pairs
    def split_pairs(self, split: str) -> Tensor:
        """``[2, N]`` (user, item) pairs of the held-out ``split`` events ('val' or 'test'),
        sorted by user. Raises ``ValueError`` if the split is empty."""
        pos = self._split_pos(split)
        users = np.flatnonzero(pos >= 0)
        if users.size == 0:
            raise ValueError(f'the {split!r} split is empty: no user has the minimum number of '
                             f'{self.target!r} events for leave-one-out')
        items = self.items[self.ptr[users] + pos[users]]
        return torch.from_numpy(np.stack([users, items]).astype(np.int64))

    def _pairs(self, lo: np.ndarray, hi: np.ndarray,
               behavior: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(users, items) of the events at absolute positions ``[lo[u], hi[u])`` of every user
        (optionally of one behavior), duplicates removed."""
        length = np.maximum(hi - lo, 0)
        users = np.repeat(np.arange(self.num_users), length)
        first = np.repeat(self.ptr[:-1] + lo - np.cumsum(length) + length, length)
        idx = first + np.arange(users.size)
        if behavior is not None:
            keep = self.behaviors[idx] == behavior
            users, idx = users[keep], idx[keep]
        keys = np.unique(users * self.num_items + self.items[idx])
        return keys // self.num_items, keys % self.num_items

    def history_pairs(self) -> Tensor:
        """``[2, E]`` distinct (user, item) pairs of every event of every user (held-out events
        and everything before the window included): what sampled negatives must avoid."""
        u, i = self._pairs(np.zeros(self.num_users, dtype=np.int64), np.diff(self.ptr))
        return torch.from_numpy(np.stack([u, i]))

    def train_pairs(self, behavior: Optional[Union[str, int]] = None) -> Tensor:
        """``[2, E]`` distinct (user, item) training pairs (events before each user's validation
        event), of one behavior (name or index) or of all."""
        code = None
        if behavior is not None:
            code = self._behavior_index(behavior)
        u, i = self._pairs(np.zeros(self.num_users, dtype=np.int64), self._train_end(), code)
        return torch.from_numpy(np.stack([u, i]))

    def _behavior_index(self, behavior: Union[str, int]) -> int:
        if isinstance(behavior, str):
            if behavior not in self.behavior_names:
                raise ValueError(f'unknown behavior {behavior!r}; known: {self.behavior_names}')
            return self.behavior_names.index(behavior)
        if not 0 <= int(behavior) < self.num_behaviors:
            raise ValueError(f'behavior index {behavior} out of range 0..{self.num_behaviors - 1}')
        return int(behavior)

    def to_multiplex(self) -> HeteroData:
        """The dataset in mbgraph's multiplex schema: per behavior the distinct training pairs
        (events before each user's validation event), ``val`` / ``test`` pairs on the target.

        A held-out pair that also occurs as an earlier target training pair (a repeated target
        interaction with the same item) is removed from the training edges (a held-out positive
        must not be masked by :class:`~mbgraph.evaluation.FullRankingEvaluator`); the number
        removed is logged.
        """
        edges = {}
        for k, b in enumerate(self.behavior_names):
            edges[b] = self.train_pairs(k)
        val = self.split_pairs('val') if (self.val_pos >= 0).any() else None
        test = self.split_pairs('test') if (self.test_pos >= 0).any() else None
        held = [p for p in (val, test) if p is not None]
        if held:
            tgt = edges[self.target]
            hk = torch.cat([p[0] * self.num_items + p[1] for p in held])
            rep = torch.isin(tgt[0] * self.num_items + tgt[1], hk)
            if bool(rep.any()):
                log.warning('%d %r training pairs repeat a held-out pair of the same user and '
                            'are left out of the graph\'s training edges', int(rep.sum()),
                            self.target)
                edges[self.target] = tgt[:, ~rep]
        return make_multiplex(self.num_users, self.num_items, self.behavior_names, edges,
                              val=val, test=test, name=self.name)

    # ------------------------------------------------------------------ features
    def user_statistics(self) -> Tensor:
        r"""``[num_users, 2K - 1]`` float statistics of each user's training data (its events
        before the validation event, from its first event on; DPCPL sec. 4.3.1):

        * columns ``0..K-1``: :math:`\log(1 + n_k)`, the number of events of behavior ``k``;
        * columns ``K..2K-2``: the conversion ratio from behavior ``k`` to ``k+1``,
          :math:`|I_k \cap I_{k+1}| / |I_k|` with :math:`I_k` the distinct items of behavior
          ``k`` (0 when :math:`I_k` is empty).
        """
        # reading taken: "proportion of purchases made by adding to a cart" = share of the
        # items of behavior k that also reached behavior k+1
        if self._stats is not None:
            return self._stats
        K, U = self.num_behaviors, self.num_users
        zero = np.zeros(U, dtype=np.int64)
        end = self._train_end()
        length = end
        users = np.repeat(np.arange(U), length)
        idx = np.repeat(self.ptr[:-1], length) + (np.arange(users.size) -
                                                   np.repeat(np.cumsum(length) - length, length))
        beh = self.behaviors[idx]
        counts = np.zeros((U, K), dtype=np.float64)
        np.add.at(counts, (users, beh), 1.0)
        conv = np.zeros((U, max(K - 1, 0)), dtype=np.float64)
        sets = [self._pairs(zero, end, k) for k in range(K)]
        for k in range(K - 1):
            uk, ik = sets[k]
            un, inn = sets[k + 1]
            n_k = np.bincount(uk, minlength=U).astype(np.float64)
            both = np.isin(uk * self.num_items + ik, un * self.num_items + inn)
            n_both = np.bincount(uk[both], minlength=U).astype(np.float64)
            conv[:, k] = np.divide(n_both, n_k, out=np.zeros(U), where=n_k > 0)
        self._stats = torch.from_numpy(np.concatenate([np.log1p(counts), conv], 1)).float()
        return self._stats

    @property
    def num_statistics(self) -> int:
        return 2 * self.num_behaviors - 1

    @property
    def num_attributes(self) -> int:
        return 0 if self.user_attributes is None else int(self.user_attributes.size(1))

    @property
    def num_features(self) -> int:
        """Width of :attr:`SequenceBatch.features`: statistics then attributes."""
        return self.num_statistics + self.num_attributes

    def user_features(self) -> Tensor:
        """``[num_users, F]``: :meth:`user_statistics` followed by the user attributes."""
        stats = self.user_statistics()
        if self.user_attributes is None:
            return stats
        return torch.cat([stats, self.user_attributes], dim=1)

    # ------------------------------------------------------------------ model inputs
    def eval_inputs(self, split: str) -> SequenceBatch:
        """Inputs for every user with a held-out event in ``split`` (rows sorted by user id):
        the user's history strictly before that event, within its window (for 'test' the
        validation item is part of it), the most recent ``max_len`` events, left padded.

        ``pos`` and ``neg`` carry no targets (zeros, ``neg`` of width 0); ``pos_behaviors`` has
        the target behavior in its last column. Use :meth:`SequenceBatch.select_users` to pick
        the rows of an evaluator's users."""
        if split in self._eval_cache:
            return self._eval_cache[split]
        pos = self._split_pos(split)
        users = np.flatnonzero(pos >= 0)
        if users.size == 0:
            raise ValueError(f'the {split!r} split is empty: no user has the minimum number of '
                             f'{self.target!r} events for leave-one-out')
        lo = self.ptr[users] + self.start[users]
        hi = self.ptr[users] + pos[users]
        M = self.max_len
        items = torch.from_numpy(_left_pad(self.items, lo, hi, M, shift=1))
        beh = torch.from_numpy(_left_pad(self.behaviors, lo, hi, M, shift=1))
        times = torch.from_numpy(_left_pad(self.timestamps, lo, hi, M))
        pos_b = torch.zeros_like(items)
        pos_b[:, -1] = self.target_index + 1
        batch = SequenceBatch(
            users=torch.from_numpy(users.astype(np.int64)), items=items, behaviors=beh,
            mask=items > 0, pos=torch.zeros_like(items), pos_behaviors=pos_b,
            neg=torch.zeros(users.size, M, 0, dtype=torch.long), timestamps=times,
            features=self.user_features()[torch.from_numpy(users)])
        self._eval_cache[split] = batch
        return batch

    def train_source(self, batch_size: int = 256, num_negatives: int = 1,
                     seed: Optional[int] = None, *, prefixes: Optional[Union[int, str]] = None,
                     target_only: bool = False) -> 'SequenceTrainSource':
        """Batch source of next-item training samples for :class:`mbgraph.training.Trainer`
        (see :class:`SequenceTrainSource` for ``prefixes`` and ``target_only``); ``seed``
        defaults to the dataset's."""
        return SequenceTrainSource(self, batch_size=batch_size, num_negatives=num_negatives,
                                   seed=self.seed if seed is None else seed, prefixes=prefixes,
                                   target_only=target_only)

    # ------------------------------------------------------------------ DPCPL time split
    def pretrain_finetune_split(self, ratio: float = 0.6
                                ) -> Tuple['SequenceDataset', 'SequenceDataset']:
        """DPCPL's time split (sec. 5.1.1): per user, the first ``ratio`` of its events form the
        pre-training data, the rest the prompt-tuning data with the same held-out events.

        Returns ``(pretrain, finetune)`` datasets over the same users and items:

        * ``pretrain``: window ``[0, cut)``, no held-out events;
        * ``finetune``: window ``[cut, end)`` with the same validation/test events as ``self``.

        ``cut = floor(ratio * n)`` for a user with ``n`` events, lowered where needed so that at
        least one event precedes the validation event inside the fine-tuning window (the
        held-out events always stay on the fine-tuning side).
        """
        # reading taken: "first 60% of the data, based on timestamps" is applied per user
        if not 0.0 < ratio < 1.0:
            raise ValueError(f'ratio must be in (0, 1), got {ratio}')
        n = np.diff(self.ptr)
        cut = np.floor(ratio * n).astype(np.int64)
        held = self.val_pos >= 0
        cut = np.where(held, np.minimum(cut, self.val_pos - 1), cut)
        cut = np.maximum(cut, self.start)
        cut = np.minimum(cut, self.end)
        none = np.full(self.num_users, -1, dtype=np.int64)
        pre = self._replace(end=cut.copy(), val_pos=none, test_pos=none.copy(),
                            name=f'{self.name or "log"}[pretrain]')
        fine = self._replace(start=cut.copy(), name=f'{self.name or "log"}[finetune]')
        return pre, fine


class SequenceTrainSource:
    r"""Batches of next-item training samples (the batch-source contract of
    :class:`mbgraph.training.Trainer`), drawn from ``(seed, epoch)`` alone.

    The training sequences are the users' training prefixes (events before the validation
    event, inside the window) with at least two events. Two layouts:

    * ``prefixes=None`` (causal encoders such as SASRec): one sample per sequence and epoch. For
      a prefix ``x_1..x_n`` the inputs are the most recent ``max_len`` of ``x_1..x_{n-1}`` and
      ``pos`` / ``pos_behaviors`` hold the following event at every position.
    * ``prefixes='all'`` or an int ``r`` (encoders that are *not* causal, e.g. EBM's FFT filter,
      whose output at a position depends on later positions and would see the next item):
      each sample is a sequence cut before one of its events ``x_j``: the inputs are the most
      recent ``max_len`` events before ``x_j`` and the only target is ``x_j``, in the last
      column. ``'all'`` uses every cut once per epoch; ``r`` draws ``r`` cuts per sequence
      and epoch uniformly.

    With ``target_only=True`` only next events of the target behavior are targets (DPCPL
    eq 13's :math:`\mathcal{L}_{pred}`); other events stay in the inputs. ``num_negatives``
    negatives per target are drawn uniformly among the items the user has no training
    interaction with (held-out items may be drawn, so nothing about them leaks into training).
    """

    def __init__(self, dataset: SequenceDataset, batch_size: int = 256,
                 num_negatives: int = 1, seed: int = 0,
                 prefixes: Optional[Union[int, str]] = None, target_only: bool = False):
        if batch_size <= 0:
            raise ValueError(f'batch_size must be positive, got {batch_size}')
        if num_negatives < 1:
            raise ValueError(f'num_negatives must be >= 1, got {num_negatives}')
        if not (prefixes is None or prefixes == 'all' or
                (isinstance(prefixes, int) and not isinstance(prefixes, bool) and prefixes >= 1)):
            raise ValueError(f"prefixes must be None, 'all' or a positive int, got {prefixes!r}")
        self.dataset = ds = dataset
        self.batch_size, self.num_negatives = int(batch_size), int(num_negatives)
        self.seed, self.prefixes, self.target_only = int(seed), prefixes, bool(target_only)
        self.max_len = ds.max_len
        end = ds._train_end()
        n = end - ds.start
        users = np.flatnonzero(n >= 2)
        few = int(((n == 1)).sum())
        if few:
            log.info('%d users have a single training event and give no training sequence', few)
        lo = ds.ptr[users] + ds.start[users]
        hi = ds.ptr[users] + end[users]
        if target_only:  # keep sequences with at least one target event after their first
            tgt = (ds.behaviors == ds.target_index).astype(np.int64)
            csum = np.concatenate([[0], np.cumsum(tgt)])
            keep = csum[hi] - csum[lo + 1] > 0
            if not keep.all():
                log.info('%d training sequences have no %r event to predict and are not used',
                         int((~keep).sum()), ds.target)
            users, lo, hi = users[keep], lo[keep], hi[keep]
        if users.size == 0:
            raise ValueError('no training sequences: no user has at least two events before its '
                             'validation event' + (f' with a later {ds.target!r} event'
                                                   if target_only else ''))
        self.users_np, self.lo, self.hi = users, lo, hi
        self.features = ds.user_features()
        self.seen = InteractionSet(ds.train_pairs(), ds.num_items)
        if prefixes is None:
            M = ds.max_len
            self.items = torch.from_numpy(_left_pad(ds.items, lo, hi - 1, M, shift=1))
            self.behaviors = torch.from_numpy(_left_pad(ds.behaviors, lo, hi - 1, M, shift=1))
            self.timestamps = torch.from_numpy(_left_pad(ds.timestamps, lo, hi - 1, M))
            self.pos = torch.from_numpy(_left_pad(ds.items, lo + 1, hi, M, shift=1))
            self.pos_behaviors = torch.from_numpy(_left_pad(ds.behaviors, lo + 1, hi, M,
                                                            shift=1))
            if target_only:
                other = self.pos_behaviors != ds.target_index + 1
                self.pos[other] = 0
                self.pos_behaviors[other] = 0
            self.num_samples = int(users.size)
        else:
            # candidate cuts: absolute index j of the predicted event, lo < j < hi
            count = hi - lo - 1
            row = np.repeat(np.arange(users.size), count)
            j = np.repeat(lo + 1 - (np.cumsum(count) - count), count) + np.arange(row.size)
            if target_only:
                keep = ds.behaviors[j] == ds.target_index
                row, j = row[keep], j[keep]
            self.cut_row, self.cut_index = row, j
            self.cut_ptr = np.zeros(users.size + 1, dtype=np.int64)
            np.cumsum(np.bincount(row, minlength=users.size), out=self.cut_ptr[1:])
            self.num_samples = (int(j.size) if prefixes == 'all'
                                else int(users.size) * int(prefixes))

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    @property
    def num_sequences(self) -> int:
        return int(self.users_np.size)

    def generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))

    def _epoch_samples(self, g: torch.Generator) -> np.ndarray:
        """Per sample of the epoch: a sequence row (full layout) or a cut index (prefixes)."""
        if self.prefixes is None:
            return torch.randperm(self.num_samples, generator=g).numpy()
        if self.prefixes == 'all':
            return torch.randperm(self.num_samples, generator=g).numpy()
        rows = np.repeat(np.arange(self.num_sequences), int(self.prefixes))
        u = torch.rand(rows.size, generator=g, dtype=torch.float64).numpy()
        span = self.cut_ptr[rows + 1] - self.cut_ptr[rows]
        cut = self.cut_ptr[rows] + np.minimum((u * span).astype(np.int64), span - 1)
        perm = torch.randperm(cut.size, generator=g).numpy()
        return cut[perm]

    def _prefix_batch(self, cuts: np.ndarray):
        ds, M = self.dataset, self.max_len
        rows = self.cut_row[cuts]
        j = self.cut_index[cuts]
        lo = self.lo[rows]
        items = torch.from_numpy(_left_pad(ds.items, lo, j, M, shift=1))
        beh = torch.from_numpy(_left_pad(ds.behaviors, lo, j, M, shift=1))
        times = torch.from_numpy(_left_pad(ds.timestamps, lo, j, M))
        pos = torch.zeros_like(items)
        pos_b = torch.zeros_like(items)
        pos[:, -1] = torch.from_numpy(ds.items[j] + 1)
        pos_b[:, -1] = torch.from_numpy(ds.behaviors[j] + 1)
        return rows, items, beh, times, pos, pos_b

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[SequenceBatch]:
        """Yield the batches of ``epoch``; with ``world_size > 1`` each rank gets the rows
        ``rank::world_size`` of every global batch (bounds as
        :func:`mbgraph.data.sampling.batch_bounds`)."""
        g = self.generator(epoch)
        samples = self._epoch_samples(g)
        # the negatives of the whole epoch in one vectorised draw, in sample order
        if self.prefixes is None:
            rows = torch.from_numpy(samples)
            target = self.pos[rows] > 0
            tu = torch.from_numpy(self.users_np[samples]).view(-1, 1).expand_as(target)[target]
        else:
            tu = torch.from_numpy(self.users_np[self.cut_row[samples]])
        drawn = sample_negatives(tu, self.seen, self.dataset.num_items, g,
                                 num=self.num_negatives).view(-1, self.num_negatives) + 1
        if self.prefixes is None:
            epoch_neg = torch.zeros(samples.size, self.max_len, self.num_negatives,
                                    dtype=torch.long)
            epoch_neg[target] = drawn
        else:
            epoch_neg = drawn
        for start, end in batch_bounds(samples.size, self.batch_size, world_size):
            chunk = samples[start:end]
            if self.prefixes is None:
                rows = torch.from_numpy(chunk)
                items, beh = self.items[rows], self.behaviors[rows]
                times, pos, pos_b = self.timestamps[rows], self.pos[rows], self.pos_behaviors[rows]
                neg = epoch_neg[start:end]
                rows = chunk
            else:
                rows, items, beh, times, pos, pos_b = self._prefix_batch(chunk)
                neg = torch.zeros(*pos.shape, self.num_negatives, dtype=torch.long)
                neg[:, -1] = epoch_neg[start:end]
            users = torch.from_numpy(self.users_np[rows])
            batch = SequenceBatch(users=users, items=items, behaviors=beh, mask=items > 0,
                                  pos=pos, pos_behaviors=pos_b, neg=neg, timestamps=times,
                                  features=self.features[users])
            if world_size > 1:
                batch = batch.index_select(torch.arange(rank, len(batch), world_size))
            yield batch


class EvalInputs:
    """What a sequence model keeps to score held-out events: the dataset's
    :meth:`~SequenceDataset.eval_inputs` of the split chosen by ``prepare_eval``.

    Models call :meth:`prepare` from their ``prepare_eval(split)`` and :meth:`batch` from
    ``score(users, ...)``. Kept outside the model's ``state_dict``: checkpoints hold weights,
    not data. Evaluating a model trained on one dataset on another with the same ids (e.g. the
    fine-tuning side of :meth:`SequenceDataset.pretrain_finetune_split`) is :meth:`set_dataset`.
    """

    def __init__(self, dataset: SequenceDataset):
        self.dataset = dataset
        self.split: Optional[str] = None

    def set_dataset(self, dataset: SequenceDataset) -> None:
        if (dataset.num_users, dataset.num_items, dataset.behavior_names) != (
                self.dataset.num_users, self.dataset.num_items, self.dataset.behavior_names):
            raise ValueError('the new dataset must have the same users, items and behaviors')
        self.dataset, self.split = dataset, None

    def prepare(self, split: Optional[str]) -> None:
        if split is None:
            raise ValueError("a sequence model needs to know which split it is evaluated on "
                             "(its input is the history before that split's held-out event): "
                             "build the evaluator with split='val' or split='test'")
        if split not in SPLITS:
            raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')
        self.split = split

    def batch(self, users: Tensor, device=None) -> SequenceBatch:
        """The input sequences of ``users`` for the prepared split, on ``device``."""
        if self.split is None:
            raise RuntimeError('call prepare_eval(split) before score(): the model does not know '
                               "which split's inputs to use")
        out = self.dataset.eval_inputs(self.split).select_users(users.cpu())
        return out.to(device) if device is not None else out


__all__ = ['EvalInputs', 'SequenceBatch', 'SequenceDataset', 'SequenceTrainSource', 'SPLITS']
