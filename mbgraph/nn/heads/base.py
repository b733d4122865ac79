r"""What a head does: per-behavior embeddings -> per-behavior scores for (user, item) pairs.

A head receives the :class:`~mbgraph.nn.encoders.base.BehaviorEmbeddings` of an encoder and

* :meth:`MultiTaskHead.precompute` -- optional whole-graph work done once per forward pass
  (e.g. DFME's behavior-fitting convolutions); returns the embeddings, possibly with extras;
* :meth:`MultiTaskHead.forward` -- scores :math:`\hat y^k_{uv}` of behavior ``k`` for users
  ``[B]`` and items ``[B]`` (one item per user) or ``[B, C]`` (candidates per user);
* :meth:`MultiTaskHead.score_all` -- ``[B, I]`` scores of every item (full ranking), chunked
  over items so per-pair heads stay within memory;
* :meth:`MultiTaskHead.loss_terms` -- head-specific losses (contrastive, unique, ...), already
  weighted, as ``{name: scalar}``;
* :meth:`MultiTaskHead.batch_needs` -- the batch keys beyond the BPR triples that those losses
  read, so that the model holding the head trains on a batch source that feeds them (PME's
  ``'unique'`` pairs); a head asked for a loss term that its batch cannot feed raises instead
  of returning a zero.
"""
from __future__ import annotations

from typing import Any, Dict, FrozenSet, List

import torch
from torch import Tensor, nn

from ..encoders.base import BehaviorEmbeddings, reset_children


class MultiTaskHead(nn.Module):
    #: items scored at once per user in :meth:`score_all`
    chunk_size: int = 4096

    @property
    def fresh_scores(self) -> bool:
        """:meth:`score_all` returns a new tensor every call (a product or a
        concatenation), so the evaluator may mask it in place. True for mbgraph's own heads;
        a head defined elsewhere is not assumed fresh (it may return a cached tensor)."""
        return type(self).score_all.__module__.startswith('mbgraph.')

    def precompute(self, emb: BehaviorEmbeddings, adjacency) -> BehaviorEmbeddings:
        return emb

    def forward(self, emb: BehaviorEmbeddings, users: Tensor, items: Tensor,
                behavior: str) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def score_all(self, emb: BehaviorEmbeddings, users: Tensor, behavior: str) -> Tensor:
        num_items = emb.items.size(1)
        out = []
        for start in range(0, num_items, self.chunk_size):
            cand = torch.arange(start, min(start + self.chunk_size, num_items),
                                device=users.device)
            out.append(self(emb, users, cand.expand(users.numel(), -1), behavior))
        return torch.cat(out, dim=1)

    def loss_terms(self, emb: BehaviorEmbeddings, batch: Dict[str, Any]) -> Dict[str, Tensor]:
        return {}

    def batch_needs(self) -> FrozenSet[str]:
        """The batch keys besides the behaviors' BPR triples that :meth:`loss_terms` reads
        (e.g. ``'unique'``, the "k' without k" pairs of
        :class:`~mbgraph.data.sampling.UniquePairSampler`); none by default."""
        return frozenset()

    def regularized_parameters(self) -> List[Tensor]:
        """The head's parameters that an L2 term over whole tables covers
        (``reg_scope='tables'`` of :class:`~mbgraph.models.composed.MultiBehaviorModel`, the
        authors' code); none by default."""
        return []

    def reset_parameters(self) -> None:
        reset_children(self)


def gather_pairs(emb: BehaviorEmbeddings, k: int, users: Tensor, items: Tensor):
    """User and item embeddings of behavior index ``k`` for pairs: ``items`` ``[B]`` gives
    ``([B, d], [B, d])``, ``[B, C]`` gives ``([B, 1, d], [B, C, d])`` (broadcastable)."""
    if emb.nodes is not None:   # one gather from the node table: one zero-filled gradient
        nodes = emb.nodes
        rows = torch.cat([users, items.reshape(-1) + emb.users.size(1)]) + k * nodes.size(1)
        g = nodes.reshape(-1, nodes.size(2))[rows]
        u, v = g[:users.numel()], g[users.numel():].view(*items.shape, nodes.size(2))
    else:
        u = emb.users[k][users]
        v = emb.items[k][items]
    if items.dim() == 2:
        u = u.unsqueeze(1)
    return u, v


def gate_output_order(expert_order: str, k: int, num_behaviors: int) -> List[int]:
    r"""For each behavior :math:`j`, the gate output of task ``k`` that weighs its expert:
    ``'behavior'``, output :math:`j` (the papers' indices); ``'own_first'``, output 0 the
    task's own expert and the other behaviors after it in order (the PKEF / COPF code)."""
    if expert_order == 'behavior':
        return list(range(num_behaviors))
    return [0 if j == k else (j + 1 if j < k else j) for j in range(num_behaviors)]
