"""Tests of mbgraph.data.datasets: every loader on tiny hand-made files, the restricted
unpickler, the synthetic generator, and (marked slow) the real shared datasets."""
import logging
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbgraph.data import (
    MultiplexValidationError,
    edge_type,
    holdout_validation,
    make_multiplex,
    validate,
)
from mbgraph.data.datasets import (
    DATASETS,
    RestrictedUnpicklingError,
    describe,
    load_dataset,
    load_interaction_log,
    load_mbgmn,
    load_movielens,
    read_movielens_log,
    synthetic,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'


def pairs(ei):
    """Sorted list of (user, item) tuples of an edge index."""
    return sorted(map(tuple, torch.as_tensor(ei).t().tolist()))


def edges(data, behavior, split=None):
    store = data[edge_type(behavior)]
    return pairs(store.edge_index if split is None else store[f'{split}_edge_index'])


# --------------------------------------------------------------------------------------------
# MB-GMN pickles
# --------------------------------------------------------------------------------------------

PV = [[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]]
CART = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
BUY = [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]


def dump(obj, path, protocol=pickle.DEFAULT_PROTOCOL):
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=protocol)


def write_mbgmn(directory, mats=None, tst=None, protocol=pickle.DEFAULT_PROTOCOL):
    directory.mkdir(parents=True, exist_ok=True)
    mats = {'pv': PV, 'cart': CART, 'buy': BUY} if mats is None else mats
    for b, m in mats.items():
        dump(m if sp.issparse(m) else sp.csr_matrix(np.array(m)), directory / f'trn_{b}',
             protocol)
    if tst is None:
        tst = np.array([2, 3, None], dtype=object)
    dump(tst, directory / 'tst_int', protocol)
    return directory


@pytest.mark.parametrize('protocol', [2, 3, 4, 5])
def test_mbgmn_tiny_exact(tmp_path, protocol, caplog):
    d = write_mbgmn(tmp_path / 'taobao', protocol=protocol)
    with caplog.at_level(logging.INFO, logger='mbgraph.data.datasets'):
        data = load_mbgmn(d, seed=3)
    assert data.behaviors == ['pv', 'cart', 'buy']
    assert data.name == 'taobao'
    assert (data['user'].num_nodes, data['item'].num_nodes) == (3, 4)
    assert edges(data, 'pv') == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 3)]
    assert edges(data, 'cart') == [(0, 0), (1, 1), (2, 3)]
    assert edges(data, 'buy', 'test') == [(0, 2), (1, 3)]  # user 2 has None
    val = edges(data, 'buy', 'val')
    train = edges(data, 'buy')
    # one held-out buy for users 0 and 2 (two buys each); user 1 (one buy) keeps it
    assert [u for u, _ in val] == [0, 2]
    assert sorted(train + val) == [(0, 0), (0, 1), (1, 1), (2, 2), (2, 3)]
    # the same holdout as the schema's own function with the same seed
    ref = make_multiplex(3, 4, ['buy'], {'buy': torch.tensor([[0, 0, 1, 2, 2],
                                                                 [0, 1, 1, 2, 3]])})
    holdout_validation(ref, 3)
    assert val == pairs(ref['user', 'buy', 'item'].val_edge_index)
    assert 'validation' in caplog.text and '2 pairs' in caplog.text


def test_mbgmn_old_scipy_and_numpy_class_paths(tmp_path):
    d = write_mbgmn(tmp_path / 'taobao', protocol=3)
    for f in ('trn_pv', 'trn_cart', 'trn_buy'):
        raw = (d / f).read_bytes()
        assert b'scipy.sparse._csr\ncsr_matrix\n' in raw
        raw = raw.replace(b'scipy.sparse._csr\ncsr_matrix\n', b'scipy.sparse.csr\ncsr_matrix\n')
        raw = raw.replace(b'numpy._core.multiarray\n_reconstruct\n',
                          b'numpy.core.multiarray\n_reconstruct\n')
        assert b'scipy.sparse.csr\ncsr_matrix\n' in raw
        (d / f).write_bytes(raw)
    data = load_mbgmn(d)
    assert edges(data, 'cart') == [(0, 0), (1, 1), (2, 3)]
    assert edges(data, 'buy', 'test') == [(0, 2), (1, 3)]


