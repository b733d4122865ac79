"""BehaviorAdjacency / SparseOperator against dense matrices written out by hand."""
import numpy as np
import pytest
import torch

from mbgraph.data import make_multiplex
from mbgraph.data.adjacency import (
    BehaviorAdjacency,
    SparseOperator,
    available_backends,
    spmm,
    to_homogeneous_edge_index,
)

U, I = 3, 4
N = U + I
BEHAVIORS = ['pv', 'cart', 'buy']
# (user, item) training pairs; in 'buy' user 1 and items 0 and 2 have no interaction
PAIRS = {
    'pv': [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2), (2, 3)],
    'cart': [(0, 0), (0, 1), (1, 2), (2, 3)],
    'buy': [(0, 1), (2, 3)],
}
NORMS = ['symmetric', 'left', 'left_self_loop', 'left_plus_identity', 'none']


def make_data():
    edges = {b: torch.tensor(p, dtype=torch.long).t() for b, p in PAIRS.items()}
    return make_multiplex(U, I, BEHAVIORS, edges)


def dense_adjacency(pairs):
    """A = [[0, R], [R^T, 0]] over users 0..U-1 then items U..U+I-1."""
    a = np.zeros((N, N))
    for u, i in pairs:
        a[u, U + i] = 1.
        a[U + i, u] = 1.
    return a


def inv(d):
    out = np.zeros_like(d)
    out[d > 0] = 1. / d[d > 0]
    return out


def hand_norm(a, norm):
    eye = np.eye(N)
    d = a.sum(1)
    if norm == 'symmetric':
        s = np.sqrt(inv(d))
        return s[:, None] * a * s[None, :]
    if norm == 'left':
        return inv(d)[:, None] * a
    if norm == 'left_self_loop':
        a_hat = a + eye
        return inv(a_hat.sum(1))[:, None] * a_hat
    if norm == 'left_plus_identity':
        return inv(d)[:, None] * a + eye
    return a


def as_np(t):
    return t.detach().cpu().double().numpy()


@pytest.fixture
def adj():
    return BehaviorAdjacency(make_data())


def test_sizes(adj):
    assert (adj.num_users, adj.num_items, adj.num_nodes) == (U, I, N)
    assert adj.behaviors == BEHAVIORS
    assert adj.device == torch.device('cpu')
    op = adj.operator('buy', norm='left')
    assert op.shape == (N, N)
    assert op.nnz == 4


def test_literal_buy_operators(adj):
    # buy: user 0 - item 1 (node 4), user 2 - item 3 (node 6); nodes 1, 3, 5 isolated
    h = 0.5
    expected_self_loop = np.array([
        # 0  1  2  3  4  5  6
        [h, 0, 0, 0, h, 0, 0],
        [0, 1, 0, 0, 0, 0, 0],
        [0, 0, h, 0, 0, 0, h],
        [0, 0, 0, 1, 0, 0, 0],
        [h, 0, 0, 0, h, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, h, 0, 0, 0, h],
    ])
    np.testing.assert_allclose(
        as_np(adj.operator('buy', norm='left_self_loop').to_dense()), expected_self_loop)
    expected_a = np.zeros((N, N))
    expected_a[0, 4] = expected_a[4, 0] = expected_a[2, 6] = expected_a[6, 2] = 1.
    np.testing.assert_allclose(as_np(adj.operator('buy', norm='left').to_dense()), expected_a)
    np.testing.assert_allclose(as_np(adj.operator('buy', norm='left_plus_identity').to_dense()),
                               expected_a + np.eye(N))


def test_literal_pv_left(adj):
    # pv degrees: users 2, 2, 2; items 1, 2, 2, 1
    expected = np.zeros((N, N))
    expected[0, [3, 4]] = 1 / 2
    expected[1, [4, 5]] = 1 / 2
    expected[2, [5, 6]] = 1 / 2
    expected[3, 0] = 1.
    expected[4, [0, 1]] = 1 / 2
    expected[5, [1, 2]] = 1 / 2
    expected[6, 2] = 1.
    np.testing.assert_allclose(as_np(adj.operator('pv', norm='left').to_dense()), expected,
                               rtol=1e-6)


