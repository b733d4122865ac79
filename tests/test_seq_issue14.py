"""Issue 14 on the sequence side: the mostpop twin (model, CLI, suite), the data options
(>= k interactions filter, seeded tie order), DPCPL's prompt scale / prompt lr / compactness
sign, PoMRec's authors' aggregator and early-stopping rule, HMAR's MovieLens config. Each test
is worked out by hand and fails when the setting it checks is dropped."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mbgraph.cli import main
from mbgraph.evaluation import FullRankingEvaluator, SampledEvaluator
from mbgraph.models.baselines import MostPop
from mbgraph.training import Trainer
from mbgraph.validation import OptionError
from mbgraph_seq.data import SequenceDataset
from mbgraph_seq.models import DPCPL, EBM, SEQ_MODELS, PoMRec, SequenceMostPop, sequence_pipeline
from mbgraph_seq.nn.prompts import compactness_loss
from mbgraph_seq.train import train_sequence_model

NAMES = ['click', 'buy']


def _log_dataset(**kw):
    # user 0: 4 buys, user 1: 3 buys + a click, user 2: 2 buys; items 0..4
    log = [(0, 0, 1, 1), (0, 1, 1, 2), (0, 2, 1, 3), (0, 3, 1, 4),
           (1, 0, 0, 1), (1, 0, 1, 2), (1, 1, 1, 3), (1, 4, 1, 4),
           (2, 0, 1, 1), (2, 2, 1, 2)]
    u, i, b, t = (np.array(c) for c in zip(*log))
    return SequenceDataset.from_log(u, i, b, t, NAMES, num_users=3, num_items=5, max_len=4,
                                    **kw)


# -------------------------------------------------------------------------------- mostpop
def test_sequence_mostpop_counts_the_training_target_pairs_by_hand():
    ds = _log_dataset()
    # held out: user 0 val 2 test 3, user 1 val 1 test 4; user 2 (2 buys) trains only.
    # training buys: user 0 {0, 1}, user 1 {0}, user 2 {0, 2} -> counts [3, 1, 1, 0, 0]
    model = SequenceMostPop(ds)
    assert model.popularity.tolist() == [3.0, 1.0, 1.0, 0.0, 0.0]
    assert isinstance(model, MostPop) and list(model.parameters()) == []
    model.prepare_eval('test')
    scores = model.score(torch.tensor([0, 1]), torch.tensor([[3, 0], [4, 2]]))
    assert scores.tolist() == [[0.0, 3.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match='unknown split'):
        model.prepare_eval('train')


def test_mostpop_takes_the_sequence_pipeline_on_movielens_only():
    assert sequence_pipeline('mostpop', 'ml-latest-small')
    assert sequence_pipeline('MostPop', 'movielens')
    assert not sequence_pipeline('mostpop', 'synthetic')
    assert not sequence_pipeline('mostpop', 'taobao')
    assert sequence_pipeline('sasrec', 'synthetic') and not sequence_pipeline('lightgcn',
                                                                              'ml-latest-small')
    assert 'mostpop' not in SEQ_MODELS     # graph configs keep the graph model


def _movielens(tmp_path, users=6):
    d = tmp_path / 'ml-latest-small'
    d.mkdir()
    rows = ['userId,movieId,rating,timestamp']
    rng = np.random.default_rng(0)
    for u in range(1, users + 1):
        movies = rng.permutation(np.arange(1, 16))[:9]
        for k, m in enumerate(movies):
            rows.append(f'{u},{m},{4.5 if k % 3 else 2.0},{100 * u + k}')
    (d / 'ratings.csv').write_text('\n'.join(rows) + '\n')
    (d / 'tags.csv').write_text('userId,movieId,tag,timestamp\n1,1,good,100\n')
    return tmp_path


def test_cli_trains_mostpop_on_movielens_with_the_sequence_protocol(tmp_path):
    root = _movielens(tmp_path)
    out = tmp_path / 'mp'
    assert main(['train', '--model', 'mostpop', '--dataset', 'ml-latest-small',
                 '--data-root', str(root), '--negatives', '5', '--out', str(out),
                 '--no-progress']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['epochs_run'] == 0 and metrics['protocol']['sampled_negatives'] == 5
    assert {'hr@10', 'ndcg@10'} <= set(metrics['test']) and 'hr@10' in metrics['test_full']
    # the sampled number by hand: the same evaluator on the popularity vector
    ds = SequenceDataset.from_movielens(root / 'ml-latest-small')
    pop = torch.bincount(ds.train_pairs('like')[1], minlength=ds.num_items).float()

    class Pop(torch.nn.Module):
        def score(self, users, items=None):
            return pop[items]
    ev = SampledEvaluator(ds.split_pairs('test'), ds.num_items, ds.history_pairs(),
                          num_negatives=5, ks=(10, 20), seed=0, split='test')
    assert metrics['test']['hr@10'] == pytest.approx(ev.evaluate(Pop())['hr@10'])
    assert 'shortcuts' not in metrics      # not the graph pipeline's metrics
    # full ranking twice: the target's training items masked, and every training item
    class PopAll(torch.nn.Module):
        def score(self, users, items=None):
            return pop.expand(users.numel(), -1).clone()
    graph = ds.to_multiplex()
    for key, which in (('test_full', None), ('test_full_unseen', 'all')):
        full = FullRankingEvaluator(graph, 'test', ks=(10, 20), mask_behaviors=which)
        assert metrics[key] == pytest.approx(full.evaluate(PopAll()))
    novel = FullRankingEvaluator(graph, 'test', ks=(10, 20), mask_behaviors='all',
                                 novel_only=True)
    assert metrics['test_novel'] == pytest.approx({**novel.evaluate(PopAll()),
                                                   'pairs': novel.num_pairs})
    assert 'full_ranking_unseen' in metrics['protocol']


def test_test_seconds_counts_the_novel_pass_too(tmp_path, monkeypatch):
    """``test_seconds`` is every test pass of a sequence run, the ``test_novel`` one included:
    a stand-in novel pass that takes 7 s of a fake clock shows up in it."""
    import mbgraph_seq.train as seq_train
    ds = SequenceDataset.from_movielens(_movielens(tmp_path) / 'ml-latest-small')
    clock = iter([100.0, 107.0])

    class Clock:
        @staticmethod
        def perf_counter():
            return next(clock)
    monkeypatch.setattr(seq_train, 'time', Clock)
    monkeypatch.setattr(seq_train, 'novel_test', lambda *a, **k: {'pairs': 0})
    pop = torch.bincount(ds.train_pairs('like')[1], minlength=ds.num_items).float()

    class Pop(torch.nn.Module):
        def score(self, users, items=None):
            return pop.expand(users.numel(), -1).clone() if items is None else pop[items]
    out = seq_train._evaluate(Pop(), ds, num_negatives=5, seed=0, device='cpu')
    assert out['test_novel'] == {'pairs': 0}
    assert out['test_seconds'] >= 7.0


def test_every_sequence_table_has_a_mostpop_row_under_its_protocol():
    from benchmarks.config import expand, load_suite
    for table in load_suite('seq'):
        rows = [r for r in table.rows if r.model == 'mostpop']
        assert len(rows) == 1, table.id
        assert 'test_full.hr@10' in table.columns and 'test.hr@10' in table.columns
        run = [run for row, run in expand(table, seeds=1) if row.model == 'mostpop'][0]
        cmd = run.command('/data', Path('/tmp/x'))
        assert '--resume' in cmd and '--overwrite' not in cmd   # sequence runs resume too
        assert cmd[cmd.index('--negatives') + 1] == str(table.hyper['negatives'])
    protocols = {t.hyper['negatives'] for t in load_suite('seq')}
    assert {99, 100, 999} <= protocols


def test_graph_tables_keep_the_graph_mostpop():
    from benchmarks.config import expand, load_suite
    for table in load_suite('leaderboard'):
        for row, run in expand(table, seeds=1):
            if row.model == 'mostpop':
                assert '--resume' in run.command(None, Path('/tmp/x'))


# -------------------------------------------------------------------------------- data options
def test_min_interactions_filters_to_a_fixed_point_by_hand():
    # k = 2: item 4 (1 event) goes, then user 2 (left with 1 event) goes, then item 3 (its
    # only other user gone) goes: one pass would keep user 2 and item 3
    log = [(0, 0, 1, 1), (0, 1, 1, 2), (0, 2, 1, 3),
           (1, 0, 1, 1), (1, 1, 1, 2), (1, 2, 1, 3),
           (2, 3, 1, 1), (2, 4, 1, 2),
           (3, 3, 0, 1), (3, 0, 1, 2), (3, 1, 1, 3)]
    u, i, b, t = (np.array(c) for c in zip(*log))
    ds = SequenceDataset.from_log(u, i, b, t, NAMES, num_users=4, num_items=5, max_len=4,
                                  min_interactions=2,
                                  user_raw_id=np.array([10, 11, 12, 13]))
    assert (ds.num_users, ds.num_items) == (3, 3)
    assert ds.user_raw_id.tolist() == [10, 11, 13]
    assert ds.item_raw_id.tolist() == [0, 1, 2]      # the old contiguous ids
    assert ds.sequence(2)['items'].tolist() == [0, 1]   # user 13 lost item 3
    assert ds.options['min_interactions'] == 2
    unfiltered = SequenceDataset.from_log(u, i, b, t, NAMES, num_users=4, num_items=5)
    assert (unfiltered.num_users, unfiltered.num_items) == (4, 5)
    with pytest.raises(ValueError, match='min_interactions'):
        SequenceDataset.from_log(u, i, b, t, NAMES, min_interactions=-1)
    with pytest.raises(ValueError, match='no user and item'):
        SequenceDataset.from_log(u, i, b, t, NAMES, min_interactions=50)


def test_tie_order_shuffle_moves_only_ties_and_is_seeded():
    n = 40
    u = np.zeros(n, dtype=np.int64)
    i = np.arange(n)
    t = np.repeat(np.arange(n // 4), 4)          # runs of 4 events with equal times
    b = np.ones(n, dtype=np.int64)
    log_order = SequenceDataset.from_log(u, i, b, t, NAMES, max_len=n)
    assert log_order.sequence(0)['items'].tolist() == list(range(n))
    a = SequenceDataset.from_log(u, i, b, t, NAMES, max_len=n, tie_order='shuffle', seed=3)
    again = SequenceDataset.from_log(u, i, b, t, NAMES, max_len=n, tie_order='shuffle',
                                     seed=3)
    other = SequenceDataset.from_log(u, i, b, t, NAMES, max_len=n, tie_order='shuffle',
                                     seed=4)
    sa = a.sequence(0)['items']
    assert sa.tolist() != list(range(n))
    assert sa.tolist() == again.sequence(0)['items'].tolist()
    assert sa.tolist() != other.sequence(0)['items'].tolist()
    # every event stays within its run of equal times
    assert sorted(sa.tolist()) == list(range(n)) and (sa // 4).tolist() == (i // 4).tolist()
    assert (a.sequence(0)['timestamps'] == t).all()
    with pytest.raises(ValueError, match='tie_order'):
        SequenceDataset.from_log(u, i, b, t, NAMES, tie_order='random')


def test_cli_passes_the_data_options(tmp_path):
    root = _movielens(tmp_path)
    out = tmp_path / 'mp20'
    assert main(['train', '--model', 'mostpop', '--dataset', 'ml-latest-small',
                 '--data-root', str(root), '--negatives', '3', '--out', str(out),
                 '--no-progress', '--min-interactions', '3', '--tie-order', 'shuffle']) == 0
    config = json.loads((out / 'metrics.json').read_text())['config']
    assert config['data_options'] == {'min_interactions': 3, 'tie_order': 'shuffle',
                                      'min_target': 3}


# -------------------------------------------------------------------------------- DPCPL
def _dpcpl(ds, **kw):
    torch.manual_seed(0)
    backbone = EBM(ds, dim=16, num_layers=2, num_blocks=2, prompt_slots=2).eval()
    return DPCPL(ds, backbone=backbone, prompt_dim=8, num_factors=2, num_tokens=2, **kw)


def test_calibrated_prompts_have_the_backbones_token_scale_and_move_the_model():
    ds = SequenceDataset.synthetic(num_users=60, num_items=40, max_len=10, seed=0)
    batch = next(iter(ds.train_source(16, 1, 0, prefixes='all', target_only=True).batches(1)))
    small = _dpcpl(ds, prompt_init='small').eval()
    model = _dpcpl(ds).eval()
    assert model.prompt_init == 'backbone'
    with torch.no_grad():
        events = model.backbone.event_embedding(batch)
        target = events[batch.mask].norm(dim=-1).mean()
        before = torch.stack(model.make_prompts(batch).tokens).norm(dim=-1).mean()
        factor = model.calibrate_prompts(batch)
        after = torch.stack(model.make_prompts(batch).tokens).norm(dim=-1).mean()
    assert factor == pytest.approx(float(target / before), rel=1e-5)
    assert float(after) == pytest.approx(float(target), rel=1e-4) and float(before) < 1.0
    with torch.no_grad():
        base = model.backbone.encode(batch)           # zero prompts: the backbone itself
        moved = (model.user_representation(batch) - base).norm(dim=-1) / base.norm(dim=-1)
        barely = (small.user_representation(batch) - base).norm(dim=-1) / base.norm(dim=-1)
    assert float(moved.mean()) > 10 * float(barely.mean())


def test_default_compactness_sign_raises_the_coding_rate():
    ds = SequenceDataset.synthetic(num_users=40, num_items=30, max_len=8, seed=1)
    batch = next(iter(ds.train_source(16, 1, 0, prefixes='all', target_only=True).batches(1)))
    model = _dpcpl(ds, prompt_init='small', compactness_weight=1.0)
    assert model.compactness_sign == -1

    def rate():
        out = model.make_prompts(batch)
        return float(compactness_loss(out.factors, out.layer_prompts, model.prompts.N,
                                      model.prompts.L))
    r0 = rate()
    out = model.make_prompts(batch)
    comp = compactness_loss(out.factors, out.layer_prompts, model.prompts.N, model.prompts.L)
    (model.compactness_sign * comp).backward()        # the loss's compactness part
    with torch.no_grad():
        for p in model.tuned_parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    assert rate() > r0


def test_prompt_lr_is_the_tuning_stages_own(tmp_path):
    ds = SequenceDataset.synthetic(num_users=50, num_items=30, max_len=8, seed=2)
    metrics = train_sequence_model('dpcpl', ds, epochs=1, pretrain_epochs=1, lr=1e-3,
                                   prompt_lr=7e-3, out_dir=tmp_path, progress=False,
                                   num_negatives_eval=10, dim=16, num_blocks=2,
                                   prompt_dim=8, num_factors=2, num_tokens=2)
    pre = [json.loads(x) for x in (tmp_path / 'pretrain' / 'log.jsonl').read_text()
           .splitlines()]
    tune = [json.loads(x) for x in (tmp_path / 'prompt' / 'log.jsonl').read_text()
            .splitlines()]
    assert pre[0]['lr'] == pytest.approx(1e-3) and tune[0]['lr'] == pytest.approx(7e-3)
    assert metrics['config']['prompt_lr'] == 7e-3 and metrics['prompt_scale'] > 1.0
    with pytest.raises(ValueError, match='DPCPL only'):
        train_sequence_model('sasrec', ds, epochs=1, prompt_lr=1e-3, progress=False)


# -------------------------------------------------------------------------------- PoMRec
def test_pomrec_defaults_to_the_papers_single_prompt_set():
    ds = _log_dataset()
    model = PoMRec(ds, dim=4, num_prompts=2)
    assert model.extractor_prompts.shape == (1, 2, 4)
    assert model.aggregator.kind == 'mlp'


def test_pomrec_linear_aggregator_is_one_layer_and_softmax_by_hand():
    ds = _log_dataset()
    torch.manual_seed(0)
    model = PoMRec(ds, dim=4, num_prompts=1, num_interests=2, aggregator='linear').eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    agg = model.aggregator
    assert not hasattr(agg, 'mlp1') and agg.linear.weight.shape == (2, 4)
    h = torch.randn(1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    a = torch.softmax(agg.w2(torch.tanh(agg.w1(h[:, :2]))).squeeze(-1), dim=1)   # real only
    v = (a.unsqueeze(-1) * h[:, :2]).sum(1)
    z = torch.softmax(v @ agg.linear.weight.t() + agg.linear.bias, dim=-1)
    assert torch.allclose(agg.weights(h, mask), z, atol=1e-6)
    with pytest.raises(ValueError, match='weights must be'):
        PoMRec(ds, dim=4, aggregator='gru')


class _Flat:
    """A validation 'evaluator' whose metrics never improve."""
    last_seconds = 0.0

    def evaluate(self, model, device=None):
        return {'ndcg@5': 0.5, 'ndcg@10': 0.5}


def test_no_early_stop_before_min_epochs():
    ds = SequenceDataset.synthetic(num_users=30, num_items=20, max_len=6, seed=0)
    runs = {}
    for min_epochs in (0, 5):
        model = SEQ_MODELS['sasrec'](ds, dim=8, num_layers=1)
        trainer = Trainer(model, ds.train_source(64, 1, 0), _Flat(), epochs=8, patience=1,
                          monitor='ndcg@5', progress=False, min_epochs=min_epochs)
        runs[min_epochs] = trainer.fit()
    assert runs[0]['epochs_run'] == 2 and runs[5]['epochs_run'] == 5
    assert runs[5]['best_epoch'] == 1


def test_monitor_adds_its_cutoff_to_validation():
    ds = SequenceDataset.synthetic(num_users=40, num_items=30, max_len=6, seed=0)
    metrics = train_sequence_model('pomrec', ds, epochs=1, progress=False, monitor='ndcg@5',
                                   num_negatives_eval=10, dim=8, max_len=6,
                                   weight_decay=1e-6)
    assert 'ndcg@5' in metrics['val'] and metrics['config']['monitor'] == 'ndcg@5'
    assert metrics['config']['weight_decay'] == 1e-6
    with pytest.raises(OptionError, match='monitor'):
        train_sequence_model('pomrec', ds, epochs=1, progress=False, monitor='auc')


def test_pomrec_grid_has_lambda_03_1_3_with_k2():
    from benchmarks.config import load_suite
    table = {t.id: t for t in load_suite('seq')}['pomrec_grid']
    grid = sorted(r.set['dispersion_weight'] for r in table.rows
                  if r.model == 'pomrec' and 'aggregator' not in r.set)
    assert grid == [0.3, 1.0, 3.0]
    for row in table.rows:
        if row.model == 'pomrec':
            assert row.set['num_interests'] == 2 and row.set['behavior_prompts'] is False
    assert table.hyper['negatives'] == 999


def test_pomrec_tables_use_the_authors_stopping_rule():
    from benchmarks.config import load_suite
    for table in load_suite('seq'):
        for row in table.rows:
            if row.model == 'pomrec':
                merged = {**row.set}
                assert merged['monitor'] == 'ndcg@5' and merged['min_epochs'] == 21
                assert math.isclose(merged['weight_decay'], 1e-6)


# -------------------------------------------------------------------------------- HMAR
def test_hmar_movielens_config_is_the_authors():
    from benchmarks.config import load_suite
    table = {t.id: t for t in load_suite('seq')}['hmar_t3']
    row = [r for r in table.rows if r.model == 'hmar'][0]
    assert row.set['dim'] == 50 and row.set['dropout'] == 0.4
    assert row.set['alpha'] == {'like': 0.8} and row.hyper['max_len'] == 120


# -------------------------------------------------------------------------------- hold-out data
def test_sslrec_folder_with_event_times_reads_as_sequences(tmp_path):
    import pickle

    import scipy.sparse as sp
    shape = (2, 8)
    mats = {   # values = event times
        'view': sp.csr_matrix(([10, 11, 12, 20], ([0, 0, 0, 1], [0, 1, 2, 3])), shape=shape),
        'cart': sp.csr_matrix(([13], ([0], [1])), shape=shape),
        'buy': sp.csr_matrix(([14, 15, 21], ([0, 0, 1], [1, 2, 3])), shape=shape),
    }
    for name, m in mats.items():
        (tmp_path / f'train_mat_{name}.pkl').write_bytes(pickle.dumps(m))
    test = sp.coo_matrix(([16.0], ([0], [3])), shape=shape)
    (tmp_path / 'test_mat.pkl').write_bytes(pickle.dumps(test))
    ds = SequenceDataset.from_sslrec(tmp_path)
    assert ds.behavior_names == ['view', 'cart', 'buy'] and ds.num_items == 8
    s = ds.sequence(0)
    assert s['items'].tolist() == [0, 1, 2, 1, 1, 2, 3]
    assert s['behaviors'].tolist() == [0, 0, 0, 1, 2, 2, 2]
    assert s['timestamps'].tolist() == [10, 11, 12, 13, 14, 15, 16]
    assert ds.split_pairs('test').tolist() == [[0], [3]]       # the last buy by time
    assert ds.split_pairs('val').tolist() == [[0], [2]]
    out = tmp_path / 'run'
    assert main(['train', '--model', 'sasrec', '--dataset', 'retailrocket', '--data-root',
                 str(tmp_path), '--negatives', '1', '--epochs', '1', '--dim', '8', '--out',
                 str(out), '--no-progress']) == 0
    assert json.loads((out / 'metrics.json').read_text())['config']['dataset'] == tmp_path.name
    ones = sp.csr_matrix(([1, 1], ([0, 1], [0, 1])), shape=shape)
    for name in mats:
        (tmp_path / f'train_mat_{name}.pkl').write_bytes(pickle.dumps(ones))
    (tmp_path / 'test_mat.pkl').unlink()
    with pytest.raises(ValueError, match='no event'):
        SequenceDataset.from_sslrec(tmp_path)
