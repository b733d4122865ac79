"""mbgraph_seq: multi-behavior sequential recommendation (EBM/DPCPL, PoMRec, HMAR, SASRec).

The data side (:mod:`mbgraph_seq.data`) turns a time-ordered interaction log into per-user
behavior-aware sequences with leave-one-out splits on the target behavior; the models
(:mod:`mbgraph_seq.models`, registry ``SEQ_MODELS``) follow mbgraph's model contract
(``loss(batch)``, ``score(users, items=None)``, ``prepare_eval(split)``), so that
:class:`mbgraph.training.Trainer` and :mod:`mbgraph.evaluation` serve them unchanged;
:func:`mbgraph_seq.train.train_sequence_model` runs one model end to end. Every model, the
registry and the pipeline are importable from here::

    from mbgraph_seq import EBM, SEQ_MODELS, SequenceDataset, train_sequence_model
"""
from mbgraph import __version__

from .data import EvalInputs, SequenceBatch, SequenceDataset, SequenceTrainSource
from .models import DPCPL, EBM, HMAR, SEQ_MODELS, PoMRec, SASRec, SequenceRecommender
from .train import train_sequence_model

__all__ = ['EvalInputs', 'SequenceBatch', 'SequenceDataset', 'SequenceTrainSource',
           'SEQ_MODELS', 'SequenceRecommender', 'SASRec', 'EBM', 'DPCPL', 'HMAR', 'PoMRec',
           'train_sequence_model', '__version__']
