r"""The multi-behavior leaderboard: docs/LEADERBOARD.md and one bar chart per setting, rendered
from the ``leaderboard`` suite's result JSON files (``python -m benchmarks table leaderboard``).

Every table of the suite is one setting (a dataset and its behaviors). The page has

* the settings: each dataset named by shape as well as by name (the same 15,449 x 11,953 data
  is called Taobao in some papers and Tmall in others), its behaviors, and the shortcut shares
  of its test split (:mod:`mbgraph.data.shortcuts`, read from the runs' ``metrics.json``);
* an overview, models x settings, HR@10 / NDCG@10, and the same on the test's novel
  pairs (``test_novel``: items the user never met in training);
* per setting: HR@10, NDCG@10, HR@20, NDCG@20 (mean ± sample std over the finished seeds),
  the papers' HR@10 / NDCG@10 beside ours, seconds per epoch, epochs to the best validation
  epoch, peak memory, and a bar chart ``<table id>.png`` next to the page.

Rows are of three kinds, and the page says which question each answers: *trained* (the
graph models: what they learn from the graph), *training-free* (popularity, the user's own
history, CascadingRank) and *hybrid* (a trained model plus learned history biases,
:mod:`mbgraph.models.hybrid`: the history shortcut exploited on purpose). A cell whose runs
have not finished reads "not run".
"""
from __future__ import annotations

import re
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mbgraph import io as run_io

from .config import BLEND_PREFIX, Table, is_training_free
from .tables import _digits, _pyplot, label, lookup, mean_std, table_cells

#: what the loaders give for the datasets of the suite: display name, users, items, and a note
SHAPES: Dict[str, Tuple[str, int, int, str]] = {
    'taobao': ('Taobao', 15449, 11953, 'the MB-GMN / PKEF files; some papers call this data '
               'Tmall'),
    'retailrocket': ('RetailRocket', 2174, 30113, "SSLRec's files"),
}

METRICS = ['test.hr@10', 'test.ndcg@10', 'test.hr@20', 'test.ndcg@20', 'test_novel.hr@10']
COSTS = [('epoch_seconds', 's / epoch'), ('train_minutes', 'train min'),
         ('best_epoch', 'epochs to best'), ('peak_rss_mb', 'peak RSS MB')]
NOT_RUN = 'not run'

KINDS = {
    'trained': 'a graph model trained on the multiplex graph: what it learns of the users\' '
               'preferences from the graph (its propagation over the auxiliary behaviors '
               'may pick up the history signal too, without being told)',
    'training-free': 'no parameters: popularity, the user\'s own viewed / carted items '
                     '(`history`: the shortcut alone), CascadingRank\'s ranking propagation',
    'hybrid': 'a trained model\'s standardised score plus learned per-behavior biases for '
              'the user\'s own training items (`hybrid:BASE`), or a blend of a trained '
              'model\'s and a training-free ranking\'s standardised scores with weights '
              'fitted on validation (`blend:A+B`): the history shortcut exploited on '
              'purpose. It answers "how well can the test buys be ranked when the history '
              'is used", not "how well does the model learn preferences"',
}


def row_kind(model: str) -> str:
    """``'hybrid'``, ``'training-free'`` or ``'trained'``."""
    key = model.lower()
    if key.startswith(('hybrid:', BLEND_PREFIX)):
        return 'hybrid'
    return 'training-free' if is_training_free(key) else 'trained'


def dataset_name(dataset: str) -> str:
    """``'Taobao (15,449 x 11,953)'``: the name and the shape (users x items)."""
    if dataset in SHAPES:
        name, users, items, _ = SHAPES[dataset]
        return f'{name} ({users:,} x {items:,})'
    return dataset


def _behaviors(table: Table, dataset: str, found: Sequence[Dict[str, Any]]) -> str:
    for r in found:
        b = (r.get('metrics', {}).get('config') or {}).get('behaviors')
        if b:
            return ' -> '.join(b)
    b = table.dataset_hyper.get(dataset, {}).get('behaviors')
    return ' -> '.join(str(b).split(',')) if b else '(the loader\'s)'


