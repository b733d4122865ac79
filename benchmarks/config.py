r"""Benchmark configuration files: one small TOML file per paper table.

A suite is a folder ``benchmarks/configs/<suite>/``; every ``*.toml`` file in it describes one
table (files starting with ``_`` are ignored). Example (PKEF table 4, abridged)::

    [table]
    id = "pkef_t4"                      # unique within the suite; names the plot files
    title = "PKEF table 4: knowledge fusion schemes"
    datasets = ["taobao", "beibei", "tmall"]
    columns = ["test.hr@10", "test.ndcg@10"]   # dotted paths into the run's metrics.json
    seeds = 3                           # seeds 0, 1, 2 (overridden by --seeds)

    [hyper]                             # `mbgraph train` options shared by every row
    epochs = 100
    lr = 1e-3
    patience = 4
    eval_every = 3

    [dataset.taobao]                    # per-dataset options (any [hyper] key)
    behaviors = "pv,cart,buy"

    [[row]]
    name = "Vanilla Fusion"             # the table's row label
    model = "pkef"                      # the `mbgraph train --model` string
    set = { "encoder.fusion" = "vanilla" }   # `--set KEY=VALUE` overrides
    paper = { taobao = [0.1254, 0.0707] }    # the paper's (HR@10, NDCG@10) per dataset

A row ``model = "blend:A+B"`` is a :class:`~mbgraph.models.blend.ScoreBlend` of the members
``A``, ``B``, ... (trained models of the same table's settings, or training-free baselines),
run by ``mbgraph blend``: the runner trains each trained member first (the same run as that
model's own row, so it is shared), fits the blend weights on the validation split (under
``protocol = "paper"``, on each trained member's twin run under the validation protocol) and
applies them to the members of the table's protocol (see :meth:`Run.blend_parts`). Its only
``set`` key is ``grid`` (the weights searched, comma-separated).

:func:`load_suite` reads and checks every file (unknown keys, unknown models and unknown
``--set`` options are errors that name the file and the key) and :func:`expand` turns a table
into :class:`Run` objects. A run's id is ``MODEL-DATASET-sSEED-HASH`` where ``HASH`` hashes the
*effective* configuration (model, overrides, hyperparameters, dataset, seed): a changed
configuration gets a new id and runs again, an unchanged one is found finished and skipped, and
two tables that ask for the same run (e.g. the full PKEF model in PKEF tables 3, 4 and 5) share
it.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9/3.10
    import tomli as tomllib

CONFIG_DIR = Path(__file__).resolve().parent / 'configs'

#: [hyper] key -> `mbgraph train` flag (None: a flag without a value when true)
HYPER_FLAGS: Dict[str, str] = {
    'epochs': '--epochs', 'lr': '--lr', 'lr_decay': '--lr-decay', 'batch_size': '--batch-size',
    'dim': '--dim', 'layers': '--layers', 'reg': '--reg', 'patience': '--patience',
    'eval_every': '--eval-every', 'ks': '--ks', 'behaviors': '--behaviors',
    'max_len': '--max-len', 'negatives': '--negatives', 'stage': '--stage',
    'data_path': '--data-root', 'reading': '--reading', 'protocol': '--protocol',
    'lr_decay_steps': '--lr-decay-steps', 'stop_at': '--stop-at',
    'min_interactions': '--min-interactions', 'tie_order': '--tie-order',
}
#: [hyper] keys that are switches: ``true`` adds the flag, ``false`` leaves it out
HYPER_SWITCHES: Dict[str, str] = {'amp': '--amp'}
TABLE_KEYS = {'id', 'title', 'paper', 'datasets', 'columns', 'seeds', 'note'}
ROW_KEYS = {'name', 'model', 'set', 'hyper', 'paper', 'seeds'}
TOP_KEYS = {'table', 'hyper', 'dataset', 'row'}
DEFAULT_COLUMNS = ('test.hr@10', 'test.ndcg@10')

#: datasets the graph side reads; the sequence side reads synthetic, ml-latest-small and
#: retailrocket (SSLRec's matrices hold event times)
GRAPH_DATASETS = ('synthetic', 'taobao', 'beibei', 'tmall', 'retailrocket', 'ml-latest-small',
                  'csv')
SEQUENCE_DATASETS = ('synthetic', 'ml-latest-small', 'retailrocket', 'csv')
#: [hyper] keys that `mbgraph train` refuses for sequence models
GRAPH_ONLY_HYPER = {'reg', 'lr_decay', 'ks'}


#: the model string of a blend row: ``blend:A+B+...``
BLEND_PREFIX = 'blend:'
#: the ``set`` keys of a blend row (`mbgraph blend` options)
BLEND_OPTIONS = {'grid'}


def blend_members(model: str) -> List[str]:
    """The members of ``'blend:A+B+...'`` (lower case, in order), ``[]`` for another model."""
    key = model.lower()
    if not key.startswith(BLEND_PREFIX):
        return []
    return key[len(BLEND_PREFIX):].split('+')


def is_training_free(model: str) -> bool:
    """Whether the graph model ``model`` has no parameters to train (a baseline)."""
    from mbgraph.models import MODELS, TrainingFree
    cls = MODELS.get(model.lower())
    return isinstance(cls, type) and issubclass(cls, TrainingFree)


class ConfigError(ValueError):
    """A benchmark configuration file is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class Row:
    """One row of a paper table: a model string, its overrides and the paper's numbers."""
    name: str
    model: str
    set: Mapping[str, Any]
    hyper: Mapping[str, Any]
    paper: Mapping[str, Tuple[float, ...]]
    #: at most this many of the table's seeds (``seeds = 1`` for a deterministic row: a
    #: training-free ranking computes the same numbers under every seed)
    seeds: Optional[int] = None

    def seed_count(self, table_seeds: int) -> int:
        """How many seeds this row runs when its table (or ``--seeds``) asks for
        ``table_seeds``."""
        return table_seeds if self.seeds is None else min(self.seeds, table_seeds)


