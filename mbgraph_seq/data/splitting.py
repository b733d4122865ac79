"""Splitting per-user sequences: the min-interactions filter, leave-one-out on the target
behavior and DPCPL's pre-train / prompt-tune time split.

The splits are positions inside each user's sequence (the CSR layout of
:func:`~mbgraph_seq.data.loading.group_by_user`): ``val_pos`` / ``test_pos`` hold the
positions of a user's held-out events (-1 when it has none), a *window* ``[start, end)`` bounds
what models see, and a user's *training data* ends at its validation event
(:func:`train_end`).
"""
from __future__ import annotations

import logging
from typing import Tuple

import numpy as np

log = logging.getLogger(__package__)   # 'mbgraph_seq.data', the logger of the one-file module

SPLITS = ('val', 'test')


def filter_min_interactions(u, i, b, t, num_users: int, num_items: int, k: int, meta):
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


def leave_one_out(ptr: np.ndarray, u: np.ndarray, b: np.ndarray, target: int,
                  min_target: int, target_name: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(val_pos, test_pos)``: per user, the positions (within its sequence) of its last two
    ``target`` events, for users with at least ``min_target`` of them; -1 for the others.
    ``u`` and ``b`` are the users and behavior codes of the events grouped by user
    (``ptr`` their CSR pointers). Logs how many events come after a test event and how many
    users have too few target events to be held out."""
    num_users = ptr.size - 1
    length = np.diff(ptr)
    local = np.arange(u.size) - ptr[u]
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
                 min_target - 1, target_name)
    return val_pos, test_pos


def train_end(val_pos: np.ndarray, end: np.ndarray) -> np.ndarray:
    """End (absolute position) of each user's training data: its validation event, or its
    window end when it has none."""
    return np.where(val_pos >= 0, val_pos, end)


def split_positions(val_pos: np.ndarray, test_pos: np.ndarray, split: str) -> np.ndarray:
    """``val_pos`` or ``test_pos`` by the split's name; ``ValueError`` for another name."""
    if split not in SPLITS:
        raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')
    return val_pos if split == 'val' else test_pos


def time_split(ptr: np.ndarray, start: np.ndarray, end: np.ndarray, val_pos: np.ndarray,
               ratio: float = 0.6) -> np.ndarray:
    """DPCPL's time split (sec. 5.1.1) as windows: per user, the first ``ratio`` of its events
    are the pre-training side, the rest the prompt-tuning side. Returns each user's cut
    position: the pre-training window is ``[start, cut)``, the fine-tuning one ``[cut, end)``.

    ``cut = floor(ratio * n)`` for a user with ``n`` events, lowered where needed so that at
    least one event precedes the validation event inside the fine-tuning window (the held-out
    events always stay on the fine-tuning side), and kept inside ``[start, end]``.
    """
    # reading taken: "first 60% of the data, based on timestamps" is applied per user
    if not 0.0 < ratio < 1.0:
        raise ValueError(f'ratio must be in (0, 1), got {ratio}')
    n = np.diff(ptr)
    cut = np.floor(ratio * n).astype(np.int64)
    held = val_pos >= 0
    cut = np.where(held, np.minimum(cut, val_pos - 1), cut)
    cut = np.maximum(cut, start)
    cut = np.minimum(cut, end)
    return cut


__all__ = ['SPLITS', 'filter_min_interactions', 'leave_one_out', 'train_end',
           'split_positions', 'time_split']
