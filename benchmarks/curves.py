r"""Metric curves of ``mbgraph train`` runs, from their ``log.jsonl``: a plot and a table.

::

    python -m benchmarks.curves runs/copf_code_cartbuy runs/pkef_code_pcb \
        --metric hr@10 --out docs/img/taobao_test_curves.png

Runs under ``--protocol paper`` have no validation split; their curve is the test split as
the trainer watched it (``record['watch']``: after epoch 1 and every ``--eval-every``
epochs), never used to select an epoch. Other runs give their validation curve. A run that
is still training is read as far as it got.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


def read_points(run_dir: Path, metric: str) -> Tuple[str, List[Tuple[int, float]]]:
    """``(split, [(epoch, value)])`` of one run folder (``'test'`` when watched)."""
    path = Path(run_dir) / 'log.jsonl'
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such file (is {run_dir} a `mbgraph train` --out?)')
    points: Dict[str, List[Tuple[int, float]]] = {'val': [], 'test': []}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(path.read_text().splitlines()):   # a torn last line of a live run
                break
            raise ValueError(f'{path}:{n}: not a JSON line') from None
        for key, split in (('val', 'val'), ('watch', 'test')):
            if isinstance(rec.get(key), dict) and metric in rec[key]:
                points[split].append((int(rec['epoch']), float(rec[key][metric])))
    split = 'val' if points['val'] else 'test'
    return split, points[split]


def markdown(runs: Sequence[Path], metric: str) -> str:
    """One column per run, one row per evaluated epoch."""
    curves = {str(r): dict(read_points(r, metric)[1]) for r in runs}
    epochs = sorted({e for c in curves.values() for e in c})
    head = '| epoch | ' + ' | '.join(Path(r).name for r in curves) + ' |'
    lines = [head, '|' + '---|' * (len(curves) + 1)]
    for e in epochs:
        cells = [f'{c[e]:.4f}' if e in c else '' for c in curves.values()]
        lines.append(f'| {e} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot(runs: Sequence[Path], metric: str, out: Path,
         labels: Optional[Sequence[str]] = None, title: str = '') -> Path:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    splits = set()
    for i, run in enumerate(runs):
        split, pts = read_points(run, metric)
        splits.add(split)
        if pts:
            ax.plot(*zip(*pts), marker='.', label=labels[i] if labels else Path(run).name)
    ax.set_xlabel('epoch')
    what = ' / '.join(sorted('test (watched, not selected)' if s == 'test' else 'validation'
                             for s in splits))
    ax.set_ylabel(f'{what} {metric}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + '.tmp.png')
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='python -m benchmarks.curves', description=__doc__.split(
        '\n\n')[0])
    p.add_argument('runs', nargs='+', type=Path, help='run folders (mbgraph train --out)')
    p.add_argument('--metric', default='hr@10')
    p.add_argument('--out', type=Path, help='PNG to write (needs matplotlib)')
    p.add_argument('--labels', help='legend labels separated by semicolons, one per run')
    p.add_argument('--title', default='')
    args = p.parse_args(argv)
    labels = args.labels.split(';') if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        print(f'--labels names {len(labels)} runs, {len(args.runs)} given', file=sys.stderr)
        return 2
    try:
        print(markdown(args.runs, args.metric))
        if args.out:
            print(f'wrote {plot(args.runs, args.metric, args.out, labels, args.title)}')
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
