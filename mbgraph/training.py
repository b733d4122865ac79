r"""One trainer for every mbgraph model, graph or sequence.

The trainer knows nothing about the model it trains. It needs

* a **model** (``torch.nn.Module``) with ``loss(batch) -> Tensor`` (or ``(Tensor, {name:
  value})`` to log the loss's parts) and ``score(users, items=None) -> Tensor`` (used by the
  evaluators of :mod:`mbgraph.evaluation`);
* a **batch source** with ``batches(epoch, rank=0, world_size=1)`` yielding batches (tensors,
  or dicts/lists/tuples of tensors) and ``len()`` = batches per epoch, drawing an epoch from
  ``(seed, epoch)`` alone (e.g. :class:`mbgraph.data.sampling.BPRSampler`);
* optionally a validation **evaluator** with ``evaluate(model) -> {metric: value}``.

It runs epochs with a tqdm progress bar, stops early on the validation metric, keeps the best
weights, writes a JSON-lines log and checkpoints, and resumes from a checkpoint so that the
resumed run continues exactly as the uninterrupted one would have.

Inside a ``torch.distributed`` process group (``torchrun``; see :mod:`mbgraph.distributed`)
the same Trainer trains data-parallel: the model is wrapped in ``DistributedDataParallel``,
each rank takes its shard of every global batch, evaluation is split over ranks and reduced,
and only rank 0 writes files or shows progress bars. ``amp=True`` trains under
``torch.autocast`` (float16 with a gradient scaler on CUDA, bfloat16 on CPU); the sparse
propagation products stay in float32 (see :meth:`mbgraph.data.adjacency.SparseOperator.matmul`).

Example::

    >>> from mbgraph.data.datasets import synthetic
    >>> from mbgraph.data.sampling import BPRSampler
    >>> from mbgraph.evaluation import FullRankingEvaluator
    >>> from mbgraph.models import LightGCN
    >>> data = synthetic(num_users=200, num_items=100)
    >>> model = LightGCN(data)
    >>> trainer = Trainer(model, BPRSampler(data, model.train_behaviors),
    ...                   FullRankingEvaluator(data, 'val'), epochs=2, progress=False)
    >>> result = trainer.fit()
    >>> sorted(result)[:3]
    ['best_epoch', 'best_val', 'epoch_seconds']
"""
from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import distributed as dist_utils
from . import io as run_io
from . import validation
from .losses import DivergenceError

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'auto'`` -> a device, with a clear error when
    CUDA is asked for and absent."""
    if device is None or device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'device {device!r} requested but CUDA is not available here '
                         '(torch.cuda.is_available() is False); use --device cpu')
    return dev


def move_to(batch: Any, device: torch.device) -> Any:
    """Move tensors inside (nested) dicts, lists and tuples to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    if hasattr(batch, 'to'):
        return batch.to(device)
    return batch


class _LossForward(torch.nn.Module):
    """``forward(batch) = model.loss(batch)``: DistributedDataParallel synchronises gradients
    of what its ``forward`` computed, and the model contract's entry point is ``loss``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype ``--amp`` uses: float16 on CUDA, bfloat16 on CPU."""
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def peak_memory_mb(device: torch.device) -> Dict[str, float]:
    """Peak memory so far: the process's maximum resident set size, plus the peak CUDA
    allocation when running on a GPU."""
    out = {'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device.type == 'cuda':
        out['peak_cuda_mb'] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def environment() -> Dict[str, Any]:
    """Versions and machine facts recorded with every run."""
    import torch_geometric
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                                text=True, cwd=Path(__file__).resolve().parent,
                                timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        'python': sys.version.split()[0], 'torch': torch.__version__,
        'torch_geometric': torch_geometric.__version__, 'cpu': cpu,
        'cpu_count': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
        'cuda': torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        'git_commit': commit,
    }


