"""HMAR (mbgraph_seq.nn.hmar, mbgraph_seq.models.hmar): every equation against a dense hand
computation on tiny sequences, causality of the indicators, behavior isolation of the
behavior encoders, and a short training run."""
import math

import numpy as np
import pytest
import torch

from mbgraph.evaluation import SampledEvaluator
from mbgraph.training import Trainer
from mbgraph_seq.data import SequenceBatch, SequenceDataset
from mbgraph_seq.models.hmar import HMAR, crop_batch
from mbgraph_seq.nn.hmar import (
    BehaviorClassifier,
    BehaviorEncoder,
    HierarchicalMaskedAttention,
    HMAREmbedding,
    SequenceEncoder,
    causal_key_mask,
    history_behavior_counts,
    hmar_loss,
    prefix_behavior_counts,
    resolve_alpha,
)

from helpers import cyclic_walks

# one left-padded sequence, K = 2 behaviors (ids + 1), item ids + 1
#   position:   0    1    2    3    4    5
#   item:       -    3    5    3    3    5
#   behavior:   -    1    1    2    1    2
ITEMS = torch.tensor([[0, 3, 5, 3, 3, 5]])
BEHAVIORS = torch.tensor([[0, 1, 1, 2, 1, 2]])
MASK = ITEMS > 0


def _seed(s=0):
    torch.manual_seed(s)
    np.random.seed(s)


# --------------------------------------------------------------------------------------------
# eq 2: historical behavior indicators
# --------------------------------------------------------------------------------------------

def test_indicators_are_causal_counts_by_hand():
    counts = prefix_behavior_counts(ITEMS, BEHAVIORS, MASK, ITEMS.unsqueeze(-1), 2).squeeze(2)
    # per position: (#behavior-1 events, #behavior-2 events) on that item at positions <= t
    expected = torch.tensor([[[0, 0],      # padding
                              [1, 0],      # item 3: b1
                              [1, 0],      # item 5: b1
                              [1, 1],      # item 3: b1, b2
                              [2, 1],      # item 3: b1, b2, b1
                              [1, 1]]],    # item 5: b1, b2
                            dtype=torch.float32)
    assert torch.equal(counts, expected)
    # the non-causal reading (the authors' code) would give item 3 its final (2, 1) at position 1
    assert not torch.equal(counts[0, 1], torch.tensor([2.0, 1.0]))


def test_indicator_at_t_ignores_later_positions():
    base = prefix_behavior_counts(ITEMS, BEHAVIORS, MASK, ITEMS.unsqueeze(-1), 2)
    later = ITEMS.clone()
    later[0, 4:] = 3                        # more events on item 3 after position 3
    beh = BEHAVIORS.clone()
    beh[0, 4:] = 2
    changed = prefix_behavior_counts(later, beh, later > 0, later.unsqueeze(-1), 2)
    assert torch.equal(base[:, :4], changed[:, :4])
    assert not torch.equal(base[:, 4:], changed[:, 4:])


def test_candidate_indicators_given_the_history_up_to_t():
    # candidates queried at each position: item 5 and item 7 (never seen)
    query = torch.tensor([[[5, 7]] * 6])
    counts = prefix_behavior_counts(ITEMS, BEHAVIORS, MASK, query, 2)
    item5 = torch.tensor([[0, 0], [0, 0], [1, 0], [1, 0], [1, 0], [1, 1]], dtype=torch.float32)
    assert torch.equal(counts[0, :, 0], item5)
    assert torch.equal(counts[0, :, 1], torch.zeros(6, 2))
    # over the whole sequence (scoring after the last event)
    whole = history_behavior_counts(ITEMS, BEHAVIORS, MASK, torch.tensor([[3, 5, 7]]), 2)
    assert torch.equal(whole, torch.tensor([[[2.0, 1.0], [1.0, 1.0], [0.0, 0.0]]]))


def test_indicators_reject_unknown_behavior_ids():
    with pytest.raises(ValueError, match='behavior ids'):
        prefix_behavior_counts(ITEMS, BEHAVIORS + 1, MASK, ITEMS.unsqueeze(-1), 2)


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------

