"""Tiny sequence data shared by the sequence-model tests."""
import numpy as np

from mbgraph_seq.data import SequenceDataset


def cyclic_walks(num_users=40, num_items=30, length=16, seed=0, max_len=12,
                 behaviors='random', pass_seed=False):
    """Every user walks the items in a cycle (next item = item + 1) from a random start.

    ``behaviors='random'``: click/cart/buy drawn at random, with buys (the target) at position 2
    and the last three positions. ``behaviors='cycle'``: behaviors a, b, c in turn (c the target).
    ``pass_seed`` also hands ``seed`` to the dataset (its default batch seed).
    """
    rng = np.random.default_rng(seed)
    u, i, b, t = [], [], [], []
    for user in range(num_users):
        start = int(rng.integers(num_items))
        if behaviors == 'random':
            beh = rng.choice(3, size=length, p=[0.5, 0.2, 0.3])
            beh[[2, -3, -2, -1]] = 2
        else:
            beh = np.arange(length) % 3
        u += [user] * length
        i += ((start + np.arange(length)) % num_items).tolist()
        b += beh.tolist()
        t += list(range(length))
    names = ['click', 'cart', 'buy'] if behaviors == 'random' else ['a', 'b', 'c']
    extra = {'seed': seed} if pass_seed else {}
    return SequenceDataset.from_log(np.array(u), np.array(i), np.array(b), np.array(t), names,
                                    num_users=num_users, num_items=num_items, max_len=max_len,
                                    **extra)
