r"""Run a suite: every (row, dataset, seed) of its tables as one ``mbgraph train`` subprocess.

For a run with id ``RID`` in suite ``S`` (see :mod:`benchmarks.config`):

* the subprocess writes its checkpoints, ``log.jsonl`` and ``metrics.json`` to
  ``RESULTS/S/runs/RID/`` (it is started with ``--resume``, so a run interrupted by Ctrl-C, a
  crash or a closed session continues from its last finished epoch);
* when it exits with status 0 the runner writes ``RESULTS/S/RID.json``: the run's
  configuration, the command, the whole ``metrics.json`` (test metrics, ``epoch_seconds``,
  ``eval_seconds``, ``peak_rss_mb``, versions, git commit), the validation curve from
  ``log.jsonl``, the wall-clock seconds, and drops ``checkpoint.pt`` (``best.pt`` stays);
* a run whose ``RID.json`` exists is finished and skipped, so re-running a suite only runs what
  is missing (a changed configuration has a new id);
* a failed run writes ``RESULTS/S/RID.failed.json`` (command, status, the end of its stderr)
  and the suite goes on; it is retried on the next invocation;
* with an archive (``ARCHIVE/S/``; the command line's default is this repository's
  ``benchmarks/archive/``, which git tracks) every finished run's ``RID.json`` is copied there
  too, a run found there counts as finished, and the tables read it: ``results/`` holds
  checkpoints and is not in the repository, so without the archive a fresh checkout would
  train every run again to render the same tables.

A run is ``mbgraph train``, i.e. :func:`mbgraph.train_graph_model` or
:func:`mbgraph_seq.train_sequence_model`, in a process of its own rather than a call in this
one: ``peak_rss_mb`` is then that run's own peak, a crashed or killed run takes nothing else
down, and the runner stays a thin caller that adds only scheduling and bookkeeping. The runner
owns its children: each starts in a process group of its own with a parent-death signal
(Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``), so a runner killed even with ``kill -9`` takes
its running child with it, and an interrupted runner (Ctrl-C, SIGTERM) stops the child's whole
group. While a child trains into ``runs/RID/`` the runner holds ``runs/RID/.runner.lock``
(``fcntl.flock``): a second runner on the same results skips that run instead of writing into
it too.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tqdm.auto import tqdm

from mbgraph import io as run_io

from .config import ConfigError, Row, Run, Table, expand, is_sequence_model

MBGMN = ('taobao', 'beibei', 'tmall')


def dataset_available(dataset: str, data_root: Optional[str],
                      data_path: Optional[str] = None) -> Tuple[bool, str]:
    """Whether ``dataset``'s files are where ``mbgraph train`` will look, and where that is."""
    if dataset == 'synthetic':
        return True, 'generated'
    root = data_path or data_root
    if root is None:
        return False, 'no --data-root given'
    root_path = Path(root)
    if dataset == 'csv':
        return root_path.is_file(), str(root_path)
    if dataset in MBGMN:
        names = (dataset, f'{dataset}-mbgmn')
        # the root itself only when it is named after the dataset: the MB-GMN files do not
        # say which dataset they are, and a suite lists several
        candidates = [root_path / n for n in names] + ([root_path] if root_path.name in names
                                                       else [])
        for d in candidates:
            if d.is_dir() and any(d.glob('trn_*')):
                return True, str(d)
        return False, f'no {dataset}/ or {dataset}-mbgmn/ with trn_* files under {root_path}'
    if dataset == 'retailrocket':
        # SSLRec's files (mbgraph.data.sslrec.resolve_sslrec_dir looks in the same places)
        for d in (root_path / 'retailrocket-sslrec', root_path / 'retailrocket', root_path):
            if d.is_dir() and any(d.glob('train_mat_*.pkl')):
                return True, str(d)
        return False, f'no retailrocket-sslrec/ with train_mat_*.pkl files under {root_path}'
    if dataset in ('ml-latest-small', 'movielens'):
        for d in (root_path / 'ml-latest-small', root_path):
            if (d / 'ratings.csv').is_file():
                return True, str(d)
        return False, f'no ml-latest-small/ratings.csv under {root_path}'
    return False, f'unknown dataset {dataset!r}'


@dataclass
class Planned:
    """A run of a suite with the table rows that show it."""
    run: Run
    tables: List[Tuple[str, str]]   # (table id, row name)


