r"""Data-parallel training on :mod:`torch.distributed`: the glue between ``torchrun`` and the
:class:`~mbgraph.training.Trainer`.

mbgraph does not ship a launcher or a communication scheme of its own. ``torchrun`` (or any
launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``) starts one process per device; :func:`init_from_env` joins the process group
(NCCL on CUDA, Gloo on CPU) and the Trainer then

* wraps the model in :class:`torch.nn.parallel.DistributedDataParallel`, which averages the
  gradients over ranks;
* asks the batch source for the rank's disjoint shard of every global batch
  (``batches(epoch, rank, world_size)``: the global batch is the same on every rank because it
  is drawn from ``(seed, epoch)`` alone);
* evaluates each rank's share of the users and sums the metric states over ranks
  (:func:`all_reduce_sum`), so every rank sees the same validation metric and takes the same
  early-stopping decision;
* writes logs, checkpoints and ``metrics.json`` on rank 0 only.

**Memory model.** Every rank holds the whole graph, its cached CSR operators (and their
transposes) and the whole embedding tables: DDP replicates the model. On Taobao (three
behaviors, d = 64) the parameters are 6.7 MB and the cached operators 56 MB (PKEF) to 144 MB
(COPF): the graph dominates a replica, and both are small next to a GPU. Replication stops
paying when operators (about ``24 x nnz`` bytes each) or embedding tables (``(users + items) x d
x 4`` bytes, about 4x with Adam) approach one device's memory; then tables must be sharded and
the propagation partitioned, which mbgraph does not do (docs/distributed.md).

Example (two CPU processes on one machine)::

    torchrun --nproc_per_node 2 -m mbgraph train --model lightgcn --dataset synthetic --out runs/ddp
"""
from __future__ import annotations

import datetime
import gc
import logging
import os
from typing import Optional, Tuple, Union

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

ENV_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


def launched_by_torchrun() -> bool:
    """True when the process was started by ``torchrun`` (or a launcher setting its variables)
    with more than one process in the job."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> Tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return rank_and_world_size()[0] == 0


def backend_for(device: Union[str, torch.device]) -> str:
    """``'nccl'`` for CUDA devices, ``'gloo'`` otherwise."""
    return 'nccl' if torch.device(device).type == 'cuda' else 'gloo'


def init_from_env(device: Union[str, torch.device] = 'cpu',
                  timeout_minutes: float = 30.0) -> Tuple[int, int, torch.device]:
    """Join the process group described by the launcher's environment variables.

    With ``WORLD_SIZE`` unset or 1 nothing happens and ``(0, 1, device)`` comes back, so the
    same program runs with and without ``torchrun``. On CUDA each process takes the GPU
    ``cuda:LOCAL_RANK``; a plain ``'cuda'`` request is turned into that device.

    Returns:
        ``(rank, world_size, device)``.
    """
    device = torch.device(device)
    if not launched_by_torchrun():
        return 0, 1, device
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f'WORLD_SIZE is {os.environ["WORLD_SIZE"]} but the launcher did not '
                           f'set {missing}; start the job with torchrun')
    if not dist.is_available():
        raise RuntimeError('this torch build has no torch.distributed support')
    local_rank = int(os.environ['LOCAL_RANK'])
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError('--device cuda under torchrun, but CUDA is not available here')
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f'LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} '
                             'GPUs are visible; use --nproc_per_node <= the GPU count')
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        kwargs = {}
        if device.type == 'cuda':
            kwargs['device_id'] = device   # lets NCCL bind the communicator eagerly
        dist.init_process_group(backend_for(device), init_method='env://',
                                timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
    rank, world = dist.get_rank(), dist.get_world_size()
    log.info('rank %d of %d on %s (backend %s)', rank, world, device, dist.get_backend())
    return rank, world, device


def cleanup() -> None:
    """Leave the process group (no-op outside one).

    Objects that still hold the group (a ``DistributedDataParallel`` reducer kept alive by a
    reference cycle) are collected first: freed after the group is destroyed, they would
    destroy the Gloo group from a Python destructor, holding the GIL, while its worker thread
    waits for the GIL to release a tensor -- a deadlock seen in the tests."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op outside a process group) and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: Optional[torch.device] = None) -> bool:
    """True on every rank when ``flag`` is true on at least one (a collective: every rank must
    call it)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return bool(t.item() > 0)
