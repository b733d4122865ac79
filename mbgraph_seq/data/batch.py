"""The batch layout of the sequence side: :class:`SequenceBatch` (left-padded behavior-aware
sequences, ids shifted by one so that ``0`` is padding, the most recent event last) and
:func:`left_pad`, which cuts padded rows out of the per-user event arrays."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor


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



def left_pad(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: int,
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



__all__ = ['SequenceBatch', 'left_pad']
