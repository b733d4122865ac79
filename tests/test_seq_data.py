"""mbgraph_seq.data: sequences, padding, truncation, leave-one-out, time split, statistics,
negatives, the mbgraph views -- all against values worked out by hand."""
import math

import numpy as np
import pytest
import torch

from mbgraph.data import validate
from mbgraph.evaluation import FullRankingEvaluator, SampledEvaluator
from mbgraph_seq.data import EvalInputs, SequenceBatch, SequenceDataset

NAMES = ['click', 'cart', 'buy']
CLICK, CART, BUY = 0, 1, 2

# (user, item, behavior, time) in file order, deliberately not sorted by time
LOG = [
    (0, 1, CLICK, 10),   # row 0
    (1, 2, CLICK, 5),    # row 1
    (0, 2, BUY, 12),     # row 2  tie with row 3: stays first
    (0, 2, CLICK, 12),   # row 3
    (0, 4, BUY, 11),     # row 4  earlier than rows 2-3
    (0, 2, CART, 13),    # row 5
    (0, 5, BUY, 14),     # row 6  validation event of user 0
    (0, 3, BUY, 15),     # row 7  test event of user 0
    (1, 1, BUY, 6),      # row 8
    (1, 0, CART, 7),     # row 9
    (2, 5, CLICK, 1),    # row 10
]
# user 0 in time order: (1 click) (4 buy) (2 buy) (2 click) (2 cart) | (5 buy) val | (3 buy) test
# user 1: (2 click) (1 buy) (0 cart): one buy -> no held-out event; user 2: one click


def columns(log=LOG):
    u, i, b, t = (np.array(c) for c in zip(*log))
    return u, i, b, t


def make(max_len=8, log=LOG, **kw):
    u, i, b, t = columns(log)
    return SequenceDataset.from_log(u, i, b, t, NAMES, num_users=3, num_items=6,
                                    max_len=max_len, **kw)


def test_time_order_ties_keep_file_order():
    ds = make()
    s = ds.sequence(0)
    assert s['items'].tolist() == [1, 4, 2, 2, 2, 5, 3]
    assert s['behaviors'].tolist() == [CLICK, BUY, BUY, CLICK, CART, BUY, BUY]
    assert s['timestamps'].tolist() == [10, 11, 12, 12, 13, 14, 15]
    assert ds.sequence(1)['items'].tolist() == [2, 1, 0]
    assert ds.target == 'buy' and ds.num_behaviors == 3


def test_behavior_names_accepted_and_unknown_rejected():
    u, i, b, t = columns()
    by_name = SequenceDataset.from_log(u, i, np.array([NAMES[k] for k in b]), t, NAMES,
                                       num_users=3, num_items=6)
    assert by_name.sequence(0)['behaviors'].tolist() == make().sequence(0)['behaviors'].tolist()
    with pytest.raises(ValueError, match=r"unknown behaviors \['fav'\]"):
        SequenceDataset.from_log([0], [0], ['fav'], [0], NAMES)
    with pytest.raises(ValueError, match='unknown behavior codes'):
        SequenceDataset.from_log([0], [0], [3], [0], NAMES)
    with pytest.raises(ValueError, match='item id 9 outside'):
        SequenceDataset.from_log([0], [9], [0], [0], NAMES, num_items=6)


def test_unsorted_timestamps_raise_without_sort_and_sorted_input_agrees():
    u, i, b, t = columns()
    with pytest.raises(ValueError, match='unsorted timestamps for user 0: log row 4'):
        SequenceDataset.from_log(u, i, b, t, NAMES, num_users=3, num_items=6, sort=False)
    # the same log sorted by (time, file order) within users, users interleaved
    order = np.lexsort((np.arange(len(t)), t))
    pre = SequenceDataset.from_log(u[order], i[order], b[order], t[order], NAMES, num_users=3,
                                   num_items=6, sort=False)
    ref = make()
    for user in range(3):
        assert pre.sequence(user)['items'].tolist() == ref.sequence(user)['items'].tolist()
        assert pre.sequence(user)['behaviors'].tolist() == ref.sequence(user)['behaviors'].tolist()


def test_leave_one_out_on_target_behavior():
    ds = make()
    assert ds.split_pairs('test').tolist() == [[0], [3]]
    assert ds.split_pairs('val').tolist() == [[0], [5]]
    with pytest.raises(ValueError, match="unknown split 'train'"):
        ds.split_pairs('train')