def _shortcuts(found: Sequence[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    for r in found:
        s = r.get('metrics', {}).get('shortcuts')
        if isinstance(s, dict) and s.get('pairs'):
            return s
    return None


def _cell(path: str, runs: Sequence[Dict[str, Any]], wanted: int,
          training_free: bool = False) -> str:
    if not runs:
        return NOT_RUN
    if training_free and path in ('epoch_seconds', 'train_minutes', 'best_epoch'):
        return 'no training'
    values = [v for v in (lookup(r, path) for r in runs) if v is not None]
    if not values:
        return '-'
    mean, std = mean_std(values)
    text = _digits(path, mean)
    if std is not None:
        text += ' ± ' + _digits(path, std)
    return text


def _seeds(runs: Sequence[Dict[str, Any]], wanted: int) -> str:
    return f'{len(runs)} of {wanted}' if runs else f'0 of {wanted}'


def _finished_run_count(tables: Sequence[Table], results: Dict[str, Dict[str, Any]],
                        seeds: Optional[int]) -> int:
    """The finished runs a page of ``tables`` shows (counted as :func:`render_leaderboard`
    states them)."""
    return sum(len(rs) for t in tables for rs in table_cells(t, results, seeds).values())


def render_leaderboard(tables: Sequence[Table], results: Dict[str, Dict[str, Any]],
                       seeds: Optional[int] = None, charts: Optional[Dict[str, str]] = None,
                       command: str = 'python -m benchmarks table leaderboard') -> str:
    """The markdown of docs/LEADERBOARD.md; ``charts`` maps a table id to its PNG's name."""
    charts = charts or {}
    cells = {t.id: table_cells(t, results, seeds) for t in tables}
    wanted = {t.id: seeds if seeds is not None else t.seeds for t in tables}
    runs = [r for c in cells.values() for rs in c.values() for r in rs]
    lines = ['# Multi-behavior leaderboard', '',
             f'Rendered by `{command}` (benchmarks/leaderboard.py) from the `leaderboard` '
             f'suite\'s result files, {time.strftime("%Y-%m-%d")}; the runs: '
             '`python -m benchmarks run leaderboard --data-root DIR` (a trained row takes minutes '
             'to hours of one CPU thread: its "train min", the median epoch times the epochs '
             'run). Protocol: full ranking over all items, the user\'s '
             'training buys (and validation buy) masked, every test user. Cells are mean ± '
             'sample std over the finished seeds; "not run" marks a cell without a finished '
             'run of the suite\'s current configuration (runs under other settings, such as '
             'a CPU budget, are in [RESULTS.md](RESULTS.md) with their commands). "HR@10 '
             'novel": the same runs on the test pairs whose item the user met under no '
             'behavior in training, every training item masked (metrics.json `test_novel`; '
             'History scores exactly MostPop there; "-": a run from before it was recorded).',
             '']
    commits = sorted({(r['metrics'].get('environment') or {}).get('git_commit')
                      for r in runs} - {None})
    if commits:
        lines += [f'{len(runs)} finished runs, git commit(s) {", ".join(commits)}.', '']
    lines += ['Three kinds of rows answer different questions:', '']
    lines += [f'- **{k}**: {v}.' for k, v in KINDS.items()]
    lines += ['', '## Settings and their shortcut', '',
              'Shortcut: the share of test buys that the same user had under an auxiliary '
              'behavior in training, items the protocol leaves among the candidates.', '',
              '| setting | dataset (users x items) | behaviors | test pairs | shortcut '
              '(test buys already in the user\'s training) |', '|---|---|---|---:|---|']
    for t in tables:
        for d in t.datasets:
            found = [r for (_, dd), rs in cells[t.id].items() if dd == d for r in rs]
            s = _shortcuts(found)
            if s is None:
                share, pairs = NOT_RUN, '-'
            else:
                parts = [f'{b} {100 * v:.1f}%' for b, v in s['share'].items() if v is not None]
                share = ', '.join(parts) + (f'; any {100 * s["any"]:.1f}%' if parts else '')
                share = share or '(no auxiliary behavior)'
                pairs = f'{s["pairs"]:,}'
            note = f' ({SHAPES[d][3]})' if d in SHAPES else ''
            lines.append(f'| `{t.id}` | {dataset_name(d)}{note} | {_behaviors(t, d, found)} '
                         f'| {pairs} | {share} |')
    # overviews: models x settings, on the whole test and on its novel pairs
    lines += _overview(tables, cells, 'test', '## Overview: HR@10 / NDCG@10')
    lines += _overview(tables, cells, 'test_novel',
                       '## Overview without the shortcut: HR@10 / NDCG@10 on the novel pairs',
                       'The test pairs whose item the user met under no behavior in '
                       'training, every training item masked (`test_novel`): what a model '
                       'finds beyond the user\'s own history.')
    for t in tables:
        lines += ['', *_setting(t, cells[t.id], wanted[t.id], charts.get(t.id))]
    return '\n'.join(lines) + '\n'


def _overview(tables: Sequence[Table], cells, split: str, title: str,
              note: str = '') -> List[str]:
    """The models x settings table of HR@10 / NDCG@10 of ``split`` (a metrics.json key)."""
    columns = [(t, d) for t in tables for d in t.datasets]
    names: List[Tuple[str, str]] = []
    for t in tables:
        for row in t.rows:
            if (row.name, row.model) not in names:
                names.append((row.name, row.model))
    lines = ['', title, '', *([note, ''] if note else []),
             '| model | kind | ' + ' | '.join(f'{dataset_name(d)}, {_short(t)}'
                                               for t, d in columns) + ' |',
             '|---|---|' + '---:|' * len(columns)]
    for name, model in names:
        out = [name, row_kind(model)]
        for t, d in columns:
            if not any(r.name == name for r in t.rows):
                out.append('')
                continue
            rs = cells[t.id].get((name, d), [])
            out.append(NOT_RUN if not rs else
                       f'{_mean(rs, split + ".hr@10")} / {_mean(rs, split + ".ndcg@10")}')
        lines.append('| ' + ' | '.join(out) + ' |')
    return lines


def _short(t: Table) -> str:
    """The setting's part of the title after the dataset, e.g. ``pv -> cart -> buy``."""
    return t.title.rsplit(', ', 1)[-1] if ', ' in t.title else t.id


def _mean(runs: Sequence[Dict[str, Any]], path: str) -> str:
    values = [v for v in (lookup(r, path) for r in runs) if v is not None]
    return f'{statistics.fmean(values):.4f}' if values else '-'


def _setting(t: Table, cells, wanted: int, chart: Optional[str]) -> List[str]:
    lines = [f'## {t.title}', '']
    if t.note:
        lines += [t.note.strip(), '']
    if t.paper:
        lines += [f'Papers: {t.paper}.', '']
    for d in t.datasets:
        if len(t.datasets) > 1:
            lines += [f'### {dataset_name(d)}', '']
        header = ['model', 'kind', *(label(c) for c in METRICS), 'paper HR@10 / NDCG@10',
                  *(label for _, label in COSTS), 'seeds']
        lines += ['| ' + ' | '.join(header) + ' |',
                  '|---|---|' + '---:|' * (len(header) - 2)]
        for row in t.rows:
            rs = cells.get((row.name, d), [])
            kind = row_kind(row.model)
            paper = row.paper.get(d)
            n = row.seed_count(wanted)
            out = [row.name, kind, *(_cell(c, rs, n) for c in METRICS),
                   ' / '.join(f'{v:.4f}' for v in paper) if paper else '',
                   *(_cell(c, rs, n, kind == 'training-free') for c, _ in COSTS),
                   _seeds(rs, n)]
            lines.append('| ' + ' | '.join(out) + ' |')
        lines.append('')
    if chart:
        lines += [f'![{t.title}]({chart})', '']
    return lines


def plot_setting(t: Table, results: Dict[str, Dict[str, Any]], out: Path,
                 seeds: Optional[int] = None) -> Optional[Path]:
    """A horizontal bar chart of HR@10 and NDCG@10 per row of ``t`` (mean over the finished
    seeds, the sample std as an error bar, the paper's HR@10 as a marker); rows not run are
    listed with "not run". None when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return None
    cells = table_cells(t, results, seeds)
    d = t.datasets[0]
    names, hr, hr_err, nd, nd_err, paper = [], [], [], [], [], []
    for row in t.rows:
        rs = cells.get((row.name, d), [])
        h = [v for v in (lookup(r, 'test.hr@10') for r in rs) if v is not None]
        n = [v for v in (lookup(r, 'test.ndcg@10') for r in rs) if v is not None]
        names.append(row.name + ('' if h else f' ({NOT_RUN})'))
        for values, mean, err in ((h, hr, hr_err), (n, nd, nd_err)):
            m, s = mean_std(values) if values else (0.0, None)
            mean.append(m)
            err.append(s or 0.0)
        p = row.paper.get(d)
        paper.append(p[0] if p else None)
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(names) + 1.4))
    ys = list(range(len(names)))
    ax.barh([y - 0.2 for y in ys], hr, height=0.4, xerr=hr_err, label='HR@10', color='C0')
    ax.barh([y + 0.2 for y in ys], nd, height=0.4, xerr=nd_err, label='NDCG@10', color='C1')
    px = [(p, y - 0.2) for p, y in zip(paper, ys) if p is not None]
    if px:
        ax.scatter([p for p, _ in px], [y for _, y in px], marker='|', s=160, color='k',
                   zorder=3, label='paper HR@10')
    ax.set_yticks(ys)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel('test metric (full ranking)')
    ax.set_title(t.title, fontsize=9)
    ax.grid(axis='x', alpha=0.3)
    ax.legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    run_io.atomic_write(out, lambda f: fig.savefig(f, dpi=100, format='png'))
    plt.close(fig)
    return out


_FINISHED = re.compile(r'^(\d+) finished runs', re.MULTILINE)


def finished_runs(text: str) -> int:
    """The number of finished runs a rendered page says it was made from (0 if none)."""
    m = _FINISHED.search(text)
    return int(m.group(1)) if m else 0


class LeaderboardWouldShrink(RuntimeError):
    """The results at hand hold fewer finished runs than the page already shows."""


def write_leaderboard(tables: Sequence[Table], results: Dict[str, Dict[str, Any]],
                      path: Path, seeds: Optional[int] = None,
                      command: str = 'python -m benchmarks table leaderboard',
                      replace: bool = False) -> Tuple[str, List[Path]]:
    """Write the page to ``path`` and one ``<table id>.png`` per table beside it.

    The result files are not part of the repository: a fresh clone (or a results folder
    that lost runs) would render every measured cell as "not run". Unless ``replace``, a page
    made from fewer finished runs than the one at ``path`` is not written
    (:class:`LeaderboardWouldShrink`), and nothing is changed."""
    path = Path(path)
    if not replace and path.is_file():
        runs = _finished_run_count(tables, results, seeds)
        before = finished_runs(path.read_text(encoding='utf-8'))
        if runs < before:
            raise LeaderboardWouldShrink(
                f'{path} shows {before} finished runs, the results at hand hold {runs}: not '
                f'rewritten (its measured rows would read "not run"); run the missing rows, or '
                f'pass --replace-docs to write the smaller page')
    plots = []
    charts = {}
    for t in tables:
        stem = t.id if t.id.startswith('leaderboard') else f'leaderboard_{t.id}'
        png = plot_setting(t, results, path.parent / f'{stem}.png', seeds)
        if png is not None:
            plots.append(png)
            charts[t.id] = png.name
    text = render_leaderboard(tables, results, seeds, charts, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_io.write_text(path, text)
    return text, plots


__all__ = ['LeaderboardWouldShrink', 'SHAPES', 'dataset_name', 'finished_runs', 'plot_setting',
           'render_leaderboard', 'row_kind', 'write_leaderboard']