def split_patterns(only: str) -> List[str]:
    """The patterns of an ``--only`` value: separated by commas, except a comma followed by a
    space, which belongs to a row name ("Fine-tuning, lr 1e-3 (pre-trained EBM, all
    parameters)" is one pattern; "dpcpl_t4,dpcpl_t5/w/o PS" two)."""
    return [p for p in (s.strip() for s in re.split(r',(?!\s)', only)) if p]


def plan(tables: Sequence[Table], seeds: Optional[int] = None, epochs: Optional[int] = None,
         only: Optional[str] = None, lr: Optional[float] = None,
         strict: bool = False, ignore: Sequence[str] = ()) -> List[Planned]:
    """Every distinct run of ``tables`` (a run asked for by several tables appears once).

    ``only`` keeps the runs whose id, table id, row name or model matches the shell pattern
    (``fnmatch``; several patterns, see :func:`split_patterns`; a bare word matches as
    ``*word*``). ``strict``: a pattern that matches no run is an error (a typo would otherwise
    run less than asked for, silently), except the words in ``ignore`` (the speed suite's
    ``micro``, which names no run)."""
    patterns = None
    if only:
        names = split_patterns(only)
        patterns = {n: n if any(c in n for c in '*?[') else f'*{n}*' for n in names}
    used = set()
    seen: Dict[str, Planned] = {}
    for table in tables:
        for row, run in expand(table, seeds=seeds, epochs=epochs, lr=lr):
            if patterns is not None:
                keys = (run.id, table.id, row.name, run.model, f'{table.id}/{row.name}')
                hits = {n for n, p in patterns.items()
                        if any(fnmatch.fnmatch(k.lower(), p.lower()) for k in keys)}
                if not hits:
                    continue
                used |= hits
            if run.id in seen:
                seen[run.id].tables.append((table.id, row.name))
            else:
                seen[run.id] = Planned(run, [(table.id, row.name)])
    if strict and patterns is not None:
        unmatched = [n for n in patterns if n not in used and n not in ignore]
        if unmatched:
            raise ConfigError(
                '--only: no run of these tables matches ' + ', '.join(repr(n) for n in unmatched)
                + ' (patterns match a run id, table id, row name, model or "table/row"; '
                'separate patterns by commas without a space after them)')
    return list(seen.values())


def result_path(results: Path, run: Run) -> Path:
    return results / f'{run.id}.json'


def archive_result(archive: Path, source: Path) -> Path:
    """Copy the finished run's result JSON ``source`` into the folder ``archive`` (written to
    a temporary file and renamed, as every result is); returns the archived path."""
    obj = json.loads(Path(source).read_text())
    if 'run_id' not in obj or 'metrics' not in obj:
        raise ValueError(f'{source}: not a finished run\'s result (no run_id / metrics)')
    dest = Path(archive) / f"{obj['run_id']}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    _write_json(dest, obj)
    return dest


def read_curve(run_dir: Path) -> List[Dict[str, Any]]:
    """``[{epoch, loss, val: {...}}]`` from the run's ``log.jsonl`` (DPCPL: the prompt-tuning
    stage's, with the pre-training stage's under ``stage='pretrain'`` first); under
    ``--protocol paper`` the watched test metrics are under ``test`` instead of ``val``."""
    curve = []
    for stage, path in (('pretrain', run_dir / 'pretrain' / 'log.jsonl'),
                        ('prompt', run_dir / 'prompt' / 'log.jsonl'),
                        (None, run_dir / 'log.jsonl')):
        if not path.is_file():
            continue
        for rec in run_io.read_jsonl(path):     # a torn last line is skipped
            point = {'epoch': rec.get('epoch'), 'loss': rec.get('loss'),
                     'epoch_seconds': rec.get('epoch_seconds')}
            if 'val' in rec:
                point['val'] = rec['val']
            if 'watch' in rec:      # --protocol paper: the test split, watched, never selected
                point['test'] = rec['watch']
            if stage is not None:
                point['stage'] = stage
            curve.append(point)
    return curve


def _write_json(path: Path, obj: Dict[str, Any]) -> None:
    run_io.write_json(path, obj, default=str)


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int):
    """A ``preexec_fn``: the child gets SIGKILL when the runner dies (Linux; elsewhere only
    the process group below), and exits at once if the runner is already gone. libc is
    looked up here, in the runner: between fork and exec the child only calls it."""
    prctl = None
    if sys.platform.startswith('linux'):
        try:
            import ctypes
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None

    def setup() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:      # the runner died before prctl took effect
            os._exit(1)
    return setup


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the child's process group, killing it after 10 seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _epochs_done(run_dir: Path) -> int:
    """Epochs finished so far: lines of the run's ``log.jsonl`` files (DPCPL has two)."""
    n = 0
    for path in (run_dir / 'log.jsonl', run_dir / 'pretrain' / 'log.jsonl',
                 run_dir / 'prompt' / 'log.jsonl'):
        try:
            with open(path, 'rb') as f:
                n += sum(1 for _ in f)
        except OSError:
            pass
    return n


