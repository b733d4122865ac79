r"""The one place that decides whether a run may start, resume or be evaluated.

**Options.** :data:`OPTIONS` gives every run option's type and range; :func:`check_options`
checks a mapping of them (from the command line, a benchmark config file or the Python API)
before any data is loaded and raises :class:`OptionError` naming the option, the value and
what is expected::

    >>> check_options({'batch_size': 0})
    Traceback (most recent call last):
    ...
    mbgraph.validation.OptionError: batch_size=0: expected an integer >= 1

The command line names options as flags (``--batch-size 0: expected an integer >= 1``) and a
config file as its keys; both go through the same table.

**Identity.** A checkpoint records :func:`run_fingerprint` -- everything that defines what the
run computes: the model (class, parameter shapes, options), the data (its
:func:`data_fingerprint`), the seed, the optimiser and its schedule, the batch composition --
and a :func:`content_checksum` of its own tensors. :func:`compare_fingerprints` lists what
differs between a checkpoint and the run that wants to resume or evaluate it; anything but the
epoch budget must be the same unless the user names it in ``allow`` (``--allow-change``).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = ['OptionError', 'RunMismatchError', 'CorruptCheckpointError', 'OPTIONS',
           'check_options', 'check_option', 'check_model_options', 'check_train_args',
           'run_inputs', 'clear_run_files', 'parse_ks', 'check_device', 'check_out_dir',
           'RUN_FILES', 'run_files', 'data_fingerprint', 'content_checksum', 'run_fingerprint',
           'compare_fingerprints', 'ALWAYS_ALLOWED', 'cli_flag', 'load_verified']


class OptionError(ValueError):
    """A run option has a wrong type or is out of range."""

    def __init__(self, option: str, value: Any, expected: str):
        self.option, self.value, self.expected = option, value, expected
        super().__init__(f'{option}={value!r}: expected {expected}')


class RunMismatchError(ValueError):
    """A checkpoint belongs to another run than the one asked for."""


class CorruptCheckpointError(ValueError):
    """A checkpoint's content does not match its checksum, or it cannot be read."""


# ------------------------------------------------------------------------------------------
# option table
# ------------------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(low: int, high: Optional[int] = None) -> Tuple[Callable[[Any], bool], str]:
    text = f'an integer >= {low}' + (f' and <= {high}' if high is not None else '')
    return (lambda v: _is_int(v) and v >= low and (high is None or v <= high)), text


def _positive_float() -> Tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_number(v) and math.isfinite(v) and v > 0), 'a finite number > 0'


def _check_ks(v: Any) -> bool:
    try:
        parse_ks(v)
    except ValueError:
        return False
    return True


_NAME = re.compile(r'^[^\x00-\x1f,]+$')


def _names(v: Any) -> bool:
    items = v.split(',') if isinstance(v, str) else v
    return (isinstance(items, (list, tuple)) and len(items) > 0
            and all(isinstance(b, str) and b.strip() and _NAME.match(b) for b in items)
            and len({b.strip() for b in items}) == len(items))


#: option -> (check, what is expected); None values mean "the default" and always pass
OPTIONS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    'epochs': _int(1),
    'batch_size': _int(1),
    'lr': _positive_float(),
    'lr_decay': ((lambda v: _is_number(v) and math.isfinite(v) and 0 < v <= 1),
                 'a number in (0, 1] (the factor the learning rate is multiplied by per epoch)'),
    'reg': ((lambda v: _is_number(v) and math.isfinite(v) and v >= 0), 'a finite number >= 0'),
    'weight_decay': ((lambda v: _is_number(v) and math.isfinite(v) and v >= 0),
                     'a finite number >= 0'),
    'dim': _int(1),
    'layers': _int(0),
    'lr_decay_steps': _int(1),
    'patience': _int(1),
    'eval_every': _int(1),
    'seed': _int(0, 2**63 - 1),
    'threads': _int(1),
    'max_len': _int(1),
    'negatives': _int(1),
    'sync_every': _int(1),
    'ks': (_check_ks, 'comma-separated integers >= 1, e.g. 10,20'),
    'behaviors': (_names, 'comma-separated distinct behavior names, target last, e.g. cart,buy'),
    'stage': ((lambda v: v in ('both', 'pretrain', 'prompt')), "one of 'both', 'pretrain', "
              "'prompt'"),
    'max_grad_norm': _positive_float(),
    'loss_bound': _positive_float(),
}


#: ``--set`` keys (model hyperparameters) checked like the option they stand for
SET_OPTIONS = {'embedding_dim': 'dim', 'dim': 'dim', 'num_layers': 'layers', 'reg': 'reg',
               'num_negatives': 'negatives', 'max_len': 'max_len'}


