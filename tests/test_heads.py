"""Multi-task heads: every equation against a dense computation written out by hand."""
import math

import pytest
import torch

from mbgraph.data import make_multiplex
from mbgraph.data.adjacency import BehaviorAdjacency
from mbgraph.data.datasets import synthetic
from mbgraph.data.sampling import BPRSampler, UniquePairSampler
from mbgraph.models.composed import MultiBehaviorModel
from mbgraph.nn.encoders.base import BehaviorEmbeddings, MultiBehaviorEncoder
from mbgraph.nn.heads import (
    DFMEHead,
    MESIHead,
    MMoEHead,
    PLEHead,
    PMEHead,
    SharedBottomHead,
    StackedMLP,
)
from mbgraph.training import Trainer

BEHAVIORS = ['view', 'cart', 'buy']
# the pairs of the `tiny` fixture (tests/conftest.py), written out again
TINY = {'view': [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (2, 0)],
        'cart': [(0, 1), (1, 2), (2, 3)],
        'buy': [(0, 1), (2, 3)]}


def random_emb(num_users=3, num_items=4, dim=3, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    users = torch.randn(3, num_users, dim, generator=g).requires_grad_(requires_grad)
    items = torch.randn(3, num_items, dim, generator=g).requires_grad_(requires_grad)
    return BehaviorEmbeddings(list(BEHAVIORS), users, items)


def set_params(module, seed=1, scale=0.5):
    """Overwrite every parameter with seeded values (known weights, nonzero biases)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))


def relu(x):
    return torch.clamp(x, min=0)


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


# ---------------------------------------------------------------------- building blocks
def test_stacked_mlp_is_g_separate_mlps():
    mlp = StackedMLP(3, [4, 5, 2])
    set_params(mlp)
    x = torch.randn(3, 6, 4)
    w0, w1 = mlp.weights
    b0, b1 = mlp.biases
    for g in range(3):
        expected = relu(x[g] @ w0[g] + b0[g]) @ w1[g] + b1[g]
        assert torch.allclose(mlp(x)[g], expected, atol=1e-6)
        assert torch.allclose(mlp(x[g], group=g), expected, atol=1e-6)
        shared = relu(x[0] @ w0[g] + b0[g]) @ w1[g] + b1[g]
        assert torch.allclose(mlp(x[0], shared=True)[g], shared, atol=1e-6)
    with pytest.raises(ValueError, match='expects 4 input features'):
        mlp(torch.randn(2, 5))
    with pytest.raises(ValueError, match='has 3 groups but the input has 2'):
        mlp(torch.randn(2, 6, 4))


# ---------------------------------------------------------------------- classical MTL heads
def mixed(emb, head, users, items):
    w = torch.softmax(head.mixture.logits, 0)
    return (sum(w[k] * emb.users[k][users] for k in range(3)),
            sum(w[k] * emb.items[k][items] for k in range(3)))


def test_shared_bottom_by_hand():
    emb = random_emb()
    head = SharedBottomHead(3, 3, bottom_channels=4, tower_channels=2)
    set_params(head)
    users, items = torch.tensor([0, 2]), torch.tensor([3, 1])
    (wb,), (bb,) = head.bottom.weights, head.bottom.biases
    t0, t1 = head.towers.weights
    c0, c1 = head.towers.biases
    for k, b in enumerate(BEHAVIORS):
        u, v = mixed(emb, head, users, items)
        h = relu((u * v) @ wb[0] + bb[0])
        expected = (relu(h @ t0[k] + c0[k]) @ t1[k] + c1[k]).squeeze(-1)
        assert torch.allclose(head(emb, users, items, b), expected, atol=1e-6)
    assert head(emb, users, torch.tensor([[0, 1, 2], [3, 3, 0]]), 'buy').shape == (2, 3)


def test_mmoe_by_hand():
    emb = random_emb()
    head = MMoEHead(3, 3, num_experts=2, expert_channels=4, tower_channels=2, pair='concat')
    set_params(head)
    users, items = torch.tensor([1, 2, 0]), torch.tensor([0, 1, 3])
    (we,), (be,) = head.experts.weights, head.experts.biases
    (wg,), (bg,) = head.gates.weights, head.gates.biases
    t0, t1 = head.towers.weights
    c0, c1 = head.towers.biases
    u, v = mixed(emb, head, users, items)
    x = torch.cat([u, v], dim=1)                                  # pair='concat'
    for k, b in enumerate(BEHAVIORS):
        got = head(emb, users, items, b)
        for n in range(3):
            gate = softmax((x[n] @ wg[k] + bg[k]).tolist())
            mix = sum(gate[e] * relu(x[n] @ we[e] + be[e]) for e in range(2))
            expected = relu(mix @ t0[k] + c0[k]) @ t1[k] + c1[k]
            assert got[n].item() == pytest.approx(expected.item(), abs=1e-5)


def test_ple_two_levels_by_hand():
    emb = random_emb()
    head = PLEHead(3, 3, num_specific=2, num_shared=1, num_levels=2, expert_channels=4,
                   tower_channels=2)
    set_params(head)
    users, items = torch.tensor([0, 1]), torch.tensor([2, 2])
    u, v = mixed(emb, head, users, items)
    x = u * v

    def expert(mlp, e, inp):
        return relu(inp @ mlp.weights[0][e] + mlp.biases[0][e])

    def gate(mlp, g, inp):
        return softmax((inp @ mlp.weights[0][g] + mlp.biases[0][g]).tolist())

    for n in range(2):
        tasks, shared = [x[n]] * 3, x[n]
        for level in head.levels:
            spec = [[expert(level.specific, t * 2 + s, tasks[t]) for s in range(2)]
                    for t in range(3)]
            sh = [expert(level.shared, 0, shared)]
            new_tasks = []
            for t in range(3):
                g = gate(level.task_gates, t, tasks[t])
                new_tasks.append(sum(w * e for w, e in zip(g, spec[t] + sh)))
            if level.shared_gate is not None:
                g = gate(level.shared_gate, 0, shared)
                shared = sum(w * e for w, e in zip(g, spec[0] + spec[1] + spec[2] + sh))
            tasks = new_tasks
        for k, b in enumerate(BEHAVIORS):
            t0, t1 = head.towers.weights
            c0, c1 = head.towers.biases
            expected = relu(tasks[k] @ t0[k] + c0[k]) @ t1[k] + c1[k]
            assert head(emb, users, items, b)[n].item() == pytest.approx(expected.item(),
                                                                         abs=1e-5)


def test_mesi_decoupled_inputs_by_hand():
    emb = random_emb()
    head = MESIHead(3, 3, expert_channels=4, tower_channels=2)
    set_params(head)
    users, items = torch.tensor([2, 0]), torch.tensor([0, 3])
    (we,), (be,) = head.experts.weights, head.experts.biases
    (wg,), (bg,) = head.gates.weights, head.gates.biases
    t0, t1 = head.towers.weights
    c0, c1 = head.towers.biases
    for k, b in enumerate(BEHAVIORS):
        got = head(emb, users, items, b)
        for n, (uu, ii) in enumerate(zip(users.tolist(), items.tolist())):
            x = [emb.users[j][uu] * emb.items[j][ii] for j in range(3)]   # behavior j's own
            g = softmax((x[k] @ wg[k] + bg[k]).tolist())
            mix = sum(g[j] * relu(x[j] @ we[j] + be[j]) for j in range(3))
            expected = relu(mix @ t0[k] + c0[k]) @ t1[k] + c1[k]
            assert got[n].item() == pytest.approx(expected.item(), abs=1e-5)


# ---------------------------------------------------------------------- PME (PKEF 4.3)
def test_pme_projection_eq16_by_hand():
    head = PMEHead(3, 3)
    zu_j, zv_j = torch.tensor([1., 2., 0.]), torch.tensor([1., 1., 1.])
    zu_k, zv_k = torch.tensor([1., 0., 1.]), torch.tensor([1., 1., 1.])
    # q^{k'} = [1, 2, 0], q^k = [1, 0, 1]: q^{k'}.q^k = 1, |q^k|^2 = 2
    shared, unique = head.project(zu_j, zv_j, zu_k, zv_k)
    assert torch.allclose(shared, torch.tensor([0.5, 0.0, 0.5]))
    assert torch.allclose(unique, torch.tensor([0.5, 2.0, -0.5]))
    assert (unique * torch.tensor([1., 0., 1.])).sum().abs() < 1e-6   # orthogonal to q^k
    head = PMEHead(3, 3, proj_scale=0.01)
    shared, unique = head.project(zu_j, zv_j, zu_k, zv_k)
    assert torch.allclose(shared, torch.tensor([0.005, 0.0, 0.005]))
    assert torch.allclose(unique, torch.tensor([0.005, 0.02, -0.005]))
    # the code's reading: users and items projected separately
    head = PMEHead(3, 3, projection='factorized')
    zv_j, zv_k = torch.tensor([0., 1., 1.]), torch.tensor([0., 0., 2.])
    # users: coefficient 1/2 -> shared [.5, 0, .5], unique [.5, 2, -.5]
    # items: coefficient 2/4 -> shared [0, 0, 1], unique [0, 1, 0]
    shared, unique = head.project(zu_j, zv_j, zu_k, zv_k)
    assert torch.allclose(shared, torch.tensor([0.0, 0.0, 0.5]))
    assert torch.allclose(unique, torch.tensor([0.0, 2.0, 0.0]))


@pytest.mark.parametrize('gate_input,tower,per_task', [('concat', 'sum', False),
                                                        ('expert', 'linear', True)])
def test_pme_aggregation_eq17_by_hand(gate_input, tower, per_task):
    emb = random_emb(seed=3)
    head = PMEHead(3, 3, gate_input=gate_input, tower=tower, gate_per_task=per_task,
                   proj_scale=0.3)
    set_params(head, seed=4)
    users, items = torch.tensor([0, 1, 2, 2]), torch.tensor([3, 0, 1, 2])
    (wg,), (bg,) = head.gate.weights, head.gate.biases
    for k, b in enumerate(BEHAVIORS):
        got = head(emb, users, items, b)
        for n, (uu, ii) in enumerate(zip(users.tolist(), items.tolist())):
            z_u = [emb.users[j][uu] for j in range(3)]
            z_v = [emb.items[j][ii] for j in range(3)]
            q = [z_u[j] * z_v[j] for j in range(3)]                         # eq 15
            targets = []
            for j in range(3):
                if j == k:
                    targets.append(q[k])
                else:                                                       # eq 16, shared part
                    c = float(q[j] @ q[k]) / float(q[k] @ q[k])
                    targets.append(0.3 * c * q[k])
            gate_x = torch.cat([z_u[k], z_v[k]]) if gate_input == 'concat' else q[k]
            grp = k if per_task else 0
            g = softmax((gate_x @ wg[grp] + bg[grp]).tolist())            # eq 17
            agg = sum(g[j] * targets[j] for j in range(3))
            w = head.tower_weight[k].detach() if tower == "linear" else torch.ones(3)
            assert got[n].item() == pytest.approx(float(agg @ w), abs=1e-5)


def test_pme_unique_and_parallel_losses_by_hand():
    emb = random_emb(seed=5)
    par = random_emb(seed=6)
    emb = BehaviorEmbeddings(emb.behaviors, emb.users, emb.items, {'parallel': par})
    lambdas = {'view': 0.0, 'cart': 0.25, 'buy': 0.75}
    head = PMEHead(3, 3, lambdas=lambdas)
    batch = {'cart': torch.tensor([[0, 1], [1, 2], [3, 0]]),
             'buy': torch.tensor([[2], [3], [1]]),
             'unique': {('view', 'cart'): torch.tensor([[0, 2], [0, 0], [2, 3]]),
                        ('view', 'buy'): torch.tensor([[1], [2], [0]]),
                        ('buy', 'view'): torch.zeros(3, 0, dtype=torch.long)}}

    def uni_score(kp, k, uu, ii):
        q_j = emb.users[kp][uu] * emb.items[kp][ii]
        q_k = emb.users[k][uu] * emb.items[k][ii]
        return float((q_j - float(q_j @ q_k) / float(q_k @ q_k) * q_k).sum())

    def bpr(pairs):
        return sum(-math.log(1 / (1 + math.exp(-(p - n)))) for p, n in pairs) / len(pairs)

    expected_uni = 0.0
    for (kp, k), t in batch['unique'].items():
        if t.size(1) == 0:
            continue
        kp_i, k_i = BEHAVIORS.index(kp), BEHAVIORS.index(k)
        expected_uni += lambdas[k] * bpr([(uni_score(kp_i, k_i, u, s), uni_score(kp_i, k_i, u, n))
                                          for u, s, n in t.t().tolist()])
    expected_par = 0.0
    for b in ('cart', 'buy'):
        k = BEHAVIORS.index(b)
        expected_par += lambdas[b] * bpr([
            (float(par.users[k][u] @ par.items[k][s]), float(par.users[k][u] @ par.items[k][n]))
            for u, s, n in batch[b].t().tolist()])
    terms = head.loss_terms(emb, batch)
    assert terms['unique'].item() == pytest.approx(expected_uni, rel=1e-5)
    assert terms['parallel'].item() == pytest.approx(expected_par, rel=1e-5)
    # switched off, or no parallel stream: no term
    assert PMEHead(3, 3, unique_loss=False, parallel_loss=False).loss_terms(emb, batch) == {}
    plain = BehaviorEmbeddings(emb.behaviors, emb.users, emb.items)
    assert set(PMEHead(3, 3).loss_terms(plain, batch)) == {'unique'}
    # without lambdas: the model's, once handed over, else 1 each
    head = PMEHead(3, 3)
    assert head.lambda_of('view') == 1.0
    head.set_default_lambdas(lambdas)
    assert head.lambda_of('view') == 0.0 and head.lambda_of('buy') == 0.75


def test_pme_factorized_unique_score_is_inner_product():
    emb = random_emb(seed=7)
    head = PMEHead(3, 3, projection='factorized')
    users, items = torch.tensor([0, 2]), torch.tensor([1, 3])
    got = head.unique_scores(emb, users, items, 'view', 'buy')
    for n, (uu, ii) in enumerate(zip(users.tolist(), items.tolist())):
        zu, zuk = emb.users[0][uu], emb.users[2][uu]
        zv, zvk = emb.items[0][ii], emb.items[2][ii]
        uu_ = zu - float(zu @ zuk) / float(zuk @ zuk) * zuk
        vv_ = zv - float(zv @ zvk) / float(zvk @ zvk) * zvk
        assert got[n].item() == pytest.approx(float(uu_ @ vv_), abs=1e-5)


# ---------------------------------------------------------------------- unique pairs (eq 20)
def admissible(data_pairs, kp, k):
    """T_{k',k} by hand: positives and, per user, the admissible negatives."""
    a, b = set(data_pairs[kp]), set(data_pairs[k])
    positives = a - b
    return positives, (lambda u, t: (u, t) not in b or (u, t) in a)


def test_unique_pair_sampler_on_tiny(tiny):
    sampler = UniquePairSampler(tiny, ['cart', 'buy'], batch_size=4, num_samples=8, seed=2,
                                unique_batch_size=16)
    # k in the sampled behaviors, k' any other; (buy, cart) and (view... ) listed by hand:
    # view\cart = {(0,0),(1,1),(2,0)}, buy\cart = {}, view\buy = {(0,0),(1,1),(1,2),(2,0)},
    # cart\buy = {(1,2)}
    assert sampler.pairs == [('view', 'cart'), ('view', 'buy'), ('cart', 'buy')]
    assert len(sampler) == 2
    bpr = BPRSampler(tiny, ['cart', 'buy'], batch_size=4, num_samples=8, seed=2)
    for batch, plain in zip(sampler.batches(0), bpr.batches(0)):
        assert all(torch.equal(batch[b], plain[b]) for b in ('cart', 'buy'))
        assert set(batch['unique']) == set(sampler.pairs)
        for (kp, k), t in batch['unique'].items():
            assert t.shape == (3, 16)
            positives, ok = admissible(TINY, kp, k)
            for u, s, n in t.t().tolist():
                assert (u, s) in positives and ok(u, n)


def test_unique_pair_negatives_are_rejected_by_hand():
    # user 0: view {0, 2}, cart {1, 2}; T_{cart,view}: s = 1 (cart, not view);
    # t in O-_view u (cart & view) = {1, 3} u {2}: item 0 is never a negative
    data = make_multiplex(num_users=1, num_items=4, behaviors=['view', 'cart'],
                          edges={'view': torch.tensor([[0, 0], [0, 2]]),
                                 'cart': torch.tensor([[0, 0], [1, 2]])})
    sampler = UniquePairSampler(data, ['view'], batch_size=2, num_samples=2, seed=0,
                                pairs=[('cart', 'view')], unique_batch_size=400)
    (batch,) = list(sampler.batches(0))
    t = batch['unique'][('cart', 'view')]
    assert set(t[1].tolist()) == {1}
    assert set(t[2].tolist()) == {1, 2, 3}
    # sharded: the two ranks' slices make the global batch
    r0 = next(sampler.batches(0, rank=0, world_size=2))['unique'][('cart', 'view')]
    r1 = next(sampler.batches(0, rank=1, world_size=2))['unique'][('cart', 'view')]
    assert torch.equal(torch.stack([r0, r1], dim=2).reshape(3, -1), t)
    same = make_multiplex(num_users=1, num_items=3, behaviors=['view', 'cart'],
                          edges={'view': torch.tensor([[0], [1]]),
                                 'cart': torch.tensor([[0], [1]])})
    with pytest.raises(ValueError, match="no training pair of 'view' without 'cart'"):
        UniquePairSampler(same, pairs=[('view', 'cart')])
    with pytest.raises(ValueError, match='must be two different behaviors'):
        UniquePairSampler(data, pairs=[('cart', 'cart')])


# ---------------------------------------------------------------------- DFME (COPF 4.3)
def dense_left_plus_identity(pairs, num_users=3, num_items=4):
    n = num_users + num_items
    a = torch.zeros(n, n)
    for u, i in pairs:
        a[u, num_users + i] = a[num_users + i, u] = 1.0
    deg = a.sum(1)
    inv = torch.where(deg > 0, 1.0 / deg, torch.zeros_like(deg))
    return inv[:, None] * a + torch.eye(n)


@pytest.mark.parametrize('fit_graph', ['other', 'task'])
def test_dfme_fitting_experts_eq10_12_by_hand(tiny, fit_graph):
    emb = random_emb(seed=8)
    head = DFMEHead(3, 3, alpha=0.3, beta=0.7, num_layers=2, fit_graph=fit_graph,
                    output_scale=0.5)
    set_params(head, seed=9)
    out = head.precompute(emb, BehaviorAdjacency(tiny))
    fit_u, fit_v = (t.detach() for t in out.extras['dfme'])
    x = [torch.cat([emb.users[k], emb.items[k]]) for k in range(3)]
    r0 = head.behavior_emb.detach()
    w1 = head.layer_weight[0].detach()
    for k in range(3):
        assert torch.equal(fit_u[k, k], emb.users[k]) and torch.equal(fit_v[k, k], emb.items[k])
        for j in range(3):
            if j == k:
                continue
            g = j if fit_graph == 'other' else k       # eq 10: the other behavior's graph
            a_hat = dense_left_plus_identity(TINY[BEHAVIORS[g]])
            h0 = (0.3 * x[k] + 0.7 * x[j]) / 2
            h1 = a_hat @ (h0 * r0[g])                   # eq 11, layer 1
            h2 = a_hat @ (h1 * (r0[g] @ w1))            # eq 11, r^1 = r^0 W^1
            expected = 0.5 * (h0 + h1 + h2)
            assert torch.allclose(fit_u[k, j], expected[:3], atol=1e-5)
            assert torch.allclose(fit_v[k, j], expected[3:], atol=1e-5)
    # forward / gate / tower (eq 12-15) from the fitted embeddings, by hand
    users, items = torch.tensor([0, 2, 1]), torch.tensor([1, 3, 2])
    (wg,), (bg,) = head.gate.weights, head.gate.biases
    for k, b in enumerate(BEHAVIORS):
        got = head(out, users, items, b)
        for n, (uu, ii) in enumerate(zip(users.tolist(), items.tolist())):
            g = softmax((torch.cat([emb.users[k][uu], emb.items[k][ii]]) @ wg[0]
                         + bg[0]).tolist())                                        # eq 13
            o = sum(g[j] * fit_u[k, j][uu] * fit_v[k, j][ii] for j in range(3))   # eq 12, 14
            assert got[n].item() == pytest.approx(float(o.mean()), abs=1e-6)      # eq 15


def test_dfme_ablation_switches(tiny):
    emb = random_emb(seed=10)
    adj = BehaviorAdjacency(tiny)
    for kw in ({'forward_fit': False}, {'fitting': False}):
        head = DFMEHead(3, 3, **kw)
        fit_u, fit_v = head.precompute(emb, adj).extras['dfme']
        for k in range(3):      # w/o for., w/o fit.: every task sees the plain embeddings
            assert torch.equal(fit_u[k], emb.users) and torch.equal(fit_v[k], emb.items)
    assert DFMEHead(3, 3).stop_gradient_mask(0) == [False, False, True]
    assert DFMEHead(3, 3).stop_gradient_mask(2) == [False, False, False]
    assert DFMEHead(3, 3, backward_fit=False).stop_gradient_mask(0) == [False] * 3
    assert DFMEHead(3, 3, fitting=False).stop_gradient_mask(1) == [False] * 3
    assert DFMEHead(3, 3, forward_fit=False).stop_gradient_mask(1) == [False, False, True]
    assert DFMEHead(3, 3, all_sg=True).stop_gradient_mask(2) == [True, True, False]
    with pytest.raises(ValueError, match='all_sg=True replaces the stop-gradient'):
        DFMEHead(3, 3, all_sg=True, backward_fit=False)
    batch = {'buy': torch.tensor([[0], [1], [2]])}
    assert DFMEHead(3, 3, contrastive=False).loss_terms(emb, batch) == {}
    with pytest.raises(ValueError, match=r"needs the fitted embeddings of precompute"):
        DFMEHead(3, 3)(emb, torch.tensor([0]), torch.tensor([0]), 'buy')


@pytest.mark.parametrize('negatives,cosine,norm', [('all', False, 'batch'),
                                                   ('batch', False, 'batch'),
                                                   ('all', True, 'total')])
def test_dfme_contrastive_eq8_by_hand(negatives, cosine, norm):
    emb = random_emb(num_users=5, num_items=6, seed=11)
    head = DFMEHead(3, 3, tau=0.5, gamma=0.7, negatives=negatives, cosine=cosine, cl_norm=norm)
    batch = {'cart': torch.tensor([[4], [4], [4]]),
             'buy': torch.tensor([[0, 3, 0], [1, 5, 2], [4, 2, 4]])}
    anchors_u, anchors_i = [0, 3], [1, 2, 4, 5]          # target triples' users / items

    def phi(a, b):
        if cosine:
            return float(a @ b) / (float(a.norm()) * float(b.norm()))
        return float(a @ b)

    def side(table, anchors, k, count):
        pool = anchors if negatives == 'batch' else range(count)
        total = 0.0
        for a in anchors:
            t = table[2][a]
            num = phi(t, table[k][a]) / 0.5
            den = math.log(sum(math.exp(phi(t, table[k][o]) / 0.5) for o in pool))
            total += den - num
        return total / (len(anchors) if norm == 'batch' else count)

    expected = 0.7 * sum(side(emb.users, anchors_u, k, 5) + side(emb.items, anchors_i, k, 6)
                         for k in range(2))
    got = head.loss_terms(emb, batch)['contrastive']
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize('fit_graph', ['other', 'task'])
def test_dfme_stop_gradient_eq14(tiny, fit_graph):
    adj = BehaviorAdjacency(tiny)
    users, items = torch.tensor([0, 1, 2]), torch.tensor([[1, 0], [2, 3], [3, 1]])

    def grads(task, **kw):
        emb = random_emb(seed=12, requires_grad=True)
        head = DFMEHead(3, 3, alpha=0.5, beta=0.5, fit_graph=fit_graph, **kw)
        set_params(head, seed=13)
        head(head.precompute(emb, adj), users, items, task).sum().backward()
        return emb.users.grad, emb.items.grad, head.behavior_emb.grad

    for aux in ('view', 'cart'):
        gu, gi, gr = grads(aux)                               # eq 14: sg on the target's path
        assert gu[2].abs().sum() == 0 and gi[2].abs().sum() == 0
        if fit_graph == 'other':                              # r^{buy} only feeds that path
            assert gr[2].abs().sum() == 0
        gu, gi, gr = grads(aux, backward_fit=False)           # w/o back.: it flows
        assert gu[2].abs().sum() > 0 and gi[2].abs().sum() > 0
        gu, gi, gr = grads(aux, fitting=False)
        assert gu[2].abs().sum() > 0
    # the target task itself is not cut ...
    gu, gi, _ = grads('buy')
    assert gu[0].abs().sum() > 0 and gu[1].abs().sum() > 0
    # ... unless all sg.: then no task's loss leaves its own behavior
    for k, task in enumerate(BEHAVIORS):
        gu, gi, gr = grads(task, all_sg=True)
        others = [j for j in range(3) if j != k]
        assert gu[others].abs().sum() == 0 and gi[others].abs().sum() == 0
        assert gu[k].abs().sum() > 0


def test_dfme_gate_starts_uniform_whatever_the_scale(tiny):
    # COGCN's target embeddings are ~250 times the initial ones: a Xavier gate on them is a
    # hard, random choice per pair; the default zero-initialised gate starts at g^k = 1/K
    emb = random_emb(seed=16)
    big = BehaviorEmbeddings(emb.behaviors, 100 * emb.users, 100 * emb.items)
    users, items = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 3, 0, 2])
    head = DFMEHead(3, 3)
    assert all(w.abs().sum() == 0 for w in head.gate.weights)
    out = head.precompute(big, BehaviorAdjacency(tiny))
    fit_u, fit_v = (t.detach() for t in out.extras['dfme'])
    for k, b in enumerate(BEHAVIORS):
        g = head.gate_weights(big.users[k][users], big.items[k][items], k)
        assert torch.allclose(g, torch.full_like(g, 1 / 3))
        # every expert, the task's own included, keeps its 1/K share of the score
        expected = (fit_u[k][:, users] * fit_v[k][:, items]).sum(0).mean(-1) / 3
        assert torch.allclose(head(out, users, items, b), expected, rtol=1e-5)
    torch.manual_seed(0)
    xavier = DFMEHead(3, 3, gate_init='xavier')
    g = xavier.gate_weights(big.users[2][users], big.items[2][items], 2)
    assert g.max(-1).values.min() > 0.9                  # saturated: one expert per pair