def _total_epochs(run: Run, pretrained: bool = False) -> int:
    epochs = int(run.hyper.get('epochs', 100))
    if run.hyper.get('stage') == 'pretrain':
        return int(run.set.get('pretrain_epochs') or epochs)
    if run.model == 'dpcpl' and run.hyper.get('stage', 'both') == 'both' and not pretrained:
        epochs += int(run.set.get('pretrain_epochs') or epochs)
    return epochs


def _subprocess(cmd: List[str], run_dir: Path, total: int, threads: Optional[int],
                progress: bool, desc: str = '  epochs') -> Tuple[int, float]:
    """Run ``cmd`` to completion, output to ``run_dir/stdout.log`` and ``stderr.log``, an
    epoch bar following its ``log.jsonl``; returns (exit status, seconds)."""
    env = dict(os.environ)
    if threads is not None:
        env['OMP_NUM_THREADS'] = str(threads)
    # the subprocess must import this checkout's mbgraph even when it is not installed
    root = str(Path(__file__).resolve().parent.parent)
    env['PYTHONPATH'] = root + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit='epoch', leave=False, position=1,
               disable=not progress, dynamic_ncols=True)
    with open(run_dir / 'stdout.log', 'w') as out, open(run_dir / 'stderr.log', 'w') as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent(os.getpid()))
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                if progress:
                    done = _epochs_done(run_dir)
                    if done > bar.n:
                        bar.update(min(done, total) - bar.n)
        except BaseException:   # Ctrl-C: stop the run; its checkpoint resumes it next time
            _stop(proc)
            raise
        finally:
            bar.close()
    return proc.returncode, time.perf_counter() - start


def _failure(run_dir: Path, rc: int) -> Tuple[Dict[str, Any], str]:
    """What a failed subprocess left: (fields for the failure JSON, its last stderr line)."""
    err_text = (run_dir / 'stderr.log').read_text(errors='replace')[-4000:]
    last = [ln for ln in err_text.strip().splitlines() if ln.strip()][-1:] or ['(no output)']
    return ({'returncode': rc, 'stderr_tail': err_text,
             'stdout': (run_dir / 'stdout.log').read_text(errors='replace')[-2000:]},
            last[0].strip()[-300:])


def pretrain_paths(results: Path, pre: Run) -> Tuple[Path, Path]:
    """(folder, saved backbone) of the shared pre-training run ``pre`` under ``results``."""
    pre_dir = Path(results) / 'pretrained' / pre.id
    return pre_dir, pre_dir / 'pretrain' / 'ebm.pt'


def pretrain(pre: Run, results: Path, *, data_root: Optional[str], device: str,
             threads: Optional[int], progress: bool) -> Tuple[Optional[Path], Dict[str, Any]]:
    """Make sure DPCPL's shared pre-training run ``pre`` (:meth:`Run.pretraining` of the runs
    that tune it) exists under ``results/pretrained/``: run it if it does not. Returns (the
    backbone's path or None if the pre-training failed, facts for the result JSON)."""
    pre_dir, ebm = pretrain_paths(results, pre)
    cmd = pre.command(data_root, pre_dir, device=device, threads=threads, progress=False)
    facts: Dict[str, Any] = {'id': pre.id, 'dir': str(pre_dir), 'command': cmd,
                             'reused': (pre_dir / 'metrics.json').is_file() and ebm.is_file()}
    if facts['reused']:
        return ebm, facts
    pre_dir.mkdir(parents=True, exist_ok=True)
    rc, seconds = _subprocess(cmd, pre_dir, _total_epochs(pre), threads, progress,
                              desc='  pre-training')
    facts['wall_seconds'] = seconds
    if rc != 0 or not (pre_dir / 'metrics.json').is_file() or not ebm.is_file():
        fields, last = _failure(pre_dir, rc)
        facts.update(fields)
        facts['error'] = f'pre-training {pre.id} failed (exit {rc}): {last}'
        return None, facts
    return ebm, facts


