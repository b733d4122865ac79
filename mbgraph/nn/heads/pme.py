r"""The Projection Disentangling Multi-Experts network (PME) of PKEF (Meng et al., "Parallel
Knowledge Enhancement based Framework for Multi-behavior Recommendation", CIKM 2023,
section 4.3) with its unique loss (eq 20) and parallel loss (eq 18).

**Experts** (eq 15): one behavior-specific expert per behavior, from that behavior's own
(decoupled) embeddings,

.. math::
    \mathbf{q}^k = \mathbf{z}_u^{k,*} \circ \mathbf{z}_v^{k,*}.

**Projection** (eq 16): for task :math:`k`, every other expert :math:`\mathbf{q}^{k'}` is split
into the part collinear with :math:`\mathbf{q}^k` and the rest,

.. math::
    \mathbf{q}_{sha}^{k',k} = \frac{\mathbf{q}^{k'} \cdot \mathbf{q}^k}{\lVert \mathbf{q}^k
    \rVert^2}\, \mathbf{q}^k, \qquad
    \mathbf{q}_{uni}^{k',k} = \mathbf{q}^{k'} - \mathbf{q}_{sha}^{k',k}.

(Eq 16 as printed divides by :math:`|\mathbf{q}^{k'}||\mathbf{q}^k|` and keeps a scalar; we read
it as the vector projection of eq 12's form, which its text -- "shared part", "unique part",
"as orthogonal as possible" -- and the authors' code describe.) ``projection='factorized'`` is
the authors' code instead: the user and item embeddings are projected separately,
:math:`\mathbf{z}_{u,sha}^{k',k} = \frac{\mathbf{z}_u^{k'} \cdot \mathbf{z}_u^k}{\lVert
\mathbf{z}_u^k \rVert^2} \mathbf{z}_u^k` (items alike), :math:`\mathbf{q}_{sha}^{k',k} =
\mathbf{z}_{u,sha}^{k',k} \circ \mathbf{z}_{v,sha}^{k',k}` and :math:`\mathbf{q}_{uni}^{k',k} =
\mathbf{z}_{u,uni}^{k',k} \circ \mathbf{z}_{v,uni}^{k',k}` -- the reading under which eq 20's
score :math:`\mathbf{q}_{u,uni}^{k',k} \cdot \mathbf{q}_{v,uni}^{k',k}` is literal. The code
also multiplies every projected vector by 0.01 (``proj_scale=0.01``; default 1).

**Aggregation** (eq 17): the gate of task :math:`k` weighs its own expert and the shared parts
of the others, and the tower :math:`h^k` scores the mixture,

.. math::
    \mathbf{g}^k = \mathrm{softmax}(\mathbf{W}_g \mathbf{z}^{k,*} + \mathbf{b}_g), \qquad
    \hat\delta^{k,cas}_{uv} = h^k\Big(g^k_k\, \mathbf{q}^k + \sum_{k' \ne k} g^k_{k'}\,
    \mathbf{q}_{sha}^{k',k}\Big),

with the gate input :math:`\mathbf{z}^{k,*} = \mathbf{z}_u^{k,*} \| \mathbf{z}_v^{k,*}` (eq 9's
definition of :math:`\mathbf{z}`, and the code; ``gate_input='concat'``) or the task's expert
:math:`\mathbf{q}^k` (``gate_input='expert'``, the :math:`d`-dimensional input that the printed
:math:`\mathbf{W}_g \in \mathbb{R}^{K \times d}` suggests). :math:`\mathbf{W}_g` carries no task
index in eq 17 and the code shares one gate layer across tasks (``gate_per_task=False``).
The paper leaves :math:`h^k` open; the code sums the vector (``tower='sum'``, an inner
product); ``tower='linear'`` learns a weight vector per task (initialised to ones).

**Unique loss** (eq 20), for the pairs :math:`\mathcal{T}_{k',k}` of "``k'`` without ``k``"
(see :class:`~mbgraph.data.sampling.UniquePairSampler`):

.. math::
    \mathcal{L}^{uni} = -\sum_{k} \sum_{k' \ne k} \lambda_k \sum_{(u,s,t) \in
    \mathcal{T}_{k',k}} \ln\sigma\big(\hat\delta^{k',k,uni}_{us} - \hat\delta^{k',k,uni}_{ut}
    \big), \qquad \hat\delta^{k',k,uni}_{uv} = \mathbf{1}^\top \mathbf{q}^{k',k}_{uni}

(for ``'factorized'`` this is :math:`\mathbf{z}_{u,uni}^{k',k} \cdot \mathbf{z}_{v,uni}^{k',k}`);
each :math:`\mathcal{T}_{k',k}` term is a mean over its batch, as the BPR terms.
The code multiplies every score by 300 before the softplus (``score_scale=300``; default 1).

**Parallel loss** (eq 18): if the encoder put PKF's parallel-stream embeddings
:math:`\mathbf{p}^{k,*}` in ``extras['parallel']`` (a
:class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings`), this head adds
:math:`\sum_k \lambda_k \mathcal{L}_{BPR}(\mathbf{p}_u^{k,*} \cdot \mathbf{p}_s^{k,*},
\mathbf{p}_u^{k,*} \cdot \mathbf{p}_t^{k,*})` over the batch's BPR triples (the encoder must
not add it too). The cascade loss (eq 19) is the composed model's per-behavior BPR.
"""
from __future__ import annotations

