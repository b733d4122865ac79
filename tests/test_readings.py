"""The 'code' readings of COPF and PKEF against the authors' code, recomputed densely by hand.

The hand computations below are written from the formulas of the authors' TensorFlow code as
REFERENCE_NOTES records them (copf.py ``defineModel`` / ``gnn_predict`` / ``cal_cl_loss``,
PKEF_final.py ``defineModel_parallel`` / ``defineModel_cascade`` / ``pme_predict`` /
``denoise``), with dense matrices, not from mbgraph's implementation.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from mbgraph.data.adjacency import BehaviorAdjacency
from mbgraph.data.multiplex import make_multiplex
from mbgraph.data.sampling import UserBatchSampler
from mbgraph.models import COPF, PKEF
from mbgraph.models.readings import READINGS, describe, loss_weights, reading_table

U, NI, D = 4, 5, 6
BEHAVIORS = ['pv', 'cart', 'buy']
EDGES = {
    'pv': [(0, 0), (0, 1), (0, 2), (1, 1), (1, 3), (2, 0), (2, 4), (3, 2), (3, 3), (3, 4)],
    'cart': [(0, 1), (1, 3), (2, 0), (2, 4), (3, 2)],
    'buy': [(0, 1), (1, 3), (2, 4), (3, 0)],
}


def graph(name='taobao'):
    edges = {b: torch.tensor(e).t() for b, e in EDGES.items()}
    return make_multiplex(U, NI, BEHAVIORS, edges, test=torch.tensor([[0, 1], [4, 0]]),
                          name=name)


def dense(pairs):
    r = torch.zeros(U, NI, dtype=torch.float64)
    for u, i in pairs:
        r[u, i] = 1.0
    return r


def left_adjacency(r):
    """The code's ``left_adj_single`` of [[0, R], [R^T, 0]]: D^-1 A, zero rows stay zero."""
    a = torch.zeros(U + NI, U + NI, dtype=torch.float64)
    a[:U, U:], a[U:, :U] = r, r.t()
    deg = a.sum(1, keepdim=True)
    return torch.where(deg > 0, a / deg.clamp(min=1e-300), torch.zeros_like(a))


def softplus_mean(pos, neg):
    return torch.log1p(torch.exp(-(pos - neg))).mean()


