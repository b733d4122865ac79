"""What one data-parallel replica holds: parameter bytes vs cached sparse-operator bytes.

Every DDP rank keeps the whole model and the whole graph (docs/distributed.md, memory model).
This builds each model, runs one training loss so that every operator the model uses is built
and cached, and reports the bytes of its parameters and of its cached CSR operators (with
their transposes)::

    python -m benchmarks.replica_memory --dataset taobao --data-root ../shared/data
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Optional, Sequence

import torch

from mbgraph.data.datasets import load_dataset
from mbgraph.models import build_model


def csr_bytes(t: torch.Tensor) -> int:
    """Bytes of a sparse CSR tensor's row pointers, column indices and values."""
    return sum(x.numel() * x.element_size()
               for x in (t.crow_indices(), t.col_indices(), t.values()))


def replica_bytes(model) -> Dict[str, float]:
    """Parameter and cached-operator megabytes of a graph model (after its operators are
    built)."""
    ops = list(model.adjacency._cache.values())
    op_bytes = sum(csr_bytes(op.csr) + (0 if op.csr_t is op.csr else csr_bytes(op.csr_t))
                   for op in ops)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {'parameters_mb': params / 2**20, 'parameters_with_adam_mb': 4 * params / 2**20,
            'operators': len(ops), 'operators_mb': op_bytes / 2**20}


def measure(data, models: Sequence[str], dim: int = 64) -> List[Dict[str, object]]:
    rows = []
    for name in models:
        torch.manual_seed(0)
        model = build_model(name, data, embedding_dim=dim)
        model.train()
        batch = next(iter(model.batch_source(data, batch_size=256).batches(1)))
        model.loss(batch)              # builds and caches every operator the model uses
        rows.append({'model': name, **replica_bytes(model)})
    return rows


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--dataset', default='synthetic')
    p.add_argument('--data-root')
    p.add_argument('--models', default='lightgcn,mbcgcn,pkef,copf')
    p.add_argument('--dim', type=int, default=64)
    args = p.parse_args(argv)
    data = load_dataset(args.dataset, args.data_root)
    print(f'{args.dataset}: behaviors {data.behaviors}, training pairs '
          + ', '.join(f'{b} {data["user", b, "item"].edge_index.size(1)}'
                      for b in data.behaviors))
    print('| model | parameters MB | with grad + Adam MB | cached operators | operators MB |')
    print('|---|---|---|---|---|')
    for r in measure(data, args.models.split(','), args.dim):
        print(f"| {r['model']} | {r['parameters_mb']:.1f} | {r['parameters_with_adam_mb']:.1f} "
              f"| {r['operators']} | {r['operators_mb']:.1f} |")


if __name__ == '__main__':
    main()
