r"""The ``mbgraph`` command line.

::

    mbgraph train --model lightgcn --dataset synthetic --epochs 20 --out runs/demo
    mbgraph evaluate --checkpoint runs/demo/best.pt
    mbgraph datasets --data-root ../shared/data

``train`` writes ``OUT/metrics.json`` (test and best-validation metrics, ``epoch_seconds`` =
median training epoch, ``eval_seconds`` = one full test evaluation pass, peak memory, the
configuration and the environment), ``OUT/log.jsonl``, ``OUT/checkpoint.pt`` and
``OUT/best.pt``, and prints a results table. Every option is checked
(:mod:`mbgraph.validation`) before any data is loaded; bad arguments and every anticipated
failure (unknown model, dataset or behavior, bad or missing files, refused pickles, a corrupt or
foreign checkpoint, a missing device, an --out holding another run) print one line and exit with
status 2; a diverged run prints one line naming the loss term and the last good checkpoint and
exits with status 3.

Data-parallel training over several processes (see :mod:`mbgraph.distributed`)::

    torchrun --nproc_per_node 2 -m mbgraph train --model lightgcn --dataset synthetic
"""
from __future__ import annotations

import argparse
import ast
import csv
import logging
import pickle
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from .pipeline import PROTOCOLS

log = logging.getLogger('mbgraph')


MBGMN_DATASETS = ('taobao', 'beibei', 'tmall')
#: datasets whose loader takes --behaviors as the files to read and their order
ORDERED_BY_LOADER = MBGMN_DATASETS + ('sslrec', 'retailrocket', 'behavior_txt', 'recbole')


class UsageError(Exception):
    """A problem with what the user asked for: reported on one line, exit status 2."""


#: exit status of a run that diverged (:class:`mbgraph.losses.DivergenceError`)
EXIT_DIVERGED = 3


def _anticipated() -> tuple:
    """Errors the CLI reports on one line with exit status 2 (a traceback is a bug)."""
    from .io import RunLockedError
    from .validation import CorruptCheckpointError, OptionError, RunMismatchError
    return (OptionError, RunMismatchError, CorruptCheckpointError, RunLockedError, OSError,
            pickle.UnpicklingError, UnicodeError, csv.Error)


