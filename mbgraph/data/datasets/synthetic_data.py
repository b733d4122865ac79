"""A seeded generator of cascading behaviors (view -> cart -> buy): :func:`synthetic`."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
from torch_geometric.data import HeteroData

from ..multiplex import make_multiplex, validate
from ._base import PathLike, _edge, _leave_one_out


def synthetic(num_users: int = 3000, num_items: int = 1500,
              behaviors: Sequence[str] = ('view', 'cart', 'buy'), seed: int = 0, *,
              views_per_user: float = 40.0,
              funnel: Union[None, float, Sequence[float]] = None,
              subset_prob: float = 0.85, dim: int = 8, zipf: float = 0.8,
              preference: float = 2.0) -> HeteroData:
    """A seeded synthetic multi-behavior dataset with cascading behaviors.

    Item popularity follows a Zipf-like power law (exponent ``zipf``); user activity is
    log-normal around ``views_per_user`` first-behavior interactions. Users and items have
    low-rank latent factors (``dim``); a user's affinity to an item is ``preference`` times
    their scaled dot product plus log popularity, and each behavior picks items by Gumbel top-k
    sampling from it (so preferences are learnable beyond popularity). Behavior ``k`` has about
    ``funnel[k-1]`` times as many interactions per user as behavior ``k-1``; each of them lies
    within the user's behavior ``k-1`` items with probability ``subset_prob`` (views -> carts ->
    buys cascade), and otherwise is a new item. Downstream behaviors weigh preference more.
    Default ``funnel``: 0.25 per step and 0.45 for the last (Taobao's view -> cart -> buy
    ratios are about 0.22 and 0.47).

    Split: for users with at least 3 target interactions a random one is the test pair and
    another the validation pair. Deterministic for a given ``seed``; ``data.name`` is
    ``'synthetic'``.
    """
    behaviors = [str(b) for b in behaviors]
    K = len(behaviors)
    if K == 0:
        raise ValueError('at least one behavior is required')
    if funnel is None:
        funnel = [0.25] * max(K - 2, 0) + [0.45] * (K > 1)
    elif np.ndim(funnel) == 0:
        funnel = [float(funnel)] * (K - 1)
    funnel = [float(f) for f in funnel]
    if len(funnel) < K - 1:
        raise ValueError(f'funnel needs {K - 1} ratios for behaviors {behaviors}, got {funnel}')
    if num_users < 1 or num_items < 2:
        raise ValueError('synthetic needs num_users >= 1 and num_items >= 2')
    rng = np.random.default_rng(seed)
    f32 = np.float32
    ranks = rng.permutation(num_items).astype(f32) + 1
    log_pop = -zipf * np.log(ranks)
    pu = rng.standard_normal((num_users, dim)).astype(f32)
    qi = rng.standard_normal((num_items, dim)).astype(f32)
    affinity = (pu @ qi.T) / f32(np.sqrt(dim))

    sigma = 0.6
    activity = rng.lognormal(np.log(views_per_user) - sigma ** 2 / 2, sigma, num_users)
    counts = np.clip(np.round(activity), 3, max(3, num_items // 2)).astype(np.int64)
    counts = np.minimum(counts, num_items)
    rows = np.arange(num_users)

    def gumbel() -> np.ndarray:
        return -np.log(-np.log(rng.random((num_users, num_items), dtype=f32) + f32(1e-12)))

    def top_k(key: np.ndarray, k: np.ndarray) -> np.ndarray:
        """mask of each row's k largest keys (k may be 0)."""
        srt = -np.sort(-key, axis=1)
        thr = srt[rows, np.maximum(k, 1) - 1]
        mask = key >= thr[:, None]
        mask[k == 0] = False
        return mask

    masks = []
    scale = preference
    prev = top_k(scale * affinity + log_pop + gumbel(), counts)
    masks.append(prev)
    for k in range(1, K):
        scale = scale * 1.25
        n_prev = prev.sum(1)
        n_k = rng.binomial(n_prev, min(max(funnel[k - 1], 0.0), 1.0))
        n_in = rng.binomial(n_k, subset_prob)
        n_out = np.minimum(n_k - n_in, num_items - n_prev)
        key = scale * affinity + log_pop + gumbel()
        # rank previous-behavior items first: one sort serves both the inside and outside picks
        big = f32(key.max() - key.min() + 1)  # small enough to keep float32 keys distinct
        shifted = np.where(prev, key + big, key)
        srt = -np.sort(-shifted, axis=1)
        thr_in = srt[rows, np.maximum(n_in, 1) - 1]
        inside = prev & (shifted >= thr_in[:, None])
        inside[n_in == 0] = False
        thr_out = srt[rows, np.minimum(n_prev + np.maximum(n_out, 1) - 1, num_items - 1)]
        outside = ~prev & (shifted >= thr_out[:, None])
        outside[n_out == 0] = False
        prev = inside | outside
        masks.append(prev)

    edges = {}
    for beh, mask in zip(behaviors[:-1], masks[:-1]):
        uu, ii = np.nonzero(mask)
        edges[beh] = _edge(uu, ii)
    tu, ti = np.nonzero(masks[-1])
    train, val, test, _ = _leave_one_out(tu, ti, rng.random(tu.size), num_items)
    edges[behaviors[-1]] = _edge(tu[train], ti[train])
    data = make_multiplex(num_users, num_items, behaviors, edges,
                          val=_edge(tu[val], ti[val]), test=_edge(tu[test], ti[test]),
                          name='synthetic')
    validate(data)
    return data


def _synthetic_entry(root: Optional[PathLike] = None, *, behaviors=None, seed: int = 0,
                     **kwargs) -> HeteroData:
    """Seeded synthetic cascade (no files)."""
    if behaviors is not None:
        kwargs['behaviors'] = behaviors
    return synthetic(seed=seed, **kwargs)
