"""Cascade (MB-CGCN, CRGCN), PKF (PKEF eq 8-14) and COGCN (COPF eq 5-7, table 3) encoders,
each checked against dense matrices built by hand from the listed interaction pairs."""
import pytest
import torch

from mbgraph.data import make_multiplex
from mbgraph.data.adjacency import BehaviorAdjacency
from mbgraph.data.datasets import synthetic
from mbgraph.data.sampling import BPRSampler
from mbgraph.models.composed import MultiBehaviorModel
from mbgraph.nn.encoders import (
    BehaviorEmbeddings,
    CascadeEncoder,
    COGCNEncoder,
    CRGCNEncoder,
    MBCGCNEncoder,
    PerBehaviorLightGCN,
    PKFEncoder,
)
from mbgraph.nn.heads.bilinear import BilinearHead
from mbgraph.training import Trainer

DT = torch.float64
TOL = dict(atol=1e-9, rtol=1e-9)
# most tests below build the cascades through the old CascadeEncoder(mode=...), on purpose;
# test_cascade_factory_builds_the_split_encoders checks that it warns
pytestmark = pytest.mark.filterwarnings(r'ignore:CascadeEncoder\(mode=:DeprecationWarning')

# the `tiny` fixture of conftest.py, written out again: 3 users, 4 items
TINY = {'view': [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (2, 0)],
        'cart': [(0, 1), (1, 2), (2, 3)],
        'buy': [(0, 1), (2, 3)]}
# a 2-behavior graph: 2 users, 3 items; item 2 has no interaction at all, user 1 no buy
TWO = {'click': [(0, 0), (0, 1), (1, 1)], 'buy': [(0, 1)]}


def graph(pairs, num_users, num_items):
    edges = {b: torch.tensor(p, dtype=torch.long).t() for b, p in pairs.items()}
    return make_multiplex(num_users, num_items, list(pairs), edges)


@pytest.fixture
def two():
    return graph(TWO, 2, 3)


CASES = {'tiny': (TINY, 3, 4), 'two': (TWO, 2, 3)}


def setup(case, d=3, seed=0):
    pairs, nu, ni = CASES[case]
    adj = BehaviorAdjacency(graph(pairs, nu, ni), dtype=DT)
    g = torch.Generator().manual_seed(seed)
    ego = torch.randn(nu + ni, d, generator=g, dtype=DT)
    mats = [dense(p, nu, ni) for p in pairs.values()]
    return adj, ego, mats, nu


# ----------------------------------------------------------------- dense helpers
def dense(pairs, num_users, num_items):
    """The (U+I) x (U+I) bipartite adjacency A_k of eq 3 / eq 8, 0/1 entries."""
    n = num_users + num_items
    a = torch.zeros(n, n, dtype=DT)
    for u, i in pairs:
        a[u, num_users + i] = a[num_users + i, u] = 1.0
    return a


def inv(deg):
    return torch.where(deg > 0, 1.0 / deg, torch.zeros_like(deg))


def left(a):                       # D^-1 A
    return inv(a.sum(1))[:, None] * a


def left_self_loop(a):             # D^-1 (A + I), D from A + I (PKEF eq 9)
    b = a + torch.eye(a.size(0), dtype=DT)
    return (1.0 / b.sum(1))[:, None] * b


def symmetric(a):                  # D^-1/2 A D^-1/2
    deg = a.sum(1)
    s = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    return s[:, None] * a * s[None, :]


def eye_like(a):
    return torch.eye(a.size(0), dtype=DT)


def run(x, m, num_layers):
    """[x, m x, m^2 x, ...]: the layers of one propagation."""
    out = [x]
    for _ in range(num_layers):
        out.append(m @ out[-1])
    return out


def assert_emb(emb, expected, nu):
    """expected: list over behaviors of [U + I, d] node tensors."""
    x = torch.stack(expected)
    assert torch.allclose(emb.users, x[:, :nu], **TOL)
    assert torch.allclose(emb.items, x[:, nu:], **TOL)


# ======================================================================= PKF
def fuse_by_hand(fusion, e_cas, e_par, weight=None, bias=None, scale=1.0, gate='concat'):
    """f(e_cas, e_par) of eq 12 / 13 / table 4, node by node."""
    out = torch.zeros_like(e_cas)
    for n in range(e_cas.size(0)):
        c, p = e_cas[n], e_par[n]
        if fusion == 'projection':                        # eq 12
            out[n] = scale * (p @ c) / (c @ c + 1e-12) * c
        elif fusion == 'vanilla':                         # eq 13
            f = [c, p, c - p, c * p]
            g = torch.cat(f) if gate == 'concat' else c
            logits = weight @ g + bias
            w = torch.exp(logits) / torch.exp(logits).sum()
            out[n] = w[0] * f[0] + w[1] * f[1] + w[2] * f[2] + w[3] * f[3]
        elif fusion == 'sum':
            out[n] = p
        elif fusion == 'linear':
            out[n] = weight @ p
    return out


