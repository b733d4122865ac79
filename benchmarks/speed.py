r"""The ``speed`` suite's micro-benchmarks (the per-model epoch timings are ordinary runs of
``benchmarks/configs/speed/*.toml``).

* **Propagation throughput per sparse backend**: one step ``y = op @ x`` (forward, forward +
  backward) with the left-normalised union operator of all behaviors of Taobao (the real graph
  with ``--data-root``, else a random graph of its size; see :mod:`benchmarks.propagation`),
  every backend of :func:`mbgraph.data.adjacency.available_backends` (``torch_sparse`` only
  when it is installed). Throughput = non-zeros per second of the forward.
* **Full-ranking evaluation throughput**: test users per second of
  :class:`mbgraph.evaluation.FullRankingEvaluator` on an (untrained) LightGCN and COPF: score
  every item for every test user, mask the training items, top-K, HR/NDCG.
* **EBM vs self-attention as the sequence grows** (DPCPL table 1's complexity claim:
  :math:`O(Ld^2/k + Ld\log L)` for the filter, :math:`O(L^2 d)` for attention): forward +
  backward of a 2-layer stack of :class:`mbgraph_seq.nn.filter.EfficientFilterLayer` against
  a 2-layer :class:`mbgraph_seq.nn.transformer.CausalTransformer` (SASRec's blocks) on
  ``[batch, L, d]`` inputs, ``L`` = 64, 128, ... up to ``--max-len``; the slope of
  ``log(time)`` against ``log(L)`` is fitted with ``numpy.polyfit`` (1 = linear, 2 =
  quadratic). Memory: on CPU the bytes of the tensors autograd saves for the backward pass
  (distinct storages, counted through :func:`torch.autograd.graph.saved_tensors_hooks`:
  the activation memory that grows with ``L``, not the process's RSS, which a long-lived
  Python process does not give back); on CUDA ``torch.cuda.max_memory_allocated`` above the
  memory held before the step.

Every part runs on the CPU and, when ``torch.cuda.is_available()``, on CUDA too.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mbgraph import io as run_io

DEFAULT_LENGTHS = (64, 128, 256, 512, 1024, 2048, 4096)


def devices() -> List[torch.device]:
    out = [torch.device('cpu')]
    if torch.cuda.is_available():
        out.append(torch.device('cuda'))
    return out


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int = 5,
                   warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn`` over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fit_slope(lengths: Sequence[float], values: Sequence[float]) -> float:
    """Slope of ``log(values)`` against ``log(lengths)`` (least squares): ``values ~ L^slope``."""
    if len(lengths) < 2:
        return float('nan')
    return float(np.polyfit(np.log(np.asarray(lengths, dtype=float)),
                            np.log(np.asarray(values, dtype=float)), 1)[0])


# --------------------------------------------------------------------------------------------
# EBM vs self-attention
# --------------------------------------------------------------------------------------------

def sequence_encoders(dim: int = 64, num_layers: int = 2, num_blocks: int = 4
                      ) -> Dict[str, torch.nn.Module]:
    """The two encoders compared: EBM's filter-layer stack and SASRec's attention blocks
    (dropout 0, so that both do the same work at every call)."""
    from mbgraph_seq.nn.filter import EfficientFilterLayer
    from mbgraph_seq.nn.transformer import CausalTransformer

    class FilterStack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(EfficientFilterLayer(dim, num_blocks, dropout=0.0)
                                              for _ in range(num_layers))

        def forward(self, x, mask):
            for layer in self.layers:
                x = layer(x, mask)
            return x

    return {'EBM filter layers': FilterStack(),
            'self-attention (SASRec blocks)': CausalTransformer(dim, num_layers, 1, 0.0)}


def saved_activation_bytes(fn: Callable[[], torch.Tensor]) -> Tuple[torch.Tensor, int]:
    """Run ``fn`` and count the bytes of the distinct storages autograd saves for backward."""
    storages: Dict[Tuple[int, str], int] = {}

    def pack(t: torch.Tensor):
        try:
            s = t.untyped_storage()
            storages[(s.data_ptr(), str(t.device))] = s.nbytes()
        except (RuntimeError, NotImplementedError):   # e.g. sparse or wrapper tensors
            storages[(id(t), str(t.device))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


def sequence_scaling(lengths: Sequence[int], device: torch.device, batch: int = 4,
                     dim: int = 64, repeats: int = 5, seed: int = 0) -> List[Dict[str, Any]]:
    """Forward + backward seconds and memory of each encoder at each length."""
    torch.manual_seed(seed)
    rows = []
    for name, enc in sequence_encoders(dim).items():
        enc = enc.to(device)
        for length in lengths:
            x = torch.randn(batch, length, dim, device=device, requires_grad=True)
            mask = torch.ones(batch, length, dtype=torch.bool, device=device)

            def step():
                enc(x, mask).square().mean().backward()
                x.grad = None
                enc.zero_grad(set_to_none=True)
            try:
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
                    step()
                    _sync(device)
                    base = torch.cuda.memory_allocated(device)
                    torch.cuda.reset_peak_memory_stats(device)
                    step()
                    _sync(device)
                    mem = torch.cuda.max_memory_allocated(device) - base
                else:
                    out, mem = saved_activation_bytes(lambda: enc(x, mask))
                    del out
                seconds = median_seconds(step, device, repeats=repeats, warmup=1)
            except torch.OutOfMemoryError:
                rows.append({'encoder': name, 'length': length, 'device': str(device),
                             'seconds': None, 'memory_mb': None, 'error': 'out of memory'})
                break
            rows.append({'encoder': name, 'length': length, 'device': str(device),
                         'batch': batch, 'dim': dim, 'seconds': seconds,
                         'tokens_per_second': batch * length / seconds,
                         'memory_mb': mem / 2**20,
                         'memory_measure': ('cuda max_memory_allocated above the step start'
                                            if device.type == 'cuda'
                                            else 'bytes of tensors saved for backward')})
    return rows


def scaling_slopes(rows: Sequence[Dict[str, Any]], min_length: int = 256
                   ) -> List[Dict[str, Any]]:
    """Per (encoder, device): log-log slopes of time and memory over lengths >= ``min_length``
    (all lengths when fewer than 3 are that long)."""
    out = []
    keys = sorted({(r['encoder'], r['device']) for r in rows})
    for enc, dev in keys:
        pts = [r for r in rows if r['encoder'] == enc and r['device'] == dev
               and r.get('seconds')]
        use = [r for r in pts if r['length'] >= min_length]
        if len(use) < 3:
            use = pts
        out.append({'encoder': enc, 'device': dev,
                    'lengths': f'{use[0]["length"]}-{use[-1]["length"]}' if use else '',
                    'time_slope': fit_slope([r['length'] for r in use],
                                            [r['seconds'] for r in use]),
                    'memory_slope': fit_slope([r['length'] for r in use],
                                              [r['memory_mb'] for r in use])})
    return out


# --------------------------------------------------------------------------------------------
# propagation and evaluation
# --------------------------------------------------------------------------------------------

def propagation(data, device: torch.device, dim: int = 64, repeats: int = 10
                ) -> List[Dict[str, Any]]:
    """Forward and forward + backward of ``op @ x`` per backend (left-normalised union)."""
    from mbgraph.data.adjacency import BehaviorAdjacency, available_backends

    from .propagation import interleaved_medians
    adj = BehaviorAdjacency(data, device=device)
    op = adj.operator(list(data.behaviors), norm='left')
    g = torch.Generator().manual_seed(0)
    x = torch.randn(adj.num_nodes, dim, generator=g).to(device).requires_grad_()
    grad = torch.randn(adj.num_nodes, dim, generator=g).to(device)
    backends = list(available_backends())
    steps = [lambda b=op.with_backend(name): b @ x for name in backends]

    def both(step):
        def fn():
            step().backward(grad)
            x.grad = None
        return fn
    fwd = interleaved_medians(steps, device, repeats, 2)
    fb = interleaved_medians([both(s) for s in steps], device, repeats, 2)
    return [{'backend': name, 'device': str(device), 'nodes': adj.num_nodes, 'nnz': op.nnz,
             'dim': dim, 'forward_ms': f, 'forward_backward_ms': b,
             'mnnz_per_second': op.nnz / (f / 1e3) / 1e6}
            for name, f, b in zip(backends, fwd, fb)]


#: the graph models the evaluation and training rows time
EVAL_MODELS = ('lightgcn', 'mbcgcn', 'crgcn', 'pkef', 'copf')
TRAIN_MODELS = ('pkef', 'copf')


def training_throughput(data, dataset: str, device: torch.device,
                        models: Sequence[str] = TRAIN_MODELS, steps: int = 5,
                        warmup: int = 2) -> List[Dict[str, Any]]:
    """Seconds per training step (loss, backward, Adam) of the named models' default
    reading, and seconds per million training triples (median step x steps per epoch /
    triples per epoch), with the load average beside each row: the machine is shared."""
    import os

    from mbgraph.models import build_model
    rows = []
    for name in models:
        torch.manual_seed(0)
        model = build_model(name, data).to(device)
        sampler = model.batch_source(data, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        it = iter(sampler.batches(1, device=device if device.type != 'cpu' else None))
        drawn = [next(it) for _ in range(min(warmup + steps, sampler.num_batches()))]
        batches = [drawn[i % len(drawn)] for i in range(warmup + steps)]   # small data: reuse

        def step(batch):
            loss, _ = model.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times = []
        for i, batch in enumerate(batches):
            _sync(device)
            t0 = time.perf_counter()
            step(batch)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        per_epoch = sampler.triples_per_epoch(1)
        total = int(sum(per_epoch.values()))
        median = statistics.median(times or [float('nan')])
        rows.append({'model': name, 'reading': getattr(model, 'reading', None),
                     'dataset': dataset, 'behaviors': ','.join(data.behaviors),
                     'device': str(device), 'step_seconds': median,
                     'steps_per_epoch': sampler.num_batches(), 'triples_per_epoch': total,
                     'seconds_per_million_triples': median * sampler.num_batches() / total
                     * 1e6, 'load_average': os.getloadavg()[0]})
    return rows


def evaluation_throughput(data, dataset: str, device: torch.device, repeats: int = 3,
                          models: Sequence[str] = EVAL_MODELS) -> List[Dict[str, Any]]:
    """Test users per second of a full-ranking pass, for every graph model of ``models``."""
    from mbgraph.evaluation import FullRankingEvaluator
    from mbgraph.models import build_model
    rows = []
    for name in models:
        torch.manual_seed(0)
        model = build_model(name, data).to(device)
        ev = FullRankingEvaluator(data, 'test', ks=[10])
        times = []
        for _ in range(repeats + 1):
            ev.evaluate(model, device)
            times.append(ev.last_seconds)
        seconds = statistics.median(times[1:])
        users = int(ev.users.numel())
        rows.append({'model': name, 'dataset': dataset, 'device': str(device),
                     'users': users, 'items': int(data['item'].num_nodes),
                     'seconds': seconds, 'users_per_second': users / seconds})
    return rows


# --------------------------------------------------------------------------------------------
# the suite part
# --------------------------------------------------------------------------------------------

def lengths_up_to(max_len: int) -> List[int]:
    return [n for n in DEFAULT_LENGTHS if n <= max_len] or [DEFAULT_LENGTHS[0]]


def describe(args) -> str:
    max_len = args.max_len or 1024
    return (f'propagation per backend, full-ranking users/s, EBM vs self-attention at lengths '
            f'{lengths_up_to(max_len)} (CPU' + (', CUDA up to ' + str(args.max_len or 4096)
                                                if torch.cuda.is_available() else '') + ')')


def _graphs(data_root: Optional[str]) -> List[Tuple[str, Any]]:
    from mbgraph.data.datasets import load_dataset
    from mbgraph.data.multiplex import select_behaviors

    from .runner import dataset_available
    out = [('synthetic', load_dataset('synthetic', None, seed=0))]
    ok, _ = dataset_available('taobao', data_root)
    if ok:
        taobao = load_dataset('taobao', data_root)
        out += [('taobao', taobao), ('taobao', select_behaviors(taobao, ['cart', 'buy']))]
    return out


def run_micro(args, results: Path, echo=print) -> Dict[str, Any]:
    """Run the three micro-benchmarks, write ``speed_*.json``, ``speed.md`` and the plots."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    if getattr(args, 'threads', None):
        torch.set_num_threads(args.threads)
    from mbgraph.training import environment
    env = environment()
    graphs = _graphs(getattr(args, 'data_root', None))
    out: Dict[str, Any] = {'environment': env, 'date': time.strftime('%Y-%m-%d %H:%M:%S')}
    prop, evals, seq, train = [], [], [], []
    for device in devices():
        for name, data in graphs:
            full = len(data.behaviors) == 3          # the cart -> buy copy: training rows only
            if full:
                echo(f'speed: propagation backends on {name} ({device})')
                for r in propagation(data, device):
                    prop.append({'dataset': name, **r})
                echo(f'speed: full-ranking evaluation on {name} ({device})')
                evals += evaluation_throughput(data, name, device)
            echo(f'speed: training steps of {", ".join(TRAIN_MODELS)} on {name} '
                 f'({",".join(data.behaviors)}, {device})')
            train += training_throughput(data, name, device)
        max_len = args.max_len or (4096 if device.type == 'cuda' else 1024)
        echo(f'speed: EBM vs self-attention, lengths {lengths_up_to(max_len)} ({device})')
        seq += sequence_scaling(lengths_up_to(max_len), device)
    for key, rows in (('propagation', prop), ('evaluation', evals), ('sequence_scaling', seq),
                      ('training', train)):
        run_io.write_json(results / f'speed_{key}.json', {**out, 'rows': rows}, default=str)
    render(results)
    return {'propagation': prop, 'evaluation': evals, 'sequence_scaling': seq,
            'training': train}


