"""PoMRec (mbgraph_seq.nn.pomrec, mbgraph_seq.models.pomrec): eq 1 and eq 4-11 against dense
hand computations, padding invariance, behavior prompts and a short training run."""
import math

import numpy as np
import pytest
import torch

from mbgraph.evaluation import SampledEvaluator
from mbgraph.training import Trainer
from mbgraph_seq.data import SequenceBatch, SequenceDataset
from mbgraph_seq.models.pomrec import PoMRec
from mbgraph_seq.nn.pomrec import (
    CentralityDispersionExtractor,
    InterestAggregator,
    centrality_dispersion,
    masked_softmax,
    prompt_augment,
)

from helpers import cyclic_walks


def _seed(s=0):
    torch.manual_seed(s)
    np.random.seed(s)


# --------------------------------------------------------------------------------------------
# eq 1
# --------------------------------------------------------------------------------------------

def test_prompt_augment_puts_prompts_first_and_real():
    prompts = torch.arange(6.0).view(3, 2)                   # N_p = 3, d = 2
    h = torch.tensor([[[0.0, 0.0], [7.0, 8.0]]])             # one padding, one real
    mask = torch.tensor([[False, True]])
    aug, aug_mask = prompt_augment(prompts, h, mask)
    assert torch.equal(aug[0], torch.tensor([[0., 1.], [2., 3.], [4., 5.], [0., 0.], [7., 8.]]))
    assert aug_mask.tolist() == [[True, True, True, False, True]]
    with pytest.raises(ValueError, match='prompts must be'):
        prompt_augment(torch.zeros(2, 3, 2), h, mask)


def test_masked_softmax_gives_padding_zero_weight():
    logits = torch.tensor([[[1.0], [50.0], [2.0]]])
    w = masked_softmax(logits, torch.tensor([[True, False, True]]))
    e1, e2 = math.exp(1.0), math.exp(2.0)
    assert torch.allclose(w[0, :, 0], torch.tensor([e1 / (e1 + e2), 0.0, e2 / (e1 + e2)]))
    with pytest.raises(ValueError, match='at least one real position'):
        masked_softmax(logits, torch.zeros(1, 3, dtype=torch.bool))


# --------------------------------------------------------------------------------------------
# eq 5-6
# --------------------------------------------------------------------------------------------

H = [[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]]                  # L = 3 rows, d = 2
A = [[0.2, 0.6], [0.5, 0.1], [0.3, 0.3]]                   # [L, K]: columns sum to 1


def _weighted_mean_std(h, a, k):
    """attention-weighted mean and standard deviation (sum_l a_lk (h_l - mean)^2) by hand"""
    d = len(h[0])
    mean = [sum(a[l][k] * h[l][i] for l in range(len(h))) for i in range(d)]
    var = [sum(a[l][k] * (h[l][i] - mean[i]) ** 2 for l in range(len(h))) for i in range(d)]
    return mean, [math.sqrt(v) for v in var]


def test_dispersion_eq6_is_the_attention_weighted_std():
    mean, std = centrality_dispersion(torch.tensor([H]), torch.tensor([A]))
    for k in range(2):
        m, s = _weighted_mean_std(H, A, k)
        assert torch.allclose(mean[0, k], torch.tensor(m), atol=1e-6)
        assert torch.allclose(std[0, k], torch.tensor(s), atol=1e-6)
    # k = 0, dimension 0 written out: mean = .2*1 + .5*3 + .3*0 = 1.7,
    # var = .2*(1-1.7)^2 + .5*(3-1.7)^2 + .3*(0-1.7)^2 = 0.098 + 0.845 + 0.867 = 1.81
    assert math.isclose(float(mean[0, 0, 0]), 1.7, rel_tol=1e-6)
    assert math.isclose(float(std[0, 0, 0]), math.sqrt(1.81), rel_tol=1e-5)


def test_dispersion_floor_keeps_gradients_finite():
    h = torch.tensor([[[1.0, 2.0], [1.0, 2.0]]], requires_grad=True)  # zero variance
    a = torch.tensor([[[0.5], [0.5]]])
    mean, std = centrality_dispersion(h, a, eps=1e-6)
    assert torch.allclose(std, torch.full_like(std, 1e-3))
    (mean.sum() + std.sum()).backward()
    assert torch.isfinite(h.grad).all()