def _parse_set(items: Sequence[str]) -> Dict[str, Any]:
    out = {}
    for item in items or ():
        if '=' not in item:
            raise UsageError(f'--set expects KEY=VALUE, got {item!r}')
        key, value = item.split('=', 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _split_list(value: Optional[str]) -> Optional[List[str]]:
    if value is None:
        return None
    return [v.strip() for v in value.split(',') if v.strip()]


def load_data(dataset: str, data_root: Optional[str], behaviors: Optional[List[str]],
              seed: int):
    from .data.datasets import DATASETS, load_dataset
    if dataset not in DATASETS:
        raise UsageError(f'unknown dataset {dataset!r}; known datasets: '
                         f'{", ".join(sorted(DATASETS))}')
    from .data.multiplex import select_behaviors
    if dataset == 'csv' and data_root is None:
        raise UsageError("dataset 'csv' needs --data-root FILE: a delimited log with user, "
                         "item, behavior[, timestamp] columns")
    kwargs = {}
    if behaviors is not None and dataset in ORDERED_BY_LOADER:
        kwargs['behaviors'] = behaviors     # read only those behavior files
    try:
        if dataset == 'csv' and behaviors is not None:
            try:    # the file's behaviors in a known order, of which --behaviors is a subset
                return select_behaviors(load_dataset(dataset, data_root, seed=seed), behaviors)
            except ValueError:
                # names without a known order: --behaviors gives the order of all of them
                return load_dataset(dataset, data_root, seed=seed, behaviors=behaviors)
        data = load_dataset(dataset, data_root, seed=seed, **kwargs)
        return data if behaviors is None else select_behaviors(data, behaviors)
    except (ValueError, OSError, pickle.UnpicklingError, UnicodeError, csv.Error) as e:
        raise UsageError(str(e)) from e


def model_kwargs(args) -> Dict[str, Any]:
    kwargs = _parse_set(args.set)
    if args.dim is not None:
        kwargs['embedding_dim'] = args.dim
    if args.layers is not None:
        kwargs['num_layers'] = args.layers
    if args.reg is not None:
        kwargs['reg'] = args.reg
    return kwargs


def make_model(name: str, data, kwargs: Dict[str, Any]):
    from .models import build_model
    try:
        return build_model(name, data, **kwargs)
    except (TypeError, ValueError) as e:
        raise UsageError(f'model {name!r} with options {kwargs}: {e}') from e


def format_table(rows: List[Dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of ``rows`` (floats with 4 decimals)."""
    def fmt(v):
        if isinstance(v, float):
            return f'{v:.4f}'
        return '-' if v is None else str(v)
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(vals):
        return '| ' + ' | '.join(v.ljust(w) for v, w in zip(vals, widths)) + ' |'
    return '\n'.join([line(columns), '|' + '|'.join('-' * (w + 2) for w in widths) + '|',
                      *(line(r) for r in cells)])


def _sequence_models():
    from mbgraph_seq.models import SEQ_MODELS
    return SEQ_MODELS


def load_sequences(dataset: str, data_root: Optional[str], max_len: int, seed: int,
                   behaviors: Optional[List[str]] = None, **options):
    from mbgraph_seq.data import SequenceDataset
    if behaviors is not None and dataset != 'csv':
        raise UsageError('--behaviors selects graph behaviors; sequence models use every '
                         'behavior of the log (for a csv log it gives their order)')
    try:
        if dataset == 'synthetic':
            return SequenceDataset.synthetic(max_len=max_len, seed=seed, **options)
        if dataset == 'csv':
            if data_root is None:
                raise UsageError("dataset 'csv' needs --data-root FILE: a delimited log with "
                                 "user, item, behavior, timestamp columns")
            return SequenceDataset.from_csv(data_root, behaviors, max_len=max_len, seed=seed,
                                            **options)
        if dataset in ('ml-latest-small', 'movielens'):
            if data_root is None:
                raise UsageError(f'dataset {dataset!r} needs --data-root (the folder holding '
                                 'ml-latest-small/ratings.csv)')
            root = Path(data_root)
            directory = root / 'ml-latest-small' if (root / 'ml-latest-small').is_dir() else root
            return SequenceDataset.from_movielens(directory, max_len=max_len, seed=seed,
                                                  **options)
        if dataset == 'retailrocket':     # SSLRec's matrices hold event times (Unix seconds)
            from .data.sslrec import resolve_sslrec_dir
            return SequenceDataset.from_sslrec(resolve_sslrec_dir(data_root, dataset),
                                               max_len=max_len, seed=seed, **options)
    except (ValueError, OSError, UnicodeError, csv.Error) as e:
        raise UsageError(str(e)) from e
    raise UsageError(f'sequence models run on synthetic, ml-latest-small, retailrocket or csv, '
                     f'not {dataset!r}')


def cmd_train_sequence(args, device: torch.device) -> int:
    """Sequence models (mbgraph_seq) through the same Trainer and metrics.json."""
    from mbgraph_seq.train import train_sequence_model

    from .distributed import is_main_process
    from .io import RunLock
    from .training import environment, write_metrics
    from .validation import clear_run_files, run_inputs
    graph_only = [flag for flag, value in (('--reg', args.reg), ('--lr-decay', args.lr_decay),
                                           ('--lr-decay-steps', args.lr_decay_steps),
                                           ('--reading', args.reading),
                                           ('--init-from', args.init_from))
                  if value is not None]
    if args.protocol != 'validation':
        graph_only.append('--protocol')
    if args.ks != '10':
        graph_only.append('--ks')
    if graph_only:
        raise UsageError(f'{", ".join(graph_only)} appl{"ies" if len(graph_only) == 1 else "y"} '
                         f'to graph models only; sequence models are evaluated at K = 10 and '
                         f'20 and train with a constant learning rate')
    kwargs = _parse_set(args.set)
    dataset = load_sequences(args.dataset, args.data_root, args.max_len, args.seed,
                             _split_list(args.behaviors), min_interactions=args.min_interactions,
                             tie_order=args.tie_order)
    if args.negatives >= dataset.num_items:
        raise UsageError(f'--negatives {args.negatives}: expected fewer than the '
                         f'{dataset.num_items} items of {args.dataset!r}')
    if args.dim is not None:
        kwargs['dim'] = args.dim
    if args.layers is not None:
        kwargs['num_layers'] = args.layers
    out = Path(args.out or f'runs/{args.model}_{args.dataset}')
    lock = RunLock(out).acquire() if is_main_process() else None
    if args.overwrite and lock is not None:
        clear_run_files(out, '--overwrite', run_inputs(args.model, args.stage, out))
    try:
        metrics = train_sequence_model(
            args.model, dataset, epochs=100 if args.epochs is None else args.epochs,
            stage=args.stage, device=device, out_dir=out, seed=args.seed,
            batch_size=256 if args.batch_size is None else args.batch_size,
            lr=1e-3 if args.lr is None else args.lr,
            num_negatives_eval=args.negatives, progress=not args.no_progress,
            patience=args.patience, eval_every=args.eval_every, amp=args.amp,
            resume=args.resume, allow_changes=_split_list(args.allow_change) or (), **kwargs)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from e
    finally:
        if lock is not None:
            lock.release()
    if not is_main_process():
        return 0
    metrics.update({'dataset': args.dataset, 'environment': environment(),
                    'date': time.strftime('%Y-%m-%d'), **_launch_facts(args)})
    path = write_metrics(out / 'metrics.json', metrics)
    test, full = metrics['test'], metrics.get('test_full', {})
    row = {'model': args.model, 'dataset': args.dataset,
           f'hr@10 ({args.negatives} neg)': test.get('hr@10'),
           f'ndcg@10 ({args.negatives} neg)': test.get('ndcg@10'),
           'hr@10 full': full.get('hr@10'), 'ndcg@10 full': full.get('ndcg@10'),
           'hr@10 full, unseen': metrics.get('test_full_unseen', {}).get('hr@10'),
           'best epoch': metrics.get('best_epoch'), 's/epoch': metrics.get('epoch_seconds')}
    print(format_table([row], list(row)))
    print(f'wrote {path}')
    return 0


def _launch_facts(args) -> Dict[str, Any]:
    from .distributed import rank_and_world_size
    return {'world_size': rank_and_world_size()[1], 'amp': bool(args.amp)}


def cmd_train(args) -> int:
    """``mbgraph train``; under ``torchrun`` every process runs it and joins the process group
    (NCCL on CUDA, Gloo on CPU) first; rank 0 alone prints and writes files."""
    from .distributed import cleanup, init_from_env
    from .runtime import bound_onednn_caches, keep_freed_memory
    from .training import resolve_device
    from .validation import check_train_args
    check_train_args(args, _sequence_models(), _parse_set(args.set))
    keep_freed_memory()       # no per-step page faults of large temporaries (mbgraph.runtime)
    bound_onednn_caches()     # no kernel cached per batch shape (read at oneDNN's first use)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        _, _, device = init_from_env(device)
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from e
    try:
        from mbgraph_seq.models import sequence_pipeline
        if sequence_pipeline(args.model, args.dataset):     # mostpop on MovieLens too
            args.model = args.model.lower()
            return cmd_train_sequence(args, device)
        return _train_graph(args, device)
    finally:
        cleanup()


def _train_graph(args, device: torch.device) -> int:
    """A graph model: :func:`mbgraph.pipeline.train_graph_model` with the command line's
    options, then the results table."""
    from .models.readings import readings_of
    from .pipeline import RunSetupError, train_graph_model
    from .validation import parse_ks
    ks = parse_ks(args.ks)
    out = Path(args.out or f'runs/{args.model}_{args.dataset}')
    data = load_data(args.dataset, args.data_root, _split_list(args.behaviors), args.seed)
    if args.reading is not None and not readings_of(args.model):
        raise UsageError(f'--reading applies to the models with named readings '
                         f'({", ".join(_reading_models())}), not {args.model!r}')
    try:
        metrics = train_graph_model(
            args.model, data, epochs=args.epochs, lr=args.lr, lr_decay=args.lr_decay,
            lr_decay_steps=args.lr_decay_steps, batch_size=args.batch_size,
            protocol=args.protocol, reading=args.reading, ks=ks, patience=args.patience,
            eval_every=args.eval_every, device=device, out_dir=out, seed=args.seed,
            progress=not args.no_progress, amp=args.amp, stop_at=_stop_at(args.stop_at, ks),
            resume=args.resume, allow_changes=_split_list(args.allow_change) or (),
            overwrite=args.overwrite, dataset=args.dataset, data_root=args.data_root,
            hyperparameters=model_kwargs(args), init_from=args.init_from)
    except RunSetupError as e:
        raise UsageError(str(e)) from e
    if metrics is None:     # not the main process under torchrun
        return 0
    k = ks[0]
    row = {'model': args.model, 'dataset': args.dataset, **metrics['test'],
           f'hr@{k} novel': metrics['test_novel'].get(f'hr@{k}'),
           'best epoch': metrics['best_epoch'], 'epochs': metrics['epochs_run'],
           's/epoch': metrics['epoch_seconds'], 'eval s': metrics['eval_seconds']}
    print(format_table([row], list(row)))
    print(f'wrote {out / "metrics.json"}')
    return 0


def _stop_at(value: Optional[str], ks: List[int]):
    """``--stop-at hr@10=0.1051`` -> ``('hr@10', 0.1051)``."""
    if value is None:
        return None
    metric, _, number = value.partition('=')
    names = [f'{m}@{k}' for m in ('hr', 'ndcg') for k in ks]
    try:
        target = float(number)
    except ValueError:
        target = None
    if metric not in names or target is None or not 0 < target <= 1:
        raise UsageError(f'--stop-at {value}: expected METRIC=VALUE with METRIC one of '
                         f'{", ".join(names)} and VALUE in (0, 1], e.g. hr@10=0.1051')
    return metric, target


def _reading_models() -> List[str]:
    from .models.readings import READINGS
    return sorted(READINGS)


def _read_checkpoint(path: Path, flag: str = '--checkpoint') -> Dict[str, Any]:
    """The verified content of checkpoint file ``path``, or a UsageError naming ``flag``."""
    from .validation import load_verified
    if not path.is_file():
        raise UsageError(f'checkpoint {path} does not exist' if not path.exists() else
                         f'{flag} {path}: expected a checkpoint file, it is '
                         f'{"a folder" if path.is_dir() else "not a regular file"}')
    return load_verified(path)


def _checkpoint_run(path: Path, data_root: Optional[str], split: str = 'test',
                    data=None, flag: str = '--checkpoint', state=None):
    """The model of a ``mbgraph train`` checkpoint with its weights, on its data.

    Returns ``(model, data, config)``; ``data`` (loaded from the checkpoint's configuration
    unless given) is checked against the checkpoint's data fingerprint. ``split='val'`` is
    refused for a run trained under the paper protocol (it has no validation split).
    ``state``: the checkpoint's content if the caller read it already."""
    from .validation import data_fingerprint
    if state is None:
        state = _read_checkpoint(path, flag)
    config = state.get('config') or {}
    if 'model' not in config or 'dataset' not in config:
        raise UsageError(f'{path} carries no run configuration; was it written by mbgraph train?')
    if str(config['model']).lower() in _sequence_models():
        raise UsageError(f'{path} is a checkpoint of sequence model {config["model"]!r}: '
                         'evaluate and blend take graph models; the metrics.json beside it '
                         'holds its test metrics')
    if config.get('protocol') == 'paper' and split == 'val':
        raise UsageError(f'{path} was trained under --protocol paper: it has no '
                         'validation split (use --split test)')
    if data is None:
        data = load_data(config['dataset'], data_root or config.get('data_root'),
                         config.get('behaviors'), config.get('seed', 0))
        if config.get('protocol') == 'paper':    # trained on every training interaction
            from .data.multiplex import merge_validation
            merge_validation(data)
    saved = config.get('data_fingerprint')
    if saved is not None and saved != data_fingerprint(data):
        raise UsageError(f'{path} was trained on other data than {config["dataset"]!r} under '
                         f'{data_root or config.get("data_root")} holds now (data '
                         f'fingerprint {saved}, now {data_fingerprint(data)})')
    model = make_model(config['model'], data, config.get('model_kwargs', {}))
    try:
        model.load_state_dict(state['model'])
    except RuntimeError as e:
        raise UsageError(f'{path}: the weights do not fit model {config["model"]!r}: '
                         f'{str(e).splitlines()[0]}') from None
    return model, data, config


def cmd_evaluate(args) -> int:
    from .evaluation import FullRankingEvaluator
    from .training import resolve_device
    from .validation import check_device
    path = Path(args.checkpoint)
    check_device(args.device, '--device')
    if args.out is not None and Path(args.out).is_dir():
        raise UsageError(f'--out {args.out}: expected a file to write, it is a folder')
    model, data, config = _checkpoint_run(path, args.data_root, args.split)
    device = resolve_device(args.device)
    model.to(device)
    ks = config.get('ks', [10])
    ev = FullRankingEvaluator(data, args.split, ks=ks)
    result = ev.evaluate(model, device)
    row = {'model': config['model'], 'dataset': config['dataset'], 'split': args.split, **result}
    extra = {}
    if args.split == 'test':        # as in a training run's metrics.json
        from .pipeline import novel_test
        extra['test_novel'] = novel_test(data, model, device, ks)
        row[f'hr@{ks[0]} novel'] = extra['test_novel'].get(f'hr@{ks[0]}')
    print(format_table([row], list(row)))
    if args.out:
        from .training import write_metrics
        write_metrics(args.out, {args.split: result, **extra, 'checkpoint': str(path),
                                 'eval_seconds': ev.last_seconds, 'config': config})
    return 0


def _numbers(text: str, flag: str) -> List[float]:
    """Comma-separated finite numbers of an option, or a UsageError naming it."""
    try:
        values = [float(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        raise UsageError(f'{flag} {text}: expected comma-separated numbers') from None
    if not values or not all(v == v and abs(v) != float('inf') for v in values):
        raise UsageError(f'{flag} {text}: expected finite comma-separated numbers')
    return values


def cmd_blend(args) -> int:
    """``mbgraph blend``: fit a :class:`~mbgraph.models.blend.ScoreBlend` of trained
    checkpoints and training-free baselines on validation, evaluate it on the test."""
    from .data.multiplex import merge_validation
    from .evaluation import FullRankingEvaluator
    from .io import read_json, sha256_file
    from .models.blend import DEFAULT_GRID, ScoreBlend, fit_blend_weights
    from .runtime import keep_freed_memory
    from .training import environment, peak_memory_mb, resolve_device, write_metrics
    from .validation import (
        check_device,
        check_option,
        check_options,
        cli_flag,
        data_fingerprint,
        parse_ks,
    )
    check_options({k: getattr(args, k) for k in ('threads', 'seed', 'ks')}, cli_flag)
    check_option('behaviors', args.behaviors, '--behaviors')
    check_device(args.device, '--device')
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    if len(args.member) < 2:
        raise UsageError('--member: a blend needs at least two members (repeat --member)')
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f'--out {out}: expected a folder, it is a file')
    if (out / 'metrics.json').exists() and not args.overwrite:
        raise UsageError(f'--out {out} already holds a metrics.json (pass --overwrite)')
    if args.weights is not None and args.weights_from is not None:
        raise UsageError('--weights and --weights-from: give one of them')
    t_start = time.perf_counter()
    # a run folder stands for its best.pt; a name that is no file is a model name
    args.member = [str(Path(m) / 'best.pt') if Path(m).is_dir() and (Path(m) / 'best.pt')
                   .is_file() else m for m in args.member]
    checkpoints = [m for m in args.member if Path(m).suffix == '.pt' or Path(m).exists()]
    ks = parse_ks(args.ks)
    weights_given = _numbers(args.weights, '--weights') if args.weights is not None else None
    grid = _numbers(args.grid, '--grid') if args.grid else list(DEFAULT_GRID)
    data, config0, members, described = None, None, [], []
    if checkpoints:
        if any(v is not None for v in (args.dataset, args.behaviors, args.protocol)):
            raise UsageError('--dataset, --behaviors and --protocol describe the data of a '
                             'blend of training-free members only; with a checkpoint member '
                             'the data is the checkpoint\'s')
        states = {m: _read_checkpoint(Path(m), '--member') for m in checkpoints}
        configs = [(m, states[m].get('config') or {}) for m in checkpoints]
        prints = {c.get('data_fingerprint') for _, c in configs}
        protocols = {c.get('protocol') for _, c in configs}
        if len(prints) > 1 or len(protocols) > 1:
            raise UsageError('the checkpoint members trained on different data or protocols ('
                             + '; '.join(f'{m}: {c.get("dataset")}, {c.get("protocol")}'
                                         for m, c in configs) + '): blend runs of one split')
        config0 = configs[0][1]
        split = 'test' if config0.get('protocol') == 'paper' else 'val'
        loaded = {}     # member -> (model, config); the first one loads the data
        for m in checkpoints:
            model, data, cfg = _checkpoint_run(Path(m), args.data_root, split, data=data,
                                               flag='--member', state=states[m])
            loaded[m] = (model, cfg)
        protocol = config0.get('protocol', 'validation')
        seed = config0.get('seed', 0)
        dataset = config0.get('dataset')
    else:
        dataset = args.dataset or 'synthetic'
        protocol = args.protocol or 'validation'
        seed = args.seed
        behaviors = args.behaviors.split(',') if args.behaviors else None
        data = load_data(dataset, args.data_root, behaviors, seed)
        if protocol == 'paper':
            merge_validation(data)
    from .models import build_model
    for m in args.member:
        if m in checkpoints:
            model, cfg = loaded[m]
            members.append(model)
            described.append({'member': m, 'model': cfg['model'], 'sha256': sha256_file(m),
                              'reading': getattr(model, 'reading', None)})
        else:
            try:
                model = build_model(m, data)
            except (TypeError, ValueError, KeyError) as e:
                raise UsageError(f'--member {m}: not a checkpoint file and not a model name '
                                 f'({e})') from None
            if getattr(model, 'trainable', True):
                raise UsageError(f'--member {m}: a model to train; blend its trained '
                                 'checkpoint instead (mbgraph train --model '
                                 f'{m} --out RUN, then --member RUN/best.pt)')
            members.append(model)
            described.append({'member': m, 'model': m})
    names = [d['model'] for d in described]
    blend = ScoreBlend(members, [1.0] * len(members), names)
    device = resolve_device(args.device)
    blend.to(device)
    fit = None
    if args.weights is not None:
        weights = weights_given
        if len(weights) != len(members):
            raise UsageError(f'--weights: {len(weights)} numbers for {len(members)} members')
        blend.weights = weights
        chosen = 'given (--weights)'
    elif args.weights_from is not None:
        earlier = read_json(args.weights_from)
        weights = earlier.get('weights')
        if not isinstance(weights, list) or len(weights) != len(members):
            raise UsageError(f'--weights-from {args.weights_from}: expected the metrics.json '
                             f'of a blend of {len(members)} members, it has weights {weights}')
        earlier_models = [m.get('model') for m in earlier.get('members') or []]
        if earlier_models and earlier_models != names:
            raise UsageError(f'--weights-from {args.weights_from}: that blend\'s members are '
                             f'{earlier_models}, these are {names}: give the members in the '
                             'same order')
        blend.weights = [float(w) for w in weights]
        chosen = f'from {args.weights_from} (fitted on its validation split)'
    else:
        if protocol == 'paper':
            raise UsageError('the members were trained under --protocol paper: there is no '
                             'validation split to fit the weights on. Fit them on runs of the '
                             'validation protocol and pass --weights-from that blend\'s '
                             'metrics.json, or give --weights')
        val_eval = FullRankingEvaluator(data, 'val', ks=ks)
        fit = fit_blend_weights(blend, val_eval, grid)
        chosen = f'fitted on the validation split by grid search ({fit["monitor"]})'
        if fit['at_grid_edge']:
            print(f'note: a weight took the grid\'s largest value ({max(grid):g}); a wider '
                  '--grid may fit validation better', file=sys.stderr)
    test_eval = FullRankingEvaluator(data, 'test', ks=ks)
    test = test_eval.evaluate(blend, device)
    from .pipeline import novel_test
    metrics = {
        'model': 'blend:' + '+'.join(names), 'dataset': dataset, 'test': test,
        # as in a training run's metrics.json: the test pairs beyond the users' histories
        'test_novel': novel_test(data, blend, device, ks),
        'val': fit['best'] if fit else None, 'weights': blend.weights,
        'weights_chosen': chosen, 'members': described, 'protocol': protocol,
        'protocol_description': PROTOCOLS.get(protocol), 'reading': None,
        'note': 'a blend with a history-ranking member uses the benchmark\'s history shortcut '
                'on purpose: it answers a different question from the pure models',
        'fit': {k: v for k, v in fit.items() if k != 'best'} if fit else None,
        'epoch_seconds': None, 'train_triples_per_epoch': 0,
        'eval_seconds': test_eval.last_seconds, 'test_users': int(test_eval.users.numel()),
        'seconds': time.perf_counter() - t_start, **peak_memory_mb(device),
        'config': {'members': list(args.member), 'ks': ks, 'seed': seed,
                   'data_fingerprint': data_fingerprint(data),
                   'grid': grid if fit else None,
                   'weights': args.weights, 'weights_from': args.weights_from},
        'environment': environment(), 'date': time.strftime('%Y-%m-%d')}
    out.mkdir(parents=True, exist_ok=True)
    write_metrics(out / 'metrics.json', metrics)
    row = {'model': metrics['model'], 'dataset': dataset,
           'weights': ','.join(f'{w:g}' for w in blend.weights), **test}
    print(format_table([row], list(row)))
    print(f'wrote {out / "metrics.json"}')
    return 0


def cmd_datasets(args) -> int:
    from .data.datasets import describe
    from .data.shortcuts import format_shortcuts, shortcut_shares
    names = args.dataset or ['synthetic']
    if not args.dataset and args.data_root:
        names = [n for n in _found_datasets(args.data_root)] or names
    for name in names:
        data = load_data(name, args.data_root, _split_list(args.behaviors), 0)
        print(f'## {name}')
        print(describe(data))
        if args.shortcuts:
            print(format_shortcuts(shortcut_shares(data, 'test')))
            print(format_shortcuts(shortcut_shares(data, 'val')))
        print()
    return 0


def _found_datasets(root: str) -> List[str]:
    """Dataset names whose files are found under ``root``."""
    found = []
    root_path = Path(root)
    for name, sub in (('taobao', 'taobao-mbgmn'), ('beibei', 'beibei-mbgmn'),
                      ('tmall', 'tmall-mbgmn'), ('retailrocket', 'retailrocket-sslrec'),
                      ('ml-latest-small', 'ml-latest-small')):
        if (root_path / sub).is_dir() or (root_path / name).is_dir():
            found.append(name)
    return found


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='mbgraph', description=__doc__.split('\n\n')[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-v', '--verbose', action='store_true', help='log progress details')
    sub = p.add_subparsers(dest='command', required=True)

    t = sub.add_parser('train', help='train a model and evaluate it on the test split')
    t.add_argument('--model', required=True,
                   help='graph: lightgcn | lightgcn_m | mbcgcn | crgcn | pkef | copf, or '
                   'ENCODER+HEAD (e.g. mbcgcn+dfme); training-free: mostpop | history | '
                   'cascadingrank; hybrid:BASE (BASE + learned history biases, e.g. '
                   'hybrid:pkef); sequence: sasrec | ebm | dpcpl | hmar | pomrec')
    t.add_argument('--dataset', default='synthetic',
                   help='synthetic | taobao | beibei | tmall | retailrocket | sslrec | '
                   'behavior_txt | recbole | ml-latest-small | csv')
    t.add_argument('--data-root', help='directory holding the dataset (e.g. ../shared/data)')
    t.add_argument('--behaviors', help='comma-separated behavior order to use, target last '
                   '(e.g. cart,buy); default: all of the dataset')
    t.add_argument('--epochs', type=int, default=None,
                   help='training epochs (default 100; with --protocol paper the model '
                   "reading's, e.g. 200 for copf)")
    t.add_argument('--batch-size', type=int, default=None,
                   help='graph models: BPR triples per behavior and step (default 2048), or '
                        "users per step for the 'code' readings (pkef/copf 256, mbcgcn "
                        '2048, crgcn 1024); '
                        'sequence models: sequences per step (default 256); over all ranks '
                        'under torchrun')
    t.add_argument('--lr', type=float, default=None,
                   help="learning rate (default: the model reading's, else 1e-3)")
    t.add_argument('--lr-decay', type=float, default=None,
                   help='multiply the learning rate by this after each epoch (default: the '
                   "model reading's, e.g. 0.96 for the 'code' readings)")
    t.add_argument('--lr-decay-steps', type=int, default=None,
                   help='decay every this many steps (a staircase) instead of every epoch')
    t.add_argument('--reading', default=None,
                   help="pkef, copf: 'code' (the authors' code, default) or 'paper' (the "
                   "equations); mbcgcn, crgcn: 'code' (default) or 'mbgraph' (the project's "
                   'earlier reading); see mbgraph.models.readings')
    t.add_argument('--protocol', default='validation', choices=sorted(PROTOCOLS),
                   help="'validation': early stopping on a held-out target interaction per "
                   "user; 'paper': every training interaction trains, fixed epochs, the last "
                   "epoch's test metrics (test also watched every --eval-every epochs)")
    t.add_argument('--dim', type=int, default=None, help='embedding size (default 64)')
    t.add_argument('--layers', type=int, default=None, help='propagation layers')
    t.add_argument('--reg', type=float, default=None, help='L2 regularisation weight')
    t.add_argument('--set', action='append', metavar='KEY=VALUE',
                   help='any other model hyperparameter, as a Python literal (repeatable); '
                   'prefix encoder./head. for the encoder or head of a composed model, e.g. '
                   "--set head.gamma=0.1 --set \"lambdas={'cart': 0.5, 'buy': 0.5}\"")
    t.add_argument('--stop-at', metavar='METRIC=VALUE',
                   help='time to accuracy: stop after the first evaluation whose METRIC (the '
                   'validation one; the watched test one under --protocol paper) reaches '
                   'VALUE, e.g. hr@10=0.1051; metrics.json then holds time_to_target')
    t.add_argument('--patience', type=int, default=10,
                   help='stop after this many evaluations without validation improvement')
    t.add_argument('--eval-every', type=int, default=1)
    t.add_argument('--ks', default='10', help='cut-offs, e.g. 10,20 (first one is monitored)')
    t.add_argument('--device', default='cpu', help='cpu | cuda | cuda:N | auto')
    t.add_argument('--out', help='output directory (default runs/MODEL_DATASET)')
    t.add_argument('--seed', type=int, default=0)
    t.add_argument('--threads', type=int, default=None,
                   help='CPU threads for torch (default: torch\'s choice); on a busy machine 1 '
                   'thread can be several times faster than oversubscribed cores')
    t.add_argument('--init-from', metavar='CHECKPOINT', help='start the user and item tables '
                   'from another run on the same data (its checkpoint.pt or best.pt), e.g. a '
                   'LightGCN pre-trained on view: --set behavior=pv')
    t.add_argument('--resume', action='store_true',
                   help='continue from OUT/checkpoint.pt (refused if it is another run\'s)')
    t.add_argument('--overwrite', action='store_true',
                   help='replace the run files an earlier run left in OUT')
    t.add_argument('--allow-change', metavar='OPTION,...',
                   help='with --resume: options that may differ from the checkpoint\'s run '
                        '(e.g. lr,patience); the epoch budget always may; "unfingerprinted" '
                        'resumes a checkpoint written by an mbgraph older than run fingerprints')
    t.add_argument('--no-progress', action='store_true', help='no progress bars')
    t.add_argument('--amp', action='store_true',
                   help='mixed precision: torch.autocast with float16 + gradient scaling on '
                        'CUDA, bfloat16 on CPU; sparse propagation, FFT and log-det stay float32')
    seq = t.add_argument_group('sequence models (sasrec, ebm, dpcpl, hmar, pomrec)')
    seq.add_argument('--stage', default='both', choices=['both', 'pretrain', 'prompt'],
                     help='DPCPL: pre-train EBM, prompt-tune, or both')
    seq.add_argument('--max-len', type=int, default=50,
                     help='positions per sequence (longer histories keep their most recent)')
    seq.add_argument('--negatives', type=int, default=99,
                     help='sampled negatives per test item (99 HMAR, 100 DPCPL, 999 PoMRec)')
    seq.add_argument('--min-interactions', type=int, default=0, help='drop users and items '
                     'with fewer events, until none has (DPCPL: 20; default 0: keep all)')
    seq.add_argument('--tie-order', default='log', choices=['log', 'shuffle'], help="a user's "
                     "events with equal timestamps: in log order, or shuffled (seeded by --seed)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser('evaluate', help='evaluate a checkpoint written by train')
    e.add_argument('--checkpoint', required=True, help='OUT/best.pt or OUT/checkpoint.pt')
    e.add_argument('--split', default='test', choices=['val', 'test'])
    e.add_argument('--data-root', help='override the data root stored in the checkpoint')
    e.add_argument('--device', default='cpu')
    e.add_argument('--out', help='write the metrics to this JSON file')
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser('blend', help='blend trained checkpoints and training-free baselines, '
                       'weights fitted on validation (mbgraph.models.blend)')
    b.add_argument('--member', action='append', required=True, metavar='CHECKPOINT|NAME',
                   help='a checkpoint of mbgraph train (RUN/best.pt, or the RUN folder) or a '
                   'training-free model (mostpop, history, cascadingrank); repeat; the first '
                   'one\'s weight is 1')
    b.add_argument('--out', required=True, help='folder for metrics.json')
    b.add_argument('--weights', help='comma-separated weights, one per member (skip the fit)')
    b.add_argument('--weights-from', metavar='METRICS_JSON', help='the weights of an earlier '
                   'blend (e.g. fitted on validation runs, applied to paper-protocol runs)')
    b.add_argument('--grid', help='weights searched for every member after the first '
                   '(default 0,0.05,0.1,0.2,0.3,0.5,0.75,1,1.5,2,3,5)')
    b.add_argument('--ks', default='10', help='cut-offs, the first one monitored (default 10)')
    b.add_argument('--data-root', help='directory holding the datasets (default: the '
                   'checkpoints\')')
    b.add_argument('--dataset', help='training-free members only: the dataset (default '
                   'synthetic)')
    b.add_argument('--behaviors', help='training-free members only: behavior order')
    b.add_argument('--protocol', choices=sorted(PROTOCOLS), help='training-free members '
                   'only (default validation)')
    b.add_argument('--seed', type=int, default=0, help='training-free members only: the '
                   'split seed')
    b.add_argument('--device', default='cpu')
    b.add_argument('--threads', type=int, default=None, help='CPU threads for torch '
                   '(default: torch\'s choice)')
    b.add_argument('--overwrite', action='store_true', help='replace --out\'s metrics.json')
    b.set_defaults(func=cmd_blend)

    d = sub.add_parser('datasets', help='print per-behavior statistics (papers\' table 1)')
    d.add_argument('--data-root', help='directory holding the datasets')
    d.add_argument('--dataset', action='append', help='dataset name (repeatable); default: '
                   'every dataset found under --data-root, else synthetic')
    d.add_argument('--behaviors', help='comma-separated behavior order, target last')
    d.add_argument('--shortcuts', action='store_true', help='also print, for the test and '
                   'validation splits, the share of held-out items the user already had under '
                   'each auxiliary behavior in training')
    d.set_defaults(func=cmd_datasets)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    from .losses import DivergenceError
    try:
        return args.func(args)
    except UsageError as e:
        print(f'mbgraph {args.command}: error: {e}', file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f'mbgraph {args.command}: error: {e}', file=sys.stderr)
        return EXIT_DIVERGED
    except _anticipated() as e:
        text = ' '.join(str(e).split()) or type(e).__name__
        print(f'mbgraph {args.command}: error: {text}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
