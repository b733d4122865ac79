"""mbgraph: multi-behavior graph recommendation on PyTorch Geometric.

The front door: the model registry and the named models, the trainer and the evaluators, the
end-to-end pipeline and the dataset loader::

    from mbgraph import COPF, load_dataset, train_graph_model
    data = load_dataset('synthetic')
    metrics = train_graph_model('copf', data, epochs=5)

Layers are in :mod:`mbgraph.nn`, data tools in :mod:`mbgraph.data`, the sequence models in
:mod:`mbgraph_seq`.
"""
from importlib import import_module as _import_module

#: the front door's names and the module each comes from: imported on first use (PEP 562),
#: so that ``from mbgraph import io`` (the benchmark runner's) stays a light import
_EXPORTS = {
    'load_dataset': '.data',
    'FullRankingEvaluator': '.evaluation', 'SampledEvaluator': '.evaluation',
    **{name: '.models' for name in (
        'COPF', 'CRGCN', 'MBCGCN', 'MODELS', 'PKEF', 'CascadingRank', 'ComposedModel',
        'GraphRecommender', 'History', 'HistoryHybrid', 'LightGCN', 'LightGCN_M', 'MostPop',
        'MultiBehaviorModel', 'ScoreBlend', 'build_model', 'is_known_model')},
    'train_graph_model': '.pipeline',
    'Trainer': '.training',
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mbgraph' has no attribute {name!r}")
    value = getattr(_import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


#: the version of mbgraph and mbgraph_seq, in this one place (setup.cfg reads it from here)
__version__ = '0.1.0'

__all__ = [
    '__version__',
    'build_model', 'is_known_model', 'MODELS', 'GraphRecommender', 'MultiBehaviorModel',
    'ComposedModel', 'LightGCN', 'LightGCN_M', 'MBCGCN', 'CRGCN', 'PKEF', 'COPF', 'MostPop',
    'History', 'CascadingRank', 'HistoryHybrid', 'ScoreBlend',
    'Trainer', 'FullRankingEvaluator', 'SampledEvaluator',
    'train_graph_model', 'load_dataset',
]