def _tanh_logits(h_rows, W1, W2):
    """W2 tanh(W1 h_l) for every row l, by hand"""
    out = []
    for row in h_rows:
        hidden = [math.tanh(sum(W1[j][i] * row[i] for i in range(len(row))))
                  for j in range(len(W1))]
        out.append([sum(W2[k][j] * hidden[j] for j in range(len(hidden)))
                    for k in range(len(W2))])
    return out


def _softmax_columns(logits, real):
    K = len(logits[0])
    out = [[0.0] * K for _ in logits]
    for k in range(K):
        z = sum(math.exp(logits[l][k]) for l in range(len(logits)) if real[l])
        for l in range(len(logits)):
            out[l][k] = math.exp(logits[l][k]) / z if real[l] else 0.0
    return out


W1 = [[0.5, -0.2], [0.1, 0.3]]                              # d' x d
W2 = [[1.0, -1.0], [0.4, 0.8]]                              # K x d'


def test_extractor_eq5_6_by_hand_with_padding():
    lam = 3.0
    ext = CentralityDispersionExtractor(dim=2, num_interests=2, attention_dim=2,
                                        dispersion_weight=lam)
    with torch.no_grad():
        ext.w1.weight.copy_(torch.tensor(W1))
        ext.w2.weight.copy_(torch.tensor(W2))
    rows = [[9.0, -9.0]] + H                                 # a padding row with junk values
    real = [False, True, True, True]
    out = ext(torch.tensor([rows]), torch.tensor([real]))[0]
    attn = _softmax_columns(_tanh_logits(rows, W1, W2), real)     # eq 5: A^F
    for k in range(2):
        mean, std = _weighted_mean_std(rows, attn, k)             # eq 5: M, eq 6: Sigma
        expected = [mean[i] + lam * std[i] for i in range(2)]     # eq 6: V = M + lambda Sigma
        assert torch.allclose(out[k], torch.tensor(expected), atol=1e-5)


# --------------------------------------------------------------------------------------------
# eq 7-9
# --------------------------------------------------------------------------------------------

def test_aggregator_eq7_to_9_by_hand():
    agg = InterestAggregator(dim=2, num_interests=2, attention_dim=2)
    WG1, WG2 = [[0.3, 0.7], [-0.5, 0.2]], [[1.5, -0.5]]
    WM1, bM1 = [[0.2, -0.4], [0.6, 0.1]], [0.05, -0.1]
    WM2, bM2 = [[1.0, 0.5], [-0.3, 0.9]], [0.2, 0.0]
    with torch.no_grad():
        agg.w1.weight.copy_(torch.tensor(WG1))
        agg.w2.weight.copy_(torch.tensor(WG2))
        agg.mlp1.weight.copy_(torch.tensor(WM1))
        agg.mlp1.bias.copy_(torch.tensor(bM1))
        agg.mlp2.weight.copy_(torch.tensor(WM2))
        agg.mlp2.bias.copy_(torch.tensor(bM2))
    rows = [[9.0, -9.0]] + H
    real = [False, True, True, True]
    V = [[0.5, -1.0], [2.0, 0.25]]                            # [K, d]
    out = agg(torch.tensor([rows]), torch.tensor([real]), torch.tensor([V]))[0]
    a = [r[0] for r in _softmax_columns(_tanh_logits(rows, WG1, WG2), real)]   # eq 7
    v = [sum(a[l] * rows[l][i] for l in range(4)) for i in range(2)]
    hidden = [math.tanh(sum(WM1[j][i] * v[i] for i in range(2)) + bM1[j]) for j in range(2)]
    z = [sum(WM2[k][j] * hidden[j] for j in range(2)) + bM2[k] for k in range(2)]  # eq 8
    e = [sum(z[k] * V[k][i] for k in range(2)) for i in range(2)]              # eq 9
    assert torch.allclose(out, torch.tensor(e), atol=1e-5)
    agg.weight_softmax = True                                 # the authors' code
    zs = [math.exp(x) / sum(math.exp(y) for y in z) for x in z]
    e = [sum(zs[k] * V[k][i] for k in range(2)) for i in range(2)]
    out = agg(torch.tensor([rows]), torch.tensor([real]), torch.tensor([V]))[0]
    assert torch.allclose(out, torch.tensor(e), atol=1e-5)


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------

