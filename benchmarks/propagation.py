"""Speed of one propagation step ``op @ x`` per sparse backend on a Taobao-size graph.

Usage::

    python -m benchmarks.propagation [--data-root DIR] [--dim 64] [--repeats 20] \
        [--device cpu] [--output FILE]

With ``--data-root`` holding the Taobao MB-GMN files (``taobao-mbgmn/trn_*``) the real graph is
loaded through :func:`mbgraph.data.datasets.load_dataset`; otherwise a random bipartite graph of
the same size is synthesised (15,449 users, 11,953 items, 873,954 / 195,476 / 92,180
pv / cart / buy pairs, power-law item degrees). The operator is the left-normalised union of
all behaviors (COGCN as the authors coded it for the target behavior), ``x`` is
``[U + I, dim]`` with ``requires_grad``. Each backend is timed forward (``y = op @ x``) and
forward + backward (``y.backward(g)``); the table reports medians over ``--repeats`` runs after
warm-up, plus the time to build the operators a model needs.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

from mbgraph.data import make_multiplex
from mbgraph.data.adjacency import (
    BehaviorAdjacency,
    available_backends,
    to_homogeneous_edge_index,
)

TAOBAO_USERS = 15_449
TAOBAO_ITEMS = 11_953
TAOBAO_PAIRS = {'pv': 873_954, 'cart': 195_476, 'buy': 92_180}  # 1,161,610 in all


def random_taobao_like(seed: int = 0, item_exponent: float = 1.0):
    """A random multiplex graph of Taobao's size: items drawn with probability proportional to
    ``rank^-item_exponent`` (power-law degrees), users uniformly, no repeated pair within a
    behavior."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, TAOBAO_ITEMS + 1, dtype=torch.float64)
    item_p = ranks.pow(-item_exponent)
    item_p = item_p[torch.randperm(TAOBAO_ITEMS, generator=g)]  # popular ids spread out
    edges = {}
    for behavior, count in TAOBAO_PAIRS.items():
        keys = torch.empty(0, dtype=torch.long)
        while keys.numel() < count:  # oversample, drop repeats, top up until enough
            need = 2 * (count - keys.numel())
            users = torch.randint(0, TAOBAO_USERS, (need,), generator=g)
            items = torch.multinomial(item_p, need, replacement=True, generator=g)
            keys = torch.unique(torch.cat([keys, users * TAOBAO_ITEMS + items]))
        keys = keys[torch.randperm(keys.numel(), generator=g)[:count]]
        edges[behavior] = torch.stack([keys // TAOBAO_ITEMS, keys % TAOBAO_ITEMS])
    return make_multiplex(TAOBAO_USERS, TAOBAO_ITEMS, list(TAOBAO_PAIRS), edges,
                          name='random taobao-size graph')


def load_graph(data_root: Optional[str]) -> Tuple[object, str]:
    """The real Taobao graph if ``data_root`` has it and the loader imports, else the random
    one; returns ``(data, description)``."""
    if data_root is not None:
        root = Path(data_root)
        if any((root / d).glob('trn_*') for d in ('taobao-mbgmn', 'taobao')):
            try:
                from mbgraph.data.datasets import load_dataset
            except ImportError as e:
                print(f'note: mbgraph.data.datasets unavailable ({e}); using a random graph',
                      file=sys.stderr)
            else:
                return load_dataset('taobao', root), f'Taobao (MB-GMN files in {root})'
        else:
            print(f'note: no taobao-mbgmn/trn_* files under {root}; using a random graph',
                  file=sys.stderr)
    return random_taobao_like(), 'random Taobao-size graph (power-law item degrees, seed 0)'


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def interleaved_medians(fns: List[Callable[[], None]], device: torch.device, repeats: int,
                        warmup: int) -> List[float]:
    """Median ms of each function; the functions take turns within every round, so a burst of
    load from elsewhere on the machine hits all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    _sync(device)
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            _sync(device)
            t.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> str:
    parts = [f'CPU: {cpu_model()}', f'torch {torch.__version__}',
             f'threads {torch.get_num_threads()}']
    if device.type == 'cuda':
        parts.append(f'GPU: {torch.cuda.get_device_name(device)}')
    try:  # other work on the machine distorts timings: say how busy it was
        parts.append('load average %.2f' % os.getloadavg()[0])
    except (AttributeError, OSError):
        pass
    parts.append(datetime.date.today().isoformat())
    return ', '.join(parts)


def run(args) -> str:
    device = torch.device(args.device)
    data, graph_name = load_graph(args.data_root)
    behaviors = list(data.behaviors)

    # build: the operators one COPF / PKEF model asks for, from scratch
    start = time.perf_counter()
    adj = BehaviorAdjacency(data, device=device)
    op = adj.operator(behaviors, norm='left')
    _sync(device)
    build_union_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    for b in behaviors:
        adj.operator(b, norm='left_self_loop')
        adj.cumulative(b, norm='left_plus_identity')
    _sync(device)
    build_model_ms = (time.perf_counter() - start) * 1e3

    n = adj.num_nodes
    g = torch.Generator(device='cpu').manual_seed(0)
    x = torch.randn(n, args.dim, generator=g).to(device).requires_grad_()
    grad = torch.randn(n, args.dim, generator=g).to(device)

    cases: List[Tuple[str, Callable[[], torch.Tensor]]] = []
    for backend in available_backends():
        op_b = op.with_backend(backend)
        cases.append((f'`{backend}`', lambda op_b=op_b: op_b @ x))
    if not args.no_pyg:
        from mbgraph.nn.conv import BehaviorConv
        edge_index = to_homogeneous_edge_index(data, behaviors).to(device)
        conv = BehaviorConv(normalize='left', add_self=False, cached=True)
        cases.append(('PyG gather/scatter (`BehaviorConv` on edge_index, cached norm)',
                      lambda: conv(x, edge_index)))

    def forward_backward(step: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def fn():
            step().backward(grad)
            x.grad = None
        return fn

    fwd = interleaved_medians([step for _, step in cases], device, args.repeats, args.warmup)
    both = interleaved_medians([forward_backward(step) for _, step in cases], device,
                               args.repeats, args.warmup)
    rows = [(name, f, b) for (name, _), f, b in zip(cases, fwd, both)]

    lines = [
        f'### Propagation step `op @ x` ({graph_name})',
        '',
        f'Operator: left-normalised union of {behaviors}, {n:,} x {n:,}, nnz {op.nnz:,}; '
        f'x: [{n:,}, {args.dim}] float32 with requires_grad; device `{device}`; median of '
        f'{args.repeats} runs after {args.warmup} warm-up runs (the rows take turns within each '
        f'round). Build (from the HeteroData): '
        f'adjacency + this operator {build_union_ms:.0f} ms; then one `left_self_loop` operator '
        f'and one cumulative `left_plus_identity` operator per behavior '
        f'({2 * len(behaviors)} operators, each with its CSR transpose) {build_model_ms:.0f} ms.',
        '',
        '| backend | forward ms | fwd+bwd ms | bwd/fwd ratio |',
        '|---|---:|---:|---:|',
    ]
    for name, fwd, both in rows:
        lines.append(f'| {name} | {fwd:.2f} | {both:.2f} | {(both - fwd) / fwd:.2f} |')
    lines += ['', 'bwd/fwd ratio = (fwd+bwd - forward) / forward.', '',
              f'Machine: {machine_info(device)}.', '']
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default=None,
                        help='folder holding taobao-mbgmn/trn_* (default: random graph)')
    parser.add_argument('--dim', type=int, default=64, help='embedding size (default 64)')
    parser.add_argument('--repeats', type=int, default=20, help='timed runs (default 20)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed runs first (default 3)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default cpu)")
    parser.add_argument('--no-pyg', action='store_true',
                        help='skip the PyG edge_index reference row')
    parser.add_argument('--output', default=None, help='append the markdown table to FILE')
    args = parser.parse_args(argv)
    report = run(args)
    print(report)
    if args.output:
        with open(args.output, 'a') as f:
            f.write(report + '\n')


if __name__ == '__main__':
    main()
