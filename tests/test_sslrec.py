"""The SSLRec loader (mbgraph.data.sslrec) on tiny files written here: CSR and COO, known and
given behavior orders, test for some users, the restricted unpickler, every malformed input;
and (slow) the shared RetailRocket files."""
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbgraph.data import edge_type
from mbgraph.data.datasets import RestrictedUnpicklingError, load_dataset
from mbgraph.data.sslrec import load_sslrec

SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'

VIEW = [[1, 1, 0, 0, 1], [0, 1, 1, 0, 0], [1, 0, 0, 1, 0], [0, 0, 1, 1, 0]]
CART = [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0]]
BUY = [[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 1, 1, 0]]
TEST = [[0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]   # user 3: none


def pairs(ei):
    return sorted(map(tuple, torch.as_tensor(ei).t().tolist()))


def dump(obj, path):
    with open(path, 'wb') as f:
        pickle.dump(obj, f)


def write(directory, mats=None, test=TEST, fmt=sp.csr_matrix, test_fmt=sp.coo_matrix):
    directory.mkdir(parents=True, exist_ok=True)
    mats = {'view': VIEW, 'cart': CART, 'buy': BUY} if mats is None else mats
    for b, m in mats.items():
        dump(fmt(np.array(m, dtype=np.int64)) if not sp.issparse(m) else m,
             directory / f'train_mat_{b}.pkl')
    if test is not None:
        dump(test_fmt(np.array(test, dtype=np.float64)) if not sp.issparse(test) else test,
             directory / 'test_mat.pkl')
    return directory


def nonzero_pairs(m):
    r, c = np.nonzero(np.array(m))
    return sorted(zip(r.tolist(), c.tolist()))


@pytest.mark.parametrize('fmt', [sp.csr_matrix, sp.coo_matrix])
def test_reads_csr_and_coo_with_the_known_order(tmp_path, fmt):
    folder = write(tmp_path / 'retail_rocket', fmt=fmt)
    data = load_sslrec(folder, seed=0)
    assert data.behaviors == ['view', 'cart', 'buy']
    assert (data['user'].num_nodes, data['item'].num_nodes) == (4, 5)
    assert pairs(data[edge_type('view')].edge_index) == nonzero_pairs(VIEW)
    assert pairs(data[edge_type('cart')].edge_index) == nonzero_pairs(CART)
    buy = data[edge_type('buy')]
    # test only for the users who have one; validation held out of the training buys
    assert pairs(buy.test_edge_index) == [(0, 4), (1, 3), (2, 0)]
    train_and_val = pairs(torch.cat([buy.edge_index, buy.val_edge_index], 1))
    assert train_and_val == nonzero_pairs(BUY)
    # users with at least two training buys give one each
    assert sorted(buy.val_edge_index[0].tolist()) == [0, 1, 3]
    assert not set(pairs(buy.val_edge_index)) & set(pairs(buy.edge_index))


def test_known_orders_per_dataset_load_the_behaviors_present(tmp_path, caplog):
    tmall = write(tmp_path / 'tmall', mats={'pv': VIEW, 'cart': CART, 'buy': BUY})
    with caplog.at_level(logging.WARNING):
        data = load_sslrec(tmall)
    assert data.behaviors == ['pv', 'cart', 'buy']
    assert "no file for behaviors ['fav']" in caplog.text
    ijcai = write(tmp_path / 'ijcai_15', mats={'click': VIEW, 'fav': CART, 'cart': CART,
                                               'buy': BUY})
    assert load_sslrec(ijcai).behaviors == ['click', 'fav', 'cart', 'buy']
    # tmall's names in another folder: the order is inferred from the file names
    other = write(tmp_path / 'mine', mats={'fav': CART, 'pv': VIEW, 'buy': BUY})
    assert load_sslrec(other).behaviors == ['pv', 'fav', 'buy']


def test_given_behaviors_select_and_order_the_files(tmp_path):
    folder = write(tmp_path / 'x', mats={'a': VIEW, 'b': CART, 'c': BUY})
    data = load_dataset('sslrec', root=folder, behaviors=['b', 'c'])
    assert data.behaviors == ['b', 'c']
    # no test item is in the user's training (b or c): the validation pairs, held out like
    # the test, leave b as well
    val = set(pairs(data[edge_type('c')].val_edge_index))
    assert val and pairs(data[edge_type('b')].edge_index) == \
        sorted(set(nonzero_pairs(CART)) - val)
    assert val & set(nonzero_pairs(CART))        # the case is exercised: a carted pair held
    with pytest.raises(ValueError, match="not known; pass behaviors"):
        load_sslrec(folder)
    with pytest.raises(FileNotFoundError, match=r"no file for behaviors \['z'\].*train_mat_z"):
        load_sslrec(folder, behaviors=['z', 'c'])


def test_retailrocket_is_found_under_the_data_root(tmp_path):
    write(tmp_path / 'retailrocket-sslrec')
    data = load_dataset('retailrocket', root=tmp_path)
    assert data.name == 'retailrocket' and data.behaviors == ['view', 'cart', 'buy']
    with pytest.raises(FileNotFoundError, match='no SSLRec files'):
        load_dataset('retailrocket', root=tmp_path / 'elsewhere')
    with pytest.raises(FileNotFoundError, match='needs root'):
        load_dataset('retailrocket')


def test_the_validation_split_is_seeded(tmp_path):
    folder = write(tmp_path / 'retail_rocket')
    a, b = load_sslrec(folder, seed=3), load_sslrec(folder, seed=3)
    assert torch.equal(a[edge_type('buy')].val_edge_index, b[edge_type('buy')].val_edge_index)


class Evil:
    def __reduce__(self):
        return (os.system, ('echo pwned',))


@pytest.mark.parametrize('case, error, message', [
    ('no_test', FileNotFoundError, 'test_mat.pkl: missing'),
    ('no_target', FileNotFoundError, "train_mat_buy.pkl: missing the target"),
    ('shapes', ValueError, r'shape \(4, 6\) differs'),
    ('dense', ValueError, 'expected a pickled scipy.sparse csr_matrix or coo_matrix'),
    ('evil', RestrictedUnpicklingError, 'refused to unpickle posix.system|refused to unpickle'),
    ('truncated', pickle.UnpicklingError, 'could not unpickle'),
    ('negative', ValueError, 'negative or not finite'),
    ('nan', ValueError, 'negative or not finite'),
    ('coo_out_of_range', ValueError, 'column index 9 outside 0..4'),
    ('coo_lengths', ValueError, 'row, col and data have lengths'),
    ('csr_broken', ValueError, 'malformed CSR matrix'),
    ('test_seen', ValueError, 'test pairs are also training pairs in train_mat_buy.pkl'),
    ('test_empty', ValueError, 'holds no test interactions'),
    ('strings', ValueError, 'dtype'),
])
def test_malformed_inputs_get_a_clear_error(tmp_path, case, error, message):
    folder = write(tmp_path / 'retail_rocket')
    if case == 'no_test':
        (folder / 'test_mat.pkl').unlink()
    elif case == 'no_target':
        (folder / 'train_mat_buy.pkl').unlink()
    elif case == 'shapes':
        dump(sp.csr_matrix(np.zeros((4, 6))), folder / 'train_mat_cart.pkl')
    elif case == 'dense':
        dump(np.array(CART), folder / 'train_mat_cart.pkl')
    elif case == 'evil':
        dump(Evil(), folder / 'train_mat_cart.pkl')
    elif case == 'truncated':
        raw = (folder / 'train_mat_view.pkl').read_bytes()
        (folder / 'train_mat_view.pkl').write_bytes(raw[:len(raw) // 2])
    elif case in ('negative', 'nan'):
        m = sp.csr_matrix(np.array(CART, dtype=np.float64))
        m.data[0] = -1.0 if case == 'negative' else np.nan
        dump(m, folder / 'train_mat_cart.pkl')
    elif case == 'coo_out_of_range':
        m = sp.coo_matrix(np.array(CART))
        m.col[0] = 9          # an unpickled matrix is not checked by scipy
        dump(m, folder / 'train_mat_cart.pkl')
    elif case == 'coo_lengths':
        m = sp.coo_matrix(np.array(CART))
        m.__dict__['data'] = m.data[:-1]
        dump(m, folder / 'train_mat_cart.pkl')
    elif case == 'csr_broken':
        m = sp.csr_matrix(np.array(CART))
        m.indices[0] = 99
        dump(m, folder / 'train_mat_cart.pkl')
    elif case == 'test_seen':
        dump(sp.coo_matrix(np.array(BUY)), folder / 'test_mat.pkl')
    elif case == 'test_empty':
        dump(sp.coo_matrix(np.zeros((4, 5))), folder / 'test_mat.pkl')
    elif case == 'strings':
        m = sp.coo_matrix(np.array(CART))
        m.__dict__['data'] = np.array(['x'] * m.nnz)
        dump(m, folder / 'train_mat_cart.pkl')
    with pytest.raises(error, match=message):
        load_sslrec(folder)


def test_stored_zeros_are_not_interactions(tmp_path, caplog):
    m = sp.csr_matrix(np.array(CART))
    m.data[0] = 0
    folder = write(tmp_path / 'retail_rocket', mats={'view': VIEW, 'cart': m, 'buy': BUY})
    with caplog.at_level(logging.WARNING):
        data = load_sslrec(folder)
    assert 'explicitly stored zeros' in caplog.text
    assert (0, 0) not in pairs(data[edge_type('cart')].edge_index)


@pytest.mark.slow
def test_shared_retailrocket():
    if not (SHARED_DATA / 'retailrocket-sslrec').is_dir():
        pytest.skip(f'{SHARED_DATA / "retailrocket-sslrec"} not present')
    data = load_dataset('retailrocket', SHARED_DATA)
    assert data.behaviors == ['view', 'cart', 'buy']
    assert (data['user'].num_nodes, data['item'].num_nodes) == (2174, 30113)
    buy = data[edge_type('buy')]
    # the files hold 75,374 views and 12,456 carts; no test buy was viewed or carted, so the
    # 885 validation buys leave view (708 of them were viewed) and cart (797) as well
    assert data[edge_type('view')].edge_index.size(1) == 75374 - 708
    assert data[edge_type('cart')].edge_index.size(1) == 12456 - 797
    assert buy.edge_index.size(1) + buy.val_edge_index.size(1) == 9551
    assert buy.val_edge_index.size(1) == 885
    assert buy.test_edge_index.size(1) == 2174
