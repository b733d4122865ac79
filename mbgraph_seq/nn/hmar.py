r"""Building blocks of HMAR (Elsayed, Rashed & Schmidt-Thieme, "HMAR: Hierarchical Masked
Attention for Multi-Behaviour Recommendation", sec. 2.2-2.3).

Shapes: ``B`` sequences of ``M`` left-padded positions (most recent event last), ``K``
behaviors, ``d`` hidden size. Item ids are shifted by one (``0`` = padding) and behavior ids
too (``1..K``, ``0`` = padding), as in :class:`mbgraph_seq.data.SequenceBatch`.

* :func:`prefix_behavior_counts`, :func:`history_behavior_counts`: the historical behavior
  indicators :math:`c_j` of eq 2, computed **causally**: the indicator of position ``t`` counts,
  per behavior, the events on the same item at positions ``s <= t`` only (the authors' code
  fills every position with the counts of the whole history, the held-out interaction
  included, which leaks the future);
* :class:`HMAREmbedding`: item and indicator encodings, eq 1-4;
* :class:`MaskedSelfAttention`, :class:`PointwiseFeedForward`: eq 6/11 and eq 7/13;
* :class:`BehaviorEncoder`: one behavior's masked encoder with the ReZero residual, eq 5-9;
* :class:`SequenceEncoder`: attention across all behaviors, eq 11-13;
* :class:`HierarchicalMaskedAttention`: the ``K`` behavior encoders, their sum (eq 10) and the
  sequence encoder;
* :class:`BehaviorClassifier`: the behavior-type head, eq 16;
* :func:`hmar_loss`: the weighted BCE ranking loss (eq 15), the classification loss (eq 17)
  and their sum (eq 18).

Every attention is causal (SASRec's autoregressive training, sec. 2.3): the output at position
``t`` depends on positions ``<= t`` only, so every position of a training sequence can be a
next-item target.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --------------------------------------------------------------------------------------------
# historical behavior indicators (eq 2)
# --------------------------------------------------------------------------------------------

def _behavior_one_hot(behaviors: Tensor, mask: Tensor, num_behaviors: int) -> Tensor:
    """``[B, M, K]`` float one-hot of the behavior ids ``1..K`` (zero rows at padding)."""
    if behaviors.numel() and (int(behaviors.max()) > num_behaviors or int(behaviors.min()) < 0):
        raise ValueError(f'behavior ids must lie in 0..{num_behaviors} (id + 1, 0 = padding), '
                         f'got {int(behaviors.min())}..{int(behaviors.max())}')
    one_hot = F.one_hot(behaviors.long(), num_behaviors + 1)[..., 1:]
    return (one_hot * mask.unsqueeze(-1)).to(torch.float32)


def prefix_behavior_counts(items: Tensor, behaviors: Tensor, mask: Tensor, query: Tensor,
                           num_behaviors: int) -> Tensor:
    r"""Causal per-behavior counts of query items in the prefix of every position.

    .. math::
        c_{b,t,c,k} = \#\{s \le t : \text{mask}_{b,s},\ \text{items}_{b,s} = \text{query}_{b,t,c},
        \ \text{behaviors}_{b,s} = k\}

    With ``query = items.unsqueeze(-1)`` this is the historical behavior indicator
    :math:`c_t` of eq 2 for the input at position ``t`` (its own event included); with the
    next-item targets and negatives of position ``t`` it is the indicator of a candidate given
    the history up to ``t``.

    Args:
        items: ``[B, M]`` item ids + 1 (0 = padding).
        behaviors: ``[B, M]`` behavior ids + 1 (0 = padding).
        mask: ``[B, M]`` bool, True at real events.
        query: ``[B, M, C]`` item ids + 1 queried at each position.
        num_behaviors: ``K``.

    Returns:
        ``[B, M, C, K]`` float counts.
    """
    if query.dim() != 3 or query.shape[:2] != items.shape:
        raise ValueError(f'query must be [B, M, C] with [B, M] = {tuple(items.shape)}, got '
                         f'{tuple(query.shape)}')
    one_hot = _behavior_one_hot(behaviors, mask, num_behaviors)              # [B, M, K]
    M = items.size(1)
    causal = torch.ones(M, M, dtype=torch.bool, device=items.device).tril_()  # [t, s]: s <= t
    same = query.unsqueeze(-1) == items[:, None, None, :]                   # [B, t, C, s]
    same = same & causal[None, :, None, :]
    return torch.einsum('btcs,bsk->btck', same.to(one_hot.dtype), one_hot)


def history_behavior_counts(items: Tensor, behaviors: Tensor, mask: Tensor, query: Tensor,
                            num_behaviors: int) -> Tensor:
    r"""Per-behavior counts of query items over the whole input sequence (the indicator of a
    candidate item after the most recent event, as used for scoring):

    .. math:: c_{b,c,k} = \#\{s : \text{mask}_{b,s},\ \text{items}_{b,s} = \text{query}_{b,c},
              \ \text{behaviors}_{b,s} = k\}

    Args:
        items, behaviors, mask: ``[B, M]`` as in :func:`prefix_behavior_counts`.
        query: ``[B, C]`` item ids + 1.

    Returns:
        ``[B, C, K]`` float counts.
    """
    if query.dim() != 2 or query.size(0) != items.size(0):
        raise ValueError(f'query must be [B, C] with B = {items.size(0)}, got '
                         f'{tuple(query.shape)}')
    one_hot = _behavior_one_hot(behaviors, mask, num_behaviors)
    same = query.unsqueeze(-1) == items.unsqueeze(1)                        # [B, C, M]
    return torch.einsum('bcs,bsk->bck', same.to(one_hot.dtype), one_hot)


# --------------------------------------------------------------------------------------------
# encodings (eq 1-4)
# --------------------------------------------------------------------------------------------

class HMAREmbedding(nn.Module):
    r"""Item and historical-behavior-indicator encoding (eq 1-4).

    .. math::
        v'_j = v_j W_v + B_v \quad (1) \qquad
        c'_j = c_j W_c + B_c \quad (2) \qquad
        q_j = \mathrm{concat}(v'_j, c'_j) W_r + B_r \quad (3) \qquad
        g_j = q_j + P_j \quad (4)

    :math:`v_j` is the one-hot item vector, so :math:`v_j W_v` is a row of the item table
    (row 0 = padding, kept at zero); :math:`c_j \in \mathbb{R}^K` holds the per-behavior counts
    (:func:`prefix_behavior_counts`). Position ``p`` of a ``[B, M]`` input uses positional
    embedding ``max_len - M + p``, so the most recent event always gets the last one.

    :math:`q` is affine in :math:`c`: :math:`q(v, c) = q(v, 0) + c\,W_c W_r^{(c)}` with
    :math:`W_r^{(c)}` the rows of :math:`W_r` that multiply :math:`c'`
    (:meth:`indicator_shift`); :class:`~mbgraph_seq.models.hmar.HMAR` uses this to score all
    items at once.

    Args:
        num_items: real items.
        num_behaviors: ``K`` (the indicator width).
        dim: ``d``.
        max_len: positions.
        log_counts: feed :math:`\log(1 + c)` instead of the raw counts (an option; the paper
            and the authors' code use raw counts).
    """

    def __init__(self, num_items: int, num_behaviors: int, dim: int, max_len: int,
                 log_counts: bool = False):
        super().__init__()
        if num_items <= 0 or num_behaviors <= 0 or dim <= 0 or max_len <= 0:
            raise ValueError('num_items, num_behaviors, dim and max_len must be positive, got '
                             f'{num_items}, {num_behaviors}, {dim}, {max_len}')
        self.num_items, self.num_behaviors = int(num_items), int(num_behaviors)
        self.dim, self.max_len, self.log_counts = int(dim), int(max_len), bool(log_counts)
        self.items = nn.Embedding(num_items + 1, dim, padding_idx=0)        # W_v
        self.item_bias = nn.Parameter(torch.zeros(dim))                      # B_v
        self.indicator = nn.Linear(num_behaviors, dim)                       # W_c, B_c
        self.combine = nn.Linear(2 * dim, dim)                               # W_r, B_r
        self.positions = nn.Embedding(max_len, dim)                          # P

    def _transform(self, counts: Tensor) -> Tensor:
        return torch.log1p(counts) if self.log_counts else counts

    def item_encoding(self, items: Tensor, counts: Tensor) -> Tensor:
        """:math:`q` of eq 1-3 for item ids + 1 ``[...]`` and counts ``[..., K]``: ``[..., d]``."""
        if counts.shape != (*items.shape, self.num_behaviors):
            raise ValueError(f'counts must have shape {(*items.shape, self.num_behaviors)}, got '
                             f'{tuple(counts.shape)}')
        v = self.items(items) + self.item_bias                               # eq 1
        c = self.indicator(self._transform(counts))                          # eq 2
        return self.combine(torch.cat([v, c], dim=-1))                       # eq 3

    def indicator_shift(self, counts: Tensor) -> Tensor:
        r""":math:`c\,W_c W_r^{(c)}`: how the indicator ``counts`` ``[..., K]`` moves :math:`q`
        away from :math:`q(v, 0)`."""
        w_rc = self.combine.weight[:, self.dim:]                             # [d, d]
        return F.linear(F.linear(self._transform(counts), self.indicator.weight), w_rc)

    def forward(self, items: Tensor, behaviors: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """``(g, c)``: ``g`` ``[B, M, d]`` of eq 4 (zero at padding) and the causal indicators
        ``c`` ``[B, M, K]``."""
        B, M = items.shape
        if M > self.max_len:
            raise ValueError(f'sequences of {M} positions exceed max_len={self.max_len}')
        counts = prefix_behavior_counts(items, behaviors, mask, items.unsqueeze(-1),
                                        self.num_behaviors).squeeze(2)
        q = self.item_encoding(items, counts)
        pos = torch.arange(self.max_len - M, self.max_len, device=items.device)
        g = q + self.positions(pos).unsqueeze(0)                              # eq 4
        return g * mask.unsqueeze(-1).to(g.dtype), counts


# --------------------------------------------------------------------------------------------
# attention blocks (eq 6-7, 11, 13)
# --------------------------------------------------------------------------------------------

def causal_key_mask(keys: Tensor) -> Tensor:
    """``[B, 1, M, M]`` bool (True = may attend) for queries ``t`` and keys ``s``: ``s <= t``
    and ``keys[b, s]``; every position may attend to itself so that no row is empty (rows of
    positions outside ``keys`` are masked out by the callers)."""
    M = keys.size(1)
    eye = torch.eye(M, dtype=torch.bool, device=keys.device)
    causal = torch.ones(M, M, dtype=torch.bool, device=keys.device).tril_()
    return ((causal.unsqueeze(0) & keys.unsqueeze(1)) | eye).unsqueeze(1)


class MaskedSelfAttention(nn.Module):
    r"""Multi-head self-attention of eq 6 / eq 11:

    .. math::
        \mathrm{SA}(E) = \mathrm{concat}_{col}\big(\mathrm{Att}(E W_h^Q, E W_h^K, E W_h^V)
        \big)_{h=1:H}, \quad \mathrm{Att}(Q, K, V) = \mathrm{softmax}\Big(
        \frac{Q K^\top}{\sqrt{d / H}} + \text{mask}\Big) V

    with :math:`W_h^Q, W_h^K, W_h^V \in \mathbb{R}^{d \times d/H}` (no biases and no output
    projection, as written). Dropout (``dropout``) acts on the attention weights in training.
    """

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'dim={dim} must be divisible by num_heads={num_heads}')
        self.num_heads, self.head_dim = int(num_heads), dim // num_heads
        self.query = nn.Linear(dim, dim, bias=False)   # [W_1^Q .. W_H^Q]
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.dropout = float(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """``x`` ``[B, M, d]``, ``attn_mask`` ``[B, 1, M, M]`` bool (True = may attend)."""
        B, M, d = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(B, M, self.num_heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(B, M, d)


class PointwiseFeedForward(nn.Module):
    r"""Point-wise feed-forward layers of eq 7 / eq 13:
    :math:`\mathrm{FFN}(x) = \mathrm{ReLU}(x W^{(1)} + B^{(1)}) W^{(2)} + B^{(2)}`,
    :math:`W^{(1)}, W^{(2)} \in \mathbb{R}^{d \times d}` (dropout after the ReLU in training)."""

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class BehaviorEncoder(nn.Module):
    r"""The masked encoder of one behavior ``b`` (eq 5-9):

    .. math::
        e_j^b &= (g_j\, m_j^b) W_e + B_e  && (5) \\
        X_b &= \mathrm{SA}(E_b) \text{ over the positions of behavior } b  && (6) \\
        F_b &= \mathrm{FFN}(X_b)  && (7) \\
        L_b &= F_b + \gamma\,(G * M_b)  && (8) \\
        O_b &= L_b * M_b  && (9)

    :math:`\gamma` is the ReZero weight, initialised at 0. The attention of a position of
    behavior ``b`` sees only earlier-or-equal positions of behavior ``b``: the encoder never
    attends across behaviors (masking the input of eq 5 alone would still let the other
    positions contribute the bias :math:`B_e`).
    """

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        self.input = nn.Linear(dim, dim)                                     # W_e, B_e
        self.attention = MaskedSelfAttention(dim, num_heads, dropout)
        self.ffn = PointwiseFeedForward(dim, dropout)
        self.gamma = nn.Parameter(torch.zeros(()))                           # ReZero

    def forward(self, g: Tensor, behavior_mask: Tensor) -> Tensor:
        """``g`` ``[B, M, d]`` (eq 4), ``behavior_mask`` ``[B, M]`` bool :math:`M_b` ->
        :math:`O_b` ``[B, M, d]`` (zero outside behavior ``b``)."""
        m = behavior_mask.unsqueeze(-1).to(g.dtype)
        gm = g * m
        e = self.input(gm)                                                   # eq 5
        x = self.attention(e, causal_key_mask(behavior_mask))               # eq 6
        f = self.ffn(x)                                                      # eq 7
        return (f + self.gamma * gm) * m                                     # eq 8-9


class SequenceEncoder(nn.Module):
    r"""Attention across all behaviors (eq 11-13):

    .. math::
        A = \mathrm{SA}(\mathcal{O}) \ (11) \qquad A' = A + R \ (12) \qquad
        Z = \mathrm{FFN}(A') \ (13)

    with :math:`R = G` (the residual of eq 12) and causal attention over the real positions.
    Outputs at padding positions are zero.
    """

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        self.attention = MaskedSelfAttention(dim, num_heads, dropout)
        self.ffn = PointwiseFeedForward(dim, dropout)

    def forward(self, o: Tensor, residual: Tensor, mask: Tensor) -> Tensor:
        a = self.attention(o, causal_key_mask(mask))                         # eq 11
        z = self.ffn(a + residual)                                           # eq 12-13
        return z * mask.unsqueeze(-1).to(z.dtype)


class HierarchicalMaskedAttention(nn.Module):
    r"""``K`` behavior encoders, their element-wise sum :math:`\mathcal{O} = \sum_b O_b`
    (eq 10) and the sequence encoder (eq 11-13).

    With ``num_blocks > 1`` the whole hierarchy is stacked: block ``l`` reads the output of
    block ``l - 1`` in place of :math:`G` (the paper uses one block).

    Args:
        dim: ``d``.
        num_behaviors: ``K``.
        num_blocks: stacked hierarchies.
        num_heads: ``H``.
        dropout: dropout on attention weights and in the FFNs.
    """

    def __init__(self, dim: int, num_behaviors: int, num_blocks: int = 1, num_heads: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f'num_blocks must be >= 1, got {num_blocks}')
        self.num_behaviors = int(num_behaviors)
        self.behavior_encoders = nn.ModuleList(
            nn.ModuleList(BehaviorEncoder(dim, num_heads, dropout)
                          for _ in range(num_behaviors)) for _ in range(num_blocks))
        self.sequence_encoders = nn.ModuleList(SequenceEncoder(dim, num_heads, dropout)
                                               for _ in range(num_blocks))

    def behavior_outputs(self, g: Tensor, behaviors: Tensor, block: int = 0) -> Tensor:
        """``[K, B, M, d]``: :math:`O_b` of every behavior (eq 5-9) of block ``block``."""
        return torch.stack([enc(g, behaviors == k + 1)
                            for k, enc in enumerate(self.behavior_encoders[block])])

    def forward(self, g: Tensor, behaviors: Tensor, mask: Tensor) -> Tensor:
        """``g`` ``[B, M, d]``, ``behaviors`` ``[B, M]`` ids + 1, ``mask`` ``[B, M]`` ->
        :math:`Z` ``[B, M, d]``."""
        x = g
        for block, seq_enc in enumerate(self.sequence_encoders):
            o = self.behavior_outputs(x, behaviors, block).sum(0)           # eq 10
            x = seq_enc(o, x, mask)
        return x


class BehaviorClassifier(nn.Module):
    r"""Behavior-type head (eq 16): logits
    :math:`(\mathrm{concat}(z_t, q^o_{t+1}) W^{(1)} + B^{(1)}) W^{(2)} + B^{(2)}` over the ``K``
    behaviors (the softmax is in :func:`hmar_loss`). As written in eq 16 (and in the authors'
    code) there is no activation between the two layers; :math:`W^{(2)}` maps ``d -> K``."""

    def __init__(self, dim: int, num_behaviors: int):
        super().__init__()
        self.linear1 = nn.Linear(2 * dim, dim)
        self.linear2 = nn.Linear(dim, num_behaviors)

    def forward(self, z: Tensor, q_target: Tensor) -> Tensor:
        return self.linear2(self.linear1(torch.cat([z, q_target], dim=-1)))


# --------------------------------------------------------------------------------------------
# losses (eq 14-18)
# --------------------------------------------------------------------------------------------

def hmar_loss(pos_logits: Tensor, neg_logits: Tensor, class_logits: Tensor,
              target_behaviors: Tensor, alpha: Tensor, beta: float = 1.0,
              theta: float = 0.1) -> Tuple[Tensor, Dict[str, Tensor]]:
    r"""HMAR's multi-task loss over ``T`` next-item targets.

    Ranking (eq 14-15), with :math:`\hat Y = \sigma(z \cdot q^o)`:

    .. math::
        \mathcal{L}_{rank} = \frac{1}{T}\sum_{t} -\Big[\alpha_{b_t} \log \sigma(r^+_t)
        + \beta\,\frac{1}{n}\sum_{j=1}^{n} \log\big(1 - \sigma(r^-_{t,j})\big)\Big]

    Classification (eq 17) and total (eq 18):

    .. math::
        \mathcal{L}_{class} = \frac{1}{T}\sum_t -\log \mathrm{softmax}(\ell_t)_{b_t}, \qquad
        \mathcal{L} = \mathcal{L}_{rank} + \theta\,\mathcal{L}_{class}

    The paper sums over sequences and positions; this averages over the targets (as the
    authors' code does) and over the ``n`` negatives of a target (``n = 1`` in the paper), so
    the scale does not depend on the batch size.

    Args:
        pos_logits: ``[T]`` :math:`z_t \cdot q^o_{t+1}` of the observed next items.
        neg_logits: ``[T, n]`` the same for sampled negatives.
        class_logits: ``[T, K]`` behavior-type logits (eq 16).
        target_behaviors: ``[T]`` behavior index (0-based) of each next interaction.
        alpha: ``[K]`` per-behavior weights :math:`\alpha_b`.
        beta: negative-sample weight :math:`\beta`.
        theta: weight :math:`\theta` of the classification loss.

    Returns:
        ``(loss, {'rank': ..., 'class': ...})``.
    """
    if pos_logits.numel() == 0:
        raise ValueError('no next-item targets in the batch')
    if neg_logits.dim() != 2 or neg_logits.size(0) != pos_logits.size(0) or neg_logits.size(1) == 0:
        raise ValueError(f'neg_logits must be [T={pos_logits.size(0)}, n >= 1], got '
                         f'{tuple(neg_logits.shape)}')
    # -log sigma(x) = softplus(-x); -log(1 - sigma(x)) = softplus(x)
    a = alpha.to(pos_logits.dtype)[target_behaviors]
    rank = (a * F.softplus(-pos_logits) + beta * F.softplus(neg_logits).mean(-1)).mean()
    cls = F.cross_entropy(class_logits, target_behaviors)
    return rank + theta * cls, {'rank': rank, 'class': cls}


def default_alpha(num_behaviors: int, target_weight: float = 0.7,
                  auxiliary_weight: float = 0.1) -> Tensor:
    """``[K]`` loss weights :math:`\\alpha_b` of the authors' settings: 0.7 for the target
    (last) behavior, 0.1 for the others."""
    alpha = torch.full((num_behaviors,), float(auxiliary_weight))
    alpha[-1] = float(target_weight)
    return alpha


def resolve_alpha(alpha: Optional[Union[Sequence[float], Mapping[str, float]]],
                  behavior_names: Sequence[str]) -> Tensor:
    """``[K]`` weights from ``None`` (the defaults), a sequence of ``K`` floats, or a mapping
    ``{behavior name: weight}`` (unnamed behaviors: 0.1, or 0.7 for the target)."""
    K = len(behavior_names)
    if alpha is None:
        return default_alpha(K)
    if isinstance(alpha, Mapping):
        unknown = sorted(set(alpha) - set(behavior_names))
        if unknown:
            raise ValueError(f'alpha names unknown behaviors {unknown}; known: '
                             f'{list(behavior_names)}')
        out = default_alpha(K)
        for name, w in alpha.items():
            out[list(behavior_names).index(name)] = float(w)
        return out
    out = torch.as_tensor([float(w) for w in alpha])
    if out.numel() != K:
        raise ValueError(f'alpha needs one weight per behavior ({K}: {list(behavior_names)}), '
                         f'got {out.numel()}')
    return out


__all__ = ['prefix_behavior_counts', 'history_behavior_counts', 'HMAREmbedding',
           'causal_key_mask', 'MaskedSelfAttention', 'PointwiseFeedForward', 'BehaviorEncoder',
           'SequenceEncoder', 'HierarchicalMaskedAttention', 'BehaviorClassifier', 'hmar_loss',
           'default_alpha', 'resolve_alpha']