def cosine(a, b):
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def assert_task_scores(model, batch, scores):
    """The model's forward scores of every task's (positive, negative) pairs equal the hand
    computation's ``scores[behavior] = (pos, neg)``."""
    emb = model.embeddings()
    for b in BEHAVIORS:
        users, pos, neg = batch[b]
        got = model.head(emb, users, torch.stack([pos, neg], 1), b)
        torch.testing.assert_close(got[:, 0], scores[b][0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got[:, 1], scores[b][1], rtol=1e-6, atol=1e-6)


def batch_for(data, seed=3):
    """One user batch of the code's sampler (all 4 users); its triples are checked below."""
    return next(iter(UserBatchSampler(data, BEHAVIORS, users_per_batch=4, max_positives=2,
                                      seed=seed).batches(1)))


# ---------------------------------------------------------------------------------- COPF
def copf_by_hand(model, batch):
    """Forward scores of every task and the loss of one step, as copf.py computes them."""
    e0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).double()
    head = model.head
    # COGCN: behavior k propagates over the left-normalised union of behaviors 1..k
    ulat, ilat, ego = [], [], e0
    for k in range(3):
        union = sum(dense(EDGES[b]) for b in BEHAVIORS[:k + 1])
        layer1 = left_adjacency(union) @ ego + ego           # E <- A_cum E + E
        out = ego + layer1                                   # layers summed
        ego = layer1 + ego                                   # next: last layer + input
        ulat.append(out[:U])
        ilat.append(out[U:])
    wg = head.gate.weights[0][0].double()                    # [2d, K], shared 'gate111'
    bg = head.gate.biases[0][0].double()
    r = head.behavior_emb.double()                           # behEmbeds
    adjs = [left_adjacency(dense(EDGES[b])) for b in BEHAVIORS]

    def predict(src, users, items):
        su, si = ulat[src][users], ilat[src][items]
        w = torch.softmax(torch.cat([su, si], -1) @ wg + bg, -1)    # [n, K]
        experts = [su * si]                                          # own expert first
        for index in range(3):
            if index == src:
                continue
            x = torch.cat([(ulat[index] * 0.1 + ulat[src] * 0.001) / 2,
                           (ilat[index] * 0.1 + ilat[src] * 0.001) / 2])
            layer1 = adjs[src] @ (x * r[src]) + x                    # A(E o r) + E
            fitted = (x + layer1) * 0.1                              # summed, x 0.1
            experts.append(fitted[:U][users] * fitted[U:][items])
        stacked = torch.stack(experts, dim=2)                        # [n, d, K]
        return (stacked @ w.unsqueeze(-1)).squeeze(-1).sum(-1) * 300

    scores, loss = {}, 0.0
    lambdas = {'pv': 2 / 6, 'cart': 2 / 6, 'buy': 2 / 6}
    for k, b in enumerate(BEHAVIORS):
        users, pos, neg = batch[b]
        p, n = predict(k, users, pos), predict(k, users, neg)
        scores[b] = (p, n)
        loss = loss + lambdas[b] * softplus_mean(p, n) * 3
    users, items = batch['buy'][0], batch['buy'][1]          # anchors: target pairs' positives
    cl = 0.0
    for k in range(2):
        pos_u = torch.exp(cosine(ulat[k][users], ulat[2][users]) / 0.1)
        ttl_u = torch.exp(F.normalize(ulat[2][users], dim=1) @ F.normalize(ulat[k], dim=1).t()
                          / 0.1).sum(1)
        pos_i = torch.exp(cosine(ilat[k][items], ilat[2][items]) / 0.1)
        ttl_i = torch.exp(F.normalize(ilat[2][items], dim=1) @ F.normalize(ilat[k], dim=1).t()
                          / 0.1).sum(1)
        cl = cl + (-torch.log(pos_u / ttl_u).sum() - torch.log(pos_i / ttl_i).sum()) / U
    reg = 1e-2 * (e0.pow(2).sum() + wg.pow(2).sum())
    return scores, loss, cl, reg


