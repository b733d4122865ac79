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

The package holds one idea per module: :mod:`.loading` (a log -> per-user event sequences),
:mod:`.splitting` (the min-interactions filter, leave-one-out, the time split),
:mod:`.statistics` (DPCPL's user statistics), :mod:`.batch` (:class:`SequenceBatch`),
:mod:`.sources` (:class:`SequenceTrainSource`, :class:`EvalInputs`) and :mod:`.dataset`
(:class:`SequenceDataset`, the front door composed of them).
"""
# every public name of the one-file module mbgraph_seq/data.py, importable from here as before
from .batch import SequenceBatch
from .dataset import SequenceDataset
from .loading import TIE_ORDERS, ArrayLike
from .sources import EvalInputs, SequenceTrainSource
from .splitting import SPLITS

__all__ = ['EvalInputs', 'SequenceBatch', 'SequenceDataset', 'SequenceTrainSource', 'SPLITS',
           'TIE_ORDERS', 'ArrayLike']
