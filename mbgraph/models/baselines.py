r"""Training-free baselines: models like any other (``build_model('mostpop', data)``,
``mbgraph train --model history``) that score from the training graph's counts alone.

* :class:`MostPop` -- every user gets the items ranked by their number of training
  interactions of the target behavior;
* :class:`History` -- the user's own items of the auxiliary behaviors first, the most
  downstream behavior first (carted before viewed), then by how many auxiliary behaviors the
  user had the item under, then by popularity; every other item after them by popularity. It
  measures the shortcut of :mod:`mbgraph.data.shortcuts`;
* :class:`CascadingRank` -- Ko, Jeon and Jung, "Personalized Ranking on Cascading Behavior
  Graphs for Accurate Multi-Behavior Recommendation" (arXiv 2502.11335): personalised ranking
  scores propagated along the behavior cascade.

They have no parameters: the :class:`~mbgraph.training.Trainer` runs no epoch and no optimizer
step for them (it evaluates the validation split once), and the evaluators call ``score``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from ..data.adjacency import BehaviorAdjacency
from ..data.multiplex import behaviors_of, edge_type, num_users_items
from ..data.sampling import DEFAULT_BATCH_SIZE


class TrainingFree(nn.Module):
    """Base of the training-free models: the model contract without parameters.

    ``score(users, items=None)`` as every model; ``loss`` raises, ``batch_source`` is None,
    ``train_behaviors`` is empty, and ``trainable`` is False (the Trainer's cue to run no
    epoch). Tensors computed from the graph are non-persistent buffers: they follow
    ``model.to(device)`` and a checkpoint holds nothing but the configuration.
    """

    trainable = False

    def __init__(self, data: HeteroData):
        super().__init__()
        self.behaviors: list[str] = behaviors_of(data)
        self.target = self.behaviors[-1]
        self.num_users, self.num_items = num_users_items(data)
        self.train_behaviors: list[str] = []
        self.register_buffer('_anchor', torch.zeros(0), persistent=False)   # carries the device

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def loss(self, batch):
        raise RuntimeError(f'{type(self).__name__} is training-free: it has no loss to train')

    def batch_source(self, data: HeteroData, batch_size: int = DEFAULT_BATCH_SIZE,
                     seed: int = 0):
        return None

    def score_all(self, users: Tensor) -> Tensor:
        """``[B, num_items]`` scores of every item for ``users``."""
        raise NotImplementedError

    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        scores = self.score_all(users.to(self.device))
        if items is None:
            return scores
        return scores.gather(1, items.to(scores.device))

    def extra_repr(self) -> str:
        return f'users={self.num_users}, items={self.num_items}, behaviors={self.behaviors}'


def _popularity(data: HeteroData, behavior: str, num_items: int) -> Tensor:
    """Number of training interactions of ``behavior`` per item, ``[num_items]`` float."""
    items = data[edge_type(behavior)].edge_index[1]
    return torch.bincount(items, minlength=num_items).float()


class MostPop(TrainingFree):
    r"""Most popular: :math:`s_{ui} = |\{v : (v, i) \in \mathcal{E}_{target}\}|`, the item's
    number of training interactions of the target behavior, the same for every user.

    Args:
        data: the multiplex graph.
    """

    def __init__(self, data: HeteroData):
        super().__init__(data)
        self.register_buffer('popularity', _popularity(data, self.target, self.num_items),
                             persistent=False)

    def score_all(self, users: Tensor) -> Tensor:
        return self.popularity.unsqueeze(0).expand(users.numel(), -1).clone()


class History(TrainingFree):
    r"""The user's own auxiliary items first.

    With the auxiliary behaviors :math:`1..K-1` (upstream -> downstream) and
    :math:`\mathrm{deep}(u, i)` the index of the most downstream one under which user
    :math:`u` had item :math:`i` in training (0 when none), :math:`c(u, i)` the number of
    auxiliary behaviors under which it had it, and :math:`p_i` the item's target popularity,
    items are ranked by the key :math:`(\mathrm{deep}, c, p)` in lexicographic order,
    encoded as one score

    .. math::
        s_{ui} = K \cdot \mathrm{deep}(u, i) + c(u, i) + \frac{p_i}{1 + \max_j p_j}

    (:math:`c \le K - 1 < K` and the last term is below 1, so no term can overtake the one
    before it). The logs hold no repeat counts or timestamps (the loaders keep one pair per
    behavior), so "count" is the number of auxiliary behaviors.

    Args:
        data: the multiplex graph (with at least one auxiliary behavior for a history).
    """

    def __init__(self, data: HeteroData):
        super().__init__(data)
        pop = _popularity(data, self.target, self.num_items)
        self.register_buffer('popularity', pop / (1.0 + pop.max()), persistent=False)
        aux = self.behaviors[:-1]
        self.scale = float(len(self.behaviors))
        # per-user CSR of (item, deep, count) over the auxiliary behaviors
        keys, deep = [], []
        for level, b in enumerate(aux, start=1):
            ei = data[edge_type(b)].edge_index
            keys.append(ei[0] * self.num_items + ei[1])
            deep.append(torch.full((ei.size(1),), level, dtype=torch.long))
        if keys:
            keys, deep = torch.cat(keys), torch.cat(deep)
            uniq, inverse = torch.unique(keys, return_inverse=True)
            count = torch.bincount(inverse, minlength=uniq.numel())
            deepest = torch.zeros(uniq.numel(), dtype=torch.long).scatter_reduce(
                0, inverse, deep, reduce='amax')
        else:
            uniq = torch.zeros(0, dtype=torch.long)
            count = deepest = uniq
        self.register_buffer('_item', uniq % self.num_items, persistent=False)
        self.register_buffer('_bonus', (self.scale * deepest + count).float(), persistent=False)
        ptr = torch.zeros(self.num_users + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(torch.bincount(uniq // self.num_items,
                                              minlength=self.num_users), 0)
        self.register_buffer('_ptr', ptr, persistent=False)

    def score_all(self, users: Tensor) -> Tensor:
        scores = self.popularity.unsqueeze(0).repeat(users.numel(), 1)
        start, end = self._ptr[users], self._ptr[users + 1]
        lengths = end - start
        row = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), lengths)
        # positions start[r], ..., end[r] - 1 of each row r, flattened
        offset = torch.arange(int(lengths.sum()), device=users.device) - \
            torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        pos = torch.repeat_interleave(start, lengths) + offset
        scores[row, self._item[pos]] += self._bonus[pos]
        return scores


class CascadingRank(TrainingFree):
    r"""CascadingRank (Ko, Jeon and Jung, arXiv 2502.11335): personalised ranking on the
    cascading behavior graph, training-free.

    For a query user :math:`u` with one-hot query vector :math:`\mathbf{q}` over the
    :math:`U + I` nodes, behavior :math:`t` (upstream -> downstream, :math:`t = 1..K`) ranks all
    nodes by the minimiser of

    .. math::
        \gamma\, \mathbf{r}_t^\top (\mathbf{I} - \tilde{\mathbf{A}}_t) \mathbf{r}_t
        + \alpha \lVert \mathbf{r}_t - \mathbf{q} \rVert^2
        + \beta \lVert \mathbf{r}_t - \mathbf{r}_{t-1} \rVert^2,
        \qquad \gamma = 1 - \alpha - \beta,\ \mathbf{r}_0 = \mathbf{q}

    (smoothness on behavior :math:`t`'s graph, query fitting, cascading alignment with the
    upstream behavior's ranking), with :math:`\tilde{\mathbf{A}}_t =
    \mathbf{D}_t^{-1/2} \mathbf{A}_t \mathbf{D}_t^{-1/2}` the symmetric-normalised user-item
    adjacency of behavior :math:`t`. Its fixed point is computed by the iteration

    .. math::
        \mathbf{r}_t^{(k)} = \gamma\, \tilde{\mathbf{A}}_t \mathbf{r}_t^{(k-1)}
        + \alpha\, \mathbf{q} + \beta\, \mathbf{r}_{t-1}, \qquad
        \mathbf{r}_t^{(0)} = \mathbf{r}_{t-1},

    until :math:`\lVert \mathbf{r}_t^{(k)} - \mathbf{r}_t^{(k-1)} \rVert_1 < \epsilon` for every
    query of the batch (or ``max_iter`` steps); a contraction with factor :math:`\gamma`. The
    target behavior's item scores :math:`\mathbf{r}_K[U:]` rank the items. The paper's best
    setting on Taobao is :math:`\alpha = 0, \beta = 0.9` (the defaults), Tmall
    :math:`\alpha = 0.7, \beta = 0.2`, Tenrec :math:`\alpha = 0.3, \beta = 0.6`.

    Reading: the three terms, their weights (:math:`\gamma = 1 - \alpha - \beta`), the
    tolerance on the residual and ``max_iter`` = 100 are the paper's; that the query is the
    user's one-hot node vector, that :math:`\mathbf{r}_0 = \mathbf{q}` (with the paper's
    Taobao :math:`\alpha = 0` the query must enter through the first behavior), that each
    :math:`\tilde{\mathbf{A}}_t` is behavior :math:`t`'s own graph (not a union) and the
    residual's norm (L1) are this implementation's reading, as the method section could not
    be consulted in full here.

    Args:
        data: the multiplex graph; its behavior order is the cascade.
        alpha: :math:`\alpha`, strength of query fitting.
        beta: :math:`\beta`, strength of cascading alignment (:math:`\alpha + \beta \le 1`).
        tolerance: :math:`\epsilon`.
        max_iter: iterations per behavior at most.
    """

    def __init__(self, data: HeteroData, alpha: float = 0.0, beta: float = 0.9,
                 tolerance: float = 1e-4, max_iter: int = 100):
        super().__init__(data)
        alpha, beta = float(alpha), float(beta)
        if not (0.0 <= alpha <= 1.0 and 0.0 <= beta <= 1.0 and alpha + beta <= 1.0 + 1e-12):
            raise ValueError(f'CascadingRank needs alpha, beta in [0, 1] with alpha + beta <= 1 '
                             f'(gamma = 1 - alpha - beta >= 0), got alpha={alpha}, beta={beta}')
        if alpha + beta == 0.0:
            raise ValueError('CascadingRank with alpha = beta = 0 ranks nothing: the query '
                             'enters only through alpha (query fitting) and beta (r_0 = q)')
        if tolerance <= 0 or max_iter < 1:
            raise ValueError(f'tolerance must be > 0 and max_iter >= 1, got {tolerance}, '
                             f'{max_iter}')
        self.alpha, self.beta = alpha, beta
        self.gamma = max(0.0, 1.0 - alpha - beta)
        self.tolerance, self.max_iter = float(tolerance), int(max_iter)
        self.adjacency = BehaviorAdjacency(data)
        self.iterations: list[int] = []      # of the last batch, per behavior

    def _operators(self):
        if self.adjacency.device != self.device:
            self.adjacency.to(self.device)
        return [self.adjacency.operator(b, norm='symmetric') for b in self.behaviors]

    def rankings(self, users: Tensor) -> Tensor:
        """``[U + I, B]`` ranking scores :math:`\\mathbf{r}_K` of the target behavior, one
        column per query user."""
        n = self.num_users + self.num_items
        q = torch.zeros(n, users.numel(), device=self.device)
        q[users, torch.arange(users.numel(), device=self.device)] = 1.0
        r_prev = q
        self.iterations = []
        for op in self._operators():
            fixed = self.alpha * q + self.beta * r_prev
            r = r_prev
            for k in range(1, self.max_iter + 1):
                r_next = self.gamma * (op @ r) + fixed
                done = bool((r_next - r).abs().sum(0).max() < self.tolerance)
                r = r_next
                if done:
                    break
            self.iterations.append(k)
            r_prev = r
        return r_prev

    def score_all(self, users: Tensor) -> Tensor:
        return self.rankings(users)[self.num_users:].t().contiguous()

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, alpha={self.alpha}, beta={self.beta}, '
                f'tolerance={self.tolerance}, max_iter={self.max_iter}')


__all__ = ['CascadingRank', 'History', 'MostPop', 'TrainingFree']
