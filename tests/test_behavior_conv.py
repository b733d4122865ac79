"""BehaviorConv against dense propagation written out by hand, for every input format."""
import numpy as np
import pytest
import torch
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

from mbgraph.data import make_multiplex
from mbgraph.data.adjacency import BehaviorAdjacency, to_homogeneous_edge_index
from mbgraph.nn.conv import BehaviorConv

NORMS = ['symmetric', 'left', 'left_self_loop', 'left_plus_identity', 'none']

# a small directed weighted graph, (source j, target i, weight); node 4 receives nothing and
# node 5 is isolated
N = 6
EDGES = [(0, 1, 1.), (1, 0, 2.), (1, 2, 1.), (2, 1, 0.5), (3, 2, 1.), (2, 3, 3.), (0, 3, 1.),
         (4, 0, 1.)]


def hand_dense(edges, n, norm):
    """Â with A[i, j] = weight of j -> i, D_ii = sum_j A_ij (in-degree)."""
    a = np.zeros((n, n))
    for j, i, w in edges:
        a[i, j] += w
    eye = np.eye(n)
    if norm == 'left_self_loop':
        a = a + eye
    d = a.sum(1)
    d_inv = np.where(d > 0, 1. / np.where(d > 0, d, 1.), 0.)
    if norm == 'symmetric':
        s = np.sqrt(d_inv)
        return s[:, None] * a * s[None, :]
    if norm in ('left', 'left_self_loop'):
        return d_inv[:, None] * a
    if norm == 'left_plus_identity':
        return d_inv[:, None] * a + eye
    return a


def graph():
    edge_index = torch.tensor([[j for j, _, _ in EDGES], [i for _, i, _ in EDGES]])
    edge_weight = torch.tensor([w for _, _, w in EDGES], dtype=torch.float64)
    return edge_index, edge_weight


@pytest.mark.parametrize('add_self', [False, True])
@pytest.mark.parametrize('norm', NORMS)
def test_edge_index_matches_dense(norm, add_self):
    edge_index, edge_weight = graph()
    x = torch.randn(N, 3, dtype=torch.float64)
    conv = BehaviorConv(normalize=norm, add_self=add_self)
    dense = torch.tensor(hand_dense(EDGES, N, norm))
    expected = dense @ x + (x if add_self else 0)
    torch.testing.assert_close(conv(x, edge_index, edge_weight), expected)
    # unweighted: every weight is 1
    unweighted = [(j, i, 1.) for j, i, _ in EDGES]
    dense1 = torch.tensor(hand_dense(unweighted, N, norm))
    torch.testing.assert_close(conv(x, edge_index), dense1 @ x + (x if add_self else 0))


def test_pkef_eq9_literal():
    # path 0 - 1 (both directions): A + I = [[1, 1], [1, 1]], D = diag(2, 2)
    # z' = D^-1 (A + I) z + z
    edge_index = torch.tensor([[0, 1], [1, 0]])
    z = torch.tensor([[1.], [3.]])
    out = BehaviorConv(normalize='left_self_loop', add_self=True)(z, edge_index)
    torch.testing.assert_close(out, torch.tensor([[2. + 1.], [2. + 3.]]))


def test_zero_degree_node_no_nan():
    edge_index, _ = graph()
    x = torch.randn(N, 2)
    for norm in NORMS:
        out = BehaviorConv(normalize=norm, add_self=False)(x, edge_index)
        assert torch.isfinite(out).all()
        if norm in ('symmetric', 'left', 'none'):
            assert (out[4] == 0).all() and (out[5] == 0).all()


