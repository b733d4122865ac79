import pytest
import torch

from mbgraph.data import (
    MultiplexValidationError,
    deduplicate,
    edge_type,
    holdout_validation,
    make_multiplex,
    statistics,
    target_behavior,
    validate,
)
from mbgraph.data.multiplex import merge_validation, select_behaviors


def test_schema(tiny):
    assert tiny.behaviors == ['view', 'cart', 'buy']
    assert target_behavior(tiny) == 'buy'
    assert tiny['user'].num_nodes == 3 and tiny['item'].num_nodes == 4
    assert tiny[edge_type('buy')].test_edge_index.tolist() == [[0], [2]]
    validate(tiny)


def _problems(data):
    with pytest.raises(MultiplexValidationError) as e:
        validate(data)
    return e.value.problems


def test_index_out_of_range_is_named():
    data = make_multiplex(2, 3, ['buy'], {'buy': torch.tensor([[0, 2], [1, 3]])})
    problems = _problems(data)
    assert any("user index 2 >= num_users 2" in p for p in problems)
    assert any("item index 3 >= num_items 3" in p for p in problems)


def test_every_problem_reported_at_once():
    data = make_multiplex(2, 3, ['cart', 'buy'],
                          {'cart': torch.tensor([[0, 0], [1, 1]]), 'buy': torch.tensor([[0], [1]])},
                          test=torch.tensor([[0], [1]]))
    with pytest.raises(MultiplexValidationError) as e:
        validate(data)
    assert 'duplicate' in str(e.value)
    deduplicate(data)
    problems = _problems(data)
    assert any('also training pairs' in p for p in problems)


def test_deduplicate_is_explicit(caplog):
    data = make_multiplex(2, 3, ['buy'], {'buy': torch.tensor([[1, 0, 1], [2, 1, 2]])})
    with caplog.at_level('WARNING'):
        removed = deduplicate(data)
    assert removed == {'buy': 1}
    assert 'removed 1 duplicate' in caplog.text
    assert data[edge_type('buy')].edge_index.tolist() == [[0, 1], [1, 2]]
    validate(data)


def test_missing_and_unknown_behaviors():
    with pytest.raises(ValueError, match=r"no edges given for behaviors \['cart'\]"):
        make_multiplex(1, 1, ['cart', 'buy'], {'buy': torch.tensor([[0], [0]])})
    with pytest.raises(ValueError, match='unknown behaviors'):
        make_multiplex(1, 1, ['buy'], {'buy': torch.tensor([[0], [0]]),
                                       'pv': torch.tensor([[0], [0]])})
    data = make_multiplex(1, 2, ['buy'], {'buy': torch.tensor([[0], [0]])})
    data.behaviors = ['cart', 'buy']
    assert any("'cart' is listed" in p for p in _problems(data))


def test_empty_target_and_empty_split():
    data = make_multiplex(2, 2, ['cart', 'buy'], {'cart': torch.tensor([[0], [0]]),
                                                  'buy': torch.zeros(2, 0, dtype=torch.long)},
                          test=torch.zeros(2, 0, dtype=torch.long))
    problems = _problems(data)
    assert any("target behavior 'buy' has no training interactions" in p for p in problems)
    assert any('test split' in p and 'empty' in p for p in problems)


def test_val_test_overlap():
    data = make_multiplex(2, 3, ['buy'], {'buy': torch.tensor([[0], [0]])},
                          val=torch.tensor([[1], [2]]), test=torch.tensor([[1], [2]]))
    assert any('both the val and test' in p for p in _problems(data))


def test_bad_edge_index_shape():
    with pytest.raises(ValueError, match=r'shape \[2, num_edges\]'):
        make_multiplex(1, 1, ['buy'], {'buy': torch.tensor([0, 0])})
    with pytest.raises(ValueError, match='integer ids'):
        make_multiplex(1, 1, ['buy'], {'buy': torch.tensor([[0.0], [0.0]])})


