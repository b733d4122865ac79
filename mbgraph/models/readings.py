r"""Named readings of the papers' models: one table of settings per reading, in one place.

The PKEF and COPF tables were produced by their authors' code, which differs from the papers'
equations in its loss, sampler, regulariser and several head details
(``../shared/papers/REFERENCE_NOTES.md``); MB-CGCN's and CRGCN's code differs from mbgraph's
earlier readings of them in initialisation, layers, batches, regulariser and schedule
(``docs/reference_mbcgcn_crgcn.md``). A *reading* is one complete table of settings:

* ``'code'`` -- the authors' public code, step for step (the default of the named models: it is
  the reading that produced the papers' numbers);
* ``'paper'`` -- the papers' equations as printed, with the choices the text leaves open stated
  in the table (PKEF, COPF);
* ``'mbgraph'`` -- MB-CGCN's and CRGCN's readings before their authors' code was read (neither
  paper is bundled, so there is no ``'paper'`` reading of them): kept so that earlier results
  can be rerun.

A reading sets the model (``model``), its encoder (``encoder``) and head (``head``) options,
the per-behavior loss weights :math:`\lambda_k` (``lambdas``: by dataset name, or
``'target'``, 1 on the target behavior only, or ``'ones'``, 1 on every behavior), the training
batches (``batches``) and the training schedule (``training``). A user who asks for a reading
gets all of it; each setting can still be overridden (``COPF(data, reading='code',
**{'head.tau': 0.2})``, ``--set head.tau=0.2`` on the command line), and the overrides are
recorded next to the reading's name.

>>> from mbgraph.models.readings import reading_table
>>> reading_table('copf', 'code')['head']['score_scale']
300.0
>>> print(describe('pkef', 'code').splitlines()[0])
pkef, reading 'code':
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional

#: loss weights lambda_k of the authors' COPF code (Params.py), by dataset and behavior
COPF_CODE_WEIGHTS: Dict[str, Dict[str, float]] = {
    'taobao': {'pv': 2 / 6, 'cart': 2 / 6, 'buy': 2 / 6},
    'beibei': {'pv': 0.0, 'cart': 2 / 6, 'buy': 4 / 6},
    'tmall': {'click': 1 / 6, 'collect': 2 / 6, 'cart': 0.0, 'buy': 3 / 6},
}
#: loss weights of PKEF (paper 5.4.2 and its code's Params.py)
PKEF_WEIGHTS: Dict[str, Dict[str, float]] = {
    'taobao': {'pv': 0.0, 'cart': 4 / 6, 'buy': 2 / 6},
    'beibei': {'pv': 0.0, 'cart': 4 / 6, 'buy': 2 / 6},
    'tmall': {'click': 0.0, 'collect': 4 / 6, 'cart': 0.0, 'buy': 2 / 6},
}

READINGS: Dict[str, Dict[str, Dict[str, Any]]] = {
    'copf': {
        # copf.py, Utils/NNLayers.py, Params.py of the authors (REFERENCE_NOTES)
        'code': {
            'model': {'reg': 1e-2, 'reg_scope': 'tables', 'bpr_scale': 3.0},
            'encoder': {'num_layers': 1, 'cumulative': 'union'},
            # the head's table-3 switches (backward_fit=False, the rest on) are those of
            # DFMEHead.VARIANTS['w/o back.'] (mbgraph/nn/heads/dfme.py)
            'head': {'fit_graph': 'task', 'fit_step': 'code', 'alpha': 0.001, 'beta': 0.1,
                     'num_layers': 1, 'output_scale': 0.1, 'score_scale': 300.0,
                     'tower': 'sum', 'gate_init': 'xavier', 'gate_input': 'embeddings',
                     'expert_order': 'own_first',
                     # the code's stop-gradient compares a shadowed loop variable and is
                     # never applied with one fitting layer
                     'backward_fit': False,
                     'tau': 0.1, 'gamma': 1.0, 'cosine': True, 'negatives': 'all',
                     'cl_anchors': 'pairs', 'cl_norm': 'users'},
            'lambdas': COPF_CODE_WEIGHTS,
            'batches': {'kind': 'users', 'users_per_batch': 256, 'max_positives': 40,
                        'users_per_epoch': None},
            # decay 0.96 in a staircase every users_per_epoch // 256 steps
            'training': {'lr': 1e-3, 'lr_decay': 0.96, 'lr_decay_steps': 'per_epoch',
                         'epochs': 200},
        },
        # eq 5-17 as printed. Two choices so that the gate does not saturate: one layer per
        # behavior (with two, eq 5's operator makes Taobao's target embeddings ~194x the
        # initial scale and the target task's gate collapses onto the fitting experts) and
        # a zero-initialised gate, uniform 1/K at the start (a Xavier gate on COGCN's
        # embeddings starts saturated, ~0.97 on one expert per pair on synthetic data)
        'paper': {
            'model': {'reg': 1e-2, 'reg_scope': 'batch', 'bpr_scale': 1.0},
            'encoder': {'num_layers': 1, 'cumulative': 'paper'},
            # the head's table-3 switches are DFMEHead.VARIANTS['COPF'], the full model
            'head': {'fit_graph': 'other', 'fit_step': 'paper', 'alpha': 0.001, 'beta': 0.1,
                     'num_layers': 1, 'output_scale': 1.0, 'score_scale': 1.0,
                     'tower': 'mean', 'gate_init': 'zeros', 'gate_input': 'embeddings',
                     'expert_order': 'behavior', 'backward_fit': True,
                     'tau': 0.1, 'gamma': 1.0, 'cosine': True, 'negatives': 'all',
                     'cl_anchors': 'unique', 'cl_norm': 'triples'},
            'lambdas': COPF_CODE_WEIGHTS,
            'batches': {'kind': 'pairs', 'batch_size': 2048},
            'training': {'lr': 1e-3, 'lr_decay': None, 'lr_decay_steps': None,
                         'epochs': 200},
        },
    },
    'pkef': {
        # PKEF_final.py, Params.py of the authors (REFERENCE_NOTES)
        'code': {
            'model': {'reg': 1e-2, 'reg_scope': 'tables', 'bpr_scale': 3.0},
            'encoder': {'num_layers': 'pkef', 'norm': 'left', 'fusion': 'projection',
                        'projection_scale': 0.3, 'parallel_input': 'next_layer'},
            'head': {'projection': 'factorized', 'proj_scale': 0.01, 'gate_input': 'concat',
                     'gate_per_task': False, 'tower': 'sum', 'score_scale': 300.0,
                     'expert_order': 'own_first', 'unique_loss': True,
                     'parallel_loss': True},
            'lambdas': PKEF_WEIGHTS,
            'batches': {'kind': 'users', 'users_per_batch': 256, 'max_positives': 40,
                        'users_per_epoch': 10000, 'unique': 'code'},
            'training': {'lr': 1e-3, 'lr_decay': 0.96, 'lr_decay_steps': 'per_epoch',
                         'epochs': 100},
        },
        # eq 8-21 as printed
        'paper': {
            'model': {'reg': 1e-2, 'reg_scope': 'batch', 'bpr_scale': 1.0},
            'encoder': {'num_layers': 'pkef', 'norm': 'left_self_loop', 'fusion': 'projection',
                        'projection_scale': 1.0, 'parallel_input': 'aggregate'},
            'head': {'projection': 'pair', 'proj_scale': 1.0, 'gate_input': 'concat',
                     'gate_per_task': False, 'tower': 'sum', 'score_scale': 1.0,
                     'expert_order': 'behavior', 'unique_loss': True,
                     'parallel_loss': True},
            'lambdas': PKEF_WEIGHTS,
            'batches': {'kind': 'pairs', 'batch_size': 2048, 'unique': 'paper'},
            'training': {'lr': 1e-3, 'lr_decay': None, 'lr_decay_steps': None,
                         'epochs': 100},
        },
    },
}

#: MB-CGCN's code (utility/parser.py): layer_size4 = [64] on the first behavior (view),
#: layer_size3 = [64] x 5 on the second (cart), layer_size2 = [64] x 3 on the target (buy)
MBCGCN_CODE_LAYERS = {'first': 1, 'middle': 5, 'target': 3}

READINGS['mbcgcn'] = {
    # MBCGCN.py, utility/parser.py, utility/load_data.py (docs/reference_mbcgcn_crgcn.md);
    # the README's pre-training on view (GCN.py, --pretrain 1) is not part of this reading;
    # a view-pretrained start is `mbgraph train --init-from` of a `lightgcn --set behavior=pv`
    # run (docs/RESULTS.md "Why MB-CGCN stays far below its table-2 cell")
    'code': {
        'model': {'reg': 1e-4, 'reg_scope': 'batch', 'bpr_scale': 1.0, 'init': 'normal'},
        'encoder': {'num_layers': 'mbcgcn', 'link': 'transform', 'combine': 'mean',
                    'normalize_output': False, 'weight_init': 'normal',
                    'regularize_weight': True},
        'head': {},
        'lambdas': 'target',
        # 2048 distinct users a batch, each with one buy and one non-bought negative;
        # n_train // 2048 + 1 batches an epoch
        'batches': {'kind': 'users', 'users_per_batch': 2048, 'max_positives': 1,
                    'users_per_epoch': None, 'draws': 'independent',
                    'batches_per_epoch': 'pairs'},
        'training': {'lr': 1e-3, 'lr_decay': None, 'lr_decay_steps': None, 'epochs': 1000},
    },
    # mbgraph's reading before issue 15: unit-norm behavior outputs, Xavier tables and
    # transforms, two layers per behavior, BPR pairs of 2048
    'mbgraph': {
        'model': {'reg': 1e-4, 'reg_scope': 'batch', 'bpr_scale': 1.0, 'init': 'xavier'},
        'encoder': {'num_layers': 2, 'link': 'transform', 'combine': 'mean',
                    'normalize_output': True, 'weight_init': 'xavier',
                    'regularize_weight': False},
        'head': {},
        'lambdas': 'target',
        'batches': {'kind': 'pairs', 'batch_size': 2048},
        'training': {'lr': 1e-3, 'lr_decay': None, 'lr_decay_steps': None, 'epochs': 100},
    },
}
READINGS['crgcn'] = {
    # model_cascade.py, gcn_conv.py, utils.py, data_set.py, trainer.py, main.py
    'code': {
        'model': {'reg': 1e-3, 'reg_scope': 'norms', 'bpr_scale': 1.0, 'bpr_mean': 'users',
                  'init': 'xavier'},
        'encoder': {'num_layers': 1, 'normalize': True, 'bias': True},
        'head': {},
        'lambdas': 'ones',
        # every user once an epoch in batches of 1024, one positive per behavior, negatives
        # not interacted under any behavior
        'batches': {'kind': 'users', 'users_per_batch': 1024, 'max_positives': 1,
                    'users_per_epoch': None, 'negatives': 'any'},
        'training': {'lr': 1e-2, 'lr_decay': None, 'lr_decay_steps': None, 'epochs': 200},
    },
    'mbgraph': {
        'model': {'reg': 1e-4, 'reg_scope': 'batch', 'bpr_scale': 1.0, 'bpr_mean': 'triples',
                  'init': 'xavier'},
        'encoder': {'num_layers': 2, 'normalize': True, 'bias': False},
        'head': {},
        'lambdas': {},
        'batches': {'kind': 'pairs', 'batch_size': 2048},
        'training': {'lr': 1e-3, 'lr_decay': None, 'lr_decay_steps': None, 'epochs': 100},
    },
}

DEFAULT_READING = 'code'


def readings_of(model: str) -> List[str]:
    """The reading names of ``model`` (``'copf'``, ``'pkef'``, ``'mbcgcn'``, ``'crgcn'``);
    empty for other models."""
    return list(READINGS.get(model.lower(), {}))


def reading_table(model: str, reading: str) -> Dict[str, Any]:
    """A copy of the settings table of ``model``'s ``reading``; a clear error otherwise."""
    key = model.lower()
    if key not in READINGS:
        raise ValueError(f'model {model!r} has no named readings; models with readings: '
                         f'{sorted(READINGS)}')
    if reading not in READINGS[key]:
        raise ValueError(f'unknown reading {reading!r} of {key}; expected one of '
                         f'{list(READINGS[key])}')
    return copy.deepcopy(READINGS[key][reading])