def test_behavior_attention_mask_by_hand():
    allowed = causal_key_mask(BEHAVIORS == 1)[0, 0].int()
    # keys of behavior 1: positions 1, 2, 4; key s allowed for query t iff s <= t and s has
    # behavior 1, or s == t (no empty rows; rows outside the behavior are zeroed later)
    expected = torch.tensor([[1, 0, 0, 0, 0, 0],
                             [0, 1, 0, 0, 0, 0],
                             [0, 1, 1, 0, 0, 0],
                             [0, 1, 1, 1, 0, 0],
                             [0, 1, 1, 0, 1, 0],
                             [0, 1, 1, 0, 1, 1]])
    assert torch.equal(allowed, expected)
    seq = causal_key_mask(MASK)[0, 0].int()
    assert torch.equal(seq, torch.tensor([[1, 0, 0, 0, 0, 0],
                                          [0, 1, 0, 0, 0, 0],
                                          [0, 1, 1, 0, 0, 0],
                                          [0, 1, 1, 1, 0, 0],
                                          [0, 1, 1, 1, 1, 0],
                                          [0, 1, 1, 1, 1, 1]]))


# --------------------------------------------------------------------------------------------
# eq 1-4
# --------------------------------------------------------------------------------------------

def test_embedding_eq1_to_4_by_hand():
    _seed(1)
    emb = HMAREmbedding(num_items=6, num_behaviors=2, dim=3, max_len=8)
    for p in emb.parameters():
        torch.nn.init.normal_(p)
    g, counts = emb(ITEMS, BEHAVIORS, MASK)
    Wv, Bv = emb.items.weight.detach(), emb.item_bias.detach()
    Wc, Bc = emb.indicator.weight.detach(), emb.indicator.bias.detach()      # [d, K], [d]
    Wr, Br = emb.combine.weight.detach(), emb.combine.bias.detach()          # [d, 2d], [d]
    P = emb.positions.weight.detach()
    c = [[0, 0], [1, 0], [1, 0], [1, 1], [2, 1], [1, 1]]
    for j in range(6):
        if j == 0:
            assert torch.equal(g[0, j], torch.zeros(3))          # padding
            continue
        v1 = Wv[ITEMS[0, j]] + Bv                                              # eq 1
        c1 = torch.tensor([sum(Wc[i, k] * c[j][k] for k in range(2)) for i in range(3)]) + Bc
        r = torch.cat([v1, c1])                                                # eq 3
        q = torch.tensor([sum(r[m] * Wr[i, m] for m in range(6)) for i in range(3)]) + Br
        expected = q + P[8 - 6 + j]                                            # eq 4
        assert torch.allclose(g[0, j], expected, atol=1e-5)
    assert torch.equal(counts[0], torch.tensor(c, dtype=torch.float32))


def test_indicator_shift_is_the_affine_part_of_q():
    _seed(2)
    emb = HMAREmbedding(num_items=6, num_behaviors=3, dim=4, max_len=5)
    for p in emb.parameters():
        torch.nn.init.normal_(p)
    items = torch.tensor([1, 4, 6])
    counts = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    q = emb.item_encoding(items, counts)
    q0 = emb.item_encoding(items, torch.zeros_like(counts))
    assert torch.allclose(q, q0 + emb.indicator_shift(counts), atol=1e-5)


# --------------------------------------------------------------------------------------------
# eq 5-10: behavior encoders
# --------------------------------------------------------------------------------------------

def _dense_attention(x, Wq, Wk, Wv, allowed, heads):
    """concat_h softmax(x Wq_h (x Wk_h)^T / sqrt(d/H) + mask) x Wv_h, written out."""
    M, d = x.shape
    dh = d // heads
    out = torch.zeros(M, d)
    for h in range(heads):
        rows = slice(h * dh, (h + 1) * dh)
        Q, K, V = x @ Wq[rows].t(), x @ Wk[rows].t(), x @ Wv[rows].t()
        for t in range(M):
            logits = [float(Q[t] @ K[s]) / math.sqrt(dh) for s in range(M)]
            w = [math.exp(logits[s]) if allowed[t][s] else 0.0 for s in range(M)]
            total = sum(w)
            out[t, rows] = sum((w[s] / total) * V[s] for s in range(M))
    return out


def _ffn(x, lin1, lin2):
    W1, b1, W2, b2 = (t.detach() for t in (lin1.weight, lin1.bias, lin2.weight, lin2.bias))
    return torch.clamp(x @ W1.t() + b1, min=0) @ W2.t() + b2


