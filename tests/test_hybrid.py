"""HistoryHybrid (mbgraph.models.hybrid): its scores and loss recomputed by hand on a tiny
graph, the registry name 'hybrid:BASE', the Trainer, the evaluator and the CLI."""
import json
import math

import numpy as np
import pytest
import torch

from mbgraph.cli import main
from mbgraph.data import make_multiplex
from mbgraph.data.datasets import synthetic
from mbgraph.data.sampling import BPRSampler
from mbgraph.evaluation import FullRankingEvaluator
from mbgraph.models import HistoryHybrid, LightGCN, build_model, is_known_model
from mbgraph.training import Trainer

# 3 users, 5 items; view -> cart -> buy
VIEW = [(0, 0), (0, 1), (0, 2), (0, 4), (1, 1), (1, 3), (2, 0), (2, 4)]
CART = [(0, 1), (0, 3), (1, 3), (2, 4)]
BUY = [(0, 4), (1, 0), (1, 4), (2, 1)]
TEST = [(0, 1), (1, 3), (2, 2)]


def ei(pairs):
    return torch.tensor(pairs, dtype=torch.long).t()


@pytest.fixture
def data():
    return make_multiplex(3, 5, ['view', 'cart', 'buy'],
                          {'view': ei(VIEW), 'cart': ei(CART), 'buy': ei(BUY)}, test=ei(TEST))


def hand_history():
    """h[k][u][i] for k = view, cart, written out from VIEW and CART."""
    h = np.zeros((2, 3, 5))
    for k, pairs in enumerate((VIEW, CART)):
        for u, i in pairs:
            h[k, u, i] = 1
    return h


def standardise(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return (rows - rows.mean(1, keepdims=True)) / rows.std(1, ddof=1, keepdims=True)


def test_initial_bias_is_the_log_likelihood_ratio(data):
    model = HistoryHybrid(data, base='mostpop')
    # viewed buys: (0, 4) only -> 1 / 4 against 8 of 15 pairs viewed: ln(0.47) < 0, clamped
    # to 0; carted buys: none -> clamped to 0
    assert model.bias.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    # a graph where viewing predicts buying:
    view = VIEW + [(1, 0), (2, 1)]
    d2 = make_multiplex(3, 5, ['view', 'cart', 'buy'],
                        {'view': ei(view), 'cart': ei(CART), 'buy': ei(BUY)}, test=ei(TEST))
    m2 = HistoryHybrid(d2, base='mostpop')
    # viewed buys: (0, 4), (1, 0), (2, 1) -> 3 / 4; views 10 of 15 pairs
    assert m2.bias[0].item() == pytest.approx(math.log((3 / 4) / (10 / 15)), rel=1e-5)
    assert m2.bias[1].item() == 0.0
    assert HistoryHybrid(d2, base='mostpop', init_bias='zero').bias.tolist() == [0.0, 0.0]


def test_scores_by_hand_over_a_fixed_base(data):
    model = HistoryHybrid(data, base='mostpop', bias_scale=4.0)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([0.5, 0.25]))          # b = (2.0, 1.0)
    pop = [1, 1, 0, 0, 2]                                     # buys per item
    expected = standardise([pop] * 3) + 2.0 * hand_history()[0] + 1.0 * hand_history()[1]
    scores = model.score(torch.arange(3))
    assert scores.numpy() == pytest.approx(expected, abs=1e-5)
    # candidate items: the same numbers, gathered
    got = model.score(torch.tensor([2, 0]), torch.tensor([[4, 0], [3, 1]]))
    assert got.numpy() == pytest.approx(np.array([[expected[2, 4], expected[2, 0]],
                                                  [expected[0, 3], expected[0, 1]]]), abs=1e-5)
    # without standardisation the raw base score is kept
    raw = HistoryHybrid(data, base='mostpop', standardise=False, init_bias='zero')
    assert raw.score(torch.arange(3)).tolist() == [pop] * 3


def test_scores_by_hand_over_lightgcn(data):
    torch.manual_seed(0)
    model = build_model('hybrid:lightgcn', data, embedding_dim=8, num_layers=2)
    assert isinstance(model, HistoryHybrid) and isinstance(model.base, LightGCN)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([0.3, -0.1]))
    model.eval()
    u, i = model.base.propagate()
    raw = (u @ i.t()).detach().numpy()
    b = model.bias.tolist()
    h = hand_history()
    expected = standardise(raw) + b[0] * h[0] + b[1] * h[1]
    assert model.score(torch.arange(3)).detach().numpy() == pytest.approx(expected, abs=1e-5)


