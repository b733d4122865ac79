r"""DPCPL's user statistics (sec. 4.3.1): what its prompts know of a user besides the sequence.

:func:`user_statistics` reads them from a user's training data (its events before the
validation event, counted from its first event) and :func:`user_features` appends the user
attributes; :attr:`~mbgraph_seq.data.SequenceBatch.features` carries the result.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .loading import event_pairs


def num_statistics(num_behaviors: int) -> int:
    """Width of :func:`user_statistics` for ``K`` behaviors: ``2K - 1``."""
    return 2 * num_behaviors - 1


def user_statistics(ptr: np.ndarray, items: np.ndarray, behaviors: np.ndarray,
                    num_items: int, num_behaviors: int, end: np.ndarray) -> Tensor:
    r"""``[num_users, 2K - 1]`` float statistics of each user's events ``[0, end[u])`` (its
    training data when ``end`` is :func:`~mbgraph_seq.data.splitting.train_end`):

    * columns ``0..K-1``: :math:`\log(1 + n_k)`, the number of events of behavior ``k``;
    * columns ``K..2K-2``: the conversion ratio from behavior ``k`` to ``k+1``,
      :math:`|I_k \cap I_{k+1}| / |I_k|` with :math:`I_k` the distinct items of behavior
      ``k`` (0 when :math:`I_k` is empty).
    """
    # reading taken: "proportion of purchases made by adding to a cart" = share of the
    # items of behavior k that also reached behavior k+1
    K, U = num_behaviors, ptr.size - 1
    zero = np.zeros(U, dtype=np.int64)
    length = end
    users = np.repeat(np.arange(U), length)
    idx = np.repeat(ptr[:-1], length) + (np.arange(users.size) -
                                         np.repeat(np.cumsum(length) - length, length))
    beh = behaviors[idx]
    counts = np.zeros((U, K), dtype=np.float64)
    np.add.at(counts, (users, beh), 1.0)
    conv = np.zeros((U, max(K - 1, 0)), dtype=np.float64)
    sets = [event_pairs(ptr, items, behaviors, num_items, zero, end, k) for k in range(K)]
    for k in range(K - 1):
        uk, ik = sets[k]
        un, inn = sets[k + 1]
        n_k = np.bincount(uk, minlength=U).astype(np.float64)
        both = np.isin(uk * num_items + ik, un * num_items + inn)
        n_both = np.bincount(uk[both], minlength=U).astype(np.float64)
        conv[:, k] = np.divide(n_both, n_k, out=np.zeros(U), where=n_k > 0)
    return torch.from_numpy(np.concatenate([np.log1p(counts), conv], 1)).float()


def user_features(stats: Tensor, user_attributes: Optional[Tensor]) -> Tensor:
    """``[num_users, F]``: the statistics followed by the user attributes (if any)."""
    if user_attributes is None:
        return stats
    return torch.cat([stats, user_attributes], dim=1)


__all__ = ['num_statistics', 'user_statistics', 'user_features']
