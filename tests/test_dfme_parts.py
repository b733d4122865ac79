"""DFME's three parts (issue 11): eq 8's contrastive term as its own module, COPF table 4's
aggregation schemes as their own head, table 3's ablations as named variants."""
import inspect
from pathlib import Path

import pytest
import torch

from benchmarks.config import tomllib
from mbgraph.data.adjacency import BehaviorAdjacency
from mbgraph.data.datasets import synthetic
from mbgraph.models import build_model
from mbgraph.models.readings import reading_table
from mbgraph.nn import BehaviorContrastive, DFMEHead, ExpertFusionHead
from mbgraph.nn.encoders.base import BehaviorEmbeddings
from mbgraph.nn.heads.dfme import VARIANTS

BEHAVIORS = ['view', 'cart', 'buy']
CONFIGS = Path(__file__).resolve().parents[1] / 'benchmarks' / 'configs' / 'graph'


def random_emb(seed=0, num_users=6, num_items=7, dim=4):
    g = torch.Generator().manual_seed(seed)
    users = torch.randn(3, num_users, dim, generator=g).requires_grad_()
    items = torch.randn(3, num_items, dim, generator=g).requires_grad_()
    return BehaviorEmbeddings(list(BEHAVIORS), users, items)


BATCH = {'cart': torch.tensor([[4, 1], [4, 0], [4, 6]]),
         'buy': torch.tensor([[0, 3, 0, 5], [1, 5, 1, 2], [4, 2, 6, 6]])}
OPTIONS = [{}, {'tau': 0.5, 'gamma': 0.7, 'cosine': False, 'negatives': 'batch',
                'cl_norm': 'batch'},
           {'cl_anchors': 'pairs', 'cl_norm': 'users'}, {'cl_norm': 'total', 'gamma': 2.0}]


# ---------------------------------------------------------------------- eq 8 as a module
@pytest.mark.parametrize('opts', OPTIONS)
@pytest.mark.parametrize('make', [lambda **kw: DFMEHead(4, 3, **kw),
                                  lambda **kw: ExpertFusionHead(4, 3, 'projection', **kw)],
                         ids=['dfme', 'expert_fusion'])
@pytest.mark.parametrize('target_in_batch', [True, False])
def test_heads_contrastive_term_is_the_standalone_module(make, opts, target_in_batch):
    batch = BATCH if target_in_batch else {'cart': BATCH['cart']}
    head, alone = make(**opts), BehaviorContrastive(**opts)
    emb_a, emb_b = random_emb(seed=3), random_emb(seed=3)
    got = head.loss_terms(emb_a, batch)['contrastive']
    want = alone.loss_terms(emb_b, batch)['contrastive']
    assert torch.equal(got, want)
    assert torch.equal(got, alone(random_emb(seed=3), batch))
    got.backward()
    want.backward()
    assert torch.equal(emb_a.users.grad, emb_b.users.grad)
    assert torch.equal(emb_a.items.grad, emb_b.items.grad)
    for name, value in opts.items():           # the head's options are the module's
        assert getattr(head, name) == getattr(head.contrastive_term, name) == value


def test_contrastive_loss_method_and_options_go_to_the_module():
    head = DFMEHead(4, 3, tau=0.3)
    emb, users, items = random_emb(seed=5), torch.tensor([0, 2]), torch.tensor([1, 3, 4])
    assert torch.equal(head.contrastive_loss(emb, users, items, 5),
                       BehaviorContrastive(tau=0.3).loss(emb, users, items, 5))
    head.tau = 0.2                              # --set head.tau after construction
    assert head.contrastive_term.tau == 0.2
    assert dict(head.contrastive_term.named_parameters()) == {}
    assert BehaviorContrastive(gamma=0.0).loss_terms(emb, BATCH) == {}
    for kw, msg in (({'tau': 0}, 'tau must be > 0'), ({'negatives': 'pool'}, 'negatives'),
                    ({'cl_norm': 'pairs'}, 'cl_norm'), ({'cl_anchors': 'all'}, 'cl_anchors')):
        with pytest.raises(ValueError, match=msg):
            BehaviorContrastive(**kw)
    with pytest.raises(ValueError, match='DFMEHead contrastive loss: the batch has no'):
        head.loss_terms(emb, {'other': BATCH['buy']})


# ---------------------------------------------------------------------- table 4
@pytest.mark.parametrize('aggregation', ['none', 'sum', 'linear', 'vanilla', 'projection'])
def test_old_aggregation_argument_builds_expert_fusion_head(aggregation):
    torch.manual_seed(0)
    old = DFMEHead(4, 3, aggregation=aggregation, score_scale=3.0, tower='sum', tau=0.2,
                   fit_graph='task', gate_init='xavier', backward_fit=False)
    torch.manual_seed(0)
    new = ExpertFusionHead(4, 3, aggregation, score_scale=3.0, tower='sum', tau=0.2)
    assert type(old) is ExpertFusionHead and not isinstance(old, DFMEHead)
    assert (old.aggregation, old.score_scale, old.tower, old.tau) == (aggregation, 3.0, 'sum',
                                                                      0.2)
    assert old.state_dict().keys() == new.state_dict().keys()
    for key, value in old.state_dict().items():
        assert torch.equal(value, new.state_dict()[key])
    assert old.regularized_parameters() == []
    with pytest.raises(ValueError, match="unknown fit_step 'tf'"):   # still checked
        DFMEHead(4, 3, aggregation=aggregation, fit_step='tf')


