"""DPCPL (sec. 4.3): coding rate / compactness (eq 10-12) by hand, the prompt generator
(eq 5-9) by hand, prompt slots in every layer, a frozen backbone, the tuned share, training and
the two-stage run of train_sequence_model."""
import math

import numpy as np
import pytest
import torch

from mbgraph.training import Trainer
from mbgraph_seq.models import DPCPL, EBM, SEQ_MODELS
from mbgraph_seq.nn.prompts import PromptGenerator, coding_rate, compactness_loss
from mbgraph_seq.train import train_sequence_model

from helpers import cyclic_walks as synthetic


def rate_by_hand(Z, eps2, n):
    """Eq 10/11: 0.5 log det(I + m / (n eps^2) Z Z^T), Z with m columns, in float64 numpy."""
    Z = np.asarray(Z, dtype=np.float64)
    m = Z.shape[1]
    return 0.5 * math.log(np.linalg.det(np.eye(Z.shape[0]) + m / (n * eps2) * Z @ Z.T))


def test_coding_rate_matches_eq10_11():
    torch.manual_seed(0)
    Z = torch.randn(4, 6)
    assert math.isclose(float(coding_rate(Z, 0.5, count=2)), rate_by_hand(Z, 0.5, 2),
                        rel_tol=1e-5)
    batch = torch.randn(3, 5, 2)              # more rows than columns: rank-deficient Gram
    got = coding_rate(batch, 5.0)
    for k in range(3):
        assert math.isclose(float(got[k]), rate_by_hand(batch[k], 5.0, 5), rel_tol=1e-5)
    with pytest.raises(ValueError, match='eps2'):
        coding_rate(Z, 0.0)


def test_coding_rate_of_unit_rows_is_bounded_and_scale_free():
    torch.manual_seed(3)
    Z = torch.randn(2, 5, 4)
    unit = Z / Z.norm(dim=-1, keepdim=True)
    got = coding_rate(Z, 0.5, count=3, normalize=True)
    for k in range(2):
        assert math.isclose(float(got[k]), rate_by_hand(unit[k], 0.5, 3), rel_tol=1e-5)
    # raw rows: the rate grows with their norms without bound; unit rows: no change
    assert float(coding_rate(1e3 * Z, 0.5, 3).min()) > float(coding_rate(Z, 0.5, 3).max()) + 5
    torch.testing.assert_close(coding_rate(1e3 * Z, 0.5, 3, normalize=True), got)
    # orthonormal rows reach the bound r/2 log(1 + m rows / (r n eps2)), r = min(rows, m)
    eye = torch.eye(4)
    assert math.isclose(float(coding_rate(eye, 0.5, 3, normalize=True)),
                        2 * math.log(1 + 4 / (3 * 0.5)), rel_tol=1e-6)
    assert all(float(coding_rate(torch.randn(4, 4), 0.5, 3, normalize=True))
               <= 2 * math.log(1 + 4 / (3 * 0.5)) + 1e-5 for _ in range(20))


def test_compactness_loss_matches_eq12():
    torch.manual_seed(1)
    N, L, dq, B = 2, 3, 4, 5
    factors, prompts = torch.randn(B, N * (L + 1), dq), torch.randn(B, L, dq)
    got = compactness_loss(factors, prompts, N, L, eps2_e=0.5, eps2_p=5.0, lambda_e=0.3,
                           lambda_p=2.0)
    per_user = [0.3 * rate_by_hand(factors[u], 0.5, N) + 2.0 * rate_by_hand(prompts[u], 5.0, L)
                for u in range(B)]
    assert math.isclose(float(got), float(np.mean(per_user)), rel_tol=1e-5)


