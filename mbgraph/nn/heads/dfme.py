r"""The Distributed Fitting Multi-Expert network (DFME) of COPF (Meng et al., "Combinatorial
Optimization Perspective based Framework for Multi-behavior Recommendation", KDD 2025,
section 4.3, eq 8-15) with its contrastive loss (eq 8, 17).

**Contrastive alignment** (eq 8): the target behavior :math:`K` and every auxiliary behavior
:math:`k` are pulled together per user (and per item),

.. math::
    \mathcal{L}_{cl,U}^{K,k} = \frac{1}{|U|} \sum_{u \in U} -\log
    \frac{\exp(\varphi(\mathbf{e}_u^{K,*}, \mathbf{e}_u^{k,*})/\tau)}
    {\sum_{u' \in U} \exp(\varphi(\mathbf{e}_u^{K,*}, \mathbf{e}_{u'}^{k,*})/\tau)},
    \qquad \mathcal{L} \mathrel{+}= \gamma \sum_{k<K}
    (\mathcal{L}_{cl,U}^{K,k} + \mathcal{L}_{cl,V}^{K,k})   \quad \text{(eq 17)}.

The anchors :math:`u` are the users (items: positives and negatives) of the batch's
target-behavior triples, as in the authors' code (all users of the graph as anchors would be
:math:`O(|U|^2)`); the denominator runs over all users (``negatives='all'``, the paper and the
code) or the batch's (``negatives='batch'``). :math:`\varphi` is the inner product (the
paper's example); ``cosine=True`` is the code's cosine similarity.

**Behavior-specific experts** (eq 9): :math:`\mathbf{e}^k = \mathbf{e}_u^{k,*} \circ
\mathbf{e}_v^{k,*}`.

**Behavior-fitting experts** (eq 10-12), computed once per pass over the whole graph in
:meth:`DFMEHead.precompute`: for task :math:`k` and another behavior :math:`k'`,

.. math::
    \mathbf{E}^{k,k',0} = (\alpha\, \mathbf{E}^{k,*} + \beta\, \mathbf{E}^{k',*}) / 2, \qquad
    \mathbf{E}^{k,k',l+1} = (\mathbf{D}_{k'}^{-1}\mathbf{A}_{k'} + \mathbf{I})
        (\mathbf{E}^{k,k',l} \circ \mathbf{r}^{k',l}), \qquad
    \mathbf{r}^{k',l} = \mathbf{r}^{k',l-1} \mathbf{W}^{l},

:math:`\mathbf{e}_{out}^{k,k'} = s \sum_{l=0}^{L} \mathbf{E}^{k,k',l}` (layers summed as eq 7;
:math:`s` = ``output_scale``, 0.1 in the code, 1 by default) and
:math:`\mathbf{e}^{k,k'} = \mathbf{e}_{u,out}^{k,k'} \circ \mathbf{e}_{v,out}^{k,k'}`.
:math:`\mathbf{r}^{k',0} \in \mathbb{R}^d` is a learnable behavior embedding, :math:`\mathbf{W}^l
\in \mathbb{R}^{d \times d}` are shared by the behaviors. The graph is behavior :math:`k'`'s
(eq 10 and appendix A.3: "capture the effective information about behavior :math:`k'`");
``fit_graph='task'`` is the code's reading, task :math:`k`'s own graph. The paper asks for small
:math:`\alpha, \beta` without values; the defaults are the code's (:math:`\alpha = 0.001` on
the task's own embeddings, :math:`\beta = 0.1` on the other behavior's).

**Aggregation** (eq 13-15): a softmax gate on the task's own embeddings weighs the task's
specific expert and the fitting experts of the other behaviors; in every auxiliary task the
target behavior's term is cut from the backward pass; the tower averages the vector:

.. math::
    \mathbf{g}^k &= \mathrm{softmax}(\mathbf{W}_g(\mathbf{e}_u^{k,*} \| \mathbf{e}_v^{k,*})
        + \mathbf{b}_g) \\
    \mathbf{o}^k(j) &= \begin{cases} g^k_j\, \mathbf{e}^k & j = k \\
        g^k_j\, \mathbf{e}^{k,j} & j \ne k,\ j \ne K \\
        \mathrm{sg}(g^k_j\, \mathbf{e}^{k,j}) & j \ne k,\ j = K \end{cases} \\
    \hat o^k_{uv} &= \mathrm{mean}\Big(\sum_{j=1}^{K} \mathbf{o}^k(j)\Big)

(eq 14 writes the fitting expert of task :math:`k` and behavior :math:`j` as
:math:`\mathbf{e}^{j,k}`; we follow eq 10 and appendix A.3, :math:`\mathbf{e}^{k,j} =
f_k(\cdot)`.) The stop-gradient covers the gated product, as eq 14 writes it; the code stops
the expert only, and its index bug never applies it (see REFERENCE_NOTES). The code multiplies
the scores by 300 before the BPR softplus (``score_scale=300``; default 1).

**Ablations of COPF table 3**: ``contrastive=False`` (w/o con.), ``forward_fit=False`` (w/o
for.: the other behaviors' specific experts :math:`\mathbf{e}^j` replace the fitting experts),
``backward_fit=False`` (w/o back.: no stop-gradient), ``all_sg=True`` (all sg.: every
:math:`j \ne k` term of every task is stopped), ``fitting=False`` (w/o fit.: both
``forward_fit`` and ``backward_fit`` off).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn

from ...losses import info_nce
from ..encoders.base import BehaviorEmbeddings
from .base import gather_pairs
from .shared_bottom import MTLHead, StackedMLP, check_embeddings

EXTRAS_KEY = 'dfme'


class DFMEHead(MTLHead):
    r"""COPF's Distributed Fitting Multi-Expert head (module docstring: eq 8-15).

    Args:
        embedding_dim (int): :math:`d`.
        num_behaviors (int): :math:`K` (the last behavior is the target).
        alpha (float, optional): :math:`\alpha`, weight of the task's own embeddings in the
            fitting input. (default: ``0.001``)
        beta (float, optional): :math:`\beta`, weight of the other behavior's embeddings.
            (default: ``0.1``)
        num_layers (int, optional): :math:`L`, fitting convolution layers. (default: ``1``)
        fit_graph (str, optional): ``'other'`` (:math:`\mathbf{A}_{k'}`, eq 10) or ``'task'``
            (:math:`\mathbf{A}_k`, the code). (default: ``'other'``)
        output_scale (float, optional): :math:`s` on the fitting output (code: ``0.1``).
            (default: ``1.0``)
        tau (float, optional): temperature :math:`\tau`. (default: ``0.1``)
        gamma (float, optional): weight :math:`\gamma` of the contrastive loss. (default: ``1.0``)
        cosine (bool, optional): cosine similarity for :math:`\varphi`. (default: ``False``)
        negatives (str, optional): ``'all'`` or ``'batch'`` (eq 8's denominator).
            (default: ``'all'``)
        cl_norm (str, optional): what the sum over the anchors is divided by: ``'batch'``,
            their number (a mean over the anchors, as eq 8 averages over its users), or
            ``'total'``, :math:`|U|` (:math:`|V|`) whatever the batch (the code: each batch
            carries its share of the all-user sum). (default: ``'batch'``)
        contrastive (bool, optional): eq 8 on (``False`` = w/o con.). (default: ``True``)
        forward_fit (bool, optional): fitting experts on (``False`` = w/o for.).
            (default: ``True``)
        backward_fit (bool, optional): eq 14's stop-gradient on (``False`` = w/o back.).
            (default: ``True``)
        all_sg (bool, optional): stop every cross-task term (all sg.). (default: ``False``)
        fitting (bool, optional): ``False`` turns off both fitting improvements (w/o fit.).
            (default: ``True``)
        gate_per_task (bool, optional): one gate layer per task instead of eq 13's shared
            :math:`\mathbf{W}_g`. (default: ``False``)
        score_scale (float, optional): factor on the scores (the code's ``mult``: ``300``).
            (default: ``1.0``)

    Shapes:
        - **input:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` ``[K, U, d]`` /
          ``[K, I, d]`` after :meth:`precompute` (which adds ``extras['dfme']``: fitted user
          and item embeddings ``[K, K, U, d]`` and ``[K, K, I, d]``, indexed (task, behavior),
          the diagonal being the behavior-specific embeddings), users ``[B]``, items ``[B]`` or
          ``[B, C]``.
        - **output:** scores ``[B]`` or ``[B, C]``; :meth:`score_all` ``[B, I]``.
    """

    chunk_size: int = 4096  # score_all is matrix products: [K, B, chunk] at a time

    def __init__(self, embedding_dim: int, num_behaviors: int, alpha: float = 0.001,
                 beta: float = 0.1, num_layers: int = 1, fit_graph: str = 'other',
                 output_scale: float = 1.0, tau: float = 0.1, gamma: float = 1.0,
                 cosine: bool = False, negatives: str = 'all', cl_norm: str = 'batch',
                 contrastive: bool = True,
                 forward_fit: bool = True, backward_fit: bool = True, all_sg: bool = False,
                 fitting: bool = True, gate_per_task: bool = False, score_scale: float = 1.0):
        super().__init__(embedding_dim, num_behaviors)
        if num_layers < 1:
            raise ValueError(f'DFMEHead needs num_layers >= 1 fitting layers, got {num_layers}')
        if fit_graph not in ('other', 'task'):
            raise ValueError(f"unknown fit_graph {fit_graph!r}; expected 'other' or 'task'")
        if negatives not in ('all', 'batch'):
            raise ValueError(f"unknown negatives {negatives!r}; expected 'all' or 'batch'")
        if cl_norm not in ('batch', 'total'):
            raise ValueError(f"unknown cl_norm {cl_norm!r}; expected 'batch' or 'total'")
        if tau <= 0:
            raise ValueError(f'temperature tau must be > 0, got {tau}')
        if all_sg and not (backward_fit and fitting):
            raise ValueError('all_sg=True replaces the stop-gradient of eq 14 and needs it on '
                             '(backward_fit=True, fitting=True)')
        self.alpha, self.beta = float(alpha), float(beta)
        self.num_layers = int(num_layers)
        self.fit_graph = fit_graph
        self.output_scale = float(output_scale)
        self.tau, self.gamma, self.cosine, self.negatives = float(tau), float(gamma), cosine, \
            negatives
        self.cl_norm = cl_norm
        self.contrastive = contrastive
        self.fitting = fitting
        self.forward_fit = forward_fit and fitting
        self.backward_fit = backward_fit and fitting
        self.all_sg = all_sg
        self.gate_per_task = gate_per_task
        self.score_scale = float(score_scale)
        d = embedding_dim
        self.behavior_emb = nn.Parameter(torch.empty(num_behaviors, d))        # r^{k',0}
        self.layer_weight = nn.Parameter(torch.empty(self.num_layers - 1, d, d))  # W^1..W^{L-1}
        self.gate = StackedMLP(num_behaviors if gate_per_task else 1, [2 * d, num_behaviors],
                               act=None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier, as COPF initialises every parameter
        for p in (self.behavior_emb, *self.layer_weight):
            bound = math.sqrt(6.0 / (p.size(0) + p.size(1)))
            nn.init.uniform_(p, -bound, bound)
        self.gate.reset_parameters()

    # ------------------------------------------------------------------ eq 10-12
    def precompute(self, emb: BehaviorEmbeddings, adjacency) -> BehaviorEmbeddings:
        """Add the fitted embeddings of every (task, behavior) pair as ``extras['dfme']``."""
        check_embeddings(emb, self.num_behaviors, self.embedding_dim, 'DFMEHead')
        k = self.num_behaviors
        if self.forward_fit:
            fitted = self.fitting_embeddings(emb, adjacency)
        else:  # w/o for. / w/o fit.: task k aggregates the behavior-specific embeddings
            fitted = (emb.users.unsqueeze(0).expand(k, -1, -1, -1),
                      emb.items.unsqueeze(0).expand(k, -1, -1, -1))
        return BehaviorEmbeddings(emb.behaviors, emb.users, emb.items,
                                  {**emb.extras, EXTRAS_KEY: fitted})

    def fitting_embeddings(self, emb: BehaviorEmbeddings, adjacency) -> Tuple[Tensor, Tensor]:
        r"""Eq 10-11 over the whole graph: ``([K, K, U, d], [K, K, I, d])``, entry
        ``[k, j]`` (:math:`j \ne k`) the output :math:`\mathbf{e}_{out}^{k,j}` of task
        :math:`k`'s fitting expert for behavior :math:`j`, entry ``[k, k]`` behavior
        :math:`k`'s own embeddings. One sparse product per behavior graph and layer: the
        :math:`K-1` inputs that share a graph are stacked along the feature axis."""
        num_users = emb.users.size(1)
        x = torch.cat([emb.users, emb.items], dim=1)                     # [K, N, d]
        k_all, n, d = x.shape
        out: Dict[Tuple[int, int], Tensor] = {}
        for g, behavior in enumerate(emb.behaviors):                     # the graph A_g
            partners = [p for p in range(k_all) if p != g]
            if not partners:
                continue
            if self.fit_graph == 'other':   # tasks p fit towards behavior g on A_g (eq 10)
                h = (self.alpha * x[partners] + self.beta * x[g]) / 2
                keys = [(p, g) for p in partners]
            else:                           # task g fits towards behaviors p on its own A_g
                h = (self.alpha * x[g] + self.beta * x[partners]) / 2
                keys = [(g, p) for p in partners]
            h = h.permute(1, 0, 2).reshape(n, len(partners) * d)         # [N, (K-1) d]
            op = adjacency.operator(behavior, norm='left_plus_identity')
            total, r = h, self.behavior_emb[g]
            for l in range(self.num_layers):
                if l > 0:
                    r = r @ self.layer_weight[l - 1]                     # r^{l} = r^{l-1} W^l
                h = op @ (h * r.repeat(len(partners)))
                total = total + h
            for key, part in zip(keys, (self.output_scale * total).split(d, dim=1)):
                out[key] = part
        full = torch.stack([torch.stack([x[t] if j == t else out[(t, j)]
                                         for j in range(k_all)]) for t in range(k_all)])
        return full[:, :, :num_users], full[:, :, num_users:]

    def _fitted(self, emb: BehaviorEmbeddings) -> Tuple[Tensor, Tensor]:
        if EXTRAS_KEY not in emb.extras:
            raise ValueError("DFMEHead needs the fitted embeddings of precompute(emb, adjacency) "
                             "(extras['dfme']); MultiBehaviorModel calls it, a direct caller "
                             "must too")
        return emb.extras[EXTRAS_KEY]

    # ------------------------------------------------------------------ eq 13-15
    def stop_gradient_mask(self, k: int) -> List[bool]:
        r"""Which terms :math:`\mathbf{o}^k(j)` of task ``k`` are cut from the backward pass."""
        target = self.num_behaviors - 1
        if not self.backward_fit:
            return [False] * self.num_behaviors
        if self.all_sg:
            return [j != k for j in range(self.num_behaviors)]
        return [j == target and k != target for j in range(self.num_behaviors)]

    def gate_weights(self, eu_k: Tensor, ev_k: Tensor, k: int) -> Tensor:
        r"""Eq 13's :math:`\mathbf{g}^k`: ``[*, K]``."""
        shape = torch.broadcast_shapes(eu_k.shape, ev_k.shape)
        x = torch.cat([eu_k.expand(shape), ev_k.expand(shape)], dim=-1)
        return self.gate(x, group=k if self.gate_per_task else 0).softmax(dim=-1)

    def forward(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                behavior: str) -> Tensor:
        k = self._index(emb, behavior)
        fit_u, fit_v = self._fitted(emb)
        u, v = fit_u[k][:, users], fit_v[k][:, items]                    # [K, B, d], [K, B, (C), d]
        if items.dim() == 2:
            u = u.unsqueeze(2)
        experts = u * v                                                  # eq 9 (j = k), eq 12
        gate = self.gate_weights(*gather_pairs(emb, k, users, items), k)  # [B, (C), K]
        terms = gate.movedim(-1, 0).unsqueeze(-1) * experts              # o^k(j), eq 14
        stop = self.stop_gradient_mask(k)
        if any(stop):
            mask = torch.tensor(stop, device=terms.device).view(-1, *([1] * (terms.dim() - 1)))
            terms = torch.where(mask, terms.detach(), terms)
        return self.score_scale * terms.sum(0).mean(-1)                  # eq 15

    def score_all(self, emb: BehaviorEmbeddings, users: Tensor, behavior: str) -> Tensor:
        r"""``[B, I]`` by matrix products: :math:`\hat o^k_{uv} = \frac{1}{d} \sum_j g^k_j\,
        \mathbf{e}_{u}^{k,j} \cdot \mathbf{e}_{v}^{k,j}`, the gate logits being a user part
        plus an item part."""
        k = self._index(emb, behavior)
        fit_u, fit_v = self._fitted(emb)
        d = self.embedding_dim
        grp = k if self.gate_per_task else 0
        weight, bias = self.gate.weights[0][grp], self.gate.biases[0][grp]   # [2d, K], [K]
        u = fit_u[k][:, users]                                               # [K, B, d]
        user_logits = (emb.users[k][users] @ weight[:d]).unsqueeze(1) + bias  # [B, 1, K]
        out = []
        for start in range(0, emb.items.size(1), self.chunk_size):
            v = fit_v[k][:, start:start + self.chunk_size]                   # [K, C, d]
            dots = torch.bmm(u, v.transpose(1, 2))                           # [K, B, C]
            gate = (user_logits + (emb.items[k][start:start + self.chunk_size]
                                   @ weight[d:]).unsqueeze(0)).softmax(dim=-1)
            out.append((gate * dots.permute(1, 2, 0)).sum(-1) * (self.score_scale / d))
        return torch.cat(out, dim=1)

    # ------------------------------------------------------------------ eq 8, 17
    def contrastive_loss(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor) -> Tensor:
        r""":math:`\sum_{k<K} (\mathcal{L}_{cl,U}^{K,k} + \mathcal{L}_{cl,V}^{K,k})` with
        anchors ``users`` and ``items`` (unique ids), unweighted."""
        target = self.num_behaviors - 1
        total = emb.users.new_zeros(())
        for k in range(target):
            for table, ids in ((emb.users, users), (emb.items, items)):
                cand = table[k] if self.negatives == 'all' else None
                term = info_nce(table[target][ids], table[k][ids], self.tau, candidates=cand,
                                cosine=self.cosine)
                if self.cl_norm == 'total':  # sum over the anchors / |U| (|V|)
                    term = term * (ids.numel() / table.size(1))
                total = total + term
        return total

    def loss_terms(self, emb: BehaviorEmbeddings, batch: Dict[str, Any]) -> Dict[str, Tensor]:
        if not self.contrastive or self.gamma == 0.0 or self.num_behaviors < 2:
            return {}
        check_embeddings(emb, self.num_behaviors, self.embedding_dim, 'DFMEHead')
        target = emb.target
        if target in batch:
            triples = [batch[target]]
        else:  # target not sampled (lambda_K = 0): the batch's users and items of any behavior
            triples = [t for b, t in batch.items() if b in emb.behaviors]
        if not triples:
            raise ValueError(f'DFMEHead contrastive loss: the batch has no triples of the '
                             f'behaviors {emb.behaviors} (keys: {list(batch)})')
        users = torch.cat([t[0] for t in triples]).unique()
        items = torch.cat([t[1:].reshape(-1) for t in triples]).unique()
        return {'contrastive': self.gamma * self.contrastive_loss(emb, users, items)}

    def extra_repr(self) -> str:
        return (f'embedding_dim={self.embedding_dim}, num_behaviors={self.num_behaviors}, '
                f'alpha={self.alpha}, beta={self.beta}, num_layers={self.num_layers}, '
                f'fit_graph={self.fit_graph!r}, output_scale={self.output_scale}, '
                f'tau={self.tau}, gamma={self.gamma}, cosine={self.cosine}, '
                f'negatives={self.negatives!r}, cl_norm={self.cl_norm!r}, '
                f'contrastive={self.contrastive}, '
                f'forward_fit={self.forward_fit}, backward_fit={self.backward_fit}, '
                f'all_sg={self.all_sg}, fitting={self.fitting}, '
                f'gate_per_task={self.gate_per_task}, score_scale={self.score_scale}')
