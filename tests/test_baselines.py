"""The training-free baselines (mbgraph.models.baselines) recomputed by hand on a tiny graph,
the Trainer and CLI running them with no epoch, and the shortcut shares."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mbgraph.cli import main
from mbgraph.data import make_multiplex
from mbgraph.data.datasets import synthetic
from mbgraph.data.shortcuts import format_shortcuts, shortcut_shares
from mbgraph.evaluation import FullRankingEvaluator
from mbgraph.models import MODELS, CascadingRank, History, MostPop, build_model
from mbgraph.training import Trainer

# 3 users, 5 items; view -> cart -> buy
VIEW = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 3), (2, 0), (2, 4)]
CART = [(0, 1), (0, 3), (1, 3), (2, 4)]
BUY = [(0, 4), (1, 0), (1, 4), (2, 1)]
TEST = [(0, 1), (1, 3), (2, 2)]


def ei(pairs):
    return torch.tensor(pairs, dtype=torch.long).t()


@pytest.fixture
def data():
    return make_multiplex(3, 5, ['view', 'cart', 'buy'],
                          {'view': ei(VIEW), 'cart': ei(CART), 'buy': ei(BUY)}, test=ei(TEST))


def test_mostpop_is_the_target_popularity(data):
    model = MostPop(data)
    pop = [1, 1, 0, 0, 2]            # buys per item, by hand
    assert model.score(torch.tensor([0, 2])).tolist() == [pop, pop]
    assert model.score(torch.tensor([1]), torch.tensor([[4, 2]])).tolist() == [[2, 0]]


def test_history_ranks_downstream_first_then_count_then_popularity(data):
    scores = History(data).score(torch.arange(3))
    # user 0: carted 1 and 3 (1 also viewed: count 2) > viewed 0, 2 (0 more popular)
    #         > item 4 (not in the history; popular)
    order0 = scores[0].argsort(descending=True).tolist()
    assert order0 == [1, 3, 0, 2, 4]
    # user 1: carted 3 (and viewed) > viewed 1 > unseen by popularity: 4 (2 buys), 0 (1), 2 (0)
    assert scores[1].argsort(descending=True).tolist() == [3, 1, 4, 0, 2]
    # user 2: carted 4 (viewed too) > viewed 0 > unseen 1 (1 buy) > 2, 3 (no buys)
    order2 = scores[2].argsort(descending=True).tolist()
    assert order2[:3] == [4, 0, 1] and sorted(order2[3:]) == [2, 3]
    # the exact encoding: K * deep + count + pop / (1 + max pop), K = 3 behaviors
    assert scores[0].tolist() == pytest.approx([3 + 1 + 1 / 3, 6 + 2 + 1 / 3, 3 + 1 + 0,
                                                6 + 1 + 0, 2 / 3])


def test_history_evaluated_by_full_ranking(data):
    ev = FullRankingEvaluator(data, 'test', ks=(1, 2))
    result = ev.evaluate(History(data))
    # training buys masked: user 0 ranks [1, 3, 0, 2] -> test item 1 first; user 1 [3, 2]
    # (items 0, 4 bought) -> 3 first; user 2 [4, 0, ...] (1 bought) -> item 2 not in top 2
    assert result['hr@1'] == pytest.approx(2 / 3)
    assert result['hr@2'] == pytest.approx(2 / 3)


def _dense_graph(pairs, num_users, num_items):
    """Behavior t's normalised adjacency over the U + I nodes, D^-1/2 A D^-1/2 by hand."""
    n = num_users + num_items
    a = np.zeros((n, n))
    for u, i in pairs:
        a[u, num_users + i] = a[num_users + i, u] = 1
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-12)), 0)
    return inv[:, None] * a * inv[None, :]


def _dense_queries(pairs, num_users, num_items, users, one_hot):
    """q_t: the user's one-hot node, plus (the authors' code) its behavior-t items / d_t(u)."""
    q = np.zeros((num_users + num_items, len(users)))
    for col, u in enumerate(users):
        q[u, col] = 1
        items = sorted({i for v, i in pairs if v == u})
        if not one_hot:
            for i in items:
                q[num_users + i, col] = 1 / len(items)
    return q