def test_eval_inputs_left_padded_and_strictly_before():
    ds = make(max_len=8)
    test = ds.eval_inputs('test')
    # history before the test buy of item 3 (includes the validation item 5); ids + 1
    assert test.users.tolist() == [0]
    assert test.items.tolist() == [[0, 0, 2, 5, 3, 3, 3, 6]]
    assert test.behaviors.tolist() == [[0, 0, 1, 3, 3, 1, 2, 3]]
    assert test.mask.tolist() == [[False, False] + [True] * 6]
    assert test.timestamps.tolist() == [[0, 0, 10, 11, 12, 12, 13, 14]]
    assert test.pos.eq(0).all() and test.neg.shape == (1, 8, 0)
    assert test.pos_behaviors.tolist() == [[0] * 7 + [BUY + 1]]
    val = ds.eval_inputs('val')
    assert val.items.tolist() == [[0, 0, 0, 2, 5, 3, 3, 3]]


def test_truncation_keeps_most_recent_and_is_explicit():
    ds = make(max_len=3)
    assert ds.eval_inputs('test').items.tolist() == [[3, 3, 6]]
    src = ds.train_source(batch_size=8)
    row = src.users_np.tolist().index(0)
    # user 0 trains on [1, 4, 2, 2] -> inputs last 3 of (1, 4, 2, 2), targets (4, 2, 2, 2)
    assert src.items[row].tolist() == [5, 3, 3]
    assert src.pos[row].tolist() == [3, 3, 3]
    with pytest.raises(ValueError, match=r'user 0 has a history of 6 events, longer than '
                                         r'max_len=5, and truncate=False'):
        make(max_len=5, truncate=False)
    assert make(max_len=6, truncate=False).eval_inputs('test').mask.all()


def test_train_source_full_sequences_and_negatives():
    ds = make(max_len=8)
    src = ds.train_source(batch_size=8, num_negatives=3, seed=1)
    assert src.num_sequences == 2 and len(src) == 1          # user 2 has a single event
    (batch,) = list(src.batches(epoch=1))
    rows = {u: r for r, u in enumerate(batch.users.tolist())}
    r0, r1 = rows[0], rows[1]
    assert batch.items[r0].tolist() == [0, 0, 0, 0, 2, 5, 3, 3]
    assert batch.pos[r0].tolist() == [0, 0, 0, 0, 5, 3, 3, 3]
    assert batch.pos_behaviors[r0].tolist() == [0, 0, 0, 0, 3, 3, 1, 2]
    assert batch.items[r1].tolist() == [0] * 6 + [3, 2]
    assert batch.pos[r1].tolist() == [0] * 6 + [2, 1]
    assert batch.mask.tolist() == (batch.pos > 0).tolist()
    # negatives: at target positions only, never a training item of the user
    assert batch.neg.shape == (2, 8, 3)
    assert ((batch.neg > 0).all(-1) == (batch.pos > 0)).all()
    train_items = {0: {1, 4, 2}, 1: {2, 1, 0}}
    for u, r in rows.items():
        drawn = set((batch.neg[r][batch.pos[r] > 0] - 1).flatten().tolist())
        assert drawn and not drawn & train_items[u]
    # seeded by (seed, epoch)
    again = next(iter(src.batches(epoch=1)))
    assert torch.equal(again.neg, batch.neg) and torch.equal(again.users, batch.users)
    other = next(iter(src.batches(epoch=2)))
    assert other.neg.shape == batch.neg.shape


