import os

import pytest
import torch

from mbgraph.data import make_multiplex

os.environ.setdefault('TQDM_DISABLE', '1')
# the benchmark CLI's result archive is the repository's own benchmarks/archive by default:
# no test reads or writes it unless it passes --archive itself
os.environ['MBGRAPH_BENCH_ARCHIVE'] = 'none'
# the tests use tiny tensors: one thread avoids intra-op thread overhead, which on a busy
# 2-core machine made them ~20x slower
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA device')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny():
    """3 users, 4 items, behaviors view -> cart -> buy, written out by hand.

    view: (0,0) (0,1) (1,1) (1,2) (2,3) (2,0)
    cart: (0,1) (1,2) (2,3)
    buy : (0,1) (2,3)    val: (1,1)    test: (0,2)
    """
    return make_multiplex(
        num_users=3, num_items=4, behaviors=['view', 'cart', 'buy'],
        edges={'view': torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 3, 0]]),
               'cart': torch.tensor([[0, 1, 2], [1, 2, 3]]),
               'buy': torch.tensor([[0, 2], [1, 3]])},
        val=torch.tensor([[1], [1]]), test=torch.tensor([[0], [2]]), name='tiny')