def test_mbgmn_tst_int_list_and_numpy_scalars(tmp_path):
    d = write_mbgmn(tmp_path / 'a', tst=[2, None, 0])
    data = load_mbgmn(d, name='taobao')
    assert edges(data, 'buy', 'test') == [(0, 2), (2, 0)]
    d = write_mbgmn(tmp_path / 'b', tst=np.array([np.int64(2), np.int64(3), None], dtype=object))
    data = load_mbgmn(d, name='taobao')
    assert edges(data, 'buy', 'test') == [(0, 2), (1, 3)]


class _SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


class _EvalPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize('payload, refused', [
    (_SystemPayload, f'{os.system.__module__}.system'),
    (_EvalPayload, 'builtins.eval'),
])
@pytest.mark.parametrize('target', ['trn_cart', 'tst_int'])
def test_mbgmn_refuses_malicious_pickle(tmp_path, payload, refused, target):
    d = write_mbgmn(tmp_path / 'taobao')
    marker = tmp_path / 'pwned'
    dump(payload(marker), d / target)
    with pytest.raises(pickle.UnpicklingError) as err:
        load_mbgmn(d)
    assert isinstance(err.value, RestrictedUnpicklingError)
    assert refused in str(err.value) and target in str(err.value)
    assert not marker.exists()


def test_mbgmn_refuses_other_numpy_and_scipy_objects(tmp_path):
    d = write_mbgmn(tmp_path / 'taobao')
    dump(sp.csc_matrix(np.array(BUY)), d / 'trn_buy')
    with pytest.raises(RestrictedUnpicklingError, match='csc'):
        load_mbgmn(d)
    # COO passes the unpickler (SSLRec's test_mat.pkl is one) but is not the MB-GMN format
    dump(sp.coo_matrix(np.array(BUY)), d / 'trn_buy')
    with pytest.raises(ValueError, match='expected a pickled scipy.sparse.csr_matrix'):
        load_mbgmn(d)


def test_mbgmn_loads_only_present_behaviors(tmp_path, caplog):
    d = write_mbgmn(tmp_path / 'taobao', mats={'cart': CART, 'buy': BUY})
    with caplog.at_level(logging.WARNING, logger='mbgraph.data.datasets'):
        data = load_mbgmn(d)
    assert data.behaviors == ['cart', 'buy']
    assert 'pv' in caplog.text
    assert edges(data, 'cart') == [(0, 0), (1, 1), (2, 3)]
    # explicit subset while all files exist
    d2 = write_mbgmn(tmp_path / 'full')
    data = load_mbgmn(d2, behaviors=['cart', 'buy'])
    assert data.behaviors == ['cart', 'buy']
    assert set(data.edge_types) == {edge_type('cart'), edge_type('buy')}
    # an unknown dataset name: the order is inferred from the files when it matches a known one
    assert load_mbgmn(d2, name='mine').behaviors == ['pv', 'cart', 'buy']
    # a requested behavior without a file
    with pytest.raises(FileNotFoundError, match='trn_fav'):
        load_mbgmn(d2, behaviors=['fav', 'buy'])


def test_mbgmn_missing_target_or_order(tmp_path):
    d = write_mbgmn(tmp_path / 'taobao', mats={'pv': PV, 'cart': CART})
    with pytest.raises(FileNotFoundError, match='trn_buy'):
        load_mbgmn(d)
    d = write_mbgmn(tmp_path / 'odd', mats={'x': CART, 'y': BUY})
    with pytest.raises(ValueError, match='behaviors='):
        load_mbgmn(d)
    assert load_mbgmn(d, behaviors=['x', 'y']).behaviors == ['x', 'y']
    (d / 'tst_int').unlink()
    with pytest.raises(FileNotFoundError, match='tst_int'):
        load_mbgmn(d, behaviors=['x', 'y'])


def test_mbgmn_duplicates_removed_and_logged(tmp_path, caplog):
    # user 0: item 1 stored twice; user 2: item 3 stored with value 2
    cart = sp.csr_matrix((np.array([1, 1, 1, 2]), np.array([1, 1, 0, 3]), np.array([0, 2, 3, 4])),
                         shape=(3, 4))
    assert not cart.has_canonical_format
    d = write_mbgmn(tmp_path / 'taobao', mats={'cart': cart, 'buy': BUY})
    with caplog.at_level(logging.INFO):
        data = load_mbgmn(d)
    assert edges(data, 'cart') == [(0, 1), (1, 0), (2, 3)]
    assert 'duplicate' in caplog.text and 'values > 1' in caplog.text