def _load(results: Path, key: str) -> Optional[Dict[str, Any]]:
    path = Path(results) / f'speed_{key}.json'
    return json.loads(path.read_text()) if path.is_file() else None


def render(results: Path) -> str:
    """``speed.md`` (written and returned) and the scaling plots from ``speed_*.json``."""
    results = Path(results)
    parts = []
    prop, ev, seq = (_load(results, k) for k in ('propagation', 'evaluation',
                                                  'sequence_scaling'))
    if prop:
        env = prop['environment']
        parts += ['## Speed micro-benchmarks', '',
                  f'Machine: {env.get("cpu")}, {env.get("cpu_count")} cores, torch '
                  f'{env.get("torch")}, {env.get("torch_threads")} threads, CUDA: '
                  f'{env.get("cuda") or "none"}; git {env.get("git_commit")}; {prop["date"]}.',
                  '', '### Propagation step `op @ x` per sparse backend', '',
                  'Left-normalised union of all behaviors, x `[U + I, 64]` with requires_grad; '
                  'median of 10 interleaved runs.', '',
                  '| dataset | device | backend | nnz | forward ms | fwd+bwd ms | M nnz/s |',
                  '|---|---|---|---:|---:|---:|---:|']
        for r in prop['rows']:
            parts.append(f'| {r["dataset"]} | {r["device"]} | `{r["backend"]}` | {r["nnz"]:,} '
                         f'| {r["forward_ms"]:.2f} | {r["forward_backward_ms"]:.2f} | '
                         f'{r["mnnz_per_second"]:.1f} |')
        parts.append('')
    if ev:
        parts += ['### Full-ranking evaluation throughput', '',
                  'One pass of `FullRankingEvaluator(data, "test")` (every item scored, '
                  'training items masked, top-10), untrained model, median of 3 after one '
                  'warm-up.', '',
                  '| model | dataset | device | test users | items | seconds | users/s |',
                  '|---|---|---|---:|---:|---:|---:|']
        for r in ev['rows']:
            parts.append(f'| {r["model"]} | {r["dataset"]} | {r["device"]} | {r["users"]:,} | '
                         f'{r["items"]:,} | {r["seconds"]:.3f} | {r["users_per_second"]:,.0f} |')
        parts.append('')
    tr = _load(results, 'training')
    if tr:
        parts += ['### Training steps of the named models (default reading)', '',
                  'One step = loss, backward, Adam; median of 5 after 2 warm-up steps. Seconds '
                  'per million triples = median step x steps per epoch / training triples per '
                  'epoch. The load average (1 min) beside each row: the machine is shared.', '',
                  '| model | reading | dataset | behaviors | device | s / step | steps / epoch '
                  '| triples / epoch | s / M triples | load |',
                  '|---|---|---|---|---|---:|---:|---:|---:|---:|']
        for r in tr['rows']:
            parts.append(f'| {r["model"]} | {r["reading"]} | {r["dataset"]} | {r["behaviors"]} '
                         f'| {r["device"]} | {r["step_seconds"]:.3f} | {r["steps_per_epoch"]} | '
                         f'{r["triples_per_epoch"]:,} | {r["seconds_per_million_triples"]:.1f} '
                         f'| {r["load_average"]:.1f} |')
        parts.append('')
    if seq:
        rows = seq['rows']
        parts += ['### EBM vs self-attention as the sequence grows', '',
                  'Forward + backward of 2 layers, batch 4, d = 64, dropout 0; median of 5 '
                  'after one warm-up. Memory: CPU = bytes of the tensors autograd saves for '
                  'backward; CUDA = peak allocated above the step start.', '',
                  '| encoder | device | L | ms | tokens/s | memory MB |',
                  '|---|---|---:|---:|---:|---:|']
        for r in rows:
            if r.get('seconds') is None:
                parts.append(f'| {r["encoder"]} | {r["device"]} | {r["length"]} | '
                             f'{r.get("error")} | | |')
                continue
            parts.append(f'| {r["encoder"]} | {r["device"]} | {r["length"]} | '
                         f'{1e3 * r["seconds"]:.1f} | {r["tokens_per_second"]:,.0f} | '
                         f'{r["memory_mb"]:.1f} |')
        parts += ['', 'Fitted log-log slopes (time ~ L^slope; 1 linear, 2 quadratic):', '',
                  '| encoder | device | lengths | time slope | memory slope |',
                  '|---|---|---|---:|---:|']
        for s in scaling_slopes(rows):
            parts.append(f'| {s["encoder"]} | {s["device"]} | {s["lengths"]} | '
                         f'{s["time_slope"]:.2f} | {s["memory_slope"]:.2f} |')
        parts.append('')
        plots = plot_scaling(rows, results)
        if plots:
            parts += ['Plots: ' + ', '.join(f'`{p.name}`' for p in plots), '']
    text = '\n'.join(parts)
    if text:
        run_io.write_text(results / 'speed.md', text)
    return text


