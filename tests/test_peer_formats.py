"""The peers' other formats on tiny inputs made here: RecBole atomic .inter files, one text
file per behavior, and PyG's Taobao graph (built here in the shape of
torch_geometric.datasets.Taobao, never downloaded); each malformed input's message."""
import logging

import pytest
import torch
from torch_geometric.data import HeteroData

from mbgraph.cli import main
from mbgraph.data import edge_type, from_pyg_taobao
from mbgraph.data.behavior_txt import load_behavior_txt
from mbgraph.data.datasets import load_dataset
from mbgraph.data.recbole import load_recbole


def pairs(ei):
    return sorted(map(tuple, torch.as_tensor(ei).t().tolist()))


def raw_pairs(data, behavior, split=None):
    """(raw user, raw item) pairs of a behavior's training edges or of a split."""
    store = data[edge_type(behavior)]
    ei = store.edge_index if split is None else store[f'{split}_edge_index']
    users, items = data['user'].raw_id, data['item'].raw_id
    return sorted((users[u], items[i]) for u, i in ei.t().tolist())


# --------------------------------------------------------------------------------------------
# RecBole
# --------------------------------------------------------------------------------------------

BEHAVIOR_INTER = """user_id:token\titem_id:token\tbehavior:token\ttimestamp:float
u1\ti1\tpv\t1
u1\ti2\tpv\t2
u1\ti1\tbuy\t3
u1\ti2\tbuy\t4
u1\ti3\tbuy\t5
u1\ti3\tcart\t4
u2\ti2\tcart\t1
u2\ti2\tbuy\t2
u2\ti4\tpv\t3
"""


def write(path, text):
    path.write_text(text)
    return path


def test_recbole_behavior_column(tmp_path):
    data = load_recbole(write(tmp_path / 'shop.inter', BEHAVIOR_INTER))
    assert data.behaviors == ['pv', 'cart', 'buy'] and data.name == 'shop'
    assert data['user'].raw_id == ['u1', 'u2'] and data['item'].raw_id == ['i1', 'i2', 'i3', 'i4']
    assert raw_pairs(data, 'pv') == [('u1', 'i1'), ('u1', 'i2'), ('u2', 'i4')]
    assert raw_pairs(data, 'cart') == [('u1', 'i3'), ('u2', 'i2')]
    # u1 has 3 buys: the last in time is the test pair, the one before it validation
    assert raw_pairs(data, 'buy', 'test') == [('u1', 'i3')]
    assert raw_pairs(data, 'buy', 'val') == [('u1', 'i2')]
    assert raw_pairs(data, 'buy') == [('u1', 'i1'), ('u2', 'i2')]
    # a folder with one .inter file, through the registry, with a subset of behaviors
    sub = load_dataset('recbole', root=tmp_path, behaviors=['cart', 'buy'])
    assert sub.behaviors == ['cart', 'buy'] and raw_pairs(sub, 'cart') == [('u1', 'i3'),
                                                                           ('u2', 'i2')]


def test_recbole_rating_column(tmp_path):
    text = ('user_id:token\titem_id:token\trating:float\n'
            '1\t10\t5\n1\t11\t4\n1\t12\t4.5\n1\t13\t1\n2\t10\t3\n2\t11\t4\n1\t14\t5\n')
    data = load_recbole(write(tmp_path / 'ml.inter', text), seed=0)
    assert data.behaviors == ['dislike', 'neutral', 'like']
    assert raw_pairs(data, 'dislike') == [(1, 13)]
    assert raw_pairs(data, 'neutral') == [(2, 10)]
    likes = raw_pairs(data, 'like') + raw_pairs(data, 'like', 'val') + \
        raw_pairs(data, 'like', 'test')
    assert sorted(likes) == [(1, 10), (1, 11), (1, 12), (1, 14), (2, 11)]
    # other cuts: 4 is neutral when like needs >= 4.5
    data = load_recbole(tmp_path / 'ml.inter', rating_cuts=(2, 4.5))
    assert (1, 11) in raw_pairs(data, 'neutral')