def test_dfme_copf_defaults_at_initialisation():
    # the regression: on COGCN's embeddings the old defaults (Xavier gate, inner-product
    # contrastive term averaged next to the BPR mean) saturated the target gate and gave the
    # contrastive term tens of times BPR's gradient on the initial embeddings (the new: ~1/50)
    from mbgraph.losses import bpr_loss
    from mbgraph.models import build_model
    data = synthetic(num_users=300, num_items=200, seed=0)
    batch = next(BPRSampler(data, batch_size=256, seed=0).batches(0))

    def at_init(**kw):
        torch.manual_seed(0)
        model = build_model('copf', data, embedding_dim=16, reading='paper', **kw)
        emb = model.embeddings()
        bpr = sum(model.lambdas[b] * bpr_loss(*model.head(
            emb, t[0], t[1:].t(), b).unbind(1)) for b, t in batch.items())
        cl = model.head.loss_terms(emb, batch)['contrastive']
        params = [model.user_emb.weight, model.item_emb.weight]

        def norm(loss):
            return torch.cat([g.flatten() for g in torch.autograd.grad(
                loss, params, retain_graph=True)]).norm()
        users, items = batch['buy'][0], batch['buy'][1]
        gate = model.head.gate_weights(emb.users[2][users], emb.items[2][items], 2)
        return float(norm(cl) / norm(bpr)), gate.detach()

    ratio, gate = at_init()
    assert ratio < 0.2
    assert torch.allclose(gate, torch.full_like(gate, 1 / 3))
    old_ratio, old_gate = at_init(**{'head.cosine': False, 'head.cl_norm': 'batch',
                                     'head.gate_init': 'xavier'})
    assert old_ratio > 10
    assert old_gate.max(-1).values.mean() > 0.8