@pytest.mark.filterwarnings('ignore:Sparse invariant checks are implicitly disabled')
@pytest.mark.parametrize('norm', NORMS)
def test_torch_sparse_inputs_match_edge_index(norm):
    edge_index, edge_weight = graph()
    x = torch.randn(N, 4, dtype=torch.float64)
    conv = BehaviorConv(normalize=norm, add_self=True)
    expected = conv(x, edge_index, edge_weight)
    # PyG's adj_t convention: adj_t[i, j] holds the weight of the message j -> i
    adj_t_coo = to_torch_coo_tensor(edge_index.flip(0), edge_weight, size=(N, N))
    adj_t_csr = to_torch_csr_tensor(edge_index.flip(0), edge_weight, size=(N, N))
    torch.testing.assert_close(conv(x, adj_t_coo), expected)
    torch.testing.assert_close(conv(x, adj_t_csr), expected)


@pytest.mark.parametrize('norm', NORMS)
def test_sparse_tensor_input(norm):
    torch_sparse = pytest.importorskip('torch_sparse')
    edge_index, edge_weight = graph()
    x = torch.randn(N, 4, dtype=torch.float64)
    conv = BehaviorConv(normalize=norm, add_self=False)
    adj_t = torch_sparse.SparseTensor(row=edge_index[1], col=edge_index[0], value=edge_weight,
                                      sparse_sizes=(N, N))
    torch.testing.assert_close(conv(x, adj_t), torch.tensor(hand_dense(EDGES, N, norm)) @ x)


def multiplex():
    edges = {
        'cart': torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]]),
        'buy': torch.tensor([[0, 2], [1, 3]]),
    }
    return make_multiplex(3, 4, ['cart', 'buy'], edges)


@pytest.mark.parametrize('add_self', [False, True])
@pytest.mark.parametrize('norm', NORMS)
def test_sparse_operator_input_matches_edge_index(norm, add_self):
    data = multiplex()
    adj = BehaviorAdjacency(data, dtype=torch.float64)
    x = torch.randn(adj.num_nodes, 3, dtype=torch.float64)
    conv = BehaviorConv(normalize=norm, add_self=add_self)
    for behaviors in (['buy'], ['cart', 'buy']):
        edge_index = to_homogeneous_edge_index(data, behaviors)
        torch.testing.assert_close(conv(x, adj.operator(behaviors, norm=norm)),
                                   conv(x, edge_index))


def test_cached():
    edge_index, edge_weight = graph()
    x = torch.randn(N, 2, dtype=torch.float64)
    conv = BehaviorConv(normalize='left', add_self=False, cached=True)
    first = conv(x, edge_index, edge_weight)
    assert conv._cached_edge_index is not None
    # the cached normalised graph is reused: a different graph is ignored until reset
    torch.testing.assert_close(conv(x, edge_index[:, :1]), first)
    conv.reset_parameters()
    assert conv._cached_edge_index is None
    assert not torch.allclose(conv(x, edge_index[:, :1]), first)


def test_flow_target_to_source():
    edge_index, edge_weight = graph()
    x = torch.randn(N, 2, dtype=torch.float64)
    reverse = BehaviorConv(normalize='left', add_self=False, flow='target_to_source')
    forward = BehaviorConv(normalize='left', add_self=False)
    torch.testing.assert_close(reverse(x, edge_index, edge_weight),
                               forward(x, edge_index.flip(0), edge_weight))


def test_repr_and_errors():
    conv = BehaviorConv(normalize='left', add_self=False)
    assert repr(conv) == "BehaviorConv(normalize='left', add_self=False, cached=False)"
    assert repr(BehaviorConv()) == \
        "BehaviorConv(normalize='left_self_loop', add_self=True, cached=False)"
    with pytest.raises(ValueError, match='unknown normalize'):
        BehaviorConv(normalize='row')
    conv.reset_parameters()  # present, no parameters
    assert list(conv.parameters()) == []


