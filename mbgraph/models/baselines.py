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

import math

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

    What is computed (``query='interactions'``, the default) is what the authors' public code
    computes (``geonwooko/CascadingRank``, ``src/cascadingrank.py``: ``setup_query`` and
    ``run``), the code that produced the paper's reported numbers. The paper's method section
    could not be read through this project's tools (only its abstract and introduction were
    retrievable), so its equation numbers are not quoted here; docs/reference_cascadingrank.md
    lists fact by fact what was read, where, and what stays unverified.

    Behaviors :math:`t = 1..K` in the cascade order (upstream -> downstream; the target last).
    For behavior :math:`t` with user-item matrix :math:`\mathbf{R}_t \in \{0,1\}^{U \times I}`
    and degrees :math:`\mathbf{D}^U_t, \mathbf{D}^I_t`:

    * **smoothing operator**: :math:`\tilde{\mathbf{R}}_t = (\mathbf{D}^U_t)^{-1/2}
      \mathbf{R}_t (\mathbf{D}^I_t)^{-1/2}`, behavior :math:`t`'s own graph (not a union),
      symmetric normalisation; over the :math:`U + I` nodes :math:`\tilde{\mathbf{A}}_t =
      [[\mathbf{0}, \tilde{\mathbf{R}}_t], [\tilde{\mathbf{R}}_t^\top, \mathbf{0}]]`;
    * **query of user** :math:`u` **for behavior** :math:`t` (one per behavior):
      :math:`\mathbf{q}_t = [\mathbf{e}_u;\ \mathbf{R}_t^\top \mathbf{e}_u / d^U_t(u)]`, the
      user's one-hot node plus the items :math:`u` had under behavior :math:`t`, each
      :math:`1 / d^U_t(u)` (all-zero item part if :math:`d^U_t(u) = 0`);
    * **iteration** (power iteration, Jacobi: both halves from the previous iterate)

      .. math::
          \mathbf{r}_t^{(k)} = \gamma\, \tilde{\mathbf{A}}_t \mathbf{r}_t^{(k-1)}
          + \alpha\, \mathbf{q}_t + \beta\, \mathbf{r}_{t-1},
          \qquad \gamma = 1 - \alpha - \beta, \qquad \mathbf{r}_t^{(0)} = \mathbf{q}_t,
          \qquad \mathbf{r}_0 = \mathbf{q}_1,

      i.e. smoothing (:math:`\gamma`), query fitting (:math:`\alpha`) and cascading
      alignment with the upstream behavior's converged scores (:math:`\beta`); the fixed
      point solves :math:`(\mathbf{I} - \gamma \tilde{\mathbf{A}}_t) \mathbf{r}_t = \alpha
      \mathbf{q}_t + \beta \mathbf{r}_{t-1}` (a contraction with factor :math:`\gamma`, as
      the spectral radius of :math:`\tilde{\mathbf{A}}_t` is at most 1);
    * **stopping**: after the first :math:`k` with :math:`\frac{1}{B} \sum_{b=1}^{B}
      \lVert \mathbf{r}_t^{(k)} - \mathbf{r}_t^{(k-1)} \rVert_1 \le \epsilon` (the mean L1
      change over the :math:`B` queries of the batch; the code divides by its configured
      batch size, 1024, also for a last, smaller batch: here by the batch's own size), or
      at :math:`k` = ``max_iter``; the last iterate is kept;
    * **ranking**: the item half of the target's :math:`\mathbf{r}_K`; the evaluator masks
      the user's training target items (the code masks its ``train.txt``).

    The authors' Taobao setting (best HR@10, their README) is :math:`\alpha = 0, \beta =
    0.9` (:math:`\gamma = 0.1`), :math:`\epsilon = 10^{-4}`, ``max_iter`` = 100, batches of
    1,024 users: the defaults. Tmall :math:`\alpha = 0.7, \beta = 0.2`; Tenrec
    :math:`\alpha = 0.3, \beta = 0.6`. With :math:`\alpha = 0` the query enters only
    through :math:`\mathbf{r}_0 = \mathbf{q}_1`.

    ``query='one_hot'`` is this library's first reading, kept by name: the same update with
    :math:`\mathbf{q} = \mathbf{e}_u` for every behavior (no item half),
    :math:`\mathbf{r}_0 = \mathbf{e}_u`, started at :math:`\mathbf{r}_t^{(0)} =
    \mathbf{r}_{t-1}` and stopped when the *largest* L1 change of the batch is below
    :math:`\epsilon`. The fixed points differ from the default's by the query only.

    Args:
        data: the multiplex graph; its behavior order is the cascade.
        alpha: :math:`\alpha`, strength of query fitting, in [0, 1].
        beta: :math:`\beta`, strength of cascading alignment, in [0, 1];
            :math:`\alpha + \beta \le 1` and not both 0.
        tolerance: :math:`\epsilon > 0`.
        max_iter: iterations per behavior at most (an integer >= 1).
        query: ``'interactions'`` (the authors' code) or ``'one_hot'`` (the first reading).
    """

    QUERIES = ('interactions', 'one_hot')

    def __init__(self, data: HeteroData, alpha: float = 0.0, beta: float = 0.9,
                 tolerance: float = 1e-4, max_iter: int = 100, query: str = 'interactions'):
        super().__init__(data)
        try:
            alpha, beta, tolerance = float(alpha), float(beta), float(tolerance)
        except (TypeError, ValueError) as e:
            raise ValueError(f'CascadingRank needs numbers for alpha, beta and tolerance, got '
                             f'alpha={alpha!r}, beta={beta!r}, tolerance={tolerance!r}') from e
        if not (0.0 <= alpha <= 1.0 and 0.0 <= beta <= 1.0 and alpha + beta <= 1.0 + 1e-12):
            raise ValueError(f'CascadingRank needs alpha, beta in [0, 1] with alpha + beta <= 1 '
                             f'(gamma = 1 - alpha - beta >= 0), got alpha={alpha}, beta={beta}')
        if alpha + beta == 0.0:
            raise ValueError('CascadingRank with alpha = beta = 0 ranks nothing: the query '
                             'enters only through alpha (query fitting) and beta (r_0 = q_1)')
        if not (math.isfinite(tolerance) and tolerance > 0):
            raise ValueError(f'CascadingRank needs a finite tolerance > 0, got {tolerance}')
        if isinstance(max_iter, bool) or not isinstance(max_iter, (int, float)) or \
                max_iter != int(max_iter) or max_iter < 1:
            raise ValueError(f'CascadingRank needs an integer max_iter >= 1, got {max_iter!r}')
        if query not in self.QUERIES:
            raise ValueError(f'CascadingRank query must be one of {self.QUERIES}, got '
                             f'{query!r}')
        self.alpha, self.beta = alpha, beta
        self.gamma = max(0.0, 1.0 - alpha - beta)
        self.tolerance, self.max_iter = tolerance, int(max_iter)
        self.query = query
        self.adjacency = BehaviorAdjacency(data)
        self.iterations: list[int] = []      # of the last batch, per behavior
        # per behavior, the item half of q_t as a per-user CSR: items and 1 / d_t(u)
        for t, b in enumerate(self.behaviors):
            ei = torch.unique(data[edge_type(b)].edge_index, dim=1)   # sorted by user
            deg = torch.bincount(ei[0], minlength=self.num_users)
            ptr = torch.zeros(self.num_users + 1, dtype=torch.long)
            ptr[1:] = torch.cumsum(deg, 0)
            self.register_buffer(f'_q{t}_ptr', ptr, persistent=False)
            self.register_buffer(f'_q{t}_item', ei[1].clone(), persistent=False)
            self.register_buffer(f'_q{t}_weight', 1.0 / deg[ei[0]].float(), persistent=False)

    def _operators(self):
        if self.adjacency.device != self.device:
            self.adjacency.to(self.device)
        return [self.adjacency.operator(b, norm='symmetric') for b in self.behaviors]

    def queries(self, users: Tensor, t: int) -> Tensor:
        """``[U + I, B]`` query vectors :math:`\\mathbf{q}_t` of ``users`` for behavior
        ``t`` (an index into the cascade), one column per user."""
        n, cols = self.num_users + self.num_items, torch.arange(users.numel(),
                                                                device=self.device)
        q = torch.zeros(n, users.numel(), device=self.device)
        q[users, cols] = 1.0
        if self.query == 'one_hot':
            return q
        ptr = getattr(self, f'_q{t}_ptr')
        start, end = ptr[users], ptr[users + 1]
        lengths = end - start
        col = torch.repeat_interleave(cols, lengths)
        offset = torch.arange(int(lengths.sum()), device=self.device) - \
            torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        pos = torch.repeat_interleave(start, lengths) + offset
        q[self.num_users + getattr(self, f'_q{t}_item')[pos], col] = \
            getattr(self, f'_q{t}_weight')[pos]
        return q

    def rankings(self, users: Tensor) -> Tensor:
        """``[U + I, B]`` ranking scores :math:`\\mathbf{r}_K` of the target behavior, one
        column per query user."""
        users = users.to(self.device)
        self.iterations = []
        one_hot = self.query == 'one_hot'
        r_prev = None
        for t, op in enumerate(self._operators()):
            q = self.queries(users, t)
            if r_prev is None:
                r_prev = q                               # r_0 = q_1
            fixed = self.alpha * q + self.beta * r_prev
            r = r_prev if one_hot else q                 # r_t^(0)
            for k in range(1, self.max_iter + 1):
                r_next = self.gamma * (op @ r) + fixed
                change = (r_next - r).abs().sum(0)       # L1 per query
                done = bool(change.max() < self.tolerance) if one_hot else \
                    bool(change.mean() <= self.tolerance)
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
                f'tolerance={self.tolerance}, max_iter={self.max_iter}, query={self.query!r}')


__all__ = ['CascadingRank', 'History', 'MostPop', 'TrainingFree']
