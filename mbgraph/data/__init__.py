"""Data side of mbgraph: the multiplex HeteroData schema, loaders, sparse operators, sampling."""
from .multiplex import (
    ITEM, USER, MultiplexValidationError, behaviors_of, count_duplicates, deduplicate, edge_type,
    holdout_validation, make_multiplex, num_users_items, select_behaviors, split_edge_index,
    statistics, target_behavior, validate,
)
from .pyg import from_pyg_taobao
from .shortcuts import shortcut_shares

__all__ = [
    'USER', 'ITEM', 'MultiplexValidationError', 'behaviors_of', 'count_duplicates', 'deduplicate',
    'edge_type', 'from_pyg_taobao', 'holdout_validation', 'make_multiplex', 'num_users_items',
    'select_behaviors', 'shortcut_shares', 'split_edge_index', 'statistics', 'target_behavior',
    'validate',
]