def test_train_source_prefixes_and_target_only():
    ds = make(max_len=4)
    src = ds.train_source(batch_size=100, prefixes='all')
    (batch,) = list(src.batches(0))
    got = sorted((u, tuple(x), int(p[-1]), int(pb[-1])) for u, x, p, pb in
                 zip(batch.users.tolist(), batch.items.tolist(), batch.pos, batch.pos_behaviors))
    expected = sorted([
        (0, (0, 0, 0, 2), 5, 3), (0, (0, 0, 2, 5), 3, 3), (0, (0, 2, 5, 3), 3, 1),
        (0, (2, 5, 3, 3), 3, 2), (1, (0, 0, 0, 3), 2, 3), (1, (0, 0, 3, 2), 1, 2)])
    assert got == expected
    assert (batch.pos[:, :-1] == 0).all() and (batch.neg[:, :-1] == 0).all()
    only = ds.train_source(batch_size=100, prefixes='all', target_only=True)
    (tb,) = list(only.batches(0))
    assert sorted(zip(tb.users.tolist(), tb.pos[:, -1].tolist())) == [(0, 3), (0, 5), (1, 2)]
    assert (tb.pos_behaviors[:, -1] == BUY + 1).all()
    r = ds.train_source(batch_size=4, prefixes=3)
    assert r.num_samples == 6 and len(r) == 2
    assert sum(len(b) for b in r.batches(0)) == 6
    full_only = ds.train_source(batch_size=8, target_only=True)
    fb = next(iter(full_only.batches(0)))
    assert ((fb.pos_behaviors == BUY + 1) | (fb.pos == 0)).all()
    with pytest.raises(ValueError, match='prefixes'):
        ds.train_source(prefixes=0)


def test_history_pairs_and_multiplex_view():
    ds = make()
    hist = set(map(tuple, ds.history_pairs().t().tolist()))
    assert hist == {(0, 1), (0, 4), (0, 2), (0, 5), (0, 3), (1, 2), (1, 1), (1, 0), (2, 5)}
    g = ds.to_multiplex()
    validate(g)
    assert g.behaviors == NAMES

    def edges(b, attr='edge_index'):
        return sorted(map(tuple, getattr(g['user', b, 'item'], attr).t().tolist()))
    assert edges('click') == [(0, 1), (0, 2), (1, 2), (2, 5)]
    assert edges('cart') == [(0, 2), (1, 0)]
    assert edges('buy') == [(0, 2), (0, 4), (1, 1)]      # val/test buys excluded
    assert edges('buy', 'val_edge_index') == [(0, 5)]
    assert edges('buy', 'test_edge_index') == [(0, 3)]
    # the evaluators accept the views
    SampledEvaluator(ds.split_pairs('test'), ds.num_items, ds.history_pairs(), num_negatives=2,
                     split='test')
    FullRankingEvaluator(g, 'test')


def test_user_statistics_by_hand_train_only():
    stats = make().user_statistics()
    l2, l3 = math.log(2), math.log(3)
    # user 0 trains on (1 click) (4 buy) (2 buy) (2 click) (2 cart): val/test buys not counted
    # counts click 2, cart 1, buy 2; click->cart {1,2}&{2} = 1/2; cart->buy {2}&{4,2} = 1/1
    expected = torch.tensor([[l3, l2, l3, 0.5, 1.0],
                             [l2, l2, l2, 0.0, 0.0],     # {2}&{0}, {0}&{1}
                             [l2, 0.0, 0.0, 0.0, 0.0]])  # no cart items: ratio 0
    assert torch.allclose(stats, expected)
    assert make().num_features == 5


def test_pretrain_finetune_split_60_40():
    # one user, 10 events; buys at positions 3, 8, 9 -> val 8, test 9; cut = floor(0.6*10) = 6
    log = [(0, k, BUY if k in (3, 8, 9) else CLICK, k) for k in range(10)]
    u, i, b, t = columns(log)
    ds = SequenceDataset.from_log(u, i, b, t, NAMES, num_users=1, num_items=10, max_len=10)
    pre, fine = ds.pretrain_finetune_split(0.6)
    assert pre.sequence(0)['items'].tolist() == [0, 1, 2, 3, 4, 5]
    assert fine.sequence(0)['items'].tolist() == [6, 7, 8, 9]
    with pytest.raises(ValueError, match="'val' split is empty"):
        pre.split_pairs('val')
    assert fine.split_pairs('test').tolist() == [[0], [9]]
    assert fine.eval_inputs('test').items[0].tolist() == [0] * 7 + [7, 8, 9]
    assert fine.eval_inputs('val').items[0].tolist() == [0] * 8 + [7, 8]
    src = pre.train_source(batch_size=4)
    assert src.pos[0].tolist() == [0] * 5 + [2, 3, 4, 5, 6]
    # statistics of the fine-tuning side still count the whole training history (no leak)
    assert torch.equal(fine.user_statistics(), ds.user_statistics())
    # the held-out events stay on the fine-tuning side, with one input event before them
    _, fine2 = make().pretrain_finetune_split(0.9)     # user 0: floor(6.3)=6 -> lowered to 4
    assert fine2.eval_inputs('val').items.tolist() == [[0] * 7 + [3]]
    with pytest.raises(ValueError, match='ratio'):
        ds.pretrain_finetune_split(1.0)


