import math

import pytest
import torch

from mbgraph.losses import bpr_loss, check_finite, info_nce, l2_loss, multi_behavior_bpr


def test_bpr_by_hand():
    pos, neg = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])
    expected = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)
    assert bpr_loss(pos, neg, 'sum').item() == pytest.approx(2 * expected, rel=1e-6)


def test_multi_behavior_bpr_weights():
    s = {'cart': (torch.tensor([1.0]), torch.tensor([0.0])),
         'buy': (torch.tensor([0.0]), torch.tensor([2.0]))}
    cart = math.log(1 + math.exp(-1.0))
    buy = math.log(1 + math.exp(2.0))
    got = multi_behavior_bpr(s, {'cart': 0.25, 'buy': 0.75}).item()
    assert got == pytest.approx(0.25 * cart + 0.75 * buy, rel=1e-6)
    assert multi_behavior_bpr(s).item() == pytest.approx(cart + buy, rel=1e-6)
    with pytest.raises(ValueError, match='every loss coefficient is zero'):
        multi_behavior_bpr(s, {'cart': 0.0})


def test_info_nce_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    p = torch.tensor([[0.5, 0.5], [1.0, -1.0]])
    tau = 0.5
    total = 0.0
    for u in range(2):
        sims = [float(a[u] @ p[v]) / tau for v in range(2)]
        total += -(sims[u] - math.log(sum(math.exp(s) for s in sims)))
    assert info_nce(a, p, tau).item() == pytest.approx(total / 2, rel=1e-6)
    # cosine similarity variant
    an, pn = a / a.norm(dim=1, keepdim=True), p / p.norm(dim=1, keepdim=True)
    total = 0.0
    for u in range(2):
        sims = [float(an[u] @ pn[v]) / tau for v in range(2)]
        total += -(sims[u] - math.log(sum(math.exp(s) for s in sims)))
    assert info_nce(a, p, tau, cosine=True).item() == pytest.approx(total / 2, rel=1e-6)
    with pytest.raises(ValueError, match='tau'):
        info_nce(a, p, 0.0)


def test_l2_and_nan_check():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]])
    assert l2_loss(a, b).item() == pytest.approx((1 + 4 + 9) / 2)
    with pytest.raises(FloatingPointError, match='epoch 3'):
        check_finite(torch.tensor(float('nan')), 'epoch 3, batch 0')
