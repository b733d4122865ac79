"""Sequence models and their registry.

``SEQ_MODELS`` maps a model name to a constructor ``(dataset: SequenceDataset,
**hyperparameters) -> model``; every model follows mbgraph's contract (``loss(batch)``,
``score(users, items=None)``, ``prepare_eval(split)``) and declares how it trains through
``train_layout`` / ``target_only`` (see :class:`~mbgraph_seq.models.base.SequenceRecommender`).
Add a model by importing its class here and adding an entry.

``SHARED_MODELS`` are the sequence twins of graph models that keep the graph model's name
(``mostpop``); :func:`sequence_pipeline` says which side a ``(model, dataset)`` pair runs on.
"""
from typing import Callable, Dict

from .base import SequenceRecommender
from .baselines import SequenceMostPop
from .dpcpl import DPCPL
from .ebm import EBM
from .hmar import HMAR
from .pomrec import PoMRec
from .sasrec import SASRec

SEQ_MODELS: Dict[str, Callable] = {
    'sasrec': SASRec,
    'ebm': EBM,
    'dpcpl': DPCPL,
    'hmar': HMAR,
    'pomrec': PoMRec,
}

#: graph models with a sequence twin under the same name
SHARED_MODELS: Dict[str, Callable] = {'mostpop': SequenceMostPop}
#: datasets on which a shared name means the sequence twin: MovieLens is the data of the
#: sequence papers (their protocol: sampled negatives, leave-one-out on the last two target
#: events); on every other dataset (synthetic, csv, the graph datasets) it is the graph model
SEQUENCE_FIRST_DATASETS = ('ml-latest-small', 'movielens')


def sequence_pipeline(model: str, dataset: str) -> bool:
    """Whether ``mbgraph train --model MODEL --dataset DATASET`` runs the sequence pipeline
    (:func:`mbgraph_seq.train.train_sequence_model`): every sequence model, and a shared name
    (``mostpop``) on :data:`SEQUENCE_FIRST_DATASETS`."""
    key = str(model).lower()
    return key in SEQ_MODELS or (key in SHARED_MODELS and dataset in SEQUENCE_FIRST_DATASETS)


def sequence_model(name: str) -> Callable:
    """The constructor of a sequence model or a shared twin; ``KeyError`` if neither."""
    return SEQ_MODELS[name] if name in SEQ_MODELS else SHARED_MODELS[name]


__all__ = ['SEQ_MODELS', 'SHARED_MODELS', 'SEQUENCE_FIRST_DATASETS', 'sequence_pipeline',
           'sequence_model', 'SequenceMostPop', 'SequenceRecommender', 'SASRec', 'EBM',
           'DPCPL', 'HMAR', 'PoMRec']