class Trainer:
    """Train any mbgraph model (see the module docstring for the contract).

    A model without trainable parameters (the training-free baselines of
    :mod:`mbgraph.models.baselines`) runs zero epochs: :meth:`fit` evaluates the validation
    split once and writes ``best.pt``; its batch source may be None.

    Args:
        model: the model; moved to ``device``.
        batches: the batch source.
        val_evaluator: evaluator for early stopping (``None``: train all epochs, keep the last).
        epochs: maximum number of epochs.
        lr, weight_decay: Adam's learning rate and weight decay (ignored if ``optimizer``).
        optimizer: a ready optimizer over ``model.parameters()`` (default Adam).
        lr_decay: multiply the learning rate by this factor after every epoch (the papers'
            code decays by 0.96); ``None`` keeps it constant.
        lr_decay_steps: decay in a staircase every this many optimizer steps instead of every
            epoch (TensorFlow's ``exponential_decay(staircase=True)``, as the authors' code).
        watch: an evaluator run after epoch 1 and every ``eval_every`` epochs whose metrics
            are only logged (``record['watch']``), never used to select or stop: the
            paper protocol watches the test split this way, and its result is the last
            epoch's test.
        stop_at: ``(metric, value)``: stop after the first evaluation at which ``metric``
            reaches ``value`` (the validation metric, or the watched one without a
            validation evaluator), the time-to-accuracy benchmark; :attr:`reached` then
            holds the epoch, the training seconds and the triples seen until then.
        monitor: validation metric to maximise (e.g. ``'ndcg@10'``).
        patience: stop after this many evaluations without improvement.
        min_epochs: no early stop before this epoch (PoMRec's authors: none before epoch 21);
            the best validation epoch is still the one kept.
        eval_every: evaluate every this many epochs.
        device: ``'cpu'``, ``'cuda'``, ``'auto'``.
        out_dir: where ``log.jsonl``, ``checkpoint.pt`` (last epoch) and ``best.pt`` go.
        seed: seeds Python, NumPy, torch before training.
        progress: show tqdm progress bars.
        max_grad_norm: clip gradients to this norm (``None``: no clipping).
        config: JSON-able description of the run, stored in checkpoints (the CLI stores
            what it needs to rebuild the model).
        amp: train under ``torch.autocast`` (float16 + ``GradScaler`` on CUDA, bfloat16 on CPU).
        distributed: wrap the model in ``DistributedDataParallel`` and shard batches and
            evaluation over the ranks of the current process group; ``None`` (default): do so
            when a process group of more than one rank is initialised.
        find_unused_parameters: handed to ``DistributedDataParallel`` (models whose loss does
            not touch every parameter in every step need it; it costs a graph traversal).
        sync_every: on CUDA, read the running loss back to the host (and check it is finite)
            every this many steps instead of every step, so the steps in between queue kernels
            without waiting for the device.
        loss_bound: a mean loss term above this (in absolute value) counts as diverged, like a
            NaN or infinite one: :class:`~mbgraph.losses.DivergenceError`.

    Every option is checked by :func:`mbgraph.validation.check_options` first
    (:class:`~mbgraph.validation.OptionError` names the bad one). Checkpoints carry the run's
    :func:`~mbgraph.validation.run_fingerprint` and a content checksum: resuming from another
    run's checkpoint, or a corrupt one, is refused (see :meth:`load_checkpoint`).
    """

    def __init__(self, model: torch.nn.Module, batches, val_evaluator=None, *,
                 epochs: int = 100, lr: float = 1e-3, weight_decay: float = 0.0,
                 optimizer: Optional[torch.optim.Optimizer] = None,
                 lr_decay: Optional[float] = None, monitor: str = 'ndcg@10',
                 patience: int = 10, eval_every: int = 1, device='cpu',
                 out_dir: Optional[Union[str, Path]] = None, seed: int = 0,
                 progress: bool = True, max_grad_norm: Optional[float] = None,
                 config: Optional[Dict[str, Any]] = None, amp: bool = False,
                 distributed: Optional[bool] = None, find_unused_parameters: bool = True,
                 sync_every: int = 10, loss_bound: float = 1e8,
                 lr_decay_steps: Optional[int] = None, watch=None,
                 stop_at: Optional[Tuple[str, float]] = None, min_epochs: int = 0):
        validation.check_options({'epochs': epochs, 'lr': lr, 'lr_decay': lr_decay,
                                  'weight_decay': weight_decay, 'patience': patience,
                                  'eval_every': eval_every, 'seed': seed,
                                  'max_grad_norm': max_grad_norm, 'sync_every': sync_every,
                                  'loss_bound': loss_bound})
        self.loss_bound = float(loss_bound)
        self.device = resolve_device(device)
        self.seed = int(seed)
        seed_everything(self.seed)
        self.model = model.to(self.device)
        self.batches = batches
        self.val_evaluator = val_evaluator
        self.epochs = int(epochs)
        self.min_epochs = int(min_epochs)
        self._lr = float(lr)
        params = [p for p in model.parameters() if p.requires_grad]
        # a model without parameters (mbgraph.models.baselines) is training-free: fit() runs
        # no epoch and no optimizer step, it evaluates the validation split once
        self.training_free = optimizer is None and not params
        self.optimizer = None if self.training_free else optimizer or torch.optim.Adam(
            params, lr=lr, weight_decay=weight_decay)
        if lr_decay_steps is not None and (lr_decay is None or int(lr_decay_steps) < 1):
            raise ValueError(f'lr_decay_steps needs lr_decay and a value >= 1, got '
                             f'{lr_decay_steps} (lr_decay={lr_decay})')
        self.lr_decay_steps = None if lr_decay_steps is None else int(lr_decay_steps)
        self.lr_decay = None if lr_decay is None else float(lr_decay)
        if self.optimizer is None or lr_decay is None:
            self.scheduler = None
        elif self.lr_decay_steps is not None:   # stepped after every optimizer step
            steps, rate = self.lr_decay_steps, float(lr_decay)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: rate ** (step // steps))
        else:
            self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, lr_decay)
        self.watch = watch
        if stop_at is not None and (len(stop_at) != 2 or not isinstance(stop_at[0], str)):
            raise ValueError(f"stop_at must be (metric, value), e.g. ('hr@10', 0.1), got "
                             f'{stop_at!r}')
        self.stop_at = None if stop_at is None else (stop_at[0], float(stop_at[1]))
        self.reached: Optional[Dict[str, Any]] = None
        self.monitor = monitor
        self.patience = int(patience)
        self.eval_every = int(eval_every)
        if distributed is None:
            distributed = dist_utils.is_distributed()
        elif distributed and not dist_utils.is_distributed():
            raise RuntimeError('distributed=True but no torch.distributed process group of more '
                               'than one rank is initialised (launch with torchrun and call '
                               'mbgraph.distributed.init_from_env first)')
        self.rank, self.world_size = dist_utils.rank_and_world_size() if distributed else (0, 1)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress and self.rank == 0
        self.max_grad_norm = max_grad_norm
        self.config = dict(config or {})
        self.amp = bool(amp)
        if self.device.type == 'cpu':
            # oneDNN's per-shape caches grow with every new batch shape, in bf16 and float32
            # alike (mbgraph.runtime.bound_onednn_caches)
            from .runtime import bound_onednn_caches
            bound_onednn_caches()
        self.sync_every = 1 if self.device.type != 'cuda' else int(sync_every)
        self.scaler = (torch.amp.GradScaler('cuda') if self.amp and self.device.type == 'cuda'
                       else None)
        self.loss_module: torch.nn.Module = _LossForward(self.model)
        if distributed and not self.training_free:
            from torch.nn.parallel import DistributedDataParallel
            self.loss_module = DistributedDataParallel(
                self.loss_module,
                device_ids=[self.device] if self.device.type == 'cuda' else None,
                find_unused_parameters=find_unused_parameters)
        # state that a checkpoint carries
        self.epoch = 0                      # epochs completed
        self.best_val: Optional[Dict[str, float]] = None
        self.best_epoch = 0
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.bad_evals = 0
        self.history: List[Dict[str, Any]] = []
        self.epoch_seconds: List[float] = []
        self.eval_seconds: List[float] = []

    # ------------------------------------------------------------------ training
    def _epoch_batches(self, epoch: int):
        source = self.batches
        # sources that can move a whole epoch to the device at once
        if self.device.type != 'cpu' and \
                'device' in inspect.signature(source.batches).parameters:
            return source.batches(epoch, self.rank, self.world_size, device=self.device)
        return source.batches(epoch, self.rank, self.world_size)

    def _num_batches(self) -> int:
        if hasattr(self.batches, 'num_batches'):
            return self.batches.num_batches(self.world_size)
        return len(self.batches)

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        """One pass over the batch source; returns mean loss (and parts), averaged over ranks.

        The loss is checked for NaN/inf every ``sync_every`` steps (every step on CPU), on
        every rank at once when distributed, so that a diverged rank stops all of them."""
        self.model.train()
        sums: Dict[str, Tensor] = {}
        n = checked = 0
        bar = tqdm(self._epoch_batches(epoch), total=self._num_batches(), desc=f'epoch {epoch}',
                   leave=False, disable=not self.progress, dynamic_ncols=True)
        autocast = torch.autocast(self.device.type, dtype=amp_dtype(self.device),
                                  enabled=self.amp)
        for i, batch in enumerate(bar):
            batch = move_to(batch, self.device)
            with autocast:
                out = self.loss_module(batch)
            loss, parts = (out if isinstance(out, tuple) else (out, {}))
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if self.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            n += 1
            for k, v in (('loss', loss), *parts.items()):
                v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
                sums[k] = sums[k] + v if k in sums else v
            if n - checked >= self.sync_every:
                self._check_divergence(sums, n - checked, epoch, checked, i)
                checked = n
                if i % 10 == 0 or self.sync_every > 1:
                    bar.set_postfix(loss=f'{float(sums["loss"]) / n:.4f}')
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.lr_decay_steps is not None:
                self.scheduler.step()
        if n == 0:
            raise ValueError('the batch source yielded no batches: the training split is empty')
        if checked < n:
            self._check_divergence(sums, n - checked, epoch, checked, n - 1)
        if self.scheduler is not None and self.lr_decay_steps is None:
            self.scheduler.step()
        names = sorted(sums)
        means = torch.stack([sums[k].to(self.device) for k in names]) / n
        if self.world_size > 1:
            means = dist_utils.all_reduce_sum(means) / self.world_size
        return {k: float(v) for k, v in zip(names, means.tolist())}

    def _check_divergence(self, sums: Dict[str, Tensor], steps: int, epoch: int, first: int,
                          last: int) -> None:
        """Raise :class:`DivergenceError` when a loss term (running sum over the epoch) is NaN,
        infinite or its mean beyond ``loss_bound``; on every rank at once when distributed,
        so that a diverged rank stops all of them."""
        names = ['loss', *sorted(k for k in sums if k != 'loss')]
        values = torch.stack([sums[k].float().reshape(()) for k in names])
        means = values / max(1, first + steps)
        bad = ~torch.isfinite(values) | (means.abs() > self.loss_bound)
        here = bool(bad.any())
        anywhere = dist_utils.any_rank(here, self.device) if self.world_size > 1 else here
        if not anywhere:
            return
        where = f'batch {last}' if first == last else f'batches {first}-{last}'
        if self.world_size > 1:
            where += f' (on some of the {self.world_size} ranks)'
        if here:
            parts = [n for n, b in zip(names, bad.tolist()) if b and n != 'loss'] or ['loss']
            term = parts[0]
            value = float(means[names.index(term)])
            how = (f'is {value}' if not math.isfinite(value) else
                   f'has a mean of {value:.3g}, beyond the bound {self.loss_bound:g}')
        else:
            term, value, how = 'loss', float('nan'), 'is not finite on another rank'
        last_good = None
        if self.out_dir is not None and self.epoch >= 1 and \
                (self.out_dir / 'checkpoint.pt').is_file():
            last_good = self.out_dir / 'checkpoint.pt'
        raise DivergenceError(term, value, f'epoch {epoch}, {where}', how, last_good,
                              self.epoch if last_good is not None else None)

    def fit(self, resume: Union[bool, str, Path] = False,
            allow_changes: Sequence[str] = ()) -> Dict[str, Any]:
        """Train until ``epochs`` or early stopping; restore the best weights.

        While it trains, rank 0 holds ``out_dir``'s :class:`~mbgraph.io.RunLock`: a second
        process training into the same folder is refused.

        Args:
            resume: ``True`` resumes from ``out_dir/checkpoint.pt`` if it exists; a path
                resumes from that checkpoint. ``log.jsonl`` is rewritten from the
                checkpoint's history, so no epoch appears twice.
            allow_changes: options that may differ from the checkpoint's run (see
                :meth:`load_checkpoint`); the epoch budget always may.
        """
        lock = None
        if self.out_dir is not None and self.rank == 0:
            lock = run_io.RunLock(self.out_dir).acquire()
        try:
            return self._fit(resume, allow_changes)
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, resume, allow_changes) -> Dict[str, Any]:
        if self.out_dir is not None and self.rank == 0:
            run_io.clean_stale_temps(self.out_dir)
        if resume:
            path = (self.out_dir / 'checkpoint.pt') if resume is True else Path(resume)
            if resume is not True or path.exists():
                self.load_checkpoint(path, allow_changes)
                log.info('resumed from %s after epoch %d', path, self.epoch)
        if self.out_dir is not None and self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # a fresh run starts a fresh log; a resumed one continues the checkpoint's
            run_io.write_text(self.out_dir / 'log.jsonl',
                              ''.join(json.dumps(r) + '\n' for r in self.history))
        if self.training_free:
            return self._fit_training_free()
        bar = tqdm(range(self.epoch + 1, self.epochs + 1), desc='training', unit='epoch',
                   disable=not self.progress, dynamic_ncols=True)
        for epoch in bar:
            if self.bad_evals >= self.patience and self.epoch >= self.min_epochs:
                break
            t0 = time.perf_counter()
            losses = self.train_epoch(epoch)
            if self.device.type == 'cuda':
                torch.cuda.synchronize(self.device)
            self.epoch_seconds.append(time.perf_counter() - t0)
            record: Dict[str, Any] = {'epoch': epoch, **losses,
                                      'epoch_seconds': self.epoch_seconds[-1],
                                      'lr': self.optimizer.param_groups[0]['lr']}
            last = epoch == self.epochs
            if self.val_evaluator is not None and (epoch % self.eval_every == 0 or last):
                val = self.val_evaluator.evaluate(self.model, self.device)
                self.eval_seconds.append(self.val_evaluator.last_seconds)
                record['val'] = val
                if self.monitor not in val:
                    raise KeyError(f'monitored metric {self.monitor!r} is not among the '
                                   f'validation metrics {sorted(val)}')
                if self.best_val is None or val[self.monitor] > self.best_val[self.monitor]:
                    self.best_val, self.best_epoch, self.bad_evals = val, epoch, 0
                    self.best_state = copy.deepcopy(self.model.state_dict())
                    if self.out_dir is not None and self.rank == 0:
                        self._save_best(epoch, val)
                else:
                    self.bad_evals += 1
                bar.set_postfix({self.monitor: f'{val[self.monitor]:.4f}',
                                 'best': f'{self.best_val[self.monitor]:.4f}'})
            if self.watch is not None and (epoch == 1 or epoch % self.eval_every == 0
                                           or last):
                record['watch'] = self.watch.evaluate(self.model, self.device)
            self.epoch = epoch
            self.history.append(record)
            if self.stop_at is not None and self.reached is None:
                self._check_target(record)
            if self.out_dir is not None and self.rank == 0:
                # the checkpoint first: a log line is never ahead of the checkpoint
                self.save_checkpoint(self.out_dir / 'checkpoint.pt')
                run_io.append_jsonl(self.out_dir / 'log.jsonl', record)
            log.info('epoch %d: %s', epoch, json.dumps(record))
            if self.reached is not None:
                break
        if self.val_evaluator is None:
            self.best_epoch = self.epoch
            if self.out_dir is not None and self.rank == 0 and self.epoch >= 1:
                self.best_state = copy.deepcopy(self.model.state_dict())
                self._save_best(self.epoch, None)
        elif self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.summary()

    def _check_target(self, record: Dict[str, Any]) -> None:
        metric, value = self.stop_at
        got = (record.get('val') or record.get('watch') or {}).get(metric)
        if got is not None and got >= value:
            count = getattr(self.batches, 'triples_per_epoch', None)
            # epochs of sampled users draw different counts: add them up epoch by epoch
            seen = None if count is None else sum(int(sum(count(e).values()))
                                                  for e in range(1, record['epoch'] + 1))
            self.reached = {'metric': metric, 'target': value, 'value': got,
                            'split': 'val' if 'val' in record else 'test (watched)',
                            'epoch': record['epoch'],
                            'train_seconds': float(sum(self.epoch_seconds)),
                            'eval_seconds': float(sum(self.eval_seconds)),
                            'triples_seen': seen}

    def _fit_training_free(self) -> Dict[str, Any]:
        """Zero epochs: one validation pass (epoch 0) and a best.pt holding the configuration,
        so that ``mbgraph evaluate`` rebuilds the model from the data as for any run."""
        self.epoch = self.best_epoch = 0
        if self.val_evaluator is not None:
            self.best_val = self.val_evaluator.evaluate(self.model, self.device)
            self.eval_seconds.append(self.val_evaluator.last_seconds)
        record = {'epoch': 0, 'training_free': True, 'val': self.best_val}
        self.history.append(record)
        if self.out_dir is not None and self.rank == 0:
            run_io.append_jsonl(self.out_dir / 'log.jsonl', record)
            self.best_state = self.model.state_dict()
            self._save_best(0, self.best_val)
        return self.summary()

    # ------------------------------------------------------------------ results
    def summary(self) -> Dict[str, Any]:
        """Best epoch and validation metrics, epochs run, median epoch seconds, memory."""
        return {
            'best_epoch': self.best_epoch,
            'best_val': self.best_val,
            'epochs_run': self.epoch,
            'epoch_seconds': (statistics.median(self.epoch_seconds)
                              if self.epoch_seconds else None),
            'eval_seconds': (statistics.median(self.eval_seconds)
                             if self.eval_seconds else None),
            **({'time_to_target': self.reached} if self.stop_at is not None else {}),
            **peak_memory_mb(self.device),
        }

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        return {
            'model': self.model.state_dict(),
            'optimizer': self.optimizer.state_dict() if self.optimizer is not None else None,
            'scheduler': self.scheduler.state_dict() if self.scheduler is not None else None,
            'epoch': self.epoch, 'best_val': self.best_val, 'best_epoch': self.best_epoch,
            'best_state': self.best_state, 'bad_evals': self.bad_evals,
            'history': self.history, 'epoch_seconds': self.epoch_seconds,
            'eval_seconds': self.eval_seconds, 'seed': self.seed, 'config': self.config,
            'rng': {'torch': torch.get_rng_state(), 'python': random.getstate(),
                    'numpy': _numpy_state_to_tensors(np.random.get_state()),
                    'cuda': (torch.cuda.get_rng_state_all()
                             if torch.cuda.is_available() else None)},
        }

    def fingerprint(self) -> Dict[str, Any]:
        """What defines this run (:func:`mbgraph.validation.run_fingerprint`)."""
        return validation.run_fingerprint(self)

    def _save_best(self, epoch: int, val: Optional[Dict[str, float]]) -> None:
        state = {'model': self.best_state, 'epoch': epoch, 'val': val, 'config': self.config,
                 'fingerprint': self.fingerprint()}
        state['checksum'] = validation.content_checksum(state)
        run_io.torch_save(state, self.out_dir / 'best.pt')

    def save_checkpoint(self, path: Union[str, Path]) -> None:
        """Write everything needed to resume (model, optimizer, RNG states, history, the
        run's fingerprint and a checksum of it all), atomically."""
        state = self.state_dict()
        state['fingerprint'] = self.fingerprint()
        state['checksum'] = validation.content_checksum(state)
        run_io.torch_save(state, path)

    def load_checkpoint(self, path: Union[str, Path], allow_changes: Sequence[str] = ()) -> None:
        """Restore a :meth:`save_checkpoint` file; :meth:`fit` then continues after its epoch.

        Refused with :class:`~mbgraph.validation.CorruptCheckpointError` when the file cannot
        be read or its content does not match its checksum, and with
        :class:`~mbgraph.validation.RunMismatchError` listing the differences when it was
        written by another run (other options, data, seed, batches) -- but for the epoch
        budget and the options named in ``allow_changes`` (a changed ``lr`` then takes
        effect from the next epoch; ``'unfingerprinted'`` accepts a file written before run
        fingerprints existed, whose options cannot be checked)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f'checkpoint {path} does not exist')
        state = validation.load_verified(path, self.device)
        diffs = validation.compare_fingerprints(state.get('fingerprint') or {},
                                                self.fingerprint(), allow_changes)
        if 'fingerprint' not in state:
            if 'unfingerprinted' in allow_changes:   # the user vouches for the older file
                log.warning('%s has no run fingerprint (written by an older mbgraph); resumed '
                            'as asked (--allow-change unfingerprinted), its options unchecked',
                            path)
                diffs = []
            else:
                diffs = ['the checkpoint has no run fingerprint (written by an older mbgraph; '
                         'resume it anyway with --allow-change unfingerprinted)']
        if diffs:
            raise validation.RunMismatchError(
                f'{path} belongs to another run (checkpoint -> now: {"; ".join(diffs[:6])}'
                f'{f"; and {len(diffs) - 6} more" if len(diffs) > 6 else ""}); resume '
                'it as it was, start afresh with --overwrite, or name what may change with '
                '--allow-change OPTION')
        self.model.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        if self.scheduler is not None and state['scheduler'] is not None:
            self.scheduler.load_state_dict(state['scheduler'])
        for key in ('epoch', 'best_val', 'best_epoch', 'best_state', 'bad_evals', 'history',
                    'epoch_seconds', 'eval_seconds'):
            setattr(self, key, state[key])
        rng = state['rng']
        torch.set_rng_state(rng['torch'].cpu())
        random.setstate(rng['python'])
        np.random.set_state(_numpy_state_from_tensors(rng['numpy']))
        if rng.get('cuda') is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng['cuda'])
        if 'lr' in allow_changes:   # the new learning rate, decayed as far as the run has come
            self._set_lr()

    def _set_lr(self) -> None:
        base = self._lr
        if self.lr_decay_steps is not None:   # the staircase, as far as the steps have come
            factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        else:
            factor = getattr(self.scheduler, 'gamma', 1.0) ** self.epoch
        for group in self.optimizer.param_groups:
            group['initial_lr'] = base
            group['lr'] = base * factor
        if self.scheduler is not None:
            self.scheduler.base_lrs = [base for _ in self.optimizer.param_groups]
            self.scheduler._last_lr = [g['lr'] for g in self.optimizer.param_groups]


def _numpy_state_to_tensors(state):
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _numpy_state_from_tensors(state):
    name, keys, pos, has_gauss, cached = state
    return (name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached)


def write_metrics(path: Union[str, Path], metrics: Dict[str, Any]) -> Path:
    """Write ``metrics.json`` (pretty-printed, keys sorted) atomically and return its path."""
    return run_io.write_json(path, metrics)