def test_prompt_generator_eq5_to_9_by_hand():
    torch.manual_seed(2)
    K, S_stats, L, dq, N, C, d = 2, 3, 2, 4, 3, 2, 6
    gen = PromptGenerator(K, S_stats, 0, input_dim=d, model_dim=d, num_layers=L, prompt_dim=dq,
                          num_factors=N, num_tokens=C)
    features = torch.randn(2, S_stats)
    emb = torch.randn(2, 5, d)
    behaviors = torch.tensor([[0, 1, 2, 1, 1], [0, 0, 0, 2, 2]])   # user 1: no behavior-1 event
    out = gen(features, emb, behaviors)
    # eq 5: Q rows = q_stats, q_b1, q_b2
    for r in range(2):
        assert torch.allclose(out.information[r, 0], gen.stats_mlp(features[r]), atol=1e-6)
        for k in range(K):
            events = emb[r][behaviors[r] == k + 1]
            if events.numel() == 0:
                assert out.information[r, 1 + k].abs().max() == 0
                continue
            _, h = gen.grus[k](events.unsqueeze(0))
            assert torch.allclose(out.information[r, 1 + k], h[-1, 0], atol=1e-5)
    # eq 6-9 for every user, by loops
    for r in range(2):
        Q = out.information[r]                                   # [S, dq]
        E = torch.zeros(L + 1, N, dq)
        for g in range(L + 1):
            for n in range(N):
                A = torch.softmax(Q @ gen.factor_queries[g, n], 0)
                E[g, n] = (A.unsqueeze(1) * Q).sum(0)
        assert torch.allclose(out.factors[r], E.reshape(-1, dq), atol=1e-6)
        for l in range(L):
            phi = torch.cat([E[l], E[L]], 0)                     # [2N, dq], eq 7
            beta = torch.softmax(phi @ gen.layer_queries[l], 0)   # eq 8
            p = (beta.unsqueeze(1) * phi).sum(0)
            assert torch.allclose(out.layer_prompts[r, l], p, atol=1e-6)
            for c in range(C):
                assert torch.allclose(out.tokens[l][r, c], gen.token_proj[l, c] @ p, atol=1e-5)


def test_prompts_fill_the_first_c_slots_of_every_layer():
    torch.manual_seed(3)
    ds = synthetic()
    model = DPCPL(ds, dim=16, num_layers=2, num_blocks=2, num_tokens=3, prompt_dim=8).eval()
    assert model.backbone.prompt_slots == 3
    with torch.no_grad():
        model.prompts.token_proj.mul_(100.0)
    batch = ds.eval_inputs('test')
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
             for layer in model.backbone.layers]
    out = model.make_prompts(batch)
    u = model.backbone.encode(batch, out.tokens)
    for h in hooks:
        h.remove()
    assert len(seen) == 2
    for layer, x in enumerate(seen):
        assert x.shape[1] == 3 + ds.max_len
        assert torch.equal(x[:, :3], out.tokens[layer])
    plain = model.backbone.encode(batch)
    assert not torch.allclose(u, plain, atol=1e-3)
    # without prompts the reserved slots hold zeros: all-zero prompts are the plain backbone
    zeros = [torch.zeros_like(t) for t in out.tokens]
    assert torch.equal(model.backbone.encode(batch, zeros), plain)
    with pytest.raises(ValueError, match='reserves 3 prompt slots'):
        model.backbone.encode(batch, [t[:, :2] for t in out.tokens])


def test_prompt_tuning_leaves_the_backbone_unchanged_and_reports_share():
    torch.manual_seed(4)
    ds = synthetic()
    backbone = EBM(ds, dim=16, num_layers=2, num_blocks=2, dropout=0.2)
    model = DPCPL(ds, backbone=backbone, prompt_dim=8, num_factors=4, num_tokens=2)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    prompts_before = [p.detach().clone() for p in model.prompts.parameters()]
    model.train()
    assert model.prompts.training and not model.backbone.training
    opt = torch.optim.Adam(model.tuned_parameters(), lr=1e-2)
    src = ds.train_source(batch_size=32, prefixes='all', target_only=True)
    for _, batch in zip(range(4), src.batches(0)):
        loss, parts = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.backbone.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(prompts_before, model.prompts.parameters()))
    counts = model.parameter_counts()
    assert counts['tuned'] == sum(p.numel() for p in model.prompts.parameters())
    assert counts['backbone'] == sum(p.numel() for p in backbone.parameters())
    assert counts['total'] == sum(p.numel() for p in model.parameters())
    assert math.isclose(counts['tuned_share'], counts['tuned'] / counts['backbone'])
    assert set(parts) == {'pred', 'compactness'}


