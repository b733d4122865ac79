r"""``python -m benchmarks``: run the benchmark suites and render their tables.

::

    python -m benchmarks list                       # suites, their tables and runs
    python -m benchmarks run quick                  # synthetic data, a few minutes on 2 cores
    python -m benchmarks run graph --data-root ../shared/data --seeds 3
    python -m benchmarks run seq --data-root ../shared/data --only dpcpl
    python -m benchmarks run speed --data-root ../shared/data --max-len 1024
    python -m benchmarks table graph                # re-render tables and plots, no training
    python -m benchmarks table leaderboard          # also docs/LEADERBOARD.md + bar charts
    python -m benchmarks archive leaderboard        # copy finished results into the archive

Results go to ``RESULTS/<suite>/`` (default ``results/``): one ``<run id>.json`` per finished
run, ``tables.md`` (also printed) and ``curves_<table>.png``; the ``speed`` suite adds
``speed.md``, ``speed_*.json`` and the scaling plots. Finished runs are skipped on re-run and
an interrupted run resumes from its last epoch (see :mod:`benchmarks.runner`).

The ``leaderboard`` suite (any suite with ``--archive DIR``) also copies every finished run's
``<run id>.json`` into ``ARCHIVE/<suite>/`` (default ``benchmarks/archive/`` of this checkout,
tracked by git, or ``$MBGRAPH_BENCH_ARCHIVE``; ``--archive none`` turns it off): a run found
there counts as finished and the tables read it, so a fresh clone renders the same page
without training again. Commit the archived files with the change that reports them. Runs
under ``--epochs`` or ``--lr`` overrides (smoke runs, CPU budgets) are not archived by
``run``; ``archive`` copies whatever is finished.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .config import ConfigError, list_suites, load_suite
from .runner import archive_result, load_results, plan, run_suite
from .tables import write_outputs

ARCHIVE_ENV = 'MBGRAPH_BENCH_ARCHIVE'
DEFAULT_ARCHIVE = Path(__file__).resolve().parent / 'archive'


def _suite_results(args) -> Path:
    return Path(args.results) / Path(args.suite).name


# the suites whose results are archived without --archive: the leaderboard's runs take hours
# each and the page is rendered from all of them; the sequence tables' EBM / DPCPL runs take
# an hour or more each on a CPU, and a fresh checkout (no results/) had lost them every time
ARCHIVED_SUITES = ('leaderboard', 'seq')


def _suite_archive(args) -> Optional[Path]:
    """``ARCHIVE/SUITE``, or None when the archive is off: ``--archive none``, or a suite not
    in ``ARCHIVED_SUITES`` without ``--archive``."""
    where = args.archive
    if where is None:
        if Path(args.suite).name not in ARCHIVED_SUITES:
            return None
        where = os.environ.get(ARCHIVE_ENV) or str(DEFAULT_ARCHIVE)
    if where.strip().lower() in ('none', 'off', ''):
        return None
    return Path(where) / Path(args.suite).name


def _leaderboard(args, tables, found, seeds: Optional[int]) -> bool:
    """The ``leaderboard`` suite also renders docs/LEADERBOARD.md (or ``--docs DIR``) and one
    bar chart per setting beside it; False when the page was left as it is (it shows more
    finished runs than the results at hand). ``seeds``: the seed count the page states
    (None: each table's own; ``run`` passes None, so that training one seed more does not
    render the page as "x of 1")."""
    if Path(args.suite).name != 'leaderboard':
        return True
    from .leaderboard import LeaderboardWouldShrink, write_leaderboard
    docs = Path(args.docs) if args.docs else Path(__file__).resolve().parent.parent / 'docs'
    try:
        _, plots = write_leaderboard(tables, found, docs / 'LEADERBOARD.md', seeds=seeds,
                                     replace=args.replace_docs)
    except LeaderboardWouldShrink as e:
        print(f'warning: {e}', file=sys.stderr)
        return False
    print(f'wrote {docs / "LEADERBOARD.md"}' + ''.join(f', {p}' for p in plots))
    return True


def cmd_list(args) -> int:
    suites = [args.suite] if args.suite else list_suites()
    for suite in suites:
        tables = load_suite(suite)
        runs = plan(tables, seeds=args.seeds, epochs=args.epochs, only=args.only, lr=args.lr)
        print(f'{suite}: {len(tables)} tables, {len(runs)} runs'
              + (' (+ the speed micro-benchmarks)' if suite == 'speed' else ''))
        for t in tables:
            n = sum(1 for p in runs if any(tid == t.id for tid, _ in p.tables))
            print(f'  {t.id:<14} {t.title}  [{", ".join(t.datasets)}; {len(t.rows)} rows; '
                  f'{n} runs]')
            if args.verbose:
                for row in t.rows:
                    sets = ' '.join(f'{k}={v!r}' for k, v in row.set.items())
                    print(f'      {row.name:<28} {row.model} {sets}')
    return 0


def cmd_run(args) -> int:
    tables = load_suite(args.suite)
    results = _suite_results(args)
    archive = _suite_archive(args)
    start = time.perf_counter()
    # smoke runs and CPU budgets (--epochs, --lr) have ids of their own: the archive would
    # only collect them; it still tells which runs are finished
    keep = archive if args.epochs is None and args.lr is None else None
    counts = run_suite(tables, results, Path(args.suite).name, data_root=args.data_root,
                       device=args.device, seeds=args.seeds, epochs=args.epochs,
                       only=args.only, threads=args.threads, dry_run=args.dry_run,
                       progress=not args.no_progress, lr=args.lr, archive=keep)
    if args.suite == 'speed' and (not args.only or 'micro' in args.only):
        from . import speed
        if args.dry_run:
            print('then the speed micro-benchmarks: ' + speed.describe(args))
        else:
            speed.run_micro(args, results)
    if args.dry_run:
        return 0
    found = load_results(results, archive)
    text, plots = write_outputs(tables, found, results, Path(args.suite).name,
                                seeds=args.seeds, epochs=args.epochs, lr=args.lr)
    print()
    print(text)
    _leaderboard(args, tables, found, seeds=None)
    if args.suite == 'speed':
        from . import speed
        print(speed.render(results))
    print(f'wrote {results / "tables.md"}' + ''.join(f', {p}' for p in plots))
    if keep is not None and counts['done']:
        print(f'archived {counts["done"]} finished run(s) in {keep} (commit them with the '
              'change that reports them)')
    print(f'suite {Path(args.suite).name}: {counts["done"]} run, {counts["skipped"]} skipped '
          f'(finished earlier), {counts["failed"]} failed'
          + (f', {counts["locked"]} in use by another runner' if counts.get('locked') else '')
          + (f', datasets not found: {", ".join(counts["missing_data"])}'
             if counts['missing_data'] else '')
          + f'; {time.perf_counter() - start:.0f} s')
    return 1 if counts['failed'] else 0


def cmd_table(args) -> int:
    tables = load_suite(args.suite)
    results = _suite_results(args)
    found = load_results(results, _suite_archive(args))
    if not found and not (results / 'speed.md').is_file():
        print(f'no results under {results}: run `python -m benchmarks run {args.suite}` first',
              file=sys.stderr)
    text, plots = write_outputs(tables, found, results, Path(args.suite).name,
                                seeds=args.seeds, epochs=args.epochs, lr=args.lr)
    print(text)
    page_written = _leaderboard(args, tables, found, seeds=args.seeds)
    if args.suite == 'speed':
        from . import speed
        extra = speed.render(results)
        if extra:
            print(extra)
    print(f'wrote {results / "tables.md"}' + ''.join(f', {p}' for p in plots))
    return 0 if page_written else 1


def cmd_archive(args) -> int:
    results = _suite_results(args)
    archive = _suite_archive(args)
    if archive is None:
        raise ConfigError('--archive none: there is no archive to copy into')
    found = load_results(results)
    if not found:
        print(f'no finished runs under {results}', file=sys.stderr)
        return 1
    new = sum(not (archive / f'{rid}.json').is_file() for rid in found)
    for rid in sorted(found):
        archive_result(archive, results / f'{rid}.json')
    print(f'archived {len(found)} finished run(s) of {results} in {archive} ({new} new)')
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m benchmarks',
                                description=__doc__.split('\n\n')[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)

    def common(s, training: bool):
        s.add_argument('--results', default='results',
                       help='results folder; each suite writes RESULTS/SUITE (default results)')
        s.add_argument('--archive', default=None, metavar='DIR',
                       help='folder of archived result files, ARCHIVE/SUITE (default for '
                       f'the suites {", ".join(ARCHIVED_SUITES)}: ${ARCHIVE_ENV} or '
                       'benchmarks/archive of this checkout, which git tracks; other suites: '
                       'none); none turns it off')
        s.add_argument('--seeds', type=int, default=None,
                       help='seeds per run (0..N-1), overriding the config files')
        s.add_argument('--epochs', type=int, default=None,
                       help='epochs per run, overriding the config files (for smoke runs: '
                       'they get their own run ids)')
        s.add_argument('--lr', type=float, default=None,
                       help='learning rate of every run, overriding the config files (e.g. a '
                       'CPU budget: --epochs 10 --lr 5e-3; such runs get their own ids)')
        s.add_argument('--only', default=None, metavar='PATTERN',
                       help='keep runs whose id, table id, row name or model matches '
                       '(shell pattern; comma-separated, and a comma followed by a space is '
                       'part of a row name; a bare word matches anywhere; with `run`, a '
                       'pattern that matches nothing is an error)')
        s.add_argument('--docs', default=None, metavar='DIR',
                       help='leaderboard suite: folder for LEADERBOARD.md and its bar charts '
                       '(default docs/ of this repository)')
        s.add_argument('--replace-docs', action='store_true',
                       help='leaderboard suite: write LEADERBOARD.md even when the results at '
                       'hand (results and archive) hold fewer finished runs than the page '
                       'shows (by default it is left as it is)')
        if training:
            s.add_argument('--data-root', default=None,
                           help='folder holding the datasets (e.g. ../shared/data); datasets '
                           'not found there are reported and skipped')
            s.add_argument('--device', default='cpu', help='cpu | cuda | cuda:N | auto')
            s.add_argument('--threads', type=int, default=None,
                           help='torch CPU threads per run (1 is often fastest on a busy '
                           'machine)')
            s.add_argument('--dry-run', action='store_true',
                           help='print the runs and their commands, run nothing')
            s.add_argument('--no-progress', action='store_true', help='no progress bars')
            s.add_argument('--max-len', type=int, default=None,
                           help='speed suite: longest sequence of the EBM vs self-attention '
                           'scaling (default 1024 on CPU, 4096 on CUDA)')

    r = sub.add_parser('run', help='run a suite (only what is not finished yet)')
    r.add_argument('suite', help='quick | graph | seq | speed, or a folder of config files')
    common(r, True)
    r.set_defaults(func=cmd_run)

    t = sub.add_parser('table', help='render tables.md and the plots from RESULTS/SUITE')
    t.add_argument('suite')
    common(t, False)
    t.set_defaults(func=cmd_table)

    a = sub.add_parser('archive', help='copy the finished runs of RESULTS/SUITE into '
                       'ARCHIVE/SUITE (tracked by git)')
    a.add_argument('suite')
    common(a, False)
    a.set_defaults(func=cmd_archive)

    ls = sub.add_parser('list', help='list the suites, their tables and runs')
    ls.add_argument('suite', nargs='?', default=None)
    ls.add_argument('-v', '--verbose', action='store_true', help='also the rows')
    common(ls, False)
    ls.set_defaults(func=cmd_list)
    return p


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _check_args(args) -> None:
    """The overrides' types and ranges, as ``mbgraph train`` checks them (``--seeds 0``
    would run nothing)."""
    from mbgraph.validation import OptionError, check_device, check_options
    try:
        check_options({'epochs': args.epochs, 'lr': args.lr,
                       'threads': getattr(args, 'threads', None),
                       'max_len': getattr(args, 'max_len', None)},
                      lambda k: '--' + k.replace('_', '-'))
        if getattr(args, 'device', None) is not None:
            check_device(args.device, '--device')
    except OptionError as e:
        raise ConfigError(str(e)) from None
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f'--seeds={args.seeds}: expected an integer >= 1 (seeds 0..N-1)')
    results = Path(args.results)
    if results.exists() and not results.is_dir():
        raise ConfigError(f'--results={args.results!r}: expected a folder (it is a file)')


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == 'run':
        # `kill PID` stops the runner like Ctrl-C: the running subprocess is terminated too
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        _check_args(args)
        return args.func(args)
    except ConfigError as e:
        print(f'benchmarks: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('\nbenchmarks: interrupted; the same command continues where this stopped '
              '(finished runs are skipped, the interrupted one resumes from its checkpoint)',
              file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