def test_copf_code_reading_first_step_by_hand():
    torch.manual_seed(0)
    data = graph()
    model = COPF(data, adjacency=BehaviorAdjacency(data, dtype=torch.float64)).double()
    with torch.no_grad():   # a gate away from zero so that every expert weighs in
        model.head.gate.biases[0].normal_()
    batch = batch_for(data)
    scores, bpr, cl, reg = copf_by_hand(model, batch)
    assert_task_scores(model, batch, scores)
    loss, parts = model.loss(batch)
    torch.testing.assert_close(parts['contrastive'], cl.detach(), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(parts['reg'], reg.detach(), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(loss, bpr + cl + reg, rtol=1e-6, atol=1e-6)
    # full ranking scores the same pairs as forward
    model.eval()
    full = model.score(torch.arange(U))
    users, pos, _ = batch['buy']
    torch.testing.assert_close(full[users, pos], scores['buy'][0].detach(), rtol=1e-6,
                               atol=1e-6)


# ---------------------------------------------------------------------------------- PKEF
def pkef_by_hand(model, batch):
    e0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).double()
    adjs = [left_adjacency(dense(EDGES[b])) for b in BEHAVIORS]
    layers = [4, 1, 1]

    def denoise(origin, target, scale):
        clear = (origin * target).sum(1, keepdim=True) * target / \
            (target.norm(dim=1, keepdim=True) ** 2 + 1e-12)
        return clear * scale, (origin - clear) * scale

    par_layers, par = [], []
    for k in range(3):                                       # defineModel_parallel
        hs = [e0]
        for _ in range(layers[k]):
            hs.append(adjs[k] @ hs[-1] + hs[-1])
        par_layers.append(hs)
        par.append(sum(hs))
    zu, zi, ego = [], [], e0
    for k in range(3):                                       # defineModel_cascade
        hs = [ego]
        for index in range(layers[k]):
            symm = adjs[k] @ hs[-1]
            sha, _ = denoise(par_layers[k][index + 1], symm, 0.3)
            hs.append(symm + hs[-1] + sha)
        ego = hs[-1] + ego
        total = sum(hs)
        zu.append(total[:U])
        zi.append(total[U:])
    head = model.head
    wg = head.gate.weights[0][0].double()
    bg = head.gate.biases[0][0].double()

    def predict(src, users, items):
        su, si = zu[src][users], zi[src][items]
        w = torch.softmax(torch.cat([su, si], -1) @ wg + bg, -1)
        experts = [su * si]
        for index in range(3):
            if index != src:
                sha_u, _ = denoise(zu[index], zu[src], 0.01)
                sha_i, _ = denoise(zi[index], zi[src], 0.01)
                experts.append(sha_u[users] * sha_i[items])
        stacked = torch.stack(experts, dim=2)
        return (stacked @ w.unsqueeze(-1)).squeeze(-1).sum(-1) * 300

    def unique(index, src, users, items):
        _, uni_u = denoise(zu[index], zu[src], 0.01)
        _, uni_i = denoise(zi[index], zi[src], 0.01)
        return (uni_u[users] * uni_i[items]).sum(-1) * 300

    lambdas = {'pv': 0.0, 'cart': 4 / 6, 'buy': 2 / 6}
    scores, loss = {}, 0.0
    for k, b in enumerate(BEHAVIORS):
        users, pos, neg = batch[b]
        scores[b] = (predict(k, users, pos), predict(k, users, neg))
        if lambdas[b] == 0:
            continue
        for (kp, kk), (uu, up, un) in batch['unique'].items():
            if kk == b:                                      # pairs in k but not in k'
                j = BEHAVIORS.index(kp)
                loss = loss + lambdas[b] * 3 * softplus_mean(unique(j, k, uu, up),
                                                             unique(j, k, uu, un))
        pu = par[k][:U]
        pi = par[k][U:]
        ps = (pu[users] * pi[pos]).sum(-1) * 300
        ns = (pu[users] * pi[neg]).sum(-1) * 300
        loss = loss + lambdas[b] * 3 * softplus_mean(ps, ns)
        loss = loss + lambdas[b] * 3 * softplus_mean(*scores[b])
    reg = 1e-2 * (e0.pow(2).sum() + wg.pow(2).sum())
    return scores, loss, reg


def test_pkef_code_reading_first_step_by_hand():
    torch.manual_seed(1)
    data = graph()
    model = PKEF(data, adjacency=BehaviorAdjacency(data, dtype=torch.float64)).double()
    with torch.no_grad():
        model.head.gate.biases[0].normal_()
    sampler = model.batch_source(data, batch_size=4)
    sampler.max_positives = 2
    batch = next(iter(sampler.batches(1)))
    assert set(batch) == {'cart', 'buy', 'unique'}           # lambda_pv = 0: not sampled
    assert set(batch['unique']) == {('buy', 'cart'), ('pv', 'buy'), ('cart', 'buy')}
    full_batch = {**batch_for(data), 'unique': batch['unique']}
    full_batch.update({b: batch[b] for b in ('cart', 'buy')})
    scores, loss_hand, reg = pkef_by_hand(model, full_batch)
    assert_task_scores(model, full_batch, scores)
    loss, parts = model.loss(batch)
    torch.testing.assert_close(parts['reg'], reg.detach(), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(loss, loss_hand + reg, rtol=1e-6, atol=1e-6)
    model.eval()
    full = model.score(torch.arange(U))
    users, pos, _ = full_batch['buy']
    torch.testing.assert_close(full[users, pos], scores['buy'][0].detach(), rtol=1e-6,
                               atol=1e-6)


# ------------------------------------------------------------------------------- sampler
def test_user_batch_sampler_counts_negatives_and_determinism():
    data = graph()
    sampler = UserBatchSampler(data, users_per_batch=3, max_positives=2, seed=5,
                               unique='code')
    batches = list(sampler.batches(1))
    assert len(batches) == len(sampler) == 2
    seen_users = torch.cat([torch.unique(torch.cat([b[k][0] for k in BEHAVIORS]))
                            for b in batches])
    assert sorted(seen_users.tolist()) == list(range(U))     # every user once an epoch
    pos_sets = {b: {tuple(p) for p in EDGES[b]} for b in BEHAVIORS}
    for batch in batches:
        for b in BEHAVIORS:
            users, pos, neg = batch[b]
            for u in users.unique().tolist():
                deg = sum(1 for uu, _ in EDGES[b] if uu == u)
                assert int((users == u).sum()) == min(2, deg)   # min(P, |N_k(u)|)
            for u, p, n in zip(users.tolist(), pos.tolist(), neg.tolist()):
                assert (u, p) in pos_sets[b] and (u, n) not in pos_sets[b]
        for (kp, k), (users, pos, neg) in batch['unique'].items():
            only = pos_sets[k] - pos_sets[kp]
            for u, p, n in zip(users.tolist(), pos.tolist(), neg.tolist()):
                assert (u, p) in only and (u, n) not in only
            for u in users.unique().tolist():
                cap = min(2, sum(1 for uu, _ in EDGES[k] if uu == u),
                          sum(1 for uu, _ in only if uu == u))
                assert int((users == u).sum()) == cap
    again = list(sampler.batches(1))
    for a, b in zip(batches, again):
        for key in BEHAVIORS:
            assert torch.equal(a[key], b[key])
    other = list(sampler.batches(2))
    assert any(not torch.equal(a['pv'], b['pv']) for a, b in zip(batches, other))
    counts = sampler.triples_per_epoch(1)
    assert counts['pv'] == sum(b['pv'].size(1) for b in batches)


def test_user_batch_sampler_shards_are_disjoint_and_complete():
    data = graph()
    sampler = UserBatchSampler(data, users_per_batch=4, max_positives=3, seed=2)
    whole = list(sampler.batches(1))
    shards = [list(sampler.batches(1, rank, 2)) for rank in range(2)]
    for i, batch in enumerate(whole):
        for b in BEHAVIORS:
            r0, r1 = shards[0][i][b], shards[1][i][b]
            assert set(r0[0].tolist()).isdisjoint(r1[0].tolist())
            joined = torch.cat([r0, r1], 1)
            key = lambda t: sorted(map(tuple, t.t().tolist()))   # noqa: E731
            assert key(joined) == key(batch[b])


def test_user_batch_sampler_users_per_epoch_and_errors():
    data = graph()
    s = UserBatchSampler(data, users_per_batch=2, users_per_epoch=3, seed=0)
    users = torch.cat([b['pv'][0] for b in s.batches(1)]).unique()
    assert users.numel() == 3 and len(s) == 2
    with pytest.raises(ValueError, match='users_per_batch'):
        UserBatchSampler(data, users_per_batch=0)
    with pytest.raises(ValueError, match='unknown behaviors'):
        UserBatchSampler(data, ['click'])
    with pytest.raises(ValueError, match='unique'):
        UserBatchSampler(data, unique='paper')


# ------------------------------------------------------------------------------ readings
@pytest.mark.parametrize('model_cls,name', [(COPF, 'copf'), (PKEF, 'pkef')])
@pytest.mark.parametrize('reading', ['code', 'paper'])
def test_reading_table_is_what_the_model_built(model_cls, name, reading):
    data = graph()
    model = model_cls(data, reading=reading)
    table = reading_table(name, reading)
    assert model.reading == reading
    for key, value in table['model'].items():
        assert getattr(model, key) == value, key
    for part, module in (('encoder', model.encoder), ('head', model.head)):
        for key, value in table[part].items():
            attr = 'layers' if key == 'num_layers' and part == 'encoder' else \
                'tower_kind' if key == 'tower' and hasattr(module, 'tower_kind') else key
            got = getattr(module, attr)
            if key == 'num_layers' and part == 'encoder':
                value = [4, 1, 1] if value == 'pkef' else [value] * 3
                got = list(got) if got is not None else [module.num_layers] * 3
            assert got == value, (part, key, got, value)
    assert model.lambdas == loss_weights(table, BEHAVIORS, 'taobao')
    assert model.batches == table['batches']
    sampler = model.batch_source(data)
    kind = type(sampler).__name__
    assert kind == ('UserBatchSampler' if table['batches']['kind'] == 'users' else
                    'UniquePairSampler' if name == 'pkef' else 'BPRSampler')


def test_reading_overrides_and_weights():
    data = graph()
    model = COPF(data, **{'head.tau': 0.2})
    assert model.head.tau == 0.2 and model.head.score_scale == 300.0
    assert loss_weights(READINGS['pkef']['code'], ['cart', 'buy'], 'taobao') == \
        {'cart': 4 / 6, 'buy': 2 / 6}
    assert loss_weights(READINGS['copf']['code'], ['view', 'buy'], 'synthetic') == \
        {'view': 0.5, 'buy': 0.5}
    assert PKEF(graph('tmall_like')).lambdas == {b: 1 / 3 for b in BEHAVIORS}
    with pytest.raises(ValueError, match='unknown reading'):
        COPF(data, reading='tf')
    assert 'score_scale=300.0' in describe('copf', 'code')


def test_paper_reading_gate_keeps_its_own_expert():
    """The paper reading must not collapse (COGCN's target embeddings are the largest): after
    training on synthetic data, the target task's gate still gives its own expert weight."""
    from mbgraph.data.datasets import synthetic
    from mbgraph.training import Trainer
    data = synthetic(num_users=400, num_items=200, seed=0)
    torch.manual_seed(0)
    model = COPF(data, reading='paper')
    Trainer(model, model.batch_source(data, seed=0), epochs=4, lr=5e-3,
            progress=False).fit()
    model.eval()
    emb = model.embeddings()
    k = 2
    users = torch.arange(200)
    items = data['user', 'buy', 'item'].edge_index[1][:200]
    gate = model.head.gate_weights(emb.users[k][users], emb.items[k][items], k)
    own = gate[:, k]
    own = own.detach()
    assert float(own.mean()) > 0.2 and float((own < 1e-3).float().mean()) < 0.1
    assert math.isfinite(float(own.mean()))


# --------------------------------------------------------------------------------- MB-CGCN
def symmetric_adjacency(r):
    """MB-CGCN's ``pre`` matrix (load_data.py ``get_adj_mat``) and CRGCN's ``gcn_norm``
    without self-loops: D^-1/2 A D^-1/2 of [[0, R], [R^T, 0]], isolated nodes zero."""
    a = torch.zeros(U + NI, U + NI, dtype=torch.float64)
    a[:U, U:], a[U:, :U] = r, r.t()
    deg = a.sum(1)
    d = torch.where(deg > 0, deg.clamp(min=1e-300).pow(-0.5), torch.zeros_like(deg))
    return d[:, None] * a * d[None, :]


def mbcgcn_by_hand(model, batch):
    """Scores and loss of one step as MBCGCN.py computes them: three LightGCN blocks (view 1
    layer, cart 5, buy 3; mean over the layers, input included), the view and cart outputs
    times W_u / W_i feed the next block, the prediction sums the three blocks' outputs; BPR
    on buy only, ``mean(softplus(-(pos - neg)))``; L2 ``decay * (l2_loss(u_pre) +
    l2_loss(pos_pre) + l2_loss(neg_pre) + l2_loss(W_u1) + l2_loss(W_u2) + l2_loss(W_i1) +
    l2_loss(W_i2)) / batch_size`` with ``l2_loss(x) = sum(x ** 2) / 2`` and ``*_pre`` the
    first block's input tables (user_embedding3 / item_embedding3)."""
    eu, ei = model.user_emb.weight.double(), model.item_emb.weight.double()
    w = model.encoder.weight.double()                       # [2 transitions, (u, i), d, d]
    outs, x = [], torch.cat([eu, ei])
    for k, (b, layers) in enumerate(zip(BEHAVIORS, (1, 5, 3))):
        a = symmetric_adjacency(dense(EDGES[b]))
        hs = [x]
        for _ in range(layers):
            hs.append(a @ hs[-1])
        out = torch.stack(hs, 1).mean(1)
        outs.append(out)
        if k < 2:
            x = torch.cat([out[:U] @ w[k, 0], out[U:] @ w[k, 1]])
    final = outs[0] + outs[1] + outs[2]
    users, pos, neg = batch['buy']
    u, p, n = final[:U][users], final[U:][pos], final[U:][neg]
    pos_s, neg_s = (u * p).sum(-1), (u * n).sum(-1)
    mf = torch.log1p(torch.exp(-(pos_s - neg_s))).mean()
    l2 = lambda t: (t ** 2).sum() / 2                       # noqa: E731  tf.nn.l2_loss
    reg = (l2(eu[users]) + l2(ei[pos]) + l2(ei[neg]) + l2(w[0, 0]) + l2(w[1, 0])
           + l2(w[0, 1]) + l2(w[1, 1])) / users.numel()
    return (pos_s, neg_s), mf, 1e-4 * reg


def test_mbcgcn_code_reading_first_step_by_hand():
    from mbgraph.models import MBCGCN
    torch.manual_seed(2)
    data = graph()
    model = MBCGCN(data, embedding_dim=D,
                   adjacency=BehaviorAdjacency(data, dtype=torch.float64)).double()
    # the code's initialisation: normal, std 0.01, tables and transforms alike
    assert model.init == 'normal' and model.encoder.weight_init == 'normal'
    with torch.no_grad():                 # a later step's scale, so the scores are not ~0
        model.user_emb.weight.normal_()
        model.item_emb.weight.normal_()
        model.encoder.weight.normal_(std=0.5)
    sampler = model.batch_source(data, batch_size=3, seed=4)
    # 2048 distinct users a batch, n_train // 2048 + 1 batches: here 4 buys // 3 + 1 = 2
    assert sampler.draws == 'independent' and len(sampler) == 2
    batches = list(sampler.batches(1))
    buys = {tuple(p) for p in EDGES['buy']}
    for batch in batches:
        assert set(batch) == {'buy'}                          # MB-CGCN trains on buy only
        users, pos, neg = batch['buy']
        assert users.unique().numel() == 3                    # rd.sample: distinct users
        for u, p, n in zip(users.tolist(), pos.tolist(), neg.tolist()):
            assert (u, p) in buys and (u, n) not in buys
    batch = batches[0]
    (pos_s, neg_s), mf, reg = mbcgcn_by_hand(model, batch)
    emb = model.embeddings()
    users, pos, neg = batch['buy']
    got = model.head(emb, users, torch.stack([pos, neg], 1), 'buy')
    torch.testing.assert_close(got[:, 0], pos_s, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[:, 1], neg_s, rtol=1e-6, atol=1e-6)
    loss, parts = model.loss(batch)
    torch.testing.assert_close(parts['reg'], reg.detach(), rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(loss, mf + reg, rtol=1e-6, atol=1e-6)
    model.eval()                                              # prediction: the summed blocks
    full = model.score(torch.arange(U))
    torch.testing.assert_close(full[users, pos], pos_s.detach(), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------- CRGCN
#: user 3 has no cart: the code's dummy triple [0, 0, 0] for it
CR_EDGES = {**EDGES, 'cart': [(0, 1), (1, 3), (2, 0), (2, 4)]}


def crgcn_by_hand(model, batch):
    """Scores and loss of one step as model_cascade.py computes them: per behavior (view,
    cart, buy) one GCNConv (symmetric norm, no self-loops, plus its bias) over the running
    total, ``total = normalize(conv(total)) + total``; behavior k scores with the total
    after k; loss per behavior ``mean(-log(1e-10 + sigmoid(pos - neg)))`` over the batch's
    users (a user without items of k has the dummy triple [0, 0, 0]: equal scores), summed
    over behaviors; plus ``reg_weight * (||E_U|| + ||E_I||) / item rows`` (EmbLoss: Frobenius
    norms, divided by the padded item table's rows, here items + 1)."""
    eu, ei = model.user_emb.weight.double(), model.item_emb.weight.double()
    bias = model.encoder.bias.double()
    total, outs = torch.cat([eu, ei]), []
    for k, b in enumerate(BEHAVIORS):
        h = symmetric_adjacency(dense(CR_EDGES[b])) @ total + bias[k]
        total = F.normalize(h, dim=-1) + total
        outs.append(total)
    scores, loss = {}, 0.0
    n_users = batch['users'].numel()
    for k, b in enumerate(BEHAVIORS):
        users, pos, neg = batch[b]
        u = outs[k][:U][users]
        p, n = (u * outs[k][U:][pos]).sum(-1), (u * outs[k][U:][neg]).sum(-1)
        scores[b] = (p, n)
        per = -torch.log(1e-10 + torch.sigmoid(p - n))
        dummy = -math.log(1e-10 + 0.5) * (n_users - users.numel())
        loss = loss + (per.sum() + dummy) / n_users
    reg = 1e-3 * (eu.norm() + ei.norm()) / (NI + 1)
    return scores, loss, reg


def test_crgcn_code_reading_first_step_by_hand():
    from mbgraph.models import CRGCN
    torch.manual_seed(3)
    edges = {b: torch.tensor(e).t() for b, e in CR_EDGES.items()}
    data = make_multiplex(U, NI, BEHAVIORS, edges, test=torch.tensor([[0, 1], [4, 0]]),
                          name='taobao')
    model = CRGCN(data, embedding_dim=D,
                  adjacency=BehaviorAdjacency(data, dtype=torch.float64)).double()
    assert torch.equal(model.encoder.bias, torch.zeros_like(model.encoder.bias))  # zeros()
    with torch.no_grad():                                 # a trained bias, to test its path
        model.encoder.bias.normal_(std=0.3)
    sampler = model.batch_source(data, batch_size=4, seed=1)
    batch = next(iter(sampler.batches(1)))
    assert sorted(batch['users'].tolist()) == list(range(U))       # every user, once
    assert batch['cart'].size(1) == 3                              # user 3: no cart triple
    union = {tuple(p) for e in CR_EDGES.values() for p in e}
    for b in BEHAVIORS:
        users, pos, neg = batch[b]
        assert sorted(users.tolist()) == sorted(set(users.tolist()))   # one per user
        for u, p, n in zip(users.tolist(), pos.tolist(), neg.tolist()):
            assert (u, p) in {tuple(q) for q in CR_EDGES[b]} and (u, n) not in union
    scores, loss_hand, reg = crgcn_by_hand(model, batch)
    emb = model.embeddings()
    for b in BEHAVIORS:
        users, pos, neg = batch[b]
        got = model.head(emb, users, torch.stack([pos, neg], 1), b)
        torch.testing.assert_close(got[:, 0], scores[b][0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got[:, 1], scores[b][1], rtol=1e-6, atol=1e-6)
    loss, parts = model.loss(batch)
    torch.testing.assert_close(parts['reg'], reg.detach(), rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(loss, loss_hand + reg, rtol=1e-6, atol=1e-6)
    model.eval()                                         # prediction: the buy total
    full = model.score(torch.arange(U))
    users, pos, _ = batch['buy']
    torch.testing.assert_close(full[users, pos], scores['buy'][0].detach(), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize('name', ['mbcgcn', 'crgcn'])
@pytest.mark.parametrize('reading', ['code', 'mbgraph'])
def test_cascade_reading_table_is_what_the_model_built(name, reading):
    from mbgraph.models import build_model
    data = graph()
    model = build_model(name, data, reading=reading)
    table = reading_table(name, reading)
    assert model.reading == reading and model.batches == table['batches']
    for key, value in table['model'].items():
        assert getattr(model, key) == value, key
    for key, value in table['encoder'].items():
        if key == 'num_layers':
            want = [1, 5, 3] if value == 'mbcgcn' else [value] * 3
            assert list(model.encoder.layers) == want
        elif key == 'bias':
            assert (model.encoder.bias is not None) == value
        else:
            assert getattr(model.encoder, key) == value, key
    assert model.lambdas == ({'pv': 0.0, 'cart': 0.0, 'buy': 1.0} if name == 'mbcgcn'
                             else {b: (1.0 if reading == 'code' else 1 / 3)
                                   for b in BEHAVIORS})
    kind = type(model.batch_source(data)).__name__
    assert kind == ('UserBatchSampler' if table['batches']['kind'] == 'users'
                    else 'BPRSampler')
    assert 'lambdas' in describe(name, reading)