@pytest.mark.parametrize('target_in_batch', [True, False])
def test_dfme_contrastive_weighed_as_eq16_17(target_in_batch):
    # eq 16 sums BPR over the triples and eq 8 averages over the anchors: next to the model's
    # BPR mean over the batch's B triples (per behavior), eq 17's term is gamma / B times the mean
    emb = random_emb(num_users=5, num_items=6, seed=17)
    if target_in_batch:
        batch = {'cart': torch.tensor([[4], [4], [4]]),
                 'buy': torch.tensor([[0, 3, 0], [1, 5, 2], [4, 2, 4]])}
        b = 3
    else:       # lambda_K = 0: the other behaviors' triples
        batch = {'view': torch.tensor([[0, 1], [2, 3], [4, 5]]),
                 'cart': torch.tensor([[2, 3], [1, 0], [5, 5]])}
        b = 2
    head = DFMEHead(3, 3, gamma=0.7)
    assert head.cosine and head.cl_norm == 'triples'
    got = head.loss_terms(emb, batch)['contrastive']
    mean = DFMEHead(3, 3, gamma=0.7, cosine=True, cl_norm='batch').loss_terms(emb, batch)
    assert got.item() == pytest.approx(mean['contrastive'].item() / b, rel=1e-6)


def test_dfme_expert_order_own_first_by_hand(tiny):
    # the code stacks the task's own expert first: the shared gate's output 0 always weighs it
    emb = random_emb(seed=18)
    head = DFMEHead(3, 3, expert_order='own_first')
    set_params(head, seed=19)
    out = head.precompute(emb, BehaviorAdjacency(tiny))
    fit_u, fit_v = (t.detach() for t in out.extras['dfme'])
    (wg,), (bg,) = head.gate.weights, head.gate.biases
    users, items = torch.tensor([0, 2, 1]), torch.tensor([1, 3, 2])
    outputs = {0: [0, 1, 2], 1: [1, 0, 2], 2: [1, 2, 0]}    # behavior j -> gate output
    assert DFMEHead(3, 3).gate_outputs(1) == [0, 1, 2]      # eq 13-14: output j, behavior j
    for k, b in enumerate(BEHAVIORS):
        assert head.gate_outputs(k) == outputs[k]
        got = head(out, users, items, b)
        for n, (uu, ii) in enumerate(zip(users.tolist(), items.tolist())):
            s = softmax((torch.cat([emb.users[k][uu], emb.items[k][ii]]) @ wg[0]
                         + bg[0]).tolist())
            o = sum(s[outputs[k][j]] * fit_u[k, j][uu] * fit_v[k, j][ii] for j in range(3))
            assert got[n].item() == pytest.approx(float(o.mean()), abs=1e-6)


