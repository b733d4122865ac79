"""The public API: the front doors, train_graph_model against the CLI, the named models built
three ways, and heads that declare the batches they need."""
import importlib
import json

import pytest
import torch

import mbgraph.pipeline as pipeline
from mbgraph.cli import main

FRONT_DOORS = {
    'mbgraph': ['build_model', 'is_known_model', 'MODELS', 'MultiBehaviorModel', 'LightGCN',
                'LightGCN_M', 'MBCGCN', 'CRGCN', 'PKEF', 'COPF', 'MostPop', 'History',
                'CascadingRank', 'HistoryHybrid', 'Trainer', 'FullRankingEvaluator',
                'SampledEvaluator', 'train_graph_model', 'load_dataset', '__version__'],
    'mbgraph.nn': ['BehaviorConv', 'MultiBehaviorEncoder', 'BehaviorEmbeddings',
                   'LightGCNEncoder', 'CascadeEncoder', 'MBCGCNEncoder', 'CRGCNEncoder',
                   'PKFEncoder', 'COGCNEncoder',
                   'PerBehaviorLightGCN', 'MultiTaskHead', 'BilinearHead', 'SharedBottomHead',
                   'MMoEHead', 'PLEHead', 'MESIHead', 'PMEHead', 'DFMEHead', 'ExpertFusionHead',
                   'BehaviorContrastive'],
    'mbgraph.data': ['load_dataset', 'DATASETS', 'load_mbgmn', 'load_sslrec', 'load_movielens',
                     'load_interaction_log', 'load_recbole', 'load_behavior_txt',
                     'from_pyg_taobao', 'synthetic', 'BehaviorAdjacency', 'SparseOperator',
                     'BPRSampler', 'UniquePairSampler', 'UserBatchSampler', 'make_multiplex'],
    'mbgraph_seq': ['SEQ_MODELS', 'SASRec', 'EBM', 'DPCPL', 'HMAR', 'PoMRec',
                    'SequenceRecommender', 'SequenceDataset', 'train_sequence_model',
                    '__version__'],
}


@pytest.mark.parametrize('module', sorted(FRONT_DOORS))
def test_front_door_exports_every_name_it_lists(module):
    mod = importlib.import_module(module)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f'{module}.__all__ lists names it lacks: {missing}'
    assert len(set(mod.__all__)) == len(mod.__all__)
    for name in FRONT_DOORS[module]:
        assert name in mod.__all__, f'{name} is not in {module}.__all__'
        exec(f'from {module} import {name}', {})      # the import a user writes


def test_front_doors_hand_out_the_modules_objects():
    import mbgraph
    import mbgraph.nn
    import mbgraph_seq
    from mbgraph.models.multi_behavior import COPF
    from mbgraph.nn.heads.dfme import DFMEHead
    from mbgraph_seq.models import SEQ_MODELS
    from mbgraph_seq.train import train_sequence_model
    assert mbgraph.COPF is COPF and mbgraph.nn.DFMEHead is DFMEHead
    assert mbgraph_seq.SEQ_MODELS is SEQ_MODELS
    assert mbgraph_seq.train_sequence_model is train_sequence_model
    assert mbgraph_seq.__version__ == mbgraph.__version__


# ---------------------------------------------------------------------- train_graph_model
#: what differs between two runs of the same configuration: how long they took, where, when
VARYING = ('seconds', 'peak_', 'date', 'time_to_target')


def _steady(obj):
    """``obj`` without the timing and memory fields, recursively."""
    if isinstance(obj, dict):
        return {k: _steady(v) for k, v in obj.items() if not any(w in k for w in VARYING)}
    if isinstance(obj, list):
        return [_steady(v) for v in obj]
    return obj


def _log(path):
    return [_steady(json.loads(line)) for line in path.read_text().splitlines()]


