r"""A blend of ranked scores, its weights fitted on the validation split (issue 12).

``ScoreBlend`` ranks by a weighted sum of its members' scores, each standardised over all
items for the user:

.. math::
    s_{ui} = \sum_k w_k \, \frac{s^{(k)}_{ui} - \mu^{(k)}_u}{\sigma^{(k)}_u}, \qquad
    \mu^{(k)}_u = \operatorname{mean}_i s^{(k)}_{ui}, \quad
    \sigma^{(k)}_u = \operatorname{std}_i s^{(k)}_{ui}

so that members on different scales (a trained model's inner products, CascadingRank's
propagated mass) add on one scale. The members are any models with ``score(users)``: trained
checkpoints and training-free baselines alike. The weights are hyperparameters: chosen on the
validation split (:func:`fit_blend_weights`, a grid with the first member's weight fixed at
1), never on the test.

Like :class:`~mbgraph.models.hybrid.HistoryHybrid`, a blend with a member that ranks the
user's own history (``history``, ``cascadingrank``) **answers a different question from the
pure models**: how well the test buys can be ranked when the benchmark's history shortcut is
used on purpose. It belongs beside those baselines, not in the pure models' ranking.

The command line: ``mbgraph blend --member RUN/best.pt --member cascadingrank``
(docs/guide.md, "Blending a trained model with a baseline").
"""
from __future__ import annotations

import itertools
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

#: the grid each non-first member's weight is searched over by default
DEFAULT_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


def standardise(scores: Tensor) -> Tensor:
    """Per row (user): ``(s - mean) / std`` over the items (unbiased std, at least 1e-12).
    A row with equal scores becomes zeros."""
    mean = scores.mean(1, keepdim=True)
    std = scores.std(1, keepdim=True).clamp_min(1e-12)
    return (scores - mean) / std


class ScoreBlend(nn.Module):
    """Rank by ``sum_k weights[k] * standardise(members[k].score(users))``.

    Args:
        members: models with ``score(users) -> [B, num_items]`` on the same data (same users
            and items); they are put in eval mode and not trained.
        weights: one number per member.
        names: labels for the members (default ``member0``, ``member1``, ...).
    """

    trainable = False

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float],
                 names: Optional[Sequence[str]] = None):
        super().__init__()
        if len(members) < 1:
            raise ValueError('a blend needs at least one member')
        weights = [float(w) for w in weights]
        if len(weights) != len(members):
            raise ValueError(f'{len(weights)} weights for {len(members)} members: give one '
                             'weight per member')
        if not all(w == w and abs(w) != float('inf') for w in weights):
            raise ValueError(f'blend weights must be finite numbers, got {weights}')
        names = list(names) if names is not None else [f'member{k}' for k in
                                                       range(len(members))]
        if len(names) != len(members):
            raise ValueError(f'{len(names)} names for {len(members)} members')
        self.members = nn.ModuleList(members)
        self.weights = weights
        self.names = names
        self.train_behaviors: List[str] = []

    def prepare_eval(self, split: Optional[str]) -> None:
        for m in self.members:
            if hasattr(m, 'prepare_eval'):
                m.prepare_eval(split)

    @torch.no_grad()
    def member_scores(self, users: Tensor) -> Tensor:
        """``[K, B, num_items]``: every member's standardised scores of every item."""
        out = []
        for name, m in zip(self.names, self.members):
            m.eval()
            scores = m.score(users).float()
            if not bool(torch.isfinite(scores).all()):
                raise ValueError(f'member {name!r} returned non-finite scores (inf or NaN): '
                                 'they cannot be standardised; blend models whose scores are '
                                 'finite')
            out.append(standardise(scores))
        shapes = {tuple(s.shape) for s in out}
        if len(shapes) != 1:
            raise ValueError(f'the members score different shapes {sorted(shapes)}: they '
                             'must be models of the same users and items')
        return torch.stack(out)

    @torch.no_grad()
    def score(self, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        z = self.member_scores(users)
        w = torch.tensor(self.weights, dtype=z.dtype, device=z.device)
        scores = torch.tensordot(w, z, dims=1)
        return scores if items is None else scores.gather(1, items.to(scores.device))

    def loss(self, batch):
        raise RuntimeError('a ScoreBlend is not trained: its members are trained (or '
                           'training-free) and its weights are fitted on validation')

    def extra_repr(self) -> str:
        return ', '.join(f'{n}={w:g}' for n, w in zip(self.names, self.weights))


def weight_grid(num_members: int, grid: Sequence[float] = DEFAULT_GRID) -> List[List[float]]:
    """Every weight vector searched: the first member at 1, each other member at every value
    of ``grid`` (their product; a member at 0 is left out of the sum)."""
    if num_members < 1:
        raise ValueError('a blend needs at least one member')
    grid = sorted({float(g) for g in grid})
    if not grid:
        raise ValueError('the weight grid is empty')
    return [[1.0, *rest] for rest in itertools.product(grid, repeat=num_members - 1)]


def fit_blend_weights(blend: ScoreBlend, evaluator, grid: Sequence[float] = DEFAULT_GRID,
                      monitor: Optional[str] = None) -> Dict[str, Any]:
    """Choose ``blend.weights`` on ``evaluator``'s split (the validation split) by grid search.

    Every weight vector of :func:`weight_grid` is evaluated in one pass over the split's users
    (each member scores a batch once). The vector with the best ``monitor`` (default the
    evaluator's first NDCG@K) wins; ties go to the earlier vector (smaller weights on the
    later members). Sets ``blend.weights`` and returns ``{'weights', 'monitor', 'best',
    'at_grid_edge', 'table', 'seconds'}`` (``table``: every vector with its metrics;
    ``at_grid_edge``: a weight took the grid's largest value, so a wider grid may do better).
    """
    vectors = weight_grid(len(blend.members), grid)
    monitor = monitor or f'ndcg@{evaluator.ks[0]}'
    W = torch.tensor(vectors)

    def variants(users):
        z = blend.member_scores(users)
        return (torch.tensordot(w.to(z.dtype), z, dims=1) for w in W)

    blend.prepare_eval(evaluator.split)
    t0 = time.perf_counter()
    results = evaluator.evaluate_variants(variants, len(vectors))
    if monitor not in results[0]:
        raise ValueError(f'monitor {monitor!r} is not among the metrics {sorted(results[0])}')
    best = max(range(len(vectors)), key=lambda j: (results[j][monitor], -j))
    blend.weights = list(vectors[best])
    top = max(float(g) for g in grid)
    return {'weights': list(vectors[best]), 'monitor': monitor, 'best': results[best],
            'at_grid_edge': top > 0 and any(w == top for w in vectors[best][1:]),
            'table': [{'weights': v, **r} for v, r in zip(vectors, results)],
            'seconds': time.perf_counter() - t0}
