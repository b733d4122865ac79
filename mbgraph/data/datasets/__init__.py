r"""Dataset loaders: every one returns a validated multiplex graph in mbgraph's schema
(:mod:`mbgraph.data.multiplex`). One idea a module, all of them importable from here:

* :mod:`.registry` -- :func:`load_dataset`, one entry point by name (``DATASETS`` lists the
  names), and :func:`describe`, the per-behavior statistics as a plain-text table;
* :mod:`.mbgmn` -- :func:`load_mbgmn`, the MB-GMN / KHGT / PKEF pickle format (Taobao,
  Beibei, Tmall), read through :mod:`.pickles` (:func:`safe_unpickle`: only scipy matrices
  and numpy arrays load);
* :mod:`.logs` -- :func:`read_interaction_log` / :func:`load_interaction_log`, a generic
  CSV/TSV log of (user, item, behavior[, timestamp]), read into an :class:`InteractionLog`;
* :mod:`.movielens` -- :func:`read_movielens_log` / :func:`load_movielens`, MovieLens
  ml-latest-small read as dislike / neutral / tag / like;
* :mod:`.synthetic_data` -- :func:`synthetic`, a seeded generator of cascading behaviors
  (view -> cart -> buy);
* :mod:`._base` -- what they share (the leave-one-out split, id numbering, text reading).

Id maps: loaders of raw logs (CSV, MovieLens) number users and items ``0..n-1`` in sorted order
of their raw ids (numerically when every raw id is an integer, else as strings) and keep the raw
ids on the graph as Python lists: ``data['user'].raw_id[u]`` is the raw id of user ``u``
(likewise for items); entries are ``int`` when every raw id of that node type is an integer,
else ``str``.

Example::

    >>> from mbgraph.data.datasets import load_dataset, describe
    >>> data = load_dataset('synthetic', num_users=200, num_items=100, seed=1)
    >>> data.behaviors
    ['view', 'cart', 'buy']
"""
from ._base import KNOWN_ORDERS, MAX_FIELD, DataFormatError, PathLike, finite_number
from .logs import InteractionLog, graph_from_log, load_interaction_log, read_interaction_log
from .mbgmn import MBGMN_BEHAVIORS, load_mbgmn
from .movielens import MOVIELENS_BEHAVIORS, load_movielens, read_movielens_log
from .pickles import RestrictedUnpickler, RestrictedUnpicklingError, safe_unpickle
from .registry import DATASETS, describe, load_dataset
from .synthetic_data import synthetic

__all__ = [
    'DATASETS', 'KNOWN_ORDERS', 'MBGMN_BEHAVIORS', 'RestrictedUnpickler',
    'RestrictedUnpicklingError', 'describe', 'load_dataset', 'load_interaction_log',
    'load_mbgmn', 'load_movielens', 'read_interaction_log', 'read_movielens_log',
    'safe_unpickle', 'synthetic',
    # added with the split into modules: the names other modules and users reach for
    'InteractionLog', 'graph_from_log', 'DataFormatError', 'MAX_FIELD', 'MOVIELENS_BEHAVIORS',
    'PathLike', 'finite_number',
]