def loss_weights(table: Mapping[str, Any], behaviors: List[str],
                 dataset: Optional[str]) -> Dict[str, float]:
    r""":math:`\lambda_k` of a reading for ``behaviors`` of the dataset called ``dataset``:
    the weights the table lists for that dataset's behaviors (a subset such as cart -> buy
    keeps the listed weights of the behaviors it has), else :math:`1/K` each; ``'target'``:
    1 on the target (the last behavior) only; ``'ones'``: 1 on every behavior."""
    spec = table.get('lambdas', {})
    if spec == 'target':
        return {behaviors[-1]: 1.0}
    if spec == 'ones':
        return {b: 1.0 for b in behaviors}
    weights = spec.get((dataset or '').lower())
    if weights is not None and all(b in weights for b in behaviors):
        out = {b: float(weights[b]) for b in behaviors}
        if any(v != 0.0 for v in out.values()):
            return out
    return {b: 1.0 / len(behaviors) for b in behaviors}


def model_kwargs(model: str, reading: str, behaviors: List[str],
                 dataset: Optional[str]) -> Dict[str, Any]:
    """The reading as keyword arguments of :func:`~mbgraph.models.build_composed`
    (``encoder.``/``head.`` prefixes, ``lambdas`` for ``behaviors``)."""
    table = reading_table(model, reading)
    out: Dict[str, Any] = dict(table['model'])
    for part in ('encoder', 'head'):
        for name, value in table[part].items():
            if part == 'encoder' and name == 'num_layers' and value == 'pkef':
                value = (4,) + (1,) * (len(behaviors) - 1)   # PKEF's (4, 1, 1)
            if part == 'encoder' and name == 'num_layers' and value == 'mbcgcn':
                layers = MBCGCN_CODE_LAYERS                  # (1, 5, 3) on pv, cart, buy
                value = (layers['first'],) + (layers['middle'],) * (len(behaviors) - 2) + \
                    (layers['target'],) if len(behaviors) > 1 else (layers['target'],)
            out[f'{part}.{name}'] = value
    out['lambdas'] = loss_weights(table, behaviors, dataset)
    return out


def describe(model: str, reading: str) -> str:
    """The reading's table as text (what the docs print)."""
    table = reading_table(model, reading)
    lines = [f'{model}, reading {reading!r}:']
    for part in ('model', 'encoder', 'head', 'batches', 'training'):
        settings = ', '.join(f'{k}={v!r}' for k, v in table[part].items())
        lines.append(f'  {part}: {settings}')
    spec = table['lambdas']
    if isinstance(spec, str):
        lines.append(f'  lambdas: {spec!r} ' + ('(1 on the target only)' if spec == 'target'
                                                else '(1 on every behavior)'))
        return '\n'.join(lines)
    weights = '; '.join(f'{name} ' + ', '.join(f'{b} {v:.3g}' for b, v in w.items())
                        for name, w in spec.items())
    lines.append(f'  lambdas: {weights}; other datasets 1/K each' if weights
                 else '  lambdas: 1/K each')
    return '\n'.join(lines)