def test_table4_names_by_model_option_and_positionally():
    data = synthetic(num_users=30, num_items=20)
    model = build_model('copf', data, embedding_dim=4, **{'head.aggregation': 'vanilla'})
    assert type(model.head) is ExpertFusionHead and model.head.aggregation == 'vanilla'
    assert model.head.score_scale == 300.0                 # the code reading's, passed on
    names = list(inspect.signature(DFMEHead.__init__).parameters)[1:]   # without self
    args = [4, 3, *DFMEHead.__init__.__defaults__]                     # every option given
    args[names.index('aggregation')] = 'linear'
    assert type(DFMEHead(*args)) is ExpertFusionHead
    # the class's signature is __init__'s, not __new__'s (benchmark configs check options)
    assert list(inspect.signature(DFMEHead).parameters) == names
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        ExpertFusionHead(4, 3, 'mean')
    with pytest.raises(ValueError, match="is ExpertFusionHead"):
        type('Sub', (DFMEHead,), {})(4, 3, aggregation='sum')
    emb = random_emb()
    with pytest.raises(ValueError, match='built for 3 behaviors of dimension 5'):
        ExpertFusionHead(5, 3, 'sum').precompute(emb, None)


# ---------------------------------------------------------------------- table 3
#: what each row of table 3 builds: (contrastive, forward_fit, backward_fit, all_sg, fitting)
#: and the stop-gradient mask of task 0 (K = 3, target 2)
TABLE3 = {
    'COPF': ((True, True, True, False, True), [False, False, True]),
    'w/o con.': ((False, True, True, False, True), [False, False, True]),
    'w/o for.': ((True, False, True, False, True), [False, False, True]),
    'w/o back.': ((True, True, False, False, True), [False, False, False]),
    'all sg.': ((True, True, True, True, True), [False, True, True]),
    'w/o fit.': ((True, False, False, False, False), [False, False, False]),
}


@pytest.mark.parametrize('name', sorted(TABLE3))
def test_each_variant_builds_its_table_3_row(tiny, name):
    head = DFMEHead.variant(name, 4, 3, tau=0.2)
    switches, mask = TABLE3[name]
    assert (head.contrastive, head.forward_fit, head.backward_fit, head.all_sg,
            head.fitting) == switches
    assert head.stop_gradient_mask(0) == mask
    assert head.variant_name == name and head.tau == 0.2
    assert DFMEHead.VARIANTS is VARIANTS and set(VARIANTS) == set(TABLE3)
    emb = head.precompute(random_emb(num_users=3, num_items=4), BehaviorAdjacency(tiny))
    assert bool(emb.extras['dfme'].bases) == switches[1]   # fitting experts only with for.
    terms = head.loss_terms(emb, {'buy': torch.tensor([[0], [1], [2]])})
    assert ('contrastive' in terms) == switches[0]


def test_variant_names_and_conflicts():
    assert DFMEHead.variant('wo_con', 4, 3).variant_name == 'w/o con.'
    assert DFMEHead.variant('DFME', embedding_dim=4, num_behaviors=3).variant_name == 'COPF'
    assert DFMEHead(4, 3).variant_name is None
    assert DFMEHead.variant('all sg.', 4, 3, backward_fit=True).all_sg   # the row's value
    with pytest.raises(ValueError, match="sets .* itself"):
        DFMEHead.variant('all sg.', 4, 3, backward_fit=False)
    with pytest.raises(ValueError, match='bilinear head'):
        DFMEHead.variant('w/o DFME', 4, 3)
    with pytest.raises(ValueError, match='unknown DFME variant'):
        DFMEHead.variant('w/o gate', 4, 3)
    with pytest.raises(ValueError, match="aggregation='gated'"):
        DFMEHead.variant('w/o con.', 4, 3, aggregation='sum')


def test_benchmark_table3_rows_set_the_variants_switches():
    """copf_t3.toml's DFME rows (model copf, head switches only) are :data:`VARIANTS`."""
    with open(CONFIGS / 'copf_t3.toml', 'rb') as f:
        rows = {row['name']: row for row in tomllib.load(f)['row']}
    for name, switches in VARIANTS.items():
        row = rows[name]
        assert row['model'] == 'copf'
        sets = {k[len('head.'):]: v for k, v in row.get('set', {}).items()}
        assert sets == switches, name


def test_readings_head_switches_are_variants():
    """The comments in mbgraph/models/readings.py: the 'code' reading's head switches are
    table 3's 'w/o back.' row, the 'paper' reading's the full model."""
    defaults = {'contrastive': True, 'forward_fit': True, 'backward_fit': True,
                'all_sg': False, 'fitting': True}

    def switches(head):
        return {k: head.get(k, v) for k, v in defaults.items()}

    assert switches(reading_table('copf', 'code')['head']) == {**defaults,
                                                               **VARIANTS['w/o back.']}
    assert switches(reading_table('copf', 'paper')['head']) == {**defaults, **VARIANTS['COPF']}
