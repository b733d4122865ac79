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
code) or the batch's (``negatives='batch'``). :math:`\varphi` is the cosine similarity, the
code's (``cosine=True``, the default), or the inner product, the paper's example ("e.g.,
inner product"; ``cosine=False``). The inner product makes eq 8 grow with
:math:`\lVert \mathbf{e}^{K,*} \rVert \lVert \mathbf{e}^{k,*} \rVert / \tau`: on COGCN's
embeddings (target norms ~57 at initialisation) its logits are ~:math:`10^3`, the softmax over
the users is a hard maximum and the term outweighs BPR at any of the weights below (on small
synthetic data, HR@10 0.23 against 0.35 with the cosine).

**Weight of the contrastive term against BPR** (``cl_norm``). Eq 16 *sums* the BPR terms
over the training triples, eq 8 *averages* the contrastive term over the users, and eq 17 adds
the two with :math:`\gamma = 1`. :class:`~mbgraph.models.composed.MultiBehaviorModel` averages
each behavior's BPR terms over the batch's :math:`B` triples, i.e. divides the batch's eq 16
by :math:`B`; dividing the batch's eq 17 by the same :math:`B` leaves the contrastive term as
:math:`\frac{\gamma}{B}` times its mean over the anchors (``cl_norm='triples'``, the default).
``cl_norm='batch'`` (the plain anchor mean next to the BPR mean) weighs it :math:`B` times
more than eq 17 does (2048 times with the CLI's batch); ``cl_norm='total'`` is the code's sum
over the anchors divided by :math:`|U|`, next to BPR logits that the code multiplies by
``mult`` = 300 and sums over :math:`d` (:math:`300 d` = 19200 times eq 15's average). With
eq 15's average and no multiplier, ``'batch'`` lets the contrastive gradients swamp the ranking
loss: COPF on the synthetic data fell from HR@10 0.62 (``contrastive=False``) to 0.18.

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
``fit_graph='task'`` is the code's reading, task :math:`k`'s own graph. The defaults of
:math:`\alpha, \beta` are the code's (:math:`\alpha = 0.001` on the task's own embeddings,
:math:`\beta = 0.1` on the other behavior's; section 5.5.3's :math:`\alpha = 0.1`,
:math:`\beta = 0.001` are the same numbers under eq 14's indices, see below).

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
f_k(\cdot)`. Read with eq 14's indices, task :math:`k`'s input for behavior :math:`j` is
:math:`(\alpha\,\mathbf{e}^{j,*} + \beta\,\mathbf{e}^{k,*})/2` on :math:`\mathbf{A}_k`: the
paper's :math:`\alpha` weighs the other behavior, and section 5.5.3's :math:`\alpha = 0.1`,
:math:`\beta = 0.001` are then exactly the code's, ``fit_graph='task'`` with this class's
``alpha`` = 0.001 on the task's embeddings and ``beta`` = 0.1 on the other behavior's.)
The stop-gradient covers the gated product, as eq 14 writes it; the code stops the expert
only, and its index bug never applies it (see REFERENCE_NOTES). The code multiplies the
scores by 300 before the BPR softplus (``score_scale=300``; default 1) and sums them over
:math:`d` instead of eq 15's average.

**Gate initialisation** (``gate_init``). The gate's logits scale with the embeddings it
reads, and COGCN's are far from unit scale: with eq 5's operators the target behavior's
embeddings have norms ~250 times the initial embeddings' (57 against 0.2 on the synthetic
data at initialisation) while the first behavior's stay below 1. A Xavier-initialised
:math:`\mathbf{W}_g` (``gate_init='xavier'``, what the paper and the code do) then gives the
target task logits of standard deviation ~10: its softmax is saturated from the first step, a
hard and random choice per (user, item) pair between the task's own expert and the fitting
experts, whose scores are ~:math:`10^{-4}` of the own expert's (:math:`\alpha, \beta \ll 1`).
The target score becomes that routing rather than :math:`\mathbf{e}^K`, BPR drives the own
expert's weight to 0 (:math:`10^{-26}` after training), and the own expert gets no gradient
any more. In the code the embeddings are small enough for Xavier to start near the uniform
gate; ``gate_init='zeros'`` (the default) starts every task at :math:`\mathbf{g}^k = 1/K`
whatever the encoder's scale, and the gate learns from there. Adam still moves the logits by
about the learning rate times :math:`\lVert \mathbf{e}_u^{k,*} \| \mathbf{e}_v^{k,*}
\rVert_1` per step, so on such embeddings the target task's gate learns far faster than the
others and can still shut its own expert out before that expert is any good (seen on small
data at learning rate 0.01). ``gate_input='normalized'`` feeds the gate the L2-normalised
embeddings instead, which makes it indifferent to the encoder's scale (neither the paper nor
the code: eq 13 reads the embeddings as they are, ``gate_input='embeddings'``, the default).
Measured on Taobao (pv, cart, buy; lr 5e-3, 10 epochs; docs/RESULTS.md, COPF table 4): with
the default the target task's gate ended at weight 1.0 on the cart fitting expert and 0 on its
own (target embedding norms ~1,650) and HR@10 was 0.023; with ``'normalized'`` 0.081.

**Gate outputs and experts** (``expert_order``). Eq 13-14 index the shared gate's outputs by
behavior: :math:`g^k(j)` weighs behavior :math:`j`'s expert, so the output that weighs the
task's own expert moves with the task (``expert_order='behavior'``, the default). The code
stacks the task's own expert first and the other behaviors' after it in behavior order, so
the shared gate's first output always weighs the task's own expert
(``expert_order='own_first'``).

**Ablations of COPF table 3**: ``contrastive=False`` (w/o con.), ``forward_fit=False`` (w/o
for.: the other behaviors' specific experts :math:`\mathbf{e}^j` replace the fitting experts),
``backward_fit=False`` (w/o back.: no stop-gradient), ``all_sg=True`` (all sg.: every
:math:`j \ne k` term of every task is stopped), ``fitting=False`` (w/o fit.: both
``forward_fit`` and ``backward_fit`` off).

**Aggregation schemes of COPF table 4** (``aggregation``). Section 5.3.2 replaces the whole
aggregation of eq 10-14 (fitting experts, gate and stop-gradient) by one of five
alternatives, keeping the contrastive term (eq 8) in every one. They are PKEF's fusion
functions (:func:`~mbgraph.nn.encoders.pkf.fuse`, PKEF eq 12-13 and its table 4), applied
between the behavior-specific experts of eq 9 with the task's own expert as the base:

.. math::
    \hat o^k_{uv} = \mathrm{mean}\Big(\mathbf{e}^k + \sum_{j \ne k}
        \mathbf{f}_{k,j}(\mathbf{e}^k, \mathbf{e}^j)\Big), \qquad
    \mathbf{e}^j = \mathbf{e}_u^{j,*} \circ \mathbf{e}_v^{j,*},

with :math:`\mathbf{f}` = :math:`\mathbf{0}` (``'none'``, *No Aggregation*),
:math:`\mathbf{e}^j` (``'sum'``, *Summation*), :math:`\mathbf{W}_{k,j}\mathbf{e}^j`
(``'linear'``, *Linear Trans.*, :math:`\mathbf{W}_{k,j} \in \mathbb{R}^{d \times d}`),
PKEF eq 13's gated mixture of :math:`[\mathbf{e}^k, \mathbf{e}^j, \mathbf{e}^k -
\mathbf{e}^j, \mathbf{e}^k \circ \mathbf{e}^j]` with its gate :math:`\mathbf{W}_{k,j} \in
\mathbb{R}^{4 \times 4d}`, :math:`\mathbf{b}_{k,j} \in \mathbb{R}^4` (``'vanilla'``,
*Vanilla Fusion*) or the part of :math:`\mathbf{e}^j` collinear with :math:`\mathbf{e}^k`,
:math:`\frac{\mathbf{e}^j \cdot \mathbf{e}^k}{\lVert \mathbf{e}^k \rVert^2 + \epsilon}
\mathbf{e}^k` (``'projection'``, *Projection Fusion*; PKEF eq 12 / PME eq 16). The paper
names the schemes without equations; the readings taken here: the base is the task's own
expert (as PKF's cascade vector is), one :math:`\mathbf{W}_{k,j}` per (task, other
behavior) pair, and no stop-gradient (eq 14's is part of DFME's own scheme).
On COGCN's embeddings the vanilla scheme is unstable: its fourth feature
:math:`\mathbf{e}^k \circ \mathbf{e}^j` is of fourth order in the embeddings, whose norms
COGCN's operators already multiply (see *Gate initialisation*), so its scores start in the
thousands (1.9e8 at most after two epochs on ml-latest-small) and its BPR terms grow instead of
falling: on Taobao at lr 5e-3 the target term went 2.8, 1.4 (epoch 2), then up to 35.6 by
epoch 10, and test HR@10 was 0.013 (docs/RESULTS.md, COPF table 4). The other schemes stay
of second order.
``aggregation='gated'`` (the default) is eq 10-15. The gate options (``gate_*``,
``expert_order``), the fitting options and ``all_sg`` belong to ``'gated'`` and have no
effect otherwise (``all_sg=True`` or ``gate_per_task=True`` with another scheme is an error).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...losses import info_nce
from ..encoders.base import BehaviorEmbeddings
from ..encoders.pkf import fuse
from .base import gate_output_order
from .shared_bottom import MTLHead, StackedMLP, check_embeddings

EXTRAS_KEY = 'dfme'
#: ``aggregation`` values: eq 13-15 and the five alternatives of COPF table 4
AGGREGATIONS = ('gated', 'none', 'sum', 'linear', 'vanilla', 'projection')
#: ``fit_step``: one fitting layer as eq 11 writes it, or as the code computes it
FIT_STEPS = ('paper', 'code')
#: ``tower``: eq 15's average over d, or the code's sum
TOWERS = ('mean', 'sum')
#: ``cl_anchors``: the batch's distinct users/items, or the code's one anchor per target pair
CL_ANCHORS = ('unique', 'pairs')
CL_NORMS = ('triples', 'batch', 'total', 'users')


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
        cosine (bool, optional): cosine similarity for :math:`\varphi` (the code); ``False``
            is the inner product (the paper's example). (default: ``True``)
        negatives (str, optional): ``'all'`` or ``'batch'`` (eq 8's denominator).
            (default: ``'all'``)
        cl_norm (str, optional): what the sum over the anchors is divided by:
            ``'triples'``, their number times the number :math:`B` of the batch's triples
            per behavior (eq 16 sums BPR over the triples, eq 8 averages over the users; see
            the module docstring), ``'batch'``, their number (a mean over the anchors), or
            ``'total'``, :math:`|U|` (:math:`|V|`) whatever the batch, or ``'users'``,
            :math:`|U|` for both sums (the code: each batch carries its share of the all-user
            sum, the item side divided by the users too). (default: ``'triples'``)
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
        gate_init (str, optional): initial gate weights :math:`\mathbf{W}_g`: ``'zeros'``
            (every task starts at the uniform gate :math:`1/K`) or ``'xavier'`` (the paper
            and the code; saturates on large embeddings, see the module docstring).
            (default: ``'zeros'``)
        gate_input (str, optional): what eq 13's gate reads: ``'embeddings'``
            (:math:`\mathbf{e}_u^{k,*} \| \mathbf{e}_v^{k,*}`, eq 13) or ``'normalized'``
            (each L2-normalised: indifferent to the encoder's scale).
            (default: ``'embeddings'``)
        expert_order (str, optional): which expert each gate output weighs: ``'behavior'``
            (output :math:`j`, behavior :math:`j`: eq 13-14) or ``'own_first'`` (output 0 the
            task's own expert, then the other behaviors in order: the code).
            (default: ``'behavior'``)
        aggregation (str, optional): ``'gated'`` (eq 10-15) or one of COPF table 4's
            alternatives ``'none'``, ``'sum'``, ``'linear'``, ``'vanilla'``,
            ``'projection'`` (module docstring). (default: ``'gated'``)
        fit_step (str, optional): one fitting layer as eq 11 writes it, ``'paper'``
            (:math:`(\mathbf{D}^{-1}\mathbf{A} + \mathbf{I})(\mathbf{E} \circ \mathbf{r})`),
            or as the code computes it, ``'code'`` (:math:`\mathbf{D}^{-1}\mathbf{A}
            (\mathbf{E} \circ \mathbf{r}) + \mathbf{E}`). (default: ``'paper'``)
        tower (str, optional): eq 15's ``'mean'`` over :math:`d`, or the code's ``'sum'``.
            (default: ``'mean'``)
        cl_anchors (str, optional): eq 8's anchors: ``'unique'``, the batch's distinct
            target-behavior users and items (positives and negatives), or ``'pairs'``, the
            code's one user anchor per target pair and the pairs' positive items, repeats
            counted (each distinct anchor computed once and weighted by its count: exact).
            ``cl_norm='users'`` is the code's divisor of both sums, :math:`|U|`.
            (default: ``'unique'``)

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
                 cosine: bool = True, negatives: str = 'all', cl_norm: str = 'triples',
                 contrastive: bool = True,
                 forward_fit: bool = True, backward_fit: bool = True, all_sg: bool = False,
                 fitting: bool = True, gate_per_task: bool = False, score_scale: float = 1.0,
                 gate_init: str = 'zeros', gate_input: str = 'embeddings',
                 expert_order: str = 'behavior', aggregation: str = 'gated',
                 fit_step: str = 'paper', tower: str = 'mean', cl_anchors: str = 'unique'):
        super().__init__(embedding_dim, num_behaviors)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f'unknown aggregation {aggregation!r}; expected one of '
                             f'{list(AGGREGATIONS)}')
        gated = aggregation == 'gated'
        if not gated and (all_sg or gate_per_task):
            raise ValueError(f'all_sg and gate_per_task act on the gate of eq 13-14, which '
                             f'aggregation={aggregation!r} replaces')
        if num_layers < 1:
            raise ValueError(f'DFMEHead needs num_layers >= 1 fitting layers, got {num_layers}')
        if fit_graph not in ('other', 'task'):
            raise ValueError(f"unknown fit_graph {fit_graph!r}; expected 'other' or 'task'")
        if negatives not in ('all', 'batch'):
            raise ValueError(f"unknown negatives {negatives!r}; expected 'all' or 'batch'")
        if cl_norm not in CL_NORMS:
            raise ValueError(f'unknown cl_norm {cl_norm!r}; expected one of {list(CL_NORMS)}')
        for name, value, options in (('fit_step', fit_step, FIT_STEPS), ('tower', tower, TOWERS),
                                     ('cl_anchors', cl_anchors, CL_ANCHORS)):
            if value not in options:
                raise ValueError(f'unknown {name} {value!r}; expected one of {list(options)}')
        if gate_init not in ('zeros', 'xavier'):
            raise ValueError(f"unknown gate_init {gate_init!r}; expected 'zeros' or 'xavier'")
        if gate_input not in ('embeddings', 'normalized'):
            raise ValueError(f"unknown gate_input {gate_input!r}; expected 'embeddings' or "
                             f"'normalized'")
        if expert_order not in ('behavior', 'own_first'):
            raise ValueError(f"unknown expert_order {expert_order!r}; expected 'behavior' or "
                             f"'own_first'")
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
        self.aggregation = aggregation
        self.forward_fit = forward_fit and fitting and gated
        self.backward_fit = backward_fit and fitting and gated
        self.all_sg = all_sg
        self.gate_per_task = gate_per_task
        self.score_scale = float(score_scale)
        self.gate_init = gate_init
        self.gate_input = gate_input
        self.expert_order = expert_order
        self.fit_step, self.tower, self.cl_anchors = fit_step, tower, cl_anchors
        d, k = embedding_dim, num_behaviors
        for name in ('behavior_emb', 'layer_weight', 'fusion_weight', 'fusion_bias'):
            self.register_parameter(name, None)
        self.gate = None
        if gated:
            self.behavior_emb = nn.Parameter(torch.empty(k, d))                 # r^{k',0}
            self.layer_weight = nn.Parameter(torch.empty(self.num_layers - 1, d, d))  # W^l
            self.gate = StackedMLP(k if gate_per_task else 1, [2 * d, k], act=None)
        elif aggregation == 'linear':   # W_{k,j}, j != k (pair index: _pair_params)
            self.fusion_weight = nn.Parameter(torch.empty(k, k - 1, d, d))
        elif aggregation == 'vanilla':  # the gate of PKEF eq 13 per (k, j)
            self.fusion_weight = nn.Parameter(torch.empty(k, k - 1, 4, 4 * d))
            self.fusion_bias = nn.Parameter(torch.empty(k, k - 1, 4))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier, as COPF initialises every parameter
        matrices = [] if self.behavior_emb is None else [self.behavior_emb, *self.layer_weight]
        if self.fusion_weight is not None:
            matrices += list(self.fusion_weight.flatten(0, 1))
        for p in matrices:
            bound = math.sqrt(6.0 / (p.size(0) + p.size(1)))
            nn.init.uniform_(p, -bound, bound)
        if self.fusion_bias is not None:
            nn.init.zeros_(self.fusion_bias)
        if self.gate is not None:
            self.gate.reset_parameters()           # Xavier weights, zero biases
            if self.gate_init == 'zeros':          # g^k = 1/K at the start (module docstring)
                with torch.no_grad():
                    for w in self.gate.weights:
                        w.zero_()

    # ------------------------------------------------------------------ eq 10-12
    def precompute(self, emb: BehaviorEmbeddings, adjacency) -> BehaviorEmbeddings:
        """Add the fitted embeddings of every (task, behavior) pair as ``extras['dfme']``."""
        check_embeddings(emb, self.num_behaviors, self.embedding_dim, 'DFMEHead')
        if self.aggregation != 'gated':   # table 4's schemes read the embeddings as they are
            return emb
        if self.forward_fit:
            fitted = self.fitting_embeddings(emb, adjacency)
        else:  # w/o for. / w/o fit.: task k aggregates the behavior-specific embeddings
            fitted = FittedExperts(emb.node_table(), [], {}, emb.users.size(1))
        return emb.replace(extras={**emb.extras, EXTRAS_KEY: fitted})

    def fitting_embeddings(self, emb: BehaviorEmbeddings, adjacency) -> 'FittedExperts':
        r"""Eq 10-11 over the whole graph: the output :math:`\mathbf{e}_{out}^{k,j}` of task
        :math:`k`'s fitting expert for behavior :math:`j \ne k` for every pair, behavior
        :math:`k`'s own embeddings for :math:`j = k` (:class:`FittedExperts`). One sparse
        product per behavior graph and layer: the :math:`K-1` inputs that share a graph are
        side by side along the feature axis, and stay there (no ``[K, K, N, d]`` stack)."""
        from ..functional import propagate  # the engine of every encoder
        x = emb.node_table()                                             # [K, N, d]
        xs = x.unbind(0)
        d = x.size(2)
        bases: List[Tensor] = []
        where: Dict[Tuple[int, int], Tuple[int, int]] = {}
        for g, behavior in enumerate(emb.behaviors):                     # the graph A_g
            partners = [p for p in range(len(xs)) if p != g]
            if not partners:
                continue
            if self.fit_graph == 'other':   # tasks p fit towards behavior g on A_g (eq 10)
                parts = [(self.alpha * xs[p] + self.beta * xs[g]) / 2 for p in partners]
                keys = [(p, g) for p in partners]
            else:                           # task g fits towards behaviors p on its own A_g
                parts = [(self.alpha * xs[g] + self.beta * xs[p]) / 2 for p in partners]
                keys = [(g, p) for p in partners]
            h = torch.cat(parts, dim=1)                                  # [N, (K-1) d]
            code = self.fit_step == 'code'
            op = adjacency.operator(behavior, norm='left' if code else 'left_plus_identity')
            rs = [self.behavior_emb[g]]                                  # r^{g,0}

            def step(op, h: Tensor, layer: int) -> Tensor:
                if layer > 0:
                    rs.append(rs[-1] @ self.layer_weight[layer - 1])     # r^{l} = r^{l-1} W^l
                rh = h * rs[-1].repeat(len(partners))
                return op @ rh + h if code else op @ rh  # A(E o r) + E  |  (D^-1 A + I)(E o r)

            # running: the fitting experts have always summed their layers left to right
            total = propagate(h, op, self.num_layers, step=step, combine='sum', running=True)
            bases.append(self.output_scale * total)
            for slot, key in enumerate(keys):
                where[key] = (len(bases) - 1, slot)
        assert d == self.embedding_dim
        return FittedExperts(x, bases, where, emb.users.size(1))

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

    def gate_outputs(self, k: int) -> List[int]:
        r"""For each behavior :math:`j`, the gate output of task ``k`` that weighs its expert
        (``expert_order``)."""
        return gate_output_order(self.expert_order, k, self.num_behaviors)

    def _gate_features(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.gate_input == 'normalized' else x

    def gate_weights(self, eu_k: Tensor, ev_k: Tensor, k: int) -> Tensor:
        r"""Eq 13's :math:`\mathbf{g}^k`: ``[*, K]``, entry :math:`j` weighing behavior
        :math:`j`'s expert."""
        eu_k, ev_k = self._gate_features(eu_k), self._gate_features(ev_k)
        shape = torch.broadcast_shapes(eu_k.shape, ev_k.shape)
        x = torch.cat([eu_k.expand(shape), ev_k.expand(shape)], dim=-1)
        logits = self.gate(x, group=k if self.gate_per_task else 0)
        if self.expert_order != 'behavior':
            logits = logits[..., self.gate_outputs(k)]
        return logits.softmax(dim=-1)

    def forward(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                behavior: str) -> Tensor:
        k = self._index(emb, behavior)
        if self.aggregation != 'gated':
            return self._forward_fused(emb, users, items, k)
        fitted = self._fitted(emb)
        num_pairs = users.size(0)
        rows = torch.cat([users, items.reshape(-1) + fitted.num_users])   # one gather per table
        g = fitted.gather(k, rows)                                       # [K, B + B (C), d]
        u, v = g[:, :num_pairs], g[:, num_pairs:].reshape(g.size(0), *items.shape, g.size(2))
        if items.dim() == 2:
            u = u.unsqueeze(2)
        experts = u * v                                                  # eq 9 (j = k), eq 12
        gate = self.gate_weights(u[k], v[k], k)        # expert (k, k) = e^k: [B, (C), K]
        terms = gate.movedim(-1, 0).unsqueeze(-1) * experts              # o^k(j), eq 14
        stop = self.stop_gradient_mask(k)
        if any(stop):
            mask = torch.tensor(stop, device=terms.device).view(-1, *([1] * (terms.dim() - 1)))
            terms = torch.where(mask, terms.detach(), terms)
        return self.score_scale * self._reduce(terms.sum(0))             # eq 15

    def score_all(self, emb: BehaviorEmbeddings, users: Tensor, behavior: str) -> Tensor:
        r"""``[B, I]`` by matrix products: :math:`\hat o^k_{uv} = \frac{1}{d} \sum_j g^k_j\,
        \mathbf{e}_{u}^{k,j} \cdot \mathbf{e}_{v}^{k,j}`, the gate logits being a user part
        plus an item part :math:`a_j(u) + b_j(v)`, so that :math:`\hat o^k_{uv} =
        \frac{1}{d} \sum_j (e^{a_j(u)} \mathbf{e}_u^{k,j}) \cdot (e^{b_j(v)}
        \mathbf{e}_v^{k,j}) / \sum_j e^{a_j(u)} e^{b_j(v)}`: two matrix products and a
        division, no ``[K, B, I]`` tensor (the pairwise softmax only where the weights
        underflow)."""
        k = self._index(emb, behavior)
        if self.aggregation != 'gated':
            return self._score_all_fused(emb, users, k)
        fit_u, fit_v = self._fitted(emb).tables(k)                       # [K, U, d], [K, I, d]
        d = self.embedding_dim
        width = d if self.tower == 'mean' else 1
        grp = k if self.gate_per_task else 0
        weight, bias = self.gate.weights[0][grp], self.gate.biases[0][grp]   # [2d, K], [K]
        if self.expert_order != 'behavior':                    # columns in behavior order
            order = self.gate_outputs(k)
            weight, bias = weight[:, order], bias[order]
        u = fit_u[:, users]                                                  # [K, B, d]
        scale = self.score_scale / width
        user_logits = self._gate_features(emb.users[k][users]) @ weight[:d] + bias   # [B, K]
        item_logits = self._gate_features(emb.items[k]) @ weight[d:]                # [I, K]
        # softmax_j(a_j(u) + b_j(v)) = e^{a_j} e^{b_j} / sum_l e^{a_l} e^{b_l}, so the gated
        # sum is one product of [B, K d] by [K d, I] over one of [B, K] by [K, I] (each side
        # shifted by its own max over j, which the softmax ignores)
        ea = (user_logits - user_logits.amax(1, keepdim=True)).exp()        # [B, K], max 1
        eb = (item_logits - item_logits.amax(1, keepdim=True)).exp()        # [I, K], max 1
        num_b, num_k = ea.shape
        uw = (u * ea.t().unsqueeze(2)).transpose(0, 1).reshape(num_b, num_k * d)
        vw = (fit_v * eb.t().unsqueeze(2)).transpose(0, 1).reshape(-1, num_k * d)
        den = ea @ eb.t()                                                   # [B, I]
        if bool((den > torch.finfo(den.dtype).tiny ** 0.5).all()):
            return (uw @ vw.t()).div_(den).mul_(scale)
        # gate logits so far apart that a pair's weights underflow: the softmax pair by pair
        user_logits, item_logits = user_logits.t().unsqueeze(2), item_logits.t()
        out = []
        for start in range(0, emb.items.size(1), self.chunk_size):
            v = fit_v[:, start:start + self.chunk_size]                      # [K, C, d]
            dots = torch.bmm(u, v.transpose(1, 2))                           # [K, B, C]
            gate = torch.softmax(user_logits + item_logits[:, start:start + self.chunk_size]
                                 .unsqueeze(1), dim=0)                       # [K, B, C]
            out.append(gate.mul_(dots).sum(0).mul_(scale))
        return torch.cat(out, dim=1)

    def _reduce(self, x: Tensor) -> Tensor:
        """The tower over the last axis: eq 15's mean, or the code's sum."""
        return x.sum(-1) if self.tower == 'sum' else x.mean(-1)

    def regularized_parameters(self) -> List[Tensor]:
        r"""What the code's L2 term covers besides the embedding tables: the gate's weight
        matrices and the fitting layers' :math:`\mathbf{W}^l` (not the biases, not
        :math:`\mathbf{r}^{k,0}`)."""
        out = [] if self.gate is None else list(self.gate.weights)
        if self.layer_weight is not None and self.layer_weight.numel():
            out.append(self.layer_weight)
        return out

    # ------------------------------------------------------------------ COPF table 4
    def _pair_params(self, k: int, j: int):
        r""":math:`\mathbf{W}_{k,j}` (and the vanilla gate's bias) of task ``k``, behavior
        ``j != k``."""
        p = j if j < k else j - 1
        weight = None if self.fusion_weight is None else self.fusion_weight[k, p]
        bias = None if self.fusion_bias is None else self.fusion_bias[k, p]
        return weight, bias

    def _forward_fused(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                       k: int) -> Tensor:
        u, v = emb.users[:, users], emb.items[:, items]                  # [K, B, d], [K, B, (C), d]
        if items.dim() == 2:
            u = u.unsqueeze(2)
        own = out = u[k] * v[k]                                          # e^k, eq 9
        if self.aggregation != 'none':
            for j in range(self.num_behaviors):
                if j != k:
                    out = out + fuse(self.aggregation, own, u[j] * v[j],
                                     *self._pair_params(k, j))
        return self.score_scale * self._reduce(out)

    def _score_all_fused(self, emb: BehaviorEmbeddings, users: Tensor, k: int) -> Tensor:
        r"""``[B, I]`` of table 4's schemes by matrix products. Every sum over :math:`d` of a
        product of pair experts is one: :math:`\mathbf{w} \cdot (\mathbf{e}^a \circ
        \mathbf{e}^b) = (\mathbf{w} \circ \mathbf{e}_u^a \circ \mathbf{e}_u^b) \cdot
        (\mathbf{e}_v^a \circ \mathbf{e}_v^b)`; ``'linear'`` sums
        :math:`\mathbf{W}_{k,j}\mathbf{e}^j` through the column sums of
        :math:`\mathbf{W}_{k,j}`, ``'vanilla'`` splits its gate's :math:`[4, 4d]` weight into
        the four feature blocks."""
        d = self.embedding_dim
        u = emb.users[:, users]                                          # [K, B, d]
        uk = u[k]
        out = []
        for start in range(0, emb.items.size(1), self.chunk_size):
            v = emb.items[:, start:start + self.chunk_size]              # [K, C, d]
            vk = v[k]
            own = uk @ vk.t()                                            # sum_d e^k
            total = own
            for j in range(self.num_behaviors):
                if j == k or self.aggregation == 'none':
                    continue
                uj, vj = u[j], v[j]
                weight, bias = self._pair_params(k, j)
                if self.aggregation == 'sum':
                    total = total + uj @ vj.t()
                elif self.aggregation == 'linear':
                    total = total + (uj * weight.sum(0)) @ vj.t()
                elif self.aggregation == 'projection':
                    dot = (uk * uj) @ (vk * vj).t()                      # e^j . e^k
                    sq = uk.pow(2) @ vk.pow(2).t()                       # ||e^k||^2
                    total = total + dot / (sq + 1e-12) * own
                else:  # vanilla: logits_i = W_i . [e^k, e^j, e^k - e^j, e^k o e^j] + b_i
                    wk, wj, wdiff, wprod = weight.view(4, 4, d).unbind(1)  # [4, d] each
                    ukj, vkj = uk * uj, vk * vj
                    logits = (torch.matmul((wk + wdiff).unsqueeze(1) * uk, vk.t())
                              + torch.matmul((wj - wdiff).unsqueeze(1) * uj, vj.t())
                              + torch.matmul(wprod.unsqueeze(1) * ukj, vkj.t())
                              + bias.view(4, 1, 1))                      # [4, B, C]
                    other, both = uj @ vj.t(), ukj @ vkj.t()
                    sums = torch.stack([own, other, own - other, both])  # sum_d of each feature
                    total = total + (logits.softmax(dim=0) * sums).sum(0)
            out.append(total * (self.score_scale / (d if self.tower == 'mean' else 1)))
        return torch.cat(out, dim=1)

    # ------------------------------------------------------------------ eq 8, 17
    def contrastive_loss(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                         num_triples: int = 1, user_counts: Optional[Tensor] = None,
                         item_counts: Optional[Tensor] = None) -> Tensor:
        r""":math:`\sum_{k<K} (\mathcal{L}_{cl,U}^{K,k} + \mathcal{L}_{cl,V}^{K,k})` with
        anchors ``users`` and ``items`` (distinct ids; ``*_counts`` how often each one is an
        anchor, default once: every distinct anchor is computed once and weighted, which is
        exact), normalised as ``cl_norm`` says (``num_triples``: the batch's triples per
        behavior, :math:`B` of ``'triples'``), not weighted by :math:`\gamma`."""
        target = self.num_behaviors - 1
        total = emb.users.new_zeros(())
        num_users = emb.users.size(1)
        tables_u, tables_v = emb.users.unbind(0), emb.items.unbind(0)   # no select gradients
        for k in range(target):
            for table, ids, counts in ((tables_u, users, user_counts),
                                       (tables_v, items, item_counts)):
                if ids.numel() == 0:
                    continue
                weight = None if counts is None else counts.to(table[k].dtype)
                if self.negatives == 'all':   # the positives are rows ids of the candidates
                    term = info_nce(table[target][ids], None, self.tau, candidates=table[k],
                                    cosine=self.cosine, positive_index=ids, weight=weight)
                else:
                    term = info_nce(table[target][ids], table[k][ids], self.tau,
                                    cosine=self.cosine, weight=weight)
                n = ids.numel() if counts is None else float(counts.sum())
                if self.cl_norm == 'total':  # sum over the anchors / |U| (|V|)
                    term = term * (n / table[k].size(0))
                elif self.cl_norm == 'users':  # the code: both sums / |U|
                    term = term * (n / num_users)
                total = total + term
        if self.cl_norm == 'triples':        # eq 17 over eq 16's sum, divided by B
            total = total / max(int(num_triples), 1)
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
        num_triples = max(t[0].numel() for t in triples)        # B, the BPR mean's divisor
        if self.cl_anchors == 'pairs':   # the code: a user per pair, the positive items
            users, user_counts = torch.cat([t[0] for t in triples]).unique(return_counts=True)
            items, item_counts = torch.cat([t[1] for t in triples]).unique(return_counts=True)
        else:
            users = torch.cat([t[0] for t in triples]).unique()
            items = torch.cat([t[1:].reshape(-1) for t in triples]).unique()
            user_counts = item_counts = None
        return {'contrastive': self.gamma * self.contrastive_loss(
            emb, users, items, num_triples, user_counts, item_counts)}

    def extra_repr(self) -> str:
        return (f'embedding_dim={self.embedding_dim}, num_behaviors={self.num_behaviors}, '
                f'alpha={self.alpha}, beta={self.beta}, num_layers={self.num_layers}, '
                f'fit_graph={self.fit_graph!r}, output_scale={self.output_scale}, '
                f'tau={self.tau}, gamma={self.gamma}, cosine={self.cosine}, '
                f'negatives={self.negatives!r}, cl_norm={self.cl_norm!r}, '
                f'contrastive={self.contrastive}, '
                f'forward_fit={self.forward_fit}, backward_fit={self.backward_fit}, '
                f'all_sg={self.all_sg}, fitting={self.fitting}, '
                f'gate_per_task={self.gate_per_task}, score_scale={self.score_scale}, '
                f'gate_init={self.gate_init!r}, gate_input={self.gate_input!r}, '
                f'expert_order={self.expert_order!r}, aggregation={self.aggregation!r}, '
                f'fit_step={self.fit_step!r}, tower={self.tower!r}, '
                f'cl_anchors={self.cl_anchors!r}')


class FittedExperts:
    r"""The experts :math:`\mathbf{e}^{k,j}` of every task :math:`k` (eq 10-12) as DFME
    computed them: behavior :math:`j`'s own embeddings for :math:`j = k` (rows of
    ``nodes``), the fitting outputs for :math:`j \ne k` as column blocks of the per-graph
    outputs ``bases`` (``where[(k, j)] = (base, block)``), users first in every table.

    :meth:`gather` reads only the rows a batch needs, one gather per table (its gradient is
    one zero-filled table each, not a ``[K, K, N, d]`` stack); :meth:`tables` builds a task's
    full ``[K, U, d]`` / ``[K, I, d]`` tables (evaluation), and iterating yields the
    ``([K, K, U, d], [K, K, I, d])`` pair of every task.
    """

    def __init__(self, nodes: Tensor, bases: List[Tensor],
                 where: Dict[Tuple[int, int], Tuple[int, int]], num_users: int):
        self.nodes, self.bases, self.where = nodes, bases, where
        self.num_users = int(num_users)
        self.num_behaviors, _, self.dim = nodes.shape
        self._tables: Dict[int, Tuple[Tensor, Tensor]] = {}

    def _source(self, k: int, j: int) -> Optional[Tuple[int, int]]:
        return None if j == k else self.where.get((k, j))

    def expert(self, k: int, j: int) -> Tensor:
        r"""``[U + I, d]`` expert :math:`\mathbf{e}^{k,j}` of every node."""
        src = self._source(k, j)
        if src is None:
            return self.nodes[j]
        base, block = src
        return self.bases[base][:, block * self.dim:(block + 1) * self.dim]

    def gather(self, k: int, rows: Tensor) -> Tensor:
        """``[K, R, d]``: task ``k``'s experts, behavior order, at node ``rows`` (users
        first: an item's row is ``U + item``)."""
        own = None
        gathered: Dict[int, Tensor] = {}
        out = []
        for j in range(self.num_behaviors):
            src = self._source(k, j)
            if src is None:
                if own is None:
                    own = self.nodes[:, rows]                            # [K, R, d]
                out.append(own[j])
            else:
                base, block = src
                if base not in gathered:
                    gathered[base] = self.bases[base].index_select(0, rows)
                out.append(gathered[base][:, block * self.dim:(block + 1) * self.dim])
        return torch.stack(out)

    def tables(self, k: int) -> Tuple[Tensor, Tensor]:
        """Task ``k``'s experts for every user and item: ``([K, U, d], [K, I, d])``."""
        if k not in self._tables:
            full = torch.stack([self.expert(k, j) for j in range(self.num_behaviors)])
            self._tables[k] = full[:, :self.num_users], full[:, self.num_users:]
        return self._tables[k]

    def __iter__(self):
        per_task = [self.tables(k) for k in range(self.num_behaviors)]
        yield torch.stack([t[0] for t in per_task])
        yield torch.stack([t[1] for t in per_task])
