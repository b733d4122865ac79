"""mbgraph models: every one follows the contract of :mod:`mbgraph.models.base`.

``build_model(name, data, **hyperparameters)`` builds any of them by name: ``lightgcn``,
``lightgcn_m``, ``mbcgcn``, ``crgcn``, ``pkef``, ``copf``, or an ``'ENCODER+HEAD'``
composition such as ``'mbcgcn+dfme'`` (see :mod:`mbgraph.models.multi_behavior`), or a
training-free baseline: ``mostpop``, ``history``, ``cascadingrank``
(:mod:`mbgraph.models.baselines`), or ``'hybrid:BASE'``: any of them plus learned biases for
the user's own history (:mod:`mbgraph.models.hybrid`).
"""
from typing import Callable, Dict

from torch_geometric.data import HeteroData

from .base import GraphRecommender
from .baselines import CascadingRank, History, MostPop, TrainingFree
from .blend import ScoreBlend, fit_blend_weights
from .composed import MultiBehaviorModel
from .hybrid import PREFIX as HYBRID_PREFIX
from .hybrid import HistoryHybrid, build_hybrid
from .lightgcn import LightGCN, LightGCN_M
from .multi_behavior import (
    COPF,
    CRGCN,
    ENCODERS,
    HEADS,
    MBCGCN,
    PKEF,
    ComposedModel,
    build_composed,
    parse_name,
)

#: model name (as the CLI spells it) -> constructor ``(data, **hyperparameters)``
MODELS: Dict[str, Callable] = {
    'lightgcn': LightGCN,
    'lightgcn_m': LightGCN_M,
    'mbcgcn': MBCGCN,
    'crgcn': CRGCN,
    'pkef': PKEF,
    'copf': COPF,
    'mostpop': MostPop,
    'history': History,
    'cascadingrank': CascadingRank,
}


def is_known_model(name: str) -> bool:
    """Whether ``name`` is a registered model, a valid ``'ENCODER+HEAD'`` composition, or
    ``'hybrid:BASE'`` of such a model."""
    if name.lower().startswith(HYBRID_PREFIX):
        base = name[len(HYBRID_PREFIX):]
        return bool(base) and not base.lower().startswith(HYBRID_PREFIX) and \
            is_known_model(base)
    if name.lower() in MODELS:
        return True
    try:
        parse_name(name)
        return True
    except ValueError:
        return False


def build_model(name: str, data: HeteroData, **kwargs):
    """Build the model called ``name`` (see :data:`MODELS`, ``'ENCODER+HEAD'`` or
    ``'hybrid:BASE'``)."""
    key = name.lower()
    if key.startswith(HYBRID_PREFIX):
        return build_hybrid(key, data, **kwargs)
    if key in MODELS:
        return MODELS[key](data, **kwargs)
    if '+' in key:
        return build_composed(key, data, **kwargs)
    raise ValueError(f'unknown model {name!r}; known models: {", ".join(sorted(MODELS))}, or '
                     f'ENCODER+HEAD with encoders {", ".join(sorted(ENCODERS))} and heads '
                     f'{", ".join(sorted(HEADS))}, or hybrid:BASE of any of them')


__all__ = ['GraphRecommender', 'MultiBehaviorModel', 'ComposedModel', 'LightGCN', 'LightGCN_M',
           'MBCGCN', 'CRGCN', 'PKEF', 'COPF', 'MostPop', 'History', 'CascadingRank',
           'TrainingFree', 'HistoryHybrid', 'ScoreBlend', 'fit_blend_weights', 'MODELS',
           'build_model', 'is_known_model']
