"""The one propagation engine (mbgraph.nn.functional) against dense LightGCN written out by
hand, and the step callbacks the encoders pass it."""
import pytest
import torch

from mbgraph.data.adjacency import BehaviorAdjacency
from mbgraph.nn.encoders import LightGCNEncoder
from mbgraph.nn.functional import combine_layers, propagate, residual_step


def hand_lightgcn_operator():
    """D^-1/2 A D^-1/2 of the tiny fixture's 'buy' graph: users 0..2, items 3..6, buy pairs
    (0, 1) and (2, 3), so nodes 0 - 4 and 2 - 6 each form one edge of degree 1."""
    a = torch.zeros(7, 7, dtype=torch.float64)
    for u, i in [(0, 1), (2, 3)]:
        a[u, 3 + i] = a[3 + i, u] = 1.0
    deg = a.sum(1)
    d = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    return d[:, None] * a * d[None, :]


@pytest.mark.parametrize('combine', ['mean', 'sum', 'last'])
@pytest.mark.parametrize('running', [False, True])
def test_engine_reproduces_dense_lightgcn(tiny, combine, running):
    a = hand_lightgcn_operator()
    op = BehaviorAdjacency(tiny, dtype=torch.float64).operator('buy', norm='symmetric')
    torch.testing.assert_close(op.to_dense(), a)
    e0 = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    e1 = a @ e0
    e2 = a @ e1
    e3 = a @ e2
    want = {'mean': (e0 + e1 + e2 + e3) / 4, 'sum': e0 + e1 + e2 + e3, 'last': e3}[combine]
    torch.testing.assert_close(propagate(e0, op, 3, combine=combine, running=running), want)
    layers = propagate(e0, op, 3)
    assert len(layers) == 4 and layers[0] is e0
    for got, hand in zip(layers, [e0, e1, e2, e3]):
        torch.testing.assert_close(got, hand)
    torch.testing.assert_close(combine_layers(layers, combine), want)
    torch.testing.assert_close(LightGCNEncoder(3, combine)(e0, op), want)
    # the dense matrix is an operator too (anything with op @ h)
    torch.testing.assert_close(propagate(e0, a, 3, combine=combine), want)


def test_steps_get_the_layer_index_and_change_only_the_layer():
    a = hand_lightgcn_operator()
    x = torch.randn(7, 2, dtype=torch.float64)
    eye = torch.eye(7, dtype=torch.float64)
    layers = propagate(x, a, 2, step=residual_step)
    torch.testing.assert_close(layers[2], (a + eye) @ ((a + eye) @ x))
    seen = []

    def step(op, h, layer):
        seen.append(layer)
        return op @ h + layer
    out = propagate(x, a, 3, step=step, combine='last')
    assert seen == [0, 1, 2]
    torch.testing.assert_close(out, a @ (a @ (a @ x) + 1) + 2)
    assert propagate(x, a, 0) == [x]
    torch.testing.assert_close(propagate(x, a, 0, combine='mean'), x)


def test_engine_errors():
    x = torch.zeros(7, 2)
    with pytest.raises(ValueError, match='num_layers must be >= 0'):
        propagate(x, torch.eye(7), -1)
    with pytest.raises(ValueError, match="unknown combine 'max'"):
        propagate(x, torch.eye(7), 1, combine='max')
    with pytest.raises(ValueError, match="unknown combine 'max'"):
        combine_layers([x], 'max')


def test_old_import_paths_still_work():
    from mbgraph.nn import functional
    from mbgraph.nn.encoders import base
    from mbgraph.nn.encoders.cascade import (
        PerBehaviorEncoder,
        check_choice,
        combine_layers,
        propagate,
        resolve_layers,
    )
    from mbgraph.nn.encoders.pkf import fuse
    assert fuse is functional.fuse
    assert propagate is functional.propagate and combine_layers is functional.combine_layers
    assert PerBehaviorEncoder is base.PerBehaviorEncoder
    assert check_choice is base.check_choice and resolve_layers is base.resolve_layers