def test_loss_is_eq13_with_the_compactness_sign():
    torch.manual_seed(5)
    ds = synthetic()
    batch = next(iter(ds.train_source(batch_size=16, num_negatives=2, prefixes='all',
                                      target_only=True).batches(0)))
    for sign in (1, -1):
        torch.manual_seed(5)
        model = DPCPL(ds, dim=16, num_layers=2, num_blocks=2, prompt_dim=8, num_factors=3,
                      num_tokens=2, compactness_weight=0.1, compactness_sign=sign).eval()
        with torch.no_grad():
            total, parts = model.loss(batch)
            u, out = model(batch)
            E = model.item_weight()
            pos, neg = batch.pos[:, -1], batch.neg[:, -1]
            pred = torch.nn.functional.softplus(
                torch.einsum('bd,bnd->bn', u, E[neg]) - (u * E[pos]).sum(-1, keepdim=True)).mean()
            # the diversity reading (-1) takes the rates of unit-norm rows
            assert model.compactness_normalize == (sign == -1)
            F, P = out.factors, out.layer_prompts
            if sign == -1:
                F, P = F / F.norm(dim=-1, keepdim=True), P / P.norm(dim=-1, keepdim=True)
            comp = np.mean([rate_by_hand(F[r], 1.0, 3) + rate_by_hand(P[r], 1.0, 2)
                            for r in range(len(batch))])
        assert math.isclose(parts['pred'], float(pred), rel_tol=1e-5)
        assert math.isclose(parts['compactness'], comp, rel_tol=1e-4)
        assert math.isclose(float(total), float(pred) + sign * 0.1 * comp, rel_tol=1e-4)
    with pytest.raises(ValueError, match='compactness_sign'):
        DPCPL(ds, dim=16, compactness_sign=0)


def test_dpcpl_trains():
    ds = synthetic()
    torch.manual_seed(0)
    backbone = EBM(ds, dim=16, num_layers=1, num_blocks=2, dropout=0.0, prompt_slots=2)
    # a briefly pre-trained backbone (a random one scores every item about equally)
    Trainer(backbone, ds.train_source(batch_size=64, prefixes='all'), None, epochs=1, lr=1e-2,
            progress=False, seed=0).fit()
    model = SEQ_MODELS['dpcpl'](ds, backbone=backbone, prompt_dim=8, num_factors=4,
                                num_tokens=2, compactness_weight=0.0)
    src = ds.train_source(batch_size=16, num_negatives=2, prefixes='all', target_only=True)
    fixed = list(src.batches(epoch=99))      # the objective on fixed samples and negatives

    def objective():
        model.eval()
        with torch.no_grad():
            return sum(model.loss(b)[1]['pred'] * len(b) for b in fixed) / src.num_samples
    before = objective()
    trainer = Trainer(model, src, None, epochs=2, lr=3e-2, progress=False, seed=0)
    trainer.fit()
    after = objective()
    assert after < 0.99 * before, (before, after)


def test_train_sequence_model_two_stages(tmp_path):
    ds = synthetic(num_users=24, length=12, max_len=8)
    kw = dict(epochs=1, device='cpu', seed=0, batch_size=64, lr=1e-2, num_negatives_eval=9,
              progress=False, dim=8, num_layers=1, num_blocks=2, prompt_dim=4, num_factors=2,
              num_tokens=2)
    both = train_sequence_model('dpcpl', ds, stage='both', out_dir=tmp_path, **kw)
    for key in ('test', 'test_full', 'val', 'best_epoch', 'epochs_run', 'epoch_seconds',
                'eval_seconds', 'peak_rss_mb', 'tuned_parameters', 'total_parameters',
                'tuned_share', 'pretrain'):
        assert key in both, key
    assert set(both['test']) == {'hr@10', 'ndcg@10', 'hr@20', 'ndcg@20'}
    assert (tmp_path / 'pretrain' / 'ebm.pt').exists() and (tmp_path / 'metrics.json').exists()
    again = train_sequence_model('dpcpl', ds, stage='prompt', out_dir=tmp_path, **kw)
    assert again['test'] == both['test']          # same backbone, seed and data
    with pytest.raises(FileNotFoundError, match='pre-trained EBM'):
        train_sequence_model('dpcpl', ds, stage='prompt', out_dir=tmp_path / 'none', **kw)
    with pytest.raises(ValueError, match='unknown sequence model'):
        train_sequence_model('gru4rec', ds, **kw)


