r"""Train and evaluate one graph model end to end: :func:`train_graph_model`.

The graph side's twin of :func:`mbgraph_seq.train.train_sequence_model`, and what
``mbgraph train`` runs for a graph model: build the model by name
(:func:`mbgraph.models.build_model`, under its default reading when it has named readings),
take its batch source and schedule, train it with :class:`~mbgraph.training.Trainer` (early
stopping on the validation NDCG at the first cut-off, or a fixed number of epochs under
``protocol='paper'``), evaluate the test split by full ranking
(:class:`~mbgraph.evaluation.FullRankingEvaluator`) and return, and write to
``out_dir/metrics.json``, the metrics the command line writes.

>>> from mbgraph import load_dataset, train_graph_model
>>> data = load_dataset('synthetic', num_users=60, num_items=40)
>>> metrics = train_graph_model('lightgcn', data, epochs=1, embedding_dim=8, progress=False)
>>> sorted(metrics['test'])
['hr@10', 'ndcg@10']
>>> metrics['epochs_run'], metrics['protocol']
(1, 'validation')
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch_geometric.data import HeteroData

from .data.multiplex import merge_validation, split_edge_index
from .data.sampling import DEFAULT_BATCH_SIZE
from .data.shortcuts import shortcut_shares
from .distributed import is_main_process, rank_and_world_size
from .evaluation import FullRankingEvaluator
from .io import RunLock
from .models import build_model
from .models.readings import DEFAULT_READING, READINGS, readings_of
from .training import Trainer, environment, resolve_device, write_metrics
from .validation import check_options, clear_run_files, data_fingerprint, parse_ks

#: what ``protocol`` selects and what metrics.json says of it
PROTOCOLS = {
    'validation': 'full ranking of all items, training target items masked; one target '
                  'interaction per user held out for validation, early stopping and the '
                  'best validation epoch; test metrics of that epoch',
    'paper': 'full ranking of all items, training target items masked; every training '
             'interaction trains (no validation split), a fixed number of epochs; test '
             'metrics of the last epoch',
}

#: the plain defaults when neither the caller nor the model's reading gives one
DEFAULT_LR = 1e-3
DEFAULT_EPOCHS = 100


class RunSetupError(ValueError):
    """What was asked for cannot be set up: the model with those options, its batch source or
    the trainer's settings (the command line reports it on one line)."""


def schedule(model, *, lr: Optional[float] = None, epochs: Optional[int] = None,
             lr_decay: Optional[float] = None, lr_decay_steps: Optional[int] = None,
             batch_size: Optional[int] = None, protocol: str = 'validation') -> Dict[str, Any]:
    """lr, decay, epochs and batch size: the caller's, else the model's reading's
    (``model.schedule``, ``model.batches``), else the plain defaults (:data:`DEFAULT_LR`,
    :data:`DEFAULT_EPOCHS`, :data:`~mbgraph.data.sampling.DEFAULT_BATCH_SIZE`)."""
    reading = getattr(model, 'schedule', None) or {}
    batches = getattr(model, 'batches', None) or {}
    out = {'lr': lr if lr is not None else reading.get('lr', DEFAULT_LR),
           'epochs': epochs if epochs is not None else
           (reading.get('epochs', DEFAULT_EPOCHS) if protocol == 'paper' else DEFAULT_EPOCHS),
           'lr_decay': lr_decay if lr_decay is not None else reading.get('lr_decay')}
    steps = lr_decay_steps
    if steps is None and lr_decay is None and reading.get('lr_decay_steps') == 'per_epoch':
        steps = 'per_epoch'
    out['lr_decay_steps'] = steps
    out['batch_size'] = batch_size or batches.get('users_per_batch') or \
        batches.get('batch_size') or DEFAULT_BATCH_SIZE
    out['batch_kind'] = batches.get('kind', 'pairs')
    return out


def throughput(sampler, summary: Dict[str, Any]) -> Dict[str, Any]:
    """Training triples per epoch (per behavior and in all) and seconds per million."""
    per = sampler.triples_per_epoch(1) if hasattr(sampler, 'triples_per_epoch') else None
    if not per:
        return {}
    total = int(sum(per.values()))
    secs = summary.get('epoch_seconds')
    return {'train_triples_per_epoch': {**per, 'all': total},
            'seconds_per_million_triples': (secs / total * 1e6) if secs and total else None}