def test_mbgmn_test_pair_in_training_raises(tmp_path):
    d = write_mbgmn(tmp_path / 'taobao', tst=np.array([1, 3, None], dtype=object))  # (0,1) bought
    with pytest.raises(MultiplexValidationError, match='also training pairs'):
        load_mbgmn(d)


def test_mbgmn_bad_tst_int(tmp_path):
    d = write_mbgmn(tmp_path / 'taobao', tst=np.array([1, None], dtype=object))
    with pytest.raises(ValueError, match='2 entries'):
        load_mbgmn(d)
    d = write_mbgmn(tmp_path / 'b', tst=[2, 9, None])
    with pytest.raises(ValueError, match='outside'):
        load_mbgmn(d, name='taobao')


# --------------------------------------------------------------------------------------------
# load_dataset / registry
# --------------------------------------------------------------------------------------------

def test_load_dataset_names_and_errors(tmp_path):
    assert {'synthetic', 'taobao', 'beibei', 'tmall', 'ml-latest-small', 'movielens',
            'csv'} <= set(DATASETS)
    with pytest.raises(ValueError, match='known datasets.*taobao'):
        load_dataset('nope')
    missing = tmp_path / 'nowhere'
    with pytest.raises(FileNotFoundError, match='nowhere'):
        load_dataset('taobao', missing)
    with pytest.raises(FileNotFoundError, match='root'):
        load_dataset('taobao')
    with pytest.raises(FileNotFoundError, match='ratings.csv'):
        load_dataset('movielens', tmp_path)
    with pytest.raises(FileNotFoundError, match='no such directory'):
        load_mbgmn(missing)


@pytest.mark.parametrize('sub', ['beibei', 'beibei-mbgmn', '.'])
def test_load_dataset_finds_mbgmn_dir(tmp_path, sub):
    write_mbgmn(tmp_path / sub)
    data = load_dataset('beibei', tmp_path, seed=1)
    assert data.behaviors == ['pv', 'cart', 'buy'] and data.name == 'beibei'
    assert load_dataset('Beibei', tmp_path, behaviors=['cart', 'buy']).behaviors == ['cart', 'buy']


# --------------------------------------------------------------------------------------------
# CSV / TSV interaction logs
# --------------------------------------------------------------------------------------------

LOG = """user,item,behavior,timestamp
carol,i1,buy,3
alice,i1,buy,10
alice,i2,view,1
alice,i3,buy,30
bob,ix,buy,1
bob,iy,buy,5
alice,i2,buy,20
bob,iz,buy,5
carol,i2,buy,4
bob,iy,view,2
bob,iy,view,3
"""


def test_csv_remap_order_and_leave_one_out(tmp_path, caplog):
    f = tmp_path / 'log.csv'
    f.write_text(LOG)
    with caplog.at_level(logging.WARNING):
        data = load_interaction_log(f, behaviors=['view', 'buy'])
    assert data.behaviors == ['view', 'buy'] and data.name == 'log'
    assert data['user'].raw_id == ['alice', 'bob', 'carol']
    assert data['item'].raw_id == ['i1', 'i2', 'i3', 'ix', 'iy', 'iz']
    # alice: buys at 10 (i1), 30 (i3), 20 (i2) -> test i3, val i2
    # bob: ix@1, iy@5, iz@5 (tie: file order) -> test iz, val iy
    # carol: two buys -> all in training
    assert edges(data, 'buy', 'test') == [(0, 2), (1, 5)]
    assert edges(data, 'buy', 'val') == [(0, 1), (1, 4)]
    assert edges(data, 'buy') == [(0, 0), (1, 3), (2, 0), (2, 1)]
    assert edges(data, 'view') == [(0, 1), (1, 4)]  # bob's repeated view removed
    assert 'duplicate' in caplog.text