def test_full_fine_tuning_trains_every_backbone_parameter(tmp_path):
    """DPCPL table 4's comparison: tuning='full' fine-tunes the pre-trained EBM itself."""
    ds = synthetic(num_users=24, length=12, max_len=8)
    kw = dict(epochs=1, device='cpu', seed=0, batch_size=64, lr=1e-2, num_negatives_eval=9,
              progress=False, dim=8, num_layers=1, num_blocks=2, prompt_dim=4, num_factors=2,
              num_tokens=2)
    train_sequence_model('dpcpl', ds, stage='pretrain', out_dir=tmp_path, **kw)
    saved = torch.load(tmp_path / 'pretrain' / 'ebm.pt', weights_only=True)['model']
    full = train_sequence_model('dpcpl', ds, stage='prompt', tuning='full', out_dir=tmp_path,
                                **kw)
    prompt = train_sequence_model('dpcpl', ds, stage='prompt', out_dir=tmp_path, **kw)
    assert full['tuning'] == 'full' and prompt['tuning'] == 'prompt'
    assert full['tuned_share'] == 1.0 and full['tuned_parameters'] == full['total_parameters']
    assert prompt['tuned_parameters'] < full['tuned_parameters']
    # every backbone parameter moved (prompt tuning leaves them as saved: tested above)
    tuned = torch.load(tmp_path / 'finetune' / 'best.pt', weights_only=True)['model']
    moved = [k for k in saved if not torch.equal(saved[k], tuned[k])]
    trainable = [k for k, v in saved.items() if v.is_floating_point()]
    assert len(moved) >= 0.9 * len(trainable)
    with pytest.raises(ValueError, match="tuning='full' applies to DPCPL only"):
        train_sequence_model('sasrec', ds, tuning='full', **{k: v for k, v in kw.items()
                                                              if k in ('epochs', 'progress')})
    with pytest.raises(ValueError, match='unknown tuning'):
        train_sequence_model('dpcpl', ds, tuning='partial', **kw)


def test_without_progressive_prompts_the_first_layer_alone_gets_tokens():
    """DPCPL table 5's w/o PG: prompt tokens enter the first layer's slots only; the later
    layers read what the layer before computed there. Recomputed layer by layer by hand."""
    ds = synthetic()
    torch.manual_seed(0)
    backbone = EBM(ds, dim=16, num_layers=3, num_blocks=2, dropout=0.0, prompt_slots=2)
    model = DPCPL(ds, backbone=backbone, prompt_dim=8, num_factors=4, num_tokens=2,
                  progressive=False)
    assert model.prompts.L == 1                       # one layer of prompts generated
    model.eval()
    batch = next(iter(ds.train_source(batch_size=5, prefixes='all').batches(0)))
    u, out = model(batch)
    (tokens,) = out.tokens
    # by hand: the slots get the tokens before layer 0 and are never overwritten after
    x = backbone.event_embedding(batch)
    B, C = x.size(0), 2
    mask = torch.cat([torch.ones(B, C, dtype=torch.bool), batch.mask], 1)
    beh = torch.cat([batch.behaviors.new_zeros(B, C), batch.behaviors], 1)
    keep = torch.zeros_like(mask)
    keep[:, :C] = True
    x = torch.cat([tokens, x], 1)
    for i, layer in enumerate(backbone.layers):
        x = layer(x, beh, mask, keep, last_only=i == 2)
    torch.testing.assert_close(u, x)
    # the progressive model replaces the slots at every layer: a different representation
    torch.manual_seed(0)
    prog = DPCPL(ds, backbone=backbone, prompt_dim=8, num_factors=4, num_tokens=2).eval()
    assert prog.prompts.L == 3
    assert not torch.allclose(prog(batch)[0], u)
    with pytest.raises(ValueError, match='first layer needs prompt tokens'):
        backbone.encode(batch, [None, None, None])