def test_empty_split_errors():
    ds = make(min_target=5)                     # user 0 has 4 buys: no held-out events
    with pytest.raises(ValueError, match="the 'test' split is empty"):
        ds.split_pairs('test')
    with pytest.raises(ValueError, match="the 'val' split is empty"):
        ds.eval_inputs('val')


def test_batch_to_select_and_eval_inputs_helper():
    ds = make()
    batch = ds.eval_inputs('test')
    moved = batch.to('cpu')
    assert isinstance(moved, SequenceBatch) and torch.equal(moved.items, batch.items)
    assert torch.equal(batch.select_users(torch.tensor([0])).items, batch.items)
    with pytest.raises(KeyError, match=r'no input sequence for users \[1\]'):
        batch.select_users(torch.tensor([1]))
    helper = EvalInputs(ds)
    with pytest.raises(RuntimeError, match='prepare_eval'):
        helper.batch(torch.tensor([0]))
    with pytest.raises(ValueError, match="split='val'"):
        helper.prepare(None)
    helper.prepare('val')
    assert helper.batch(torch.tensor([0])).items.tolist() == ds.eval_inputs('val').items.tolist()


def test_movielens_sequences(tmp_path):
    d = tmp_path / 'ml'
    d.mkdir()
    (d / 'ratings.csv').write_text(
        'userId,movieId,rating,timestamp\n'
        '1,10,5.0,100\n1,20,4.0,101\n1,30,1.0,102\n1,40,4.5,103\n1,50,4.0,104\n'
        '2,10,3.0,50\n')
    (d / 'tags.csv').write_text('userId,movieId,tag,timestamp\n1,30,bad,102\n')
    ds = SequenceDataset.from_movielens(d, max_len=6)
    assert ds.behavior_names == ['dislike', 'neutral', 'tag', 'like']
    # ties keep file order: the rating of movie 30 (dislike) before its tag
    assert ds.sequence(0)['behaviors'].tolist() == [3, 3, 0, 2, 3, 3]
    assert ds.split_pairs('test').tolist() == [[0], [4]]      # movie 50 = item 4
    assert ds.split_pairs('val').tolist() == [[0], [3]]
    assert ds.user_raw_id.tolist() == [1, 2]


def test_synthetic_sequences_keep_the_cascade_order():
    from mbgraph_seq.data import SequenceDataset
    ds = SequenceDataset.synthetic(num_users=60, num_items=40, seed=3, max_len=1000)
    again = SequenceDataset.synthetic(num_users=60, num_items=40, seed=3, max_len=1000)
    assert torch.equal(ds.split_pairs('test'), again.split_pairs('test'))
    checked = 0
    for user in range(60):
        seq = ds.sequence(user)
        last = {}
        for item, behavior in zip(seq['items'].tolist(), seq['behaviors'].tolist()):
            # per item the behaviors come in cascade order: view (0) < cart (1) < buy (2)
            assert behavior >= last.get(item, -1), (user, item)
            last[item] = behavior
            checked += 1
    assert checked > 0


def test_from_csv_reads_the_graph_loaders_log_and_needs_timestamps(tmp_path):
    path = tmp_path / 'log.csv'
    path.write_text('user,item,behavior,timestamp\n'
                    'b,x,view,3\nb,y,buy,5\na,x,view,1\na,y,buy,2\na,z,buy,4\na,x,buy,9\n')
    ds = SequenceDataset.from_csv(path, ['view', 'buy'], max_len=5, min_target=3)
    assert list(ds.behavior_names) == ['view', 'buy']
    assert list(ds.user_raw_id) == ['a', 'b'] and list(ds.item_raw_id) == ['x', 'y', 'z']
    # user 'a' in time order: x view (1), y buy (2), z buy (4), x buy (9)
    a = slice(ds.ptr[0], ds.ptr[1])
    assert ds.items[a].tolist() == [0, 1, 2, 0] and ds.behaviors[a].tolist() == [0, 1, 1, 1]
    bare = tmp_path / 'bare.csv'
    bare.write_text('user,item,behavior\na,x,view\na,y,buy\n')
    with pytest.raises(ValueError, match='need a timestamp column'):
        SequenceDataset.from_csv(bare, ['view', 'buy'])
