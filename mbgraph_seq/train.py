r"""Train and evaluate one sequence model end to end with mbgraph's Trainer and evaluators.

:func:`train_sequence_model` builds the model from :data:`mbgraph_seq.models.SEQ_MODELS`,
trains it with :class:`mbgraph.training.Trainer` (early stopping on the validation NDCG@10 of a
:class:`~mbgraph.evaluation.SampledEvaluator`), and evaluates the test split twice: among
``num_negatives_eval`` sampled negatives (the protocol of the sequence papers) and by full
ranking (:class:`~mbgraph.evaluation.FullRankingEvaluator` on
:meth:`~mbgraph_seq.data.SequenceDataset.to_multiplex`), twice: ``test_full`` with the
training target items masked (the graph papers' protocol) and ``test_full_unseen`` with every
item the user met in training masked under any behavior (the held-out item excepted), the
full-ranking counterpart of the sampled protocol, whose negatives are never items the user
interacted with. They differ for a model that ranks the user's own earlier items first (HMAR's
history indicators do; docs/RESULTS.md): such items are never among the sampled candidates.
``test_novel`` (as for graph runs, :func:`mbgraph.pipeline.novel_test`) keeps only the test
events whose item the user had not met before, every training item masked.
``test_seconds`` is the time of all four test passes.

DPCPL runs in two stages on :meth:`~mbgraph_seq.data.SequenceDataset.pretrain_finetune_split`:
EBM pre-training with eq 4 on the early part of every history (validated on the fine-tuning
side's validation events), then prompt tuning of the frozen EBM on the recent part.

Example::

    from mbgraph_seq.data import SequenceDataset
    from mbgraph_seq.train import train_sequence_model
    ds = SequenceDataset.from_movielens('/path/to/ml-latest-small')
    metrics = train_sequence_model('sasrec', ds, epochs=50, out_dir='runs/sasrec')
    metrics['test']['ndcg@10'], metrics['test_full']['ndcg@10']
"""
from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch

from mbgraph import io as run_io
from mbgraph.distributed import is_main_process
from mbgraph.evaluation import FullRankingEvaluator, SampledEvaluator
from mbgraph.pipeline import novel_test
from mbgraph.training import Trainer, peak_memory_mb, resolve_device, seed_everything, write_metrics
from mbgraph.validation import OptionError, check_options, content_checksum, load_verified

from .data import SequenceDataset
from .models import SEQ_MODELS, SHARED_MODELS, sequence_model
from .models.dpcpl import DPCPL
from .models.ebm import EBM

log = logging.getLogger(__name__)

STAGES = ('both', 'pretrain', 'prompt')
_EBM_ARGS = set(inspect.signature(EBM.__init__).parameters) - {'self', 'dataset'}


def _count(model: torch.nn.Module) -> Dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    tuned = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {'tuned_parameters': tuned, 'total_parameters': total}


def _evaluate(model, dataset: SequenceDataset, num_negatives: int, seed: int, device,
              ks=(10, 20)) -> Dict[str, Any]:
    sampled = SampledEvaluator(dataset.split_pairs('test'), dataset.num_items,
                               dataset.history_pairs(), num_negatives=num_negatives, ks=ks,
                               seed=seed, split='test')
    graph = dataset.to_multiplex()
    full = FullRankingEvaluator(graph, 'test', ks=ks)
    unseen = FullRankingEvaluator(graph, 'test', ks=ks, mask_behaviors='all')
    out = {'test': sampled.evaluate(model, device), 'test_full': full.evaluate(model, device),
           'test_full_unseen': unseen.evaluate(model, device)}
    started = time.perf_counter()
    out['test_novel'] = novel_test(graph, model, device, ks)
    novel_seconds = time.perf_counter() - started    # its evaluator's construction included
    # every test pass of the run: the sampled one, both full rankings and the novel one
    out['test_seconds'] = (sampled.last_seconds + full.last_seconds + unseen.last_seconds
                           + novel_seconds)
    return out


