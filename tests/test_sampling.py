import pytest
import torch

from mbgraph.data import edge_type
from mbgraph.data.sampling import BPRSampler, InteractionSet, sample_negatives


def test_interaction_set():
    s = InteractionSet(torch.tensor([[0, 1, 1], [2, 0, 3]]), num_items=4)
    got = s.contains(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([2, 3, 0, 3, 2]))
    assert got.tolist() == [True, False, True, True, False]


def test_negatives_avoid_positives():
    pos = torch.tensor([[0, 0, 0, 1], [0, 1, 2, 3]])
    s = InteractionSet(pos, 4)
    g = torch.Generator().manual_seed(0)
    users = torch.zeros(500, dtype=torch.long)
    neg = sample_negatives(users, s, 4, g)
    assert set(neg.tolist()) == {3}          # the only item user 0 never touched
    neg = sample_negatives(torch.ones(500, dtype=torch.long), s, 4, g, num=3)
    assert neg.shape == (500, 3) and 3 not in neg.unique().tolist()


def test_negative_impossible_is_named():
    s = InteractionSet(torch.tensor([[0, 0], [0, 1]]), 2)
    with pytest.raises(ValueError, match=r'users \[0\]'):
        sample_negatives(torch.tensor([0]), s, 2, torch.Generator().manual_seed(0), max_rounds=5)


def test_bpr_sampler(tiny):
    sampler = BPRSampler(tiny, ['cart', 'buy'], batch_size=2, seed=1)
    assert sampler.num_samples == 2 and len(sampler) == 1
    batches = list(sampler.batches(0))
    assert len(batches) == 1 and set(batches[0]) == {'cart', 'buy'}
    for b, t in batches[0].items():
        pos = set(map(tuple, tiny[edge_type(b)].edge_index.t().tolist()))
        for u, i, j in t.t().tolist():
            assert (u, i) in pos and (u, j) not in pos
    # every target pair is walked exactly once per epoch
    buy = batches[0]['buy']
    assert sorted(map(tuple, buy[:2].t().tolist())) == [(0, 1), (2, 3)]
    # reproducible per (seed, epoch); another epoch differs in order or negatives
    again = list(sampler.batches(0))
    assert all(torch.equal(again[0][b], batches[0][b]) for b in batches[0])


def test_bpr_sampler_shards_ranks(tiny):
    sampler = BPRSampler(tiny, ['view'], batch_size=4, num_samples=8, seed=0)
    full = list(sampler.batches(2))
    r0 = list(sampler.batches(2, rank=0, world_size=2))
    r1 = list(sampler.batches(2, rank=1, world_size=2))
    for f, a, b in zip(full, r0, r1):
        merged = torch.stack([a['view'], b['view']], dim=2).reshape(3, -1)
        assert torch.equal(merged, f['view'])


def test_bpr_sampler_errors(tiny):
    with pytest.raises(ValueError, match=r"unknown behaviors \['fav'\]"):
        BPRSampler(tiny, ['fav'])
    with pytest.raises(ValueError, match='batch_size'):
        BPRSampler(tiny, batch_size=0)
