r"""The papers' models as encoder x head compositions, and the name grammar of the CLI.

=========  ==========================================  =====================
name       encoder                                     head
=========  ==========================================  =====================
mbcgcn     :class:`MBCGCNEncoder`                      bilinear, target loss
crgcn      :class:`CRGCNEncoder`                       bilinear, all behaviors
pkef       :class:`PKFEncoder` (PKEF 4.2)              :class:`PMEHead` (4.3)
copf       :class:`COGCNEncoder` (COPF 4.2)            :class:`DFMEHead` (4.3)
=========  ==========================================  =====================

Any encoder composes with any head as ``'ENCODER+HEAD'``, e.g. ``'mbcgcn+dfme'`` or
``'pkf+dfme'`` (COPF table 6), ``'cogcn+mmoe'`` (COPF table 5). Encoders: ``mbcgcn``,
``crgcn``, ``pkf`` (alias ``pkef``), ``cogcn`` (alias ``copf``), ``lightgcns`` (one LightGCN
per behavior, COPF's "w/o COGCN"). Heads: ``bilinear``, ``shared_bottom``, ``mmoe``,
``ple``, ``mesi``, ``pme``, ``dfme``.

Hyperparameters go to the model (``embedding_dim``, ``reg``, ``lambdas``), to the encoder
(``num_layers`` and keys prefixed ``encoder.``) or to the head (keys prefixed ``head.``)::

    build_model('pkef', data, num_layers=(4, 1, 1), **{'encoder.fusion': 'vanilla'})
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from torch_geometric.data import HeteroData

from ..data.multiplex import behaviors_of
from ..nn.encoders import (
    COGCNEncoder,
    CRGCNEncoder,
    MBCGCNEncoder,
    PerBehaviorLightGCN,
    PKFEncoder,
)
from ..nn.heads import (
    BilinearHead,
    DFMEHead,
    MESIHead,
    MMoEHead,
    PLEHead,
    PMEHead,
    SharedBottomHead,
)
from . import readings as _readings
from .composed import MultiBehaviorModel

#: encoder name -> ``(embedding_dim, num_behaviors, **kwargs) -> encoder``
ENCODERS: Dict[str, Callable] = {
    # normalize_output: unit-length behavior outputs, otherwise the sparse cascade terms are
    # dwarfed by the initial embeddings and MB-CGCN falls below LightGCN (our reading)
    'mbcgcn': lambda d, k, **kw: MBCGCNEncoder(**{'normalize_output': True, **kw},
                                               embedding_dim=d, num_behaviors=k),
    'crgcn': lambda d, k, **kw: CRGCNEncoder(embedding_dim=d, num_behaviors=k, **kw),
    # PKEF's best layer counts are (4, 1, 1): four on the first behavior, one on the others
    'pkf': lambda d, k, **kw: PKFEncoder(**{'num_layers': (4,) + (1,) * (k - 1), **kw},
                                         embedding_dim=d, num_behaviors=k),
    'cogcn': lambda d, k, **kw: COGCNEncoder(num_behaviors=k, **kw),
    'lightgcns': lambda d, k, **kw: PerBehaviorLightGCN(num_behaviors=k, **kw),
}
ENCODER_ALIASES = {'pkef': 'pkf', 'copf': 'cogcn'}

#: head name -> ``(embedding_dim, num_behaviors, **kwargs) -> head``
HEADS: Dict[str, Callable] = {
    'bilinear': lambda d, k, **kw: BilinearHead(**kw),
    'shared_bottom': SharedBottomHead,
    'mmoe': MMoEHead,
    'ple': PLEHead,
    'mesi': MESIHead,
    'pme': PMEHead,
    'dfme': DFMEHead,
}

#: named models: (encoder, head, model defaults)
NAMED: Dict[str, Tuple[str, str, Dict[str, Any]]] = {
    'mbcgcn': ('mbcgcn', 'bilinear', {'target_only': True}),
    'crgcn': ('crgcn', 'bilinear', {}),
    'pkef': ('pkf', 'pme', {'reg': 1e-2}),
    'copf': ('cogcn', 'dfme', {'reg': 1e-2}),
}


class ComposedModel(MultiBehaviorModel):
    """A :class:`MultiBehaviorModel` built from registry names, possibly under a named
    reading (its batch source is :meth:`MultiBehaviorModel.batch_source`, which reads the
    reading's ``batches``).

    Attributes:
        reading: the name of the reading the model was built under (``None``: none); its
            batch settings are :attr:`MultiBehaviorModel.batches`.
        schedule: the reading's training schedule (lr, decay, epochs), for the caller.
    """

    reading: Optional[str] = None
    schedule: Optional[Dict[str, Any]] = None


def _split_kwargs(kwargs: Mapping[str, Any]):
    model, encoder, head = {}, {}, {}
    for key, value in kwargs.items():
        if key.startswith('encoder.'):
            encoder[key[len('encoder.'):]] = value
        elif key.startswith('head.'):
            head[key[len('head.'):]] = value
        elif key == 'num_layers':
            encoder[key] = value
        else:
            model[key] = value
    return model, encoder, head


def parse_name(name: str) -> Tuple[str, str, Dict[str, Any]]:
    """``'copf'`` or ``'mbcgcn+dfme'`` -> (encoder, head, model defaults)."""
    key = name.lower()
    if key in NAMED:
        return NAMED[key]
    if '+' in key:
        enc, head = (p.strip() for p in key.split('+', 1))
        enc = ENCODER_ALIASES.get(enc, enc)
        if enc in ENCODERS and head in HEADS:
            defaults = NAMED.get(name.split('+')[0].lower(), (None, None, {}))[2]
            return enc, head, {k: v for k, v in defaults.items() if k == 'reg'}
        raise ValueError(f'unknown composition {name!r}: encoders are '
                         f'{", ".join(sorted(ENCODERS))}; heads are {", ".join(sorted(HEADS))}')
    raise ValueError(f'unknown model {name!r}')


def build_composed(name: str, data: HeteroData, embedding_dim: int = 64,
                   lambdas: Optional[Mapping[str, float]] = None, **kwargs) -> ComposedModel:
    """Build a named model (``mbcgcn``, ``crgcn``, ``pkef``, ``copf``) or an
    ``'ENCODER+HEAD'`` composition for ``data`` (see the module docstring)."""
    enc_name, head_name, defaults = parse_name(name)
    model_kw, enc_kw, head_kw = _split_kwargs(kwargs)
    behaviors = behaviors_of(data)
    k = len(behaviors)
    if defaults.get('target_only') and lambdas is None:
        lambdas = {behaviors[-1]: 1.0}   # MB-CGCN trains on the target behavior only
    if lambdas is None:
        lambdas = {b: 1.0 / k for b in behaviors}
    if isinstance(enc_kw.get('num_layers'), list):
        enc_kw['num_layers'] = tuple(enc_kw['num_layers'])
    encoder = ENCODERS[enc_name](embedding_dim, k, **enc_kw)
    head = HEADS[head_name](embedding_dim, k, **head_kw)
    model_kw = {'reg': defaults.get('reg', 1e-4), **model_kw}
    return ComposedModel(data, encoder, head, lambdas=lambdas, embedding_dim=embedding_dim,
                         **model_kw)


def MBCGCN(data: HeteroData, reading: str = _readings.DEFAULT_READING,
           **kwargs) -> ComposedModel:
    """MB-CGCN: cascading LightGCNs with feature transformation, trained on the target.

    ``reading='code'`` (default) is the authors' code (MBCGCN.py, its parser's defaults),
    ``'mbgraph'`` the project's earlier reading (unit-norm behavior outputs, Xavier, pair
    batches); :data:`mbgraph.models.readings.READINGS` holds both, ``kwargs`` override them."""
    return build_reading('mbcgcn', data, reading, **kwargs)


def CRGCN(data: HeteroData, reading: str = _readings.DEFAULT_READING,
          **kwargs) -> ComposedModel:
    """CRGCN: cascading residual LightGCNs, multi-task BPR over all behaviors.

    ``reading='code'`` (default) is the authors' code (model_cascade.py, main.py,
    trainer.py), ``'mbgraph'`` the project's earlier reading; ``kwargs`` override them."""
    return build_reading('crgcn', data, reading, **kwargs)