def dense_cascadingrank(behaviors, num_users, num_items, users, alpha, beta, tolerance,
                        max_iter, query='interactions'):
    """CascadingRank's power iteration by hand, step for step: for each behavior t, r^(0) =
    q_t (the first reading: r_{t-1}), r^(k) = gamma A_t r^(k-1) + alpha q_t + beta r_{t-1},
    r_0 = q_1; stop after the first k whose mean L1 change over the batch is <= tolerance (the
    first reading: whose largest one is < tolerance) or at max_iter. Returns the target's item
    scores [B, I] and the iterations per behavior."""
    gamma, one_hot = 1 - alpha - beta, query == 'one_hot'
    r_prev, iterations = None, []
    for pairs in behaviors:
        a_norm = _dense_graph(pairs, num_users, num_items)
        q = _dense_queries(pairs, num_users, num_items, users, one_hot)
        if r_prev is None:
            r_prev = q
        r = r_prev.copy() if one_hot else q.copy()
        for k in range(1, max_iter + 1):
            r_next = gamma * a_norm @ r + alpha * q + beta * r_prev
            change = np.abs(r_next - r).sum(0)
            r = r_next
            if (change.max() < tolerance) if one_hot else (change.mean() <= tolerance):
                break
        iterations.append(k)
        r_prev = r
    return r_prev[num_users:].T, iterations


# 4 users, 5 items, 3 behaviors; user 3 has no view and no cart (an all-zero item half)
VIEW4 = VIEW + [(3, 2)]
GRAPH4 = dict(view=[p for p in VIEW4 if p[0] != 3], cart=CART, buy=BUY + [(3, 2), (3, 3)])


@pytest.fixture
def data4():
    return make_multiplex(4, 5, ['view', 'cart', 'buy'],
                          {b: ei(p) for b, p in GRAPH4.items()}, test=ei(TEST + [(3, 0)]))


@pytest.mark.parametrize('query', ['interactions', 'one_hot'])
@pytest.mark.parametrize('alpha, beta', [(0.0, 0.9), (0.3, 0.6), (0.7, 0.2), (0.5, 0.5)])
def test_cascadingrank_recomputes_the_iteration_by_hand(data4, alpha, beta, query):
    users = [0, 1, 2, 3]
    for tolerance, max_iter in [(1e-4, 100), (1e-9, 1000), (1e-4, 2)]:
        model = CascadingRank(data4, alpha=alpha, beta=beta, tolerance=tolerance,
                              max_iter=max_iter, query=query)
        expected, iterations = dense_cascadingrank(list(GRAPH4.values()), 4, 5, users, alpha,
                                                   beta, tolerance, max_iter, query)
        got = model.score(torch.tensor(users)).double().numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        if tolerance >= 1e-4:    # at 1e-9 float32 round-off (the model's) decides the step
            assert model.iterations == iterations
    # a candidate subset scores the same as the full row
    cand = torch.tensor([[4, 0], [2, 3], [1, 1], [0, 4]])
    full = model.score(torch.tensor(users))
    assert torch.allclose(model.score(torch.tensor(users), cand), full.gather(1, cand))


@pytest.mark.parametrize('query', ['interactions', 'one_hot'])
def test_cascadingrank_converges_to_the_fixed_point(data4, query):
    """(I - gamma A_t) r_t = alpha q_t + beta r_{t-1}, r_0 = q_1, by direct solves."""
    alpha, beta = 0.3, 0.6
    r = None
    for pairs in GRAPH4.values():
        q = _dense_queries(pairs, 4, 5, [0, 1, 2, 3], query == 'one_hot')
        r = q if r is None else r
        r = np.linalg.solve(np.eye(9) - 0.1 * _dense_graph(pairs, 4, 5), alpha * q + beta * r)
    model = CascadingRank(data4, alpha=alpha, beta=beta, tolerance=1e-10, max_iter=1000,
                          query=query)
    np.testing.assert_allclose(model.score(torch.arange(4)).double().numpy(), r[4:].T,
                               rtol=0, atol=1e-6)