def test_dfme_normalized_gate_input():
    emb = random_emb(seed=20)
    head = DFMEHead(3, 3, gate_input='normalized')
    set_params(head, seed=21)
    (wg,), (bg,) = head.gate.weights, head.gate.biases
    users, items = torch.tensor([0, 2, 1]), torch.tensor([1, 3, 2])
    for k in range(3):
        eu, ev = emb.users[k][users], emb.items[k][items]
        g = head.gate_weights(eu, ev, k)
        x = torch.cat([eu / eu.norm(dim=-1, keepdim=True), ev / ev.norm(dim=-1, keepdim=True)],
                      dim=-1)
        assert torch.allclose(g, (x @ wg[0] + bg[0]).softmax(-1), atol=1e-6)
        assert torch.allclose(head.gate_weights(50 * eu, 50 * ev, k), g, atol=1e-6)


def test_dfme_new_options_checked_and_shown():
    for kw, msg in (({'cl_norm': 'pairs'}, "unknown cl_norm 'pairs'"),
                    ({'fit_step': 'tf'}, "unknown fit_step 'tf'"),
                    ({'tower': 'max'}, "unknown tower 'max'"),
                    ({'cl_anchors': 'all'}, "unknown cl_anchors 'all'"),
                    ({'gate_init': 'ones'}, "unknown gate_init 'ones'"),
                    ({'gate_input': 'raw'}, "unknown gate_input 'raw'"),
                    ({'expert_order': 'task'}, "unknown expert_order 'task'")):
        with pytest.raises(ValueError, match=msg):
            DFMEHead(3, 3, **kw)
    text = repr(DFMEHead(3, 3))
    for part in ("cl_norm='triples'", 'cosine=True', "gate_init='zeros'",
                 "gate_input='embeddings'", "expert_order='behavior'"):
        assert part in text


