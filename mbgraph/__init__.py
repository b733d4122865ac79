"""mbgraph: multi-behavior graph recommendation on PyTorch Geometric.

The front door: the model registry and the named models, the trainer and the evaluators, the
end-to-end pipeline and the dataset loader::

    from mbgraph import COPF, load_dataset, train_graph_model
    data = load_dataset('synthetic')
    metrics = train_graph_model('copf', data, epochs=5)

Layers are in :mod:`mbgraph.nn`, data tools in :mod:`mbgraph.data`, the sequence models in
:mod:`mbgraph_seq`.
"""
from .data import load_dataset
from .evaluation import FullRankingEvaluator, SampledEvaluator
from .models import (
    COPF,
    CRGCN,
    MBCGCN,
    MODELS,
    PKEF,
    CascadingRank,
    ComposedModel,
    GraphRecommender,
    History,
    HistoryHybrid,
    LightGCN,
    LightGCN_M,
    MostPop,
    MultiBehaviorModel,
    build_model,
    is_known_model,
)
from .pipeline import train_graph_model
from .training import Trainer

#: the version of mbgraph and mbgraph_seq, in this one place (setup.cfg reads it from here)
__version__ = '0.1.0'

__all__ = [
    '__version__',
    'build_model', 'is_known_model', 'MODELS', 'GraphRecommender', 'MultiBehaviorModel',
    'ComposedModel', 'LightGCN', 'LightGCN_M', 'MBCGCN', 'CRGCN', 'PKEF', 'COPF', 'MostPop',
    'History', 'CascadingRank', 'HistoryHybrid',
    'Trainer', 'FullRankingEvaluator', 'SampledEvaluator',
    'train_graph_model', 'load_dataset',
]