def pkf_by_hand(ego, mats, layers, fusion, enc=None, scale=1.0, gate='concat', norm=None):
    norm = norm or left_self_loop
    z0, cas, par, t = ego, [], [], 0
    for a, num in zip(mats, layers):
        ah = norm(a)
        zs, ps = [z0], [ego]                              # p^{k,0} = x || y for every k
        for _ in range(num):
            e_cas, e_par = ah @ zs[-1], ah @ ps[-1]
            w = b = None
            if fusion in ('vanilla', 'linear'):
                w = enc.weight[t].detach()
                b = enc.bias[t].detach() if enc.bias is not None else None
            f = fuse_by_hand(fusion, e_cas, e_par, w, b, scale, gate)
            zs.append(e_cas + zs[-1] + f)                 # eq 9 + fusion
            ps.append(e_par + ps[-1])                     # eq 11
            t += 1
        cas.append(sum(zs))                               # eq 14
        par.append(sum(ps))
        z0 = zs[-1] + zs[0]                               # eq 10
    return cas, par


@pytest.mark.parametrize('case,layers', [('tiny', (4, 1, 1)), ('tiny', (1, 0, 2)),
                                         ('two', (2, 1))])
@pytest.mark.parametrize('fusion', ['projection', 'vanilla', 'sum', 'linear', 'none'])
def test_pkf_by_hand(case, layers, fusion):
    adj, ego, mats, nu = setup(case, d=3)
    enc = PKFEncoder(layers, fusion=fusion, embedding_dim=3).to(DT)
    if enc.weight is not None:   # known, non-trivial weights, read back below
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            enc.weight.copy_(torch.randn(enc.weight.shape, generator=g, dtype=DT) * 0.5)
            if enc.bias is not None:
                enc.bias.copy_(torch.randn(enc.bias.shape, generator=g, dtype=DT))
    emb = enc(ego, adj)
    cas, par = pkf_by_hand(ego, mats, layers, fusion, enc)
    assert_emb(emb, cas, nu)
    assert isinstance(emb.extras['parallel'], BehaviorEmbeddings)
    assert_emb(emb.extras['parallel'], par, nu)
    assert emb.behaviors == list(CASES[case][0])


def test_pkf_vanilla_cascade_gate_and_projection_scale():
    adj, ego, mats, nu = setup('tiny', d=2)
    enc = PKFEncoder((2, 1, 1), fusion='vanilla', embedding_dim=2, gate_input='cascade').to(DT)
    assert enc.weight.shape == (4, 4, 2)          # W_(k,l) in R^{4 x d}, sum L_k = 4
    with torch.no_grad():
        enc.bias.copy_(torch.tensor([[0.5, -1.0, 0.0, 2.0]] * 4, dtype=DT))
    cas, _ = pkf_by_hand(ego, mats, (2, 1, 1), 'vanilla', enc, gate='cascade')
    assert_emb(enc(ego, adj), cas, nu)
    # the authors' 0.3 factor on eq 12's collinear component
    enc = PKFEncoder((2, 1, 1), projection_scale=0.3)
    cas, _ = pkf_by_hand(ego, mats, (2, 1, 1), 'projection', scale=0.3)
    assert_emb(enc(ego, adj), cas, nu)
    # the code's left normalisation without self loops
    enc = PKFEncoder((2, 1, 1), norm='left')
    cas, _ = pkf_by_hand(ego, mats, (2, 1, 1), 'projection', norm=left)
    assert_emb(enc(ego, adj), cas, nu)


def test_pkf_layer_counts_and_streams():
    adj, ego, mats, nu = setup('tiny', d=3)
    emb = PKFEncoder((0, 2, 1))(ego, adj)
    # L_1 = 0: z^{1,*} = z^{1,0} = p^{1,*} = the initial embeddings
    assert torch.allclose(emb.users[0], ego[:nu], **TOL)
    assert torch.allclose(emb.extras['parallel'].items[0], ego[nu:], **TOL)
    # the parallel stream does not depend on the fusion; cascade 'none' is eq 9-10 alone
    none = PKFEncoder((0, 2, 1), fusion='none')(ego, adj)
    assert torch.allclose(none.extras['parallel'].users, emb.extras['parallel'].users, **TOL)
    a = [left_self_loop(m) for m in mats]
    z2 = run(ego + ego, eye_like(a[1]) + a[1], 2)   # z^{2,0} = z^{1,0} + z^{1,0} (eq 10)
    assert torch.allclose(none.users[1], sum(z2)[:nu], **TOL)
    # an int is broadcast to every behavior
    assert PKFEncoder(2).layers_for(['a', 'b', 'c', 'd']) == (2, 2, 2, 2)