def build_reading(name: str, data: HeteroData, reading: str = _readings.DEFAULT_READING,
                  **overrides) -> ComposedModel:
    """A named model under one of its readings (:mod:`mbgraph.models.readings`): the
    reading's whole table, then ``overrides`` on top (same keys as
    :func:`build_composed`)."""
    behaviors = behaviors_of(data)
    table = _readings.reading_table(name, reading)
    kwargs = _readings.model_kwargs(name, reading, behaviors, getattr(data, 'name', None))
    if isinstance(overrides.get('num_layers'), (int, list, tuple)):
        kwargs.pop('encoder.num_layers', None)     # --layers overrides the reading's
    kwargs.update(overrides)
    model = build_composed(name, data, **kwargs)
    model.reading = reading
    model.batches = table['batches']
    model.schedule = table['training']
    return model


def PKEF(data: HeteroData, reading: str = _readings.DEFAULT_READING,
         **kwargs) -> ComposedModel:
    """PKEF: parallel knowledge fusion encoder + projection-disentangling multi-experts.

    ``reading='code'`` (default) is the authors' code, ``'paper'`` the paper's equations;
    :data:`mbgraph.models.readings.READINGS` holds both tables, ``kwargs`` override them."""
    return build_reading('pkef', data, reading, **kwargs)


def COPF(data: HeteroData, reading: str = _readings.DEFAULT_READING,
         **kwargs) -> ComposedModel:
    """COPF: COGCN constrained propagation + distributed fitting multi-experts.

    ``reading='code'`` (default) is the authors' code, ``'paper'`` the paper's equations;
    :data:`mbgraph.models.readings.READINGS` holds both tables, ``kwargs`` override them."""
    return build_reading('copf', data, reading, **kwargs)
