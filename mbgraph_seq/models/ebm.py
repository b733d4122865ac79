r"""The Efficient Behavior Miner (EBM), DPCPL's de-noising pre-trained model (Wang et al.,
"Denoising Pre-Training and Customized Prompt Learning for Efficient Multi-Behavior
Sequential Recommendation", sec. 4.1-4.2).

* input: behavior-aware sequence embedding :math:`e = e_v + e_p + e_b` (eq 1);
* ``num_layers`` :class:`~mbgraph_seq.nn.filter.BehaviorMinerLayer` (the overall sequence and
  each behavior's sub-sequence through the Efficient Filter Layer, eq 2-3, then the behavior
  mixer; ``sequence_mixer='attention'`` puts self-attention in the filter's place: table 5's
  "w/o DS", see :class:`EBM`);
* user representation :math:`u` = the last layer's output after the most recent event;
* pre-training loss (eq 4), BPR form over next item and next behavior type:

  .. math::
      \mathcal L_{pt} = -\sum_U\sum_S \log\sigma(u^\top e_p - u^\top e_n)
                        + \log\sigma(u^\top b_p - u^\top b_n)

  (averaged over the batch's targets; :math:`b` are the behavior embeddings of eq 1).

The filter (and the self-attention that replaces it in "w/o DS") is not causal, so EBM trains
on sequences cut before the predicted event (``train_layout = 'all'``: every cut of every
training sequence once per epoch). With ``sequence_mixer='causal_filter'`` (not in the paper:
:class:`~mbgraph_seq.nn.filter.CausalFilterLayer`) it is causal and trains, as SASRec does, on
whole sequences with a next-item target at every position (``train_layout = None``).

For prompt tuning (:class:`~mbgraph_seq.models.dpcpl.DPCPL`), :meth:`EBM.encode` accepts
layer-wise prompts: ``C`` prompt slots are placed before the sequence and, at every layer
``l``, hold that layer's prompt tokens (DPCPL sec. 4.3.2).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import SequenceBatch, SequenceDataset
from ..nn.filter import CAUSAL_MIXERS, BehaviorMinerLayer, check_sequence_mixer
from ..nn.transformer import SequenceEmbedding
from .base import SequenceRecommender


class EBM(SequenceRecommender):
    r"""Efficient Behavior Miner; trains end to end with eq 4 and serves as DPCPL's backbone.

    Args:
        dataset: the :class:`~mbgraph_seq.data.SequenceDataset` (sizes, evaluation inputs).
        dim: embedding size ``d``.
        num_layers: EBM layers ``L``.
        num_blocks: chunks ``k`` of the filter (divides ``d``); with
            ``sequence_mixer='attention'`` the number of attention heads.
        dropout: dropout rate.
        behavior_weight: weight of eq 4's next-behavior term (1 = the paper).
        activation: the filter MLP's activation.
        prompt_slots: ``C`` leading slots reserved for DPCPL's prompt tokens. Without prompts
            they hold zeros at every layer, so a backbone pre-trained with them sees sequences
            of the same length ``C + M`` as during prompt tuning (the FFT grid depends on the
            length) and all-zero prompts reproduce it exactly. 0: no slots.
        sequence_mixer: what mixes the positions of each sequence view in every layer.
            ``'filter'`` (default): the Efficient Filter Layer, EBM's denoising block.
            ``'attention'``: DPCPL table 5's "w/o DS" -- "Instead of the EBM block, we
            exclusively employ the attention block in the pre-trained model" (sec. 5.4). In
            every layer the filter :math:`\mathcal F^{-1}(\mathrm{MLP}(\mathcal F(S)))` (eq
            2-3, FFT + chunked complex MLP) is replaced by multi-head self-attention
            (:class:`~mbgraph_seq.nn.filter.SelfAttentionLayer`, SASRec's
            :class:`~mbgraph_seq.nn.transformer.MultiHeadSelfAttention`, ``num_blocks``
            heads); what stays is everything else: the layer's residual + LayerNorm and FFN +
            LayerNorm, the overall and per-behavior sub-sequence views with one shared block,
            the behavior mixer, the eq-1 item/position/behavior embeddings, the read-out, the
            eq-4 loss and the prompt slots. The attention is bidirectional like the filter (it
            is read on sequences cut before the target, ``train_layout = 'all'``): a position
            attends to every real position of its view, the prompt slots included (they are
            in every view), never to padding. ``activation`` is then unused.
            ``'causal_filter'`` (not in the paper): every filter is replaced by
            :class:`~mbgraph_seq.nn.filter.CausalFilterLayer` (a causal convolution with a
            kernel generated from the lag, then eq 3's chunked MLP position by position;
            its docstring says what that changes); the layer's parameter count stays
            independent of the length. The model is then causal (:attr:`causal` True,
            :attr:`train_layout` None): one pass over a training sequence gives a target at
            every position (eq 4 averaged over all of them), against one target per cut for
            the paper's filter.
    """

    causal = False
    train_layout = 'all'

    def __init__(self, dataset: SequenceDataset, dim: int = 64, num_layers: int = 2,
                 num_blocks: int = 4, dropout: float = 0.1, behavior_weight: float = 1.0,
                 activation: str = 'relu', prompt_slots: int = 0,
                 sequence_mixer: str = 'filter'):
        super().__init__(dataset)
        check_sequence_mixer(sequence_mixer)
        if num_layers < 1:
            raise ValueError(f'num_layers must be >= 1, got {num_layers}')
        if prompt_slots < 0:
            raise ValueError(f'prompt_slots must be >= 0, got {prompt_slots}')
        self.dim, self.num_layers = int(dim), int(num_layers)
        self.prompt_slots = int(prompt_slots)
        self.sequence_mixer = sequence_mixer
        # the class attributes say the paper's filter; the causal stand-in trains on whole
        # sequences
        self.causal = sequence_mixer in CAUSAL_MIXERS
        self.train_layout = None if self.causal else 'all'
        self.behavior_weight = float(behavior_weight)
        self.embedding = SequenceEmbedding(dataset.num_items, dim, dataset.max_len,
                                           dataset.num_behaviors)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            BehaviorMinerLayer(dim, dataset.num_behaviors, num_blocks, dropout,
                               activation=activation, sequence_mixer=sequence_mixer)
            for _ in range(num_layers))
        nn.init.normal_(self.embedding.items.weight, std=0.02)
        nn.init.normal_(self.embedding.positions.weight, std=0.02)
        nn.init.normal_(self.embedding.behaviors.weight, std=0.02)
        with torch.no_grad():
            self.embedding.items.weight[0].zero_()
            self.embedding.behaviors.weight[0].zero_()

    def item_weight(self) -> Tensor:
        return self.embedding.items.weight

    def behavior_weight_table(self) -> Tensor:
        """``[K + 1, d]`` behavior embeddings (row 0 = padding)."""
        return self.embedding.behaviors.weight

    def encode(self, batch: SequenceBatch, prompts: Optional[Sequence[Tensor]] = None,
               all_positions: bool = False) -> Tensor:
        """``[B, d]`` user representation :math:`u` (after the last event), or with
        ``all_positions`` the ``[B, M, d]`` outputs of every position of the sequence (the
        prompt slots left out; only for a causal EBM, whose output at a position has read
        nothing after it).

        Args:
            batch: left-padded inputs.
            prompts: optional ``L`` tensors ``[B, C, d]``: the prompt tokens of every layer,
                placed in ``C`` slots before the sequence (they replace the slots' content at
                the input of each layer). With ``prompt_slots > 0`` they must have ``C =
                prompt_slots``, and None means all-zero prompts. An entry of None after
                the first keeps what the previous layer computed in the slots (prompts at
                the input only: DPCPL's "w/o PG" variant).
        """
        if all_positions and not self.causal:
            raise ValueError(f"all_positions needs a causal EBM (sequence_mixer="
                             f"'causal_filter'); with {self.sequence_mixer!r} every position "
                             'reads the later ones')
        x = self.dropout(self.event_embedding(batch))
        mask, behaviors = batch.mask, batch.behaviors
        keep = None
        if prompts is None and self.prompt_slots:
            zero = x.new_zeros(x.size(0), self.prompt_slots, self.dim)
            prompts = [zero] * self.num_layers
        if prompts is not None:
            if len(prompts) != self.num_layers:
                raise ValueError(f'expected {self.num_layers} layer prompts, got {len(prompts)}')
            if prompts[0] is None:
                raise ValueError('the first layer needs prompt tokens (None only after it)')
            B, C = x.size(0), prompts[0].size(1)
            if self.prompt_slots and C != self.prompt_slots:
                raise ValueError(f'this EBM reserves {self.prompt_slots} prompt slots, got '
                                 f'{C} prompt tokens per layer')
            mask = torch.cat([torch.ones(B, C, dtype=torch.bool, device=x.device), mask], 1)
            behaviors = torch.cat([behaviors.new_zeros(B, C), behaviors], 1)
            keep = torch.zeros_like(mask)
            keep[:, :C] = True
            x = torch.cat([prompts[0].new_zeros(B, C, self.dim), x], 1)
        for layer_index, layer in enumerate(self.layers):
            if prompts is not None and prompts[layer_index] is not None:
                x = torch.cat([prompts[layer_index], x[:, prompts[layer_index].size(1):]], 1)
            # the last layer only computes the position that is read out
            last = layer_index == self.num_layers - 1 and not all_positions
            x = layer(x, behaviors, mask, keep, last_only=last)
        if all_positions and prompts is not None:
            x = x[:, prompts[0].size(1):]
        return x

    def event_embedding(self, batch: SequenceBatch) -> Tensor:
        r"""``[B, M, d]`` normalised eq-1 embeddings :math:`\mathrm{LN}(e_v + e_p + e_b)` of
        the events (before dropout)."""
        return self.norm(self.embedding(batch.items, batch.behaviors))

    def user_representation(self, batch: SequenceBatch) -> Tensor:
        return self.encode(batch)

    @staticmethod
    def last_targets(batch: SequenceBatch) -> Tuple[Tensor, Tensor, Tensor]:
        """:meth:`SequenceBatch.last_targets`: EBM's FFT filter (or bidirectional attention)
        reads later positions."""
        return batch.last_targets("EBM's FFT filter (or bidirectional attention)")

    def pretrain_loss(self, u: Tensor, pos: Tensor, pos_behaviors: Tensor, neg: Tensor
                      ) -> Tuple[Tensor, Tensor]:
        r"""Eq 4's two terms, each averaged: next item
        :math:`-\log\sigma(u^\top e_p - u^\top e_n)` (over the ``n`` negatives) and next
        behavior :math:`-\log\sigma(u^\top b_p - u^\top b_n)` (over the ``K - 1`` other
        behaviors; zero when ``K = 1``)."""
        items = self.item_weight()
        rp = (u * items[pos]).sum(-1)
        rn = torch.einsum('bd,bnd->bn', u, items[neg])
        item_term = F.softplus(rn - rp.unsqueeze(-1)).mean()
        K = self.num_behaviors
        if K < 2:
            return item_term, item_term.new_zeros(())
        # reading taken: S^- for the behavior term = every other behavior (no sampling)
        beh = self.behavior_weight_table()[1:]                        # [K, d]
        rb = u @ beh.t()                                               # [B, K]
        bp = rb.gather(1, (pos_behaviors - 1).unsqueeze(1))           # [B, 1]
        other = torch.ones_like(rb, dtype=torch.bool)
        other.scatter_(1, (pos_behaviors - 1).unsqueeze(1), False)
        beh_term = F.softplus(rb - bp)[other].mean()
        return item_term, beh_term

    def loss(self, batch: SequenceBatch) -> Tuple[Tensor, Dict[str, float]]:
        if self.causal:
            # every position with a next event is a target (a prefix batch has only the last)
            target = batch.pos > 0
            if not bool(target.any()):
                raise ValueError('the batch has no next-item targets (every pos is 0)')
            if batch.neg.size(-1) == 0:
                raise ValueError('the batch has no negative items (neg has width 0)')
            h = self.encode(batch, all_positions=True)
            u, pos, pos_b, neg = (h[target], batch.pos[target], batch.pos_behaviors[target],
                                  batch.neg[target])
        else:
            pos, pos_b, neg = self.last_targets(batch)
            u = self.encode(batch)
        item_term, beh_term = self.pretrain_loss(u, pos, pos_b, neg)
        loss = item_term + self.behavior_weight * beh_term
        return loss, {'item': float(item_term.detach()), 'behavior': float(beh_term.detach())}


__all__ = ['EBM']