def test_cascadingrank_without_smoothing_is_the_queries_mixed_by_hand(data):
    """gamma = 0 (alpha + beta = 1): r_t = alpha q_t + beta r_{t-1} exactly, one step each."""
    model = CascadingRank(data, alpha=0.25, beta=0.75)
    # user 0 viewed 0, 1, 2 (1/3 each), carted 1, 3 (1/2 each), bought 4 (1)
    q_view = np.array([1 / 3, 1 / 3, 1 / 3, 0, 0])
    q_cart = np.array([0, 1 / 2, 0, 1 / 2, 0])
    q_buy = np.array([0, 0, 0, 0, 1.0])
    r1 = 0.25 * q_view + 0.75 * q_view
    r2 = 0.25 * q_cart + 0.75 * r1
    r3 = 0.25 * q_buy + 0.75 * r2
    np.testing.assert_allclose(model.score(torch.tensor([0]))[0].double().numpy(), r3,
                               atol=1e-7)
    assert model.queries(torch.tensor([0]), 1)[3:, 0].tolist() == pytest.approx(
        [0, 0.5, 0, 0.5, 0])
    # the first reading: no item half, so an item scores only through the graph (0 here)
    assert CascadingRank(data, alpha=0.25, beta=0.75, query='one_hot').score(
        torch.tensor([0])).abs().max() == 0