@dataclass
class Table:
    """One configuration file: a paper table (rows x datasets)."""
    id: str
    title: str
    path: Path
    datasets: List[str]
    columns: List[str]
    seeds: int
    hyper: Dict[str, Any]
    dataset_hyper: Dict[str, Dict[str, Any]]
    rows: List[Row]
    paper: str = ''
    note: str = ''


@dataclass(frozen=True)
class Run:
    """One ``mbgraph train`` invocation: a row of a table on one dataset with one seed."""
    model: str
    dataset: str
    seed: int
    set: Mapping[str, Any]
    hyper: Mapping[str, Any]
    digest: str = field(compare=False)

    @property
    def id(self) -> str:
        slug = re.sub(r'[^A-Za-z0-9]+', '_', self.model).strip('_')
        return f'{slug}-{self.dataset}-s{self.seed}-{self.digest}'

    def effective(self) -> Dict[str, Any]:
        """What the run id hashes: everything that changes what the run computes."""
        return {'model': self.model, 'dataset': self.dataset, 'seed': self.seed,
                'set': dict(self.set), 'hyper': dict(self.hyper)}

    def pretraining(self) -> Optional['Run']:
        """DPCPL's first stage (pre-training the EBM backbone) as a run of its own, or None
        (another model, or a row that sets its own ``stage``).

        Its configuration is this run's without the tuning options (the prompt generator's,
        ``tuning``, and ``epochs`` when ``pretrain_epochs`` is set), so the rows of a table
        that differ only in how they tune (DPCPL tables 4-5: w/o PS, PG, CT, fine-tuning,
        DPCPL) get the same pre-training run and share one backbone, as the paper's
        comparisons do; a row that changes the backbone (w/o DS) gets its own."""
        if self.model.lower() != 'dpcpl' or self.hyper.get('stage', 'both') != 'both':
            return None
        tuning = dpcpl_tuning_options()
        pre_set = {k: v for k, v in self.set.items() if k not in tuning}
        # the backbone keeps the prompt slots it will be tuned with (mbgraph_seq.train)
        pre_set.setdefault('prompt_slots', self.set.get('num_tokens') or 8)
        hyper = dict(self.hyper)
        if 'pretrain_epochs' in pre_set:
            hyper.pop('epochs', None)
        hyper['stage'] = 'pretrain'
        effective = {'model': 'dpcpl', 'dataset': self.dataset, 'seed': self.seed,
                     'set': pre_set, 'hyper': hyper}
        return Run(model='dpcpl', dataset=self.dataset, seed=self.seed, set=pre_set,
                   hyper=hyper, digest=run_digest(effective))

    def member_run(self, model: str, protocol: Optional[str] = None) -> 'Run':
        """The run of the table's settings that trains ``model`` (this run's dataset, seed
        and hyperparameters, no overrides: the run of that model's own row), under
        ``protocol`` when given."""
        hyper = dict(self.hyper)
        if protocol is not None and hyper.get('protocol', 'validation') != protocol:
            hyper['protocol'] = protocol
        effective = {'model': model, 'dataset': self.dataset, 'seed': self.seed, 'set': {},
                     'hyper': hyper}
        return Run(model=model, dataset=self.dataset, seed=self.seed, set={}, hyper=hyper,
                   digest=run_digest(effective))

    def blend_parts(self) -> List[Tuple[str, Optional['Run'], Optional['Run']]]:
        """For a ``blend:`` run, per member in order: ``(name, run, twin)``. ``run`` trains
        the member under this run's protocol, ``twin`` under the validation protocol (the
        weights are fitted on its validation split; the same run when the protocol is
        ``validation``); both None for a training-free member. ``[]`` for another model."""
        parts = []
        for name in blend_members(self.model):
            if is_training_free(name):
                parts.append((name, None, None))
            else:
                parts.append((name, self.member_run(name),
                              self.member_run(name, protocol='validation')))
        return parts

    def blend_commands(self, folder, out: Path, data_root: Optional[str], device: str = 'cpu',
                       threads: Optional[int] = None) -> List[List[str]]:
        """The ``mbgraph blend`` commands of this ``blend:`` run into ``out``, ``folder(run)``
        being a trained member's run folder: one command (fit on validation and test) when
        the members are the validation protocol's, else two (fit on the twins into
        ``out/fit``, then apply those weights to the members, ``--weights-from``)."""
        parts = self.blend_parts()
        fit_members = [name if t is None else folder(t) for name, _, t in parts]
        members = [name if r is None else folder(r) for name, r, _ in parts]
        if fit_members == members:
            return [self.blend_command(members, out, data_root, device, threads)]
        fit = Path(out) / 'fit'
        return [self.blend_command(fit_members, fit, data_root, device, threads),
                self.blend_command(members, out, data_root, device, threads,
                                   weights_from=fit / 'metrics.json')]

    def blend_command(self, members: Sequence[str], out: Path, data_root: Optional[str],
                      device: str = 'cpu', threads: Optional[int] = None,
                      weights_from: Optional[Path] = None) -> List[str]:
        """The ``python -m mbgraph blend ...`` argument list of this ``blend:`` run's
        ``members`` (run folders or training-free names) into ``out``."""
        cmd = [sys.executable, '-m', 'mbgraph', 'blend']
        for m in members:
            cmd += ['--member', str(m)]
        cmd += ['--out', str(out), '--overwrite', '--device', device]
        root = self.hyper.get('data_path') or data_root
        if root is not None and self.dataset != 'synthetic':
            cmd += ['--data-root', str(root)]
        if 'ks' in self.hyper:
            cmd += ['--ks', str(self.hyper['ks'])]
        if all(run is None for _, run, _ in self.blend_parts()):   # training-free members
            cmd += ['--dataset', self.dataset, '--seed', str(self.seed),
                    '--protocol', str(self.hyper.get('protocol', 'validation'))]
            if 'behaviors' in self.hyper:
                cmd += ['--behaviors', str(self.hyper['behaviors'])]
        if 'grid' in self.set:
            grid = self.set['grid']
            cmd += ['--grid', ','.join(str(g) for g in grid) if isinstance(grid, (list, tuple))
                    else str(grid)]
        if weights_from is not None:
            cmd += ['--weights-from', str(weights_from)]
        if threads is not None:
            cmd += ['--threads', str(threads)]
        return cmd

    def command(self, data_root: Optional[str], out: Path, device: str = 'cpu',
                threads: Optional[int] = None, progress: bool = True,
                pretrained: Optional[Path] = None) -> List[str]:
        """The ``python -m mbgraph train ...`` argument list of this run; ``pretrained``: a
        DPCPL run tunes that saved backbone (``--stage prompt``) instead of pre-training."""
        cmd = [sys.executable, '-m', 'mbgraph', 'train', '--model', self.model,
               '--dataset', self.dataset, '--seed', str(self.seed), '--out', str(out),
               '--device', device]
        cmd.append('--resume')          # an interrupted run continues from its checkpoint
        hyper = dict(self.hyper)
        root = hyper.pop('data_path', None) or data_root
        if root is not None and self.dataset != 'synthetic':
            cmd += ['--data-root', str(root)]
        for key, value in hyper.items():
            if key in HYPER_SWITCHES:
                cmd += [HYPER_SWITCHES[key]] if value else []
                continue
            if isinstance(value, (list, tuple)):
                value = ','.join(str(v) for v in value)
            cmd += [HYPER_FLAGS[key], str(value)]
        for key, value in self.set.items():
            cmd += ['--set', f'{key}={value!r}']
        if pretrained is not None:
            cmd += ['--stage', 'prompt', '--set', f'pretrained={str(pretrained)!r}']
        if threads is not None:
            cmd += ['--threads', str(threads)]
        if not progress:
            cmd.append('--no-progress')
        return cmd