def test_behavior_encoder_eq5_to_9_by_hand():
    _seed(3)
    d, heads = 4, 2
    enc = BehaviorEncoder(d, num_heads=heads).eval()
    with torch.no_grad():
        enc.gamma.fill_(0.5)                # ReZero weight (initialised at 0) made visible
    g = torch.randn(1, 6, d) * MASK.unsqueeze(-1)
    m_b = BEHAVIORS == 1
    out = enc(g, m_b)[0].detach()
    m = m_b[0].float().unsqueeze(-1)
    gm = g[0] * m
    e = gm @ enc.input.weight.detach().t() + enc.input.bias.detach()            # eq 5
    keys = {1, 2, 4}                                                            # behavior 1
    allowed = [[(s <= t and s in keys) or s == t for s in range(6)] for t in range(6)]
    X = _dense_attention(e, enc.attention.query.weight.detach(),
                         enc.attention.key.weight.detach(),
                         enc.attention.value.weight.detach(), allowed, heads)   # eq 6
    Fb = _ffn(X, enc.ffn.linear1, enc.ffn.linear2)                              # eq 7
    L = Fb + 0.5 * gm                                                           # eq 8
    O = L * m                                                                   # eq 9
    assert torch.allclose(out, O, atol=1e-5)
    assert torch.equal(out[[0, 3, 5]], torch.zeros(3, d))


def test_rezero_weight_starts_at_zero():
    assert float(BehaviorEncoder(4).gamma.detach()) == 0.0


def test_behavior_encoder_never_attends_across_behaviors():
    _seed(4)
    d = 6
    hier = HierarchicalMaskedAttention(d, num_behaviors=2, num_heads=2).eval()
    for enc in hier.behavior_encoders[0]:
        with torch.no_grad():
            enc.gamma.fill_(0.3)
    g = torch.randn(1, 6, d) * MASK.unsqueeze(-1)
    base = hier.behavior_outputs(g, BEHAVIORS)               # [K, B, M, d]
    a_pos = BEHAVIORS[0] == 1                                 # behavior "A" = 1
    g2 = g.clone()
    g2[0, a_pos] += torch.randn(int(a_pos.sum()), d) * 5      # perturb every A input
    pert = hier.behavior_outputs(g2, BEHAVIORS)
    assert torch.allclose(pert[1], base[1], atol=1e-6)        # behavior-B encoder unchanged
    assert not torch.allclose(pert[0][0, a_pos], base[0][0, a_pos])
    # eq 10: the sum puts each position's own behavior encoder output there
    total = base.sum(0)[0]
    for j in range(1, 6):
        assert torch.allclose(total[j], base[BEHAVIORS[0, j] - 1][0, j])


def test_model_behavior_encoder_isolation_through_items():
    """Perturbing an item of behavior A (with no other occurrence, so no indicator links it to
    behavior B) leaves the behavior-B encoder output at B positions unchanged."""
    _seed(5)
    ds = _tiny_dataset()
    model = HMAR(ds, dim=8, dropout=0.0).eval()
    for enc in model.encoder.behavior_encoders[0]:
        with torch.no_grad():
            enc.gamma.fill_(0.7)
    items = torch.tensor([[0, 2, 4, 6, 8, 9]])
    behaviors = torch.tensor([[0, 1, 2, 1, 2, 2]])
    items2 = items.clone()
    items2[0, 3] = 11                       # behavior 1 ("A") position, item unique either way

    def outputs(it):
        g, _ = model.embedding(it, behaviors, it > 0)
        return model.encoder.behavior_outputs(g, behaviors)

    o1, o2 = outputs(items), outputs(items2)
    b_pos = behaviors[0] == 2
    assert torch.allclose(o1[1][0, b_pos], o2[1][0, b_pos], atol=1e-6)
    assert not torch.allclose(o1[0][0, 3], o2[0][0, 3])


# --------------------------------------------------------------------------------------------
# eq 11-13, 16
# --------------------------------------------------------------------------------------------

def test_sequence_encoder_eq11_to_13_by_hand():
    _seed(6)
    d = 4
    enc = SequenceEncoder(d, num_heads=1).eval()
    o = torch.randn(1, 6, d) * MASK.unsqueeze(-1)
    g = torch.randn(1, 6, d) * MASK.unsqueeze(-1)
    out = enc(o, g, MASK)[0].detach()
    allowed = [[(s <= t and s >= 1) or s == t for s in range(6)] for t in range(6)]
    A = _dense_attention(o[0], enc.attention.query.weight.detach(),
                         enc.attention.key.weight.detach(), enc.attention.value.weight.detach(),
                         allowed, 1)                                           # eq 11
    Z = _ffn(A + g[0], enc.ffn.linear1, enc.ffn.linear2)                       # eq 12-13
    Z[0] = 0.0                                                                  # padding
    assert torch.allclose(out, Z, atol=1e-5)


