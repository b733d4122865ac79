"""Every dataset by name: :data:`DATASETS`, :func:`load_dataset`, and :func:`describe`."""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Optional, Sequence

from torch_geometric.data import HeteroData

from ..multiplex import ITEM, USER, statistics
from ._base import PathLike
from .logs import _csv_entry
from .mbgmn import _mbgmn_entry
from .movielens import _movielens_entry
from .synthetic_data import _synthetic_entry


def _elsewhere(module: str, entry: str) -> Callable[..., HeteroData]:
    """A registry entry whose loader lives in ``mbgraph.data.<module>`` (imported on first
    use: those modules import this package)."""
    def load(root: PathLike | None = None, **kwargs) -> HeteroData:
        loader = getattr(importlib.import_module(f'..{module}', __package__), entry)
        return loader(root, **kwargs)
    load.__doc__ = f'mbgraph.data.{module}.{entry}'
    return load


#: name -> loader ``(root=None, *, behaviors=None, seed=0, **kwargs) -> HeteroData``
DATASETS: Dict[str, Callable[..., HeteroData]] = {
    'synthetic': _synthetic_entry,
    'taobao': _mbgmn_entry('taobao'),
    'beibei': _mbgmn_entry('beibei'),
    'tmall': _mbgmn_entry('tmall'),
    'ml-latest-small': _movielens_entry,
    'movielens': _movielens_entry,
    'csv': _csv_entry,
    'sslrec': _elsewhere('sslrec', 'sslrec_entry'),
    'retailrocket': _elsewhere('sslrec', 'retailrocket_entry'),
    'recbole': _elsewhere('recbole', 'recbole_entry'),
    'behavior_txt': _elsewhere('behavior_txt', 'behavior_txt_entry'),
}


def load_dataset(name: str, root: Optional[PathLike] = None, *,
                 behaviors: Optional[Sequence[str]] = None, seed: int = 0,
                 **kwargs) -> HeteroData:
    """Load a dataset by name (one of ``DATASETS``) as a validated multiplex graph.

    Args:
        name: 'synthetic', 'taobao', 'beibei', 'tmall', 'retailrocket', 'ml-latest-small' /
            'movielens', or a format: 'csv', 'sslrec', 'recbole', 'behavior_txt'.
        root: data folder. MB-GMN datasets are looked up in ``root/<name>``,
            ``root/<name>-mbgmn`` or ``root`` itself; 'retailrocket' in
            ``root/retailrocket-sslrec`` (SSLRec's files, :mod:`mbgraph.data.sslrec`) or
            ``root``; MovieLens in ``root/ml-latest-small`` or ``root``; 'sslrec' and
            'behavior_txt' (:mod:`mbgraph.data.behavior_txt`) take the folder itself, 'csv' and
            'recbole' (:mod:`mbgraph.data.recbole`) the file (or ``path=...``); 'synthetic'
            needs none. PyG's Taobao object is converted by
            :func:`mbgraph.data.pyg.from_pyg_taobao`.
        behaviors: behavior order / subset (last = target); dataset default when None.
        seed: seed of random splits (validation holdout, synthetic generation).
        kwargs: passed to the loader (e.g. ``num_users`` for synthetic, ``sep`` for csv,
            ``with_tags`` for MovieLens).

    Raises:
        ValueError: unknown name. FileNotFoundError: missing root or files.
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise ValueError(f'unknown dataset {name!r}; known datasets: {", ".join(DATASETS)}')
    return DATASETS[key](root, behaviors=behaviors, seed=seed, **kwargs)


def describe(data: HeteroData) -> str:
    """Per-behavior statistics of ``data`` as a plain-text table (the papers' table 1):
    behavior, #users, #items, #interactions, density; then training totals and splits."""
    rows = statistics(data)
    num_users, num_items = int(data[USER].num_nodes), int(data[ITEM].num_nodes)
    name = getattr(data, 'name', None) or 'dataset'
    behaviors = list(data.behaviors)
    header = ('Behavior', '#Users', '#Items', '#Interactions', 'Density')
    body = []
    total = 0
    for r in rows:
        body.append((r['behavior'], f"{r['users']:,}", f"{r['items']:,}",
                     f"{r['interactions']:,}", f"{r['density']:.2e}"))
        if r['behavior'] in behaviors:
            total += r['interactions']
    body.insert(len(behaviors), ('all training', f'{num_users:,}', f'{num_items:,}',
                                 f'{total:,}', f'{total / max(num_users * num_items, 1):.2e}'))
    widths = [max(len(h), *(len(b[k]) for b in body)) for k, h in enumerate(header)]

    def fmt(cells) -> str:
        return '  '.join(c.ljust(w) if k == 0 else c.rjust(w)
                         for k, (c, w) in enumerate(zip(cells, widths)))

    lines = [f'{name}: {num_users:,} users, {num_items:,} items, behaviors '
             f'{" -> ".join(behaviors)} (target {behaviors[-1]!r})',
             fmt(header), fmt(['-' * w for w in widths])]
    lines += [fmt(b) for b in body[:len(behaviors) + 1]]
    if len(body) > len(behaviors) + 1:
        lines.append(fmt(['-' * w for w in widths]))
        lines += [fmt(b) for b in body[len(behaviors) + 1:]]
    return '\n'.join(lines)