@pytest.mark.parametrize('kwargs, match', [
    (dict(alpha=0.6, beta=0.6), 'alpha \\+ beta <= 1'),
    (dict(alpha=-0.1, beta=0.5), 'alpha, beta in \\[0, 1\\]'),
    (dict(alpha=float('nan')), 'alpha, beta in \\[0, 1\\]'),
    (dict(beta=1.5), 'alpha, beta in \\[0, 1\\]'),
    (dict(alpha='x'), 'numbers for alpha'),
    (dict(alpha=0.0, beta=0.0), 'ranks nothing'),
    (dict(tolerance=0), 'tolerance > 0'),
    (dict(tolerance=float('inf')), 'tolerance > 0'),
    (dict(max_iter=0), 'max_iter >= 1'),
    (dict(max_iter=2.5), 'max_iter >= 1'),
    (dict(max_iter=True), 'max_iter >= 1'),
    (dict(query='onehot'), "query must be one of \\('interactions', 'one_hot'\\)"),
])
def test_cascadingrank_rejects_bad_hyperparameters(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CascadingRank(data, **kwargs)


def test_baselines_are_registered_and_parameter_free(data):
    for name in ('mostpop', 'history', 'cascadingrank'):
        assert name in MODELS
        model = build_model(name, data)
        assert list(model.parameters()) == [] and model.trainable is False
        assert model.batch_source(data) is None
        with pytest.raises(RuntimeError, match='training-free'):
            model.loss({})
    with pytest.raises(TypeError):
        build_model('mostpop', data, embedding_dim=8)


def test_trainer_runs_no_epoch_for_a_training_free_model(tmp_path):
    graph = synthetic(num_users=120, num_items=80, seed=1)
    model = History(graph)
    trainer = Trainer(model, model.batch_source(graph), FullRankingEvaluator(graph, 'val'),
                      epochs=5, progress=False, out_dir=tmp_path)
    assert trainer.optimizer is None
    summary = trainer.fit()
    assert summary['epochs_run'] == 0 and summary['best_epoch'] == 0
    assert summary['best_val'] == FullRankingEvaluator(graph, 'val').evaluate(model)
    assert (tmp_path / 'best.pt').is_file()
    log = [json.loads(line) for line in (tmp_path / 'log.jsonl').read_text().splitlines()]
    assert log == [{'epoch': 0, 'training_free': True, 'val': summary['best_val']}]


@pytest.mark.parametrize('model', ['mostpop', 'history', 'cascadingrank'])
def test_cli_trains_and_evaluates_a_baseline(tmp_path, capsys, model):
    out = tmp_path / model
    assert main(['train', '--model', model, '--dataset', 'synthetic', '--out', str(out),
                 '--no-progress', '--ks', '10,20']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['epochs_run'] == 0 and set(metrics['test']) == {'hr@10', 'hr@20', 'ndcg@10',
                                                                   'ndcg@20'}
    assert set(metrics['shortcuts']['share']) == {'view', 'cart'}
    assert main(['evaluate', '--checkpoint', str(out / 'best.pt'),
                 '--out', str(tmp_path / 'again.json')]) == 0
    printed = capsys.readouterr().out
    assert f"{metrics['test']['hr@10']:.4f}" in printed
    again = json.loads((tmp_path / 'again.json').read_text())
    assert again['test'] == metrics['test'] and again['test_novel'] == metrics['test_novel']


def test_cli_passes_model_options_to_cascadingrank(tmp_path):
    out = tmp_path / 'cr'
    assert main(['train', '--model', 'cascadingrank', '--dataset', 'synthetic', '--out', str(out),
                 '--no-progress', '--set', 'alpha=0.3', '--set', 'beta=0.6']) == 0
    assert json.loads((out / 'metrics.json').read_text())['config']['model_kwargs'] == {
        'alpha': 0.3, 'beta': 0.6}
    assert main(['train', '--model', 'cascadingrank', '--dataset', 'synthetic', '--out', str(out),
                 '--no-progress', '--set', 'alpha=0.9', '--set', 'beta=0.9']) == 2


def test_shortcut_shares_by_hand(data):
    shares = shortcut_shares(data)
    # test pairs (0, 1): viewed and carted; (1, 3): viewed and carted; (2, 2): neither
    assert shares == {'split': 'test', 'pairs': 3, 'share': {'view': 2 / 3, 'cart': 2 / 3},
                      'any': 2 / 3}
    assert 'view 66.7%' in format_shortcuts(shares)
    assert shortcut_shares(data, 'val')['pairs'] == 0


def test_cli_datasets_prints_the_shortcuts(capsys):
    assert main(['datasets', '--shortcuts']) == 0
    out = capsys.readouterr().out
    assert "test: " in out and "already in the user's training view" in out


# --------------------------------------------------------------------------------------------
# real data (slow)
# --------------------------------------------------------------------------------------------

SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'


@pytest.mark.slow
def test_shortcut_shares_of_the_shared_datasets():
    from mbgraph.data.datasets import load_dataset
    if not (SHARED_DATA / 'taobao-mbgmn').is_dir() or \
            not (SHARED_DATA / 'retailrocket-sslrec').is_dir():
        pytest.skip(f'taobao-mbgmn or retailrocket-sslrec not under {SHARED_DATA}')
    taobao = shortcut_shares(load_dataset('taobao', SHARED_DATA))
    assert taobao['pairs'] == 15449
    assert round(100 * taobao['share']['pv'], 1) == 81.9      # the numbers
    assert round(100 * taobao['share']['cart'], 1) == 21.9
    retail = shortcut_shares(load_dataset('retailrocket', SHARED_DATA))
    assert retail['pairs'] == 2174 and retail['any'] == 0.0


def test_graph_runs_report_the_test_without_the_history_shortcut(tmp_path):
    """metrics.json's ``test_novel`` ranks the test pairs whose item the user met under no
    behavior in training, with every training item masked: History's own-items-first order has
    nothing left to put first and falls back to popularity, so it scores exactly MostPop's;
    the papers' protocol (``test``) keeps the user's viewed and carted items as candidates."""
    metrics = {}
    for model in ('history', 'mostpop'):
        out = tmp_path / model
        assert main(['train', '--model', model, '--dataset', 'synthetic', '--out', str(out),
                     '--no-progress', '--ks', '10,20']) == 0
        metrics[model] = json.loads((out / 'metrics.json').read_text())
    novel = metrics['history']['test_novel']
    assert novel == metrics['mostpop']['test_novel']
    assert set(novel) == {*metrics['history']['test'], 'pairs'}
    assert metrics['history']['test']['hr@10'] > novel['hr@10']
    # the pairs counted by hand: test pairs whose item is in no training edge of its user
    from mbgraph import load_dataset
    data = load_dataset('synthetic')
    test = data['user', 'buy', 'item'].test_edge_index
    met = {(u, i) for et in data.edge_types if et[0] == 'user'
           for u, i in data[et].edge_index.t().tolist()}
    expected = sum((u, i) not in met for u, i in test.t().tolist())
    assert 0 < novel['pairs'] == expected < test.size(1)
