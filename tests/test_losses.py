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


@pytest.mark.parametrize('cosine', [False, True])
def test_info_nce_positive_index_by_hand(cosine):
    """Positives given as rows of the candidate table: the fused cross-entropy path against
    eq 8 summed by hand, value and gradients equal to the gathered-positive path."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 4, generator=g, requires_grad=True)
    table = torch.randn(6, 4, generator=g, requires_grad=True)
    ids = torch.tensor([4, 0, 4])
    tau = 0.3
    unit = (lambda t: t / t.norm(dim=-1, keepdim=True)) if cosine else (lambda t: t)
    an, cn = unit(a).detach(), unit(table).detach()
    total = 0.0
    for r in range(3):
        sims = [float(an[r] @ cn[c]) / tau for c in range(6)]
        total += -(sims[ids[r]] - math.log(sum(math.exp(s) for s in sims)))
    fused = info_nce(a, None, tau, candidates=table, cosine=cosine, positive_index=ids)
    assert fused.item() == pytest.approx(total / 3, rel=1e-5)
    grads = torch.autograd.grad(fused, (a, table))
    gathered = info_nce(a, table[ids], tau, candidates=table, cosine=cosine)
    assert gathered.item() == pytest.approx(total / 3, rel=1e-5)
    for x, y in zip(grads, torch.autograd.grad(gathered, (a, table))):
        assert torch.allclose(x, y, atol=1e-6)
    with pytest.raises(ValueError, match='pass candidates'):
        info_nce(a, None, tau, positive_index=ids)
    with pytest.raises(ValueError, match=r'shape \[3\]'):
        info_nce(a, None, tau, candidates=table, positive_index=ids[:2])
    with pytest.raises(ValueError, match='positive or positive_index'):
        info_nce(a, None, tau, candidates=table)
    with pytest.raises(ValueError, match='at least one anchor'):
        info_nce(a[:0], None, tau, candidates=table, positive_index=ids[:0])


@pytest.mark.parametrize('chunk', [1, 7, 1 << 20])
def test_fused_softmax_cross_entropy_by_hand_over_chunks(chunk, monkeypatch):
    """Weighted eq 8 over whole-table candidates, value and both gradients written out from
    the softmax (grad_logits = w (p - onehot)), when the logits are split into chunks of one
    row (chunk 1: a row a chunk), of a row and a bit (7 elements, rows of 6) or held whole."""
    import mbgraph.losses as losses
    monkeypatch.setattr(losses, 'CHUNK_ELEMENTS', chunk)
    g = torch.Generator().manual_seed(5)
    a = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([2, 2, 0, 5, 2])
    counts = torch.tensor([1.0, 3.0, 2.0, 1.0, 4.0], dtype=torch.float64)
    w = counts / counts.sum()
    loss = losses.FusedSoftmaxCrossEntropy.apply(a, c, t, w)
    ga, gc = torch.autograd.grad(3.0 * loss, (a, c))
    an, cn = a.detach(), c.detach()
    value, want_a, want_c = 0.0, torch.zeros_like(an), torch.zeros_like(cn)
    for i in range(5):
        z = [float(an[i] @ cn[j]) for j in range(6)]
        lse = math.log(sum(math.exp(v) for v in z))
        value += float(w[i]) * (lse - z[int(t[i])])
        for j in range(6):
            dz = float(w[i]) * (math.exp(z[j] - lse) - (j == int(t[i])))
            want_a[i] += 3.0 * dz * cn[j]
            want_c[j] += 3.0 * dz * an[i]
    assert loss.item() == pytest.approx(value, rel=1e-12)
    assert torch.allclose(ga, want_a, atol=1e-12) and torch.allclose(gc, want_c, atol=1e-12)
    with torch.no_grad():       # evaluation: the value alone, no gradient buffers
        assert losses.FusedSoftmaxCrossEntropy.apply(a, c, t, w).item() == pytest.approx(value)


def test_info_nce_whole_table_stays_float32_under_autocast():
    a = torch.randn(4, 8, requires_grad=True)
    table = torch.randn(10, 8, requires_grad=True)
    ids = torch.tensor([1, 3, 3, 9])
    want = info_nce(a, None, 0.1, candidates=table, cosine=True, positive_index=ids)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = info_nce(a.bfloat16(), None, 0.1, candidates=table.bfloat16(), cosine=True,
                       positive_index=ids)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=2e-2)     # bf16 inputs, fp32 sums
    got.backward()
    assert a.grad.dtype == torch.float32 and torch.isfinite(table.grad).all()


def test_l2_and_nan_check():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]])
    assert l2_loss(a, b).item() == pytest.approx((1 + 4 + 9) / 2)
    with pytest.raises(FloatingPointError, match='epoch 3'):
        check_finite(torch.tensor(float('nan')), 'epoch 3, batch 0')