@pytest.mark.parametrize('norm', NORMS)
@pytest.mark.parametrize('behavior', BEHAVIORS)
def test_single_behavior_norms(adj, behavior, norm):
    expected = hand_norm(dense_adjacency(PAIRS[behavior]), norm)
    op = adj.operator(behavior, norm=norm)
    np.testing.assert_allclose(as_np(op.to_dense()), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(as_np(op.t().to_dense()), expected.T, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('norm', NORMS)
def test_union_operator(adj, norm):
    union = set(PAIRS['pv']) | set(PAIRS['cart'])
    expected = hand_norm(dense_adjacency(sorted(union)), norm)
    op = adj.operator(['pv', 'cart'], norm=norm)
    np.testing.assert_allclose(as_np(op.to_dense()), expected, rtol=1e-6, atol=1e-7)
    # binary: (0, 0) and (0, 1) are in both behaviors but count once
    assert as_np(adj.operator(['pv', 'cart'], norm='none').to_dense()).max() == 1.


@pytest.mark.parametrize('norm', NORMS)
@pytest.mark.parametrize('k', [0, 1, 2])
def test_cumulative_is_sum_of_upstream(adj, norm, k):
    expected = sum(hand_norm(dense_adjacency(PAIRS[b]), norm) for b in BEHAVIORS[:k + 1])
    op = adj.cumulative(BEHAVIORS[k], norm=norm)
    np.testing.assert_allclose(as_np(op.to_dense()), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(as_np(op.t().to_dense()), expected.T, rtol=1e-6, atol=1e-7)


def test_copf_eq5_default(adj):
    # sum_{k' <= cart} (D_k'^-1 A_k' + I): the default norm of cumulative
    eye = np.eye(N)
    expected = sum(inv(dense_adjacency(PAIRS[b]).sum(1))[:, None] * dense_adjacency(PAIRS[b])
                   + eye for b in ['pv', 'cart'])
    np.testing.assert_allclose(as_np(adj.cumulative('cart').to_dense()), expected, rtol=1e-6)


@pytest.mark.parametrize('norm', ['symmetric', 'left'])
def test_zero_degree_rows_are_zero(adj, norm):
    dense = as_np(adj.operator('buy', norm=norm).to_dense())
    assert np.isfinite(dense).all()
    for node in (1, U + 0, U + 2):  # user 1, items 0 and 2 have no buy interaction
        assert (dense[node] == 0).all()
        assert (dense[:, node] == 0).all()


def test_duplicates_are_binary():
    edges = {b: torch.tensor(p, dtype=torch.long).t() for b, p in PAIRS.items()}
    edges['buy'] = torch.tensor([[0, 0, 2], [1, 1, 3]])  # (0, 1) twice
    adj = BehaviorAdjacency(make_multiplex(U, I, BEHAVIORS, edges))
    np.testing.assert_allclose(as_np(adj.operator('buy', norm='none').to_dense()),
                               dense_adjacency(PAIRS['buy']))


@pytest.mark.parametrize('backend', ['torch', 'cached'])
@pytest.mark.parametrize('norm', ['symmetric', 'left', 'left_self_loop', 'left_plus_identity'])
@pytest.mark.parametrize('cumulative', [False, True])
def test_forward_backward_match_dense(backend, norm, cumulative):
    adj = BehaviorAdjacency(make_data(), backend=backend, dtype=torch.float64)
    op = adj.cumulative('cart', norm=norm) if cumulative else adj.operator('cart', norm=norm)
    if cumulative:
        dense = sum(hand_norm(dense_adjacency(PAIRS[b]), norm) for b in ['pv', 'cart'])
    else:
        dense = hand_norm(dense_adjacency(PAIRS['cart']), norm)
    dense = torch.tensor(dense)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(N, 5, generator=g, dtype=torch.float64)
    w = torch.randn(N, 5, generator=g, dtype=torch.float64)

    x = x0.clone().requires_grad_()
    y = op @ x
    ((op @ y) * w).sum().backward()  # two layers: the gradient goes through op twice

    x_ref = x0.clone().requires_grad_()
    y_ref = dense @ x_ref
    ((dense @ y_ref) * w).sum().backward()

    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    # the gradient of sum(A A x * w) w.r.t. x is A^T A^T w, written out
    torch.testing.assert_close(x.grad, dense.T @ (dense.T @ w))


def test_cached_backward_uses_transpose():
    adj = BehaviorAdjacency(make_data(), backend='cached', dtype=torch.float64)
    op = adj.operator('pv', norm='left')
    x = torch.randn(N, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: op @ t, (x,))
    # second order: the backward is itself differentiable w.r.t. the incoming gradient
    assert torch.autograd.gradgradcheck(lambda t: (op @ t) ** 2, (x,))


def test_vector_and_spmm(adj):
    op = adj.operator('cart', norm='left_self_loop')
    dense = torch.tensor(hand_norm(dense_adjacency(PAIRS['cart']), 'left_self_loop'),
                         dtype=torch.float32)
    v = torch.arange(N, dtype=torch.float32)
    torch.testing.assert_close(op @ v, dense @ v)
    x = torch.randn(N, 2)
    torch.testing.assert_close(spmm(op, x), dense @ x)
    torch.testing.assert_close(op.matmul(x), dense @ x)
    torch.testing.assert_close(spmm(dense.to_sparse_csr(), x), dense @ x)


def test_transpose_is_cached(adj):
    op = adj.operator('cart', norm='left')
    assert op.t() is op.t()
    assert op.t().t() is op
    assert op.t().csr is op.csr_t
    sym = adj.operator('cart', norm='symmetric')
    assert sym.t() is sym  # a symmetric operator is its own transpose


def test_operators_are_cached(adj):
    assert adj.operator('buy', norm='left') is adj.operator('buy', norm='left')
    assert adj.operator('buy', norm='left') is adj.operator(['buy'], norm='left')
    assert adj.operator(['cart', 'pv'], norm='left') is adj.operator(['pv', 'cart'], norm='left')
    assert adj.cumulative('cart') is adj.cumulative('cart')
    assert adj.operator('buy', norm='left') is not adj.operator('buy', norm='symmetric')
    # the cumulative sum of one behavior is not the same entry as its single operator
    assert adj.cumulative('pv', norm='left') is not adj.operator('pv', norm='left')


def test_unknown_names(adj):
    with pytest.raises(ValueError, match=r"unknown behavior 'click'.*\['pv', 'cart', 'buy'\]"):
        adj.operator('click')
    with pytest.raises(ValueError, match=r"unknown behavior 'click'"):
        adj.cumulative('click')
    with pytest.raises(ValueError, match=r"unknown behavior 'click'"):
        adj.operator(['pv', 'click'])
    with pytest.raises(ValueError, match='unknown norm'):
        adj.operator('pv', norm='row')
    with pytest.raises(ValueError, match='unknown backend'):
        BehaviorAdjacency(make_data(), backend='scipy')


def test_bad_inputs(adj):
    op = adj.operator('pv')
    with pytest.raises(ValueError, match=r'must be \[7, d\]'):
        op @ torch.randn(5, 2)
    with pytest.raises(ValueError, match='dtype'):
        op @ torch.randn(N, 2, dtype=torch.float64)


def test_to_dtype_and_device(adj):
    op = adj.operator('pv', norm='left')
    op64 = op.to(dtype=torch.float64)
    assert op64.dtype == torch.float64 and op.to('cpu') is op
    x = torch.randn(N, 2, dtype=torch.float64)
    torch.testing.assert_close(op64 @ x, torch.tensor(hand_norm(dense_adjacency(PAIRS['pv']),
                                                                'left')) @ x)
    assert adj.to('cpu') is adj and adj.operator('pv', norm='left') is op


def test_to_homogeneous_edge_index():
    ei = to_homogeneous_edge_index(make_data(), ['cart', 'buy'])
    got = set(map(tuple, ei.t().tolist()))
    expected = set()
    for u, i in set(PAIRS['cart']) | set(PAIRS['buy']):
        expected |= {(u, U + i), (U + i, u)}
    assert got == expected and ei.size(1) == len(expected)
    with pytest.raises(ValueError, match='unknown behavior'):
        to_homogeneous_edge_index(make_data(), ['click'])


def test_available_backends():
    backends = available_backends()
    assert backends[:2] == ['torch', 'cached']
    try:
        import torch_sparse  # noqa: F401
        assert 'torch_sparse' in backends
    except ImportError:
        assert 'torch_sparse' not in backends


def test_torch_sparse_backend_error_without_package():
    if 'torch_sparse' in available_backends():
        pytest.skip('torch_sparse is installed')
    with pytest.raises(ImportError, match=r'mbgraph\[sparse\]'):
        BehaviorAdjacency(make_data(), backend='torch_sparse')


def test_torch_sparse_backend():
    pytest.importorskip('torch_sparse')
    adj = BehaviorAdjacency(make_data(), backend='torch_sparse', dtype=torch.float64)
    op = adj.operator('cart', norm='left_self_loop')
    dense = torch.tensor(hand_norm(dense_adjacency(PAIRS['cart']), 'left_self_loop'))
    x = torch.randn(N, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(N, 4, dtype=torch.float64)
    y = op @ x
    (y * w).sum().backward()
    torch.testing.assert_close(y, dense @ x)
    torch.testing.assert_close(x.grad, dense.T @ w)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('backend', ['torch', 'cached'])
def test_cuda(backend):
    adj = BehaviorAdjacency(make_data(), device='cuda', backend=backend)
    op = adj.cumulative('buy', norm='left_plus_identity')
    assert op.device.type == 'cuda' and op.csr_t.device.type == 'cuda'
    dense = torch.tensor(sum(hand_norm(dense_adjacency(PAIRS[b]), 'left_plus_identity')
                             for b in BEHAVIORS), dtype=torch.float32)
    x = torch.randn(N, 8, requires_grad=True)
    w = torch.randn(N, 8)
    xc = x.detach().cuda().requires_grad_()
    y = op @ xc
    (y * w.cuda()).sum().backward()
    torch.testing.assert_close(y.cpu(), dense @ x.detach())
    torch.testing.assert_close(xc.grad.cpu(), dense.T @ w)
    # moving: every cached operator goes along
    adj.to('cpu')
    assert adj.cumulative('buy', norm='left_plus_identity').device.type == 'cpu'
    assert isinstance(adj.cumulative('buy', norm='left_plus_identity'), SparseOperator)


def test_empty_behavior():
    edges = {b: torch.tensor(p, dtype=torch.long).t() for b, p in PAIRS.items()}
    edges['cart'] = torch.zeros(2, 0, dtype=torch.long)
    adj = BehaviorAdjacency(make_multiplex(U, I, BEHAVIORS, edges))
    assert adj.operator('cart', norm='left').nnz == 0
    np.testing.assert_allclose(as_np(adj.operator('cart', norm='symmetric').to_dense()),
                               np.zeros((N, N)))
    np.testing.assert_allclose(as_np(adj.operator('cart', norm='left_self_loop').to_dense()),
                               np.eye(N))
    x = torch.randn(N, 2, requires_grad=True)
    (adj.operator('cart', norm='left') @ x).sum().backward()
    assert (x.grad == 0).all()


def test_out_of_range_ids():
    edges = {b: torch.tensor(p, dtype=torch.long).t() for b, p in PAIRS.items()}
    edges['buy'] = torch.tensor([[0], [I]])
    with pytest.raises(ValueError, match=r"\('user', 'buy', 'item'\) has item index 4"):
        BehaviorAdjacency(make_multiplex(U, I, BEHAVIORS, edges))


def test_sparse_operator_from_any_csr():
    # a non-symmetric 3 x 3 matrix: the transpose is computed when not given
    dense = torch.tensor([[0., 2., 0.], [1., 0., 3.], [0., 0., 4.]], dtype=torch.float64)
    op = SparseOperator(dense.to_sparse_csr())
    torch.testing.assert_close(op.to_dense(), dense)
    torch.testing.assert_close(op.t().to_dense(), dense.T)
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, dtype=torch.float64)
    ((op @ x) * w).sum().backward()
    torch.testing.assert_close(x.grad, dense.T @ w)
    with pytest.raises(ValueError, match='CSR'):
        SparseOperator(dense.to_sparse())