@pytest.mark.parametrize('flags, kwargs', [
    (['--model', 'lightgcn', '--dim', '8', '--epochs', '2', '--ks', '10,20'],
     {'name': 'lightgcn', 'embedding_dim': 8, 'epochs': 2, 'ks': (10, 20)}),
    # a named reading, user batches, the paper protocol's watched test curve
    (['--model', 'pkef', '--dim', '8', '--epochs', '1', '--protocol', 'paper',
      '--batch-size', '1500'],
     {'name': 'pkef', 'embedding_dim': 8, 'epochs': 1, 'protocol': 'paper',
      'batch_size': 1500}),
])
def test_train_graph_model_writes_what_the_cli_writes(tmp_path, capsys, flags, kwargs):
    from mbgraph import load_dataset, train_graph_model
    cli_out, api_out = tmp_path / 'cli', tmp_path / 'api'
    assert main(['train', *flags, '--dataset', 'synthetic', '--out', str(cli_out),
                 '--no-progress']) == 0
    assert 'wrote' in capsys.readouterr().out
    name = kwargs.pop('name')
    returned = train_graph_model(name, load_dataset('synthetic'), out_dir=api_out,
                                 dataset='synthetic', progress=False, **kwargs)
    cli = json.loads((cli_out / 'metrics.json').read_text())
    api = json.loads((api_out / 'metrics.json').read_text())
    assert _steady(api) == _steady(cli)
    assert _steady(json.loads(json.dumps(returned))) == _steady(api)
    assert _log(api_out / 'log.jsonl') == _log(cli_out / 'log.jsonl')
    weights = [torch.load(d / 'best.pt', weights_only=False)['model'] for d in (cli_out, api_out)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_train_graph_model_refuses_what_it_cannot_set_up(tmp_path):
    from mbgraph import train_graph_model
    from mbgraph.data import synthetic
    from mbgraph.validation import OptionError
    data = synthetic(num_users=40, num_items=30)
    with pytest.raises(pipeline.RunSetupError, match="model 'lightgcn' with options"):
        train_graph_model('lightgcn', data, progress=False, **{'head.gamma': 1})
    with pytest.raises(pipeline.RunSetupError, match='named readings'):
        train_graph_model('lightgcn', data, reading='paper', progress=False)
    with pytest.raises(OptionError, match='batch_size=0'):
        train_graph_model('lightgcn', data, batch_size=0, progress=False)
    with pytest.raises(ValueError, match='unknown protocol'):
        train_graph_model('lightgcn', data, protocol='best', progress=False)


# ---------------------------------------------------------------------- defaults in one place
def configuration(model):
    """What a model computes: its modules and their options, the loss settings, its reading,
    and its initial weights."""
    return {'repr': repr(model), 'reg': model.reg, 'reg_scope': model.reg_scope,
            'bpr_scale': model.bpr_scale, 'lambdas': model.lambdas,
            'reading': getattr(model, 'reading', None), 'batches': model.batches,
            'schedule': getattr(model, 'schedule', None),
            'weights': {k: v.clone() for k, v in model.state_dict().items()}}


def _same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key == 'weights':
            assert a[key].keys() == b[key].keys()
            assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize('name', ['copf', 'pkef'])
def test_named_model_class_registry_and_cli_build_the_same_model(tmp_path, monkeypatch, name):
    from mbgraph import COPF, PKEF, build_model
    from mbgraph.data import load_dataset
    cls = {'copf': COPF, 'pkef': PKEF}[name]
    data = load_dataset('synthetic')
    torch.manual_seed(0)
    by_class = configuration(cls(data))
    torch.manual_seed(0)
    by_name = configuration(build_model(name, data))
    built = []

    def spy(*args, **kwargs):
        model = build_model(*args, **kwargs)
        built.append(configuration(model))
        return model
    monkeypatch.setattr(pipeline, 'build_model', spy)
    assert main(['train', '--model', name, '--dataset', 'synthetic', '--epochs', '1',
                 '--batch-size', '3000', '--out', str(tmp_path), '--no-progress']) == 0
    _same(by_class, by_name)
    _same(by_class, built[0])
    # the reading's settings, not the classes' plain defaults
    assert by_class['reg'] == 1e-2 and by_class['reading'] == 'code'


# ---------------------------------------------------------------------- batches a head needs
def test_hand_built_model_with_pme_gets_its_unique_pairs():
    from mbgraph.data import BPRSampler, UniquePairSampler, synthetic
    from mbgraph.models import MultiBehaviorModel, build_model
    from mbgraph.nn import PerBehaviorLightGCN, PMEHead
    data = synthetic(num_users=80, num_items=60, seed=2)
    torch.manual_seed(0)
    model = MultiBehaviorModel(data, PerBehaviorLightGCN(num_behaviors=3), PMEHead(16, 3),
                               embedding_dim=16)
    assert model.batch_needs() == {'unique'}
    source = model.batch_source(data, batch_size=64, seed=0)
    assert type(source) is UniquePairSampler
    named = build_model('lightgcns+pme', data, embedding_dim=16).batch_source(
        data, batch_size=64, seed=0)
    assert type(named) is UniquePairSampler and named.pairs == source.pairs
    _, parts = model.loss(next(iter(source.batches(1))))
    assert 'unique' in parts
    # a batch that cannot feed the unique loss is an error, not a silent zero
    plain = next(iter(BPRSampler(data, model.train_behaviors, batch_size=64).batches(1)))
    with pytest.raises(ValueError, match="needs the batch's 'unique' pairs"):
        model.loss(plain)
    # without the unique loss the head needs nothing beyond the triples
    off = MultiBehaviorModel(data, PerBehaviorLightGCN(num_behaviors=3),
                             PMEHead(16, 3, unique_loss=False), embedding_dim=16)
    assert off.batch_needs() == frozenset()
    assert type(off.batch_source(data)) is BPRSampler
    assert 'unique' not in off.loss(plain)[1]
