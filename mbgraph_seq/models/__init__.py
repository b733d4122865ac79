"""Sequence models and their registry.

``SEQ_MODELS`` maps a model name to a constructor ``(dataset: SequenceDataset,
**hyperparameters) -> model``; every model follows mbgraph's contract (``loss(batch)``,
``score(users, items=None)``, ``prepare_eval(split)``) and declares how it trains through
``train_layout`` / ``target_only`` (see :class:`~mbgraph_seq.models.sasrec.SequenceRecommender`).
Add a model by importing its class here and adding an entry.
"""
from typing import Callable, Dict

from .dpcpl import DPCPL
from .ebm import EBM
from .hmar import HMAR
from .pomrec import PoMRec
from .sasrec import SASRec, SequenceRecommender

SEQ_MODELS: Dict[str, Callable] = {
    'sasrec': SASRec,
    'ebm': EBM,
    'dpcpl': DPCPL,
    'hmar': HMAR,
    'pomrec': PoMRec,
}

__all__ = ['SEQ_MODELS', 'SequenceRecommender', 'SASRec', 'EBM', 'DPCPL', 'HMAR', 'PoMRec']