def _fit(model, dataset: SequenceDataset, source, val_dataset: SequenceDataset, *, epochs: int,
         lr: float, weight_decay: float, patience: int, device, out_dir: Optional[Path],
         seed: int, progress: bool, num_negatives_eval: int, config: Dict[str, Any],
         eval_every: int = 1, amp: bool = False, monitor: str = 'ndcg@10',
         min_epochs: int = 0, resume: bool = False,
         allow_changes: Sequence[str] = ()) -> Dict[str, Any]:
    val = SampledEvaluator(val_dataset.split_pairs('val'), val_dataset.num_items,
                           val_dataset.history_pairs(), num_negatives=num_negatives_eval,
                           seed=seed, split='val', ks=_monitor_ks(monitor))
    trainer = Trainer(model, source, val, epochs=epochs, lr=lr, weight_decay=weight_decay,
                      monitor=monitor, patience=patience, eval_every=eval_every,
                      device=device, out_dir=out_dir, seed=seed, progress=progress,
                      config=config, amp=amp, min_epochs=min_epochs)
    summary = trainer.fit(resume=bool(resume) and out_dir is not None,
                          allow_changes=allow_changes)
    summary['history'] = trainer.history
    summary.update(_throughput(source, summary))
    return summary


def _throughput(source, summary: Dict[str, Any]) -> Dict[str, Any]:
    """Next-item targets and BPR triples (target x negative) an epoch trains, and seconds per
    million triples (median epoch), as graph runs record them; zero for a training-free
    model."""
    if source is None:
        return {'train_targets_per_epoch': 0, 'train_triples_per_epoch': {'all': 0},
                'seconds_per_million_triples': None}
    targets = int(source.targets_per_epoch)
    triples = targets * int(source.num_negatives)
    secs = summary.get('epoch_seconds')
    return {'train_targets_per_epoch': targets, 'train_triples_per_epoch': {'all': triples},
            'seconds_per_million_triples': secs / triples * 1e6 if secs and triples else None}


MONITORS = ('hr@5', 'ndcg@5', 'hr@10', 'ndcg@10', 'hr@20', 'ndcg@20')


def _monitor_ks(monitor: str) -> tuple:
    """The validation cut-offs: 10 and 20, and the monitored one."""
    if monitor not in MONITORS:
        raise OptionError('monitor', monitor, f'one of {", ".join(MONITORS)}')
    return tuple(sorted({10, 20, int(monitor.split('@')[1])}))