def execute(planned: Planned, results: Path, *, data_root: Optional[str], device: str,
            threads: Optional[int], progress: bool, suite: str,
            echo=print) -> Dict[str, Any]:
    """Run one subprocess to completion and write its result JSON; returns the result.

    The subprocess's output goes to ``runs/RID/stdout.log`` and ``stderr.log``; the epoch
    bar follows its ``log.jsonl``. A DPCPL run first makes sure its pre-training run exists
    (:func:`pretrain`, shared by the runs that differ only in how they tune) and then tunes
    that backbone."""
    run = planned.run
    run_dir = results / 'runs' / run.id
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_io.RunLock(run_dir, '.runner.lock', 'running it from a benchmark runner')
    try:
        lock.acquire()
    except run_io.RunLockedError as e:
        echo(f'SKIPPED {run.id}: {e}')
        return {'run_id': run.id, 'suite': suite, 'returncode': None, 'locked': str(e)}
    try:
        done = result_path(results, run)
        if done.is_file():   # another runner finished it between our plan and our lock
            return {**json.loads(done.read_text()), 'finished_elsewhere': True}
        return _execute(planned, results, run_dir, data_root=data_root, device=device,
                        threads=threads, progress=progress, suite=suite, echo=echo)
    finally:
        lock.release()


def _member_dir(member: Run, results: Path, *, data_root, device, threads, progress, suite,
                echo) -> Tuple[Optional[Path], Optional[str]]:
    """A blend member's finished run folder, training it first when it has no result yet:
    (folder, None), or (None, why it failed)."""
    if not result_path(results, member).is_file():
        echo(f'  blend member {member.id}: training it first')
        out = execute(Planned(member, []), results, data_root=data_root, device=device,
                      threads=threads, progress=progress, suite=suite, echo=echo)
        if 'locked' in out:
            return None, f'member {member.id} is being run by another runner ({out["locked"]})'
        if out.get('returncode', 0) != 0:
            return None, f'member {member.id} failed (exit {out.get("returncode")})'
    return results / 'runs' / member.id, None


def _execute_blend(planned: Planned, results: Path, run_dir: Path, *, data_root, device,
                   threads, progress, suite, echo) -> Dict[str, Any]:
    """A ``blend:`` row (:meth:`Run.blend_parts`): make sure every trained member and its
    validation twin are trained, fit the weights on validation with ``mbgraph blend``, and,
    when the table's protocol is not the validation protocol, apply them to the members of
    the table's protocol (``--weights-from``)."""
    run = planned.run
    failed = results / f'{run.id}.failed.json'
    parts = run.blend_parts()
    base = {'run_id': run.id, 'suite': suite, 'config': run.effective(),
            'tables': [{'table': t, 'row': r} for t, r in planned.tables], 'device': device,
            'threads': threads, 'date': time.strftime('%Y-%m-%d %H:%M:%S'),
            'members': [{'member': name, 'run': None if r is None else r.id,
                         'twin': None if t is None else t.id} for name, r, t in parts]}
    folders: Dict[str, Path] = {}
    for name, member, twin in parts:
        for dep in (twin, member):
            if dep is None or dep.id in folders:
                continue
            folder, why = _member_dir(dep, results, data_root=data_root, device=device,
                                      threads=threads, progress=progress, suite=suite,
                                      echo=echo)
            if folder is None:
                _write_json(failed, {**base, 'returncode': 1, 'error': why})
                echo(f'FAILED {run.id}: {why}')
                return {**base, 'returncode': 1}
            folders[dep.id] = folder
    steps = run.blend_commands(lambda r: folders[r.id], run_dir, data_root, device, threads)
    seconds = 0.0
    for cmd in steps:
        out_dir = Path(cmd[cmd.index('--out') + 1])
        out_dir.mkdir(parents=True, exist_ok=True)
        rc, took = _subprocess(cmd, out_dir, 1, threads, progress, desc='  blend')
        seconds += took
        if rc != 0 or not (out_dir / 'metrics.json').is_file():
            fields, last = _failure(out_dir, rc)
            _write_json(failed, {**base, 'command': cmd, **fields})
            echo(f'FAILED {run.id} (exit {rc}): {last}  (full output: '
                 f'{out_dir / "stderr.log"})')
            return {**base, 'command': cmd, 'returncode': rc}
    metrics = json.loads((run_dir / 'metrics.json').read_text())
    if len(steps) == 2:        # the validation numbers the weights were chosen by
        metrics['val'] = json.loads((run_dir / 'fit' / 'metrics.json').read_text()).get('val')
    result = {**base, 'command': steps[-1], 'commands': steps, 'wall_seconds': seconds,
              'resumed': False, 'metrics': metrics, 'curve': []}
    _write_json(result_path(results, run), result)
    failed.unlink(missing_ok=True)
    return result