def check_model_options(kwargs: Mapping[str, Any], name: Callable[[str], str] = str) -> None:
    """The model hyperparameters of :data:`SET_OPTIONS` (``encoder.``/``head.`` prefixes
    included) checked like their options; a per-layer list of ``num_layers`` is left to the
    encoder."""
    for key, value in kwargs.items():
        option = SET_OPTIONS.get(key.split('.')[-1])
        if option is None or (option == 'layers' and isinstance(value, (list, tuple))):
            continue
        check_option(option, value, name(key))


def cli_flag(option: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return '--' + option.replace('_', '-')


def check_option(option: str, value: Any, name: Optional[str] = None) -> Any:
    """Check one option (``None`` passes: the default); raise :class:`OptionError` naming it
    as ``name`` (default: the option itself)."""
    if value is None or option not in OPTIONS:
        return value
    ok, expected = OPTIONS[option]
    try:
        good = ok(value)
    except Exception:   # a check that cannot even look at the value: wrong type
        good = False
    if not good:
        raise OptionError(name or option, value, expected)
    return value


def check_options(options: Mapping[str, Any], name: Callable[[str], str] = str) -> None:
    """Check every known option of ``options`` (unknown keys are left to their owners);
    ``name`` spells an option in the error (e.g. :func:`cli_flag`)."""
    for option, value in options.items():
        check_option(option, value, name(option))


def parse_ks(ks: Any) -> List[int]:
    """``'10,20'``, ``[10, 20]`` or ``10`` -> ``[10, 20]``; ``ValueError`` for anything else."""
    if _is_int(ks):
        items: Sequence[Any] = [ks]
    elif isinstance(ks, str):
        items = [k.strip() for k in ks.split(',')]
    elif isinstance(ks, (list, tuple)):
        items = list(ks)
    else:
        raise ValueError(f'ks={ks!r}')
    out = []
    for k in items:
        if isinstance(k, str) and re.fullmatch(r'\d+', k):
            k = int(k)
        if not _is_int(k) or k < 1:
            raise ValueError(f'ks={ks!r}')
        out.append(int(k))
    if not out:
        raise ValueError(f'ks={ks!r}')
    return out


_DEVICE = re.compile(r'^(cpu|auto|cuda(:\d+)?)$')


def check_device(device: Any, name: str = 'device') -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``, and CUDA present when asked for."""
    if device is None:
        return 'cpu'
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise OptionError(name, device, "cpu, cuda, cuda:N or auto")
    if device.startswith('cuda'):
        import torch
        if not torch.cuda.is_available():
            raise OptionError(name, device, 'cpu or auto: CUDA is not available here '
                              '(torch.cuda.is_available() is False)')
        index = int(device.split(':')[1]) if ':' in device else 0
        if index >= torch.cuda.device_count():
            raise OptionError(name, device, f'a CUDA device index below '
                              f'{torch.cuda.device_count()}')
    return device


# ------------------------------------------------------------------------------------------
# the output folder
# ------------------------------------------------------------------------------------------

#: what ``mbgraph train`` writes into --out (files and, for DPCPL, stage folders)
RUN_FILES = ('metrics.json', 'log.jsonl', 'checkpoint.pt', 'best.pt', 'pretrain', 'prompt',
             'finetune')


def run_files(out: Path, inputs: Sequence[str] = ()) -> List[str]:
    """The names of :data:`RUN_FILES` present in ``out``, but ``inputs`` (what the run reads,
    e.g. the ``pretrain`` stage a DPCPL ``--stage prompt`` run tunes)."""
    return [n for n in RUN_FILES if n not in inputs and (Path(out) / n).exists()]


def check_out_dir(out: Any, *, resume: bool = False, overwrite: bool = False,
                  name: str = '--out', inputs: Sequence[str] = (),
                  resumable: bool = True) -> Path:
    """Refuse an output folder that cannot be a run folder: a file, one that cannot be
    created or written, or one holding another run's files (unless ``resume`` or
    ``overwrite``)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OptionError(name, str(out), 'a folder (it is a file)')
    probe = path
    while not probe.exists():
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if not probe.is_dir():
        raise OptionError(name, str(out), f'a folder that can be created ({probe} is a file)')
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OptionError(name, str(out), f'a folder that can be written ({probe} is not '
                          'writable)')
    if path.is_dir() and not resume and not overwrite:
        found = run_files(path, inputs)
        if found:
            how = ('pass --resume to continue that run or --overwrite to replace it' if resumable
                   else 'pass --overwrite to replace it')
            raise OptionError(name, str(out), f'a folder without another run\'s files (it holds '
                              f'{", ".join(found)}): {how}')
    return path