# ======================================================================= Cascade
def test_mbcgcn_transform_by_hand():
    adj, ego, mats, nu = setup('tiny', d=3)
    enc = CascadeEncoder((2, 1, 3), mode='mbcgcn', embedding_dim=3).to(DT)
    w = enc.weight.detach()                     # [K - 1, (user, item), d, d]
    assert w.shape == (2, 2, 3, 3)
    x, outs = ego, []
    for k, (a, num) in enumerate(zip(mats, (2, 1, 3))):
        hs = run(x, symmetric(a), num)
        out = sum(hs) / (num + 1)               # LightGCN layer mean
        outs.append(out)
        if k < 2:                               # e_u W_u, e_v W_v (row vectors)
            x = torch.cat([out[:nu] @ w[k, 0], out[nu:] @ w[k, 1]])
    outs[-1] = outs[0] + outs[1] + outs[2]      # MB-CGCN predicts with sum_k e^{k,*}
    assert_emb(enc(ego, adj), outs, nu)


@pytest.mark.parametrize('case', ['tiny', 'two'])
def test_mbcgcn_residual_link_by_hand(case):
    adj, ego, mats, nu = setup(case, d=4)
    layers = (3, 2, 1)[:len(mats)]
    enc = CascadeEncoder(layers, link='residual', combine='sum', aggregate_target=False)
    assert enc.weight is None
    x, outs = ego, []
    for a, num in zip(mats, layers):
        hs = run(x, symmetric(a), num)
        outs.append(sum(hs))
        x = hs[-1] + hs[0]                      # PKEF eq 10
    assert_emb(enc(ego, adj), outs, nu)


@pytest.mark.parametrize('case', ['tiny', 'two'])
@pytest.mark.parametrize('normalize', [False, True])
def test_crgcn_by_hand(case, normalize):
    adj, ego, mats, nu = setup(case, d=3)
    layers = (1, 3, 2)[:len(mats)]
    enc = CascadeEncoder(layers, mode='crgcn', normalize=normalize)
    x, outs = ego, []
    for a, num in zip(mats, layers):
        last = run(x, symmetric(a), num)[-1]
        if normalize:
            norms = last.pow(2).sum(1, keepdim=True).sqrt()
            last = last / torch.clamp(norms, min=1e-12)
        x = x + last                            # residual: input + propagation
        outs.append(x)
    assert_emb(enc(ego, adj), outs, nu)


# ======================================================================= COGCN
def cogcn_by_hand(variant, ego, mats, layers, cumulative='paper'):
    """COPF eq 5-7 and the variants of table 3 with dense matrices."""
    K = len(mats)
    m = [left(a) + eye_like(a) for a in mats]     # D_k^-1 A_k + I

    def operator(k):
        if variant in ('H', 'C'):                  # current behavior only
            return m[k]
        upto = K - 1 if variant in ('A', 'F') else k
        if cumulative == 'paper':                  # sum_{k' <= upto} (D^-1 A_k' + I)
            return sum(m[:upto + 1])
        s = sum(mats[:upto + 1])                   # raw sum of the graphs, one D
        return left(s) + eye_like(s)

    outs, lasts = [], []
    for k in range(K):
        if k == 0 or variant in ('P', 'F'):
            x = ego
        elif variant in ('B', 'C'):
            x = lasts[k - 1] + ego
        else:
            x = ego + sum(lasts[:k])               # eq 6
        hs = run(x, operator(k), layers[k])        # eq 5
        lasts.append(hs[-1])
        outs.append(sum(hs))                       # eq 7
    if variant == 'D':
        outs = [sum(outs)] * K
    return outs


def test_cogcn_full_model_written_out(tiny):
    adj = BehaviorAdjacency(tiny, dtype=DT)
    ego = torch.randn(7, 3, generator=torch.Generator().manual_seed(3), dtype=DT)
    av, ac, ab = (dense(TINY[b], 3, 4) for b in ('view', 'cart', 'buy'))
    i = torch.eye(7, dtype=DT)
    mv, mc, mb = left(av) + i, left(ac) + i, left(ab) + i
    e1 = run(ego, mv, 2)
    e2 = run(ego + e1[-1], mv + mc, 2)
    e3 = run(ego + e1[-1] + e2[-1], mv + mc + mb, 2)
    assert_emb(COGCNEncoder(2)(ego, adj), [sum(e1), sum(e2), sum(e3)], 3)
    # the authors' union: D^-1 (A_v + A_c) + I, pairs in both behaviors weigh 2
    s2, s3 = av + ac, av + ac + ab
    assert s2.max() == 2
    u1 = run(ego, mv, 2)
    u2 = run(ego + u1[-1], left(s2) + i, 2)
    u3 = run(ego + u1[-1] + u2[-1], left(s3) + i, 2)
    assert_emb(COGCNEncoder(2, cumulative='union')(ego, adj), [sum(u1), sum(u2), sum(u3)], 3)