def novel_test(data: HeteroData, model, device, ks: Sequence[int]) -> Dict[str, Any]:
    """The test metrics over the pairs whose item the user met under no behavior in
    training, with every behavior's training items masked (``FullRankingEvaluator(...,
    mask_behaviors='all', novel_only=True)``), and ``pairs``: how many such pairs there are
    (``{'pairs': 0}`` when none)."""
    try:
        evaluator = FullRankingEvaluator(data, 'test', ks=ks, mask_behaviors='all',
                                         novel_only=True)
    except ValueError:
        return {'pairs': 0}
    return {**evaluator.evaluate(model, device), 'pairs': evaluator.num_pairs}


def _has_split(data: HeteroData, split: str) -> bool:
    ei = split_edge_index(data, split)
    return ei is not None and ei.numel() > 0


#: the embedding tables every graph model keeps (``GraphRecommender``); what --init-from copies
TABLES = ('user_emb.weight', 'item_emb.weight')


def init_tables_from(model: torch.nn.Module, path: Union[str, Path],
                     data: HeteroData) -> Dict[str, Any]:
    """Copy the user and item embedding tables of the checkpoint at ``path`` into ``model``.

    The checkpoint must come from ``mbgraph train`` on the same data (its recorded data
    fingerprint equals ``data``'s, so row ``u`` is the same user in both) and hold tables of
    ``model``'s shape; anything else raises :class:`RunSetupError` naming the problem. Only
    the tables are copied (the other run's encoder, head and optimizer state are not).

    Returns ``{'path', 'sha256', 'model'}``, what the run's configuration records."""
    from .io import sha256_file
    from .validation import CorruptCheckpointError, load_verified
    path = Path(path)
    if not path.is_file():
        raise RunSetupError(f'--init-from {path}: ' + ('no such file' if not path.exists() else
                            'expected a checkpoint file (OUT/checkpoint.pt or OUT/best.pt)'))
    try:
        state = load_verified(path)
    except CorruptCheckpointError as e:
        raise RunSetupError(f'--init-from: {e}') from None
    config = state.get('config') or {}
    weights = state.get('model') or {}
    if 'data_fingerprint' not in config:
        raise RunSetupError(f'--init-from {path}: the checkpoint records no data fingerprint, '
                            'so it cannot be checked to hold the same users and items')
    if config['data_fingerprint'] != data_fingerprint(data):
        raise RunSetupError(
            f'--init-from {path}: that run trained on other data ({config.get("dataset")!r}, '
            f'behaviors {config.get("behaviors")}, protocol {config.get("protocol")!r}); its '
            'rows would be other users and items. Pre-train on the same dataset, behaviors, '
            'seed and protocol')
    own = model.state_dict()
    for name in TABLES:
        if name not in weights:
            raise RunSetupError(f'--init-from {path}: the checkpoint has no {name} (model '
                                f'{config.get("model")!r}); nothing to start from')
        if name not in own:
            raise RunSetupError(f'--init-from: this model ({type(model).__name__}) has no '
                                f'{name} to start')
        if weights[name].shape != own[name].shape:
            raise RunSetupError(f'--init-from {path}: {name} is {tuple(weights[name].shape)}, '
                                f'this model\'s is {tuple(own[name].shape)} (another '
                                'embedding_dim?)')
    with torch.no_grad():
        for name in TABLES:
            own[name].copy_(weights[name])
    return {'path': str(path), 'sha256': sha256_file(path), 'model': config.get('model')}


