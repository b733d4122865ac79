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
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import distributed as dist_utils
from .losses import check_finite

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
        monitor: validation metric to maximise (e.g. ``'ndcg@10'``).
        patience: stop after this many evaluations without improvement.
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
                 sync_every: int = 10):
        if epochs < 0:
            raise ValueError(f'epochs must be >= 0, got {epochs}')
        if eval_every < 1 or patience < 1:
            raise ValueError('eval_every and patience must be >= 1')
        self.device = resolve_device(device)
        self.seed = int(seed)
        seed_everything(self.seed)
        self.model = model.to(self.device)
        self.batches = batches
        self.val_evaluator = val_evaluator
        self.epochs = int(epochs)
        params = [p for p in model.parameters() if p.requires_grad]
        # a model without parameters (mbgraph.models.baselines) is training-free: fit() runs
        # no epoch and no optimizer step, it evaluates the validation split once
        self.training_free = optimizer is None and not params
        self.optimizer = None if self.training_free else optimizer or torch.optim.Adam(
            params, lr=lr, weight_decay=weight_decay)
        self.scheduler = (torch.optim.lr_scheduler.ExponentialLR(self.optimizer, lr_decay)
                          if lr_decay is not None and self.optimizer is not None else None)
        self.monitor = monitor
        self.patience = int(patience)
        self.eval_every = int(eval_every)
        if sync_every < 1:
            raise ValueError(f'sync_every must be >= 1, got {sync_every}')
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
                self._check_finite(sums['loss'], epoch, checked, i)
                checked = n
                if i % 10 == 0 or self.sync_every > 1:
                    bar.set_postfix(loss=f'{float(sums["loss"]) / n:.4f}')
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        if n == 0:
            raise ValueError('the batch source yielded no batches: the training split is empty')
        if checked < n:
            self._check_finite(sums['loss'], epoch, checked, n - 1)
        if self.scheduler is not None:
            self.scheduler.step()
        names = sorted(sums)
        means = torch.stack([sums[k].to(self.device) for k in names]) / n
        if self.world_size > 1:
            means = dist_utils.all_reduce_sum(means) / self.world_size
        return {k: float(v) for k, v in zip(names, means.tolist())}

    def _check_finite(self, loss_sum: Tensor, epoch: int, first: int, last: int) -> None:
        here = not bool(torch.isfinite(loss_sum))
        bad = dist_utils.any_rank(here, self.device) if self.world_size > 1 else here
        if bad:
            where = (f'batch {last}' if first == last else f'batches {first}-{last}')
            # this rank's loss, or NaN when only another rank's loss is not finite
            check_finite(loss_sum if here else torch.tensor(float('nan')),
                         f'epoch {epoch}, {where}' + (f' (on some of the {self.world_size} '
                                                      'ranks)' if self.world_size > 1 else ''))

    def fit(self, resume: Union[bool, str, Path] = False) -> Dict[str, Any]:
        """Train until ``epochs`` or early stopping; restore the best weights.

        Args:
            resume: ``True`` resumes from ``out_dir/checkpoint.pt`` if it exists; a path
                resumes from that checkpoint.
        """
        if resume:
            path = (self.out_dir / 'checkpoint.pt') if resume is True else Path(resume)
            if resume is not True or path.exists():
                self.load_checkpoint(path)
                log.info('resumed from %s after epoch %d', path, self.epoch)
        if self.out_dir is not None and self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.epoch == 0:     # a fresh run starts a fresh log
                (self.out_dir / 'log.jsonl').unlink(missing_ok=True)
        if self.training_free:
            return self._fit_training_free()
        bar = tqdm(range(self.epoch + 1, self.epochs + 1), desc='training', unit='epoch',
                   disable=not self.progress, dynamic_ncols=True)
        for epoch in bar:
            if self.bad_evals >= self.patience:
                break
            t0 = time.perf_counter()
            losses = self.train_epoch(epoch)
            if self.device.type == 'cuda':
                torch.cuda.synchronize(self.device)
            self.epoch_seconds.append(time.perf_counter() - t0)
            record: Dict[str, Any] = {'epoch': epoch, **losses,
                                      'epoch_seconds': self.epoch_seconds[-1],
                                      'lr': self.optimizer.param_groups[0]['lr']}
            if self.val_evaluator is not None and epoch % self.eval_every == 0:
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
                        torch.save({'model': self.best_state, 'epoch': epoch, 'val': val,
                                    'config': self.config}, self.out_dir / 'best.pt')
                else:
                    self.bad_evals += 1
                bar.set_postfix({self.monitor: f'{val[self.monitor]:.4f}',
                                 'best': f'{self.best_val[self.monitor]:.4f}'})
            self.epoch = epoch
            self.history.append(record)
            if self.out_dir is not None and self.rank == 0:
                with open(self.out_dir / 'log.jsonl', 'a') as f:
                    f.write(json.dumps(record) + '\n')
                self.save_checkpoint(self.out_dir / 'checkpoint.pt')
            log.info('epoch %d: %s', epoch, json.dumps(record))
        if self.val_evaluator is None:
            self.best_epoch = self.epoch
        elif self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.summary()

    def _fit_training_free(self) -> dict[str, Any]:
        """Zero epochs: one validation pass (epoch 0) and a best.pt holding the configuration,
        so that ``mbgraph evaluate`` rebuilds the model from the data as for any run."""
        self.epoch = self.best_epoch = 0
        if self.val_evaluator is not None:
            self.best_val = self.val_evaluator.evaluate(self.model, self.device)
            self.eval_seconds.append(self.val_evaluator.last_seconds)
        record = {'epoch': 0, 'training_free': True, 'val': self.best_val}
        self.history.append(record)
        if self.out_dir is not None and self.rank == 0:
            with open(self.out_dir / 'log.jsonl', 'a') as f:
                f.write(json.dumps(record) + '\n')
            torch.save({'model': self.model.state_dict(), 'epoch': 0, 'val': self.best_val,
                        'config': self.config}, self.out_dir / 'best.pt')
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

    def save_checkpoint(self, path: Union[str, Path]) -> None:
        """Write everything needed to resume (model, optimizer, RNG states, history)."""
        tmp = Path(str(path) + '.tmp')
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Union[str, Path]) -> None:
        """Restore a :meth:`save_checkpoint` file; :meth:`fit` then continues after its epoch."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f'checkpoint {path} does not exist')
        # weights_only: a checkpoint is a pickle; refuse anything but tensors and plain data
        state = torch.load(path, map_location=self.device, weights_only=True)
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


def _numpy_state_to_tensors(state):
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _numpy_state_from_tensors(state):
    name, keys, pos, has_gauss, cached = state
    return (name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached)


def write_metrics(path: Union[str, Path], metrics: Dict[str, Any]) -> Path:
    """Write ``metrics.json`` (pretty-printed, keys sorted) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(metrics, f, indent=2, sort_keys=True, default=float)
        f.write('\n')
    return path