def test_cogcn_symmetric_union_written_out(tiny):
    """``union_norm='symmetric'``: D^-1/2 S D^-1/2 E + E over the raw sums, the first
    behavior's graph too; only with the union."""
    adj = BehaviorAdjacency(tiny, dtype=DT)
    ego = torch.randn(7, 3, generator=torch.Generator().manual_seed(4), dtype=DT)
    av, ac, ab = (dense(TINY[b], 3, 4) for b in ('view', 'cart', 'buy'))
    i = torch.eye(7, dtype=DT)

    def sym(a):
        d = a.sum(1)
        h = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
        return h[:, None] * a * h[None, :] + i

    e1 = run(ego, sym(av), 2)
    e2 = run(ego + e1[-1], sym(av + ac), 2)
    e3 = run(ego + e1[-1] + e2[-1], sym(av + ac + ab), 2)
    enc = COGCNEncoder(2, cumulative='union', union_norm='symmetric')
    assert_emb(enc(ego, adj), [sum(e1), sum(e2), sum(e3)], 3)
    assert "union_norm='symmetric'" in repr(enc)
    # the strict in-behavior variant: each behavior's own graph
    h = [run(ego, sym(av), 2)]
    h.append(run(ego + h[0][-1], sym(ac), 2))
    h.append(run(ego + h[1][-1], sym(ab), 2))
    enc = COGCNEncoder(2, variant='C', cumulative='union', union_norm='symmetric')
    assert_emb(enc(ego, adj), [sum(x) for x in h], 3)
    with pytest.raises(ValueError, match="cumulative='union'"):
        COGCNEncoder(2, union_norm='symmetric')
    with pytest.raises(ValueError, match='union_norm'):
        COGCNEncoder(2, cumulative='union', union_norm='rows')


@pytest.mark.parametrize('cumulative', ['paper', 'union'])
@pytest.mark.parametrize('variant', ['COPF', 'P', 'A', 'D', 'F', 'C', 'B', 'H'])
@pytest.mark.parametrize('case', ['tiny', 'two'])
def test_cogcn_variants_by_hand(variant, cumulative, case):
    adj, ego, mats, nu = setup(case, d=3, seed=5)
    layers = (2, 1, 3)[:len(mats)]
    enc = COGCNEncoder.variant(variant, num_layers=layers, cumulative=cumulative)
    expected = cogcn_by_hand(variant, ego, mats, layers, cumulative)
    assert_emb(enc(ego, adj), expected, nu)
    # the same through the variant= argument and the 'COPF-X' spelling
    alias = variant if variant == 'COPF' else f'copf-{variant.lower()}'
    assert_emb(COGCNEncoder(layers, cumulative=cumulative, variant=alias)(ego, adj),
               expected, nu)


def test_cogcn_variant_switches_and_differences():
    assert COGCNEncoder.variant('P').pre_behavior is False
    f = COGCNEncoder.variant('COPF-F')
    assert not f.pre_behavior and not f.in_behavior
    c = COGCNEncoder.variant('C')
    assert c.uses_strict_pre and c.uses_strict_in
    adj, ego, mats, nu = setup('tiny', d=3)
    outs = {v: COGCNEncoder.variant(v)(ego, adj).users for v in VARIANT_NAMES}
    for a in VARIANT_NAMES:  # every variant computes something different on tiny
        for b in VARIANT_NAMES:
            if a < b:
                assert not torch.allclose(outs[a], outs[b]), (a, b)
    # the coupled output of COPF-D: every behavior gets the same representation
    d_target = COGCNEncoder(variant='D', coupled_output='target')(ego, adj)
    full = COGCNEncoder()(ego, adj)
    assert torch.allclose(d_target.users[0], full.users[2], **TOL)


VARIANT_NAMES = ['COPF', 'P', 'A', 'D', 'F', 'C', 'B', 'H']


def test_per_behavior_lightgcn_by_hand():
    adj, ego, mats, nu = setup('tiny', d=3)
    enc = PerBehaviorLightGCN((1, 2, 3))
    expected = [sum(run(ego, symmetric(a), n)) / (n + 1) for a, n in zip(mats, (1, 2, 3))]
    assert_emb(enc(ego, adj), expected, nu)
    enc = PerBehaviorLightGCN(2, norm='left', combine='sum')
    expected = [sum(run(ego, left(a), 2)) for a in mats]
    assert_emb(enc(ego, adj), expected, nu)