@pytest.mark.parametrize('text, message', [
    ('', 'the file is empty'),
    ('user_id\titem_id\tbehavior\n', "header field 'user_id' is not name:type"),
    ('user_id:token\titem_id:token\n1\t2\n', 'no behavior column'),
    ('uid:token\titem_id:token\tbehavior:token\n1\t2\tbuy\n', "no user column 'user_id'"),
    ('user_id:token\titem_id:token\tbehavior:token\n1\t2\n', 'line 2: 2 fields, the header'),
    ('user_id:token\titem_id:token\trating:float\n1\t2\tgood\n', "rating 'good' is not a"),
    ('user_id:token\titem_id:token\tbehavior:token\ttimestamp:float\n1\t2\tbuy\tnoon\n',
     "timestamp 'noon' is not a number"),
    ('user_id:token\titem_id:token\tbehavior:token\n1\t2\tbuy\n1\t3\tzap\n',
     r"behaviors \['buy', 'zap'\]; pass behaviors"),
    ('user_id:token\titem_id:token\tbehavior:token\n', 'a header but no interactions'),
    ('user_id:token\titem_id:token\tbehavior:token\n\t2\tbuy\n', 'empty user field'),
    ('user_id:token\titem_id:token\trating:float\n1\t2\t1\n', 'no rating >= 4.0'),
])
def test_recbole_malformed_inputs(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_recbole(write(tmp_path / 'bad.inter', text))


def test_recbole_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='no such file or folder'):
        load_recbole(tmp_path / 'nothing.inter')
    with pytest.raises(FileNotFoundError, match='found none'):
        load_recbole(tmp_path)
    write(tmp_path / 'shop.inter', BEHAVIOR_INTER)
    with pytest.raises(ValueError, match=r"behaviors \['fav'\] have no rows"):
        load_recbole(tmp_path / 'shop.inter', ['fav', 'buy'])


# --------------------------------------------------------------------------------------------
# one text file per behavior
# --------------------------------------------------------------------------------------------

