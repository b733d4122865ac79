r"""Customized prompt generation of DPCPL (Wang et al., sec. 4.3).

* **Personalization** (sec. 4.3.1, eq 5): prompt information
  :math:`Q_u = [q_{u,attr} \| q_{u,stats} \| q_{u,b_1} \| \dots \| q_{u,b_K}]`, with
  :math:`q_{u,attr}` and :math:`q_{u,stats}` from MLPs over the user's attributes and
  statistics and :math:`q_{u,b}` the final hidden state of a GRU over the user's sub-sequence of
  behavior ``b`` (one GRU per behavior).
* **Progressiveness** (sec. 4.3.2, eq 6-9): the Prompt Factorized Gate (PFG) builds ``N``
  prompt factors per layer and ``N`` shared ones,
  :math:`\mathcal A^u_{l,n} = \mathrm{softmax}(W_{l,n} Q_u)`,
  :math:`E^u_{l,n} = \mathcal A^u_{l,n} Q_u`; gates them per layer,
  :math:`\Phi^u_l = [E^u_{l,1..N} \| E^u_{s,1..N}]`,
  :math:`\beta^u = \mathrm{softmax}(W_l \Phi^u_l)`, :math:`p^u_l = \sum_j \beta^u_j E^u_j`;
  and projects to the ``C`` prompt tokens of layer ``l``, :math:`p^u_{l,c} = W_{l,c} p^u_l`.
* **Diversity** (sec. 4.3.3, eq 10-12): the coding rate
  :math:`R(Z, \epsilon) = \frac12 \log\det(I + \frac{m}{n\epsilon^2} Z Z^\top)` of each
  user's prompt factors :math:`\mathcal E` and layer prompts :math:`\mathcal P`
  (:func:`coding_rate`, :func:`compactness_loss`).

Reading of eq 5-8 (the paper leaves the shapes implicit): the ``S`` information vectors are
stacked as the rows of :math:`Q_u \in \mathbb R^{S \times d_q}`, :math:`W_{l,n} \in \mathbb
R^{d_q}` scores each row, so :math:`\mathcal A_{l,n}` is a softmax over the ``S`` information
sources and :math:`E_{l,n} \in \mathbb R^{d_q}` their weighted sum; likewise :math:`W_l \in
\mathbb R^{d_q}` scores the ``2N`` factors of :math:`\Phi_l`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence


def coding_rate(z: Tensor, eps2: float, count: Optional[int] = None,
                normalize: bool = False) -> Tensor:
    r"""Rate-distortion :math:`R(Z, \epsilon) = \frac12\log\det(I + \frac{m}{n\epsilon^2}
    Z Z^\top)` (DPCPL eq 10-11, after ReduNet) of the rows of ``z`` (``[..., rows, m]``).

    Args:
        z: one matrix or a batch of them, rows = the vectors.
        eps2: :math:`\epsilon^2`.
        count: the ``n`` of the scaling (eq 10: ``N``, eq 11: ``L``); default the number of
            rows.
        normalize: rows scaled to unit norm first, as ReduNet's rate is taken of features on
            the unit sphere. Then :math:`R` measures how the directions spread and is
            bounded (at most :math:`\frac{r}{2}\log(1 + \frac{m\,\mathrm{rows}}{r\,n
            \epsilon^2})` for ``r = min(rows, m)``, reached by orthogonal rows); without it
            :math:`R` grows without bound with the rows' norms.
    """
    if eps2 <= 0:
        raise ValueError(f'eps2 must be > 0, got {eps2}')
    rows, m = z.size(-2), z.size(-1)
    n = rows if count is None else int(count)
    # float32 under torch.autocast (--amp) too: log det has no low-precision kernel, and a
    # bfloat16 Gram matrix would make it inaccurate
    with torch.autocast(z.device.type, enabled=False):
        z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
        if normalize:
            z = torch.nn.functional.normalize(z, dim=-1)
        gram = z @ z.transpose(-1, -2)
        eye = torch.eye(rows, dtype=z.dtype, device=z.device)
        return 0.5 * torch.logdet(eye + (m / (n * eps2)) * gram)


def compactness_loss(factors: Tensor, prompts: Tensor, num_factors: int, num_layers: int,
                     eps2_e: float = 1.0, eps2_p: float = 1.0, lambda_e: float = 1.0,
                     lambda_p: float = 1.0, normalize: bool = False) -> Tensor:
    r"""DPCPL eq 12 per user,
    :math:`\lambda_e R(\mathcal E_u, \epsilon_e) + \lambda_p R(\mathcal P_u, \epsilon_p)`,
    averaged over the batch.

    Args:
        factors: ``[B, N (L + 1), d_q]`` every user's prompt factors :math:`\mathcal E_u`.
        prompts: ``[B, L, d_q]`` every user's layer prompts :math:`\mathcal P_u`.
        num_factors, num_layers: ``N`` and ``L`` (the scalings of eq 10 and 11).
        normalize: the rates of unit-norm rows (:func:`coding_rate`).
    """
    # reading taken: eq 12's sum over users is a batch mean, so lambda does not scale with B
    r_e = coding_rate(factors, eps2_e, num_factors, normalize)
    r_p = coding_rate(prompts, eps2_p, num_layers, normalize)
    return (lambda_e * r_e + lambda_p * r_p).mean()


class MLP(nn.Module):
    """``Linear -> ReLU -> Linear`` (the paper's MultiMLP)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass
class PromptOutput:
    """What :class:`PromptGenerator` returns for a batch of users.

    Attributes:
        tokens: ``L`` tensors ``[B, C, d]``, the prompt tokens of every layer (eq 9).
        layer_prompts: ``[B, L, d_q]`` the layer prompts :math:`p^u_l` (eq 8), :math:`\\mathcal P`.
        factors: ``[B, N (L + 1), d_q]`` the prompt factors :math:`E^u_{l,n}` of every layer
            then the shared ones :math:`E^u_{s,n}` (eq 6), :math:`\\mathcal E`.
        information: ``[B, S, d_q]`` the prompt information :math:`Q_u` (eq 5).
    """
    tokens: List[Tensor]
    layer_prompts: Tensor
    factors: Tensor
    information: Tensor


class PromptGenerator(nn.Module):
    r"""DPCPL's customized prompt generator: eq 5 (information), 6-8 (PFG), 9 (tokens).

    Args:
        num_behaviors: ``K`` (one GRU per behavior).
        num_statistics: width of the user statistics (0: no :math:`q_{u,stats}`).
        num_attributes: width of the user attributes (0: no :math:`q_{u,attr}`).
        input_dim: width of the event embeddings fed to the GRUs (the backbone's ``d``).
        model_dim: width of the backbone's tokens ``d`` (output of :math:`W_{l,c}`).
        num_layers: backbone layers ``L``.
        prompt_dim: width :math:`d_q` of the information vectors, factors and layer prompts.
        num_factors: ``N`` factors per layer (and shared).
        num_tokens: ``C`` prompt tokens per layer.
        token_init: standard deviation of the initial :math:`W_{l,c}`.
    """

    def __init__(self, num_behaviors: int, num_statistics: int, num_attributes: int,
                 input_dim: int, model_dim: int, num_layers: int, prompt_dim: int = 32,
                 num_factors: int = 8, num_tokens: int = 8, token_init: float = 0.01):
        super().__init__()
        if min(num_behaviors, num_layers, prompt_dim, num_factors, num_tokens) < 1:
            raise ValueError('num_behaviors, num_layers, prompt_dim, num_factors and num_tokens '
                             'must all be >= 1')
        self.K, self.L, self.N, self.C = num_behaviors, num_layers, num_factors, num_tokens
        self.prompt_dim, self.model_dim = prompt_dim, model_dim
        self.stats_mlp = (MLP(num_statistics, prompt_dim, prompt_dim)
                          if num_statistics > 0 else None)
        self.attr_mlp = (MLP(num_attributes, prompt_dim, prompt_dim)
                         if num_attributes > 0 else None)
        self.num_statistics, self.num_attributes = int(num_statistics), int(num_attributes)
        self.grus = nn.ModuleList(nn.GRU(input_dim, prompt_dim, batch_first=True)
                                  for _ in range(num_behaviors))
        self.num_sources = (num_behaviors + (self.stats_mlp is not None)
                            + (self.attr_mlp is not None))
        # W_{l,n} (rows 0..L-1) and the shared W_{s,n} (row L), eq 6
        self.factor_queries = nn.Parameter(0.1 * torch.randn(num_layers + 1, num_factors,
                                                             prompt_dim))
        # W_l of eq 8
        self.layer_queries = nn.Parameter(0.1 * torch.randn(num_layers, prompt_dim))
        # W_{l,c} of eq 9 (one d x d_q matrix per layer and token); small at the start, so
        # that tuning starts from the pre-trained model's own behavior (zero prompt tokens act
        # as padding)
        self.token_proj = nn.Parameter(token_init * torch.randn(num_layers, num_tokens,
                                                                model_dim, prompt_dim))

    def behavior_states(self, embeddings: Tensor, behaviors: Tensor) -> Tensor:
        """``[B, K, d_q]``: the final GRU state over each behavior's sub-sequence (zero for a
        user without events of that behavior). ``embeddings`` ``[B, M, d_in]`` of the events,
        ``behaviors`` ``[B, M]`` (index + 1, 0 = padding)."""
        B = embeddings.size(0)
        out = []
        for k, gru in enumerate(self.grus):
            member = behaviors == k + 1
            lengths = member.sum(1)
            # move each row's events of behavior k to the front, keeping their order
            order = torch.argsort((~member).to(torch.int8), dim=1, stable=True)
            seq = embeddings.gather(1, order.unsqueeze(-1).expand_as(embeddings))
            packed = pack_padded_sequence(seq, lengths.clamp(min=1).cpu(), batch_first=True,
                                          enforce_sorted=False)
            _, h = gru(packed)                                      # [1, B, d_q]
            out.append(h[-1] * (lengths > 0).unsqueeze(-1).to(h.dtype))
        return torch.stack(out, 1) if out else embeddings.new_zeros(B, 0, self.prompt_dim)

    def information(self, features: Optional[Tensor], embeddings: Tensor,
                    behaviors: Tensor) -> Tensor:
        """Eq 5: ``[B, S, d_q]`` rows :math:`q_{u,attr}, q_{u,stats}, q_{u,b_1..b_K}`."""
        rows = []
        if self.attr_mlp is not None or self.stats_mlp is not None:
            need = self.num_statistics + self.num_attributes
            if features is None or features.size(-1) != need:
                raise ValueError(f'the prompt generator needs user features of width {need} '
                                 f'(statistics then attributes), got '
                                 f'{None if features is None else tuple(features.shape)}')
            if self.attr_mlp is not None:
                rows.append(self.attr_mlp(features[:, self.num_statistics:]))
            if self.stats_mlp is not None:
                rows.append(self.stats_mlp(features[:, :self.num_statistics]))
        q = torch.stack(rows, 1) if rows else None
        states = self.behavior_states(embeddings, behaviors)
        return states if q is None else torch.cat([q, states], 1)

    def forward(self, features: Optional[Tensor], embeddings: Tensor,
                behaviors: Tensor) -> PromptOutput:
        Q = self.information(features, embeddings, behaviors)              # [B, S, dq]
        # eq 6: A_{l,n} = softmax_s(W_{l,n} . Q_s), E_{l,n} = sum_s A_s Q_s
        logits = torch.einsum('gnq,bsq->bgns', self.factor_queries, Q)
        E = torch.einsum('bgns,bsq->bgnq', logits.softmax(-1), Q)          # [B, L+1, N, dq]
        shared = E[:, -1]                                                  # [B, N, dq]
        # eq 7: Phi_l = [E_{l,1..N} || E_{s,1..N}]
        phi = torch.cat([E[:, :-1], shared.unsqueeze(1).expand(-1, self.L, -1, -1)], 2)
        # eq 8: beta = softmax_j(W_l . Phi_l[j]), p_l = sum_j beta_j Phi_l[j]
        beta = torch.einsum('lq,bljq->blj', self.layer_queries, phi).softmax(-1)
        p = torch.einsum('blj,bljq->blq', beta, phi)                      # [B, L, dq]
        # eq 9: p_{l,c} = W_{l,c} p_l
        tokens = torch.einsum('lcdq,blq->lbcd', self.token_proj, p)
        return PromptOutput(tokens=list(tokens.unbind(0)), layer_prompts=p,
                            factors=E.reshape(E.size(0), -1, self.prompt_dim), information=Q)


__all__ = ['coding_rate', 'compactness_loss', 'MLP', 'PromptOutput', 'PromptGenerator']
