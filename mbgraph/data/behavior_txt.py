r"""One text file per behavior, the layout of several multi-behavior repositories (MB-CGCN,
CRGCN and their followers): a folder with ``<behavior>.txt`` of training ``user item`` lines
per behavior, ``test.txt`` and optionally ``validation.txt`` (or ``valid.txt`` / ``val.txt``)
of held-out target pairs in the same form.

Ids are integers used as given (``one_based=True`` subtracts 1: several of those repositories
number from 1); the graph has ``max id + 1`` users and items unless ``num_users`` /
``num_items`` say more. Other files (``train.txt`` of all behaviors merged, ``*_dict.txt``)
are ignored. Without a validation file one seeded random training target pair per user (users
with at least two) is held out of training as validation, as for the MB-GMN files.

Example::

    >>> from mbgraph.data.datasets import load_dataset
    >>> data = load_dataset('behavior_txt', root='data/Tmall')           # doctest: +SKIP
    >>> data.behaviors                                                    # doctest: +SKIP
    ['click', 'collect', 'cart', 'buy']
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import HeteroData

from .datasets import PathLike
from .datasets._base import resolve_order
from .multiplex import deduplicate, holdout_validation, make_multiplex, validate
from .sslrec import SSLREC_ORDERS

log = logging.getLogger(__name__)

TEST_FILES = ('test.txt',)
VAL_FILES = ('validation.txt', 'valid.txt', 'val.txt')
#: files of such folders that hold no single behavior
NOT_BEHAVIORS = ('train', 'all', 'test', 'validation', 'valid', 'val')


def read_pairs(path: Path, one_based: bool = False) -> np.ndarray:
    """``[2, N]`` int64 (user, item) pairs of a file of ``user item`` lines (whitespace or
    comma separated; blank lines skipped)."""
    out = []
    with open(path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.replace(',', ' ').split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f'{path}, line {line_no}: expected "user item", got '
                                 f'{len(fields)} fields: {line.strip()[:80]!r}')
            try:
                u, i = int(fields[0]), int(fields[1])
            except ValueError:
                raise ValueError(f'{path}, line {line_no}: ids must be integers, got '
                                 f'{line.strip()[:80]!r}') from None
            if one_based:
                u, i = u - 1, i - 1
            if u < 0 or i < 0:
                raise ValueError(f'{path}, line {line_no}: negative id in {line.strip()!r}'
                                 + (' (one_based=True subtracts 1)' if one_based else ''))
            out.append((u, i))
    if not out:
        return np.zeros((2, 0), dtype=np.int64)
    return np.asarray(out, dtype=np.int64).T


def _first(directory: Path, names: Sequence[str]) -> Path | None:
    return next((directory / n for n in names if (directory / n).is_file()), None)


def load_behavior_txt(directory: PathLike, behaviors: Sequence[str] | None = None, *,
                      one_based: bool = False, num_users: int | None = None,
                      num_items: int | None = None, seed: int = 0,
                      name: str | None = None) -> HeteroData:
    """Load a folder of per-behavior text files (module docstring).

    Args:
        directory: the folder.
        behaviors: behavior order upstream -> downstream (last = target), naming the files
            ``<behavior>.txt`` to read. Default: the behavior files present, in a known order.
        one_based: ids in the files start at 1.
        num_users, num_items: node counts when the files do not reach the largest ids.
        seed: seed of the validation holdout when there is no validation file.
        name: dataset name (default: the folder's name).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f'{directory}: no such folder; expected <behavior>.txt files '
                                'and test.txt')
    present = sorted(p.stem for p in directory.glob('*.txt')
                     if p.stem not in NOT_BEHAVIORS and not p.stem.endswith('_dict'))
    order = resolve_order(directory, present, behaviors, None, lambda b: f'{b}.txt',
                          orders=SSLREC_ORDERS, logger=log)
    test_path = _first(directory, TEST_FILES)
    if test_path is None:
        raise FileNotFoundError(f'{directory / TEST_FILES[0]}: missing; expected held-out '
                                f'{order[-1]!r} pairs as "user item" lines')
    val_path = _first(directory, VAL_FILES)
    edges = {b: read_pairs(directory / f'{b}.txt', one_based) for b in order}
    test = read_pairs(test_path, one_based)
    val = read_pairs(val_path, one_based) if val_path is not None else None
    if test.shape[1] == 0:
        raise ValueError(f'{test_path}: holds no test pairs')
    if edges[order[-1]].shape[1] == 0:
        raise ValueError(f'{directory / (order[-1] + ".txt")}: the target behavior has no '
                         'training pairs')
    arrays = [*edges.values(), test] + ([val] if val is not None else [])
    max_user = max(int(a[0].max()) for a in arrays if a.size)
    max_item = max(int(a[1].max()) for a in arrays if a.size)
    for what, given, needed in (('num_users', num_users, max_user + 1),
                                ('num_items', num_items, max_item + 1)):
        if given is not None and given < needed:
            raise ValueError(f'{directory}: {what}={given} but the files hold id {needed - 1}')
    n_users = num_users if num_users is not None else max_user + 1
    n_items = num_items if num_items is not None else max_item + 1
    target_keys = edges[order[-1]][0] * n_items + edges[order[-1]][1]
    for path, split in ((test_path, test), (val_path, val)):
        if split is None:
            continue
        seen = np.isin(split[0] * n_items + split[1], target_keys)
        if seen.any():
            k = int(np.flatnonzero(seen)[0])
            raise ValueError(f'{path}: {int(seen.sum())} pairs are also training pairs in '
                             f'{order[-1]}.txt (first: user {split[0, k]}, item '
                             f'{split[1, k]}); held-out pairs must be unseen in training')
    data = make_multiplex(n_users, n_items, order,
                          {b: torch.from_numpy(e) for b, e in edges.items()},
                          val=torch.from_numpy(val) if val is not None else None,
                          test=torch.from_numpy(test), name=name or directory.name)
    removed = deduplicate(data)
    if any(removed.values()):
        log.info('%s: removed duplicate training pairs per behavior: %s', directory, removed)
    if val is None:
        held = holdout_validation(data, seed)
        log.info('%s: no validation file (%s); held out one seeded (seed=%d) random training '
                 '%r pair per user with at least two: %d pairs', directory,
                 ' / '.join(VAL_FILES), seed, order[-1], held)
    validate(data)
    return data


def behavior_txt_entry(root: PathLike | None = None, *, behaviors=None, seed: int = 0,
                       **kwargs) -> HeteroData:
    """``load_dataset('behavior_txt', root=FOLDER)`` (or ``path=FOLDER``)."""
    folder = kwargs.pop('path', None) or root
    if folder is None:
        raise FileNotFoundError("dataset 'behavior_txt' needs root=<folder with "
                                "<behavior>.txt files and test.txt>")
    return load_behavior_txt(folder, behaviors, seed=seed, **kwargs)


__all__ = ['load_behavior_txt', 'read_pairs']
