"""SASRec (Kang & McAuley 2018): causality, padding, the BCE/BPR losses by hand, scoring
through the evaluators, training and train_sequence_model."""
import math

import numpy as np
import pytest
import torch

from mbgraph.training import Trainer
from mbgraph_seq.data import SequenceBatch
from mbgraph_seq.models import SEQ_MODELS, SASRec
from mbgraph_seq.nn.transformer import causal_attention_mask
from mbgraph_seq.train import train_sequence_model

from helpers import cyclic_walks as synthetic


def test_attention_mask():
    mask = torch.tensor([[False, True, True]])
    allowed = causal_attention_mask(mask)[0, 0]
    assert allowed.tolist() == [[True, False, False],     # padding row: itself only
                                [False, True, False],
                                [False, True, True]]


@pytest.mark.parametrize('use_behaviors', [False, True])
def test_output_at_t_ignores_later_positions(use_behaviors):
    torch.manual_seed(0)
    ds = synthetic()
    model = SASRec(ds, dim=16, num_layers=2, num_heads=2, use_behaviors=use_behaviors).eval()
    batch = next(iter(ds.train_source(batch_size=8).batches(0)))
    h = model.encode(batch)
    t = 7
    items, behaviors = batch.items.clone(), batch.behaviors.clone()
    items[:, t + 1:] = torch.randint(1, ds.num_items + 1, items[:, t + 1:].shape)
    behaviors[:, t + 1:] = torch.randint(1, 4, behaviors[:, t + 1:].shape)
    changed = SequenceBatch(batch.users, items, behaviors, items > 0, batch.pos,
                            batch.pos_behaviors, batch.neg)
    h2 = model.encode(changed)
    real = batch.mask[:, :t + 1]
    assert torch.allclose(h[:, :t + 1][real], h2[:, :t + 1][real], atol=1e-5)
    assert not torch.allclose(h[:, t + 1:], h2[:, t + 1:], atol=1e-3)
    # padding rows are zero, and what sits in padded items never matters
    assert (h[~batch.mask] == 0).all()


def test_losses_by_hand():
    torch.manual_seed(1)
    ds = synthetic()
    batch = next(iter(ds.train_source(batch_size=4, num_negatives=2).batches(0)))

    def sig(x):
        return 1 / (1 + math.exp(-x))

    for kind in ('bce', 'bpr'):
        torch.manual_seed(1)
        model = SASRec(ds, dim=8, num_layers=1, loss=kind).eval()
        with torch.no_grad():
            loss, _ = model.loss(batch)
            h, E = model.encode(batch), model.item_weight().detach()
        terms = []
        for r in range(4):
            for t in range(batch.max_len):
                p = int(batch.pos[r, t])
                if p == 0:
                    continue
                sp = float(h[r, t] @ E[p])
                sn = [float(h[r, t] @ E[n]) for n in batch.neg[r, t]]
                if kind == 'bce':
                    terms.append(-math.log(sig(sp)) - np.mean([math.log(1 - sig(x)) for x in sn]))
                else:
                    terms.append(np.mean([-math.log(sig(sp - x)) for x in sn]))
        assert math.isclose(float(loss), float(np.mean(terms)), rel_tol=1e-5)


def test_scores_use_the_split_inputs():
    torch.manual_seed(2)
    ds = synthetic()
    model = SASRec(ds, dim=8, num_layers=1).eval()
    users = ds.split_pairs('test')[0][:5]
    with pytest.raises(RuntimeError, match='prepare_eval'):
        model.score(users)
    model.prepare_eval('test')
    test_scores = model.score(users)
    assert test_scores.shape == (5, ds.num_items)
    h = model.encode(ds.eval_inputs('test'))[:5, -1]
    assert torch.allclose(test_scores, h @ model.item_weight()[1:].t(), atol=1e-5)
    model.prepare_eval('val')
    assert not torch.allclose(model.score(users), test_scores)
    cand = torch.tensor([[3, 1, 2]] * 5)
    assert torch.allclose(model.score(users, cand), model.score(users).gather(1, cand))


def test_sasrec_trains_and_learns_the_cycle(tmp_path):
    ds = synthetic()
    torch.manual_seed(0)
    model = SEQ_MODELS['sasrec'](ds, dim=16, num_layers=1, dropout=0.0)
    src = ds.train_source(batch_size=4, num_negatives=2, seed=0)
    trainer = Trainer(model, src, None, epochs=2, lr=1e-2, progress=False, seed=0)
    trainer.fit()
    first, second = trainer.history[0]['loss'], trainer.history[1]['loss']
    assert second < 0.9 * first, (first, second)
    metrics = train_sequence_model('sasrec', ds, epochs=3, lr=1e-2, batch_size=8, dim=16,
                                   num_layers=1, num_negatives_eval=20, progress=False,
                                   out_dir=tmp_path)
    # next item = item + 1 for everyone: easily learnt
    assert metrics['test']['hr@10'] > 0.8
    assert set(metrics) >= {'test', 'test_full', 'val', 'best_epoch', 'epochs_run',
                            'epoch_seconds', 'eval_seconds', 'peak_rss_mb', 'tuned_parameters',
                            'total_parameters', 'protocol'}
    assert metrics['tuned_parameters'] == metrics['total_parameters']
    assert (tmp_path / 'metrics.json').exists()
    # the work of an epoch: every position with a next training event is a target, each
    # with one negative (the default), as counted by hand from the training sequences
    targets = sum(max(min(int(n), ds.max_len + 1) - 1, 0) if n >= 2 else 0
                  for n in ds._train_end() - ds.start)
    assert metrics['train_targets_per_epoch'] == targets
    assert metrics['train_triples_per_epoch'] == {'all': targets}
    assert metrics['seconds_per_million_triples'] == pytest.approx(
        metrics['epoch_seconds'] / targets * 1e6)
    cut = train_sequence_model('ebm', ds, epochs=1, batch_size=64, dim=8, num_blocks=2,
                               num_negatives_eval=20, progress=False, num_negatives=3)
    assert cut['train_targets_per_epoch'] == sum(max(int(n) - 1, 0)
                                                 for n in ds._train_end() - ds.start)
    assert cut['train_triples_per_epoch'] == {'all': 3 * cut['train_targets_per_epoch']}
    with pytest.raises(ValueError, match='DPCPL only'):
        train_sequence_model('sasrec', ds, stage='pretrain', epochs=1)
