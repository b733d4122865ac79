import pytest
import torch

from mbgraph.models import LightGCN, LightGCN_M, build_model


def dense_sym(num_users, num_items, pairs):
    n = num_users + num_items
    a = torch.zeros(n, n)
    for u, i in pairs:
        a[u, num_users + i] = a[num_users + i, u] = 1.0
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    return inv[:, None] * a * inv[None, :]


def test_lightgcn_propagation_by_hand(tiny):
    torch.manual_seed(0)
    model = LightGCN(tiny, embedding_dim=5, num_layers=2)
    a = dense_sym(3, 4, [(0, 1), (2, 3)])           # buy only
    e0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    e1 = a @ e0
    e2 = a @ e1
    final = (e0 + e1 + e2) / 3
    users, items = model.propagate()
    assert torch.allclose(users, final[:3], atol=1e-6)
    assert torch.allclose(items, final[3:], atol=1e-6)
    model.eval()
    assert torch.allclose(model.score(torch.tensor([2, 0])), final[[2, 0]] @ final[3:].t(),
                          atol=1e-6)
    cand = torch.tensor([[3, 1], [0, 0]])
    items_final = final[3:]
    expected = torch.tensor([[final[2] @ items_final[3], final[2] @ items_final[1]],
                             [final[0] @ items_final[0], final[0] @ items_final[0]]])
    assert torch.allclose(model.score(torch.tensor([2, 0]), cand), expected, atol=1e-6)


def test_lightgcn_m_merges_all_behaviors(tiny):
    torch.manual_seed(0)
    model = LightGCN_M(tiny, embedding_dim=4, num_layers=1)
    pairs = {(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (2, 0), (1, 2), (0, 1), (2, 3)}
    a = dense_sym(3, 4, sorted(pairs))
    e0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    users, items = model.propagate()
    final = (e0 + a @ e0) / 2
    assert torch.allclose(torch.cat([users, items]), final, atol=1e-6)


def test_lightgcn_loss_by_hand(tiny):
    torch.manual_seed(0)
    model = LightGCN(tiny, embedding_dim=3, num_layers=1, reg=0.5)
    batch = {'buy': torch.tensor([[0, 2], [1, 3], [2, 0]])}
    loss, parts = model.loss(batch)
    u, i = model.propagate()
    s_pos = torch.stack([u[0] @ i[1], u[2] @ i[3]])
    s_neg = torch.stack([u[0] @ i[2], u[2] @ i[0]])
    bpr = -torch.log(torch.sigmoid(s_pos - s_neg)).mean()
    ego = (model.user_emb.weight[[0, 2]].pow(2).sum() + model.item_emb.weight[[1, 3]].pow(2).sum()
           + model.item_emb.weight[[2, 0]].pow(2).sum()) / (2 * 2)
    assert loss.item() == pytest.approx((bpr + 0.5 * ego).item(), rel=1e-5)
    assert parts['bpr'].item() == pytest.approx(bpr.item(), rel=1e-5)


def test_eval_cache_is_dropped_in_train_mode(tiny):
    model = LightGCN(tiny, embedding_dim=4)
    model.eval()
    before = model.score(torch.tensor([0])).clone()
    assert model._eval_cache is not None
    model.train()
    assert model._eval_cache is None
    with torch.no_grad():
        model.user_emb.weight.add_(1.0)
    model.eval()
    assert not torch.allclose(model.score(torch.tensor([0])), before)


def test_build_model_unknown(tiny):
    with pytest.raises(ValueError, match="unknown model 'nope'; known models: .*lightgcn"):
        build_model('nope', tiny)


def test_lightgcn_left_normalisation_by_hand(tiny):
    """``norm='left'``: every row of the merged graph divided by its degree (an item's row is
    the mean of its users' rows), which differs from the symmetric form where degrees differ;
    an unknown norm is refused by name."""
    torch.manual_seed(0)
    model = LightGCN_M(tiny, embedding_dim=5, num_layers=2, norm='left')
    a = torch.zeros(7, 7)
    for u, i in {(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (2, 0)}:
        a[u, 3 + i] = a[3 + i, u] = 1.0
    a = a / a.sum(1, keepdim=True)           # every node of the merged graph has an edge
    e0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    final = (e0 + a @ e0 + a @ (a @ e0)) / 3
    users, items = model.propagate()
    assert torch.allclose(users, final[:3], atol=1e-6)
    assert torch.allclose(items, final[3:], atol=1e-6)
    sym = LightGCN_M(tiny, embedding_dim=5, num_layers=2)
    sym.load_state_dict(model.state_dict())
    assert not torch.allclose(sym.propagate()[1], items, atol=1e-3)
    with pytest.raises(ValueError, match='norm'):
        LightGCN(tiny, norm='rows')