def test_pyg_pipeline_gradients():
    """HeteroData -> edge_index -> two layers -> loss: gradients reach the embeddings, and the
    cached-operator path gives the same gradients."""
    data = multiplex()
    num_nodes = data['user'].num_nodes + data['item'].num_nodes
    edge_index = to_homogeneous_edge_index(data, ['cart', 'buy'])
    torch.manual_seed(0)
    emb = torch.nn.Embedding(num_nodes, 8)
    convs = torch.nn.ModuleList([BehaviorConv('left_self_loop', add_self=True) for _ in range(2)])

    def run(graph_input):
        emb.zero_grad()
        h = emb.weight
        for conv in convs:
            h = conv(h, graph_input)
        scores = (h[:3] @ h[3:].t())  # users x items
        loss = -scores[0, 1] + scores[1, 0]
        loss.backward()
        return emb.weight.grad.clone()

    grad = run(edge_index)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    op = BehaviorAdjacency(data).operator(['cart', 'buy'], norm='left_self_loop')
    torch.testing.assert_close(run(op), grad)
    # the same two layers written out with the hand dense operator
    a = np.zeros((num_nodes, num_nodes))
    for u, i in set(map(tuple, torch.cat([data['user', b, 'item'].edge_index
                                         for b in ['cart', 'buy']], 1).t().tolist())):
        a[u, 3 + i] = a[3 + i, u] = 1.
    a_hat = a + np.eye(num_nodes)
    a_hat = torch.tensor(a_hat / a_hat.sum(1, keepdims=True), dtype=torch.float32)
    w = emb.weight.detach().clone().requires_grad_()
    h = w
    for _ in range(2):
        h = a_hat @ h + h
    scores = h[:3] @ h[3:].t()
    (-scores[0, 1] + scores[1, 0]).backward()
    torch.testing.assert_close(grad, w.grad)


def test_sparse_inputs_reject_edge_weight():
    data = multiplex()
    op = BehaviorAdjacency(data).operator('buy', norm='left')
    x = torch.randn(7, 2)
    with pytest.raises(ValueError, match='edge_weight'):
        BehaviorConv()(x, op, torch.ones(4))
    adj_t = to_torch_csr_tensor(to_homogeneous_edge_index(data, 'buy').flip(0), size=(7, 7))
    with pytest.raises(ValueError, match='edge_weight'):
        BehaviorConv()(x, adj_t, torch.ones(4))


def test_to_hetero_pair_input_says_what_to_do():
    """to_hetero passes (x_src, x_dst) on bipartite edge types: a clear error, not an
    AttributeError from deep inside."""
    from torch_geometric.data import HeteroData
    from torch_geometric.nn import to_hetero

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = BehaviorConv(normalize='symmetric')

        def forward(self, x, edge_index):
            return self.conv(x, edge_index)

    data = HeteroData()
    data['user'].x = torch.randn(3, 4)
    data['item'].x = torch.randn(2, 4)
    data['user', 'buy', 'item'].edge_index = torch.tensor([[0, 2], [1, 0]])
    data['item', 'rev_buy', 'user'].edge_index = torch.tensor([[1, 0], [0, 2]])
    net = to_hetero(Net(), data.metadata())
    with pytest.raises(TypeError, match='to_homogeneous'):
        net(data.x_dict, data.edge_index_dict)


@pytest.mark.parametrize('norm', NORMS)
def test_cached_operator_and_conv_share_one_normalisation(tiny, norm):
    """BehaviorAdjacency's operator and BehaviorConv's normalised edge_index of the same graph
    are the same matrix, value for value (both are normalize_edges)."""
    adj = BehaviorAdjacency(tiny, dtype=torch.float64)
    edge_index = to_homogeneous_edge_index(tiny)
    n = adj.num_nodes
    conv = BehaviorConv(normalize=norm, add_self=False)
    index, weight = conv._normalize(edge_index, None, n, torch.float64)
    dense = torch.zeros(n, n, dtype=torch.float64)
    dense.index_put_((index[1], index[0]), weight, accumulate=True)   # A[target, source]
    op = adj.operator(adj.behaviors, norm=norm)
    torch.testing.assert_close(dense, op.to_dense(), rtol=0, atol=0)
    x = torch.randn(n, 3, dtype=torch.float64)
    torch.testing.assert_close(conv(x, edge_index), op @ x)
