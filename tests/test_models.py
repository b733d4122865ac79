"""The papers' models and encoder x head compositions: build by name, train, loss decreases."""
import pytest
import torch

from mbgraph.data.datasets import synthetic
from mbgraph.data.sampling import BPRSampler, UniquePairSampler, UserBatchSampler
from mbgraph.evaluation import FullRankingEvaluator
from mbgraph.models import MODELS, build_model, is_known_model
from mbgraph.nn.encoders import (
    CascadeEncoder,
    COGCNEncoder,
    CRGCNEncoder,
    MBCGCNEncoder,
    PKFEncoder,
)
from mbgraph.nn.heads import BilinearHead, DFMEHead, PMEHead
from mbgraph.training import Trainer


@pytest.fixture(scope='module')
def data():
    return synthetic(num_users=200, num_items=120, seed=1)


@pytest.mark.parametrize('name', ['mbcgcn', 'crgcn', 'pkef', 'copf', 'mbcgcn+dfme',
                                  'pkef+dfme', 'cogcn+bilinear', 'lightgcns+pme'])
def test_model_trains_and_loss_decreases(data, name):
    torch.manual_seed(0)
    model = build_model(name, data, embedding_dim=16)
    source = model.batch_source(data, batch_size=512, seed=0)
    trainer = Trainer(model, source, None, epochs=4, lr=0.01, progress=False)
    trainer.fit()
    losses = [h['loss'] for h in trainer.history]
    assert losses[-1] < losses[0], losses
    metrics = FullRankingEvaluator(data, 'test').evaluate(model)
    assert 0.0 <= metrics['hr@10'] <= 1.0


def test_named_models_are_the_papers_compositions(data):
    assert isinstance(build_model('mbcgcn', data).encoder, CascadeEncoder)
    assert type(build_model('mbcgcn', data).encoder) is MBCGCNEncoder
    assert type(build_model('crgcn', data).encoder) is CRGCNEncoder
    assert isinstance(build_model('mbcgcn', data).head, BilinearHead)
    pkef = build_model('pkef', data)
    assert isinstance(pkef.encoder, PKFEncoder) and isinstance(pkef.head, PMEHead)
    # the default 'code' readings train on the authors' user batches, 'paper' on pairs
    assert type(pkef.batch_source(data)) is UserBatchSampler
    assert pkef.batch_source(data).unique == 'code'
    assert isinstance(build_model('pkef', data, reading='paper').batch_source(data),
                      UniquePairSampler)
    copf = build_model('copf', data)
    assert isinstance(copf.encoder, COGCNEncoder) and isinstance(copf.head, DFMEHead)
    assert type(copf.batch_source(data)) is UserBatchSampler
    assert type(build_model('copf', data, reading='paper').batch_source(data)) is BPRSampler
    # MB-CGCN trains on the target only; the multi-task models on every behavior
    assert build_model('mbcgcn', data).train_behaviors == ['buy']
    assert copf.train_behaviors == ['view', 'cart', 'buy']
    assert copf.lambdas == pytest.approx({'view': 1 / 3, 'cart': 1 / 3, 'buy': 1 / 3})


def test_hyperparameters_are_routed(data):
    model = build_model('pkef', data, embedding_dim=8, num_layers=(2, 1, 1),
                        **{'encoder.fusion': 'vanilla', 'head.proj_scale': 0.01},
                        lambdas={'cart': 0.5, 'buy': 0.5})
    assert model.encoder.fusion == 'vanilla' and tuple(model.encoder.layers) == (2, 1, 1)
    assert model.head.proj_scale == 0.01
    assert model.train_behaviors == ['cart', 'buy']
    with pytest.raises(ValueError, match="unknown behaviors \\['fav'\\]"):
        build_model('copf', data, lambdas={'fav': 1.0})
    with pytest.raises(ValueError, match='unknown composition'):
        build_model('cogcn+nohead', data)
    assert is_known_model('pkf+mmoe') and not is_known_model('pkf+nohead')
    assert set(MODELS) >= {'lightgcn', 'lightgcn_m', 'mbcgcn', 'crgcn', 'pkef', 'copf'}


def test_lambdas_must_be_a_mapping():
    # `--set lambdas={'buy': 1/3}` is not a literal and arrives as a string: say so
    data = synthetic(num_users=20, num_items=15, seed=0)
    with pytest.raises(ValueError, match='lambdas must map behaviors'):
        build_model('mbcgcn', data, lambdas="{'buy': 1/3}")
