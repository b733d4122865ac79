"""EBM (DPCPL sec. 4.1-4.2): the filter layer against an explicit DFT and per-frequency,
per-block matrix products; parameter counts; the behavior mixer; eq 4; training; the
self-attention variant of table 5's "w/o DS" against dense attention by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from mbgraph.training import Trainer
from mbgraph_seq.data import SequenceBatch
from mbgraph_seq.models import DPCPL, EBM, SEQ_MODELS
from mbgraph_seq.nn.filter import BehaviorMinerLayer, ChunkedComplexMLP, EfficientFilterLayer

from helpers import cyclic_walks as synthetic


def complex_weights(mlp):
    """W^n as d/k x d/k complex matrices acting on column vectors (stored as [in, out])."""
    W1 = torch.complex(mlp.w1[0], mlp.w1[1]).transpose(-1, -2)
    W2 = torch.complex(mlp.w2[0], mlp.w2[1]).transpose(-1, -2)
    return W1, torch.complex(mlp.b1[0], mlp.b1[1]), W2, torch.complex(mlp.b2[0], mlp.b2[1])


def mlp_by_hand(mlp, X):
    """Eq 3 by loops: every frequency token i, every block n: W2 relu_c(W1 x + b1) + b2."""
    W1, b1, W2, b2 = complex_weights(mlp)
    c = mlp.block
    out = torch.zeros_like(X)
    for row in range(X.size(0)):
        for i in range(X.size(1)):
            for n in range(mlp.num_blocks):
                x = X[row, i, n * c:(n + 1) * c]
                h = W1[n] @ x + b1[n]
                h = torch.complex(torch.relu(h.real), torch.relu(h.imag))
                out[row, i, n * c:(n + 1) * c] = W2[n] @ h + b2[n]
    return out


def filter_by_hand(mlp, s):
    """Eq 2 with explicit DFT sums (orthonormal): X_f = L^-1/2 sum_t s_t e^{-2 pi i f t / L}
    for f = 0..L/2, the MLP, then the real inverse from the Hermitian-completed spectrum."""
    s = s.double()
    B, L, d = s.shape
    t = torch.arange(L, dtype=torch.float64)
    f = torch.arange(L // 2 + 1, dtype=torch.float64)
    forward = torch.exp(-2j * math.pi * f[:, None] * t[None, :] / L) / math.sqrt(L)  # [F, L]
    X = torch.einsum('ft,btd->bfd', forward, s.to(torch.complex128)).to(torch.complex64)
    Y = mlp_by_hand(mlp, X).to(torch.complex128)
    # C2R inverse: DC (and Nyquist for even L) are taken as real, the rest mirrored
    Y[:, 0] = Y[:, 0].real.to(torch.complex128)
    if L % 2 == 0:
        Y[:, -1] = Y[:, -1].real.to(torch.complex128)
    full = torch.zeros(B, L, d, dtype=torch.complex128)
    full[:, :L // 2 + 1] = Y
    for k in range(L // 2 + 1, L):
        full[:, k] = Y[:, L - k].conj()
    tt = torch.arange(L, dtype=torch.float64)
    ff = torch.arange(L, dtype=torch.float64)
    inverse = torch.exp(2j * math.pi * tt[:, None] * ff[None, :] / L) / math.sqrt(L)  # [L, L]
    return torch.einsum('tf,bfd->btd', inverse, full).real.float()


def test_chunked_mlp_equals_per_frequency_block_products():
    torch.manual_seed(0)
    mlp = ChunkedComplexMLP(8, num_blocks=2, init_scale=0.5)
    X = torch.randn(3, 5, 8, dtype=torch.complex64)
    assert torch.allclose(mlp(X), mlp_by_hand(mlp, X), atol=1e-5)


@pytest.mark.parametrize('length', [6, 7])   # even and odd: Nyquist bin present or not
def test_filter_layer_equals_explicit_dft(length):
    torch.manual_seed(1)
    layer = EfficientFilterLayer(8, num_blocks=4, dropout=0.0)
    with torch.no_grad():
        for p in layer.fusion.parameters():
            p.mul_(20.0)          # make the nonlinearity matter
    layer.eval()
    s = torch.randn(2, length, 8)
    filtered = filter_by_hand(layer.fusion, s)
    assert torch.allclose(layer.filter(s), filtered, atol=1e-4)
    # residual + LayerNorm + FFN with its own residual + LayerNorm, written out
    def ln(v, norm):
        mu, var = v.mean(-1, keepdim=True), v.var(-1, unbiased=False, keepdim=True)
        return (v - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    h = ln(s + filtered, layer.norm1)
    ffn = layer.ffn.fc2.weight @ F.gelu(layer.ffn.fc1.weight @ h.unsqueeze(-1)
                                         + layer.ffn.fc1.bias.unsqueeze(-1))
    out = ln(h + ffn.squeeze(-1) + layer.ffn.fc2.bias, layer.norm2)
    assert torch.allclose(layer(s), out, atol=1e-4)
    assert torch.allclose(layer(s, last_only=True), layer(s)[:, -1], atol=1e-6)


def test_parameter_count_independent_of_sequence_length():
    d, k = 16, 4
    mlp = ChunkedComplexMLP(d, k)
    assert sum(p.numel() for p in mlp.parameters()) == 4 * d * d // k + 4 * d  # Table 1
    layer = EfficientFilterLayer(d, k)
    n = sum(p.numel() for p in layer.parameters())
    for length in (3, 10, 57):
        assert layer(torch.randn(2, length, d)).shape == (2, length, d)
    assert sum(p.numel() for p in layer.parameters()) == n
    # EBMs for max_len 10 and 200 differ by the position embedding table only
    short = EBM(synthetic(max_len=10), dim=d, num_blocks=k)
    long = EBM(synthetic(max_len=200), dim=d, num_blocks=k)
    def count(m):
        return sum(p.numel() for p in m.parameters())
    assert count(long) - count(short) == 190 * d
    assert count(long.layers) == count(short.layers)


def test_behavior_miner_layer_by_hand():
    torch.manual_seed(2)
    layer = BehaviorMinerLayer(8, num_behaviors=2, num_blocks=2, dropout=0.0).eval()
    x = torch.randn(2, 5, 8)
    behaviors = torch.tensor([[0, 1, 2, 1, 2], [0, 0, 2, 2, 1]])
    mask = behaviors > 0
    views = [layer.filter(x, mask)]
    for k in (1, 2):
        mk = behaviors == k
        views.append(layer.filter(x * mk.unsqueeze(-1), mk))
    mixed = torch.cat(views, -1) @ layer.mixer.weight.t() + layer.mixer.bias
    expected = layer.norm(views[0] + mixed) * mask.unsqueeze(-1)
    assert torch.allclose(layer(x, behaviors, mask), expected, atol=1e-5)
    assert torch.allclose(layer(x, behaviors, mask, last_only=True), expected[:, -1], atol=1e-5)
    # a behavior-2 event outside user 0's behavior-1 sub-sequence does not reach that view
    x2 = x.clone()
    x2[0, 2] += 1.0
    f1 = layer.filter(x * (behaviors == 1).unsqueeze(-1), behaviors == 1)
    f1b = layer.filter(x2 * (behaviors == 1).unsqueeze(-1), behaviors == 1)
    assert torch.allclose(f1, f1b)


def test_eq4_pretraining_loss_by_hand():
    torch.manual_seed(3)
    ds = synthetic()
    model = EBM(ds, dim=16, num_layers=2, num_blocks=4, dropout=0.0).eval()
    batch = next(iter(ds.train_source(batch_size=8, num_negatives=3, prefixes='all')
                      .batches(0)))
    with torch.no_grad():
        loss, parts = model.loss(batch)
        u = model.encode(batch)
    E, Bt = model.item_weight().detach(), model.behavior_weight_table().detach()
    item_terms, beh_terms = [], []
    for r in range(len(batch)):
        p, bp = batch.pos[r, -1], batch.pos_behaviors[r, -1]
        for n in batch.neg[r, -1]:
            item_terms.append(-torch.log(torch.sigmoid(u[r] @ E[p] - u[r] @ E[n])))
        for b in range(1, 4):
            if b != bp:
                beh_terms.append(-torch.log(torch.sigmoid(u[r] @ Bt[bp] - u[r] @ Bt[b])))
    item_term, beh_term = torch.stack(item_terms).mean(), torch.stack(beh_terms).mean()
    assert math.isclose(parts['item'], float(item_term), rel_tol=1e-5)
    assert math.isclose(parts['behavior'], float(beh_term), rel_tol=1e-5)
    assert torch.allclose(loss, item_term + beh_term, atol=1e-6)


def test_ebm_refuses_full_sequence_batches():
    ds = synthetic()
    model = EBM(ds, dim=8, num_blocks=2)
    full = next(iter(ds.train_source(batch_size=4).batches(0)))
    with pytest.raises(ValueError, match='not causal'):
        model.loss(full)


def test_ebm_scores_and_trains():
    ds = synthetic()
    torch.manual_seed(0)
    model = SEQ_MODELS['ebm'](ds, dim=16, num_layers=1, num_blocks=2, dropout=0.0)
    model.prepare_eval('test')
    users = ds.split_pairs('test')[0][:3]
    assert model.score(users).shape == (3, ds.num_items)
    items = torch.tensor([[0, 1], [2, 3], [4, 5]])
    full = model.score(users)
    assert torch.allclose(model.score(users, items), full.gather(1, items), atol=1e-5)
    src = ds.train_source(batch_size=64, num_negatives=2, seed=0, prefixes='all')
    trainer = Trainer(model, src, None, epochs=2, lr=1e-2, progress=False, seed=0)
    trainer.fit()
    first, second = trainer.history[0]['loss'], trainer.history[1]['loss']
    assert second < first * 0.95, (first, second)


# -------------------------------------------------------------- w/o DS: attention, not the filter

def attention_layer_by_hand(layer, x, behaviors, mask, keep):
    """One ``sequence_mixer='attention'`` EBM layer, dense, all positions: for every row and
    view (overall; each behavior with the kept prompt slots), every head attends
    softmax(Q K^T / sqrt(d_h)) V over the positions the view holds, then residual + LN,
    GELU FFN + LN; the behavior mixer combines the views; padding rows are 0."""
    block, attn = layer.attention, layer.attention.attn
    H, dh = attn.num_heads, attn.head_dim
    B, L, d = x.shape
    def lin(m, t):
        return t @ m.weight.t() + m.bias

    def ln(m, t):
        return F.layer_norm(t, (d,), m.weight, m.bias)
    out = torch.zeros(B, L, d)
    for r in range(B):
        views = []
        for v in range(layer.num_behaviors + 1):
            held = mask[r] if v == 0 else (behaviors[r] == v) & mask[r]
            idx = (held | keep[r]).nonzero().squeeze(1)
            y = torch.zeros(L, d)
            if idx.numel():
                s = x[r, idx]                                   # only the held positions
                Q, K, V = lin(attn.q, s), lin(attn.k, s), lin(attn.v, s)
                heads = []
                for h in range(H):
                    c = slice(h * dh, (h + 1) * dh)
                    A = torch.softmax(Q[:, c] @ K[:, c].t() / math.sqrt(dh), dim=1)
                    heads.append(A @ V[:, c])
                hh = ln(block.norm1, s + lin(attn.out, torch.cat(heads, 1)))
                ffn = lin(block.ffn.fc2, F.gelu(lin(block.ffn.fc1, hh)))
                y[idx] = ln(block.norm2, hh + ffn)
            views.append(y)
        mixed = lin(layer.mixer, torch.cat(views, 1))
        out[r] = ln(layer.norm, views[0] + mixed) * mask[r].unsqueeze(1)
    return out


def hand_batch(items, behaviors):
    items, behaviors = torch.tensor(items), torch.tensor(behaviors)
    B, M = items.shape
    zeros = torch.zeros(B, M, dtype=torch.long)
    return SequenceBatch(users=torch.arange(B), items=items, behaviors=behaviors,
                         mask=items > 0, pos=zeros, pos_behaviors=zeros,
                         neg=torch.zeros(B, M, 1, dtype=torch.long))


@pytest.mark.parametrize('slots', [2, 0])
def test_attention_mixer_ebm_by_hand(slots):
    """DPCPL table 5's w/o DS: EBM.encode with prompt slots against dense attention by hand,
    two layers (the slots overwritten before each), left-padded rows included."""
    ds = synthetic()                       # 30 items, behaviors click / cart / buy, max_len 12
    torch.manual_seed(7)
    d, C = 8, slots
    model = EBM(ds, dim=d, num_layers=2, num_blocks=2, dropout=0.0, prompt_slots=C,
                sequence_mixer='attention').eval()
    assert model.sequence_mixer == 'attention'
    assert all(layer.attention.attn.num_heads == 2 and not hasattr(layer, 'filter')
               for layer in model.layers)
    # row 1: two padding positions, no cart; row 2: four padding positions, buys only
    batch = hand_batch([[3, 9, 4, 17, 25, 6], [0, 0, 11, 2, 30, 8], [0, 0, 0, 0, 5, 21]],
                       [[1, 2, 3, 1, 1, 3], [0, 0, 1, 3, 1, 3], [0, 0, 0, 0, 3, 3]])
    prompts = [torch.randn(3, C, d) for _ in range(2)] if C else None
    with torch.no_grad():
        u = model.encode(batch, prompts)
        emb = model.embedding
        M = batch.items.size(1)
        x = (emb.items.weight[batch.items] + emb.positions.weight[ds.max_len - M:]
             + emb.behaviors.weight[batch.behaviors])                           # eq 1
        x = F.layer_norm(x, (d,), model.norm.weight, model.norm.bias)
        mask = torch.cat([torch.ones(3, C, dtype=torch.bool), batch.mask], 1)
        behaviors = torch.cat([torch.zeros(3, C, dtype=torch.long), batch.behaviors], 1)
        keep = torch.zeros_like(mask)
        keep[:, :C] = True
        h = x if not C else torch.cat([prompts[0], x], 1)
        layer0 = attention_layer_by_hand(model.layers[0], h, behaviors, mask, keep)
        # the module's full-sequence output (not only the read-out position) matches too
        torch.testing.assert_close(model.layers[0](h, behaviors, mask, keep), layer0,
                                   atol=1e-5, rtol=1e-5)
        h = layer0 if not C else torch.cat([prompts[1], layer0[:, C:]], 1)
        expected = attention_layer_by_hand(model.layers[1], h, behaviors, mask, keep)[:, -1]
        assert torch.isfinite(u).all()
        torch.testing.assert_close(u, expected, atol=1e-5, rtol=1e-5)
        # padding is never attended: row 1 without its two padding columns (same positions
        # of the real events) gives the same representation
        short = hand_batch([[11, 2, 30, 8]], [[1, 3, 1, 3]])
        short_u = model.encode(short, None if not C else [p[1:2] for p in prompts])
        torch.testing.assert_close(short_u[0], u[1], atol=1e-5, rtol=1e-5)


def test_unknown_sequence_mixer_is_refused():
    ds = synthetic()
    for build in (lambda: EBM(ds, dim=8, num_blocks=2, sequence_mixer='fft'),
                  lambda: DPCPL(ds, dim=8, num_blocks=2, sequence_mixer='self-attention'),
                  lambda: BehaviorMinerLayer(8, 2, 2, sequence_mixer='Attention')):
        with pytest.raises(ValueError, match=r"unknown sequence_mixer .*filter, attention"):
            build()
    # the default is the paper's filter
    assert all(hasattr(layer, 'filter') and not hasattr(layer, 'attention')
               for layer in EBM(ds, dim=8, num_blocks=2).layers)
