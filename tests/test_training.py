import json

import pytest
import torch

from mbgraph.data import make_multiplex
from mbgraph.data.sampling import BPRSampler
from mbgraph.evaluation import FullRankingEvaluator
from mbgraph.models import LightGCN
from mbgraph.training import Trainer, move_to, resolve_device


def small_graph(seed=0, users=40, items=30):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randperm(users * items, generator=g)[:300]
    buy = torch.stack([keys // items, keys % items])
    # hold out one buy of each of the first 10 users as val, another as test
    val, test, train = [], [], []
    seen = {}
    for u, i in buy.t().tolist():
        c = seen.get(u, 0)
        seen[u] = c + 1
        (val if c == 0 and u < 10 else test if c == 1 and u < 10 else train).append((u, i))

    def t(pairs):
        return torch.tensor(pairs, dtype=torch.long).t()
    return make_multiplex(users, items, ['buy'], {'buy': t(train)}, val=t(val), test=t(test))


def make_trainer(data, tmp_path, epochs, **kw):
    torch.manual_seed(0)
    model = LightGCN(data, embedding_dim=8, num_layers=1)
    return Trainer(model, BPRSampler(data, ['buy'], batch_size=64, seed=3),
                   FullRankingEvaluator(data, 'val', ks=(5,)), epochs=epochs, lr=0.01,
                   monitor='ndcg@5', out_dir=tmp_path, progress=False, seed=0, **kw)


def test_fit_writes_log_checkpoints_and_summary(tmp_path):
    data = small_graph()
    trainer = make_trainer(data, tmp_path, epochs=3)
    summary = trainer.fit()
    assert summary['epochs_run'] == 3 and 1 <= summary['best_epoch'] <= 3
    assert summary['epoch_seconds'] > 0 and summary['peak_rss_mb'] > 0
    lines = (tmp_path / 'log.jsonl').read_text().splitlines()
    assert [json.loads(l)['epoch'] for l in lines] == [1, 2, 3]
    assert 'ndcg@5' in json.loads(lines[0])['val']
    assert (tmp_path / 'checkpoint.pt').exists() and (tmp_path / 'best.pt').exists()
    # checkpoints are plain tensors/data: they load with weights_only=True
    torch.load(tmp_path / 'checkpoint.pt', weights_only=True)
    # the best weights are restored at the end
    best = torch.load(tmp_path / 'best.pt', weights_only=True)['model']
    assert torch.equal(best['user_emb.weight'], trainer.model.user_emb.weight.detach())


def test_resume_continues_identically(tmp_path):
    data = small_graph()
    straight = make_trainer(data, tmp_path / 'a', epochs=4)
    straight.fit()
    first = make_trainer(data, tmp_path / 'b', epochs=2)
    first.fit()
    resumed = make_trainer(data, tmp_path / 'b', epochs=4)
    resumed.fit(resume=True)
    assert resumed.epoch == 4
    last_a = torch.load(tmp_path / 'a' / 'checkpoint.pt', weights_only=True)['model']
    last_b = torch.load(tmp_path / 'b' / 'checkpoint.pt', weights_only=True)['model']
    for k in last_a:
        assert torch.equal(last_a[k], last_b[k]), k
    assert [h['loss'] for h in straight.history] == [h['loss'] for h in resumed.history]


def test_early_stopping(tmp_path):
    data = small_graph()
    trainer = make_trainer(data, tmp_path, epochs=50, patience=2)
    trainer.val_evaluator.evaluate = lambda model, device=None: {'ndcg@5': 0.5}
    trainer.val_evaluator.last_seconds = 0.0
    summary = trainer.fit()
    # epoch 1 sets the best; epochs 2 and 3 do not improve -> stop
    assert summary['epochs_run'] == 3 and summary['best_epoch'] == 1


def test_nan_loss_is_named(tmp_path):
    data = small_graph()
    trainer = make_trainer(data, tmp_path, epochs=1)
    trainer.model.loss = lambda batch: torch.tensor(float('nan'), requires_grad=True)
    with pytest.raises(FloatingPointError, match='epoch 1, batch 0'):
        trainer.fit()


def test_unknown_monitor_and_bad_device(tmp_path):
    data = small_graph()
    trainer = make_trainer(data, tmp_path, epochs=1)
    trainer.monitor = 'auc'
    with pytest.raises(KeyError, match="'auc'"):
        trainer.fit()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='CUDA is not available'):
            resolve_device('cuda')


def test_move_to_nested():
    batch = {'a': torch.zeros(1), 'b': [torch.ones(1), (torch.ones(2),)]}
    moved = move_to(batch, torch.device('cpu'))
    assert moved['b'][1][0].shape == (2,)


def test_loss_decreases(tmp_path):
    data = small_graph()
    trainer = make_trainer(data, tmp_path, epochs=5)
    trainer.fit()
    losses = [h['loss'] for h in trainer.history]
    assert losses[-1] < losses[0]
