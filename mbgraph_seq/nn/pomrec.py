r"""Building blocks of PoMRec (Dong, Song, Liu & Guan, "Prompt-based Multi-interest Learning
Method for Sequential Recommendation", sec. 3.2).

Shapes: ``B`` sequences, ``L = N_p + M`` prompt-augmented positions, ``d`` embedding size,
``K`` interests, ``d'`` attention size. The paper writes embeddings as columns
(:math:`H \in \mathbb{R}^{d \times L}`); here they are rows (``[B, L, d]``), so
:math:`M_{u,t} = H^\top A` becomes ``A^T H`` per sequence (``[B, K, d]``).

* :func:`prompt_augment`: :math:`H^{\mathcal F} = [P_{\mathcal F}, H]`,
  :math:`H^{\mathcal G} = [P_{\mathcal G}, H]` (eq 1);
* :func:`masked_softmax`: the column-wise softmax of eq 5 / eq 7 over the real positions
  (padding gets weight 0; the paper pads with zero embeddings, which would otherwise take
  part in the softmax);
* :func:`centrality_dispersion`: the attention-weighted mean :math:`M` (eq 5) and standard
  deviation :math:`\Sigma` (eq 6);
* :class:`CentralityDispersionExtractor`: :math:`V = M + \lambda \Sigma` (eq 5-6);
* :class:`InterestAggregator`: attention pooling, MLP weights and
  :math:`e_{u,t} = V z` (eq 7-9).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn


def prompt_augment(prompts: Tensor, h: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """Eq 1: the prompts placed before the interaction embeddings.

    Args:
        prompts: ``[B, N_p, d]`` (or ``[N_p, d]``, shared by every sequence).
        h: ``[B, M, d]`` interaction embeddings :math:`H_{u,t}`.
        mask: ``[B, M]`` bool, True at real interactions.

    Returns:
        ``([B, N_p + M, d], [B, N_p + M])``: the augmented embeddings and their mask (prompts
        are always real).
    """
    B = h.size(0)
    if prompts.dim() == 2:
        prompts = prompts.unsqueeze(0).expand(B, -1, -1)
    if prompts.dim() != 3 or prompts.size(0) != B or prompts.size(2) != h.size(2):
        raise ValueError(f'prompts must be [B={B}, N_p, d={h.size(2)}] or [N_p, d], got '
                         f'{tuple(prompts.shape)}')
    ones = torch.ones(B, prompts.size(1), dtype=torch.bool, device=mask.device)
    return torch.cat([prompts, h], dim=1), torch.cat([ones, mask], dim=1)


def masked_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """Softmax over positions (dim 1) of ``logits`` ``[B, L, K]``, positions where ``mask``
    ``[B, L]`` is False getting weight exactly 0. Every row needs a real position."""
    if not bool(mask.any(dim=1).all()):
        raise ValueError('every sequence needs at least one real position (a prompt or an '
                         'interaction) to attend to')
    logits = logits.masked_fill(~mask.unsqueeze(-1), float('-inf'))
    return torch.softmax(logits, dim=1)


def centrality_dispersion(h: Tensor, attn: Tensor, eps: float = 1e-6) -> Tuple[Tensor, Tensor]:
    r"""Centrality and dispersion of each interest (eq 5-6), for one soft grouping ``attn``.

    .. math::
        M^{(k)} = \sum_l A_{l,k}\, h_l \quad (5) \qquad
        \Sigma^{(k)} = \sqrt{\textstyle\sum_l A_{l,k}\, h_l^{2} - \big(M^{(k)}\big)^{2}}
        \quad (6)

    (squares element-wise): the attention-weighted mean and standard deviation of the
    embeddings, per dimension. The variance is clamped at ``eps`` before the square root
    (rounding can make it slightly negative, and :math:`\sqrt{\cdot}` has an infinite slope
    at 0).

    Args:
        h: ``[B, L, d]`` embeddings.
        attn: ``[B, L, K]`` weights, each column summing to 1 over ``L``.
        eps: variance floor.

    Returns:
        ``(M, Sigma)``, both ``[B, K, d]``.
    """
    mean = torch.einsum('blk,bld->bkd', attn, h)
    second = torch.einsum('blk,bld->bkd', attn, h * h)
    var = (second - mean * mean).clamp_min(eps)
    return mean, var.sqrt()


class CentralityDispersionExtractor(nn.Module):
    r"""Centrality-dispersion multi-interest extractor :math:`\mathcal F` (eq 5-6):

    .. math::
        A^{\mathcal F} = \mathrm{softmax}\big(W^2_{\mathcal F}\tanh(W^1_{\mathcal F}
        H^{\mathcal F})\big)^\top, \quad M = (H^{\mathcal F})^\top A^{\mathcal F}, \quad
        V = M + \lambda\,\Sigma

    with :math:`W^1_{\mathcal F} \in \mathbb{R}^{d' \times d}`,
    :math:`W^2_{\mathcal F} \in \mathbb{R}^{K \times d'}` (no biases, as written) and the softmax
    over the real positions.

    Args:
        dim: ``d``.
        num_interests: ``K``.
        attention_dim: ``d'``.
        dispersion_weight: :math:`\lambda`.
        eps: variance floor of :func:`centrality_dispersion`.
    """

    def __init__(self, dim: int, num_interests: int, attention_dim: int,
                 dispersion_weight: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.w1 = nn.Linear(dim, attention_dim, bias=False)
        self.w2 = nn.Linear(attention_dim, num_interests, bias=False)
        self.dispersion_weight, self.eps = float(dispersion_weight), float(eps)

    def attention(self, h: Tensor, mask: Tensor) -> Tensor:
        """:math:`A^{\\mathcal F}` ``[B, L, K]`` (eq 5)."""
        return masked_softmax(self.w2(torch.tanh(self.w1(h))), mask)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        """``h`` ``[B, L, d]`` (:math:`H^{\\mathcal F}`), ``mask`` ``[B, L]`` -> :math:`V`
        ``[B, K, d]``."""
        mean, std = centrality_dispersion(h, self.attention(h, mask), self.eps)
        return mean + self.dispersion_weight * std


AGGREGATOR_WEIGHTS = ('mlp', 'linear')


class InterestAggregator(nn.Module):
    r"""Attention-based multi-interest aggregator :math:`\mathcal G` (eq 7-9):

    .. math::
        a^{\mathcal G} = \mathrm{softmax}\big(W^2_{\mathcal G}\tanh(W^1_{\mathcal G}
        H^{\mathcal G})\big)^\top, \quad v = H^{\mathcal G} a^{\mathcal G} \quad (7)

    .. math::
        z = W^2_M \tanh(W^1_M v + b^1_M) + b^2_M \quad (8) \qquad e_{u,t} = V z \quad (9)

    with :math:`W^1_{\mathcal G}, W^1_M \in \mathbb{R}^{d' \times d}`,
    :math:`W^2_{\mathcal G} \in \mathbb{R}^{1 \times d'}`, :math:`W^2_M \in \mathbb{R}^{K
    \times d'}` (the paper's ``L = 2`` MLP layers).

    Args:
        dim: ``d``.
        num_interests: ``K``.
        attention_dim: ``d'``.
        weight_softmax: apply a softmax to :math:`z` before eq 9 (the authors' code); the paper
            uses :math:`z` as is.
        weights: how :math:`z` is computed from :math:`v`. ``'mlp'`` (default): eq 8's two
            layers. ``'linear'``: the authors' code, one linear layer and a softmax,
            :math:`z = \mathrm{softmax}(W_M v + b_M)` with :math:`W_M \in \mathbb{R}^{K
            \times d}` (``weight_softmax`` is then implied).
    """

    def __init__(self, dim: int, num_interests: int, attention_dim: int,
                 weight_softmax: bool = False, weights: str = 'mlp'):
        super().__init__()
        if weights not in AGGREGATOR_WEIGHTS:
            raise ValueError(f'weights must be one of {AGGREGATOR_WEIGHTS}, got {weights!r}')
        self.w1 = nn.Linear(dim, attention_dim, bias=False)
        self.w2 = nn.Linear(attention_dim, 1, bias=False)
        self.kind = weights
        if weights == 'mlp':
            self.mlp1 = nn.Linear(dim, attention_dim)
            self.mlp2 = nn.Linear(attention_dim, num_interests)
        else:
            self.linear = nn.Linear(dim, num_interests)
        self.weight_softmax = bool(weight_softmax) or weights == 'linear'

    def weights(self, h: Tensor, mask: Tensor) -> Tensor:
        """Interest weights :math:`z` ``[B, K]`` (eq 7-8)."""
        a = masked_softmax(self.w2(torch.tanh(self.w1(h))), mask)            # [B, L, 1]
        v = torch.einsum('bl,bld->bd', a.squeeze(-1), h)                      # eq 7
        z = (self.mlp2(torch.tanh(self.mlp1(v))) if self.kind == 'mlp'       # eq 8
             else self.linear(v))
        return torch.softmax(z, dim=-1) if self.weight_softmax else z

    def forward(self, h: Tensor, mask: Tensor, interests: Tensor) -> Tensor:
        """``h`` ``[B, L, d]`` (:math:`H^{\\mathcal G}`), ``mask`` ``[B, L]``, ``interests``
        ``[B, K, d]`` (:math:`V`) -> :math:`e_{u,t}` ``[B, d]`` (eq 9)."""
        return torch.einsum('bk,bkd->bd', self.weights(h, mask), interests)


__all__ = ['AGGREGATOR_WEIGHTS', 'prompt_augment', 'masked_softmax', 'centrality_dispersion',
           'CentralityDispersionExtractor', 'InterestAggregator']