def test_log_reader_returns_a_typed_record(tmp_path):
    from mbgraph.data.datasets import InteractionLog, graph_from_log, read_interaction_log
    f = tmp_path / 'log.csv'
    f.write_text(LOG)
    log_ = read_interaction_log(f, behaviors=['view', 'buy'])
    assert isinstance(log_, InteractionLog)
    assert log_.behaviors == ['view', 'buy'] and log_.user_raw_id == ['alice', 'bob', 'carol']
    assert (log_.num_users, log_.num_items) == (3, 6) and len(log_) == log_.user.size
    assert log_.timestamp.dtype == np.float64 and log_.rating is None
    # the dict interface it replaces still reads, for code written against it
    assert log_['item'] is log_.item
    assert log_.keys() == ['user', 'item', 'behavior', 'timestamp', 'behaviors',
                           'user_raw_id', 'item_raw_id']
    with pytest.raises(KeyError):
        log_['rating']
    as_dict = {k: log_[k] for k in log_.keys()}
    one, other = graph_from_log(log_, name='log'), graph_from_log(as_dict, name='log')
    for b in ('view', 'buy'):
        for split in (None, 'val', 'test'):
            assert edges(one, b, split if b == 'buy' else None) == \
                edges(other, b, split if b == 'buy' else None)


def test_datasets_package_keeps_the_old_import_paths():
    from mbgraph.data import datasets
    from mbgraph.data.datasets import logs, mbgmn, movielens, pickles, registry, synthetic_data
    assert datasets.load_mbgmn is mbgmn.load_mbgmn
    assert datasets.safe_unpickle is pickles.safe_unpickle
    assert datasets.read_interaction_log is logs.read_interaction_log
    assert datasets.load_movielens is movielens.load_movielens
    assert datasets.load_dataset is registry.load_dataset and datasets.DATASETS is registry.DATASETS
    assert datasets.synthetic is synthetic_data.synthetic is synthetic
    assert [n for n in datasets.__all__ if not hasattr(datasets, n)] == []


def test_csv_inferred_order_and_unknown_behavior(tmp_path):
    f = tmp_path / 'log.csv'
    f.write_text(LOG.replace('alice,i2,view,1', 'alice,i2,cart,1'))
    assert load_interaction_log(f).behaviors == ['view', 'cart', 'buy']
    with pytest.raises(ValueError, match=r"\['cart'\]"):
        load_interaction_log(f, behaviors=['view', 'buy'])
    g = tmp_path / 'odd.csv'
    g.write_text('user,item,behavior\n1,1,a\n1,2,b\n')
    with pytest.raises(ValueError, match='behaviors='):
        load_interaction_log(g)


def test_csv_bad_lines(tmp_path):
    f = tmp_path / 'bad.csv'
    f.write_text('user,item,behavior,timestamp\n1,2,buy,5\n1,3,buy\n')
    with pytest.raises(ValueError, match=r'bad\.csv, line 3'):
        load_interaction_log(f)
    f.write_text('user,item,behavior,timestamp\n1,2,buy,5\n\n1,3,buy,5\n2,3,buy,noon\n')
    with pytest.raises(ValueError, match=r'line 5.*noon'):
        load_interaction_log(f)
    f.write_text('user,item,behavior,timestamp\n1,,buy,5\n')
    with pytest.raises(ValueError, match='line 2: empty item'):
        load_interaction_log(f)


def test_tsv_headerless_int_ids_random_split(tmp_path):
    f = tmp_path / 'log.tsv'
    rows = [(10, 5, 'buy'), (2, 7, 'buy'), (10, 6, 'buy'), (10, 100, 'buy'), (10, 5, 'click'),
            (2, 5, 'buy')]
    f.write_text(''.join(f'{u}\t{i}\t{b}\n' for u, i, b in rows))
    a = load_interaction_log(f, behaviors=['click', 'buy'], seed=0)
    b = load_interaction_log(f, behaviors=['click', 'buy'], seed=0)
    assert a['user'].raw_id == [2, 10] and a['item'].raw_id == [5, 6, 7, 100]
    assert edges(a, 'click') == [(1, 0)]
    for split in ('test', 'val'):
        assert edges(a, 'buy', split) == edges(b, 'buy', split)
        assert [u for u, _ in edges(a, 'buy', split)] == [1]  # only user 10 has 3 buys
    assert sorted(edges(a, 'buy') + edges(a, 'buy', 'val') + edges(a, 'buy', 'test')) == \
        [(0, 0), (0, 2), (1, 0), (1, 1), (1, 3)]


