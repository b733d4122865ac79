import math

import pytest
import torch
from torch import nn

from mbgraph.data import make_multiplex
from mbgraph.evaluation import FullRankingEvaluator, SampledEvaluator


class FixedScores(nn.Module):
    """A 'model' whose scores are a fixed user x item table."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(table, dtype=torch.float), requires_grad=False)

    def score(self, users, items=None):
        s = self.table[users]
        return s if items is None else torch.gather(s, 1, items)


def graph():
    # 2 users, 5 items; target buy: training (0,0) (1,4); val (0,3); test (0,1) (1,2)
    return make_multiplex(2, 5, ['buy'], {'buy': torch.tensor([[0, 1], [0, 4]])},
                          val=torch.tensor([[0], [3]]), test=torch.tensor([[0, 1], [1, 2]]))


def test_full_ranking_masks_training_and_val():
    # user 0: item 0 (train) and 3 (val) masked -> item 1 ranks 1st
    # user 1: item 4 (train) masked -> 1, 3, 2: test item 2 is 3rd
    table = [[9.0, 5.0, 1.0, 8.0, 2.0],
             [0.0, 3.0, 1.0, 2.0, 9.0]]
    ev = FullRankingEvaluator(graph(), 'test', ks=(1, 3))
    m = ev.evaluate(FixedScores(table))
    assert m['hr@1'] == pytest.approx(0.5)
    assert m['hr@3'] == pytest.approx(1.0)
    assert m['ndcg@3'] == pytest.approx((1.0 + 1 / math.log2(4)) / 2)
    assert ev.last_seconds is not None
    # without masking the other split, user 0's val item 3 outranks the test item
    ev2 = FullRankingEvaluator(graph(), 'test', ks=(1,), mask_other_split=False)
    assert ev2.evaluate(FixedScores(table))['hr@1'] == pytest.approx(0.0)


def test_full_ranking_can_mask_every_behavior_but_keeps_the_held_out_item():
    # 2 users, 5 items, view -> buy; training buys (0,0) (1,4); views (0,2) (0,1) (1,3);
    # test (0,1) (1,2): user 0 viewed its own test item 1 in training
    data = make_multiplex(2, 5, ['view', 'buy'],
                          {'view': torch.tensor([[0, 0, 1], [2, 1, 3]]),
                           'buy': torch.tensor([[0, 1], [0, 4]])},
                          test=torch.tensor([[0, 1], [1, 2]]))
    table = [[9.0, 5.0, 7.0, 1.0, 2.0],
             [0.0, 3.0, 1.0, 8.0, 9.0]]
    # the papers' protocol: buys masked only; user 0 ranks 2 (viewed) above 1 -> rank 2;
    # user 1 ranks 3 (viewed), 1 above 2 -> rank 3
    papers = FullRankingEvaluator(data, 'test', ks=(1, 2)).evaluate(FixedScores(table))
    assert papers['hr@1'] == 0.0 and papers['hr@2'] == pytest.approx(0.5)
    # every training item masked: user 0's item 2 goes, its viewed test item 1 stays -> rank 1;
    # user 1's item 3 goes -> 1, 2: rank 2
    unseen = FullRankingEvaluator(data, 'test', ks=(1, 2), mask_behaviors='all')
    m = unseen.evaluate(FixedScores(table))
    assert m['hr@1'] == pytest.approx(0.5) and m['hr@2'] == pytest.approx(1.0)
    assert unseen.mask_behaviors == ('view', 'buy')
    named = FullRankingEvaluator(data, 'test', ks=(1, 2), mask_behaviors=['view'])
    assert named.evaluate(FixedScores(table)) == m
    with pytest.raises(ValueError, match="unknown behaviors \\['cart'\\]"):
        FullRankingEvaluator(data, 'test', mask_behaviors=['cart'])
    with pytest.raises(ValueError, match="None, 'all' or a list"):
        FullRankingEvaluator(data, 'test', mask_behaviors='views')
    # novel pairs only: user 0's test item 1 was viewed, so only user 1's pair (1, 2) is
    # left; its candidates without items 4 (bought) and 3 (viewed): 1, 2, 0 -> rank 2
    novel = FullRankingEvaluator(data, 'test', ks=(1, 2), mask_behaviors='all',
                                 novel_only=True)
    assert novel.num_pairs == 1 and novel.users.tolist() == [1]
    m = novel.evaluate(FixedScores(table))
    assert m['hr@1'] == 0.0 and m['hr@2'] == 1.0
    assert m['ndcg@2'] == pytest.approx(1 / math.log2(3))
    only_viewed = make_multiplex(2, 5, ['view', 'buy'],
                                 {'view': torch.tensor([[0, 1], [1, 2]]),
                                  'buy': torch.tensor([[0, 1], [0, 4]])},
                                 test=torch.tensor([[0, 1], [1, 2]]))
    with pytest.raises(ValueError, match='none is left to evaluate'):
        FullRankingEvaluator(only_viewed, 'test', novel_only=True)


def test_full_ranking_batches_agree():
    torch.manual_seed(0)
    table = torch.randn(2, 5)
    a = FullRankingEvaluator(graph(), 'test', ks=(2,), batch_size=1).evaluate(FixedScores(table))
    b = FullRankingEvaluator(graph(), 'test', ks=(2,), batch_size=64).evaluate(FixedScores(table))
    assert a == b


def test_missing_or_empty_split():
    data = make_multiplex(1, 2, ['buy'], {'buy': torch.tensor([[0], [0]])})
    with pytest.raises(ValueError, match="no 'val' split"):
        FullRankingEvaluator(data, 'val')
    with pytest.raises(ValueError, match='empty split'):
        SampledEvaluator(torch.zeros(2, 0, dtype=torch.long), 5,
                         torch.zeros(2, 0, dtype=torch.long))


def test_sampled_negatives():
    pairs = torch.tensor([[0, 1], [1, 2]])
    history = torch.tensor([[0, 0, 1], [0, 3, 4]])
    ev = SampledEvaluator(pairs, 50, history, num_negatives=20, ks=(1, 21), seed=7)
    cand = ev.candidates
    assert cand.shape == (2, 21)
    assert cand[:, 0].tolist() == [1, 2]
    assert not ({0, 1, 3} & set(cand[0, 1:].tolist()))
    assert not ({4, 2} & set(cand[1, 1:].tolist()))
    # a model that scores the held-out item highest gets HR@1 = 1, one that scores it lowest 0
    best = torch.zeros(2, 50)
    best[0, 1] = best[1, 2] = 1.0
    assert ev.evaluate(FixedScores(best))['hr@1'] == 1.0
    worst = torch.ones(2, 50)
    worst[0, 1] = worst[1, 2] = 0.0
    m = ev.evaluate(FixedScores(worst))
    assert m['hr@1'] == 0.0 and m['hr@21'] == 1.0
    assert m['ndcg@21'] == pytest.approx(1 / math.log2(22))
    # seeded: same seed, same candidates
    assert torch.equal(SampledEvaluator(pairs, 50, history, 20, seed=7).candidates, cand)


def test_prepare_eval_hook_gets_split():
    class SplitAware(FixedScores):
        seen = []

        def prepare_eval(self, split):
            self.seen.append(split)

    m = SplitAware(torch.zeros(2, 5))
    FullRankingEvaluator(graph(), 'val').evaluate(m)
    FullRankingEvaluator(graph(), 'test').evaluate(m)
    SampledEvaluator(torch.tensor([[0], [1]]), 5, torch.tensor([[0], [0]]), 2,
                     split='test').evaluate(m)
    assert m.seen == ['val', 'test', 'test']


def test_sampled_single_negative():
    ev = SampledEvaluator(torch.tensor([[0], [1]]), 5, torch.tensor([[0], [0]]), num_negatives=1,
                          ks=(1,))
    assert ev.candidates.shape == (1, 2)
    table = torch.zeros(1, 5)
    table[0, 1] = 1.0
    assert ev.evaluate(FixedScores(table))['hr@1'] == 1.0


def test_fresh_scores_are_masked_in_place_with_the_same_metrics():
    from mbgraph.data.datasets import synthetic
    from mbgraph.models import build_model
    data = synthetic(num_users=60, num_items=40, seed=1)
    lightgcn = build_model('lightgcn', data, embedding_dim=8)
    assert lightgcn.fresh_scores is True
    # mbgraph's heads compute new tensors; a head from elsewhere is not assumed to, nor a
    # model without the attribute
    composed = build_model('mbcgcn', data, embedding_dim=8)
    assert composed.fresh_scores is True
    assert build_model('copf', data, embedding_dim=8).fresh_scores is True

    class ForeignHead(type(composed.head)):
        def score_all(self, emb, users, behavior):
            return super().score_all(emb, users, behavior)

    composed.head.__class__ = ForeignHead
    assert composed.fresh_scores is False
    assert not hasattr(build_model('mostpop', data), 'fresh_scores')

    class Cloned(torch.nn.Module):        # the same scores through the cloning path
        def __init__(self, model):
            super().__init__()
            self.model = model

        def score(self, users, items=None):
            return self.model.score(users, items)

    ev = FullRankingEvaluator(data, 'test', ks=[5, 10], batch_size=16)
    lightgcn.eval()
    first = ev.evaluate(lightgcn)
    assert first == ev.evaluate(Cloned(lightgcn)) == ev.evaluate(lightgcn)
