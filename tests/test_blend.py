"""ScoreBlend (mbgraph.models.blend) recomputed by hand, the evaluator's one-pass variants,
the validation fit, `mbgraph blend`, and the `--init-from` pre-training it goes with
(LightGCN on another behavior, tables copied into a new run)."""
import json
import math

import pytest
import torch
from torch import nn

from mbgraph.cli import main
from mbgraph.data import make_multiplex
from mbgraph.evaluation import FullRankingEvaluator
from mbgraph.models import build_model
from mbgraph.models.blend import ScoreBlend, fit_blend_weights, standardise, weight_grid
from mbgraph.pipeline import RunSetupError, init_tables_from


class Table(nn.Module):
    """A member whose scores are a fixed [users, items] table."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer('table', torch.as_tensor(table, dtype=torch.float32))

    def score(self, users, items=None):
        s = self.table[users]
        return s if items is None else s.gather(1, items)


def ei(pairs):
    return torch.tensor(pairs, dtype=torch.long).t()


@pytest.fixture
def data():
    # 4 users, 5 items; view -> buy; every user has a validation and a test buy
    return make_multiplex(4, 5, ['view', 'buy'],
                          {'view': ei([(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (3, 0)]),
                           'buy': ei([(0, 0), (1, 1), (2, 2), (3, 3)])},
                          val=ei([(0, 1), (1, 2), (2, 3), (3, 4)]),
                          test=ei([(0, 4), (1, 0), (2, 1), (3, 2)]), name='blendtiny')


def hand_z(row):
    n = len(row)
    mean = sum(row) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in row) / (n - 1))
    return [(x - mean) / std for x in row]


def test_blend_scores_by_hand():
    a = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 10.0, 0.0]]
    b = [[5.0, -1.0, 2.0, 2.0], [3.0, 1.0, 4.0, 1.0]]
    blend = ScoreBlend([Table(a), Table(b)], [1.0, 0.3])
    got = blend.score(torch.tensor([0, 1]))
    for u in range(2):
        za, zb = hand_z(a[u]), hand_z(b[u])
        want = [x + 0.3 * y for x, y in zip(za, zb)]
        assert got[u].tolist() == pytest.approx(want, abs=1e-6)
    # candidate scores are the same numbers
    items = torch.tensor([[3, 0], [2, 1]])
    assert torch.allclose(blend.score(torch.tensor([0, 1]), items), got.gather(1, items))
    # a user whose scores are all equal contributes zeros, not NaN
    assert standardise(torch.ones(1, 4)).tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_blend_rejects_bad_input():
    with pytest.raises(ValueError, match='one weight per member'):
        ScoreBlend([Table([[1.0]])], [1.0, 2.0])
    with pytest.raises(ValueError, match='finite'):
        ScoreBlend([Table([[1.0, 2.0]])], [float('nan')])
    with pytest.raises(ValueError, match='same users and items'):
        ScoreBlend([Table([[1.0, 2.0]]), Table([[1.0, 2.0, 3.0]])], [1, 1]).score(
            torch.tensor([0]))
    with pytest.raises(ValueError, match="member 'b' returned non-finite"):
        ScoreBlend([Table([[1.0, 2.0]]), Table([[1.0, float('-inf')]])], [1, 1],
                   names=['a', 'b']).score(torch.tensor([0]))
    with pytest.raises(RuntimeError, match='not trained'):
        ScoreBlend([Table([[1.0]])], [1.0]).loss(None)
    assert weight_grid(3, [0.5, 0, 0.5]) == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.5],
                                            [1.0, 0.5, 0.0], [1.0, 0.5, 0.5]]


def test_variants_equal_separate_evaluations(data):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    ev = FullRankingEvaluator(data, 'test', ks=[1, 3])
    weights = [[1.0, 0.0], [1.0, 0.7], [1.0, 4.0]]
    blend = ScoreBlend([Table(a), Table(b)], [1.0, 1.0])

    def variants(users):
        z = blend.member_scores(users)
        return (torch.tensordot(torch.tensor(w), z, dims=1) for w in weights)

    together = ev.evaluate_variants(variants, len(weights))
    for w, got in zip(weights, together):
        alone = ev.evaluate(ScoreBlend([Table(a), Table(b)], w))
        assert got == pytest.approx(alone)
    with pytest.raises(ValueError, match='expected 4'):
        ev.evaluate_variants(variants, 4)


def test_fit_picks_the_validation_best(data):
    # member 0 puts each user's validation item last; member 1 puts it first: the more
    # weight on member 1, the better, so the fit takes the grid's largest value
    val = {0: 1, 1: 2, 2: 3, 3: 4}
    bad = torch.zeros(4, 5)
    good = torch.zeros(4, 5)
    for u, i in val.items():
        bad[u] = torch.arange(5.0)
        bad[u, i] = -10.0
        good[u, i] = 10.0
    blend = ScoreBlend([Table(bad), Table(good)], [1.0, 1.0])
    fit = fit_blend_weights(blend, FullRankingEvaluator(data, 'val', ks=[1]), [0, 0.5, 3])
    assert fit['weights'] == [1.0, 3.0] and blend.weights == [1.0, 3.0]
    assert fit['best']['hr@1'] == 1.0 and fit['table'][0]['hr@1'] < 1.0
    # equal validation metrics: the earlier (smaller) weight wins
    same = ScoreBlend([Table(good), Table(good)], [1.0, 1.0])
    assert fit_blend_weights(same, FullRankingEvaluator(data, 'val', ks=[1]),
                             [0, 1])['weights'] == [1.0, 0.0]


def test_lightgcn_on_another_behavior(data):
    model = build_model('lightgcn', data, behavior='view', embedding_dim=4)
    assert model.train_behaviors == ['view'] and model.graph_behaviors == ['view']
    batch = next(iter(model.batch_source(data, batch_size=4, seed=0).batches(1)))
    assert set(batch) == {'view'}
    loss, parts = model.loss(batch)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="behavior='cart' is not a behavior"):
        build_model('lightgcn', data, behavior='cart')


def test_init_tables_from(tmp_path):
    pre = tmp_path / 'pre'
    assert main(['train', '--model', 'lightgcn', '--set', 'behavior=view', '--dataset',
                 'synthetic', '--epochs', '1', '--dim', '8', '--out', str(pre),
                 '--no-progress']) == 0
    run = tmp_path / 'run'
    assert main(['train', '--model', 'mbcgcn', '--dataset', 'synthetic', '--epochs', '1',
                 '--dim', '8', '--init-from', str(pre / 'checkpoint.pt'), '--out', str(run),
                 '--no-progress']) == 0
    config = json.loads((run / 'metrics.json').read_text())['config']
    assert config['init_from']['model'] == 'lightgcn'
    assert len(config['init_from']['sha256']) == 64
    # the copied tables are the pre-trained ones (checked before any training step)
    from mbgraph.cli import load_data
    from mbgraph.validation import load_verified
    data = load_data('synthetic', None, None, 0)
    model = build_model('mbcgcn', data, embedding_dim=8)
    init_tables_from(model, pre / 'checkpoint.pt', data)
    weights = load_verified(pre / 'checkpoint.pt')['model']
    assert torch.equal(model.user_emb.weight, weights['user_emb.weight'])
    assert torch.equal(model.item_emb.weight, weights['item_emb.weight'])
    with pytest.raises(RunSetupError, match='embedding_dim'):
        init_tables_from(build_model('mbcgcn', data, embedding_dim=16), pre / 'checkpoint.pt',
                         data)
    from mbgraph.data.multiplex import merge_validation
    merge_validation(data)          # the paper protocol's data: other training pairs
    with pytest.raises(RunSetupError, match='other data'):
        init_tables_from(model, pre / 'checkpoint.pt', data)
    with pytest.raises(RunSetupError, match='no such file'):
        init_tables_from(model, tmp_path / 'missing.pt', data)
    assert main(['train', '--model', 'sasrec', '--dataset', 'synthetic', '--epochs', '1',
                 '--init-from', str(pre / 'checkpoint.pt'), '--out',
                 str(tmp_path / 'seq')]) == 2


def test_cli_blend(tmp_path, capsys):
    run = tmp_path / 'lg'
    assert main(['train', '--model', 'lightgcn', '--dataset', 'synthetic', '--epochs', '1',
                 '--dim', '8', '--out', str(run), '--no-progress']) == 0
    out = tmp_path / 'blend'
    assert main(['blend', '--member', str(run / 'best.pt'), '--member', 'cascadingrank',
                 '--grid', '0,0.5,2', '--out', str(out)]) == 0
    m = json.loads((out / 'metrics.json').read_text())
    assert m['model'] == 'blend:lightgcn+cascadingrank' and m['protocol'] == 'validation'
    assert m['weights'] in ([1.0, 0.0], [1.0, 0.5], [1.0, 2.0])
    assert len(m['fit']['table']) == 3 and m['val'] is not None
    best = max(m['fit']['table'], key=lambda r: r['ndcg@10'])
    assert best['ndcg@10'] == pytest.approx(m['val']['ndcg@10'])
    for key in ('eval_seconds', 'peak_rss_mb', 'test_users', 'members', 'note'):
        assert key in m
    # the novel test pairs, as a training run reports them: counted here by hand
    from mbgraph.cli import load_data
    from mbgraph.data import edge_type, split_edge_index
    data = load_data('synthetic', None, None, 0)
    seen = {(int(u), int(i)) for b in data.behaviors
            for u, i in data[edge_type(b)].edge_index.t().tolist()}
    test_pairs = split_edge_index(data, 'test').t().tolist()
    novel = sum((u, i) not in seen for u, i in test_pairs)
    assert 0 < novel < len(test_pairs) and m['test_novel']['pairs'] == novel
    assert 0.0 <= m['test_novel']['hr@10'] <= 1.0
    # the fitted weights applied again give the same test metrics (a run folder is its best.pt)
    again = tmp_path / 'again'
    assert main(['blend', '--member', str(run), '--member', 'cascadingrank',
                 '--weights-from', str(out / 'metrics.json'), '--out', str(again)]) == 0
    assert json.loads((again / 'metrics.json').read_text())['test'] == pytest.approx(m['test'])
    # weights of another blend's members (here: the same two in the other order) are refused
    assert main(['blend', '--member', 'cascadingrank', '--member', str(run), '--weights-from',
                 str(out / 'metrics.json'), '--out', str(tmp_path / 'swapped')]) == 2
    assert 'same order' in capsys.readouterr().err
    capsys.readouterr()
    # refused: one member, an untrained model as a member, an existing output, a
    # paper-protocol run without weights
    assert main(['blend', '--member', 'cascadingrank', '--out', str(tmp_path / 'x')]) == 2
    for flag, value in (('--grid', '0,x'), ('--weights', '1,nan'), ('--ks', '0')):
        assert main(['blend', '--member', str(run), '--member', 'history', flag, value,
                     '--out', str(tmp_path / 'x')]) == 2
        assert flag in capsys.readouterr().err
    assert main(['blend', '--member', str(run / 'best.pt'), '--member', 'lightgcn',
                 '--out', str(tmp_path / 'x')]) == 2
    assert 'a model to train' in capsys.readouterr().err
    assert main(['blend', '--member', str(run / 'best.pt'), '--member', 'history',
                 '--out', str(out)]) == 2
    assert 'already holds' in capsys.readouterr().err
    paper = tmp_path / 'paper'
    assert main(['train', '--model', 'lightgcn', '--dataset', 'synthetic', '--epochs', '1',
                 '--dim', '8', '--protocol', 'paper', '--out', str(paper),
                 '--no-progress']) == 0
    assert main(['blend', '--member', str(paper / 'checkpoint.pt'), '--member', 'history',
                 '--out', str(tmp_path / 'y')]) == 2
    assert 'no validation split' in capsys.readouterr().err
    assert main(['blend', '--member', str(paper / 'checkpoint.pt'), '--member',
                 str(run / 'best.pt'), '--out', str(tmp_path / 'y')]) == 2
    assert 'different data or protocols' in capsys.readouterr().err
    assert main(['blend', '--member', str(paper / 'checkpoint.pt'), '--member', 'history',
                 '--weights', '1,0.2', '--out', str(tmp_path / 'z')]) == 0