def test_csv_named_columns_and_sep(tmp_path):
    f = tmp_path / 'log.txt'
    f.write_text('ts;who;what;act\n1;u;a;buy\n2;u;b;buy\n3;u;c;buy\n')
    data = load_interaction_log(f, sep=';', columns=('who', 'what', 'act', 'ts'))
    assert edges(data, 'buy', 'test') == [(0, 2)] and edges(data, 'buy', 'val') == [(0, 1)]


# --------------------------------------------------------------------------------------------
# MovieLens
# --------------------------------------------------------------------------------------------

RATINGS = """userId,movieId,rating,timestamp
1,10,2.0,100
1,20,2.5,101
1,30,3.5,102
1,40,4.0,103
1,50,5.0,105
1,60,4.5,104
1,70,4.0,105
2,10,4.0,50
2,20,4.0,60
"""
TAGS = """userId,movieId,tag,timestamp
1,20,"funny, really",200
1,20,classic,201
2,30,x,70
"""


def write_movielens(directory):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'ratings.csv').write_text(RATINGS)
    (directory / 'tags.csv').write_text(TAGS)
    return directory


def test_movielens_thresholds_and_leave_one_out(tmp_path, caplog):
    d = write_movielens(tmp_path / 'ml-latest-small')
    with caplog.at_level(logging.WARNING):
        data = load_movielens(d)
    assert data.behaviors == ['dislike', 'neutral', 'tag', 'like']
    assert data['user'].raw_id == [1, 2]
    assert data['item'].raw_id == [10, 20, 30, 40, 50, 60, 70]
    assert edges(data, 'dislike') == [(0, 0)]
    assert edges(data, 'neutral') == [(0, 1), (0, 2)]
    assert edges(data, 'tag') == [(0, 1), (1, 2)]  # two tags on one movie -> one pair
    assert 'duplicate' in caplog.text
    # user 1 likes: 40@103, 60@104, 50@105, 70@105 (tie: file order) -> test 70, val 50
    assert edges(data, 'like', 'test') == [(0, 6)]
    assert edges(data, 'like', 'val') == [(0, 4)]
    assert edges(data, 'like') == [(0, 3), (0, 5), (1, 0), (1, 1)]
    no_tags = load_movielens(d, with_tags=False)
    assert no_tags.behaviors == ['dislike', 'neutral', 'like']
    assert load_dataset('movielens', tmp_path).behaviors == data.behaviors


def test_read_movielens_log(tmp_path):
    d = write_movielens(tmp_path)
    ml = read_movielens_log(d)
    assert ml['behaviors'] == ['dislike', 'neutral', 'tag', 'like']
    assert ml['user_raw_id'].tolist() == [1, 2]
    assert len(ml['user']) == 12
    names = [ml['behaviors'][c] for c in ml['behavior']]
    # user 1 time-ordered, the tie at 105 in file order (movie 50 before 70), then tags
    assert ml['item'][ml['user'] == 0].tolist() == [0, 1, 2, 3, 5, 4, 6, 1, 1]
    assert names[:9] == ['dislike', 'neutral', 'neutral', 'like', 'like', 'like', 'like', 'tag',
                         'tag']
    assert ml['timestamp'][ml['user'] == 1].tolist() == [50, 60, 70]
    assert np.isnan(ml['rating'][8]) and ml['rating'][0] == 2.0


def test_movielens_bad_line(tmp_path):
    d = write_movielens(tmp_path)
    (d / 'ratings.csv').write_text(RATINGS + '3,10,,9\n')
    with pytest.raises(ValueError, match=r'ratings\.csv, line 11'):
        read_movielens_log(d)


# --------------------------------------------------------------------------------------------
# synthetic
# --------------------------------------------------------------------------------------------