def test_loss_by_hand_and_the_base_trains_as_alone(data):
    torch.manual_seed(0)
    model = HistoryHybrid(data, base='lightgcn', embedding_dim=8, num_layers=2, bias_reg=0.1)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([0.2, 0.1]))            # b = (2, 1)
    batch = {'buy': torch.tensor([[0, 1, 2, 0], [4, 0, 1, 4], [1, 3, 2, 3]])}
    total, parts = model.loss(batch)
    base_loss, _ = model.base.loss(batch)
    # by hand: standardised LightGCN scores, the history bonus, BPR, the L2 on b
    u, i = model.base.propagate()
    z = standardise((u @ i.t()).detach().numpy())
    h = hand_history()
    s = z + 2.0 * h[0] + 1.0 * h[1]
    users, pos, neg = batch['buy'].numpy()
    diff = s[users, pos] - s[users, neg]
    hybrid = np.mean(np.log1p(np.exp(-diff)))
    assert parts['hybrid_bpr'].item() == pytest.approx(hybrid, rel=1e-5)
    assert parts['hybrid_reg'].item() == pytest.approx(0.1 * (4 + 1), rel=1e-5)
    assert total.item() == pytest.approx(base_loss.item() + hybrid + 0.5, rel=1e-5)
    # the base model's gradients are those of its own loss (the hybrid term is detached)
    total.backward()
    hybrid_grads = [p.grad.clone() for p in model.base.parameters()]
    model.zero_grad()
    model.base.loss(batch)[0].backward()
    for a, b in zip(hybrid_grads, (p.grad for p in model.base.parameters())):
        assert torch.allclose(a, b, atol=1e-7)
    # d/d theta of the hybrid BPR + reg: beta * (mean(-sigmoid(-diff) * (h_pos - h_neg)) + 2 r b)
    sig = 1 / (1 + np.exp(diff))
    expect = [10 * (np.mean(-sig * (h[k][users, pos] - h[k][users, neg])) + 2 * 0.1 * bk)
              for k, bk in enumerate((2.0, 1.0))]
    model.zero_grad()
    model.loss(batch)[0].backward()
    assert model.theta.grad.numpy() == pytest.approx(expect, rel=1e-4, abs=1e-6)


def test_training_free_base_trains_only_the_biases(data):
    model = build_model('hybrid:mostpop', data)
    assert [n for n, _ in model.named_parameters()] == ['theta']
    source = model.batch_source(data, batch_size=4)
    assert isinstance(source, BPRSampler) and source.behaviors == ['buy']
    batch = next(source.batches(1))
    loss, parts = model.loss(batch)
    loss.backward()
    assert model.theta.grad is not None and 'hybrid_bpr' in parts


def test_trainer_and_full_ranking(tmp_path):
    data = synthetic(num_users=120, num_items=80, seed=1)
    torch.manual_seed(0)
    model = build_model('hybrid:lightgcn', data, embedding_dim=16)
    before = model.bias.detach().clone()
    trainer = Trainer(model, model.batch_source(data, batch_size=256),
                      FullRankingEvaluator(data, 'val'), epochs=3, lr=1e-2, progress=False)
    trainer.fit()
    assert not torch.equal(before, model.bias.detach())
    result = FullRankingEvaluator(data, 'test', ks=(10,)).evaluate(model)
    assert 0.0 <= result['hr@10'] <= 1.0
    # the hybrid beats nothing by construction, but it ranks with the history: on synthetic
    # data (cascading behaviors) it is not worse than its own base
    base_result = FullRankingEvaluator(data, 'test', ks=(10,)).evaluate(model.base)
    assert result['hr@10'] >= base_result['hr@10'] - 0.05


def test_registry_names(data):
    assert is_known_model('hybrid:pkef') and is_known_model('hybrid:mbcgcn+dfme')
    assert is_known_model('HYBRID:cascadingrank')
    for bad in ('hybrid:', 'hybrid:nope', 'hybrid:hybrid:lightgcn'):
        assert not is_known_model(bad)
    with pytest.raises(ValueError, match='hybrid:BASE'):
        build_model('hybrid:', data)
    with pytest.raises(ValueError, match='cannot be a hybrid'):
        build_model('hybrid:hybrid:lightgcn', data)
    only_buy = make_multiplex(3, 5, ['buy'], {'buy': ei(BUY)}, test=ei(TEST))
    with pytest.raises(ValueError, match='auxiliary behavior'):
        build_model('hybrid:lightgcn', only_buy)
    with pytest.raises(ValueError, match='bias_scale'):
        build_model('hybrid:mostpop', data, bias_scale=0)
    # the base's options pass through; the hybrid's settings follow the base's reading
    pkef = build_model('hybrid:pkef', data, embedding_dim=8, reading='paper')
    assert pkef.base.embedding_dim == 8 and pkef.reading == 'paper'
    assert pkef.schedule == pkef.base.schedule


def test_cli_train_and_evaluate(tmp_path):
    out = tmp_path / 'run'
    assert main(['train', '--model', 'hybrid:lightgcn', '--dataset', 'synthetic', '--epochs',
                 '2', '--dim', '8', '--out', str(out), '--no-progress', '--threads', '1']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['model'] == 'hybrid:lightgcn' and metrics['epochs_run'] == 2
    assert main(['evaluate', '--checkpoint', str(out / 'best.pt'), '--out',
                 str(tmp_path / 'eval.json')]) == 0
    again = json.loads((tmp_path / 'eval.json').read_text())
    assert again['test']['hr@10'] == pytest.approx(metrics['test']['hr@10'])