def train_graph_model(name: str, data: HeteroData, *, epochs: Optional[int] = None,
                      lr: Optional[float] = None, lr_decay: Optional[float] = None,
                      lr_decay_steps: Optional[int] = None, batch_size: Optional[int] = None,
                      protocol: str = 'validation', reading: Optional[str] = None,
                      ks: Union[int, str, Sequence[int]] = (10,), patience: int = 10,
                      eval_every: int = 1, device: Union[str, torch.device] = 'cpu',
                      out_dir: Optional[Union[str, Path]] = None, seed: int = 0,
                      progress: bool = True, amp: bool = False,
                      stop_at: Optional[Tuple[str, float]] = None, resume: bool = False,
                      allow_changes: Sequence[str] = (), overwrite: bool = False,
                      dataset: Optional[str] = None, data_root: Optional[str] = None,
                      hyperparameters: Optional[Mapping[str, Any]] = None,
                      init_from: Optional[Union[str, Path]] = None,
                      **model_kwargs) -> Optional[Dict[str, Any]]:
    """Train graph model ``name`` on ``data`` and return its ``metrics.json`` content.

    Args:
        name: any name :func:`mbgraph.models.build_model` knows (``'lightgcn'``, ``'copf'``,
            ``'mbcgcn+dfme'``, ``'hybrid:pkef'``, ``'mostpop'``, ...).
        data: the multiplex graph (:func:`mbgraph.data.load_dataset`). Under
            ``protocol='paper'`` its validation pairs are merged into training, in place
            (:func:`mbgraph.data.multiplex.merge_validation`).
        epochs: training epochs (default 100; under ``protocol='paper'`` the reading's, e.g.
            200 for COPF).
        lr, lr_decay, lr_decay_steps: Adam's learning rate, its per-epoch factor and, for a
            staircase, the steps between decays (default: the model reading's, else 1e-3 and
            no decay).
        batch_size: BPR triples per behavior and step, or users per step for user batches
            (default: the reading's, else 2048).
        protocol: a key of :data:`PROTOCOLS`.
        reading: for the models with named readings (:mod:`mbgraph.models.readings`),
            ``'code'`` (default) or ``'paper'``.
        ks: cut-offs (the first one is monitored), e.g. ``(10, 20)`` or ``'10,20'``.
        patience, eval_every: early stopping after ``patience`` evaluations without
            improvement; validate every ``eval_every`` epochs.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'auto'`` or a :class:`torch.device`.
        out_dir: where ``log.jsonl``, ``checkpoint.pt``, ``best.pt`` and ``metrics.json`` go
            (None: nowhere).
        seed: seeds the model's initialisation and the batches.
        progress: tqdm bars.
        amp: mixed precision (see :class:`~mbgraph.training.Trainer`).
        stop_at: ``(metric, value)``, e.g. ``('hr@10', 0.1051)``: stop after the first
            evaluation that reaches it (time to accuracy).
        resume, allow_changes: continue from ``out_dir/checkpoint.pt``; the options that may
            differ from the checkpoint's run (see :meth:`~mbgraph.training.Trainer.fit`).
        overwrite: remove an earlier run's files from ``out_dir`` first.
        dataset, data_root: recorded in the configuration (``mbgraph evaluate`` reloads the
            data from them); default ``data.name`` and None.
        init_from: a checkpoint of another graph-model run on the same data (its
            ``checkpoint.pt`` or ``best.pt``) whose user and item tables start this model
            (:func:`init_tables_from`): pre-training, as MB-CGCN's README starts from
            embeddings trained on view. Recorded in the configuration with the file's checksum.
        hyperparameters, **model_kwargs: hyperparameters of the model (``embedding_dim``,
            ``num_layers``, ``reg``, ``encoder.*``, ``head.*``, ...); ``hyperparameters`` is
            the same as a mapping, for names that are also this function's (the command
            line's ``--set`` passes every key there).

    Returns:
        ``{'model', 'dataset', 'test', 'val', 'best_epoch', 'epochs_run', 'epoch_seconds',
        'eval_seconds', 'protocol', 'reading', 'config', 'environment', ...}``, and under
        ``protocol='paper'`` the watched ``'test_curve'``; under ``torchrun`` the processes
        but the main one train and evaluate their shard and return None.

    Raises:
        RunSetupError: the model, its batch source or the trainer cannot be set up as asked.
        mbgraph.validation.OptionError: an option out of range.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f'unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}')
    check_options({'epochs': epochs, 'batch_size': batch_size, 'lr': lr, 'lr_decay': lr_decay,
                   'lr_decay_steps': lr_decay_steps, 'patience': patience,
                   'eval_every': eval_every, 'seed': seed})
    ks = parse_ks(ks)
    device = resolve_device(device)
    if dataset is None:
        dataset = getattr(data, 'name', None)
    if protocol == 'paper':
        merge_validation(data)
    kwargs = {**(hyperparameters or {}), **model_kwargs}
    if readings_of(name):
        kwargs['reading'] = reading or kwargs.get('reading', DEFAULT_READING)
    elif reading is not None:
        raise RunSetupError(f'reading={reading!r} applies to the models with named readings '
                            f'({", ".join(sorted(READINGS))}), not {name!r}')
    torch.manual_seed(seed)
    try:
        model = build_model(name, data, **kwargs)
    except (TypeError, ValueError) as e:
        raise RunSetupError(f'model {name!r} with options {kwargs}: {e}') from e
    init = init_tables_from(model, init_from, data) if init_from is not None else None
    plan = schedule(model, lr=lr, epochs=epochs, lr_decay=lr_decay,
                    lr_decay_steps=lr_decay_steps, batch_size=batch_size, protocol=protocol)
    out = Path(out_dir) if out_dir is not None else None
    try:
        sampler = model.batch_source(data, batch_size=plan['batch_size'], seed=seed)
    except ValueError as e:
        raise RunSetupError(str(e)) from e
    if plan['lr_decay_steps'] == 'per_epoch':   # the code: users per epoch // batch
        plan['lr_decay_steps'] = max(1, sampler.users_per_epoch // sampler.users_per_batch) \
            if hasattr(sampler, 'users_per_epoch') else None
    config = {'model': name, 'dataset': dataset, 'data_root': data_root,
              'behaviors': data.behaviors, 'model_kwargs': kwargs, 'seed': seed,
              'epochs': plan['epochs'], 'batch_size': plan['batch_size'],
              'batch_kind': plan['batch_kind'], 'lr': plan['lr'], 'lr_decay': plan['lr_decay'],
              'lr_decay_steps': plan['lr_decay_steps'], 'patience': patience, 'ks': ks,
              'protocol': protocol, 'device': str(device),
              'data_fingerprint': data_fingerprint(data)}
    if init is not None:
        config['init_from'] = init
    paper = protocol == 'paper'
    test_eval = FullRankingEvaluator(data, 'test', ks=ks)
    val = FullRankingEvaluator(data, 'val', ks=ks) if not paper and _has_split(data, 'val') \
        else None
    try:
        trainer = Trainer(model, sampler, val, epochs=plan['epochs'], lr=plan['lr'],
                          lr_decay=plan['lr_decay'], lr_decay_steps=plan['lr_decay_steps'],
                          monitor=f'ndcg@{ks[0]}', patience=patience, eval_every=eval_every,
                          device=device, out_dir=out, seed=seed, progress=progress,
                          config=config, amp=amp, watch=test_eval if paper else None,
                          stop_at=stop_at)
    except ValueError as e:
        raise RunSetupError(str(e)) from e
    # the main process holds the lock from clearing an old run to the end of training
    locked = out is not None and is_main_process()
    with RunLock(out) if locked else contextlib.nullcontext():
        if out is not None and (overwrite or (resume and not (out / 'checkpoint.pt').is_file())):
            clear_run_files(out, '--overwrite' if overwrite else
                            '--resume found no checkpoint.pt to resume from')
        summary = trainer.fit(resume=resume, allow_changes=allow_changes)
    test = test_eval.evaluate(model, device)     # split over ranks under torchrun
    # the test pairs whose item the user never met in training, every training item masked:
    # how the model ranks what the user has not touched (the history shortcut taken away)
    novel = novel_test(data, model, device, ks)
    if not is_main_process():
        return None
    metrics = {'model': name, 'dataset': dataset, 'test': test, 'test_novel': novel,
               'val': summary.pop('best_val'), **summary,
               'eval_seconds': test_eval.last_seconds, 'protocol': protocol,
               'protocol_description': PROTOCOLS[protocol],
               'reading': getattr(model, 'reading', None),
               'test_users': int(test_eval.users.numel()),
               **throughput(sampler, summary),
               'config': config, 'environment': environment(), 'date': time.strftime('%Y-%m-%d'),
               'shortcuts': shortcut_shares(data), 'world_size': rank_and_world_size()[1],
               'amp': bool(amp)}
    if paper:
        curve = [{'epoch': r['epoch'], **r['watch']} for r in trainer.history if 'watch' in r]
        if not curve or curve[-1]['epoch'] != trainer.epoch:
            curve.append({'epoch': trainer.epoch, **test})
        best = max(curve, key=lambda r: r[f'hr@{ks[0]}'])
        metrics['test_curve'] = curve
        metrics['test_best_of_evaluated'] = {
            **best, 'note': 'OPTIMISTIC, not the result: the best test metrics over the '
                            'evaluated epochs, chosen on the test set (what the papers\' '
                            'code reports)'}
    if out is not None:
        write_metrics(out / 'metrics.json', metrics)
    return metrics


__all__ = ['train_graph_model', 'PROTOCOLS', 'RunSetupError', 'schedule', 'throughput']