def test_crgcn_normalizes_by_default():
    # the authors' code: g = row-wise L2 normalisation; normalize=False is the bare equation
    adj, ego, _, nu = setup('tiny', d=3)
    enc = CascadeEncoder((1, 3, 2), mode='crgcn')
    assert enc.normalize and 'normalize=True' in repr(enc)
    want = CascadeEncoder((1, 3, 2), mode='crgcn', normalize=True)(ego, adj)
    got = enc(ego, adj)
    assert torch.allclose(got.users, want.users, **TOL)
    assert torch.allclose(got.items, want.items, **TOL)
    assert not CascadeEncoder(mode='crgcn', normalize=False).normalize


def test_mbcgcn_normalize_output_and_identity_weights_by_hand():
    adj, ego, mats, nu = setup('tiny', d=3)
    enc = CascadeEncoder((2, 1, 3), embedding_dim=3, normalize_output=True,
                         weight_init='identity').to(DT)
    assert not CascadeEncoder((2, 1, 3), embedding_dim=3).normalize_output
    eye = torch.eye(3, dtype=DT)
    assert all(torch.equal(w, eye) for w in enc.weight.detach().view(-1, 3, 3))
    r = repr(enc)
    assert 'normalize_output=True' in r and "weight_init='identity'" in r
    with torch.no_grad():                        # any W: check the maths, not the init
        enc.weight.copy_(torch.randn(2, 2, 3, 3, dtype=DT))
    w = enc.weight.detach()
    x, outs = ego, []
    for k, (a, num) in enumerate(zip(mats, (2, 1, 3))):
        out = sum(run(x, symmetric(a), num)) / (num + 1)
        out = out / torch.clamp(out.pow(2).sum(1, keepdim=True).sqrt(), min=1e-12)
        outs.append(out)
        if k < 2:
            x = torch.cat([out[:nu] @ w[k, 0], out[nu:] @ w[k, 1]])
    outs[-1] = outs[0] + outs[1] + outs[2]
    got = enc(ego, adj)
    assert_emb(got, outs, nu)
    assert torch.allclose(got.users[0].norm(dim=-1), torch.ones(nu, dtype=DT), **TOL)


def test_cascade_new_option_errors():
    with pytest.raises(ValueError, match="normalize_output=True applies to mode='mbcgcn'"):
        CascadeEncoder(mode='crgcn', normalize_output=True)
    with pytest.raises(ValueError, match="unknown weight_init 'eye'"):
        CascadeEncoder(2, embedding_dim=3, num_behaviors=3, weight_init='eye')


@pytest.mark.parametrize('mode,kwargs', [('crgcn', {}),
                                         ('mbcgcn', {'normalize_output': True})])
def test_normalized_cascade_keeps_graph_signal_dominant(mode, kwargs):
    # root cause of the cascades ranking below LightGCN: unnormalised, the Xavier-scale ID
    # embedding dominates every output (the graph terms are far smaller), so BPR fits an MF
    # on the target; normalised, the propagated part carries most of the norm
    data = synthetic(num_users=300, num_items=200, seed=0)
    adj = BehaviorAdjacency(data)
    ego = torch.empty(adj.num_nodes, 16)
    torch.nn.init.xavier_uniform_(ego[:adj.num_users])
    torch.nn.init.xavier_uniform_(ego[adj.num_users:])
    extra = {'embedding_dim': 16, 'num_behaviors': 3} if mode == 'mbcgcn' else {}
    bare = {'normalize': False} if mode == 'crgcn' else {}
    torch.manual_seed(0)
    plain = CascadeEncoder(2, mode=mode, **bare, **extra)(ego, adj)
    torch.manual_seed(0)
    fixed = CascadeEncoder(2, mode=mode, **kwargs, **extra)(ego, adj)
    ego_norm = ego[:adj.num_users].norm(dim=-1).mean()
    # unnormalised: the target output is at the ID embedding's scale; normalised: several
    # times larger, i.e. made of the graph terms
    assert plain.users[-1].norm(dim=-1).mean() < 3 * ego_norm
    assert fixed.users[-1].norm(dim=-1).mean() > 3 * ego_norm


# ======================================================================= common
def all_encoders(d):
    return {
        'mbcgcn': MBCGCNEncoder((2, 1, 1), embedding_dim=d),
        'mbcgcn_residual': MBCGCNEncoder(2, link='residual'),
        'crgcn': CRGCNEncoder((2, 1, 1), normalize=True),
        'pkf_projection': PKFEncoder((4, 1, 1)),
        'pkf_vanilla': PKFEncoder((2, 1, 1), fusion='vanilla', embedding_dim=d),
        'pkf_linear': PKFEncoder((2, 1, 1), fusion='linear', embedding_dim=d),
        'pkf_sum': PKFEncoder((2, 1, 1), fusion='sum'),
        'cogcn': COGCNEncoder(2),
        'cogcn_union_c': COGCNEncoder(2, variant='C', cumulative='union'),
        'cogcn_d': COGCNEncoder(2, variant='D'),
        'per_behavior_lightgcn': PerBehaviorLightGCN(2),
    }


