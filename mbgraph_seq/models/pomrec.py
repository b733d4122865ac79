r"""PoMRec: prompt-based multi-interest learning for sequential recommendation (Dong, Song, Liu
& Guan; building blocks in :mod:`mbgraph_seq.nn.pomrec`).

* interaction embeddings :math:`H_{u,t}`: item embeddings of the most recent ``M`` events plus
  learned positional embeddings (padding masked);
* prompt-augmented inputs :math:`H^{\mathcal F} = [P_{\mathcal F}, H]`,
  :math:`H^{\mathcal G} = [P_{\mathcal G}, H]` (eq 1);
* centrality-dispersion extractor :math:`V = M + \lambda\Sigma` (eq 5-6), attention
  aggregator and MLP weights :math:`e_{u,t} = V z` (eq 7-9);
* scores :math:`y^i_{u,t} = e_{u,t}^\top e_i` (eq 4), trained with BPR (eq 10-11) on every
  prefix of every training sequence.

PoMRec is single-behavior in the paper. Its prompts are learned embeddings that tell the input
which learning objective it serves (extractor or aggregator): one prompt set per module, the
default. ``behavior_prompts=True`` is an extension for multi-behavior data: the prompts also
name the behavior of the interaction being predicted, one set per module and behavior,
:math:`P^b_{\mathcal F}` and :math:`P^b_{\mathcal G}`, the target behavior's set at
evaluation.

The extractor's softmax covers the whole input, so the model is not causal: it trains on
sequences cut before each predicted event (``train_layout = 'all'``), exactly the triplets
:math:`(S_{u,t}, i, j)` of eq 10.

Defaults: the paper's ``d = 64``, ``M = 20``, and the authors' code for the rest (``K = 3``,
``N_p = 4``, :math:`\lambda = 3`, ``d' = 8``); Adam with lr 1e-3, batches of 256; evaluation in
the paper: 1 positive + 999 sampled negatives. The authors' training rule (their code):
weight decay 1e-6, early stopping judged on validation NDCG@5 and never before epoch 21
(``train_sequence_model(..., weight_decay=1e-6, monitor='ndcg@5', min_epochs=21)``, the seq
suite's PoMRec tables); their ML-1M example uses ``K = 2``, :math:`\lambda = 1`.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import SequenceBatch, SequenceDataset
from ..nn.pomrec import CentralityDispersionExtractor, InterestAggregator, prompt_augment
from .base import SequenceRecommender
from .hmar import crop_batch


class PoMRec(SequenceRecommender):
    """Prompt-based multi-interest learning (PoMRec).

    Train it on prefix batches: ``dataset.train_source(prefixes=model.train_layout,
    target_only=model.target_only)``.

    Args:
        dataset: the :class:`~mbgraph_seq.data.SequenceDataset`.
        dim: embedding size ``d`` (64).
        max_len: length ``M`` of :math:`H_{u,t}` (20); longer inputs keep their most recent
            events; the effective length is ``min(max_len, dataset.max_len)``.
        num_interests: ``K`` (3).
        num_prompts: ``N_p`` prompt embeddings per module (4; 0 = no prompts, the "Base"
            ablation).
        attention_dim: ``d'`` of :math:`W^1_{\\mathcal F}, W^1_{\\mathcal G}, W^1_M` (8).
        dispersion_weight: :math:`\\lambda` of eq 6 (3; 0 = centrality only).
        behavior_prompts: one prompt set per behavior of the predicted interaction (see the
            module docstring; an extension of the paper); False (default): one set per
            module, as in the paper.
        behavior_input: add a learned behavior embedding to each interaction embedding (an
            extension for multi-behavior data; not in the paper).
        weight_softmax: softmax on the interest weights :math:`z` (the authors' code); the
            paper (eq 8-9) uses them as is.
        aggregator: ``'mlp'`` (default): eq 8's two-layer MLP for :math:`z`; ``'linear'``: the
            authors' code, one linear layer + softmax
            (:class:`~mbgraph_seq.nn.pomrec.InterestAggregator`).
        dropout: dropout on the interaction embeddings (0: the paper has none).
        eps: variance floor of the dispersion (eq 6).
    """

    causal = False
    train_layout = 'all'
    target_only = False

    def __init__(self, dataset: SequenceDataset, dim: int = 64, max_len: int = 20,
                 num_interests: int = 3, num_prompts: int = 4, attention_dim: int = 8,
                 dispersion_weight: float = 3.0, behavior_prompts: bool = False,
                 behavior_input: bool = False, weight_softmax: bool = False,
                 dropout: float = 0.0, eps: float = 1e-6, aggregator: str = 'mlp'):
        super().__init__(dataset)
        for name, value in (('dim', dim), ('max_len', max_len), ('num_interests', num_interests),
                            ('attention_dim', attention_dim)):
            if value <= 0:
                raise ValueError(f'{name} must be positive, got {value}')
        if num_prompts < 0:
            raise ValueError(f'num_prompts must be >= 0, got {num_prompts}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1), got {dropout}')
        self.dim, self.num_interests = int(dim), int(num_interests)
        self.num_prompts = int(num_prompts)
        self.seq_len = min(int(max_len), int(dataset.max_len))
        self.behavior_prompts = bool(behavior_prompts)
        self.items = nn.Embedding(dataset.num_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(self.seq_len, dim)
        self.behaviors = (nn.Embedding(dataset.num_behaviors + 1, dim, padding_idx=0)
                          if behavior_input else None)
        # reading taken: a prompt names the objective, so it also names the predicted behavior
        sets = dataset.num_behaviors if self.behavior_prompts else 1
        self.extractor_prompts = nn.Parameter(torch.empty(sets, self.num_prompts, dim))  # P_F
        self.aggregator_prompts = nn.Parameter(torch.empty(sets, self.num_prompts, dim))  # P_G
        self.extractor = CentralityDispersionExtractor(dim, num_interests, attention_dim,
                                                       dispersion_weight, eps)
        self.aggregator = InterestAggregator(dim, num_interests, attention_dim, weight_softmax,
                                             weights=aggregator)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.01) weights, embeddings and prompts, zero biases (the authors'
        framework), zero padding rows."""
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.01)
            else:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.items.weight[0].zero_()
            if self.behaviors is not None:
                self.behaviors.weight[0].zero_()

    def item_weight(self) -> Tensor:
        return self.items.weight

    # ------------------------------------------------------------------ encoder
    def interaction_embeddings(self, batch: SequenceBatch) -> Tensor:
        """:math:`H_{u,t}` ``[B, M, d]``: item + positional (+ behavior) embeddings, zero at
        padding. Position ``p`` of a ``[B, M]`` input uses positional embedding
        ``seq_len - M + p`` (the most recent event always gets the last one)."""
        M = batch.items.size(1)
        pos = torch.arange(self.seq_len - M, self.seq_len, device=batch.items.device)
        h = self.items(batch.items) + self.positions(pos).unsqueeze(0)
        if self.behaviors is not None:
            h = h + self.behaviors(batch.behaviors)
        return self.dropout(h * batch.mask.unsqueeze(-1).to(h.dtype))

    def prompt_index(self, batch: SequenceBatch) -> Tensor:
        """``[B]`` prompt set of each row: the behavior (0-based) of the predicted interaction
        (last column of ``pos_behaviors``), or 0 with a single set (or no prompts)."""
        if not self.behavior_prompts or self.num_prompts == 0:
            return torch.zeros(batch.items.size(0), dtype=torch.long, device=batch.items.device)
        behavior = batch.pos_behaviors[:, -1] - 1
        if bool((behavior < 0).any()):
            raise ValueError('behavior prompts need the behavior of the predicted interaction '
                             'in the last column of pos_behaviors (0 found)')
        return behavior

    def encode(self, batch: SequenceBatch) -> Tensor:
        """User embedding :math:`e_{u,t}` ``[B, d]`` after the most recent input event
        (eq 1-3, 5-9)."""
        batch = crop_batch(batch, self.seq_len)
        h = self.interaction_embeddings(batch)
        sel = self.prompt_index(batch)
        h_f, mask_f = prompt_augment(self.extractor_prompts[sel], h, batch.mask)    # eq 1
        h_g, mask_g = prompt_augment(self.aggregator_prompts[sel], h, batch.mask)
        interests = self.extractor(h_f, mask_f)                                   # eq 5-6
        return self.aggregator(h_g, mask_g, interests)                           # eq 7-9

    def user_representation(self, batch: SequenceBatch) -> Tensor:
        return self.encode(batch)

    # ------------------------------------------------------------------ training
    def loss(self, batch: SequenceBatch) -> Tuple[Tensor, Dict[str, float]]:
        r"""BPR (eq 11), :math:`-\log\sigma(y^i_{u,t} - y^j_{u,t})`, averaged over the batch's
        rows and their negatives; one target per row, in the last column."""
        pos, _, neg = batch.last_targets('PoMRec (its softmax covers the whole input)')
        e = self.encode(batch)                                                    # [B, d]
        items = self.item_weight()
        y_pos = (e * items[pos]).sum(-1)                                         # eq 4
        y_neg = torch.einsum('bd,bnd->bn', e, items[neg])
        return F.softplus(y_neg - y_pos.unsqueeze(-1)).mean(), {}


__all__ = ['PoMRec']