def test_holdout_validation():
    # user 0 has 3 buys, user 1 has 1 (kept in training), user 2 has 2
    data = make_multiplex(3, 5, ['buy'],
                          {'buy': torch.tensor([[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 1]])})
    n = holdout_validation(data, seed=3)
    assert n == 2
    store = data[edge_type('buy')]
    val = store.val_edge_index
    assert sorted(val[0].tolist()) == [0, 2]
    train = set(map(tuple, store.edge_index.t().tolist()))
    held = set(map(tuple, val.t().tolist()))
    assert not train & held
    assert train | held == {(0, 0), (0, 1), (0, 2), (1, 3), (2, 4), (2, 1)}
    validate(data)
    # seeded: same seed same hold-out
    data2 = make_multiplex(3, 5, ['buy'],
                           {'buy': torch.tensor([[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 1]])})
    holdout_validation(data2, seed=3)
    assert data2[edge_type('buy')].val_edge_index.tolist() == val.tolist()


def test_holdout_validation_unseen_leaves_every_behavior():
    """``unseen``: the held-out (user, item) pairs also leave the auxiliary behaviors, so the
    validation items, like such a test split's, were never touched in training."""
    edges = {'view': torch.tensor([[0, 0, 0, 1, 2, 2, 2], [0, 1, 3, 3, 4, 1, 0]]),
             'buy': torch.tensor([[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 1]])}
    plain = make_multiplex(3, 5, ['view', 'buy'], dict(edges))
    holdout_validation(plain, seed=3)
    data = make_multiplex(3, 5, ['view', 'buy'], dict(edges))
    n = holdout_validation(data, seed=3, unseen=True)
    val = data[edge_type('buy')].val_edge_index
    assert n == 2 and val.tolist() == plain[edge_type('buy')].val_edge_index.tolist()
    held = set(map(tuple, val.t().tolist()))
    view = set(map(tuple, data[edge_type('view')].edge_index.t().tolist()))
    before = set(map(tuple, edges['view'].t().tolist()))
    assert not view & held and view == before - held      # only the held pairs left
    assert set(map(tuple, plain[edge_type('view')].edge_index.t().tolist())) == before
    validate(data)
    # the papers' protocol merges validation back: every behavior is whole again
    kept = select_behaviors(data, ['view', 'buy'])
    for d in (data, kept):
        assert merge_validation(d) == 2
        for b in ('view', 'buy'):
            got = sorted(map(tuple, d[edge_type(b)].edge_index.t().tolist()))
            assert got == sorted(map(tuple, edges[b].t().tolist()))
        assert getattr(d[edge_type('view')], 'held_edge_index', None) is None


def test_unseen_test_split_is_a_zero_shortcut_share():
    """What the SSLRec loader asks before an ``unseen`` holdout."""
    from mbgraph.data.shortcuts import shortcut_shares

    def is_test_unseen(data):
        return shortcut_shares(data, 'test')['any'] == 0

    edges = {'view': torch.tensor([[0, 1], [0, 1]]), 'buy': torch.tensor([[0, 1], [2, 2]])}
    unseen = make_multiplex(2, 4, ['view', 'buy'], dict(edges),
                            test=torch.tensor([[0, 1], [3, 3]]))
    assert is_test_unseen(unseen)
    viewed = make_multiplex(2, 4, ['view', 'buy'], dict(edges),
                            test=torch.tensor([[0, 1], [3, 1]]))   # user 1 viewed item 1
    assert not is_test_unseen(viewed)
    assert not is_test_unseen(make_multiplex(2, 4, ['view', 'buy'], dict(edges)))


def test_statistics(tiny):
    rows = {r['behavior']: r for r in statistics(tiny)}
    assert rows['view']['interactions'] == 6 and rows['view']['users'] == 3
    assert rows['buy']['items'] == 2
    assert rows['buy (test)']['interactions'] == 1
    assert rows['cart']['density'] == pytest.approx(3 / 12)


def test_select_behaviors(tiny):
    from mbgraph.data import select_behaviors
    sub = select_behaviors(tiny, ['cart', 'buy'])
    assert sub.behaviors == ['cart', 'buy']
    assert ('user', 'view', 'item') not in sub.edge_types
    assert sub[edge_type('buy')].test_edge_index.tolist() == [[0], [2]]
    validate(sub)
    with pytest.raises(ValueError, match=r"unknown behaviors \['fav'\]; this dataset has"):
        select_behaviors(tiny, ['fav', 'buy'])
    with pytest.raises(ValueError, match="target behavior 'buy'"):
        select_behaviors(tiny, ['view', 'cart'])