@pytest.mark.parametrize('name', list(all_encoders(4)))
def test_gradient_reaches_initial_embeddings(tiny, name):
    enc = all_encoders(4)[name]
    adj = BehaviorAdjacency(tiny)
    ego = torch.randn(7, 4, requires_grad=True)
    emb = enc(ego, adj)
    loss = emb.users.pow(2).sum() + emb.items.sum()
    if 'parallel' in emb.extras:
        loss = loss + emb.extras['parallel'].users.sum()
    loss.backward()
    assert ego.grad is not None and torch.isfinite(ego.grad).all()
    assert ego.grad.abs().sum() > 0
    for p in enc.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_reset_parameters_and_repr():
    enc = PKFEncoder((2, 1, 1), fusion='vanilla', embedding_dim=3)
    with torch.no_grad():
        enc.weight.zero_()
        enc.bias.fill_(1.0)
    enc.reset_parameters()
    assert enc.weight.abs().sum() > 0 and enc.bias.abs().sum() == 0
    cas = CascadeEncoder((2, 1, 1), embedding_dim=3)
    with torch.no_grad():
        cas.weight.zero_()
    cas.reset_parameters()
    assert cas.weight.abs().sum() > 0
    assert repr(PKFEncoder()) == ("PKFEncoder(num_layers=[4, 1, 1], fusion='projection', "
                                  "norm='left_self_loop', projection_scale=1.0)")
    assert "mode='crgcn'" in repr(CascadeEncoder(mode='crgcn'))
    assert "link='transform'" in repr(cas) and 'embedding_dim=3' in repr(cas)
    r = repr(COGCNEncoder.variant('H', cumulative='union'))
    assert "variant='COPF-H'" in r and 'strict_in=True' in r and "cumulative='union'" in r
    assert "coupled_output='sum'" in repr(COGCNEncoder.variant('D'))
    assert "combine='mean'" in repr(PerBehaviorLightGCN())


def test_errors(tiny, two):
    adj = BehaviorAdjacency(tiny)
    with pytest.raises(ValueError, match="unknown fusion 'proj'"):
        PKFEncoder(fusion='proj')
    with pytest.raises(ValueError, match=r"fusion='vanilla' learns W_\(k,l\): pass embedding_dim"):
        PKFEncoder(fusion='vanilla')
    with pytest.raises(ValueError, match='per behavior and layer'):
        PKFEncoder(2, fusion='linear', embedding_dim=3)
    with pytest.raises(ValueError, match=r'built for 3 behaviors \(layer counts \[4, 1, 1\]\) '
                                         r"but the graph has 2: \['click', 'buy'\]"):
        PKFEncoder()(torch.zeros(5, 3), BehaviorAdjacency(two))
    with pytest.raises(ValueError, match=r'expects ego embeddings of shape \[num_users \+ '
                                         r'num_items = 7, d\], got \(6, 3\)'):
        COGCNEncoder()(torch.zeros(6, 3), adj)
    with pytest.raises(ValueError, match='built for embedding_dim=3, got ego embeddings of '
                                         'dimension 4'):
        PKFEncoder(fusion='linear', embedding_dim=3)(torch.zeros(7, 4), adj)
    with pytest.raises(ValueError, match='layer counts must be >= 0'):
        CascadeEncoder((1, -1, 1), link='residual')
    with pytest.raises(ValueError, match=r'2 layer counts \[1, 1\] given for num_behaviors=3'):
        COGCNEncoder((1, 1), num_behaviors=3)
    with pytest.raises(ValueError, match="unknown mode 'cgcn'"):
        CascadeEncoder(mode='cgcn')
    with pytest.raises(ValueError, match="link='transform' learns d x d matrices"):
        CascadeEncoder((1, 1, 1))
    with pytest.raises(ValueError, match='pass num_behaviors'):
        CascadeEncoder(2, embedding_dim=3)
    with pytest.raises(ValueError, match="link='residual' applies to mode='mbcgcn' only"):
        CascadeEncoder(mode='crgcn', link='residual')
    with pytest.raises(ValueError, match="normalize=True applies to mode='crgcn' only"):
        CascadeEncoder(link='residual', normalize=True)
    with pytest.raises(ValueError, match="unknown norm 'sym'"):
        PerBehaviorLightGCN(norm='sym')
    with pytest.raises(ValueError, match="unknown COGCN variant 'Z'"):
        COGCNEncoder.variant('Z')
    with pytest.raises(ValueError, match=r"variant='B' sets the constraint switches itself; "
                                         r"do not also pass \['strict_in'\]"):
        COGCNEncoder(variant='B', strict_in=True)
    with pytest.raises(ValueError, match='which pre_behavior=False removes'):
        COGCNEncoder(pre_behavior=False, strict_pre=True)
    with pytest.raises(ValueError, match='which in_behavior=False removes'):
        COGCNEncoder(in_behavior=False, strict_cascade=True)
    with pytest.raises(ValueError, match="unknown cumulative 'sum'"):
        COGCNEncoder(cumulative='sum')


