"""What models draw from a :class:`~mbgraph_seq.data.SequenceDataset`: the training batches
(:class:`SequenceTrainSource`, the batch-source contract of :class:`mbgraph.training.Trainer`)
and the evaluation inputs a model keeps (:class:`EvalInputs`)."""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor

from mbgraph.data.sampling import InteractionSet, batch_bounds, sample_negatives

from .batch import SequenceBatch, left_pad
from .splitting import SPLITS

if TYPE_CHECKING:
    from .dataset import SequenceDataset

log = logging.getLogger(__package__)   # 'mbgraph_seq.data', the logger of the one-file module


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
            self.items = torch.from_numpy(left_pad(ds.items, lo, hi - 1, M, shift=1))
            self.behaviors = torch.from_numpy(left_pad(ds.behaviors, lo, hi - 1, M, shift=1))
            self.timestamps = torch.from_numpy(left_pad(ds.timestamps, lo, hi - 1, M))
            self.pos = torch.from_numpy(left_pad(ds.items, lo + 1, hi, M, shift=1))
            self.pos_behaviors = torch.from_numpy(left_pad(ds.behaviors, lo + 1, hi, M,
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

    @property
    def targets_per_epoch(self) -> int:
        """Next-item targets an epoch trains, each with ``num_negatives`` negatives: every
        position with a next event of every sequence (full layout), or one per sample (cut)."""
        if self.prefixes is None:
            return int((self.pos > 0).sum())
        return int(self.num_samples)

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
        items = torch.from_numpy(left_pad(ds.items, lo, j, M, shift=1))
        beh = torch.from_numpy(left_pad(ds.behaviors, lo, j, M, shift=1))
        times = torch.from_numpy(left_pad(ds.timestamps, lo, j, M))
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


__all__ = ['SequenceTrainSource', 'EvalInputs']