@pytest.mark.parametrize('aggregation', ['none', 'sum', 'linear', 'vanilla', 'projection'])
def test_dfme_table4_aggregations_by_hand(tiny, aggregation):
    """COPF table 4: o^k = mean(e^k + sum_{j != k} f_kj(e^k, e^j)), written out per pair."""
    emb = random_emb(seed=30)
    head = DFMEHead(3, 3, aggregation=aggregation, score_scale=2.0)
    set_params(head, seed=31)
    out = head.precompute(emb, BehaviorAdjacency(tiny))
    assert 'dfme' not in out.extras                       # no fitting experts
    users, items = torch.tensor([0, 2, 1, 2]), torch.tensor([1, 3, 0, 2])
    for k, b in enumerate(BEHAVIORS):
        got = head(out, users, items, b)
        for n, (u, i) in enumerate(zip(users.tolist(), items.tolist())):
            e = [[emb.users[j][u][c].item() * emb.items[j][i][c].item() for c in range(3)]
                 for j in range(3)]
            total = list(e[k])
            for j in range(3):
                if j == k:
                    continue
                p = j if j < k else j - 1
                if aggregation == 'none':
                    f = [0.0] * 3
                elif aggregation == 'sum':
                    f = e[j]
                elif aggregation == 'linear':
                    w = head.fusion_weight[k, p]
                    f = [sum(w[a][c].item() * e[j][c] for c in range(3)) for a in range(3)]
                elif aggregation == 'projection':
                    coef = sum(x * y for x, y in zip(e[j], e[k])) / sum(x * x for x in e[k])
                    f = [coef * x for x in e[k]]
                else:
                    feats = [e[k], e[j], [x - y for x, y in zip(e[k], e[j])],
                             [x * y for x, y in zip(e[k], e[j])]]
                    flat = [x for feat in feats for x in feat]
                    w, bias = head.fusion_weight[k, p], head.fusion_bias[k, p]
                    g = softmax([sum(w[r][c].item() * flat[c] for c in range(12))
                                 + bias[r].item() for r in range(4)])
                    f = [sum(g[r] * feats[r][c] for r in range(4)) for c in range(3)]
                total = [x + y for x, y in zip(total, f)]
            want = 2.0 * sum(total) / 3
            assert got[n].item() == pytest.approx(want, rel=1e-5, abs=1e-6), (b, n)