def test_behavior_classifier_eq16_by_hand():
    _seed(7)
    head = BehaviorClassifier(3, 2)
    z, q = torch.randn(5, 3), torch.randn(5, 3)
    W1, b1 = head.linear1.weight.detach(), head.linear1.bias.detach()
    W2, b2 = head.linear2.weight.detach(), head.linear2.bias.detach()
    expected = (torch.cat([z, q], 1) @ W1.t() + b1) @ W2.t() + b2
    assert torch.allclose(head(z, q), expected, atol=1e-6)


# --------------------------------------------------------------------------------------------
# eq 14-18
# --------------------------------------------------------------------------------------------

def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_loss_eq14_to_18_by_hand():
    pos = [0.5, -1.0, 2.0]
    neg = [[0.1, -0.3], [1.2, 0.0], [-2.0, 0.4]]
    cls = [[0.2, -0.1], [1.0, 0.5], [-0.3, 0.3]]
    beh = [1, 0, 1]
    alpha, beta, theta = [0.1, 0.7], 0.8, 0.25
    rank = 0.0
    for t in range(3):
        term = alpha[beh[t]] * math.log(_sigmoid(pos[t]))
        term += beta * sum(math.log(1 - _sigmoid(x)) for x in neg[t]) / 2
        rank -= term
    rank /= 3
    ce = 0.0
    for t in range(3):
        z = sum(math.exp(v) for v in cls[t])
        ce -= math.log(math.exp(cls[t][beh[t]]) / z)
    ce /= 3
    loss, parts = hmar_loss(torch.tensor(pos), torch.tensor(neg), torch.tensor(cls),
                            torch.tensor(beh), torch.tensor(alpha), beta, theta)
    assert math.isclose(float(parts['rank']), rank, rel_tol=1e-5)
    assert math.isclose(float(parts['class']), ce, rel_tol=1e-5)
    assert math.isclose(float(loss), rank + theta * ce, rel_tol=1e-5)


def test_alpha_defaults_and_overrides():
    names = ['view', 'cart', 'buy']
    assert resolve_alpha(None, names).tolist() == pytest.approx([0.1, 0.1, 0.7])
    assert resolve_alpha({'cart': 0.3}, names).tolist() == pytest.approx([0.1, 0.3, 0.7])
    assert resolve_alpha([1, 2, 3], names).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match='unknown behaviors'):
        resolve_alpha({'fav': 1.0}, names)
    with pytest.raises(ValueError, match='one weight per behavior'):
        resolve_alpha([1.0], names)


def _tiny_dataset(max_len=6):
    # 3 users, 12 items, behaviors a, b (target b)
    users = np.array([0] * 6 + [1] * 6 + [2] * 5)
    items = np.array([1, 2, 1, 3, 4, 5, 6, 7, 8, 6, 9, 10, 0, 1, 2, 3, 11])
    behaviors = np.array([0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1])
    times = np.arange(users.size)
    return SequenceDataset.from_log(users, items, behaviors, times, ['a', 'b'], num_users=3,
                                    num_items=12, max_len=max_len)


