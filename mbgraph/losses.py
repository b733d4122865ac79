r"""Loss terms shared by the graph and sequence models.

* :func:`bpr_loss` -- Bayesian personalised ranking,
  :math:`-\frac{1}{B}\sum \log \sigma(\hat y_{ui} - \hat y_{uj})`;
* :func:`multi_behavior_bpr` -- :math:`\sum_k \lambda_k \mathcal{L}^k_{BPR}` (PKEF eq 21,
  COPF eq 16);
* :func:`info_nce` -- the contrastive term of COPF eq 8 (with the whole table as
  candidates, :class:`FusedSoftmaxCrossEntropy` computes it chunk by chunk);
* :func:`l2_loss` -- L2 regularisation of the embeddings a batch used.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def bpr_loss(pos: Tensor, neg: Tensor, reduction: str = 'mean') -> Tensor:
    r"""BPR loss :math:`-\log\sigma(\hat y_{ui} - \hat y_{uj})`, written as
    ``softplus(neg - pos)`` for numerical stability.

    Args:
        pos: scores of the observed pairs, any shape.
        neg: scores of the sampled negatives, broadcastable to ``pos``.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
    """
    out = F.softplus(neg - pos)
    if reduction == 'mean':
        return out.mean()
    if reduction == 'sum':
        return out.sum()
    if reduction == 'none':
        return out
    raise ValueError(f"unknown reduction {reduction!r}; expected 'mean', 'sum' or 'none'")


def multi_behavior_bpr(scores: Mapping[str, Tuple[Tensor, Tensor]],
                       lambdas: Optional[Mapping[str, float]] = None) -> Tensor:
    r""":math:`\sum_k \lambda_k\,\mathcal{L}_{BPR}(\hat y^k_{ui}, \hat y^k_{uj})` over the
    behaviors in ``scores`` (``{behavior: (pos, neg)}``); ``lambdas`` defaults to 1 each.
    A behavior with :math:`\lambda_k = 0` contributes nothing (and is not evaluated)."""
    if len(scores) == 0:
        raise ValueError('multi_behavior_bpr needs scores for at least one behavior')
    total = None
    for b, (pos, neg) in scores.items():
        lam = 1.0 if lambdas is None else float(lambdas.get(b, 0.0))
        if lam == 0.0:
            continue
        term = lam * bpr_loss(pos, neg)
        total = term if total is None else total + term
    if total is None:
        raise ValueError(f'every loss coefficient is zero for behaviors {list(scores)}')
    return total


#: rows of the ``[rows, N]`` logits one chunk of :class:`FusedSoftmaxCrossEntropy` holds:
#: ``CHUNK_ELEMENTS // N`` (4 MiB of float32: smaller chunks starve the GEMMs, larger ones
#: leave the cache; measured on Taobao-sized tables)
CHUNK_ELEMENTS = 1 << 20


class FusedSoftmaxCrossEntropy(torch.autograd.Function):
    r""":math:`\sum_i w_i\,(\log\sum_j e^{a_i\cdot c_j} - a_i\cdot c_{t_i})` and its
    gradients in one pass over row chunks of the ``[B, N]`` logits.

    The gradient with respect to the logits is :math:`w_i(\mathrm{softmax}_j - [j = t_i])`,
    so each chunk's softmax is turned into ``grad_anchor = w (P c - c_t)`` and
    ``grad_candidates = P^T (w a) - scatter_t(w a)`` at once: no ``[B, N]`` tensor is ever
    held (autograd's ``cross_entropy`` keeps the logits, the log-softmax and its gradient,
    three of them, and zero-fills a fourth). The backward pass only scales the saved
    gradients by the incoming one (no double backward). ``weight`` must sum to what the
    caller wants as the mean's divisor (``1 / B`` each for a plain mean).
    """

    @staticmethod
    def forward(ctx, anchor: Tensor, candidates: Tensor, target: Tensor,
                weight: Tensor) -> Tensor:
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        ctx.dtypes = anchor.dtype, candidates.dtype
        dtype = torch.promote_types(torch.promote_types(anchor.dtype, candidates.dtype),
                                    torch.float32)               # float32 at least, even under AMP
        with torch.autocast(anchor.device.type, enabled=False):
            return FusedSoftmaxCrossEntropy._forward(
                ctx, anchor.to(dtype), candidates.to(dtype), target, weight.to(dtype), need_grad)

    @staticmethod
    def _forward(ctx, anchor, candidates, target, weight, need_grad):
        n = candidates.size(0)
        rows = max(1, CHUNK_ELEMENTS // max(n, 1))
        total = anchor.new_zeros(())
        grad_a = torch.empty_like(anchor) if need_grad else None
        grad_ct = anchor.new_zeros(anchor.size(1), n) if need_grad else None   # [d, N]
        ct = candidates.t()
        for start in range(0, anchor.size(0), rows):
            a, w = anchor[start:start + rows], weight[start:start + rows]
            logits = a @ ct                                                  # [r, N]
            top = logits.amax(dim=1, keepdim=True)
            probs = logits.sub_(top).exp_()
            norm = probs.sum(dim=1, keepdim=True)
            lse = top.squeeze(1) + norm.squeeze(1).log()
            total = total + (w * lse).sum()
            if need_grad:
                probs.div_(norm)
                grad_a[start:start + rows] = torch.mm(probs, candidates).mul_(w.unsqueeze(1))
                grad_ct.addmm_((a * w.unsqueeze(1)).t(), probs)   # [d, r] @ [r, N]: fast layout
        positives = candidates[target]                                       # [B, d]
        total = total - (weight * (anchor * positives).sum(dim=1)).sum()
        if need_grad:
            wa = anchor * weight.unsqueeze(1)
            grad_a.sub_(positives * weight.unsqueeze(1))
            grad_c = grad_ct.t().contiguous().index_add_(0, target, wa, alpha=-1.0)
            ctx.save_for_backward(grad_a, grad_c)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        grad_a, grad_c = ctx.saved_tensors
        return ((grad_out * grad_a).to(ctx.dtypes[0]), (grad_out * grad_c).to(ctx.dtypes[1]),
                None, None)


def info_nce(anchor: Tensor, positive: Optional[Tensor], tau: float = 0.1,
             candidates: Optional[Tensor] = None, cosine: bool = False,
             positive_index: Optional[Tensor] = None,
             weight: Optional[Tensor] = None) -> Tensor:
    r"""InfoNCE of COPF eq 8:

    .. math::
        \frac{1}{|U|}\sum_{u\in U} -\log \frac{\exp(\varphi(a_u, p_u)/\tau)}
        {\sum_{u'} \exp(\varphi(a_u, c_{u'})/\tau)}

    Args:
        anchor: ``[B, d]`` (e.g. target-behavior embeddings :math:`e_u^{K,*}`).
        positive: ``[B, d]`` the paired views (:math:`e_u^{k,*}`); may be ``None`` when
            ``positive_index`` is given.
        tau: temperature :math:`\tau`.
        candidates: ``[N, d]`` the denominator's set; defaults to ``positive`` (in-batch
            negatives). It must contain the positives for the loss to be a proper InfoNCE.
        cosine: use cosine similarity for :math:`\varphi` (the authors' code) instead of
            the inner product (the paper's example).
        positive_index: ``[B]`` where each anchor's positive is among ``candidates``
            (:math:`p_u = c_{\mathrm{index}_u}`, as when the candidates are a whole embedding
            table and the anchors' ids index it). The loss and its gradients are then
            computed chunk by chunk (:class:`FusedSoftmaxCrossEntropy`): the same values
            without ever holding the ``[B, N]`` logits.
        weight: ``[B]`` non-negative weights of the anchors: the loss is then
            :math:`\sum_u w_u \ell_u / \sum_u w_u`, the plain mean over a list in which
            anchor :math:`u` stands :math:`w_u` times (each repeated anchor computed once).
    """
    if tau <= 0:
        raise ValueError(f'temperature tau must be > 0, got {tau}')
    if positive_index is not None:
        if candidates is None:
            raise ValueError('info_nce: positive_index indexes candidates; pass candidates')
        if positive_index.shape != anchor.shape[:1]:
            raise ValueError(f'info_nce: positive_index must have shape [{anchor.size(0)}] '
                             f'(one per anchor), got {list(positive_index.shape)}')
    elif positive is None:
        raise ValueError('info_nce needs positive or positive_index')
    if candidates is None:
        candidates = positive
    if cosine:
        anchor, candidates = F.normalize(anchor, dim=-1), F.normalize(candidates, dim=-1)
    anchor = anchor / tau                      # [B, d], cheaper than dividing [B, N] logits
    if weight is not None and weight.shape != anchor.shape[:1]:
        raise ValueError(f'info_nce: weight must have shape [{anchor.size(0)}] (one per '
                         f'anchor), got {list(weight.shape)}')
    if anchor.size(0) == 0:
        raise ValueError('info_nce needs at least one anchor, got an empty batch')
    if positive_index is not None:
        w = (anchor.new_full(anchor.shape[:1], 1.0 / anchor.size(0)) if weight is None
             else weight.to(anchor.dtype) / weight.sum())
        return FusedSoftmaxCrossEntropy.apply(anchor, candidates, positive_index, w)
    if cosine:
        positive = F.normalize(positive, dim=-1)
    losses = torch.logsumexp(anchor @ candidates.t(), dim=-1) - (anchor * positive).sum(-1)
    if weight is None:
        return losses.mean()
    return (weight * losses).sum() / weight.sum()


def l2_loss(*tensors: Tensor, batch_size: Optional[int] = None) -> Tensor:
    r""":math:`\frac{1}{2B}\sum_t \lVert t \rVert_2^2` over the embeddings a batch used
    (``B`` = ``batch_size``, default the first tensor's leading dimension)."""
    if not tensors:
        raise ValueError('l2_loss needs at least one tensor')
    b = batch_size if batch_size is not None else max(tensors[0].size(0), 1)
    return sum(t.pow(2).sum() for t in tensors) / (2.0 * b)


class DivergenceError(FloatingPointError):
    """Training diverged: a loss term went NaN or infinite, or its mean grew past the trainer's
    ``loss_bound``. Names the term, the value, where it happened and the last good checkpoint
    (kept: the diverged step is not applied nor saved)."""

    def __init__(self, term: str, value: float, where: str, how: str,
                 last_good: Optional[object] = None, last_good_epoch: Optional[int] = None):
        self.term, self.value, self.where = term, value, where
        self.last_good, self.last_good_epoch = last_good, last_good_epoch
        kept = (f'the last good checkpoint is {last_good} (epoch {last_good_epoch})'
                if last_good is not None else 'no checkpoint was written before it')
        super().__init__(f'training diverged at {where}: loss term {term!r} {how}; {kept}; '
                         'lower the learning rate or check the inputs')


def check_finite(loss: Tensor, where: str) -> Tensor:
    """Raise ``FloatingPointError`` naming ``where`` if ``loss`` is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(f'loss is {loss.item() if loss.numel() == 1 else loss} at '
                                 f'{where}: training diverged (lower the learning rate, check '
                                 'the inputs)')
    return loss


LossDict = Dict[str, Tensor]