def test_dfme_table4_aggregations_parameters_and_errors():
    counts = {a: sum(p.numel() for p in DFMEHead(4, 3, aggregation=a).parameters())
              for a in ('gated', 'none', 'sum', 'linear', 'vanilla', 'projection')}
    assert counts['none'] == counts['sum'] == counts['projection'] == 0
    assert counts['linear'] == 3 * 2 * 4 * 4                  # W_kj per (task, other behavior)
    assert counts['vanilla'] == 3 * 2 * (4 * 16 + 4)          # PKEF eq 13's gate per (k, j)
    assert counts['gated'] == 3 * 4 + 8 * 3 + 3               # r^{k',0}, W_g, b_g
    assert "aggregation='vanilla'" in repr(DFMEHead(3, 3, aggregation='vanilla'))
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        DFMEHead(3, 3, aggregation='mean')
    for kw in ({'all_sg': True}, {'gate_per_task': True}):
        with pytest.raises(ValueError, match="aggregation='sum' replaces"):
            DFMEHead(3, 3, aggregation='sum', **kw)
    # the contrastive term of eq 8 stays in every scheme
    emb = random_emb(seed=32, requires_grad=True)
    batch = {'buy': torch.tensor([[0, 2], [1, 3], [0, 0]])}
    assert set(DFMEHead(3, 3, aggregation='none').loss_terms(emb, batch)) == {'contrastive'}


