r"""DPCPL: a frozen pre-trained EBM tuned with customized prompts (Wang et al., sec. 4.3).

The backbone (:class:`~mbgraph_seq.models.ebm.EBM`, pre-trained with eq 4 on the early part of
every user's history) is frozen: its parameters never change and it always runs in eval mode
(no dropout). Only the :class:`~mbgraph_seq.nn.prompts.PromptGenerator` is tuned. For every
user it makes ``C`` prompt tokens per backbone layer from the user's statistics/attributes and
per-behavior GRU states (eq 5-9); the backbone reads them in ``C`` slots placed before the
sequence, overwritten at every layer (progressive prompts).

Prompt-tuning loss (eq 13):
:math:`\mathcal L_{total} = \mathcal L_{pred} + \lambda\,\mathcal L_{compactness}` with
:math:`\mathcal L_{pred}` the BPR next-item term of eq 4 on next events of the target behavior
only, and :math:`\mathcal L_{compactness}` eq 12 (:func:`~mbgraph_seq.nn.prompts.compactness_loss`).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import SequenceBatch, SequenceDataset
from ..nn.prompts import PromptGenerator, PromptOutput, compactness_loss
from .base import SequenceRecommender
from .ebm import EBM

PROMPT_INITS = ('backbone', 'small')


class DPCPL(SequenceRecommender):
    """Customized prompt tuning of a frozen EBM backbone.

    Args:
        dataset: the prompt-tuning :class:`~mbgraph_seq.data.SequenceDataset` (the fine-tuning
            side of :meth:`~mbgraph_seq.data.SequenceDataset.pretrain_finetune_split`).
        backbone: the pre-trained :class:`EBM`; a fresh one built from ``backbone_kwargs`` if
            None (then it is frozen at its random initialisation -- useful for tests only).
        prompt_dim: :math:`d_q`, width of prompt information, factors and layer prompts.
        num_factors: ``N`` prompt factors per layer (the paper finds 8-12 best).
        num_tokens: ``C`` prompt tokens per layer (the paper finds 8-12 best); None: the
            backbone's ``prompt_slots`` (8 if it has none). A backbone built here reserves
            ``C`` slots.
        compactness_weight: :math:`\\lambda` of eq 13 (paper grid 1e-3, 1e-2, 1e-1).
        lambda_e, lambda_p: the weights of eq 12.
        eps2_e, eps2_p: :math:`\\epsilon_e^2, \\epsilon_p^2` of eq 10-11 (paper grid 0.5, 1, 5).
        progressive: prompts at the input of every layer (sec. 4.3.2's progressive
            prompts); ``False`` generates prompt tokens for the first layer only and lets the
            later layers carry the slots forward (table 5's "w/o PG").
        personalized: customized prompts from the generator (eq 5-9); ``False`` uses soft
            prompts instead, ``C`` tokens per prompted layer that are the same for every user,
            randomly initialised (N(0, 0.02^2)) and trained (table 5's "w/o PS"). Soft prompts
            have no prompt factors or layer prompts, so eq 12's compactness term is 0 then.
        compactness_sign: the sign of :math:`\\lambda\\mathcal L_{compactness}` in the loss.
            ``-1`` (default) subtracts it: tuning *raises* each user's coding rate
            :math:`R(\\mathcal E_u) + R(\\mathcal P_u)`. Reading taken, from the text around
            eq 10-13: "Compactness is a desired trait of intra-factor representations and its
            opposite is what we expect for inter-factor representations"; "diversity should be
            maintained between prompt factors, and between prompts across layers for each
            user"; the term "ensure[s] diversity in prompt factors and the final prompt vector
            across different layers" and "expand[s] the representation space extensively"
            (sec. 5.4). The rows of :math:`\\mathcal E_u` and :math:`\\mathcal P_u` are
            different factors / layers of one user (inter-factor), and the coding rate of a
            set of vectors grows with the volume they span (ReduNet maximises it for the whole
            set), so diversity means a larger :math:`R`. Eq 13 as printed,
            :math:`\\mathcal L_{pred} + \\lambda\\mathcal L_{compactness}`, minimises it and
            pulls the factors together (toward zero): ``+1`` keeps that literal form.
        compactness_normalize: take eq 10-11's rates of the factors and layer prompts
            scaled to unit norm (ReduNet's rate is of features on the unit sphere). None
            (default): True with ``compactness_sign=-1``, False with ``+1``. Reading taken:
            raising the rate of unnormalised rows is unbounded (the rate grows with their
            norms); measured on ml-latest-small (a causal-filter backbone, prompt lr 1e-2),
            tuning without it diverged at epoch 5 with a non-finite log det, so diversity
            is asked of the directions. Lowering it (``+1``, eq 13 as printed) is bounded
            below and keeps the raw rows.
        prompt_init: the scale of the prompt tokens at the start of tuning. ``'backbone'``
            (default): the projections :math:`W_{l,c}` (eq 9) are rescaled, by
            :meth:`calibrate_prompts` on the first tuning batch, so that the mean norm of the
            prompt tokens equals the mean norm of the backbone's own tokens (its LayerNorm-ed
            eq-1 event embeddings, ~:math:`\\sqrt d`): prompts that small next to the
            sequence (the N(0, 0.01^2) start, norm ~0.1 against ~8) barely move the frozen
            model's output. ``'small'``: no rescaling; the tokens start near zero, i.e. near
            the backbone's own (zero-slot) behavior.
        **backbone_kwargs: :class:`EBM` arguments when ``backbone`` is None;
            ``sequence_mixer='attention'`` gives table 5's "w/o DS" (a backbone with
            self-attention instead of the Efficient Filter Layer; the prompt tuning is the same).
    """

    causal = False
    train_layout = 'all'
    target_only = True

    def __init__(self, dataset: SequenceDataset, backbone: Optional[EBM] = None,
                 prompt_dim: int = 32, num_factors: int = 8, num_tokens: Optional[int] = None,
                 compactness_weight: float = 1e-2, lambda_e: float = 1.0, lambda_p: float = 1.0,
                 eps2_e: float = 1.0, eps2_p: float = 1.0, compactness_sign: int = -1,
                 progressive: bool = True, personalized: bool = True,
                 prompt_init: str = 'backbone', compactness_normalize: Optional[bool] = None,
                 **backbone_kwargs):
        super().__init__(dataset)
        if backbone is None:
            backbone_kwargs.setdefault('prompt_slots', 8 if num_tokens is None else num_tokens)
            backbone = EBM(dataset, **backbone_kwargs)
        elif backbone_kwargs:
            raise ValueError(f'backbone given: EBM arguments {sorted(backbone_kwargs)} would be '
                             'ignored')
        if not isinstance(backbone, EBM):
            raise TypeError(f'the DPCPL backbone must be an EBM, got {type(backbone).__name__}')
        if (backbone.num_items, backbone.num_behaviors) != (dataset.num_items,
                                                            dataset.num_behaviors):
            raise ValueError('the backbone was built for a dataset with different items or '
                             'behaviors')
        if num_tokens is None:
            num_tokens = backbone.prompt_slots or 8
        if backbone.prompt_slots and num_tokens != backbone.prompt_slots:
            raise ValueError(f'num_tokens={num_tokens} differs from the backbone\'s '
                             f'prompt_slots={backbone.prompt_slots}')
        if compactness_sign not in (1, -1):
            raise ValueError(f'compactness_sign must be +1 or -1, got {compactness_sign}')
        if prompt_init not in PROMPT_INITS:
            raise ValueError(f'prompt_init must be one of {PROMPT_INITS}, got {prompt_init!r}')
        self.prompt_init = prompt_init
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        prompted_layers = backbone.num_layers if progressive else 1
        self.personalized = bool(personalized)
        if self.personalized:
            self.prompts = PromptGenerator(
                dataset.num_behaviors, dataset.num_statistics, dataset.num_attributes,
                input_dim=backbone.dim, model_dim=backbone.dim, num_layers=prompted_layers,
                prompt_dim=prompt_dim, num_factors=num_factors, num_tokens=num_tokens)
        else:
            self.prompts = None
            self.soft_prompts = nn.Parameter(
                0.02 * torch.randn(prompted_layers, num_tokens, backbone.dim))
        self.compactness_weight = float(compactness_weight)
        self.lambda_e, self.lambda_p = float(lambda_e), float(lambda_p)
        self.eps2_e, self.eps2_p = float(eps2_e), float(eps2_p)
        self.compactness_sign = int(compactness_sign)
        self.compactness_normalize = (self.compactness_sign == -1
                                      if compactness_normalize is None
                                      else bool(compactness_normalize))
        self.progressive = bool(progressive)

    def train(self, mode: bool = True) -> 'DPCPL':
        """Train mode for the prompt generator only: the frozen backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    # ------------------------------------------------------------------ parameters
    def tuned_parameters(self) -> List[nn.Parameter]:
        """The parameters prompt tuning updates (the prompt generator's)."""
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> Dict[str, float]:
        """``{'tuned', 'backbone', 'total', 'tuned_share'}``; ``tuned_share`` = tuned /
        backbone parameters, the ratio of Table 4 (prompt tuning vs full fine-tuning)."""
        tuned = sum(p.numel() for p in self.tuned_parameters())
        backbone = sum(p.numel() for p in self.backbone.parameters())
        return {'tuned': tuned, 'backbone': backbone, 'total': tuned + backbone,
                'tuned_share': tuned / backbone}

    @torch.no_grad()
    def calibrate_prompts(self, batch: SequenceBatch) -> float:
        """Rescale the prompt tokens to the backbone's token scale on ``batch``: multiply
        every :math:`W_{l,c}` (eq 9; soft prompts: the tokens) by the mean norm of the
        backbone's LayerNorm-ed event embeddings at the batch's real positions over the mean
        norm of the prompt tokens of its users. Returns the factor. The tokens are linear in
        :math:`W_{l,c}`, so after the call their mean norm on ``batch`` equals the backbone's."""
        events = self.backbone.event_embedding(batch)
        target = events[batch.mask].norm(dim=-1).mean()
        if self.personalized:
            tokens = torch.stack(self.prompts(batch.features, events, batch.behaviors).tokens)
        else:
            tokens = self.soft_prompts
        now = tokens.norm(dim=-1).mean()
        if not bool(now > 0):
            raise ValueError('the prompt tokens are all zero on this batch: nothing to rescale')
        factor = float(target / now)
        if self.personalized:
            self.prompts.token_proj.mul_(factor)
        else:
            self.soft_prompts.mul_(factor)
        return factor

    # ------------------------------------------------------------------ forward
    def item_weight(self) -> Tensor:
        return self.backbone.item_weight()

    def make_prompts(self, batch: SequenceBatch) -> Optional[PromptOutput]:
        """Eq 5-9 for the users of ``batch`` (GRU inputs: the frozen backbone's eq-1 event
        embeddings); None for soft prompts (``personalized=False``)."""
        if not self.personalized:
            return None
        with torch.no_grad():
            events = self.backbone.event_embedding(batch)
        return self.prompts(batch.features, events, batch.behaviors)

    def forward(self, batch: SequenceBatch) -> Tuple[Tensor, Optional[PromptOutput]]:
        out = self.make_prompts(batch)
        if out is None:     # w/o PS: the same soft tokens for every user
            tokens = [t.expand(batch.items.size(0), -1, -1) for t in self.soft_prompts.unbind(0)]
        else:
            tokens = list(out.tokens)
        if not self.progressive:     # w/o PG: the first layer's slots only
            tokens += [None] * (self.backbone.num_layers - 1)
        return self.backbone.encode(batch, tokens), out

    def user_representation(self, batch: SequenceBatch) -> Tensor:
        return self.forward(batch)[0]

    def loss(self, batch: SequenceBatch) -> Tuple[Tensor, Dict[str, float]]:
        pos, _, neg = self.backbone.last_targets(batch)
        u, out = self.forward(batch)
        items = self.item_weight()
        rp = (u * items[pos]).sum(-1)
        rn = torch.einsum('bd,bnd->bn', u, items[neg])
        pred = F.softplus(rn - rp.unsqueeze(-1)).mean()
        if out is None:     # soft prompts: no factors, no compactness term
            return pred, {'pred': float(pred.detach()), 'compactness': 0.0}
        comp = compactness_loss(out.factors, out.layer_prompts, self.prompts.N, self.prompts.L,
                                self.eps2_e, self.eps2_p, self.lambda_e, self.lambda_p,
                                normalize=self.compactness_normalize)
        total = pred + self.compactness_sign * self.compactness_weight * comp
        return total, {'pred': float(pred.detach()), 'compactness': float(comp.detach())}


__all__ = ['DPCPL', 'PROMPT_INITS']