def _execute(planned: Planned, results: Path, run_dir: Path, *, data_root, device, threads,
             progress, suite, echo) -> Dict[str, Any]:
    run = planned.run
    if run.blend_parts():
        return _execute_blend(planned, results, run_dir, data_root=data_root, device=device,
                              threads=threads, progress=progress, suite=suite, echo=echo)
    failed = results / f'{run.id}.failed.json'
    extra: Dict[str, Any] = {}
    ebm = None
    pre = run.pretraining()
    if pre is not None:
        ebm, extra['pretrained'] = pretrain(pre, results, data_root=data_root, device=device,
                                            threads=threads, progress=progress)
        if ebm is None:
            base = {'run_id': run.id, 'suite': suite, 'config': run.effective(),
                    'date': time.strftime('%Y-%m-%d %H:%M:%S'), **extra}
            _write_json(failed, {**base, 'returncode': extra['pretrained']['returncode']})
            echo(f"FAILED {run.id}: {extra['pretrained']['error']}  (full output: "
                 f"{extra['pretrained']['dir']}/stderr.log)")
            return {**base, 'returncode': extra['pretrained']['returncode']}
    cmd = run.command(data_root, run_dir, device=device, threads=threads, progress=False,
                      pretrained=ebm)
    resumed = (run_dir / 'checkpoint.pt').is_file()
    rc, seconds = _subprocess(cmd, run_dir, _total_epochs(run, pretrained=ebm is not None),
                              threads, progress)
    base = {'run_id': run.id, 'suite': suite, 'config': run.effective(),
            'tables': [{'table': t, 'row': r} for t, r in planned.tables],
            'command': cmd, 'device': device, 'threads': threads, 'resumed': resumed,
            'wall_seconds': seconds, 'date': time.strftime('%Y-%m-%d %H:%M:%S'), **extra}
    metrics_path = run_dir / 'metrics.json'
    if rc != 0 or not metrics_path.is_file():
        fields, last = _failure(run_dir, rc)
        _write_json(failed, {**base, **fields})
        echo(f'FAILED {run.id} (exit {rc}): {last}  (full output: {run_dir / "stderr.log"})')
        return {**base, 'returncode': rc}
    metrics = json.loads(metrics_path.read_text())
    result = {**base, 'metrics': metrics, 'curve': read_curve(run_dir)}
    _write_json(result_path(results, run), result)
    failed.unlink(missing_ok=True)
    for stale in [run_dir / 'checkpoint.pt', *run_dir.glob('*/checkpoint.pt')]:
        stale.unlink(missing_ok=True)   # only needed to resume; best.pt stays
    return result


