"""CPU seconds of one training step and of one full-ranking pass, for comparing two trees.

On a shared machine wall-clock seconds measure the scheduler as much as the code; the process
time of a single-threaded run measures the code (memory-bandwidth contention from the other
jobs still shows, so compare runs interleaved, on the same day, and report the load average).
Runs as a file so that ``mbgraph`` is imported from wherever ``PYTHONPATH`` points::

    PYTHONPATH=/path/to/old/tree python benchmarks/cpu_steps.py --data-root ../shared/data \\
        --behaviors cart,buy --models copf --eval
    PYTHONPATH=. python benchmarks/cpu_steps.py --data-root ../shared/data \\
        --behaviors cart,buy --models copf --eval

Each model: ``--steps`` training steps (loss, backward, Adam) on the first batches of its
default reading's sampler, the median after two warm-up steps; with ``--eval``, three
full-ranking passes over the test users (random weights), the median of the last two.
Wall-clock seconds (``step_wall_seconds``, ``wall_seconds_per_million_triples``) are printed
beside the CPU seconds; they say something only on an otherwise idle machine (the row's
``load_average``), and they are the ones to compare with ``--threads 2`` runs.
``--matmul-precision medium`` runs the training steps with bfloat16 GEMMs (torch's own
switch, the evaluation stays exact).

Sequence models (``--models ebm,sasrec,...``) run on a sequence dataset (``--dataset
ml-latest-small``) in their own training layout (EBM: every cut), with ``--batch-size``,
``--negatives``, ``--max-len`` and ``--min-interactions``; the row reports CPU seconds per
step and per thousand next-item targets instead of triples::

    PYTHONPATH=. python benchmarks/cpu_steps.py --data-root ../shared/data \
        --dataset ml-latest-small --models ebm --min-interactions 20 --negatives 100 --steps 50
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data-root', default=None, help='folder of the datasets (not for synthetic)')
    p.add_argument('--dataset', default='taobao')
    p.add_argument('--behaviors', default='cart,buy')
    p.add_argument('--models', default='copf', help='comma-separated model names')
    p.add_argument('--steps', type=int, default=4)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--eval', action='store_true', help='also time full-ranking passes')
    p.add_argument('--matmul-precision', choices=['highest', 'high', 'medium'],
                   default='highest', help="torch.set_float32_matmul_precision for the "
                   "training steps ('medium': bfloat16 GEMMs where the CPU has them)")
    p.add_argument('--batch-size', type=int, default=256, help='sequence models: users a batch')
    p.add_argument('--negatives', type=int, default=100,
                   help='sequence models: sampled negatives per target')
    p.add_argument('--max-len', type=int, default=50, help='sequence models: positions')
    p.add_argument('--min-interactions', type=int, default=None,
                   help="sequence models: the dataset filter (DPCPL's 20)")
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help="sequence models: a constructor argument (as mbgraph train's --set), "
                        "e.g. sequence_mixer='causal_filter'")
    args = p.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    from mbgraph.runtime import bound_onednn_caches, keep_freed_memory
    keep_freed_memory()          # as mbgraph train does (mbgraph.runtime)
    bound_onednn_caches()
    from mbgraph_seq.models import SEQ_MODELS
    names = args.models.split(',')
    if any(name in SEQ_MODELS for name in names):
        if not all(name in SEQ_MODELS for name in names):
            p.error('--models: sequence and graph models in one call (run them separately)')
        return _sequence_steps(args, names)
    import mbgraph
    from mbgraph.data.datasets import load_dataset
    from mbgraph.evaluation import FullRankingEvaluator
    from mbgraph.models import build_model
    data = load_dataset(args.dataset, args.data_root, behaviors=args.behaviors.split(','))
    for name in names:
        torch.manual_seed(0)
        model = build_model(name, data)
        sampler = model.batch_source(data, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        it = iter(sampler.batches(1))
        times, walls, loss = [], [], None
        torch.set_float32_matmul_precision(args.matmul_precision)
        for _ in range(2 + args.steps):
            cpu, wall, loss = _timed_step(model, opt, next(it))
            times.append(cpu)
            walls.append(wall)
        torch.set_float32_matmul_precision('highest')     # evaluation: the exact scores
        step, wall = statistics.median(times[2:]), statistics.median(walls[2:])
        triples = int(sum(sampler.triples_per_epoch(1).values()))
        row = {'tree': os.path.dirname(os.path.dirname(os.path.abspath(mbgraph.__file__))),
               'model': name, 'behaviors': args.behaviors, 'threads': args.threads,
               'matmul_precision': args.matmul_precision,
               'step_cpu_seconds': round(step, 4),
               'cpu_seconds_per_million_triples': round(step * sampler.num_batches()
                                                        / triples * 1e6, 1),
               # wall clock: meaningful only on an otherwise idle machine (see load_average)
               'step_wall_seconds': round(wall, 4),
               'wall_seconds_per_million_triples': round(wall * sampler.num_batches()
                                                         / triples * 1e6, 1),
               'loss_after_steps': round(float(loss.detach()), 6)}
        if args.eval:
            ev = FullRankingEvaluator(data, 'test', ks=[10])
            passes = []
            eval_walls = []
            for _ in range(3):
                t0, w0 = time.process_time(), time.perf_counter()
                metrics = ev.evaluate(model, torch.device('cpu'))
                passes.append(time.process_time() - t0)
                eval_walls.append(time.perf_counter() - w0)
            row['eval_cpu_seconds'] = round(statistics.median(passes[1:]), 3)
            row['eval_wall_seconds'] = round(statistics.median(eval_walls[1:]), 3)
            row['eval_hr@10'] = round(float(metrics['hr@10']), 6)
        row['load_average'] = round(os.getloadavg()[0], 1)
        print(json.dumps(row), flush=True)


def _timed_step(model, opt, batch):
    """One training step (loss, backward, Adam): its CPU and wall seconds, and the loss."""
    t0, w0 = time.process_time(), time.perf_counter()
    loss, _ = model.loss(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.process_time() - t0, time.perf_counter() - w0, loss


def _sequence_steps(args, names) -> None:
    import torch

    import mbgraph
    from mbgraph.cli import _parse_set, load_sequences
    from mbgraph.training import peak_memory_mb
    from mbgraph_seq.models import SEQ_MODELS
    options = {} if args.min_interactions is None else {'min_interactions': args.min_interactions}
    data = load_sequences(args.dataset, args.data_root, args.max_len, 0, None, **options)
    for name in names:
        torch.manual_seed(0)
        model = SEQ_MODELS[name](data, **_parse_set(args.set)).train()
        source = data.train_source(args.batch_size, args.negatives, 0,
                                   prefixes=model.train_layout)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        # a causal model's epoch is a few batches of whole sequences: run on into later epochs
        it = itertools.chain.from_iterable(source.batches(epoch) for epoch in itertools.count())
        times, targets = [], []
        for _ in range(2 + args.steps):
            batch = next(it)
            cpu, _, loss = _timed_step(model, opt, batch)
            times.append(cpu)
            targets.append(int((batch.pos > 0).sum()))
        step = statistics.median(times[2:])
        row = {'tree': os.path.dirname(os.path.dirname(os.path.abspath(mbgraph.__file__))),
               'model': name, 'dataset': args.dataset, 'set': args.set,
               'layout': str(model.train_layout),
               'threads': args.threads, 'batch_size': args.batch_size,
               'step_cpu_seconds': round(step, 4),
               'cpu_seconds_per_1000_targets': round(sum(times[2:]) / sum(targets[2:]) * 1e3, 3),
               'peak_rss_mb': round(peak_memory_mb(torch.device('cpu'))['peak_rss_mb']),
               'loss_after_steps': round(float(loss.detach()), 6),
               'load_average': round(os.getloadavg()[0], 1)}
        print(json.dumps(row), flush=True)


if __name__ == '__main__':
    main()
