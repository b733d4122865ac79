r"""The base shared by the sequence models: mbgraph's model contract for sequence models.

:class:`SequenceRecommender`:

* ``prepare_eval(split)`` picks the dataset's evaluation inputs of that split (the history
  before each user's held-out event, :meth:`mbgraph_seq.data.SequenceDataset.eval_inputs`);
* ``score(users, items=None)`` encodes those inputs to one vector per user (subclasses define
  :meth:`~SequenceRecommender.user_representation`) and scores items by the dot product with
  the item embeddings (0-based item ids; ``[B, num_items]`` or ``[B, C]``, :func:`dot_scores`).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..data import EvalInputs, SequenceBatch, SequenceDataset


def dot_scores(user: Tensor, item_weight: Tensor, items: Optional[Tensor] = None) -> Tensor:
    """Scores :math:`u^\\top e_v`. ``item_weight`` is the ``[num_items + 1, d]`` table with the
    padding row 0; ``items`` are 0-based ids ``[B, C]`` (None: all items, ``[B, num_items]``)."""
    if items is None:
        return user @ item_weight[1:].t()
    return torch.einsum('bd,bcd->bc', user, item_weight[items.long() + 1])


class SequenceRecommender(nn.Module):
    """Base of the sequence models: evaluation inputs, ``prepare_eval`` and dot-product
    ``score``. Subclasses set :attr:`causal` and :attr:`train_layout` and implement
    :meth:`user_representation` and :meth:`item_weight`."""

    #: True when the output at a position never depends on later positions (then every
    #: position of a full training sequence can be a next-item target).
    causal: bool = True
    #: ``prefixes`` argument for :meth:`SequenceDataset.train_source` (None: full sequences).
    train_layout: Optional[Union[int, str]] = None
    #: ``target_only`` argument for :meth:`SequenceDataset.train_source`.
    target_only: bool = False

    def __init__(self, dataset: SequenceDataset):
        super().__init__()
        self.num_users, self.num_items = dataset.num_users, dataset.num_items
        self.num_behaviors, self.max_len = dataset.num_behaviors, dataset.max_len
        self.eval_inputs = EvalInputs(dataset)

    def prepare_eval(self, split: Optional[str]) -> None:
        """Use the evaluation inputs of ``split`` ('val' or 'test') in :meth:`score`."""
        self.eval_inputs.prepare(split)

    def item_weight(self) -> Tensor:
        """``[num_items + 1, d]`` item embeddings used for scoring (row 0 = padding)."""
        raise NotImplementedError

    def user_representation(self, batch: SequenceBatch) -> Tensor:
        """``[B, d]`` representation of each input sequence (after its most recent event)."""
        raise NotImplementedError

    def score(self, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        """Scores of ``items`` (0-based ``[B, C]``; None: all items) for ``users``, from the
        history before their held-out event of the split given to :meth:`prepare_eval`."""
        device = next(self.parameters()).device
        batch = self.eval_inputs.batch(users, device)
        return dot_scores(self.user_representation(batch), self.item_weight(),
                          None if items is None else items.to(device))


__all__ = ['SequenceRecommender', 'dot_scores']