def write_txt(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (folder / name).write_text(''.join(f'{u} {i}\n' for u, i in lines))
    return folder


TXT = {'click.txt': [(0, 0), (0, 1), (1, 2), (2, 3)], 'cart.txt': [(0, 1), (2, 3)],
       'buy.txt': [(0, 1), (0, 2), (1, 2), (2, 3), (2, 0)], 'test.txt': [(0, 3), (1, 0)],
       'validation.txt': [(2, 1)], 'train.txt': [(9, 9)], 'item_dict.txt': [(7, 7)]}


def test_behavior_txt_with_a_validation_file(tmp_path):
    folder = write_txt(tmp_path / 'tmall', {**TXT, 'click.txt': TXT['click.txt'],
                                            'collect.txt': [(1, 3)]})
    data = load_dataset('behavior_txt', root=folder)
    # train.txt and *_dict.txt are not behaviors; the order is the known click..buy one
    assert data.behaviors == ['click', 'collect', 'cart', 'buy']
    assert (data['user'].num_nodes, data['item'].num_nodes) == (3, 4)
    assert pairs(data[edge_type('buy')].edge_index) == sorted(TXT['buy.txt'])
    assert pairs(data[edge_type('buy')].test_edge_index) == [(0, 3), (1, 0)]
    assert pairs(data[edge_type('buy')].val_edge_index) == [(2, 1)]


def test_behavior_txt_without_validation_one_based_and_given_order(tmp_path, caplog):
    files = {'a.txt': [(1, 1), (2, 2)], 'b.txt': [(1, 2), (1, 3), (2, 1)], 'test.txt': [(2, 3)]}
    folder = write_txt(tmp_path / 'x', files)
    with pytest.raises(ValueError, match='not known; pass behaviors'):
        load_behavior_txt(folder)
    with caplog.at_level(logging.INFO):
        data = load_behavior_txt(folder, ['a', 'b'], one_based=True, num_items=5)
    assert 'no validation file' in caplog.text
    assert (data['user'].num_nodes, data['item'].num_nodes) == (2, 5)
    buy = data[edge_type('b')]
    assert pairs(torch.cat([buy.edge_index, buy.val_edge_index], 1)) == [(0, 1), (0, 2), (1, 0)]
    assert pairs(buy.val_edge_index)[0][0] == 0     # only user 0 has two
    assert pairs(buy.test_edge_index) == [(1, 2)]


@pytest.mark.parametrize('case, error, message', [
    ('no_test', FileNotFoundError, 'test.txt: missing'),
    ('no_file', FileNotFoundError, r"no file for behaviors \['fav'\]"),
    ('three_fields', ValueError, r'buy.txt, line 2: expected "user item", got 3 fields'),
    ('not_int', ValueError, 'cart.txt, line 1: ids must be integers'),
    ('seen', ValueError, 'test.txt: 1 pairs are also training pairs in buy.txt'),
    ('too_few', ValueError, 'num_users=2 but the files hold id 2'),
    ('empty_test', ValueError, 'holds no test pairs'),
    ('negative', ValueError, 'negative id'),
])
def test_behavior_txt_malformed_inputs(tmp_path, case, error, message):
    folder = write_txt(tmp_path / 'shop', {k: v for k, v in TXT.items() if k != 'collect.txt'})
    kwargs = {'behaviors': ['click', 'cart', 'buy']}
    if case == 'no_test':
        (folder / 'test.txt').unlink()
    elif case == 'no_file':
        kwargs['behaviors'] = ['fav', 'buy']
    elif case == 'three_fields':
        (folder / 'buy.txt').write_text('0 1\n0 2 7\n')
    elif case == 'not_int':
        (folder / 'cart.txt').write_text('a b\n')
    elif case == 'seen':
        (folder / 'test.txt').write_text('0 1\n')
    elif case == 'too_few':
        kwargs['num_users'] = 2
    elif case == 'empty_test':
        (folder / 'test.txt').write_text('\n')
    elif case == 'negative':
        (folder / 'test.txt').write_text('0 -1\n')
    with pytest.raises(error, match=message):
        load_behavior_txt(folder, **kwargs)


# --------------------------------------------------------------------------------------------
# PyG's Taobao
# --------------------------------------------------------------------------------------------

PV, CART, BUY, FAV = 0, 1, 2, 3      # torch_geometric.datasets.Taobao's behavior_dict


def pyg_taobao(edges, num_users=3, num_items=5, with_time=True):
    """A HeteroData in the shape torch_geometric.datasets.Taobao.process() builds."""
    data = HeteroData()
    data['user'].num_nodes = num_users
    data['item'].num_nodes = num_items
    data['category'].num_nodes = 2
    data['user', 'item'].edge_index = torch.tensor([[u for u, _, _, _ in edges],
                                                    [i for _, i, _, _ in edges]])
    if with_time:
        data['user', 'item'].time = torch.tensor([t for _, _, _, t in edges])
    data['user', 'item'].behavior = torch.tensor([b for _, _, b, _ in edges])
    data['item', 'category'].edge_index = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 1, 1, 1]])
    return data


EDGES = [(0, 0, PV, 10), (0, 1, PV, 11), (0, 1, FAV, 12), (0, 1, CART, 13), (0, 1, BUY, 14),
         (0, 2, BUY, 20), (0, 3, BUY, 30), (0, 4, BUY, 25), (1, 2, PV, 5), (1, 2, PV, 6),
         (1, 2, BUY, 7), (2, 4, CART, 1), (2, 4, BUY, 2), (2, 3, BUY, 3), (2, 0, BUY, 1)]


