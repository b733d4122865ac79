r"""Outputs that are never half written, and a run folder that one process owns at a time.

Every file mbgraph writes (``metrics.json``, ``checkpoint.pt``, ``best.pt``, DPCPL's
``ebm.pt``, the benchmark runner's result files) goes through :func:`atomic_write`: the bytes
go to a temporary file in the same folder (``.NAME.PID.tmp``), are flushed and ``fsync``-ed,
and the temporary file is renamed over the target with ``os.replace``, which POSIX makes
atomic. A crash, a kill or a full disk leaves either the old file or the new one, never a
truncated one; a temporary file left by a killed process is removed by
:func:`clean_stale_temps` when the next run starts in that folder.

``log.jsonl`` is appended line by line after the epoch's checkpoint is saved, and a resumed run
rewrites it from the checkpoint's history (so no epoch appears twice or goes missing);
:func:`read_jsonl` skips a torn last line (a kill in the middle of a write).

:class:`RunLock` holds an exclusive ``fcntl.flock`` on ``FOLDER/.lock`` while a process
trains into the folder: a second process asked to train into it is refused with
:class:`RunLockedError` naming the holder's pid. The lock dies with the process that holds it
(the kernel releases it), so a killed run never leaves a stale lock.

Example::

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_json(folder / 'metrics.json', {'hr@10': 0.5})
    >>> read_json(folder / 'metrics.json')
    {'hr@10': 0.5}
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: suffix of the temporary files of :func:`atomic_write`
TEMP_SUFFIX = '.tmp'


class OutputError(OSError):
    """An output could not be written (its folder is a file, not writable, the disk is full);
    the message names the path."""


def _temp_path(path: Path) -> Path:
    return path.with_name(f'.{path.name}.{os.getpid()}{TEMP_SUFFIX}')


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file in the same folder, which
    is flushed, fsync-ed and renamed over ``path``. On any error the temporary file is removed
    and ``path`` keeps its old content."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise OutputError(f'cannot write {path}: {path.parent} is not a folder') from e
    tmp = _temp_path(path)
    try:
        with open(tmp, 'wb' if binary else 'w', **({} if binary else {'encoding': 'utf-8'})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: PathLike, text: str) -> Path:
    """Atomically write ``text`` (utf-8) to ``path``."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def write_json(path: PathLike, obj: Any, default: Callable = float) -> Path:
    """Atomically write ``obj`` as pretty-printed JSON (keys sorted) and a final newline."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=default) + '\n'
    return write_text(path, text)


def read_json(path: PathLike) -> Any:
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)``, atomically."""
    import torch
    return atomic_write(path, lambda f: torch.save(obj, f))


def clean_stale_temps(folder: PathLike) -> List[Path]:
    """Remove the temporary files of :func:`atomic_write` (``.NAME.PID.tmp``) that processes
    no longer running left in ``folder`` (and its sub-folders); returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for tmp in folder.rglob(f'.*{TEMP_SUFFIX}'):
        parts = tmp.name[:-len(TEMP_SUFFIX)].rsplit('.', 1)
        if len(parts) != 2 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid() and _alive(pid):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    if removed:
        log.info('removed %d stale temporary files under %s', len(removed), folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------------
# log.jsonl
# ------------------------------------------------------------------------------------------

def read_jsonl(path: PathLike) -> List[Dict[str, Any]]:
    """The records of a JSON-lines file; a torn last line (a write cut short) is skipped with
    a warning, a bad line elsewhere raises ``ValueError`` naming the file and line."""
    path = Path(path)
    lines = path.read_text(encoding='utf-8', errors='replace').splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n == len(lines):
                log.warning('%s: skipped a torn last line (%d characters)', path, len(line))
                break
            raise ValueError(f'{path}, line {n}: not JSON ({e.msg})') from None
    return out


def append_jsonl(path: PathLike, record: Dict[str, Any]) -> None:
    """Append one record as a line and fsync it."""
    with open(path, 'a', encoding='utf-8') as f:
        f.write(json.dumps(record) + '\n')
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------
# checksums
# ------------------------------------------------------------------------------------------

def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------
# the run folder's lock
# ------------------------------------------------------------------------------------------

class RunLockedError(RuntimeError):
    """Another process trains into the folder."""


class RunLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``folder/name`` (a no-op where fcntl is
    missing). Use as a context manager, or :meth:`acquire` / :meth:`release`.

    ``mbgraph train`` holds ``.lock`` while it trains; the benchmark runner holds
    ``.runner.lock`` while its child trains into the folder. Within one process the lock is
    re-entrant (the CLI holds it around clearing an old run and the Trainer's ``fit``)."""

    _held: Dict[str, int] = {}      # path -> how many acquire() calls this process holds

    def __init__(self, folder: PathLike, name: str = '.lock', what: str = 'training into it'):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what
        self._fd: Optional[int] = None

    def acquire(self) -> 'RunLock':
        try:
            import fcntl
        except ImportError:     # pragma: no cover - not POSIX
            return self
        key = str(self.path.resolve())
        if key in RunLock._held:
            RunLock._held[key] += 1
            self._key = key
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or '?'
                except OSError:
                    holder = '?'
                os.close(fd)
                raise RunLockedError(f'{self.folder} is in use: process {holder} is '
                                     f'{self.what} (wait for it to finish or stop it)') from None
            # the holder before us removes the file when it releases: lock the file that is
            # there now, not one already unlinked
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        self._fd = fd
        self._key = key
        RunLock._held[key] = 1
        return self

    def release(self) -> None:
        """Remove the lock file and release the lock (in that order, see :meth:`acquire`)."""
        key = getattr(self, '_key', None)
        if key is None:
            return
        self._key = None
        RunLock._held[key] -= 1
        if RunLock._held[key] > 0:
            return
        del RunLock._held[key]
        if self._fd is not None:
            import fcntl
            try:
                self.path.unlink()
            except OSError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> 'RunLock':
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ['atomic_write', 'write_bytes', 'write_text', 'write_json', 'read_json', 'torch_save',
           'clean_stale_temps', 'read_jsonl', 'append_jsonl', 'sha256_file',
           'RunLock', 'RunLockedError', 'OutputError', 'TEMP_SUFFIX']
