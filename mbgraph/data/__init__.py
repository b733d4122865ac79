"""Data side of mbgraph: the multiplex HeteroData schema, loaders, sparse operators, sampling.

Everything a user needs to get a graph and train on it is importable from here::

    from mbgraph.data import BehaviorAdjacency, BPRSampler, load_dataset
    data = load_dataset('synthetic')
"""
from .adjacency import BehaviorAdjacency, SparseOperator, available_backends
from .behavior_txt import load_behavior_txt
from .datasets import (
    DATASETS,
    describe,
    load_dataset,
    load_interaction_log,
    load_mbgmn,
    load_movielens,
    synthetic,
)
from .multiplex import (
    ITEM,
    USER,
    MultiplexValidationError,
    behaviors_of,
    count_duplicates,
    deduplicate,
    edge_type,
    holdout_validation,
    make_multiplex,
    num_users_items,
    select_behaviors,
    split_edge_index,
    statistics,
    target_behavior,
    validate,
)
from .pyg import from_pyg_taobao
from .recbole import load_recbole
from .sampling import BPRSampler, InteractionSet, UniquePairSampler, UserBatchSampler
from .shortcuts import shortcut_shares
from .sslrec import load_sslrec

__all__ = [
    # the schema
    'USER', 'ITEM', 'MultiplexValidationError', 'behaviors_of', 'count_duplicates', 'deduplicate',
    'edge_type', 'holdout_validation', 'make_multiplex', 'num_users_items', 'select_behaviors',
    'shortcut_shares', 'split_edge_index', 'statistics', 'target_behavior', 'validate',
    # loaders
    'DATASETS', 'load_dataset', 'describe', 'load_mbgmn', 'load_sslrec', 'load_movielens',
    'load_interaction_log', 'load_recbole', 'load_behavior_txt', 'from_pyg_taobao', 'synthetic',
    # sparse operators
    'BehaviorAdjacency', 'SparseOperator', 'available_backends',
    # samplers
    'BPRSampler', 'UniquePairSampler', 'UserBatchSampler', 'InteractionSet',
]
