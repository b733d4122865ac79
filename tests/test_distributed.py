"""Data-parallel training: two Gloo processes on the CPU train exactly what one process trains
on the same global batches, and only rank 0 writes files."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mbgraph.data.datasets import synthetic
from mbgraph.data.sampling import BPRSampler, UniquePairSampler, batch_bounds
from mbgraph.distributed import cleanup
from mbgraph.evaluation import FullRankingEvaluator
from mbgraph.models import build_model
from mbgraph.training import Trainer

WORLD = 2
BATCH = 128          # global batch: 64 triples per rank and behavior
SAMPLES = 512        # per behavior and epoch: 4 full global batches, equal shards


def _data():
    return synthetic(num_users=120, num_items=90, seed=3)


def _setup(name):
    data = _data()
    torch.manual_seed(0)
    model = build_model(name, data, embedding_dim=16)
    if name == 'pkef':
        source = UniquePairSampler(data, model.train_behaviors, batch_size=BATCH,
                                   num_samples=SAMPLES, unique_batch_size=BATCH, seed=5)
    else:
        source = BPRSampler(data, model.train_behaviors, batch_size=BATCH, num_samples=SAMPLES,
                            seed=5)
    return data, model, source


def _train(name, out_dir, distributed):
    data, model, source = _setup(name)
    trainer = Trainer(model, source, FullRankingEvaluator(data, 'val'), epochs=1, lr=0.01,
                      progress=False, out_dir=out_dir, seed=0, distributed=distributed)
    trainer.fit()
    return model, trainer


def _train_and_save(rank, name, tmp):
    model, trainer = _train(name, Path(tmp) / f'out_rank{rank}', distributed=None)
    assert (trainer.rank, trainer.world_size) == (rank, WORLD)
    test = FullRankingEvaluator(_data(), 'test').evaluate(model)
    torch.save({'params': {k: v.detach().clone() for k, v in model.state_dict().items()},
                'val': trainer.best_val, 'test': test, 'loss': trainer.history[-1]['loss']},
               Path(tmp) / f'result_rank{rank}.pt')


def _worker(rank, name, tmp):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{tmp}/rendezvous', rank=rank,
                            world_size=WORLD)
    try:
        _train_and_save(rank, name, tmp)    # the DDP wrapper is freed before the group
    finally:
        cleanup()


def _spawn(fn, args, timeout=240):
    """``mp.spawn`` that fails the test instead of hanging it."""
    ctx = mp.spawn(fn, args=args, nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f'the {WORLD} processes did not finish within {timeout} s')


@pytest.mark.parametrize('name', ['lightgcn', 'mbcgcn', 'pkef'])
def test_two_gloo_processes_equal_one_process(name, tmp_path):
    _spawn(_worker, (name, str(tmp_path)))
    ref_model, ref_trainer = _train(name, tmp_path / 'single', distributed=False)
    ref = ref_model.state_dict()
    ref_test = FullRankingEvaluator(_data(), 'test').evaluate(ref_model)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f'result_rank{rank}.pt', weights_only=True)
        # (a) the parameters after one epoch: DDP's gradient average of the two halves is the
        # gradient of the whole global batch
        assert got['params'].keys() == ref.keys()
        for key, value in ref.items():
            torch.testing.assert_close(got['params'][key], value, rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f'{name} {key} on rank {rank}: {m}')
        # the split evaluation (each rank half the users, sums all-reduced) is the whole one
        for metric, value in ref_trainer.best_val.items():
            assert got['val'][metric] == pytest.approx(value, abs=1e-6)
        for metric, value in ref_test.items():
            assert got['test'][metric] == pytest.approx(value, abs=1e-6)
        # the logged loss is the mean over ranks = the one-process mean
        assert got['loss'] == pytest.approx(ref_trainer.history[-1]['loss'], rel=1e-4)
    # (b) only rank 0 wrote the log and checkpoints
    assert sorted(p.name for p in (tmp_path / 'out_rank0').iterdir()) == \
        ['best.pt', 'checkpoint.pt', 'log.jsonl']
    assert not (tmp_path / 'out_rank1').exists()


def test_batch_bounds_never_leave_a_rank_empty():
    assert batch_bounds(10, 4, 1) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4, 2) == [(0, 4), (4, 9)]          # a 1-sample tail is merged
    assert batch_bounds(10, 4, 2) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(4, 4, 4) == [(0, 4)]
    with pytest.raises(ValueError, match='global batch of 2 cannot give each of 3 ranks'):
        batch_bounds(10, 2, 3)
    with pytest.raises(ValueError, match='epoch of 1 samples'):
        batch_bounds(1, 4, 2)
    # the shards of all ranks cover every sample exactly once
    data = _data()
    sampler = BPRSampler(data, batch_size=7, num_samples=29, seed=1)
    whole = list(sampler.batches(0))
    shards = [list(sampler.batches(0, rank=r, world_size=3)) for r in range(3)]
    assert sampler.num_batches(3) == len(shards[0]) == 4      # 29 = 7+7+7+8 (the tail of 1 merged)
    for b in data.behaviors:
        cat = torch.cat([whole_b[b] for whole_b in whole], dim=1)
        got = torch.cat([torch.cat([s[i][b] for s in shards], dim=1) for i in range(4)], dim=1)
        assert sorted(map(tuple, got.t().tolist())) == sorted(map(tuple, cat.t().tolist()))
        assert all(s[i][b].size(1) >= 2 for s in shards for i in range(4))


def test_distributed_true_without_a_process_group_is_an_error():
    data, model, source = _setup('lightgcn')
    with pytest.raises(RuntimeError, match='no torch.distributed process group'):
        Trainer(model, source, epochs=1, distributed=True, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which('torchrun') is None and
                    not (Path(sys.executable).parent / 'torchrun').exists(),
                    reason='torchrun is not on PATH')
def test_cli_under_torchrun_writes_once(tmp_path):
    torchrun = shutil.which('torchrun') or str(Path(sys.executable).parent / 'torchrun')
    out = tmp_path / 'run'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run(
        [torchrun, '--nproc_per_node', '2', '--master_port', str(_free_port()),
         '-m', 'mbgraph', 'train', '--model', 'lightgcn', '--dataset', 'synthetic',
         '--epochs', '2', '--batch-size', '1024', '--out', str(out), '--no-progress'],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('| lightgcn') == 1          # one results table, from rank 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['world_size'] == 2 and metrics['epochs_run'] == 2
    assert len((out / 'log.jsonl').read_text().splitlines()) == 2


def test_replica_memory_counts_csr_bytes_by_hand():
    from benchmarks.replica_memory import csr_bytes, measure
    dense = torch.tensor([[0., 2.], [3., 0.], [0., 0.]])
    csr = dense.to_sparse_csr()
    # 4 row pointers + 2 column indices (int64) + 2 float32 values
    assert csr_bytes(csr) == 4 * 8 + 2 * 8 + 2 * 4
    (row,) = measure(_data(), ['lightgcn'], dim=8)
    users, items = 120, 90
    assert row['parameters_mb'] == pytest.approx((users + items) * 8 * 4 / 2**20)
    assert row['operators'] == 1 and row['operators_mb'] > 0