def test_model_loss_assembled_by_hand():
    _seed(8)
    ds = _tiny_dataset()
    model = HMAR(ds, dim=4, dropout=0.0, alpha=[0.2, 0.9], theta=0.5).eval()
    # one sequence: items (id + 1) 3, 5, 3; next items 5, 3, 6; negatives as written
    batch = SequenceBatch(
        users=torch.tensor([0]), items=torch.tensor([[0, 3, 5, 3]]),
        behaviors=torch.tensor([[0, 1, 2, 2]]), mask=torch.tensor([[False, True, True, True]]),
        pos=torch.tensor([[0, 5, 3, 6]]), pos_behaviors=torch.tensor([[0, 2, 2, 1]]),
        neg=torch.tensor([[[0], [2], [9], [5]]]))
    loss, parts = model.loss(batch)
    z = model.encode(batch)[0].detach()
    emb = model.embedding

    def q(item, counts):                    # eq 1-3 by hand
        v = emb.items.weight[item] + emb.item_bias
        c = emb.indicator.weight @ torch.tensor(counts) + emb.indicator.bias
        return (emb.combine.weight @ torch.cat([v, c]) + emb.combine.bias).detach()

    # candidate indicators given the history up to t (counts of behaviors a, b):
    #   t=1 (history 3:a)            pos 5 -> (0,0), neg 2 -> (0,0)
    #   t=2 (history 3:a, 5:b)       pos 3 -> (1,0), neg 9 -> (0,0)
    #   t=3 (history 3:a, 5:b, 3:b)  pos 6 -> (0,0), neg 5 -> (0,1)
    targets = [(1, 5, (0., 0.), 2, (0., 0.), 1),
               (2, 3, (1., 0.), 9, (0., 0.), 1),
               (3, 6, (0., 0.), 5, (0., 1.), 0)]
    alpha, theta = [0.2, 0.9], 0.5
    rank, ce = 0.0, 0.0
    W1, b1 = model.classifier.linear1.weight.detach(), model.classifier.linear1.bias.detach()
    W2, b2 = model.classifier.linear2.weight.detach(), model.classifier.linear2.bias.detach()
    for t, p, pc, n, nc, b in targets:
        qp, qn = q(p, list(pc)), q(n, list(nc))
        rp, rn = float(z[t] @ qp), float(z[t] @ qn)
        rank -= alpha[b] * math.log(_sigmoid(rp)) + math.log(1 - _sigmoid(rn))
        logits = ((torch.cat([z[t], qp]) @ W1.t() + b1) @ W2.t() + b2).tolist()
        ce -= logits[b] - math.log(sum(math.exp(x) for x in logits))
    rank, ce = rank / 3, ce / 3
    assert math.isclose(parts['rank'], rank, rel_tol=1e-4)
    assert math.isclose(parts['class'], ce, rel_tol=1e-4)
    assert math.isclose(float(loss.detach()), rank + theta * ce, rel_tol=1e-4)


# --------------------------------------------------------------------------------------------
# model-level properties
# --------------------------------------------------------------------------------------------

def test_encoder_is_causal():
    _seed(9)
    ds = _tiny_dataset()
    model = HMAR(ds, dim=8, dropout=0.0).eval()
    for enc in model.encoder.behavior_encoders[0]:
        with torch.no_grad():
            enc.gamma.fill_(0.5)
    items, beh = torch.tensor([[0, 2, 4, 2, 6, 8]]), torch.tensor([[0, 1, 2, 2, 1, 2]])
    batch = SequenceBatch(users=torch.tensor([0]), items=items, behaviors=beh, mask=items > 0,
                          pos=torch.zeros_like(items), pos_behaviors=torch.zeros_like(items),
                          neg=torch.zeros(1, 6, 0, dtype=torch.long))
    z = model.encode(batch)
    items2, beh2 = items.clone(), beh.clone()
    items2[0, 4:] = torch.tensor([2, 3])    # later events (one repeats item 2)
    beh2[0, 4:] = torch.tensor([2, 1])
    batch2 = SequenceBatch(users=torch.tensor([0]), items=items2, behaviors=beh2,
                           mask=items2 > 0, pos=batch.pos, pos_behaviors=batch.pos_behaviors,
                           neg=batch.neg)
    z2 = model.encode(batch2)
    assert torch.allclose(z[:, :4], z2[:, :4], atol=1e-6)
    assert not torch.allclose(z[:, 4:], z2[:, 4:])


def test_padding_does_not_change_results():
    _seed(10)
    ds = _tiny_dataset(max_len=8)
    model = HMAR(ds, dim=8, dropout=0.0).eval()
    short = torch.tensor([[0, 3, 5, 3, 2]]), torch.tensor([[0, 1, 2, 2, 1]])
    long = torch.tensor([[0, 0, 0, 0, 3, 5, 3, 2]]), torch.tensor([[0, 0, 0, 0, 1, 2, 2, 1]])
    out = []
    for items, beh in (short, long):
        b = SequenceBatch(users=torch.tensor([0]), items=items, behaviors=beh, mask=items > 0,
                          pos=torch.zeros_like(items), pos_behaviors=torch.zeros_like(items),
                          neg=torch.zeros(*items.shape, 0, dtype=torch.long))
        out.append(model.user_representation(b))
    assert torch.allclose(out[0], out[1], atol=1e-6)