def run_suite(tables: Sequence[Table], results: Path, suite: str, *,
              data_root: Optional[str] = None, device: str = 'cpu',
              seeds: Optional[int] = None, epochs: Optional[int] = None,
              only: Optional[str] = None, threads: Optional[int] = None,
              dry_run: bool = False, progress: bool = True, echo=print,
              lr: Optional[float] = None, archive: Optional[Path] = None) -> Dict[str, Any]:
    """Run what is missing of ``tables``; returns counts (done, skipped, failed, missing data).

    ``archive``: a folder of result JSONs (this suite's part of the archive): a run with a
    result there is finished and skipped, and every run finished here is copied into it."""
    results = Path(results)
    archive = None if archive is None else Path(archive)

    def finished(run: Run) -> bool:
        return result_path(results, run).is_file() or (
            archive is not None and result_path(archive, run).is_file())

    runs = plan(tables, seeds=seeds, epochs=epochs, only=only, lr=lr, strict=True,
                ignore=('micro',) if suite == 'speed' else ())
    missing: Dict[str, str] = {}
    todo, skipped = [], 0
    for p in runs:
        ok, where = dataset_available(p.run.dataset, data_root, p.run.hyper.get('data_path'))
        if not ok:
            missing.setdefault(p.run.dataset, where)
            continue
        if finished(p.run):
            skipped += 1
            continue
        todo.append(p)
    for dataset, why in sorted(missing.items()):
        n = sum(p.run.dataset == dataset for p in runs)
        echo(f'skipping dataset {dataset!r} ({n} runs): {why}')
    echo(f'{len(runs)} runs in suite {suite!r}: {skipped} finished (skipped), '
         f'{len(todo)} to run' + (f', {sum(1 for p in runs if p.run.dataset in missing)} '
                                   'without data' if missing else ''))
    if dry_run:
        shown = set()
        for p in todo:
            rows = ', '.join(f'{t}/{r}' for t, r in p.tables)
            echo(f'  {p.run.id}  [{rows}]')
            parts = p.run.blend_parts()
            if parts:
                _show_blend(p.run, parts, results, data_root, device, threads, shown, echo)
                continue
            pre, ebm = p.run.pretraining(), None
            if pre is not None:
                pre_dir, ebm = pretrain_paths(results, pre)
                if pre.id not in shown and not (pre_dir / 'metrics.json').is_file():
                    echo(f'    first the shared pre-training {pre.id}:')
                    echo('    ' + _pasteable(pre.command(data_root, pre_dir, device=device,
                                                         threads=threads)))
                shown.add(pre.id)
            echo('    ' + _pasteable(p.run.command(data_root, results / 'runs' / p.run.id,
                                                   device=device, threads=threads,
                                                   pretrained=ebm)))
        return {'planned': len(runs), 'todo': len(todo), 'skipped': skipped, 'done': 0,
                'failed': 0, 'missing_data': sorted(missing)}
    results.mkdir(parents=True, exist_ok=True)
    run_io.clean_stale_temps(results)   # what killed runners and runs left half written
    done = failed = locked = 0
    bar = tqdm(todo, desc=f'suite {suite}', unit='run', disable=not progress or not todo,
               dynamic_ncols=True, position=0)
    for p in bar:
        bar.set_postfix_str(p.run.id)
        if finished(p.run):
            skipped += 1    # finished by another runner since the plan was made
            continue
        out = execute(p, results, data_root=data_root, device=device, threads=threads,
                      progress=progress, suite=suite, echo=tqdm.write if progress else echo)
        if out.get('finished_elsewhere'):
            skipped += 1
            continue
        if 'locked' in out:
            locked += 1
        elif out.get('returncode', 0) != 0:
            failed += 1
        else:
            done += 1
            if archive is not None:
                archive_result(archive, result_path(results, p.run))
            test = out['metrics'].get('test', {})
            msg = (f'done {p.run.id}: ' + ', '.join(f'{k} {v:.4f}' for k, v in test.items()
                                                    if k.endswith('@10'))
                   + f' ({out["wall_seconds"]:.0f} s)')
            (tqdm.write if progress else echo)(msg)
    bar.close()
    return {'planned': len(runs), 'todo': len(todo), 'skipped': skipped, 'done': done,
            'failed': failed, 'locked': locked, 'missing_data': sorted(missing)}


def _show_blend(run: Run, parts, results: Path, data_root, device, threads, shown: set,
                echo) -> None:
    """Dry run of a ``blend:`` row: the member runs it trains first, then its blend commands."""
    for _, member, twin in parts:
        for dep in (twin, member):
            if dep is None or dep.id in shown or result_path(results, dep).is_file():
                continue
            shown.add(dep.id)
            echo(f'    first the member {dep.id}:')
            echo('    ' + _pasteable(dep.command(data_root, results / 'runs' / dep.id,
                                                 device=device, threads=threads)))
    for cmd in run.blend_commands(lambda r: results / 'runs' / r.id, results / 'runs' / run.id,
                                  data_root, device, threads):
        echo('    ' + _pasteable(cmd))


def _pasteable(cmd: List[str]) -> str:
    """``cmd`` as a shell line that runs as the runner would run it, from any folder: this
    checkout on ``PYTHONPATH``, every argument quoted."""
    root = str(Path(__file__).resolve().parent.parent)
    return f'PYTHONPATH={shlex.quote(root)} ' + shlex.join(cmd)


def load_results(results: Path, archive: Optional[Path] = None) -> Dict[str, Dict[str, Any]]:
    """run id -> result JSON, for every finished run under ``results`` and in ``archive``
    (the one under ``results`` where both have a run)."""
    out = {}
    folders = ([] if archive is None else [Path(archive)]) + [Path(results)]
    for path in (p for folder in folders for p in sorted(folder.glob('*.json'))):
        if path.name.endswith('.failed.json') or path.name.startswith('speed_'):
            continue
        try:
            obj = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if 'run_id' in obj and 'metrics' in obj:
            out[obj['run_id']] = obj
    return out


__all__ = ['plan', 'run_suite', 'execute', 'load_results', 'archive_result',
           'dataset_available', 'read_curve',
           'Planned', 'is_sequence_model', 'Row']
