r"""Training-free baselines on sequence datasets: the twins of :mod:`mbgraph.models.baselines`
behind the same names.

:class:`SequenceMostPop` is the graph side's :class:`~mbgraph.models.baselines.MostPop` itself,
built on the dataset's multiplex view (:meth:`~mbgraph_seq.data.SequenceDataset.to_multiplex`:
the distinct training pairs of the target behavior, i.e. events before each user's validation
event), so both sides rank by the same counts with the same code. It adds what the sequence
pipeline asks of a model (``prepare_eval``, the training layout attributes); its scores do not
depend on the history, so the split only has to be a known one.

Which pipeline ``mbgraph train --model mostpop`` takes is :func:`mbgraph_seq.models.
sequence_pipeline`'s: the sequence twin on MovieLens (the sequence papers' data: sampled
negatives and full ranking, leave-one-out on the last two ``like`` events), the graph model
elsewhere.
"""
from __future__ import annotations

from mbgraph.models.baselines import MostPop

from ..data import SPLITS, SequenceDataset


class SequenceMostPop(MostPop):
    """Most popular on a :class:`~mbgraph_seq.data.SequenceDataset`: every user gets the items
    ranked by their number of distinct training users of the target behavior.

    Args:
        dataset: the sequences (its multiplex view gives the training counts).
    """

    causal = True
    train_layout = None
    target_only = False

    def __init__(self, dataset: SequenceDataset):
        super().__init__(dataset.to_multiplex())
        self.max_len = dataset.max_len

    def prepare_eval(self, split: str) -> None:
        """Nothing to prepare (the scores ignore the history); ``split`` must be known."""
        if split not in SPLITS:
            raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')


__all__ = ['SequenceMostPop']