# ======================================================================= training
@pytest.fixture(scope='module')
def synthetic_data():
    return synthetic(num_users=300, num_items=200, seed=0)


@pytest.mark.parametrize('name', ['mbcgcn', 'crgcn', 'pkf_vanilla', 'cogcn',
                                  'per_behavior_lightgcn'])
def test_encoder_trains_with_bilinear_head(synthetic_data, name):
    d = 16
    torch.manual_seed(0)
    model = MultiBehaviorModel(synthetic_data, all_encoders(d)[name], BilinearHead(),
                               embedding_dim=d, reg=1e-4)
    sampler = BPRSampler(synthetic_data, model.train_behaviors, batch_size=256, num_samples=768,
                         seed=0)
    trainer = Trainer(model, sampler, epochs=2, lr=0.01, progress=False, seed=0)
    trainer.fit()
    first, second = trainer.history
    assert second['loss'] < first['loss']
    model.eval()
    scores = model.score(torch.tensor([0, 7]))
    assert scores.shape == (2, 200) and torch.isfinite(scores).all()


# ======================================================================= the split cascades
@pytest.mark.parametrize('mode,kwargs,cls', [
    ('mbcgcn', {'num_layers': (2, 1, 3), 'embedding_dim': 3}, MBCGCNEncoder),
    ('mbcgcn', {'num_layers': (2, 1, 3), 'embedding_dim': 3, 'weight_init': 'normal',
                'regularize_weight': True, 'normalize_output': True, 'bias': True},
     MBCGCNEncoder),
    ('mbcgcn', {'num_layers': 2, 'link': 'residual', 'combine': 'sum',
                'aggregate_target': False}, MBCGCNEncoder),
    ('crgcn', {'num_layers': (1, 3, 2)}, CRGCNEncoder),
    ('crgcn', {'num_layers': (1, 3, 2), 'normalize': False, 'bias': True,
               'embedding_dim': 3, 'aggregate_target': True}, CRGCNEncoder),
])
def test_cascade_factory_builds_the_split_encoders(tiny, mode, kwargs, cls):
    """CascadeEncoder(mode=...) warns and returns the encoder its mode names, equal to the new
    class built directly: same parameters, state-dict keys, outputs and repr."""
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match=f'use {cls.__name__}'):
        old = CascadeEncoder(mode=mode, **kwargs)
    torch.manual_seed(0)
    new = cls(**kwargs)
    assert type(old) is cls and isinstance(new, CascadeEncoder) and new.mode == mode
    assert old.state_dict().keys() == new.state_dict().keys()
    for key, value in old.state_dict().items():
        assert torch.equal(value, new.state_dict()[key]), key
    new.load_state_dict(old.state_dict())              # an old checkpoint loads
    adj = BehaviorAdjacency(tiny)
    ego = torch.randn(adj.num_nodes, 3)
    a, b = old(ego, adj), new(ego, adj)
    assert torch.equal(a.users, b.users) and torch.equal(a.items, b.items)
    assert repr(old) == repr(new) and f"mode={mode!r}" in repr(new)
    assert len(old.regularized_parameters()) == len(new.regularized_parameters()) == \
        int(bool(kwargs.get('regularize_weight')))


def test_split_cascades_take_only_their_own_arguments():
    with pytest.raises(TypeError, match='link'):
        CRGCNEncoder(link='residual')
    with pytest.raises(TypeError, match='normalize'):
        MBCGCNEncoder(2, link='residual', normalize=True)
    with pytest.raises(ValueError, match="unknown link 'skip'"):
        MBCGCNEncoder(2, link='skip')
    with pytest.raises(ValueError, match='bias=True learns one bias per propagation layer'):
        CRGCNEncoder(2, bias=True)
    assert CRGCNEncoder().normalize and not CRGCNEncoder().aggregate_target
    assert MBCGCNEncoder(2, embedding_dim=3, num_behaviors=3).aggregate_target
    with pytest.raises(ValueError, match='MBCGCNEncoder was built for embedding_dim=3'):
        adj = BehaviorAdjacency(graph(TINY, 3, 4))
        MBCGCNEncoder(2, embedding_dim=3, num_behaviors=3)(torch.zeros(7, 4), adj)