def train_sequence_model(name: str, dataset: SequenceDataset, *, epochs: int = 50,
                         stage: str = 'both', device: Union[str, torch.device] = 'cpu',
                         out_dir: Optional[Union[str, Path]] = None, seed: int = 0,
                         batch_size: int = 256, lr: float = 1e-3,
                         num_negatives_eval: int = 99, progress: bool = True,
                         patience: int = 10, eval_every: int = 1, weight_decay: float = 0.0,
                         num_negatives: int = 1, prefixes: Optional[Union[int, str]] = 'auto',
                         pretrain_epochs: Optional[int] = None, pretrain_ratio: float = 0.6,
                         pretrained: Optional[Union[str, Path]] = None, amp: bool = False,
                         tuning: str = 'prompt', monitor: str = 'ndcg@10',
                         min_epochs: int = 0, prompt_lr: Optional[float] = None,
                         resume: bool = False, allow_changes: Sequence[str] = (),
                         **model_kwargs) -> Dict[str, Any]:
    """Train ``name`` on ``dataset`` and return metrics shaped like mbgraph's ``metrics.json``.

    Args:
        name: a key of :data:`~mbgraph_seq.models.SEQ_MODELS`.
        dataset: the sequences (with validation and test events).
        epochs: maximum training epochs (prompt-tuning epochs for DPCPL).
        stage: DPCPL only: ``'both'`` (pre-train EBM, then prompt-tune), ``'pretrain'`` (only
            pre-train; the EBM is evaluated on the fine-tuning side's test events) or
            ``'prompt'`` (prompt-tune a backbone saved by an earlier ``'pretrain'`` run: from
            ``pretrained`` or ``out_dir/pretrain/ebm.pt``).
        device: ``'cpu'``, ``'cuda'``, ``'auto'``.
        out_dir: where the Trainer's logs/checkpoints and ``metrics.json`` go (None: nowhere).
        seed: seeds model initialisation, batches, evaluation negatives.
        batch_size: training samples per batch.
        lr, weight_decay: Adam's.
        num_negatives_eval: sampled negatives per held-out item (99: HMAR, MB-GMN; 100: DPCPL;
            999: PoMRec).
        progress: tqdm bars.
        patience: early-stopping patience (validation evaluations).
        eval_every: validate every this many epochs (DPCPL validates every epoch).
        num_negatives: training negatives per target.
        prefixes: training layout (see :class:`~mbgraph_seq.data.SequenceTrainSource`);
            ``'auto'`` uses the model's ``train_layout``.
        pretrain_epochs: DPCPL pre-training epochs (default ``epochs``).
        pretrain_ratio: DPCPL's share of each history used for pre-training (0.6).
        pretrained: DPCPL ``stage='prompt'``: the saved backbone.
        amp: train under ``torch.autocast`` (see :class:`mbgraph.training.Trainer`).
        tuning: DPCPL only: ``'prompt'`` (the paper's customized prompt tuning of a frozen
            backbone) or ``'full'`` (table 4's "fine-tuning" column: the pre-trained EBM itself,
            every parameter trainable, fine-tuned on the same target-behavior objective, eq 13's
            L_pred, without prompts).
        monitor: the validation metric early stopping and the kept epoch follow
            (``'ndcg@10'``; PoMRec's authors: ``'ndcg@5'``), sampled like the test.
        min_epochs: no early stop before this epoch (PoMRec's authors: 21).
        prompt_lr: DPCPL only: Adam's learning rate of the prompt-tuning stage (default
            ``lr``, which then is the pre-training's alone).
        resume: continue the run in ``out_dir`` from its ``checkpoint.pt`` (each stage's for
            DPCPL: ``pretrain/``, ``prompt/``, ``finetune/``; a stage that finished returns
            at once), as :meth:`mbgraph.training.Trainer.fit` does; ``allow_changes`` the
            options that may differ from the checkpoint's run.
        **model_kwargs: hyperparameters of the model (for DPCPL also the EBM's: ``dim``,
            ``num_layers``, ``num_blocks``, ``dropout``, ``sequence_mixer`` -- ``'attention'``
            pre-trains and tunes table 5's "w/o DS" backbone --, ...).

    Returns:
        ``{'model', 'test': {sampled 'hr@10', 'ndcg@10', ...}, 'test_full': {...}, 'val',
        'best_epoch', 'epochs_run', 'epoch_seconds', 'eval_seconds', 'peak_rss_mb',
        'train_targets_per_epoch', 'train_triples_per_epoch', 'seconds_per_million_triples',
        'tuned_parameters', 'total_parameters', 'protocol', ...}``; DPCPL adds ``'pretrain'``
        (its stage's summary) and ``'tuned_share'``.
    """
    if name not in SEQ_MODELS and name not in SHARED_MODELS:
        raise ValueError(f'unknown sequence model {name!r}; known: '
                         f'{sorted(SEQ_MODELS) + sorted(SHARED_MODELS)}')
    _monitor_ks(monitor)
    if prompt_lr is not None and name != 'dpcpl':
        raise ValueError('prompt_lr applies to DPCPL only')
    if prompt_lr is not None and not prompt_lr > 0:
        raise OptionError('prompt_lr', prompt_lr, 'a number > 0')
    if not (isinstance(min_epochs, int) and min_epochs >= 0):
        raise OptionError('min_epochs', min_epochs, 'an integer >= 0')
    if stage not in STAGES:
        raise ValueError(f'unknown stage {stage!r}; expected one of {STAGES}')
    if tuning not in ('prompt', 'full'):
        raise ValueError(f"unknown tuning {tuning!r}; expected 'prompt' or 'full'")
    if tuning != 'prompt' and name != 'dpcpl':
        raise ValueError(f"tuning={tuning!r} applies to DPCPL only")
    if stage != 'both' and name != 'dpcpl':
        raise ValueError(f"stage={stage!r} applies to DPCPL only (model {name!r} trains in one "
                         "stage)")
    check_options({'epochs': epochs, 'batch_size': batch_size, 'lr': lr, 'seed': seed,
                   'negatives': num_negatives_eval, 'patience': patience,
                   'eval_every': eval_every, 'weight_decay': weight_decay,
                   'dim': model_kwargs.get('dim'), 'layers': model_kwargs.get('num_layers')},
                  lambda k: {'negatives': 'num_negatives_eval', 'layers': 'num_layers'}.get(k, k))
    if num_negatives_eval >= dataset.num_items:
        raise OptionError('num_negatives_eval', num_negatives_eval,
                          f'fewer than the {dataset.num_items} items of the dataset '
                          '(each negative is an item the user never interacted with)')
    device = resolve_device(device)
    out_dir = Path(out_dir) if out_dir is not None else None
    config = {'model': name, 'dataset': dataset.name, 'epochs': epochs, 'seed': seed,
              'batch_size': batch_size, 'lr': lr, 'stage': stage, 'monitor': monitor,
              'min_epochs': min_epochs, 'weight_decay': weight_decay,
              'data_options': dict(getattr(dataset, 'options', {})), **model_kwargs}
    if name == 'dpcpl':
        config['tuning'] = tuning
        config['prompt_lr'] = lr if prompt_lr is None else prompt_lr
    protocol = {'sampled_negatives': num_negatives_eval, 'full_ranking': 'target training items '
                'masked', 'full_ranking_unseen': 'every training item of the user masked '
                '(any behavior), the held-out item excepted',
                'split': 'leave-one-out on the last two target events',
                'max_len': dataset.max_len}

    def layout(model):
        return model.train_layout if prefixes == 'auto' else prefixes

    if name != 'dpcpl':
        seed_everything(seed)
        model = sequence_model(name)(dataset, **model_kwargs)
        # a training-free model (mostpop) has no batches: the Trainer only validates it
        source = (None if not getattr(model, 'trainable', True) else
                  dataset.train_source(batch_size, num_negatives, seed, prefixes=layout(model),
                                       target_only=model.target_only))
        summary = _fit(model, dataset, source, dataset, epochs=epochs, lr=lr,
                       eval_every=eval_every, weight_decay=weight_decay, patience=patience,
                       device=device, out_dir=out_dir, seed=seed, progress=progress,
                       num_negatives_eval=num_negatives_eval, config=config, amp=amp,
                       monitor=monitor, min_epochs=min_epochs, resume=resume,
                       allow_changes=allow_changes)
        metrics = {'model': name, **_evaluate(model, dataset, num_negatives_eval, seed, device),
                   'val': summary['best_val'], **_summary_fields(summary), **_count(model),
                   'protocol': protocol}
    else:
        metrics = _train_dpcpl(dataset, epochs=epochs, stage=stage, device=device,
                               out_dir=out_dir, seed=seed, batch_size=batch_size, lr=lr,
                               weight_decay=weight_decay, patience=patience,
                               num_negatives=num_negatives, prefixes=prefixes,
                               num_negatives_eval=num_negatives_eval, progress=progress,
                               pretrain_epochs=pretrain_epochs, pretrain_ratio=pretrain_ratio,
                               pretrained=pretrained, config=config, amp=amp, tuning=tuning,
                               monitor=monitor, min_epochs=min_epochs,
                               prompt_lr=lr if prompt_lr is None else prompt_lr,
                               resume=resume, allow_changes=allow_changes, **model_kwargs)
        metrics['protocol'] = {**protocol, 'pretrain_ratio': pretrain_ratio}
    metrics['peak_rss_mb'] = peak_memory_mb(device)['peak_rss_mb']
    metrics['config'] = config
    if out_dir is not None and is_main_process():
        write_metrics(out_dir / 'metrics.json', metrics)
    return metrics


