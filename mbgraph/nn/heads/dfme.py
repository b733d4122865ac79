r"""The Distributed Fitting Multi-Expert network (DFME) of COPF (Meng et al., "Combinatorial
Optimization Perspective based Framework for Multi-behavior Recommendation", KDD 2025,
section 4.3, eq 9-15) with its contrastive loss (eq 8, 17).

**Contrastive alignment** (eq 8, 17): the target behavior and every auxiliary behavior pulled
together per user and per item, weighed against BPR as eq 16-17 do. The head holds it as a
:class:`~mbgraph.nn.heads.contrastive.BehaviorContrastive` (:attr:`DFMEHead.contrastive_term`;
that module's docstring has the equations and the options ``tau``, ``gamma``, ``cosine``,
``negatives``, ``cl_anchors``, ``cl_norm``, which the head passes on and reads back as
``head.tau``, ...).

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
reads, and COGCN's are far from unit scale: eq 5's operators make the target behavior's
embeddings hundreds of times larger than the initial embeddings at initialisation, while the
first behavior's stay near them. A Xavier-initialised :math:`\mathbf{W}_g`
(``gate_init='xavier'``, what the paper and the code do) then gives the target task logits
far apart: its softmax is saturated from the first step, a hard and random choice per (user,
item) pair between the task's own expert and the fitting experts, whose scores are orders of
magnitude below the own expert's (:math:`\alpha, \beta \ll 1`). The target score becomes
that routing rather than :math:`\mathbf{e}^K`, BPR drives the own expert's weight to 0, and
the own expert gets no gradient any more. In the code the embeddings are small enough for
Xavier to start near the uniform gate; ``gate_init='zeros'`` (the default) starts every task
at :math:`\mathbf{g}^k = 1/K` whatever the encoder's scale, and the gate learns from there.
Adam still moves the logits by about the learning rate times :math:`\lVert \mathbf{e}_u^{k,*}
\| \mathbf{e}_v^{k,*} \rVert_1` per step, so on such embeddings the target task's gate learns
far faster than the others and can still shut its own expert out before that expert is any
good. ``gate_input='normalized'`` feeds the gate the L2-normalised embeddings instead, which
makes it indifferent to the encoder's scale (neither the paper nor the code: eq 13 reads the
embeddings as they are, ``gate_input='embeddings'``, the default). The measurements behind
this paragraph: docs/RESULTS.md, *Measurements behind the DFME head's defaults* and *COPF
table 4 on Taobao* (the gate's collapse at full scale and what ``'normalized'`` changes).

**Gate outputs and experts** (``expert_order``). Eq 13-14 index the shared gate's outputs by
behavior: :math:`g^k(j)` weighs behavior :math:`j`'s expert, so the output that weighs the
task's own expert moves with the task (``expert_order='behavior'``, the default). The code
stacks the task's own expert first and the other behaviors' after it in behavior order, so
the shared gate's first output always weighs the task's own expert
(``expert_order='own_first'``).

**Ablations of COPF table 3** (:data:`VARIANTS`, :meth:`DFMEHead.variant`):
``contrastive=False`` (w/o con.), ``forward_fit=False`` (w/o for.: the other behaviors'
specific experts :math:`\mathbf{e}^j` replace the fitting experts), ``backward_fit=False``
(w/o back.: no stop-gradient), ``all_sg=True`` (all sg.: every :math:`j \ne k` term of every
task is stopped), ``fitting=False`` (w/o fit.: both ``forward_fit`` and ``backward_fit``
off). Table 3's "w/o DFME" is not a DFME head: the bilinear head
(:class:`~mbgraph.nn.heads.bilinear.BilinearHead`, model ``copf+bilinear``).

**Aggregation schemes of COPF table 4** (``aggregation``). Section 5.3.2 replaces the whole
aggregation of eq 10-14 (fitting experts, gate and stop-gradient) by one of five
alternatives, keeping the contrastive term: :class:`~mbgraph.nn.heads.expert_fusion.
ExpertFusionHead`. ``aggregation='gated'`` (the default) is eq 10-15;
``DFMEHead(..., aggregation='sum')`` (and the other four names) builds an
:class:`~mbgraph.nn.heads.expert_fusion.ExpertFusionHead` instead, so that ``--set
head.aggregation=sum`` on ``copf`` keeps selecting it. The gate options (``gate_*``,
``expert_order``), the fitting options and ``all_sg`` belong to ``'gated'`` and have no
effect otherwise (``all_sg=True`` or ``gate_per_task=True`` with another scheme is an error).
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoders.base import BehaviorEmbeddings, graph_operators
from ..functional import propagate
from .base import gate_output_order
from .blocks import MTLHead, StackedMLP, check_embeddings
from .contrastive import (
    CL_ANCHORS,
    CL_NORMS,
    CONTRASTIVE_OPTIONS,
    BehaviorContrastive,
    contrastive_option,
)
from .expert_fusion import AGGREGATIONS as FUSION_AGGREGATIONS
from .expert_fusion import TOWERS, ExpertFusionHead

# CL_ANCHORS and CL_NORMS lived here before issue 11: re-exported for old imports
__all__ = ['DFMEHead', 'FittedExperts', 'VARIANTS', 'AGGREGATIONS', 'CL_ANCHORS', 'CL_NORMS']

EXTRAS_KEY = 'dfme'
#: ``aggregation`` values: eq 13-15 and the five alternatives of COPF table 4
#: (:class:`~mbgraph.nn.heads.expert_fusion.ExpertFusionHead`)
AGGREGATIONS = ('gated',) + FUSION_AGGREGATIONS
#: ``fit_step``: one fitting layer as eq 11 writes it, or as the code computes it
FIT_STEPS = ('paper', 'code')

#: COPF table 3's DFME rows -> the switches that build them (:meth:`DFMEHead.variant`);
#: ``'COPF'`` is the full model. "all sg." replaces eq 14's stop-gradient and needs it on.
VARIANTS: Dict[str, Dict[str, bool]] = {
    'COPF': {},
    'w/o con.': {'contrastive': False},
    'w/o for.': {'forward_fit': False},
    'w/o back.': {'backward_fit': False},
    'all sg.': {'all_sg': True, 'backward_fit': True},
    'w/o fit.': {'fitting': False},
}


def _squash(name: str) -> str:
    return ''.join(c for c in str(name).lower() if c.isalnum())


_VARIANT_KEYS = {**{_squash(k): k for k in VARIANTS}, 'dfme': 'COPF'}


def variant_key(name: str) -> str:
    """The :data:`VARIANTS` key of ``name``, case, spaces and punctuation aside (``'w/o
    con.'``, ``'wo_con'``; ``'DFME'`` is the full model)."""
    key = _VARIANT_KEYS.get(_squash(name))
    if key is None:
        if _squash(name) == 'wodfme':
            raise ValueError("table 3's 'w/o DFME' replaces DFME by the bilinear head "
                             "(BilinearHead, model 'copf+bilinear'): not a DFMEHead variant")
        raise ValueError(f'unknown DFME variant {name!r}; expected one of {list(VARIANTS)}')
    return key


def _check_choices(**given: str) -> None:
    options = {'fit_graph': ('other', 'task'), 'fit_step': FIT_STEPS, 'tower': TOWERS,
               'gate_init': ('zeros', 'xavier'), 'gate_input': ('embeddings', 'normalized'),
               'expert_order': ('behavior', 'own_first')}
    for name, value in given.items():
        if value not in options[name]:
            raise ValueError(f'unknown {name} {value!r}; expected one of {list(options[name])}')


def _fusion_head(*args, **kwargs) -> ExpertFusionHead:
    """``DFMEHead(..., aggregation=NAME)`` with one of table 4's names: the options checked
    as before, the gate and fitting options dropped, the rest passed on."""
    bound = inspect.signature(DFMEHead.__init__).bind(None, *args, **kwargs)
    bound.apply_defaults()
    a = dict(bound.arguments)
    aggregation = a['aggregation']
    if aggregation not in AGGREGATIONS:
        raise ValueError(f'unknown aggregation {aggregation!r}; expected one of '
                         f'{list(AGGREGATIONS)}')
    if a['all_sg'] or a['gate_per_task']:
        raise ValueError(f'all_sg and gate_per_task act on the gate of eq 13-14, which '
                         f'aggregation={aggregation!r} replaces')
    if a['num_layers'] < 1:
        raise ValueError(f"DFMEHead needs num_layers >= 1 fitting layers, got {a['num_layers']}")
    _check_choices(**{k: a[k] for k in ('fit_graph', 'fit_step', 'gate_init', 'gate_input',
                                        'expert_order')})
    return ExpertFusionHead(a['embedding_dim'], a['num_behaviors'], aggregation,
                            score_scale=a['score_scale'], tower=a['tower'],
                            contrastive=a['contrastive'],
                            **{k: a[k] for k in CONTRASTIVE_OPTIONS})


class DFMEHead(MTLHead):
    r"""COPF's Distributed Fitting Multi-Expert head (module docstring: eq 9-15), holding eq
    8's contrastive term as :attr:`contrastive_term`.

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
        tau, gamma, cosine, negatives, cl_norm (optional): eq 8's options, passed on to
            :class:`~mbgraph.nn.heads.contrastive.BehaviorContrastive` (its docstring; the
            defaults are its own: ``0.1``, ``1.0``, ``True``, ``'all'``, ``'triples'``).
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
        aggregation (str, optional): ``'gated'`` (eq 10-15); one of COPF table 4's
            alternatives ``'none'``, ``'sum'``, ``'linear'``, ``'vanilla'``,
            ``'projection'`` builds an :class:`~mbgraph.nn.heads.expert_fusion.
            ExpertFusionHead` instead (module docstring). (default: ``'gated'``)
        fit_step (str, optional): one fitting layer as eq 11 writes it, ``'paper'``
            (:math:`(\mathbf{D}^{-1}\mathbf{A} + \mathbf{I})(\mathbf{E} \circ \mathbf{r})`),
            or as the code computes it, ``'code'`` (:math:`\mathbf{D}^{-1}\mathbf{A}
            (\mathbf{E} \circ \mathbf{r}) + \mathbf{E}`). (default: ``'paper'``)
        tower (str, optional): eq 15's ``'mean'`` over :math:`d`, or the code's ``'sum'``.
            (default: ``'mean'``)
        cl_anchors (str, optional): eq 8's anchors, passed on to
            :class:`~mbgraph.nn.heads.contrastive.BehaviorContrastive`.
            (default: ``'unique'``)

    Table 3's rows are :data:`VARIANTS`: ``DFMEHead.variant('w/o con.', d, K, **options)``.

    Shapes:
        - **input:** :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` ``[K, U, d]`` /
          ``[K, I, d]`` after :meth:`precompute` (which adds ``extras['dfme']``: fitted user
          and item embeddings ``[K, K, U, d]`` and ``[K, K, I, d]``, indexed (task, behavior),
          the diagonal being the behavior-specific embeddings), users ``[B]``, items ``[B]`` or
          ``[B, C]``.
        - **output:** scores ``[B]`` or ``[B, C]``; :meth:`score_all` ``[B, I]``.
    """

    chunk_size: int = 4096  # score_all is matrix products: [K, B, chunk] at a time
    #: table 3's rows (module-level :data:`VARIANTS`)
    VARIANTS = VARIANTS
    #: the :data:`VARIANTS` key this head was built as by :meth:`variant` (else ``None``)
    variant_name: Optional[str] = None
    # eq 8's options, read from (and set on) contrastive_term
    tau, gamma, cosine, negatives, cl_norm, cl_anchors = (contrastive_option(name)
                                                          for name in CONTRASTIVE_OPTIONS)

    def __new__(cls, *args, **kwargs):
        # the old aggregation argument: table 4's names build the head that computes them
        aggregation = kwargs.get('aggregation', args[_AGGREGATION_POSITION]
                                 if len(args) > _AGGREGATION_POSITION else 'gated')
        if cls is DFMEHead and aggregation != 'gated':
            return _fusion_head(*args, **kwargs)
        return super().__new__(cls)

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
        if aggregation != 'gated':   # only a subclass gets here (DFMEHead.__new__ maps it)
            raise ValueError(f'aggregation={aggregation!r} is ExpertFusionHead '
                             f'(mbgraph.nn.heads.expert_fusion); {type(self).__name__} is '
                             f"aggregation='gated'")
        if num_layers < 1:
            raise ValueError(f'DFMEHead needs num_layers >= 1 fitting layers, got {num_layers}')
        _check_choices(fit_graph=fit_graph, fit_step=fit_step, tower=tower,
                       gate_init=gate_init, gate_input=gate_input, expert_order=expert_order)
        self.contrastive_term = BehaviorContrastive(tau, gamma, cosine, negatives, cl_norm,
                                                    cl_anchors)
        if all_sg and not (backward_fit and fitting):
            raise ValueError('all_sg=True replaces the stop-gradient of eq 14 and needs it on '
                             '(backward_fit=True, fitting=True)')
        self.alpha, self.beta = float(alpha), float(beta)
        self.num_layers = int(num_layers)
        self.fit_graph = fit_graph
        self.output_scale = float(output_scale)
        self.contrastive = contrastive
        self.fitting = fitting
        self.aggregation = aggregation
        self.forward_fit = forward_fit and fitting
        self.backward_fit = backward_fit and fitting
        self.all_sg = all_sg
        self.gate_per_task = gate_per_task
        self.score_scale = float(score_scale)
        self.gate_init = gate_init
        self.gate_input = gate_input
        self.expert_order = expert_order
        self.fit_step, self.tower = fit_step, tower
        d, k = embedding_dim, num_behaviors
        self.behavior_emb = nn.Parameter(torch.empty(k, d))                 # r^{k',0}
        self.layer_weight = nn.Parameter(torch.empty(self.num_layers - 1, d, d))  # W^l
        self.gate = StackedMLP(k if gate_per_task else 1, [2 * d, k], act=None)
        self.reset_parameters()

    @classmethod
    def variant(cls, name: str, *args, **kwargs) -> 'DFMEHead':
        """Table 3's row ``name`` (a :data:`VARIANTS` key: ``'w/o con.'``, ``'all sg.'``,
        ...); ``args`` and ``kwargs`` go to the constructor (``embedding_dim``,
        ``num_behaviors``, the other options). An option that the row sets may be passed
        only with the row's value."""
        key = variant_key(name)
        switches = VARIANTS[key]
        given = dict(inspect.signature(cls.__init__).bind_partial(None, *args, **kwargs)
                     .arguments)
        given.pop('self')
        clash = {k: given[k] for k in switches if k in given and given[k] != switches[k]}
        if clash:
            raise ValueError(f'variant {key!r} sets {switches} itself; do not also pass '
                             f'{clash}')
        if given.get('aggregation', 'gated') != 'gated':
            raise ValueError(f"variant {key!r} is a row of table 3, DFME's own aggregation "
                             f"(aggregation='gated')")
        head = cls(**{**given, **switches})
        head.variant_name = key
        return head

    def reset_parameters(self) -> None:
        # Xavier, as COPF initialises every parameter
        for p in [self.behavior_emb, *self.layer_weight]:
            bound = math.sqrt(6.0 / (p.size(0) + p.size(1)))
            nn.init.uniform_(p, -bound, bound)
        self.gate.reset_parameters()               # Xavier weights, zero biases
        if self.gate_init == 'zeros':              # g^k = 1/K at the start (module docstring)
            with torch.no_grad():
                for w in self.gate.weights:
                    w.zero_()

    # ------------------------------------------------------------------ eq 10-12
    def precompute(self, emb: BehaviorEmbeddings, adjacency) -> BehaviorEmbeddings:
        """Add the fitted embeddings of every (task, behavior) pair as ``extras['dfme']``.
        ``adjacency``: a ``BehaviorAdjacency``, a ``HeteroData`` or an edge_index dict, as
        the encoders take it (:func:`~mbgraph.nn.encoders.base.graph_operators`)."""
        check_embeddings(emb, self.num_behaviors, self.embedding_dim, 'DFMEHead')
        adjacency = graph_operators(self, adjacency, emb.users.size(1), emb.items.size(1),
                                    emb.users.device, emb.users.dtype)
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

    # ------------------------------------------------------------------ eq 8, 17
    def contrastive_loss(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                         num_triples: int = 1, user_counts: Optional[Tensor] = None,
                         item_counts: Optional[Tensor] = None) -> Tensor:
        r""":meth:`BehaviorContrastive.loss
        <mbgraph.nn.heads.contrastive.BehaviorContrastive.loss>` of :attr:`contrastive_term`:
        eq 8 over the anchors ``users`` and ``items``, not weighted by :math:`\gamma`."""
        return self.contrastive_term.loss(emb, users, items, num_triples, user_counts,
                                          item_counts)

    def loss_terms(self, emb: BehaviorEmbeddings, batch: Dict[str, Any]) -> Dict[str, Tensor]:
        if not self.contrastive or self.gamma == 0.0 or self.num_behaviors < 2:
            return {}
        check_embeddings(emb, self.num_behaviors, self.embedding_dim, 'DFMEHead')
        return self.contrastive_term.loss_terms(emb, batch, 'DFMEHead')

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


# where DFMEHead.__new__ finds a positional aggregation argument
_AGGREGATION_POSITION = list(inspect.signature(DFMEHead.__init__).parameters).index(
    'aggregation') - 1
# inspect.signature(DFMEHead) would read __new__'s (*args, **kwargs): the options are
# __init__'s (the benchmark configs check head options against them)
DFMEHead.__signature__ = inspect.signature(DFMEHead.__init__).replace(
    parameters=list(inspect.signature(DFMEHead.__init__).parameters.values())[1:])