def test_soft_prompts_are_the_same_trained_tokens_for_every_user():
    """DPCPL table 5's w/o PS: no generator, one trainable [C, d] token block per layer."""
    ds = synthetic()
    torch.manual_seed(0)
    backbone = EBM(ds, dim=16, num_layers=2, num_blocks=2, dropout=0.0, prompt_slots=3)
    model = DPCPL(ds, backbone=backbone, num_tokens=3, personalized=False)
    assert model.prompts is None and model.soft_prompts.shape == (2, 3, 16)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ['soft_prompts']
    batch = next(iter(ds.train_source(batch_size=6, num_negatives=2, prefixes='all',
                                      target_only=True).batches(0)))
    model.eval()
    u, out = model(batch)
    assert out is None
    by_hand = backbone.encode(batch, [model.soft_prompts[l].expand(6, 3, 16) for l in range(2)])
    torch.testing.assert_close(u, by_hand)
    model.train()
    loss, parts = model.loss(batch)
    assert parts['compactness'] == 0.0
    assert math.isclose(float(loss.detach()), parts['pred'], rel_tol=1e-6)
    loss.backward()
    assert model.soft_prompts.grad is not None and model.soft_prompts.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())
    # soft prompts at the first layer only: w/o PS and w/o PG together
    both = DPCPL(ds, backbone=backbone, num_tokens=3, personalized=False, progressive=False)
    assert both.soft_prompts.shape == (1, 3, 16)
    assert both.parameter_counts()['tuned'] == 3 * 16


def test_attention_backbone_is_frozen_and_only_prompts_are_tuned():
    """DPCPL table 5's w/o DS: the backbone has self-attention instead of the Efficient Filter
    Layer (EBM kwarg sequence_mixer='attention'); the prompt tuning is the same."""
    ds = synthetic()
    torch.manual_seed(8)
    model = DPCPL(ds, dim=16, num_layers=2, num_blocks=2, dropout=0.2, prompt_dim=8,
                  num_factors=4, num_tokens=3, sequence_mixer='attention')
    backbone = model.backbone
    assert backbone.sequence_mixer == 'attention' and backbone.prompt_slots == 3
    names = [n for n, _ in backbone.named_parameters()]
    assert any('.attention.attn.' in n for n in names)
    assert not any('.filter.' in n or 'fusion' in n for n in names)
    tuned = {n for n, p in model.named_parameters() if p.requires_grad}
    assert tuned == {'prompts.' + n for n, _ in model.prompts.named_parameters()}
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    prompts_before = [p.detach().clone() for p in model.prompts.parameters()]
    model.train()
    assert model.prompts.training and not backbone.training
    batch = next(iter(ds.train_source(batch_size=16, num_negatives=2, prefixes='all',
                                      target_only=True).batches(0)))
    opt = torch.optim.Adam(model.tuned_parameters(), lr=1e-2)
    loss, parts = model.loss(batch)
    assert torch.isfinite(loss) and set(parts) == {'pred', 'compactness'}
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert model.prompts.token_proj.grad is not None
    assert model.prompts.token_proj.grad.abs().sum() > 0
    opt.step()
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(a, b) for a, b in zip(prompts_before, model.prompts.parameters()))
    # the prompt tokens reach the attention backbone: zero prompts give another representation
    model.eval()
    with torch.no_grad():
        u, out = model(batch)
        plain = backbone.encode(batch)
        assert not torch.allclose(u, plain, atol=1e-4)
        torch.testing.assert_close(u, backbone.encode(batch, list(out.tokens)))


def test_attention_backbone_through_pretraining(tmp_path):
    """sequence_mixer reaches the EBM that train_sequence_model pre-trains, is saved with it
    and must match when prompt tuning a saved backbone."""
    ds = synthetic(num_users=24, length=12, max_len=8)
    kw = dict(epochs=1, device='cpu', seed=0, batch_size=64, lr=1e-2, num_negatives_eval=9,
              progress=False, dim=8, num_layers=1, num_blocks=2, prompt_dim=4, num_factors=2,
              num_tokens=2)
    metrics = train_sequence_model('dpcpl', ds, stage='both', out_dir=tmp_path,
                                   sequence_mixer='attention', **kw)
    assert math.isfinite(metrics['test']['hr@10']) and 'pretrain' in metrics
    saved = torch.load(tmp_path / 'pretrain' / 'ebm.pt', weights_only=True)
    assert saved['ebm_kwargs']['sequence_mixer'] == 'attention'
    assert any('.attention.attn.' in k for k in saved['model'])
    assert not any('.filter.' in k for k in saved['model'])
    with pytest.raises(ValueError, match='saved EBM was built with'):
        train_sequence_model('dpcpl', ds, stage='prompt', out_dir=tmp_path, **kw)