def _summary_fields(summary: Dict[str, Any]) -> Dict[str, Any]:
    out = {k: summary[k] for k in ('best_epoch', 'epochs_run', 'epoch_seconds', 'eval_seconds')}
    out.update({k: summary.get(k) for k in ('train_targets_per_epoch', 'train_triples_per_epoch',
                                            'seconds_per_million_triples')})
    return out


def _train_dpcpl(dataset: SequenceDataset, *, epochs, stage, device, out_dir, seed, batch_size,
                 lr, weight_decay, patience, num_negatives, prefixes, num_negatives_eval,
                 progress, pretrain_epochs, pretrain_ratio, pretrained, config, amp=False,
                 tuning='prompt', monitor='ndcg@10', min_epochs=0, prompt_lr=None,
                 resume=False, allow_changes=(), **model_kwargs) -> Dict[str, Any]:
    prompt_lr = lr if prompt_lr is None else prompt_lr
    pre, fine = dataset.pretrain_finetune_split(pretrain_ratio)
    ebm_kwargs = {k: v for k, v in model_kwargs.items() if k in _EBM_ARGS}
    prompt_kwargs = {k: v for k, v in model_kwargs.items() if k not in _EBM_ARGS}
    # the backbone is pre-trained with the prompt slots it will be tuned with (same length)
    ebm_kwargs.setdefault('prompt_slots', prompt_kwargs.get('num_tokens') or 8)
    ebm_path = (Path(pretrained) if pretrained is not None else
                (out_dir / 'pretrain' / 'ebm.pt' if out_dir is not None else None))
    seed_everything(seed)
    backbone = EBM(fine, **ebm_kwargs)
    metrics: Dict[str, Any] = {'model': 'dpcpl'}
    if stage in ('both', 'pretrain'):
        src = pre.train_source(batch_size, num_negatives, seed,
                               prefixes=backbone.train_layout if prefixes == 'auto' else prefixes)
        t0 = time.perf_counter()
        summary = _fit(backbone, pre, src, fine, epochs=pretrain_epochs or epochs, lr=lr,
                       weight_decay=weight_decay, patience=patience, device=device,
                       out_dir=None if out_dir is None else out_dir / 'pretrain', seed=seed,
                       progress=progress, num_negatives_eval=num_negatives_eval,
                       config={**config, 'stage': 'pretrain'}, amp=amp, monitor=monitor,
                       min_epochs=min_epochs, resume=resume, allow_changes=allow_changes)
        pre_metrics = {'val': summary['best_val'], **_summary_fields(summary),
                       'seconds': time.perf_counter() - t0, **_count(backbone)}
        if ebm_path is not None and is_main_process():
            saved = {'model': backbone.state_dict(), 'ebm_kwargs': ebm_kwargs,
                     'pretrain': pre_metrics}
            saved['checksum'] = content_checksum(saved)
            run_io.torch_save(saved, ebm_path)
        if stage == 'pretrain':
            metrics.update(_evaluate(backbone, fine, num_negatives_eval, seed, device))
            metrics.update({'val': summary['best_val'], **_summary_fields(summary),
                            **_count(backbone)})
            metrics['pretrain'] = pre_metrics
            return metrics
        # the pre-trained backbone alone, on the same test events as the prompt-tuned model
        metrics['pretrain'] = {**pre_metrics,
                               **_evaluate(backbone, fine, num_negatives_eval, seed, device)}
    else:
        if ebm_path is None or not ebm_path.exists():
            raise FileNotFoundError(f"stage='prompt' needs a pre-trained EBM: {ebm_path} does not "
                                    "exist (run stage='pretrain' with the same out_dir, or pass "
                                    "pretrained=PATH)")
        state = load_verified(ebm_path)     # a truncated or foreign file: a named error
        if state.get('ebm_kwargs', {}) != ebm_kwargs:
            raise ValueError(f'the saved EBM was built with {state.get("ebm_kwargs")}, not '
                             f'{ebm_kwargs}: pass the same EBM hyperparameters')
        backbone.load_state_dict(state['model'])
        # the loaded backbone alone, on the same test events as the tuned model
        metrics['pretrain'] = {**state.get('pretrain', {}), 'path': str(ebm_path),
                               **_evaluate(backbone.to(device), fine, num_negatives_eval, seed,
                                           device)}
    backbone = backbone.to(device)
    if tuning == 'full':
        return _full_fine_tuning(backbone, fine, metrics, batch_size=batch_size, lr=prompt_lr,
                                 weight_decay=weight_decay, patience=patience, device=device,
                                 out_dir=out_dir, seed=seed, progress=progress,
                                 num_negatives=num_negatives, prefixes=prefixes,
                                 num_negatives_eval=num_negatives_eval, epochs=epochs,
                                 config=config, amp=amp, monitor=monitor,
                                 min_epochs=min_epochs, resume=resume,
                                 allow_changes=allow_changes)
    # the prompt generator's initialisation from the seed alone: the same whether the backbone
    # was pre-trained in this process (stage 'both') or loaded (stage 'prompt')
    seed_everything(seed)
    model = DPCPL(fine, backbone=backbone, **prompt_kwargs)
    src = fine.train_source(batch_size, num_negatives, seed + 1,
                            prefixes=model.train_layout if prefixes == 'auto' else prefixes,
                            target_only=model.target_only)
    if model.prompt_init == 'backbone':
        # eq 9's W_{l,c} rescaled on the first batch of epoch 1 (DPCPL.calibrate_prompts); the
        # batches are drawn from (seed, epoch) alone, so reading it changes no later batch
        metrics['prompt_scale'] = model.to(device).calibrate_prompts(
            next(iter(src.batches(1))).to(device))
    summary = _fit(model, fine, src, fine, epochs=epochs, lr=prompt_lr,
                   weight_decay=weight_decay, patience=patience, device=device,
                   out_dir=None if out_dir is None else out_dir / 'prompt', seed=seed,
                   progress=progress, num_negatives_eval=num_negatives_eval,
                   config={**config, 'stage': 'prompt'}, amp=amp, monitor=monitor,
                   min_epochs=min_epochs, resume=resume, allow_changes=allow_changes)
    counts = model.parameter_counts()
    metrics.update(_evaluate(model, fine, num_negatives_eval, seed, device))
    metrics.update({'val': summary['best_val'], **_summary_fields(summary),
                    'tuned_parameters': counts['tuned'], 'total_parameters': counts['total'],
                    'backbone_parameters': counts['backbone'],
                    'tuned_share': counts['tuned_share'], 'tuning': 'prompt'})
    return metrics


