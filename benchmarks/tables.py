r"""Result tables in the papers' layout, and training-curve plots.

One markdown table per configuration file (paper table): rows = the file's rows, columns =
datasets x the file's ``columns`` (default HR@10, NDCG@10 of the test split), each cell
``mean ± std`` over the finished seeds (sample standard deviation, ``n - 1``; the value alone
when one seed finished), plus ``n=`` when fewer seeds finished than the table asks for, and a
``paper`` column per dataset with the numbers the paper reports for that row, where it gives
them. ``-`` marks a run not finished (or a dataset not found).
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mbgraph import io as run_io

from .config import Table, expand

#: short labels of the usual metric paths
LABELS = {
    'test.hr@10': 'HR@10', 'test.ndcg@10': 'NDCG@10', 'test.hr@20': 'HR@20',
    'test.ndcg@20': 'NDCG@20', 'test_full.hr@10': 'HR@10 full',
    'test_full.ndcg@10': 'NDCG@10 full', 'test_full_unseen.hr@10': 'HR@10 full, unseen',
    'test_full_unseen.ndcg@10': 'NDCG@10 full, unseen', 'test_novel.hr@10': 'HR@10 novel',
    'test_novel.ndcg@10': 'NDCG@10 novel', 'test_novel.pairs': 'novel pairs',
    'epoch_seconds': 's/epoch',
    'eval_seconds': 'eval s', 'peak_rss_mb': 'peak RSS MB', 'tuned_share': 'tuned share',
    'tuned_parameters': 'tuned params', 'total_parameters': 'params',
    'best_epoch': 'best epoch', 'epochs_run': 'epochs', 'wall_seconds': 'wall s',
    'pretrain.seconds': 'pre-train s', 'train_minutes': 'train min',
    'val.hr@10': 'val HR@10', 'pretrain.test.hr@10': 'backbone HR@10',
    'pretrain.test_full.hr@10': 'backbone HR@10 full',
}


def label(column: str) -> str:
    return LABELS.get(column, column)


def lookup(result: Dict[str, Any], path: str) -> Optional[float]:
    """``'test.hr@10'`` -> ``result['metrics']['test']['hr@10']`` (``wall_seconds`` is read
    from the result itself; ``train_minutes`` is the median epoch times the epochs run, over
    60: what the training cost on the run's machine, resumed runs included); None when
    absent."""
    if path == 'train_minutes':
        seconds, epochs = lookup(result, 'epoch_seconds'), lookup(result, 'epochs_run')
        return None if seconds is None or epochs is None else seconds * epochs / 60.0
    node: Any = result if path == 'wall_seconds' else result.get('metrics', {})
    for part in path.split('.'):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) \
        else None


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    if len(values) == 1:
        return float(values[0]), None
    return statistics.fmean(values), statistics.stdev(values)


def _digits(path: str, value: float) -> str:
    if path in ('epoch_seconds', 'eval_seconds', 'wall_seconds', 'pretrain.seconds'):
        return f'{value:.2f}'
    if path == 'train_minutes':
        return f'{value:.1f}'
    if path in ('peak_rss_mb', 'tuned_parameters', 'total_parameters', 'best_epoch',
                'epochs_run'):
        return f'{value:.0f}'
    if path == 'tuned_share':
        return f'{100 * value:.2f}%'
    return f'{value:.4f}'


def format_cell(path: str, values: Sequence[float], wanted: int) -> str:
    if not values:
        return '-'
    mean, std = mean_std(values)
    text = _digits(path, mean)
    if std is not None:
        text += ' ± ' + _digits(path, std).rstrip('%') + ('%' if path == 'tuned_share' else '')
    if len(values) < wanted:
        text += f' (n={len(values)})'
    return text


def table_cells(table: Table, results: Dict[str, Dict[str, Any]],
                seeds: Optional[int] = None, epochs: Optional[int] = None,
                lr: Optional[float] = None) -> Dict[Tuple[str, str], List[Dict[str, Any]]]:
    """(row name, dataset) -> the finished results of that cell's seeds."""
    cells: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for row, run in expand(table, seeds=seeds, epochs=epochs, lr=lr):
        found = results.get(run.id)
        cells.setdefault((row.name, run.dataset), [])
        if found is not None:
            cells[(row.name, run.dataset)].append(found)
    return cells


def render_table(table: Table, results: Dict[str, Dict[str, Any]],
                 seeds: Optional[int] = None, epochs: Optional[int] = None,
                 lr: Optional[float] = None) -> str:
    """The markdown of one paper table (title, note, table)."""
    cells = table_cells(table, results, seeds, epochs, lr)
    wanted = seeds if seeds is not None else table.seeds
    datasets = list(table.datasets)
    has_paper = {d: any(d in r.paper for r in table.rows) for d in datasets}
    header = ['model']
    for d in datasets:
        header += [f'{d} {label(c)}' for c in table.columns]
        if has_paper[d]:
            header.append(f'{d} paper')
    lines = [f'### {table.title}', '']
    if table.paper:
        lines += [f'Reproduces: {table.paper}. Config: `{_rel(table.path)}`.', '']
    if table.note:
        lines += [table.note.strip(), '']
    lines += ['| ' + ' | '.join(header) + ' |',
              '|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|']
    for row in table.rows:
        out = [row.name]
        for d in datasets:
            found = cells.get((row.name, d), [])
            for c in table.columns:
                values = [v for v in (lookup(r, c) for r in found) if v is not None]
                out.append(format_cell(c, values, row.seed_count(wanted)))
            if has_paper[d]:
                nums = row.paper.get(d)
                out.append(' / '.join(f'{v:.4f}' for v in nums) if nums else '')
        lines.append('| ' + ' | '.join(out) + ' |')
    finished = sum(len(v) for v in cells.values())
    total = sum(row.seed_count(wanted) for row in table.rows for _ in datasets)
    foot = f'{finished} of {total} runs finished; cells are mean ± sample std over seeds'
    if any(has_paper.values()):
        foot += '; `paper` = the HR@10 / NDCG@10 the paper reports'
    lines += ['', foot + '.', '']
    return '\n'.join(lines)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(path)


def render_suite(tables: Sequence[Table], results: Dict[str, Dict[str, Any]], suite: str,
                 seeds: Optional[int] = None, epochs: Optional[int] = None,
                 lr: Optional[float] = None) -> str:
    parts = [f'# Benchmark suite `{suite}`', '',
             'Rendered by `python -m benchmarks table ' + suite + '` from the result JSON files '
             'next to this file.', '']
    envs = {(r['metrics'].get('environment') or {}).get('git_commit') for r in results.values()}
    envs.discard(None)
    if envs:
        parts += [f'Git commit(s) of the runs: {", ".join(sorted(envs))}.', '']
    for table in tables:
        parts.append(render_table(table, results, seeds, epochs, lr))
    return '\n'.join(parts)


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def plot_curves(table: Table, results: Dict[str, Dict[str, Any]], out: Path,
                metric: str = 'ndcg@10', seeds: Optional[int] = None,
                epochs: Optional[int] = None, lr: Optional[float] = None) -> Optional[Path]:
    """``out``: validation ``metric`` against epoch, one panel per dataset, one line per row
    (the mean over the finished seeds at each evaluated epoch). None when matplotlib is
    missing or no run has a curve."""
    plt = _pyplot()
    if plt is None:
        return None
    cells = table_cells(table, results, seeds, epochs, lr)
    datasets = [d for d in table.datasets
                if any(_points(r, metric) for (_, dd), rs in cells.items() if dd == d
                       for r in rs)]
    if not datasets:
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for row in table.rows:
            by_epoch: Dict[int, List[float]] = {}
            for r in cells.get((row.name, d), []):
                for epoch, value in _points(r, metric):
                    by_epoch.setdefault(epoch, []).append(value)
            if by_epoch:
                xs = sorted(by_epoch)
                ax.plot(xs, [statistics.fmean(by_epoch[x]) for x in xs], marker='.',
                        label=row.name)
        ax.set_title(d)
        ax.set_xlabel('epoch')
        paper = all(not any(isinstance(p.get('val'), dict) for p in r.get('curve') or [])
                    for (_, dd), rs in cells.items() if dd == d for r in rs)
        ax.set_ylabel(f'{"test (watched, paper protocol)" if paper else "validation"} '
                      f'{metric}')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(table.title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    run_io.atomic_write(out, lambda f: fig.savefig(f, dpi=110, format='png'))
    plt.close(fig)
    return out


def _points(result: Dict[str, Any], metric: str) -> List[Tuple[int, float]]:
    """(epoch, validation metric) of the final training stage of a run; for a run under
    ``--protocol paper`` (no validation split) the watched test metric."""
    curve = result.get('curve') or []
    stages = [p.get('stage') for p in curve]
    last = 'prompt' if 'prompt' in stages else None
    split = 'val' if any(isinstance(p.get('val'), dict) for p in curve) else 'test'
    return [(int(p['epoch']), float(p[split][metric])) for p in curve
            if p.get('stage') == last and isinstance(p.get(split), dict)
            and metric in p[split] and not math.isnan(float(p[split][metric]))]


def write_outputs(tables: Sequence[Table], results: Dict[str, Dict[str, Any]], directory: Path,
                  suite: str, seeds: Optional[int] = None, epochs: Optional[int] = None,
                  lr: Optional[float] = None) -> Tuple[str, List[Path]]:
    """Write ``directory/tables.md`` and ``directory/curves_<table>.png``; returns the
    markdown and the plot paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = render_suite(tables, results, suite, seeds, epochs, lr)
    run_io.write_text(directory / 'tables.md', text)
    plots = []
    for table in tables:
        path = plot_curves(table, results, directory / f'curves_{table.id}.png', seeds=seeds,
                           epochs=epochs, lr=lr)
        if path is not None:
            plots.append(path)
    return text, plots