def _tiny_dataset(max_len=8):
    users = np.array([0] * 6 + [1] * 6 + [2] * 5)
    items = np.array([1, 2, 1, 3, 4, 5, 6, 7, 8, 6, 9, 10, 0, 1, 2, 3, 11])
    behaviors = np.array([0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1])
    return SequenceDataset.from_log(users, items, behaviors, np.arange(users.size), ['a', 'b'],
                                    num_users=3, num_items=12, max_len=max_len)


def _batch(items, behaviors, pos_behavior=2, pos=None, neg=None):
    items, behaviors = torch.tensor(items), torch.tensor(behaviors)
    B, M = items.shape
    pos_t = torch.zeros_like(items)
    neg_t = torch.zeros(B, M, 1 if neg is None else len(neg[0]), dtype=torch.long)
    if pos is not None:
        pos_t[:, -1] = torch.tensor(pos)
        neg_t[:, -1] = torch.tensor(neg)
    pos_b = torch.zeros_like(items)
    pos_b[:, -1] = pos_behavior
    return SequenceBatch(users=torch.arange(B), items=items, behaviors=behaviors,
                         mask=items > 0, pos=pos_t, pos_behaviors=pos_b, neg=neg_t)


def _randomise(model, seed):
    _seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
        model.items.weight[0].zero_()


def test_encode_assembles_eq1_and_eq5_to_9():
    ds = _tiny_dataset()
    model = PoMRec(ds, dim=4, max_len=8, num_interests=2, num_prompts=2, attention_dim=3,
                   behavior_prompts=True).eval()
    _randomise(model, 1)
    batch = _batch([[0, 0, 3, 5, 2]], [[0, 0, 1, 2, 2]], pos_behavior=2)
    e = model.encode(batch)[0]
    # H: item + positional embeddings (positions 8 - 5 + p), zero at padding
    h = model.items.weight[batch.items[0]] + model.positions.weight[3:8]
    h = h * batch.mask[0].unsqueeze(-1)
    p_f, p_g = model.extractor_prompts[1], model.aggregator_prompts[1]     # behavior b = 2
    real = torch.tensor([True, True, False, False, True, True, True])
    V = model.extractor(torch.cat([p_f, h]).unsqueeze(0), real.unsqueeze(0))
    expected = model.aggregator(torch.cat([p_g, h]).unsqueeze(0), real.unsqueeze(0), V)[0]
    assert torch.allclose(e, expected, atol=1e-6)


def test_padding_does_not_change_results():
    ds = _tiny_dataset(max_len=8)
    model = PoMRec(ds, dim=4, max_len=8, num_interests=2, num_prompts=2).eval()
    _randomise(model, 2)
    short = _batch([[0, 3, 5, 2]], [[0, 1, 2, 2]])
    long = _batch([[0, 0, 0, 0, 0, 3, 5, 2]], [[0, 0, 0, 0, 0, 1, 2, 2]])
    e1, e2 = model.encode(short), model.encode(long)
    assert torch.allclose(e1, e2, atol=1e-6)
    # junk in padded slots (mask False) is ignored too
    junk = _batch([[0, 0, 0, 0, 0, 3, 5, 2]], [[0, 0, 0, 0, 0, 1, 2, 2]])
    junk.items[0, :5] = torch.tensor([7, 1, 4, 9, 11])
    junk.mask[0, :5] = False
    assert torch.allclose(model.encode(junk), e1, atol=1e-6)


def test_behavior_prompts_follow_the_predicted_behavior():
    ds = _tiny_dataset()
    model = PoMRec(ds, dim=4, num_prompts=2, behavior_prompts=True).eval()
    _randomise(model, 3)
    as_a = model.encode(_batch([[0, 3, 5, 2]], [[0, 1, 2, 2]], pos_behavior=1))
    as_b = model.encode(_batch([[0, 3, 5, 2]], [[0, 1, 2, 2]], pos_behavior=2))
    assert not torch.allclose(as_a, as_b)
    single = PoMRec(ds, dim=4, num_prompts=2, behavior_prompts=False).eval()
    _randomise(single, 3)
    assert single.extractor_prompts.shape == (1, 2, 4)
    assert torch.allclose(single.encode(_batch([[0, 3, 5, 2]], [[0, 1, 2, 2]], pos_behavior=1)),
                          single.encode(_batch([[0, 3, 5, 2]], [[0, 1, 2, 2]], pos_behavior=2)))
    with pytest.raises(ValueError, match='behavior prompts need'):
        model.encode(_batch([[0, 3, 5, 2]], [[0, 1, 2, 2]], pos_behavior=0))