def run_inputs(model: str, stage: Optional[str], out: Path) -> List[str]:
    """Files of ``out`` a run reads rather than replaces: a DPCPL ``stage='prompt'`` run tunes
    the backbone of a ``stage='pretrain'`` run in the same folder (``pretrain/`` and that
    run's ``metrics.json``)."""
    if model.lower() != 'dpcpl' or stage != 'prompt':
        return []
    inputs = ['pretrain']
    try:
        import json
        with open(Path(out) / 'metrics.json') as f:
            if (json.load(f).get('config') or {}).get('stage') == 'pretrain':
                inputs.append('metrics.json')
    except (OSError, ValueError, AttributeError):
        pass
    return inputs


def clear_run_files(out: Path, why: str, inputs: Sequence[str] = ()) -> None:
    """Remove an earlier run's files from ``out`` (``--overwrite``, or ``--resume`` without a
    checkpoint), so that no file of it stays beside the new run's; ``inputs`` stay."""
    import shutil
    found = run_files(out, inputs)
    if found:
        logging.getLogger('mbgraph').warning('%s: removing %s (%s)', out, ', '.join(found), why)
    for name in found:
        target = Path(out) / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()


def check_train_args(args, sequence_models: Iterable[str] = (),
                     overrides: Optional[Mapping[str, Any]] = None) -> Path:
    """Every option of ``mbgraph train`` (its argparse namespace): type and range, the model
    sizes among the ``--set`` ``overrides``, the device and the output folder, before any
    data is loaded; returns the output folder."""
    check_options({k: getattr(args, k) for k in (
        'epochs', 'batch_size', 'lr', 'lr_decay', 'lr_decay_steps', 'reg', 'dim', 'layers',
        'patience',
        'eval_every', 'seed', 'threads', 'max_len', 'negatives', 'ks')}, cli_flag)
    check_option('behaviors', args.behaviors, '--behaviors')
    check_model_options(overrides or {}, lambda k: f'--set {k}')
    check_device(args.device, '--device')
    if args.resume and args.overwrite:
        raise OptionError('--overwrite', True, 'not together with --resume (continue the run '
                          'in --out, or replace it)')
    out = Path(args.out or f'runs/{args.model}_{args.dataset}')
    return check_out_dir(out, resume=args.resume, overwrite=args.overwrite,
                         inputs=run_inputs(args.model, args.stage, out))


# ------------------------------------------------------------------------------------------
# fingerprints
# ------------------------------------------------------------------------------------------

def _hash_tensor(h, t) -> None:
    import torch
    t = t.detach().cpu().contiguous()
    h.update(f'{t.dtype}{tuple(t.shape)}'.encode())
    if t.is_sparse or t.layout != torch.strided:
        t = t.to_dense()
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())     # the buffer, not a copy


def _hash_obj(h, obj: Any) -> None:
    import torch
    if torch.is_tensor(obj):
        h.update(b'T')
        _hash_tensor(h, obj)
    elif isinstance(obj, Mapping):
        h.update(b'{')
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _hash_obj(h, obj[k])
        h.update(b'}')
    elif isinstance(obj, (list, tuple)):
        h.update(b'[' if isinstance(obj, list) else b'(')
        for v in obj:
            _hash_obj(h, v)
        h.update(b']')
    else:
        h.update(repr(obj).encode())


def content_checksum(obj: Any) -> str:
    """SHA-256 over every tensor's bytes and every value of a (nested) checkpoint dict."""
    h = hashlib.sha256()
    _hash_obj(h, obj)
    return h.hexdigest()


def data_fingerprint(data) -> str:
    """SHA-256 (16 hex digits) of a multiplex graph: node counts, behavior order, every
    behavior's training edges and the validation and test pairs."""
    from .data.multiplex import edge_type, split_edge_index
    h = hashlib.sha256()
    h.update(repr((int(data['user'].num_nodes), int(data['item'].num_nodes),
                   list(data.behaviors))).encode())
    for b in data.behaviors:
        _hash_tensor(h, data[edge_type(b)].edge_index)
    for split in ('val', 'test'):
        ei = split_edge_index(data, split)
        h.update(split.encode())
        if ei is not None:
            _hash_tensor(h, ei)
    return h.hexdigest()[:16]