from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from ...losses import bpr_loss
from ..encoders.base import BehaviorEmbeddings
from .base import gate_output_order, gather_pairs
from .blocks import MTLHead, StackedMLP, gather_stacked, mix_experts

PROJECTIONS = ('pair', 'factorized')
GATE_INPUTS = ('concat', 'expert')
TOWERS = ('sum', 'linear')
#: which gate output weighs which expert: eq 17's behavior index, or the code's own-first
EXPERT_ORDERS = ('behavior', 'own_first')


def _choice(name: str, value: str, options) -> str:
    if value not in options:
        raise ValueError(f'unknown {name} {value!r}; expected one of {list(options)}')
    return value


class PMEHead(MTLHead):
    r"""PKEF's Projection Disentangling Multi-Experts head (module docstring: eq 15-20).

    Args:
        embedding_dim (int): :math:`d`.
        num_behaviors (int): :math:`K`.
        projection (str, optional): ``'pair'`` (eq 16 on the experts :math:`\mathbf{q}`) or
            ``'factorized'`` (the code: user and item embeddings projected separately).
            (default: ``'pair'``)
        gate_input (str, optional): ``'concat'`` (:math:`\mathbf{z}_u^{k,*} \|
            \mathbf{z}_v^{k,*}`) or ``'expert'`` (:math:`\mathbf{q}^k`). (default:
            ``'concat'``)
        gate_per_task (bool, optional): one gate layer per task instead of one shared
            :math:`\mathbf{W}_g`. (default: ``False``)
        tower (str, optional): ``'sum'`` or ``'linear'``. (default: ``'sum'``)
        proj_scale (float, optional): factor on every projected vector (code: ``0.01``).
            (default: ``1.0``)
        unique_loss (bool, optional): add eq 20; the batches must then carry ``'unique'``
            pairs (:meth:`batch_needs`; a batch without them is an error). (default:
            ``True``)
        parallel_loss (bool, optional): add eq 18 when ``extras['parallel']`` exists.
            (default: ``True``)
        lambdas (dict, optional): :math:`\lambda_k` per behavior name for eq 18 and 20
            (behaviors not listed get 0). ``None``: the composed model's coefficients if it
            hands them over (:meth:`set_default_lambdas`), else 1 each. (default: ``None``)
        eps (float, optional): added to :math:`\lVert\cdot\rVert^2` in the projection.
            (default: ``1e-12``)
        score_scale (float, optional): factor on every score, the cascade, unique and parallel
            ones (the code's ``mult``: ``300``). (default: ``1.0``)
        expert_order (str, optional): which gate output weighs which expert: ``'behavior'``
            (output :math:`j` weighs behavior :math:`j`'s, eq 17) or ``'own_first'`` (output 0
            the task's own expert, then the other behaviors in order: the code).
            (default: ``'behavior'``)

    Shapes:
        - **input:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` ``[K, U, d]`` /
          ``[K, I, d]``, users ``[B]``, items ``[B]`` or ``[B, C]``.
        - **output:** scores ``[B]`` or ``[B, C]``; :meth:`score_all` ``[B, I]``.
    """

    chunk_size: int = 4096  # score_all is matrix products: [K, B, chunk] at a time

    def __init__(self, embedding_dim: int, num_behaviors: int, projection: str = 'pair',
                 gate_input: str = 'concat', gate_per_task: bool = False, tower: str = 'sum',
                 proj_scale: float = 1.0, unique_loss: bool = True, parallel_loss: bool = True,
                 lambdas: Optional[Mapping[str, float]] = None, eps: float = 1e-12,
                 score_scale: float = 1.0, expert_order: str = 'behavior'):
        super().__init__(embedding_dim, num_behaviors)
        self.expert_order = _choice('expert_order', expert_order, EXPERT_ORDERS)
        self.projection = _choice('projection', projection, PROJECTIONS)
        self.gate_input = _choice('gate_input', gate_input, GATE_INPUTS)
        self.tower_kind = _choice('tower', tower, TOWERS)
        if eps <= 0:
            raise ValueError(f'eps must be > 0, got {eps}')
        self.gate_per_task = gate_per_task
        self.proj_scale = float(proj_scale)
        self.unique_loss = unique_loss
        self.parallel_loss = parallel_loss
        self.lambdas = None if lambdas is None else {b: float(v) for b, v in lambdas.items()}
        self._default_lambdas: Optional[Dict[str, float]] = None
        self.eps = float(eps)
        self.score_scale = float(score_scale)
        gate_dim = embedding_dim * (2 if gate_input == 'concat' else 1)
        self.gate = StackedMLP(num_behaviors if gate_per_task else 1,
                               [gate_dim, num_behaviors], act=None)
        self.tower_weight = (nn.Parameter(torch.ones(num_behaviors, embedding_dim))
                             if tower == 'linear' else None)

    def reset_parameters(self) -> None:
        self.gate.reset_parameters()
        if self.tower_weight is not None:
            with torch.no_grad():
                self.tower_weight.fill_(1.0)

    def set_default_lambdas(self, lambdas: Mapping[str, float]) -> None:
        """The composed model's :math:`\\lambda_k`, used when the head got no ``lambdas``."""
        self._default_lambdas = {b: float(v) for b, v in lambdas.items()}

    def lambda_of(self, behavior: str) -> float:
        lambdas = self.lambdas if self.lambdas is not None else self._default_lambdas
        return 1.0 if lambdas is None else lambdas.get(behavior, 0.0)

    # ------------------------------------------------------------------ eq 15-17
    def project(self, zu_j: Tensor, zv_j: Tensor, zu_k: Tensor,
                zv_k: Tensor) -> Tuple[Tensor, Tensor]:
        r"""Eq 16: the shared and unique parts of the experts of behavior(s) :math:`k'` (user
        and item embeddings ``zu_j``, ``zv_j``) against task :math:`k` (``zu_k``, ``zv_k``),
        both scaled by ``proj_scale``; all inputs broadcast, outputs ``[*, d]``."""
        s, eps = self.proj_scale, self.eps
        if self.projection == 'pair':
            q_j, q_k = zu_j * zv_j, zu_k * zv_k
            coef = (q_j * q_k).sum(-1, keepdim=True) / ((q_k * q_k).sum(-1, keepdim=True) + eps)
            shared = coef * q_k
            return s * shared, s * (q_j - shared)
        cu = (zu_j * zu_k).sum(-1, keepdim=True) / ((zu_k * zu_k).sum(-1, keepdim=True) + eps)
        cv = (zv_j * zv_k).sum(-1, keepdim=True) / ((zv_k * zv_k).sum(-1, keepdim=True) + eps)
        su, sv = cu * zu_k, cv * zv_k
        return (s * su) * (s * sv), (s * (zu_j - su)) * (s * (zv_j - sv))

    def experts(self, zu: Tensor, zv: Tensor, k: int) -> Tensor:
        r"""The aggregation targets of task :math:`k`: :math:`\mathbf{q}^k` at position
        :math:`k` (eq 15), :math:`\mathbf{q}_{sha}^{k',k}` elsewhere (eq 16): ``[K, *, d]``
        from ``zu`` ``[K, B, (1), d]`` and ``zv`` ``[K, B, (C), d]``."""
        shared, _ = self.project(zu, zv, zu[k], zv[k])
        own = (zu[k] * zv[k]).unsqueeze(0)
        mask = torch.arange(zu.size(0), device=zu.device) == k
        return torch.where(mask.view(-1, *([1] * (shared.dim() - 1))), own, shared)

    def gate_weights(self, zu_k: Tensor, zv_k: Tensor, k: int) -> Tensor:
        r"""Eq 17's :math:`\mathbf{g}^k`: ``[*, K]``."""
        if self.gate_input == 'concat':
            shape = torch.broadcast_shapes(zu_k.shape, zv_k.shape)
            x = torch.cat([zu_k.expand(shape), zv_k.expand(shape)], dim=-1)
        else:
            x = zu_k * zv_k
        logits = self.gate(x, group=k if self.gate_per_task else 0)
        if self.expert_order != 'behavior':
            logits = logits[..., self.gate_outputs(k)]
        return logits.softmax(dim=-1)

    def gate_outputs(self, k: int) -> List[int]:
        r"""For each behavior :math:`j`, the gate output of task ``k`` that weighs its expert
        (``expert_order``)."""
        return gate_output_order(self.expert_order, k, self.num_behaviors)

    def regularized_parameters(self) -> List[Tensor]:
        """The gate's weight matrix (the code's L2 term covers it with the tables)."""
        return list(self.gate.weights)

    def tower(self, x: Tensor, k: int) -> Tensor:
        r""":math:`h^k`: ``[*, d]`` -> ``[*]``."""
        if self.tower_weight is None:
            return x.sum(-1)
        return (x * self.tower_weight[k]).sum(-1)

    def forward(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                behavior: str) -> Tensor:
        k = self._index(emb, behavior)
        zu, zv = gather_stacked(emb, users, items)
        experts = self.experts(zu, zv, k)                       # [K, B, (C), d]
        gate = self.gate_weights(zu[k], zv[k], k)               # [B, (C), K]
        return self.score_scale * self.tower(mix_experts(gate, experts), k)

    def score_all(self, emb: BehaviorEmbeddings, users: Tensor, behavior: str) -> Tensor:
        r"""``[B, I]`` scores by matrix products. Every aggregation target of task :math:`k`
        is a multiple of :math:`\mathbf{q}^k` (eq 16 projects onto it), so
        :math:`\hat\delta^k_{uv} = \big(\sum_j g^k_j a_j\big)\, h^k(\mathbf{q}^k)` with
        :math:`a_k = 1` and :math:`a_{k'}` the projection coefficients."""
        k = self._index(emb, behavior)
        zu = emb.users[:, users]
        out = [self._score_block(zu, emb.items[:, start:start + self.chunk_size], k)
               for start in range(0, emb.items.size(1), self.chunk_size)]
        return torch.cat(out, dim=1)

    def _score_block(self, zu: Tensor, zv: Tensor, k: int) -> Tensor:
        # zu [K, B, d], zv [K, C, d] -> [B, C]
        s, eps = self.proj_scale, self.eps
        w = self.tower_weight[k] if self.tower_weight is not None else 1.0
        own = (zu[k] * w) @ zv[k].t()                                        # h^k(q^k)
        coef = cu = cv = None
        if self.projection == 'pair':
            dots = torch.bmm(zu * zu[k], (zv * zv[k]).transpose(1, 2))       # q^j . q^k
            coef = s * dots / (dots[k] + eps)                                # dots[k] = |q^k|^2
            coef[k] = 1.0                                                    # a_k = 1
        else:   # factorised: a_j = s^2 c_j(u) c_j(v), applied to the gate below, in place
            cu = (s * s) * (zu * zu[k]).sum(-1) / ((zu[k] * zu[k]).sum(-1) + eps)   # [K, B]
            cv = (zv * zv[k]).sum(-1) / ((zv[k] * zv[k]).sum(-1) + eps)      # [K, C]
        grp = k if self.gate_per_task else 0
        weight, bias = self.gate.weights[0][grp], self.gate.biases[0][grp]  # [in, K], [K]
        if self.expert_order != 'behavior':                    # columns in behavior order
            order = self.gate_outputs(k)
            weight, bias = weight[:, order], bias[order]
        d = zu.size(-1)
        if self.gate_input == 'concat' and coef is None:
            # logits a_j(u) + b_j(v) and a_j = c_j(u) c_j(v): sum_j softmax_j a_j factorises
            # into [B, K] @ [K, C] over [B, K] @ [K, C] (each side shifted by its max over j)
            a = zu[k] @ weight[:d] + bias                                    # [B, K]
            b = zv[k] @ weight[d:]                                           # [C, K]
            ea = (a - a.amax(1, keepdim=True)).exp()
            eb = (b - b.amax(1, keepdim=True)).exp()
            den = ea @ eb.t()
            if bool((den > torch.finfo(den.dtype).tiny ** 0.5).all()):
                cu, cv = cu.clone(), cv.clone()
                cu[k], cv[k] = 1.0, 1.0                                      # a_k = 1
                num = (ea * cu.t()) @ (eb * cv.t()).t()
                return num.div_(den).mul_(own).mul_(self.score_scale)
        # a [K, B, C] layout, the softmax over the behavior axis: contiguous throughout
        if self.gate_input == 'concat':
            logits = ((zu[k] @ weight[:d] + bias).t().unsqueeze(2)
                      + (zv[k] @ weight[d:]).t().unsqueeze(1))
        else:  # logits[j, b, c] = sum_d zu[b, d] W[d, j] zv[c, d]: one [K B, d] @ [d, C]
            left = (weight.t().unsqueeze(1) * zu[k]).reshape(-1, d)          # [K B, d]
            logits = (left @ zv[k].t()).view(-1, zu.size(1), zv.size(1)).add_(bias.view(-1, 1, 1))
        gate = logits.softmax(dim=0)                                         # [K, B, C]
        if coef is not None:
            gate.mul_(coef)
        else:
            for j in range(gate.size(0)):
                if j != k:
                    gate[j].mul_(cu[j].unsqueeze(1)).mul_(cv[j].unsqueeze(0))
        return gate.sum(0).mul_(own).mul_(self.score_scale)

    # ------------------------------------------------------------------ eq 18, 20
    def unique_scores(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                      k_prime: str, k: str) -> Tensor:
        r""":math:`\hat\delta^{k',k,uni}_{uv}` for users ``[B]`` and items ``[B]`` or
        ``[B, C]``."""
        kp_i, k_i = self._index(emb, k_prime), emb.index(k)
        if kp_i == k_i:
            raise ValueError(f'the unique part needs two different behaviors, got {k!r} twice')
        zu_j, zv_j = gather_pairs(emb, kp_i, users, items)
        zu_k, zv_k = gather_pairs(emb, k_i, users, items)
        return self.score_scale * self.project(zu_j, zv_j, zu_k, zv_k)[1].sum(-1)

    def batch_needs(self) -> FrozenSet[str]:
        """``{'unique'}`` with the unique loss (eq 20): its "k' without k" pairs."""
        return frozenset({'unique'}) if self.unique_loss else frozenset()

    def loss_terms(self, emb: BehaviorEmbeddings, batch: Dict[str, Any]) -> Dict[str, Tensor]:
        out: Dict[str, Tensor] = {}
        if self.unique_loss and 'unique' not in batch:
            raise ValueError("PMEHead(unique_loss=True) needs the batch's 'unique' pairs (eq 20): "
                             'train on the batch source of the model that holds it '
                             '(model.batch_source(data), a UniquePairSampler), or pass '
                             'unique_loss=False')
        unique = batch.get('unique') if self.unique_loss else None
        if unique:
            total = None
            for pair, triples in unique.items():
                if not (isinstance(pair, tuple) and len(pair) == 2):
                    raise ValueError(f"batch['unique'] keys must be (k_prime, k) behavior "
                                     f'pairs, got {pair!r}')
                lam = self.lambda_of(pair[1])
                if lam == 0.0 or triples.size(1) == 0:
                    continue
                users, pos, neg = triples
                scores = self.unique_scores(emb, users, torch.stack([pos, neg], dim=1), *pair)
                term = lam * bpr_loss(scores[:, 0], scores[:, 1])
                total = term if total is None else total + term
            if total is not None:
                out['unique'] = total
        parallel = emb.extras.get('parallel') if self.parallel_loss else None
        if parallel is not None:
            if not isinstance(parallel, BehaviorEmbeddings):
                raise TypeError(f"extras['parallel'] must be BehaviorEmbeddings (PKF's "
                                f'parallel stream), got {type(parallel).__name__}')
            total = None
            for b, triples in batch.items():
                if b == 'unique' or b not in parallel.behaviors:
                    continue
                lam = self.lambda_of(b)
                if lam == 0.0:
                    continue
                users, pos, neg = triples
                p_u, p_v = gather_pairs(parallel, parallel.index(b), users,
                                        torch.stack([pos, neg], dim=1))
                scores = self.score_scale * (p_u * p_v).sum(-1)
                term = lam * bpr_loss(scores[:, 0], scores[:, 1])
                total = term if total is None else total + term
            if total is not None:
                out['parallel'] = total
        return out

    def extra_repr(self) -> str:
        return (f'embedding_dim={self.embedding_dim}, num_behaviors={self.num_behaviors}, '
                f'projection={self.projection!r}, gate_input={self.gate_input!r}, '
                f'gate_per_task={self.gate_per_task}, tower={self.tower_kind!r}, '
                f'proj_scale={self.proj_scale}, unique_loss={self.unique_loss}, '
                f'parallel_loss={self.parallel_loss}, score_scale={self.score_scale}, '
                f'expert_order={self.expert_order!r}')
