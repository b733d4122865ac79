"""mbgraph models: every one follows the contract of :mod:`mbgraph.models.base`."""
from typing import Callable, Dict

from torch_geometric.data import HeteroData

from .base import GraphRecommender
from .composed import MultiBehaviorModel
from .lightgcn import LightGCN, LightGCN_M

#: model name (as the CLI spells it) -> constructor ``(data, **hyperparameters)``
MODELS: Dict[str, Callable] = {
    'lightgcn': LightGCN,
    'lightgcn_m': LightGCN_M,
}


def build_model(name: str, data: HeteroData, **kwargs):
    """Build the model called ``name`` (see :data:`MODELS`) for ``data``."""
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f'unknown model {name!r}; known models: {", ".join(sorted(MODELS))}')
    return MODELS[key](data, **kwargs)


__all__ = ['GraphRecommender', 'MultiBehaviorModel', 'LightGCN', 'LightGCN_M', 'MODELS',
           'build_model']