def _describe_batches(batches) -> Dict[str, Any]:
    out: Dict[str, Any] = {'type': type(batches).__name__}
    for attr in ('batch_size', 'behaviors', 'seed', 'num_negatives', 'users_per_batch',
                 'pairs_per_user', 'max_positives', 'users_per_epoch', 'unique',
                 'num_samples'):
        value = getattr(batches, attr, None)
        if isinstance(value, (int, float, str, bool)) or (
                isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            out[attr] = list(value) if isinstance(value, tuple) else value
    try:
        out['batches_per_epoch'] = len(batches)
    except TypeError:
        pass
    return out


def run_fingerprint(trainer) -> Dict[str, Any]:
    """What defines a run of ``trainer`` (a :class:`mbgraph.training.Trainer`): a flat dict of
    JSON-able values, compared key by key by :func:`compare_fingerprints`."""
    model = trainer.model
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    opt = trainer.optimizer    # None for a training-free model (mbgraph.models.baselines)
    group = {} if opt is None else {k: v for k, v in opt.param_groups[0].items()
                                    if k != 'params'}
    fp: Dict[str, Any] = {
        'model_class': type(model).__name__,
        'parameter_shapes': hashlib.sha256(repr(sorted(shapes.items())).encode()).hexdigest()[:16],
        'seed': trainer.seed,
        'optimizer': None if opt is None else type(opt).__name__,
        'optimizer_options': {k: (list(v) if isinstance(v, tuple) else v)
                              for k, v in (opt.defaults if opt is not None else {}).items()
                              if k != 'lr'
                              and isinstance(v, (int, float, str, bool, tuple, type(None)))},
        'lr': group.get('initial_lr', group.get('lr')),
        'lr_decay': getattr(trainer.scheduler, 'gamma', trainer.lr_decay),
        'lr_decay_steps': trainer.lr_decay_steps,
        'watch': trainer.watch is not None,
        'batches': _describe_batches(trainer.batches),
        'monitor': trainer.monitor, 'patience': trainer.patience,
        'eval_every': trainer.eval_every, 'max_grad_norm': trainer.max_grad_norm,
        'amp': trainer.amp, 'world_size': trainer.world_size,
    }
    # where the data and the run live do not define it (the data's fingerprint does)
    for key, value in trainer.config.items():
        if key not in ('device', 'data_root'):
            fp[f'config.{key}'] = value
    return fp


#: fingerprint keys that may differ on resume without being named: the epoch budget
ALWAYS_ALLOWED = ('epochs',)


def _flatten(obj: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in obj.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name + '.'))
        else:
            out[name] = value
    return out


def compare_fingerprints(saved: Mapping[str, Any], now: Mapping[str, Any],
                         allow: Iterable[str] = ()) -> List[str]:
    """``['lr 0.001 -> 0.01', ...]`` (checkpoint -> now) for every value that differs, nested
    ones by dotted name and the CLI's ``config.`` prefix left out, but for the options in
    ``allow`` and :data:`ALWAYS_ALLOWED`."""
    allowed = set(ALWAYS_ALLOWED) | {a.strip() for a in allow}
    a_flat, b_flat = _flatten(saved), _flatten(now)
    diffs: List[str] = []
    for key in sorted(set(a_flat) | set(b_flat)):
        name = key[len('config.'):] if key.startswith('config.') else key
        if name in allowed or name.split('.')[0] in allowed:
            continue
        a, b = a_flat.get(key, '(absent)'), b_flat.get(key, '(absent)')
        if _normal(a) != _normal(b):
            text = f'{name} {a!r} -> {b!r}'
            if text not in diffs:
                diffs.append(text)
    return diffs


def _normal(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_normal(x) for x in v]
    if isinstance(v, dict):
        return {k: _normal(x) for k, x in v.items()}
    return v


def load_verified(path: Any, map_location: Any = 'cpu') -> Dict[str, Any]:
    """``torch.load`` a checkpoint with ``weights_only=True`` (a checkpoint is a pickle: only
    tensors and plain data are accepted) and check its content checksum; raises
    :class:`CorruptCheckpointError` naming the file otherwise."""
    import torch
    path = Path(path)
    try:
        with warnings.catch_warnings():     # torch's pickle-protocol notes on foreign files
            warnings.simplefilter('ignore')
            state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:      # truncated zip, foreign pickle, refused global
        text = str(e).strip()
        if text.startswith('Weights only load failed'):
            # torch's advice to load with weights_only=False is not ours to give: keep what
            # it refused
            paragraphs = [' '.join(p.split()) for p in re.split(r'\n\s*\n', text)[1:]]
            kept = [p.split('WeightsUnpickler error:')[-1].strip() for p in paragraphs
                    if p and not p.startswith('Check the documentation')]
            why = 'refused by the restricted loader: ' + ('; '.join(k for k in kept if k)
                                                          or 'not tensors and plain data')
        else:
            why = text.splitlines()[0] if text else type(e).__name__
        raise CorruptCheckpointError(
            f'{path} is not a readable mbgraph checkpoint ({why[:200]})') from None
    if not isinstance(state, dict) or 'model' not in state:
        raise CorruptCheckpointError(
            f'{path} is not an mbgraph checkpoint (no model state)')
    saved = state.pop('checksum', None)
    if saved is not None and content_checksum(state) != saved:
        raise CorruptCheckpointError(
            f'{path} is corrupt: its content does not match the checksum it was written with')
    if saved is None:
        logging.getLogger(__name__).warning('%s carries no checksum (written by an older '
                                            'mbgraph); not verified', path)
    return state