def test_from_pyg_taobao_splits_by_time():
    pyg = pyg_taobao(EDGES)
    assert pyg.edge_types == [('user', 'to', 'item'), ('item', 'to', 'category')]
    data = from_pyg_taobao(pyg)
    assert data.behaviors == ['pv', 'fav', 'cart', 'buy'] and data.name == 'pyg-taobao'
    assert (data['user'].num_nodes, data['item'].num_nodes) == (3, 5)
    assert set(data.edge_types) == {edge_type(b) for b in data.behaviors}
    assert pairs(data[edge_type('pv')].edge_index) == [(0, 0), (0, 1), (1, 2)]   # repeat once
    assert pairs(data[edge_type('fav')].edge_index) == [(0, 1)]
    assert pairs(data[edge_type('cart')].edge_index) == [(0, 1), (2, 4)]
    buy = data[edge_type('buy')]
    # user 0 buys 1 (t 14), 2 (20), 4 (25), 3 (30): test 3, validation 4; user 2 buys 0, 4
    # (t 1, 2), 3 (3): test 3, validation 4; user 1 has one buy: all training
    assert pairs(buy.test_edge_index) == [(0, 3), (2, 3)]
    assert pairs(buy.val_edge_index) == [(0, 4), (2, 4)]
    assert pairs(buy.edge_index) == [(0, 1), (0, 2), (1, 2), (2, 0)]


def test_from_pyg_taobao_subset_and_no_time():
    data = from_pyg_taobao(pyg_taobao(EDGES, with_time=False), ['cart', 'buy'], seed=1)
    assert data.behaviors == ['cart', 'buy']
    buy = data[edge_type('buy')]
    held = pairs(torch.cat([buy.edge_index, buy.val_edge_index, buy.test_edge_index], 1))
    assert held == sorted({(u, i) for u, i, b, _ in EDGES if b == BUY})


@pytest.mark.parametrize('case, message', [
    ('no_behavior', 'has no behavior attribute'),
    ('length', 'behavior has 2 entries for 15 edges'),
    ('codes', r'behavior codes \[7\] are not among'),
    ('two_types', r'expected exactly one \(user, \*, item\) edge type'),
    ('no_buy', "has no 'buy' edges"),
    ('range', 'item ids outside 0..4'),
    ('unknown', r"unknown behaviors \['like'\]"),
])
def test_from_pyg_taobao_malformed(case, message):
    pyg = pyg_taobao(EDGES)
    behaviors = None
    store = pyg['user', 'to', 'item']
    if case == 'no_behavior':
        del store.behavior
    elif case == 'length':
        store.behavior = torch.tensor([0, 2])
    elif case == 'codes':
        store.behavior = store.behavior.clone()
        store.behavior[0] = 7
    elif case == 'two_types':
        pyg['user', 'clicks', 'item'].edge_index = torch.tensor([[0], [0]])
    elif case == 'no_buy':
        store.behavior = torch.zeros_like(store.behavior)
    elif case == 'range':
        store.edge_index = store.edge_index.clone()
        store.edge_index[1, 0] = 5
    elif case == 'unknown':
        behaviors = ['like', 'buy']
    with pytest.raises(ValueError, match=message):
        from_pyg_taobao(pyg, behaviors)


def test_cli_lists_the_new_formats(tmp_path, capsys):
    write(tmp_path / 'shop.inter', BEHAVIOR_INTER)
    assert main(['datasets', '--dataset', 'recbole', '--data-root',
                 str(tmp_path / 'shop.inter'), '--shortcuts']) == 0
    out = capsys.readouterr().out
    assert 'shop: 2 users, 4 items, behaviors pv -> cart -> buy' in out
    assert "already in the user's training pv" in out
    folder = write_txt(tmp_path / 'txt', {k: v for k, v in TXT.items()})
    assert main(['train', '--model', 'history', '--dataset', 'behavior_txt', '--data-root',
                 str(folder), '--behaviors', 'cart,buy', '--out', str(tmp_path / 'run'),
                 '--no-progress']) == 0
    assert main(['datasets', '--dataset', 'behavior_txt', '--data-root',
                 str(tmp_path / 'missing')]) == 2