def _plain_heterodata(reverse=False):
    """A HeteroData as a PyG user builds it: no ``behaviors`` attribute, user -> item edge
    types in behavior order, optionally PyG's reverse edges."""
    from torch_geometric.data import HeteroData
    g = HeteroData()
    g['user'].num_nodes, g['item'].num_nodes = 3, 4
    g['user', 'view', 'item'].edge_index = torch.tensor([[0, 0, 1, 2, 2], [0, 1, 1, 2, 3]])
    if reverse:
        g['item', 'rev_view', 'user'].edge_index = torch.tensor([[0, 1], [0, 0]])
    g['user', 'buy', 'item'].edge_index = torch.tensor([[0, 2], [1, 3]])
    return g


@pytest.mark.parametrize('make', [
    lambda: COGCNEncoder(num_layers=1, cumulative='union'),
    lambda: PKFEncoder(num_layers=(2, 1), embedding_dim=4),
    lambda: MBCGCNEncoder(num_layers=(1, 2), embedding_dim=4),
    lambda: CRGCNEncoder(num_layers=1),
    lambda: PerBehaviorLightGCN(num_layers=2),
], ids=['cogcn', 'pkf', 'mbcgcn', 'crgcn', 'lightgcn'])
def test_encoders_take_pyg_inputs(make):
    """``encoder(ego, data)`` and ``encoder(x_dict, edge_index_dict)`` compute what
    ``encoder(ego, BehaviorAdjacency(...))`` computes, on a HeteroData without mbgraph's
    ``behaviors`` attribute (its user -> item edge types in order; reverse edges skipped)."""
    torch.manual_seed(0)
    enc = make()
    g = _plain_heterodata(reverse=True)
    ego = torch.randn(7, 4)
    ref_data = make_multiplex(3, 4, ['view', 'buy'], {
        'view': g['user', 'view', 'item'].edge_index, 'buy': g['user', 'buy', 'item'].edge_index})
    ref = enc(ego, BehaviorAdjacency(ref_data))
    from_data = enc(ego, g)
    x_dict = {'user': ego[:3], 'item': ego[3:]}
    from_dicts = enc(x_dict, g.edge_index_dict)
    by_name = enc(x_dict, {'view': g['user', 'view', 'item'].edge_index,
                           'buy': g['user', 'buy', 'item'].edge_index})
    for out in (from_data, from_dicts, by_name):
        assert out.behaviors == ['view', 'buy']
        assert torch.allclose(out.users, ref.users) and torch.allclose(out.items, ref.items)


def test_encoder_inputs_cache_the_graph_and_name_bad_inputs():
    enc = COGCNEncoder(num_layers=1)
    g = _plain_heterodata()
    ego = torch.randn(7, 4)
    _, first = enc.inputs(ego, g)
    _, again = enc.inputs(ego, g)
    assert again is first                                # built once while the edges stay
    g['user', 'buy', 'item'].edge_index = torch.tensor([[1], [0]])
    _, changed = enc.inputs(ego, g)
    assert changed is not first and changed.behaviors == ['view', 'buy']
    adj = BehaviorAdjacency(make_multiplex(3, 4, ['buy'], {'buy': torch.tensor([[0], [1]])}))
    assert enc.inputs(ego, adj)[1] is adj
    with pytest.raises(ValueError, match='pass x as'):
        enc(ego, g.edge_index_dict)
    with pytest.raises(ValueError, match="'user' and 'item'"):
        enc({'user': ego[:3]}, g)
    with pytest.raises(ValueError, match='the inputs have 2 users and 4 items, the graph 3'):
        enc({'user': ego[:2], 'item': ego[3:]}, g)
    with pytest.raises(ValueError, match='no user -> item edge type'):
        enc({'user': ego[:3], 'item': ego[3:]}, {('item', 'rev', 'user'): torch.zeros(2, 0)})


def test_dfme_precompute_takes_the_graph_as_the_encoders_do():
    """DFMEHead.precompute(emb, graph) on a plain HeteroData fits the same experts as on the
    BehaviorAdjacency of the same edges."""
    from mbgraph.nn.heads import DFMEHead
    torch.manual_seed(0)
    g = _plain_heterodata()
    ref_data = make_multiplex(3, 4, ['view', 'buy'], {
        'view': g['user', 'view', 'item'].edge_index, 'buy': g['user', 'buy', 'item'].edge_index})
    enc, head = COGCNEncoder(num_layers=1), DFMEHead(4, 2)
    emb = enc(torch.randn(7, 4), g)
    a = head.precompute(emb, BehaviorAdjacency(ref_data)).extras['dfme']
    b = head.precompute(emb, g).extras['dfme']
    for (k, j) in [(0, 1), (1, 0)]:
        assert torch.allclose(a.expert(k, j), b.expert(k, j))