def test_score_all_items_equals_candidate_scores():
    _seed(11)
    ds = _tiny_dataset()
    for target_indicators in (True, False):
        model = HMAR(ds, dim=8, dropout=0.0, target_indicators=target_indicators).eval()
        model.prepare_eval('test')
        users = ds.split_pairs('test')[0]
        full = model.score(users)
        assert full.shape == (users.numel(), ds.num_items)
        cand = torch.arange(ds.num_items).repeat(users.numel(), 1)
        assert torch.allclose(full, model.score(users, cand), atol=1e-5)


def test_scores_use_the_candidates_history_indicators():
    _seed(12)
    ds = _tiny_dataset()
    model = HMAR(ds, dim=8, dropout=0.0).eval()
    model.prepare_eval('test')
    users = ds.split_pairs('test')[0][:1]
    batch = model.eval_inputs.batch(users)
    z = model.encode(crop_batch(batch, model.seq_len))[:, -1]
    item = int(batch.items[0, -1])            # the most recent history item (id + 1)
    counts = history_behavior_counts(batch.items, batch.behaviors, batch.mask,
                                     torch.tensor([[item]]), 2)
    assert float(counts.sum()) >= 1
    q = model.embedding.item_encoding(torch.tensor([[item]]), counts)
    expected = (z.unsqueeze(1) * q).sum(-1)
    assert torch.allclose(model.score(users, torch.tensor([[item - 1]])), expected, atol=1e-6)


def test_rejects_batches_without_targets():
    ds = _tiny_dataset()
    model = HMAR(ds, dim=4)
    items = torch.tensor([[0, 3, 5]])
    batch = SequenceBatch(users=torch.tensor([0]), items=items, behaviors=torch.tensor([[0, 1, 2]]),
                          mask=items > 0, pos=torch.zeros_like(items),
                          pos_behaviors=torch.zeros_like(items),
                          neg=torch.zeros(1, 3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match='no next-item targets'):
        model.loss(batch)


def test_max_len_crops_to_the_most_recent_events():
    ds = _tiny_dataset(max_len=6)
    model = HMAR(ds, dim=4, max_len=4)
    assert model.seq_len == 4 and model.embedding.positions.num_embeddings == 4
    batch = next(iter(ds.train_source(batch_size=3, seed=0).batches(1)))
    loss, _ = model.loss(batch)
    assert torch.isfinite(loss)


def test_options_stacked_blocks_and_log_counts():
    _seed(13)
    ds = _tiny_dataset()
    model = HMAR(ds, dim=8, num_blocks=2, num_heads=2, log_counts=True)
    assert len(model.encoder.sequence_encoders) == 2
    batch = next(iter(ds.train_source(batch_size=3, seed=0).batches(1)))
    loss, parts = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {'rank', 'class'}
    counts = torch.tensor([[2.0, 0.0]])
    q = model.embedding.item_encoding(torch.tensor([4]), counts)       # log(1 + c) inside
    model.embedding.log_counts = False
    q_raw = model.embedding.item_encoding(torch.tensor([4]), torch.log(1 + counts))
    assert torch.allclose(q, q_raw)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

def synthetic_sequences(num_users=60, num_items=40, length=14, max_len=12, seed=0):
    return cyclic_walks(num_users, num_items, length, seed, max_len, behaviors='cycle',
                        pass_seed=True)


def test_hmar_training_decreases_the_loss_and_ranks():
    _seed(0)
    ds = synthetic_sequences()
    model = HMAR(ds, dim=16, dropout=0.1)
    source = ds.train_source(batch_size=16, num_negatives=1, seed=0,
                             prefixes=model.train_layout, target_only=model.target_only)
    evaluator = SampledEvaluator(ds.split_pairs('test'), ds.num_items, ds.history_pairs(),
                                 num_negatives=20, split='test', seed=0)
    before = evaluator.evaluate(model)
    trainer = Trainer(model, source, epochs=30, lr=5e-3, progress=False, seed=0)
    trainer.fit()
    losses = [h['loss'] for h in trainer.history]
    assert losses[-1] < 0.6 * losses[0]
    assert {'rank', 'class'} <= set(trainer.history[-1])
    after = evaluator.evaluate(model)
    assert after['ndcg@10'] > before['ndcg@10'] + 0.1