# ---------------------------------------------------------------------- every head
HEADS = {
    'shared_bottom': lambda d, k: SharedBottomHead(d, k, bottom_channels=8, tower_channels=4),
    'mmoe': lambda d, k: MMoEHead(d, k, num_experts=3, expert_channels=8, tower_channels=4),
    'ple': lambda d, k: PLEHead(d, k, num_levels=2, expert_channels=8, tower_channels=4),
    'mesi': lambda d, k: MESIHead(d, k, expert_channels=8, tower_channels=4),
    'pme': lambda d, k: PMEHead(d, k),
    'pme_code': lambda d, k: PMEHead(d, k, projection='factorized', gate_input='expert',
                                     tower='linear', gate_per_task=True, proj_scale=0.01,
                                     score_scale=300.0),
    'pme_code_concat': lambda d, k: PMEHead(d, k, projection='factorized', gate_input='concat',
                                            gate_per_task=True, proj_scale=0.01,
                                            expert_order='own_first', score_scale=300.0),
    'dfme': lambda d, k: DFMEHead(d, k),
    'dfme_code': lambda d, k: DFMEHead(d, k, fit_graph='task', output_scale=0.1, cosine=True,
                                       gate_per_task=True, score_scale=300.0),
    'dfme_own_first': lambda d, k: DFMEHead(d, k, expert_order='own_first', cl_norm='total',
                                            gate_init='xavier'),
    'dfme_normalized': lambda d, k: DFMEHead(d, k, gate_input='normalized', gate_per_task=True,
                                             expert_order='own_first'),
    'dfme_none': lambda d, k: DFMEHead(d, k, aggregation='none'),
    'dfme_sum': lambda d, k: DFMEHead(d, k, aggregation='sum', score_scale=3.0),
    'dfme_linear': lambda d, k: DFMEHead(d, k, aggregation='linear'),
    'dfme_vanilla': lambda d, k: DFMEHead(d, k, aggregation='vanilla'),
    'dfme_projection': lambda d, k: DFMEHead(d, k, aggregation='projection'),
}