def test_synthetic_defaults_deterministic_cascade():
    start = time.perf_counter()
    a = synthetic(seed=0)
    elapsed = time.perf_counter() - start
    validate(a)
    b = synthetic(seed=0)
    c = synthetic(seed=1)
    assert a.name == 'synthetic' and a.behaviors == ['view', 'cart', 'buy']
    assert (a['user'].num_nodes, a['item'].num_nodes) == (3000, 1500)
    for et in a.edge_types:
        assert torch.equal(a[et].edge_index, b[et].edge_index)
    assert torch.equal(a['user', 'buy', 'item'].test_edge_index,
                       b['user', 'buy', 'item'].test_edge_index)
    assert not torch.equal(a['user', 'view', 'item'].edge_index,
                           c['user', 'view', 'item'].edge_index)
    views = set(edges(a, 'view'))
    carts = set(edges(a, 'cart'))
    buys = set(edges(a, 'buy')) | set(edges(a, 'buy', 'val')) | set(edges(a, 'buy', 'test'))
    assert 20 <= len(views) / 3000 <= 60
    assert 0.7 < len(carts & views) / len(carts) < 0.97
    assert 0.7 < len(buys & carts) / len(buys) < 0.97
    assert len(views) > len(carts) > len(buys)
    test = a['user', 'buy', 'item'].test_edge_index
    assert test.size(1) > 1000 and test[0].unique().numel() == test.size(1)
    assert elapsed < 10.0  # about 0.3 s on an idle 2-core machine; generous for loaded CI


def test_synthetic_custom_behaviors():
    data = synthetic(num_users=100, num_items=80, behaviors=('click', 'fav', 'cart', 'buy'),
                     seed=2, views_per_user=20)
    validate(data)
    assert data.behaviors == ['click', 'fav', 'cart', 'buy']
    assert load_dataset('synthetic', behaviors=['a', 'b'], num_users=50,
                        num_items=40).behaviors == ['a', 'b']


def test_describe():
    data = synthetic(num_users=100, num_items=60, seed=0)
    text = describe(data)
    assert 'synthetic' in text and '#Interactions' in text and 'Density' in text
    n_view = data['user', 'view', 'item'].edge_index.size(1)
    assert f'{n_view:,}' in text
    assert 'buy (test)' in text


# --------------------------------------------------------------------------------------------
# real data (slow)
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_taobao():
    if not (SHARED_DATA / 'taobao-mbgmn').is_dir():
        pytest.skip(f'{SHARED_DATA / "taobao-mbgmn"} not present')
    data = load_dataset('taobao', SHARED_DATA)
    assert data.behaviors == ['pv', 'cart', 'buy']
    assert (data['user'].num_nodes, data['item'].num_nodes) == (15449, 11953)
    target = data['user', 'buy', 'item']
    n_val = target.val_edge_index.size(1)
    assert n_val == 15449  # every user has at least two training buys
    assert data['user', 'pv', 'item'].edge_index.size(1) == 873954
    assert data['user', 'cart', 'item'].edge_index.size(1) == 195476
    assert target.edge_index.size(1) == 92180 - n_val
    assert target.test_edge_index.size(1) == 15449
    cart_buy = load_dataset('taobao', SHARED_DATA, behaviors=['cart', 'buy'])
    assert cart_buy.behaviors == ['cart', 'buy']
    assert torch.equal(cart_buy['user', 'buy', 'item'].val_edge_index, target.val_edge_index)


@pytest.mark.slow
def test_real_movielens():
    if not (SHARED_DATA / 'ml-latest-small').is_dir():
        pytest.skip(f'{SHARED_DATA / "ml-latest-small"} not present')
    data = load_dataset('ml-latest-small', SHARED_DATA)
    assert (data['user'].num_nodes, data['item'].num_nodes) == (610, 9742)
    n_ratings = sum(data['user', b, 'item'].edge_index.size(1)
                    for b in ('dislike', 'neutral', 'like'))
    like = data['user', 'like', 'item']
    assert n_ratings + like.val_edge_index.size(1) + like.test_edge_index.size(1) == 100836
    assert 0 < data['user', 'tag', 'item'].edge_index.size(1) <= 3683
    log = read_movielens_log(SHARED_DATA / 'ml-latest-small')
    assert len(log['user']) == 100836 + 3683


def test_mbgmn_root_named_after_another_dataset_is_refused(tmp_path):
    taobao = write_mbgmn(tmp_path / 'taobao-mbgmn')
    assert load_dataset('taobao', taobao).name == 'taobao'          # the root itself
    assert load_dataset('taobao', tmp_path).name == 'taobao'        # root/taobao-mbgmn
    with pytest.raises(FileNotFoundError, match="named after 'taobao'"):
        load_dataset('beibei', taobao)                              # not silently Taobao
    generic = write_mbgmn(tmp_path / 'my_files')
    assert load_dataset('beibei', generic).name == 'beibei'         # a neutral name is fine