def run_digest(effective: Mapping[str, Any]) -> str:
    """8 hex digits of the SHA-1 of the canonical JSON of ``effective``."""
    text = json.dumps(effective, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------------------------
# model and option checks
# --------------------------------------------------------------------------------------------

def _params(fn) -> set:
    """The named parameters of ``fn`` (its ``**kwargs`` aside) but the data argument."""
    return {n for n, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            and n not in ('self', 'data', 'dataset')}


@functools.lru_cache(maxsize=None)
def _registered_class(kind: str, name: str) -> type:
    """The class that the ``'ENCODER+HEAD'`` registry (:data:`mbgraph.models.ENCODERS` or
    :data:`~mbgraph.models.HEADS`, by ``kind``) builds for ``name``: its factories take
    ``(embedding_dim, num_behaviors, **options)``, so one tiny instance names it."""
    from mbgraph.models import ENCODERS, HEADS
    registry = ENCODERS if kind == 'encoder' else HEADS
    return type(registry[name](8, 2))


def _graph_option_sets(model: str) -> Tuple[set, Optional[set], Optional[set]]:
    """(model, encoder, head) keyword names that ``model`` accepts (None: an encoder or head
    registered elsewhere, whose options are not checked here)."""
    from mbgraph.models import ENCODERS, HEADS, MODELS, MultiBehaviorModel
    from mbgraph.models.multi_behavior import parse_name
    key = model.lower()
    if key.startswith('hybrid:'):        # the hybrid's own options and its base model's
        from mbgraph.models import HistoryHybrid
        base_opts, enc_opts, head_opts = _graph_option_sets(key[len('hybrid:'):])
        return base_opts | (_params(HistoryHybrid.__init__) - {'base'}), enc_opts, head_opts
    if key in MODELS and key not in ('mbcgcn', 'crgcn', 'pkef', 'copf'):
        return _params(MODELS[key]), set(), set()
    enc, head, _ = parse_name(key)
    model_opts = (_params(MultiBehaviorModel.__init__)) - {'encoder', 'head'}
    model_opts |= {'embedding_dim', 'lambdas', 'num_layers'}
    if key in ('pkef', 'copf'):
        model_opts.add('reading')
    return (model_opts,
            _params(_registered_class('encoder', enc)) if enc in ENCODERS else None,
            _params(_registered_class('head', head)) if head in HEADS else None)


def sequence_models() -> Dict[str, Any]:
    from mbgraph_seq.models import SEQ_MODELS
    return SEQ_MODELS


def dpcpl_tuning_options() -> set:
    """The DPCPL options that act after pre-training: the prompt generator's (its
    constructor's, the backbone aside) and ``tuning`` / ``pretrained``."""
    from mbgraph_seq.models import DPCPL
    return (_params(DPCPL.__init__) - {'backbone'}) | {'tuning', 'pretrained', 'prompt_lr'}


def is_sequence_model(model: str) -> bool:
    return model.lower() in sequence_models()


def is_sequence_run(model: str, dataset: str) -> bool:
    """Whether ``model`` on ``dataset`` runs the sequence pipeline: a sequence model, or a
    graph model's sequence twin (``mostpop`` on MovieLens,
    :func:`mbgraph_seq.models.sequence_pipeline`)."""
    from mbgraph_seq.models import sequence_pipeline
    return sequence_pipeline(model, dataset)


def check_model(model: str, overrides: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ConfigError` if ``model`` is unknown or an override names an option that
    the model, its encoder or its head does not have."""
    from mbgraph.models import is_known_model
    key = model.lower()
    if key.startswith(BLEND_PREFIX):
        members = blend_members(key)
        if len(members) < 2 or not all(members):
            raise ConfigError(f"{where}: a blend names at least two members, 'blend:A+B', "
                              f'got {model!r}')
        for m in members:
            if m.startswith((BLEND_PREFIX, 'hybrid:')) or is_sequence_model(m) \
                    or not is_known_model(m):
                raise ConfigError(f'{where}: blend member {m!r} of {model!r} is not a graph '
                                  'model or training-free baseline of mbgraph')
        _check_keys(overrides, BLEND_OPTIONS, f'{where}: blend {model!r} set')
        return
    if is_sequence_model(key):
        from mbgraph_seq import train as seq_train
        cls = sequence_models()[key]
        known = _params(seq_train.train_sequence_model) | _params(cls)
        if key == 'dpcpl':
            from mbgraph_seq.models.ebm import EBM
            known |= _params(EBM)
        known -= {'name', 'backbone', 'epochs', 'stage', 'device', 'out_dir', 'seed',
                  'batch_size', 'lr', 'progress', 'patience', 'eval_every'}
        for k in overrides:
            if k not in known:
                raise ConfigError(f'{where}: model {model!r} has no option {k!r}; known: '
                                  f'{", ".join(sorted(known))}')
        return
    if not is_known_model(key):
        from mbgraph.models import ENCODERS, HEADS, MODELS
        raise ConfigError(f'{where}: unknown model {model!r}; known: graph '
                          f'{", ".join(sorted(MODELS))} or ENCODER+HEAD (encoders '
                          f'{", ".join(sorted(ENCODERS))}; heads {", ".join(sorted(HEADS))}); '
                          f'sequence {", ".join(sorted(sequence_models()))}')
    model_opts, enc_opts, head_opts = _graph_option_sets(key)
    for k in overrides:
        if k.startswith('encoder.'):
            name, opts, part = k[len('encoder.'):], enc_opts, 'encoder'
        elif k.startswith('head.'):
            name, opts, part = k[len('head.'):], head_opts, 'head'
        else:
            name, opts, part = k, model_opts, 'model'
        if opts is not None and name not in opts:
            raise ConfigError(f'{where}: the {part} of {model!r} has no option {name!r}; '
                              f'known: {", ".join(sorted(opts)) or "(none)"}')


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------

def _check_keys(got: Mapping[str, Any], allowed: set, where: str) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise ConfigError(f'{where}: unknown key {unknown[0]!r}; expected one of '
                          f'{", ".join(sorted(allowed))}')


def _check_hyper(hyper: Any, where: str) -> Dict[str, Any]:
    """Known keys, each of the type and in the range ``mbgraph train`` accepts
    (:mod:`mbgraph.validation`, the table the command line checks its options with)."""
    from mbgraph.validation import OptionError, check_options
    if not isinstance(hyper, dict):
        raise ConfigError(f'{where}: expected a table of hyperparameters, got {hyper!r}')
    _check_keys(hyper, set(HYPER_FLAGS) | set(HYPER_SWITCHES), where)
    for key in HYPER_SWITCHES:
        if key in hyper and not isinstance(hyper[key], bool):
            raise ConfigError(f'{where}: {key} = {hyper[key]!r}: expected true or false')
    try:
        check_options(hyper)
    except OptionError as e:
        raise ConfigError(f'{where}: {e.option} = {e.value!r}: expected {e.expected}') from None
    for key in ('data_path',):
        if key in hyper and not isinstance(hyper[key], str):
            raise ConfigError(f'{where}: {key} = {hyper[key]!r}: expected a path string')
    return dict(hyper)


#: a table id names result files (curves_ID.png): no folders, no leading dot
TABLE_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')


def _paper_numbers(paper: Any, where: str) -> Dict[str, Tuple[float, ...]]:
    if not isinstance(paper, dict):
        raise ConfigError(f'{where}: expected {{dataset = [HR, NDCG]}}, got {paper!r}')
    out = {}
    for dataset, values in paper.items():
        if (not isinstance(values, list) or not values
                or not all(isinstance(v, (int, float)) for v in values)):
            raise ConfigError(f'{where}.{dataset}: expected a list of numbers, got {values!r}')
        out[dataset] = tuple(float(v) for v in values)
    return out


def load_table(path: Path) -> Table:
    """Read and check one configuration file."""
    path = Path(path)
    try:
        with open(path, 'rb') as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f'{path}: not valid TOML: {e}') from e
    where = str(path)
    _check_keys(raw, TOP_KEYS, where)
    table = raw.get('table')
    if not isinstance(table, dict) or 'id' not in table or 'datasets' not in table:
        raise ConfigError(f'{where}: needs a [table] section with id and datasets')
    _check_keys(table, TABLE_KEYS, f'{where} [table]')
    if not isinstance(table['id'], str) or not TABLE_ID.match(table['id']):
        raise ConfigError(f'{where} [table]: id = {table["id"]!r}: expected letters, digits, '
                          "'_', '-' and '.' (it names files in the results folder)")
    datasets = table['datasets']
    if not isinstance(datasets, list) or not datasets:
        raise ConfigError(f'{where} [table]: datasets must be a non-empty list')
    hyper = _check_hyper(raw.get('hyper', {}), f'{where} [hyper]')
    dataset_hyper = {}
    for name, values in raw.get('dataset', {}).items():
        if name not in datasets:
            raise ConfigError(f'{where} [dataset.{name}]: {name!r} is not among the table\'s '
                              f'datasets {datasets}')
        dataset_hyper[name] = _check_hyper(values, f'{where} [dataset.{name}]')
    rows_raw = raw.get('row')
    if not isinstance(rows_raw, list) or not rows_raw:
        raise ConfigError(f'{where}: needs at least one [[row]]')
    rows, names = [], set()
    for i, r in enumerate(rows_raw):
        rw = f'{where} [[row]] {i + 1}'
        _check_keys(r, ROW_KEYS, rw)
        if 'name' not in r or 'model' not in r:
            raise ConfigError(f'{rw}: needs name and model')
        if r['name'] in names:
            raise ConfigError(f'{rw}: duplicate row name {r["name"]!r}')
        names.add(r['name'])
        overrides = r.get('set', {})
        if not isinstance(overrides, dict):
            raise ConfigError(f'{rw}: set must be a table of KEY = VALUE')
        check_model(r['model'], overrides, f'{rw} ({r["name"]})')
        row_seeds = r.get('seeds')
        if row_seeds is not None and (isinstance(row_seeds, bool)
                                      or not isinstance(row_seeds, int) or row_seeds < 1):
            raise ConfigError(f'{rw}: seeds must be an integer >= 1, got {row_seeds!r}')
        rows.append(Row(name=r['name'], model=r['model'].lower(), set=dict(overrides),
                        hyper=_check_hyper(r.get('hyper', {}), f'{rw} hyper'),
                        paper=_paper_numbers(r.get('paper', {}), f'{rw} paper'),
                        seeds=row_seeds))
    for d in datasets:
        if d not in GRAPH_DATASETS:
            raise ConfigError(f'{where} [table]: unknown dataset {d!r}; known: '
                              f'{", ".join(GRAPH_DATASETS)}')
    for row in rows:
        for d in datasets:
            if not is_sequence_run(row.model, d):
                continue
            merged = {**hyper, **dataset_hyper.get(d, {}), **row.hyper}
            bad = sorted(set(merged) & GRAPH_ONLY_HYPER)
            if bad:
                raise ConfigError(f'{where}: row {row.name!r} ({row.model}) on {d!r}: '
                                  f'{", ".join(bad)} appl{"ies" if len(bad) == 1 else "y"} '
                                  'to graph models only')
            if d not in SEQUENCE_DATASETS:
                raise ConfigError(f'{where}: row {row.name!r}: sequence model {row.model!r} '
                                  f'runs on {", ".join(SEQUENCE_DATASETS)}, not {d!r}')
    columns = table.get('columns', list(DEFAULT_COLUMNS))
    seeds = table.get('seeds', 1)
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f'{where} [table]: seeds must be an integer >= 1, got {seeds!r}')
    return Table(id=str(table['id']), title=table.get('title', table['id']), path=path,
                 datasets=list(datasets), columns=list(columns), seeds=seeds, hyper=hyper,
                 dataset_hyper=dataset_hyper, rows=rows, paper=table.get('paper', ''),
                 note=table.get('note', ''))


def suite_dir(suite: str) -> Path:
    """``benchmarks/configs/<suite>``, or ``suite`` itself when it is a folder."""
    if Path(suite).is_dir():
        return Path(suite)
    return CONFIG_DIR / suite


def list_suites() -> List[str]:
    return sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir()) if CONFIG_DIR.is_dir() \
        else []


def load_suite(suite: str) -> List[Table]:
    """Every table of a suite (a name under ``benchmarks/configs`` or a folder)."""
    directory = suite_dir(suite)
    if not directory.is_dir():
        raise ConfigError(f'unknown suite {suite!r}; known suites: {", ".join(list_suites())}')
    tables = [load_table(p) for p in sorted(directory.glob('*.toml'))
              if not p.name.startswith('_')]
    ids = [t.id for t in tables]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f'suite {suite!r}: table id {dup[0]!r} is used by more than one file')
    return tables


def expand(table: Table, seeds: Optional[int] = None, epochs: Optional[int] = None,
           datasets: Optional[Sequence[str]] = None,
           lr: Optional[float] = None) -> List[Tuple[Row, Run]]:
    """The (row, run) pairs of ``table``: rows x datasets x seeds (a row's own ``seeds``
    caps its count), with ``seeds``,
    ``epochs`` and ``lr`` overriding the file's (``epochs`` also caps ``eval_every`` and
    replaces DPCPL's ``pretrain_epochs``; overridden runs get their own ids) and ``datasets``
    restricting the datasets."""
    out = []
    n_seeds = seeds if seeds is not None else table.seeds
    for dataset in table.datasets:
        if datasets is not None and dataset not in datasets:
            continue
        for row in table.rows:
            hyper = {**table.hyper, **table.dataset_hyper.get(dataset, {}), **row.hyper}
            overrides = dict(row.set)
            if epochs is not None:
                hyper['epochs'] = epochs
                if 'eval_every' in hyper:
                    hyper['eval_every'] = min(hyper['eval_every'], epochs)
                if 'pretrain_epochs' in overrides:     # DPCPL's first stage too
                    overrides['pretrain_epochs'] = epochs
            if lr is not None:                         # every row, its own lr included
                hyper['lr'] = float(lr)
            for seed in range(row.seed_count(n_seeds)):
                effective = {'model': row.model, 'dataset': dataset, 'seed': seed,
                             'set': overrides, 'hyper': hyper}
                out.append((row, Run(model=row.model, dataset=dataset, seed=seed,
                                     set=dict(overrides), hyper=dict(hyper),
                                     digest=run_digest(effective))))
    return out