def test_no_prompts_and_no_dispersion_is_the_base_variant():
    ds = _tiny_dataset()
    model = PoMRec(ds, dim=4, num_prompts=0, dispersion_weight=0.0).eval()
    _randomise(model, 4)
    batch = _batch([[0, 3, 5, 2]], [[0, 1, 2, 2]])
    h = model.interaction_embeddings(batch)
    attn = model.extractor.attention(h, batch.mask)
    M = torch.einsum('blk,bld->bkd', attn, h)
    assert torch.allclose(model.encode(batch), model.aggregator(h, batch.mask, M), atol=1e-6)


def test_loss_is_bpr_eq11_by_hand():
    ds = _tiny_dataset()
    model = PoMRec(ds, dim=4, num_prompts=1).eval()
    _randomise(model, 5)
    batch = _batch([[0, 3, 5, 2], [4, 1, 6, 6]], [[0, 1, 2, 2], [1, 1, 2, 1]],
                   pos=[7, 2], neg=[[1, 9], [11, 3]])
    loss, _ = model.loss(batch)
    e = model.encode(batch).detach()
    table = model.items.weight.detach()
    total = 0.0
    for b, (p, negs) in enumerate([(7, [1, 9]), (2, [11, 3])]):
        y_pos = float(e[b] @ table[p])                              # eq 4
        for n in negs:
            y_neg = float(e[b] @ table[n])
            total -= math.log(1.0 / (1.0 + math.exp(-(y_pos - y_neg))))   # eq 11
    assert math.isclose(float(loss.detach()), total / 4, rel_tol=1e-5)


def test_loss_rejects_full_sequence_batches():
    ds = _tiny_dataset()
    model = PoMRec(ds, dim=4)
    batch = _batch([[0, 3, 5, 2]], [[0, 1, 2, 2]], pos=[4], neg=[[1]])
    batch.pos[0, 2] = 2
    with pytest.raises(ValueError, match='not causal'):
        model.loss(batch)


def test_score_shapes_and_consistency():
    ds = _tiny_dataset()
    model = PoMRec(ds, dim=4).eval()
    _randomise(model, 6)
    model.prepare_eval('test')
    users = ds.split_pairs('test')[0]
    full = model.score(users)
    assert full.shape == (users.numel(), ds.num_items)
    cand = torch.tensor([[0, 5, 11]] * users.numel())
    assert torch.allclose(model.score(users, cand), full.gather(1, cand), atol=1e-6)


def test_max_len_crops_to_the_most_recent_events():
    ds = _tiny_dataset(max_len=8)
    model = PoMRec(ds, dim=4, max_len=3).eval()
    _randomise(model, 7)
    assert model.seq_len == 3
    full = _batch([[0, 4, 3, 5, 2]], [[0, 1, 1, 2, 2]])
    cropped = _batch([[3, 5, 2]], [[1, 2, 2]])
    assert torch.allclose(model.encode(full), model.encode(cropped), atol=1e-6)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

def synthetic_sequences(num_users=60, num_items=40, length=14, max_len=12, seed=0):
    return cyclic_walks(num_users, num_items, length, seed, max_len, behaviors='cycle',
                        pass_seed=True)


def test_pomrec_training_decreases_the_loss_and_ranks():
    _seed(0)
    ds = synthetic_sequences()
    model = PoMRec(ds, dim=16)
    source = ds.train_source(batch_size=64, num_negatives=1, seed=0,
                             prefixes=model.train_layout, target_only=model.target_only)
    evaluator = SampledEvaluator(ds.split_pairs('test'), ds.num_items, ds.history_pairs(),
                                 num_negatives=20, split='test', seed=0)
    before = evaluator.evaluate(model)
    trainer = Trainer(model, source, epochs=8, lr=1e-2, progress=False, seed=0)
    trainer.fit()
    losses = [h['loss'] for h in trainer.history]
    assert losses[-1] < 0.6 * losses[0]
    after = evaluator.evaluate(model)
    assert after['ndcg@10'] > before['ndcg@10'] + 0.1
