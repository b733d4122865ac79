"""The front door of the sequence side: :class:`SequenceDataset`, composed of the loading
(:mod:`.loading`), splitting (:mod:`.splitting`) and statistics (:mod:`.statistics`) modules;
:mod:`mbgraph_seq.data` describes the protocol."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mbgraph.data.multiplex import make_multiplex

from .batch import SequenceBatch, left_pad
from .loading import (
    TIE_ORDERS,
    ArrayLike,
    event_pairs,
    group_by_user,
    log_arrays,
    sslrec_log,
    synthetic_log,
)
from .sources import SequenceTrainSource
from .splitting import (
    filter_min_interactions,
    leave_one_out,
    split_positions,
    time_split,
    train_end,
)
from .statistics import num_statistics, user_features, user_statistics

log = logging.getLogger(__package__)   # 'mbgraph_seq.data', the logger of the one-file module


class SequenceDataset:
    """Per-user behavior-aware sequences with leave-one-out splits on the target behavior.

    Build it with :meth:`from_log` or :meth:`from_movielens` (see :mod:`mbgraph_seq.data` for the
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
        u, i, b, t, num_users, num_items = log_arrays(users, items, behaviors, timestamps,
                                                      names, num_users, num_items)
        if min_interactions > 0:
            u, i, b, t, num_users, num_items, meta, kept = filter_min_interactions(
                u, i, b, t, num_users, num_items, int(min_interactions), meta)
            if user_attributes is not None:
                user_attributes = torch.as_tensor(user_attributes)[torch.from_numpy(kept)]
        ptr, u, i, b, t = group_by_user(u, i, b, t, num_users, sort=sort, tie_order=tie_order,
                                        seed=seed)
        val_pos, test_pos = leave_one_out(ptr, u, b, len(names) - 1, min_target, names[-1])
        ds = cls(ptr=ptr, items=i, behaviors=b, timestamps=t,
                 start=np.zeros(num_users, dtype=np.int64), end=np.diff(ptr),
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
        return cls.from_log(ml.user, ml.item, ml.behavior, ml.timestamp, ml.behaviors,
                            num_users=ml.num_users, num_items=ml.num_items, max_len=max_len,
                            user_raw_id=ml.user_raw_id, item_raw_id=ml.item_raw_id,
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
        if log_.timestamp is None:
            raise ValueError(f'{path}: sequence models need a timestamp column (columns '
                             f'{list(columns)}); the file has none')
        return cls.from_log(log_.user, log_.item, log_.behavior, log_.timestamp,
                            log_.behaviors, num_users=log_.num_users, num_items=log_.num_items,
                            max_len=max_len, user_raw_id=log_.user_raw_id,
                            item_raw_id=log_.item_raw_id, name=kw.pop('name', Path(path).stem),
                            **kw)

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
        (u, i, b, t), order, shape = sslrec_log(directory, behaviors)
        return cls.from_log(u, i, b, t, order, num_users=shape[0], num_items=shape[1],
                            max_len=max_len, name=kw.pop('name', Path(directory).name), **kw)

    @classmethod
    def synthetic(cls, num_users: int = 1000, num_items: int = 600, max_len: int = 50,
                  seed: int = 0, **kw) -> 'SequenceDataset':
        """Sequences from :func:`mbgraph.data.datasets.synthetic`'s cascading graph (all its
        interactions, held-out buys included) with seeded times: each user meets its items in
        a random order and carts, then buys, an item after random delays, so view < cart < buy
        per item with other items in between. Needs no files (the CLI's default
        data for the sequence models). ``kw`` goes to :meth:`from_log`."""
        (u, i, b, t), names = synthetic_log(num_users, num_items, seed)
        return cls.from_log(u, i, b, t, names, num_users=num_users, num_items=num_items,
                            max_len=max_len, seed=seed, name='synthetic', **kw)

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
        return train_end(self.val_pos, self.end)

    def _split_pos(self, split: str) -> np.ndarray:
        return split_positions(self.val_pos, self.test_pos, split)

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
        return event_pairs(self.ptr, self.items, self.behaviors, self.num_items, lo, hi,
                           behavior)

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
        if self._stats is None:
            self._stats = user_statistics(self.ptr, self.items, self.behaviors, self.num_items,
                                          self.num_behaviors, self._train_end())
        return self._stats

    @property
    def num_statistics(self) -> int:
        return num_statistics(self.num_behaviors)

    @property
    def num_attributes(self) -> int:
        return 0 if self.user_attributes is None else int(self.user_attributes.size(1))

    @property
    def num_features(self) -> int:
        """Width of :attr:`SequenceBatch.features`: statistics then attributes."""
        return self.num_statistics + self.num_attributes

    def user_features(self) -> Tensor:
        """``[num_users, F]``: :meth:`user_statistics` followed by the user attributes."""
        return user_features(self.user_statistics(), self.user_attributes)

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
        items = torch.from_numpy(left_pad(self.items, lo, hi, M, shift=1))
        beh = torch.from_numpy(left_pad(self.behaviors, lo, hi, M, shift=1))
        times = torch.from_numpy(left_pad(self.timestamps, lo, hi, M))
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
        cut = time_split(self.ptr, self.start, self.end, self.val_pos, ratio)
        none = np.full(self.num_users, -1, dtype=np.int64)
        pre = self._replace(end=cut.copy(), val_pos=none, test_pos=none.copy(),
                            name=f'{self.name or "log"}[pretrain]')
        fine = self._replace(start=cut.copy(), name=f'{self.name or "log"}[finetune]')
        return pre, fine


__all__ = ['SequenceDataset']
