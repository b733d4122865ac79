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


@pytest.mark.parametrize('length', [6, 7])
def test_real_dft_matrices_are_torch_fft(length):
    """The matrices the filter multiplies by are rfft / irfft (orthonormal), the inverse
    ignoring the imaginary parts of the DC and Nyquist bins as C2R does."""
    from mbgraph_seq.nn.filter import real_dft_matrices
    torch.manual_seed(5)
    forward, inverse = real_dft_matrices(length)
    s = torch.randn(3, length, 4)
    spec = torch.fft.rfft(s, dim=1, norm='ortho')                      # [3, F, 4]
    pairs = (forward @ s).view(3, -1, 2, 4)
    assert torch.allclose(pairs[:, :, 0], spec.real, atol=1e-5)
    assert torch.allclose(pairs[:, :, 1], spec.imag, atol=1e-5)
    Y = torch.randn(3, length // 2 + 1, 4, dtype=torch.complex64)       # not Hermitian-clean
    expected = torch.fft.irfft(Y, n=length, dim=1, norm='ortho')
    got = inverse @ torch.stack([Y.real, Y.imag], 2).reshape(3, -1, 4)
    assert torch.allclose(got, expected, atol=1e-5)


def test_filter_by_matrices_equals_filter_by_fft(monkeypatch):
    """Sequences longer than DFT_MATMUL_MAX_LENGTH go through torch.fft: the same outputs
    and gradients."""
    import mbgraph_seq.nn.filter as filt
    torch.manual_seed(6)
    layer = EfficientFilterLayer(8, num_blocks=2, dropout=0.0)
    s = torch.randn(2, 9, 8, requires_grad=True)
    by_matrix = layer.filter(s)
    g_matrix = torch.autograd.grad(by_matrix.square().sum(), [s, layer.fusion.w1])
    monkeypatch.setattr(filt, 'DFT_MATMUL_MAX_LENGTH', 4)
    by_fft = layer.filter(s)
    g_fft = torch.autograd.grad(by_fft.square().sum(), [s, layer.fusion.w1])
    assert torch.allclose(by_matrix, by_fft, atol=1e-5)
    for a, b in zip(g_matrix, g_fft):
        assert torch.allclose(a, b, atol=1e-4)


def test_filter_layer_with_padding_computes_real_positions_only():
    """With a mask the position-wise part runs on the real positions only; the result and
    its gradients are the dense layer's with padding zeroed on input and output."""
    torch.manual_seed(4)
    layer = EfficientFilterLayer(8, num_blocks=4, dropout=0.0).eval()
    s = torch.randn(3, 7, 8, requires_grad=True)
    mask = torch.tensor([[0, 0, 1, 1, 0, 1, 1], [1] * 7, [0] * 7], dtype=torch.bool)
    m = mask.unsqueeze(-1).float()
    xs = s * m
    dense = layer.norm1(xs + layer.filter(xs))
    dense = layer.norm2(dense + layer.ffn(dense)) * m
    packed = layer(s, mask)
    assert torch.allclose(packed, dense, atol=1e-6)
    assert packed[2].abs().max() == 0 and packed[0, :2].abs().max() == 0
    w = torch.randn_like(dense)
    g_dense = torch.autograd.grad((dense * w).sum(), [s, layer.ffn.fc1.weight])
    g_packed = torch.autograd.grad((layer(s, mask) * w).sum(), [s, layer.ffn.fc1.weight])
    for a, b in zip(g_dense, g_packed):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(layer(s, mask, last_only=True), packed[:, -1], atol=1e-6)


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


@pytest.mark.parametrize('mixer', ['filter', 'attention', 'causal_filter'])
def test_behavior_miner_layer_skips_empty_views_exactly(mixer):
    """A behavior absent from a sequence gives an all-padding view: the layer skips it, with
    the output and gradients of every view run through the sequence layer."""
    torch.manual_seed(7)
    layer = BehaviorMinerLayer(8, num_behaviors=3, num_blocks=2, dropout=0.0,
                               sequence_mixer=mixer).eval()
    x = torch.randn(3, 5, 8, requires_grad=True)
    behaviors = torch.tensor([[0, 1, 2, 1, 2], [0, 0, 2, 2, 3], [1, 1, 1, 1, 1]])
    mask = behaviors > 0
    seq = layer.sequence_layer
    views = [seq(x * mask.unsqueeze(-1), mask)]
    for k in (1, 2, 3):
        mk = behaviors == k
        views.append(seq(x * mk.unsqueeze(-1), mk))
    mixed = torch.cat(views, -1) @ layer.mixer.weight.t() + layer.mixer.bias
    expected = layer.norm(views[0] + mixed) * mask.unsqueeze(-1)
    got = layer(x, behaviors, mask)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(layer(x, behaviors, mask, last_only=True), expected[:, -1], atol=1e-5)
    w = torch.randn_like(expected)
    g_expected = torch.autograd.grad((expected * w).sum(), [x, layer.mixer.weight])
    g_got = torch.autograd.grad((layer(x, behaviors, mask) * w).sum(), [x, layer.mixer.weight])
    for a, b in zip(g_expected, g_got):
        assert torch.allclose(a, b, atol=1e-5)


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


# ------------------------------------------- the causal filter (an option, not in the paper)

def kernel_by_hand(kern, length):
    """CausalKernel by loops: phi(t) = sin / cos(omega_j t), omega_j = pi 512^(-j / (J-1)),
    k[t, c] = (W2 relu(W1 phi(t) + b1) + b2)_c exp(-softplus(rho_c) t)."""
    J = kern.num_features // 2
    out = torch.zeros(length, kern.fc2.out_features, dtype=torch.float64)
    W1, b1 = kern.fc1.weight.double(), kern.fc1.bias.double()
    W2, b2 = kern.fc2.weight.double(), kern.fc2.bias.double()
    rate = F.softplus(kern.decay.double())
    for t in range(length):
        omega = [math.pi * 512.0 ** (-j / (J - 1)) for j in range(J)]
        phi = torch.tensor([math.sin(w * t) for w in omega] + [math.cos(w * t) for w in omega],
                           dtype=torch.float64)
        raw = W2 @ torch.relu(W1 @ phi + b1) + b2
        out[t] = raw * torch.exp(-rate * t)
    return out


def causal_layer_by_hand(layer, x, mask):
    """CausalFilterLayer by loops: y_t = sum_{s<=t} k_{t-s} * x_s per channel, eq 3's chunks
    with real weights per position, residual + LN, GELU FFN + LN, padding zeroed."""
    B, L, d = x.shape
    x = (x * mask.unsqueeze(-1)).double()
    k = kernel_by_hand(layer.kernel, L)
    mlp = layer.fusion
    c = mlp.block
    out = torch.zeros(B, L, d, dtype=torch.float64)
    for b in range(B):
        for t in range(L):
            y = sum(k[t - s] * x[b, s] for s in range(t + 1))
            z = torch.zeros(d, dtype=torch.float64)
            for n in range(mlp.num_blocks):
                blk = slice(n * c, (n + 1) * c)
                h = torch.relu(y[blk] @ mlp.w1[n].double() + mlp.b1[n, 0].double())
                z[blk] = h @ mlp.w2[n].double() + mlp.b2[n, 0].double()
            h = F.layer_norm(x[b, t] + z, (d,), layer.norm1.weight.double(),
                             layer.norm1.bias.double())
            ffn = layer.ffn.fc2.weight.double() @ F.gelu(
                layer.ffn.fc1.weight.double() @ h + layer.ffn.fc1.bias.double()) \
                + layer.ffn.fc2.bias.double()
            out[b, t] = F.layer_norm(h + ffn, (d,), layer.norm2.weight.double(),
                                     layer.norm2.bias.double()) * mask[b, t]
    return out.float()


def test_causal_kernel_by_hand():
    from mbgraph_seq.nn.filter import CausalKernel
    torch.manual_seed(11)
    kern = CausalKernel(6, num_features=8)
    with torch.no_grad():
        torch.testing.assert_close(kern(9).double(), kernel_by_hand(kern, 9), atol=1e-5,
                                   rtol=1e-5)
        # the kernel of a longer sequence starts with the shorter one's: nothing depends on L
        torch.testing.assert_close(kern(20)[:9], kern(9))
    with pytest.raises(ValueError, match='even'):
        CausalKernel(6, num_features=7)


def test_causal_convolution_by_toeplitz_equals_fft(monkeypatch):
    """Short sequences convolve by Toeplitz products, long ones by FFT: the same values and
    gradients, and position t never reads a later one."""
    import mbgraph_seq.nn.filter as filt
    torch.manual_seed(8)
    x = torch.randn(3, 9, 4, requires_grad=True)
    k = torch.randn(9, 4, requires_grad=True)
    loops = torch.stack([sum(k[t - s] * x[:, s] for s in range(t + 1)) for t in range(9)], 1)
    direct = filt.causal_convolution(x, k)
    g_direct = torch.autograd.grad(direct.square().sum(), [x, k])
    monkeypatch.setattr(filt, 'DFT_MATMUL_MAX_LENGTH', 4)
    by_fft = filt.causal_convolution(x, k)
    g_fft = torch.autograd.grad(by_fft.square().sum(), [x, k])
    assert torch.allclose(direct, loops, atol=1e-5) and torch.allclose(by_fft, loops, atol=1e-5)
    for a, b in zip(g_direct, g_fft):
        assert torch.allclose(a, b, atol=1e-4)


def test_causal_filter_layer_by_hand():
    from mbgraph_seq.nn.filter import CausalFilterLayer
    torch.manual_seed(12)
    layer = CausalFilterLayer(8, num_blocks=2, dropout=0.0, num_features=6).eval()
    x = torch.randn(2, 7, 8)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, :3] = False                                           # left padding
    with torch.no_grad():
        expected = causal_layer_by_hand(layer, x, mask)
        torch.testing.assert_close(layer(x, mask), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(layer(x, mask, last_only=True), layer(x, mask)[:, -1])


def test_causal_filter_is_causal_and_its_size_is_independent_of_length():
    from mbgraph_seq.nn.filter import CausalFilterLayer
    torch.manual_seed(13)
    layer = CausalFilterLayer(8, num_blocks=4, dropout=0.0).eval()
    x = torch.randn(3, 10, 8)
    with torch.no_grad():
        base = layer(x)
        for t in (0, 4, 9):
            later = x.clone()
            later[:, t:] = torch.randn(3, 10 - t, 8)
            out = layer(later)
            torch.testing.assert_close(out[:, :t], base[:, :t])   # earlier positions unmoved
            assert not torch.allclose(out[:, t], base[:, t])
    n = sum(p.numel() for p in layer.parameters())
    for length in (3, 57, 300):
        assert layer(torch.randn(1, length, 8)).shape == (1, length, 8)
    assert sum(p.numel() for p in layer.parameters()) == n
    short = EBM(synthetic(max_len=10), dim=8, num_blocks=4, sequence_mixer='causal_filter')
    long = EBM(synthetic(max_len=200), dim=8, num_blocks=4, sequence_mixer='causal_filter')
    def count(m):
        return sum(p.numel() for p in m.parameters())
    assert count(long.layers) == count(short.layers)


@pytest.mark.parametrize('slots', [0, 3])
def test_causal_ebm_reads_no_later_event(slots):
    """EBM(sequence_mixer='causal_filter').encode(all_positions=True): every layer, the
    behavior views and mixer included, leaves the output at a position unmoved by what comes
    after it (with DPCPL's prompt slots too); its last position is the user vector."""
    ds = synthetic()
    torch.manual_seed(14)
    model = EBM(ds, dim=8, num_layers=2, num_blocks=2, dropout=0.0, prompt_slots=slots,
                sequence_mixer='causal_filter').eval()
    assert model.causal and model.train_layout is None
    assert all(hasattr(layer, 'causal_filter') for layer in model.layers)
    batch = hand_batch([[3, 9, 4, 17, 25, 6], [0, 0, 11, 2, 30, 8]],
                       [[1, 2, 3, 1, 1, 3], [0, 0, 1, 3, 1, 3]])
    with torch.no_grad():
        h = model.encode(batch, all_positions=True)
        assert h.shape == (2, 6, 8)
        torch.testing.assert_close(h[:, -1], model.encode(batch))
        changed = hand_batch([[3, 9, 4, 1, 2, 5], [0, 0, 11, 7, 7, 7]],
                             [[1, 2, 3, 3, 3, 2], [0, 0, 1, 2, 2, 2]])
        h2 = model.encode(changed, all_positions=True)
        torch.testing.assert_close(h2[:, :3], h[:, :3])
        assert not torch.allclose(h2[:, 3], h[:, 3])
    with pytest.raises(ValueError, match='causal'):
        EBM(ds, dim=8, num_blocks=2).encode(batch, all_positions=True)


def test_causal_ebm_eq4_at_every_position_by_hand_and_trains():
    ds = synthetic()
    torch.manual_seed(15)
    model = EBM(ds, dim=16, num_layers=2, num_blocks=4, dropout=0.0,
                sequence_mixer='causal_filter').eval()
    src = ds.train_source(batch_size=8, num_negatives=3, prefixes=model.train_layout)
    batch = next(iter(src.batches(0)))
    assert int((batch.pos > 0).sum()) > len(batch)                # several targets per row
    with torch.no_grad():
        loss, parts = model.loss(batch)
        h = model.encode(batch, all_positions=True)
    E, Bt = model.item_weight().detach(), model.behavior_weight_table().detach()
    item_terms, beh_terms = [], []
    for r in range(len(batch)):
        for t in range(batch.max_len):
            p, bp = batch.pos[r, t], batch.pos_behaviors[r, t]
            if p == 0:
                continue
            for n in batch.neg[r, t]:
                item_terms.append(-torch.log(torch.sigmoid(h[r, t] @ E[p] - h[r, t] @ E[n])))
            for b in range(1, 4):
                if b != bp:
                    beh_terms.append(-torch.log(torch.sigmoid(h[r, t] @ Bt[bp]
                                                              - h[r, t] @ Bt[b])))
    item_term, beh_term = torch.stack(item_terms).mean(), torch.stack(beh_terms).mean()
    assert math.isclose(parts['item'], float(item_term), rel_tol=1e-5)
    assert math.isclose(parts['behavior'], float(beh_term), rel_tol=1e-5)
    torch.testing.assert_close(loss, item_term + beh_term)
    # trains end to end on whole sequences
    model = EBM(ds, dim=16, num_layers=1, num_blocks=2, dropout=0.0,
                sequence_mixer='causal_filter')
    src = ds.train_source(batch_size=64, num_negatives=2, seed=0, prefixes=model.train_layout)
    trainer = Trainer(model, src, None, epochs=3, lr=1e-2, progress=False, seed=0)
    trainer.fit()
    assert trainer.history[-1]['loss'] < trainer.history[0]['loss'] * 0.95, trainer.history
    model.prepare_eval('test')
    assert model.score(ds.split_pairs('test')[0][:3]).shape == (3, ds.num_items)


def test_dpcpl_tunes_prompts_on_a_causal_backbone():
    ds = synthetic()
    torch.manual_seed(16)
    model = DPCPL(ds, dim=8, num_layers=2, num_blocks=2, dropout=0.0, prompt_dim=4,
                  num_factors=2, num_tokens=2, sequence_mixer='causal_filter')
    assert model.backbone.causal and not model.causal     # the prompts read the whole history
    src = ds.train_source(batch_size=16, num_negatives=2, prefixes=model.train_layout,
                          target_only=model.target_only)
    loss, _ = model.loss(next(iter(src.batches(0))))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    model.prepare_eval('test')
    assert model.score(ds.split_pairs('test')[0][:2]).shape == (2, ds.num_items)


def test_linear_eq3_mixes_positions_only_by_a_fixed_hilbert_kernel():
    """The fact behind CausalFilterLayer's docstring: a channel map shared by all frequency
    tokens is position-wise for its real part and a fixed two-sided kernel for its imaginary
    part (multiplying the spectrum by i), so eq 3 learns position mixing only through sigma."""
    x = torch.zeros(1, 8, 1)
    x[0, 3, 0] = 1.0
    def spectral(w):
        return torch.fft.irfft(w * torch.fft.rfft(x, dim=1, norm='ortho'), n=8, dim=1,
                               norm='ortho').flatten()
    torch.testing.assert_close(spectral(2.0), 2.0 * x.flatten())        # real: position-wise
    hilbert = spectral(1j)
    assert hilbert[3].abs() < 1e-6 and hilbert[2] > 0.5 and hilbert[4] < -0.5  # both sides