def plot_scaling(rows: Sequence[Dict[str, Any]], directory: Path) -> List[Path]:
    """``scaling_time.png`` and ``scaling_memory.png``: log-log, one line per encoder and
    device. Empty when matplotlib is missing."""
    from .tables import _pyplot
    plt = _pyplot()
    if plt is None:
        return []
    out = []
    for key, ylabel, fname in (('seconds', 'forward + backward seconds', 'scaling_time.png'),
                               ('memory_mb', 'memory MB', 'scaling_memory.png')):
        fig, ax = plt.subplots(figsize=(6, 4))
        for enc, dev in sorted({(r['encoder'], r['device']) for r in rows}):
            pts = [r for r in rows if r['encoder'] == enc and r['device'] == dev
                   and r.get(key)]
            if pts:
                ax.loglog([r['length'] for r in pts], [r[key] for r in pts], marker='o',
                          label=f'{enc} ({dev})')
        ax.set_xlabel('sequence length L')
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = Path(directory) / fname
        run_io.atomic_write(path, lambda f: fig.savefig(f, dpi=110, format='png'))
        plt.close(fig)
        out.append(path)
    return out


__all__ = ['fit_slope', 'sequence_scaling', 'scaling_slopes', 'saved_activation_bytes',
           'propagation', 'evaluation_throughput', 'run_micro', 'render', 'plot_scaling',
           'median_seconds', 'lengths_up_to']