@pytest.mark.parametrize('name', sorted(HEADS))
def test_score_all_equals_forward(tiny, name):
    head = HEADS[name](3, 3)
    set_params(head, seed=14, scale=0.3)
    head.chunk_size = 3                                       # 4 items: two chunks
    emb = head.precompute(random_emb(seed=15), BehaviorAdjacency(tiny))
    users = torch.tensor([2, 0, 1, 0])
    for b in BEHAVIORS:
        full = head.score_all(emb, users, b)
        assert full.shape == (4, 4)
        pairwise = head(emb, users, torch.arange(4).expand(4, -1), b)
        assert torch.allclose(full, pairwise, rtol=1e-5, atol=1e-6)
        one = head(emb, users, torch.tensor([3, 1, 0, 2]), b)
        assert torch.allclose(one, full[torch.arange(4), torch.tensor([3, 1, 0, 2])],
                              rtol=1e-5, atol=1e-6)


def test_dfme_score_all_when_gate_weights_underflow(tiny):
    """Gate logits hundreds apart: e^{a_j} e^{b_j} underflows for every j of some pairs, so
    the factorised product cannot divide; score_all falls back to the pairwise softmax and
    still equals the forward pass."""
    head = DFMEHead(3, 3, gate_init='xavier')
    set_params(head, seed=14, scale=0.3)
    with torch.no_grad():
        for w in head.gate.weights:
            w.mul_(4000.0)
    emb = head.precompute(random_emb(seed=15), BehaviorAdjacency(tiny))
    users = torch.tensor([2, 0, 1, 0])
    user_part = emb.users[2][users] @ head.gate.weights[0][0][:3]
    item_part = emb.items[2] @ head.gate.weights[0][0][3:]
    ea = (user_part - user_part.amax(1, keepdim=True)).exp()
    eb = (item_part - item_part.amax(1, keepdim=True)).exp()
    assert ((ea @ eb.t()) < 1e-19).any()                 # the fallback is what this tests
    full = head.score_all(emb, users, 'buy')
    assert torch.isfinite(full).all()
    pairwise = head(emb, users, torch.arange(4).expand(4, -1), 'buy')
    assert torch.allclose(full, pairwise, rtol=1e-5, atol=1e-6)


def test_pme_factorised_score_all_when_gate_weights_underflow(tiny):
    """PME with the code's factorised projection and concatenated gate input: score_all's
    two-product shortcut must give way to the pairwise softmax when the gate's weights
    underflow, and still equal the forward pass."""
    head = HEADS['pme_code_concat'](3, 3)
    set_params(head, seed=14, scale=0.3)
    with torch.no_grad():
        for w in head.gate.weights:
            w.mul_(4000.0)
    emb = random_emb(seed=15)
    users = torch.tensor([2, 0, 1, 0])
    full = head.score_all(emb, users, 'buy')
    assert torch.isfinite(full).all()
    pairwise = head(emb, users, torch.arange(4).expand(4, -1), 'buy')
    assert torch.allclose(full, pairwise, rtol=1e-5, atol=1e-4)


def test_head_errors_name_the_problem():
    emb = random_emb(dim=3)
    with pytest.raises(ValueError, match=r'built for 3 behaviors of dimension 4'):
        MMoEHead(4, 3)(emb, torch.tensor([0]), torch.tensor([0]), 'buy')
    with pytest.raises(ValueError, match="unknown projection 'proj'"):
        PMEHead(3, 3, projection='proj')
    with pytest.raises(ValueError, match="unknown pair representation 'sum'"):
        SharedBottomHead(3, 3, pair='sum')
    with pytest.raises(ValueError, match="unknown behavior 'fav'"):
        PMEHead(3, 3)(emb, torch.tensor([0]), torch.tensor([0]), 'fav')
    assert "projection='pair'" in repr(PMEHead(3, 3))
    assert "fit_graph='other'" in repr(DFMEHead(3, 3))


# ---------------------------------------------------------------------- training
class _PerBehaviorLightGCN(MultiBehaviorEncoder):
    """A tiny encoder for the tests: one LightGCN (mean of 2 layers) per behavior."""

    def __init__(self, behaviors, num_users, num_layers=2):
        super().__init__()
        self.behaviors, self.num_users, self.num_layers = list(behaviors), num_users, num_layers

    def forward(self, ego, adjacency):
        outs = []
        for b in self.behaviors:
            op = adjacency.operator(b, norm='symmetric')
            h, total = ego, ego
            for _ in range(self.num_layers):
                h = op @ h
                total = total + h
            outs.append(total / (self.num_layers + 1))
        x = torch.stack(outs)
        return BehaviorEmbeddings(self.behaviors, x[:, :self.num_users], x[:, self.num_users:])


@pytest.mark.parametrize('name', ['shared_bottom', 'mmoe', 'ple', 'mesi', 'pme', 'dfme',
                                  'dfme_vanilla'])
def test_head_trains_in_multi_behavior_model(name):
    data = synthetic(num_users=300, num_items=200)
    torch.manual_seed(0)
    d = 16
    model = MultiBehaviorModel(data, _PerBehaviorLightGCN(BEHAVIORS, 300), HEADS[name](d, 3),
                               embedding_dim=d, reg=1e-4)
    if name.startswith('pme'):
        sampler = UniquePairSampler(data, model.train_behaviors, batch_size=256, seed=0,
                                    unique_batch_size=128)
    else:
        sampler = BPRSampler(data, model.train_behaviors, batch_size=256, seed=0)
    trainer = Trainer(model, sampler, epochs=2, lr=0.01, progress=False, seed=0)
    trainer.fit()
    first, second = trainer.history
    assert second['loss'] < first['loss']
    if name == 'pme':
        assert 'unique' in first
    if name.startswith('dfme'):
        assert 'contrastive' in first
    model.eval()
    scores = model.score(torch.tensor([0, 5]))
    assert scores.shape == (2, 200) and torch.isfinite(scores).all()