def _full_fine_tuning(backbone: EBM, fine: SequenceDataset, metrics: Dict[str, Any], *,
                      batch_size, lr, weight_decay, patience, device, out_dir, seed, progress,
                      num_negatives, prefixes, num_negatives_eval, epochs, config,
                      amp, monitor='ndcg@10', min_epochs=0, resume=False,
                      allow_changes=()) -> Dict[str, Any]:
    """DPCPL table 4's "fine-tuning": every parameter of the pre-trained EBM trained on the
    fine-tuning side's target-behavior events (the objective prompt tuning uses)."""
    for p in backbone.parameters():
        p.requires_grad_(True)
    src = fine.train_source(batch_size, num_negatives, seed + 1,
                            prefixes=backbone.train_layout if prefixes == 'auto' else prefixes,
                            target_only=True)
    summary = _fit(backbone, fine, src, fine, epochs=epochs, lr=lr, weight_decay=weight_decay,
                   patience=patience, device=device,
                   out_dir=None if out_dir is None else out_dir / 'finetune', seed=seed,
                   progress=progress, num_negatives_eval=num_negatives_eval,
                   config={**config, 'stage': 'finetune'}, amp=amp, monitor=monitor,
                   min_epochs=min_epochs, resume=resume, allow_changes=allow_changes)
    total = sum(p.numel() for p in backbone.parameters())
    metrics.update(_evaluate(backbone, fine, num_negatives_eval, seed, device))
    metrics.update({'val': summary['best_val'], **_summary_fields(summary), 'tuning': 'full',
                    'tuned_parameters': total, 'total_parameters': total,
                    'backbone_parameters': total, 'tuned_share': 1.0})
    return metrics


__all__ = ['train_sequence_model', 'STAGES']
