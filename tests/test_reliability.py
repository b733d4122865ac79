"""Nothing lost, nothing silent (issue 13).

* a table of bad inputs through ``mbgraph train`` / ``evaluate`` / ``datasets`` in-process:
  each one exits 2 (3 for a diverged run) with a single line naming what was wrong;
* fault injection for the atomic writes: a failing rename or write keeps the old file and
  leaves no temporary file;
* resume and evaluate refuse another run's checkpoint, a corrupt one, changed data;
* the log after a resume, the run folder's lock, the runner's children dying with it.
"""
import contextlib
import json
import os
import pickle
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbgraph import io as run_io
from mbgraph.cli import main
from mbgraph.validation import OptionError, check_options

from test_training import make_trainer, small_graph

HAS_CUDA = torch.cuda.is_available()
TRAIN = ['train', '--model', 'lightgcn', '--epochs', '1', '--dim', '8', '--no-progress']


def run_cli(argv, capsys):
    """(exit status, stderr) of ``mbgraph ARGV`` in-process; a traceback fails the test."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:       # argparse's own errors (wrong type): exit 2, usage + 1 line
        rc = e.code
    return rc, capsys.readouterr().err.strip()


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f'expected a one-line error, got:\n{err}'
    assert len(lines[0]) < 600, f'error of {len(lines[0])} characters'
    return lines[0]


# ------------------------------------------------------------------------------------------
# train: options checked before any data is loaded
# ------------------------------------------------------------------------------------------

BAD_TRAIN_OPTIONS = [
    (['--batch-size', '0'], '--batch-size=0: expected an integer >= 1'),
    (['--batch-size', '-5'], '--batch-size=-5'),
    (['--lr', '0'], '--lr=0.0: expected a finite number > 0'),
    (['--lr', '-1'], '--lr=-1.0'),
    (['--lr', 'nan'], '--lr=nan'),
    (['--lr', 'inf'], '--lr=inf'),
    (['--lr-decay', '-1'], '--lr-decay=-1.0: expected a number in (0, 1]'),
    (['--lr-decay', '0'], '--lr-decay=0.0'),
    (['--lr-decay', '1.5'], '--lr-decay=1.5'),
    (['--reg', '-1'], '--reg=-1.0: expected a finite number >= 0'),
    (['--reg', 'nan'], '--reg=nan'),
    (['--epochs', '-1'], '--epochs=-1: expected an integer >= 1'),
    (['--epochs', '0'], '--epochs=0'),
    (['--patience', '0'], '--patience=0'),
    (['--eval-every', '0'], '--eval-every=0'),
    (['--ks', '0'], "--ks='0': expected comma-separated integers >= 1"),
    (['--ks', 'abc'], "--ks='abc'"),
    (['--ks', '10,,20'], "--ks='10,,20'"),
    (['--ks', ''], "--ks=''"),
    (['--device', 'mps'], "--device='mps': expected cpu, cuda, cuda:N or auto"),
    (['--device', 'cuda:x'], "--device='cuda:x'"),
    (['--dim', '0'], '--dim=0'),
    (['--layers', '-1'], '--layers=-1'),
    (['--threads', '0'], '--threads=0'),
    (['--seed', '-1'], '--seed=-1'),
    (['--max-len', '0'], '--max-len=0'),
    (['--negatives', '0'], '--negatives=0'),
    (['--behaviors', ','], "--behaviors=','"),
    (['--behaviors', 'buy,buy'], "--behaviors='buy,buy'"),
    (['--resume', '--overwrite'], '--overwrite=True: expected not together with --resume'),
    (['--set', 'novalue'], "--set expects KEY=VALUE, got 'novalue'"),
    (['--set', 'head.gamma=1'], "model 'lightgcn' with options"),
    (['--model', 'nope'], "unknown model 'nope'"),
    (['--dataset', 'nope'], "unknown dataset 'nope'"),
    (['--model', 'sasrec', '--dim', '0'], '--dim=0'),
    (['--model', 'sasrec', '--negatives', '1000000'], '--negatives 1000000: expected fewer '
                                                      'than the'),
    (['--model', 'sasrec', '--negatives', '700'], 'expected fewer than the 600 items'),
    (['--model', 'sasrec', '--lr-decay', '0.9'], '--lr-decay applies to graph models only'),
] + ([] if HAS_CUDA else [(['--device', 'cuda'], 'CUDA is not available here')])
# argparse's own type errors: exit 2 as well
ARGPARSE_ERRORS = [['--epochs', 'ten'], ['--lr', 'fast'], ['--batch-size', '2.5'],
                   ['--stage', 'nope'], ['--seed', '']]


@pytest.mark.parametrize('args, message', BAD_TRAIN_OPTIONS,
                         ids=[' '.join(a) for a, _ in BAD_TRAIN_OPTIONS])
def test_bad_train_options_exit_2_with_one_line(args, message, tmp_path, capsys):
    rc, err = run_cli([*TRAIN, '--out', tmp_path / 'run', *args], capsys)
    assert rc == 2
    assert message in one_line(err)
    assert not (tmp_path / 'run').exists()      # nothing was written


@pytest.mark.parametrize('args', ARGPARSE_ERRORS, ids=' '.join)
def test_argparse_type_errors_exit_2(args, tmp_path, capsys):
    rc, err = run_cli([*TRAIN, '--out', tmp_path / 'run', *args], capsys)
    assert rc == 2 and 'error:' in err.splitlines()[-1]


_INT_BAD = ['0', '-1', '-5', 'abc', '1.5', '', 'nan', '1e3']
#: every train option with values it must refuse: exit 2, one line, nothing written
SWEEP = {
    **{flag: _INT_BAD for flag in ('--epochs', '--batch-size', '--dim', '--patience',
                                   '--eval-every', '--threads', '--max-len', '--negatives')},
    '--layers': ['-1', 'abc', '1.5', ''],
    '--seed': ['-1', 'abc', '1.5', '', str(2**64)],
    '--lr': ['0', '-1', 'nan', 'inf', '-inf', 'abc', ''],
    '--lr-decay': ['0', '-1', '1.5', 'nan', 'inf', 'abc'],
    '--reg': ['-1', 'nan', 'inf', '-inf', 'abc'],
    '--ks': ['0', 'abc', '10,', ',', '-1', '1.5', '10;20', '', '5,0'],
    '--device': ['mps', 'gpu', 'cuda:x', 'cpu:0', '', 'CUDA', 'tpu'],
    '--behaviors': [',', 'a,,b', 'buy,buy', '', 'view,\x01'],
    '--stage': ['x', ''],
    '--set': ['x', '=1', 'embedding_dim=2.5', "num_layers='x'", 'lambdas=3',
              'nonexistent=1'],
}
SWEEP_CASES = [(flag, value) for flag, values in SWEEP.items() for value in values]


def test_option_sweep_every_bad_value_exits_2_on_one_line(tmp_path, capsys):
    outcomes = {}
    for flag, value in SWEEP_CASES:
        rc, err = run_cli([*TRAIN, '--out', tmp_path / 'run', flag, value], capsys)
        assert rc == 2, (flag, value, err)
        last = err.splitlines()[-1]     # argparse prints its usage above its one-line error
        assert last.startswith('mbgraph') and 'error:' in last and len(last) < 600, (flag, value)
        assert 'Traceback' not in err
        outcomes[(flag, value)] = last
        assert not (tmp_path / 'run').exists(), (flag, value)
    assert len(outcomes) == len(SWEEP_CASES) >= 90


def test_out_that_is_a_file_or_under_one(tmp_path, capsys):
    f = tmp_path / 'file'
    f.write_text('x')
    rc, err = run_cli([*TRAIN, '--out', f], capsys)
    assert rc == 2 and 'a folder (it is a file)' in one_line(err)
    rc, err = run_cli([*TRAIN, '--out', f / 'sub'], capsys)
    assert rc == 2 and 'is a file' in one_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason='root may write anywhere')
def test_out_in_an_unwritable_folder(tmp_path, capsys):
    locked = tmp_path / 'ro'
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc, err = run_cli([*TRAIN, '--out', locked / 'run'], capsys)
    finally:
        locked.chmod(0o700)
    assert rc == 2 and 'is not writable' in one_line(err)


def test_out_holding_another_run_is_refused_unless_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / 'run'
    assert run_cli([*TRAIN, '--out', out], capsys)[0] == 0
    old_metrics = json.loads((out / 'metrics.json').read_text())
    rc, err = run_cli([*TRAIN, '--out', out, '--seed', '1'], capsys)
    assert rc == 2 and "holds metrics.json, log.jsonl, checkpoint.pt, best.pt" in one_line(err)
    assert json.loads((out / 'metrics.json').read_text()) == old_metrics
    # --overwrite replaces every file of the old run
    rc, _ = run_cli([*TRAIN, '--out', out, '--seed', '1', '--overwrite'], capsys)
    assert rc == 0
    assert json.loads((out / 'metrics.json').read_text())['config']['seed'] == 1


def test_dpcpl_prompt_stage_may_tune_the_pretrain_stage_of_its_folder(tmp_path):
    from mbgraph.cli import build_parser
    from mbgraph.validation import check_train_args, clear_run_files, run_inputs
    out = tmp_path / 'dp'
    (out / 'pretrain').mkdir(parents=True)
    (out / 'pretrain' / 'ebm.pt').write_bytes(b'backbone')
    (out / 'metrics.json').write_text(json.dumps({'config': {'stage': 'pretrain'}}))
    parse = build_parser().parse_args
    args = parse(['train', '--model', 'dpcpl', '--stage', 'prompt', '--out', str(out)])
    assert check_train_args(args, ['sasrec', 'dpcpl']) == out
    # another model into that folder is refused
    with pytest.raises(OptionError, match=r'holds metrics.json, pretrain\): pass --resume to '
                                          r'continue that run or --overwrite'):
        check_train_args(parse(['train', '--model', 'sasrec', '--out', str(out)]),
                         ['sasrec', 'dpcpl'])
    # --overwrite of a prompt stage keeps the backbone it tunes
    (out / 'prompt').mkdir()
    clear_run_files(out, '--overwrite', run_inputs('dpcpl', 'prompt', out))
    assert (out / 'pretrain' / 'ebm.pt').is_file() and not (out / 'prompt').exists()


def test_python_api_checks_the_same_table(tmp_path):
    with pytest.raises(OptionError, match=r'epochs=-1: expected an integer >= 1'):
        make_trainer(small_graph(), tmp_path, epochs=-1)
    with pytest.raises(OptionError, match=r'lr_decay=-1'):
        make_trainer(small_graph(), tmp_path, epochs=1, lr_decay=-1)
    with pytest.raises(OptionError, match='batch_size=True'):
        check_options({'batch_size': True})      # a bool is not an integer here
    from mbgraph_seq.data import SequenceDataset
    from mbgraph_seq.train import train_sequence_model
    ds = SequenceDataset.synthetic(num_users=30, num_items=40, max_len=8, seed=0)
    with pytest.raises(OptionError, match='num_negatives_eval=700: expected fewer than the 40'):
        train_sequence_model('sasrec', ds, epochs=1, num_negatives_eval=700, progress=False)


# ------------------------------------------------------------------------------------------
# evaluate: bad, truncated, foreign, corrupt checkpoints; changed data
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp('trained') / 'run'
    assert main([*TRAIN, '--epochs', '2', '--out', str(out)]) == 0
    return out


def _evaluate(capsys, checkpoint, *extra):
    return run_cli(['evaluate', '--checkpoint', checkpoint, *extra], capsys)


class _Evil:
    """A pickle that runs ``touch MARKER`` when loaded by an unrestricted unpickler."""

    def __init__(self, marker='/dev/null'):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {shlex.quote(self.marker)}',))


def test_bad_checkpoints_exit_2(trained, tmp_path, capsys):
    best = trained / 'best.pt'
    raw = best.read_bytes()
    cases = {}
    cases['missing'] = (tmp_path / 'nope.pt', 'does not exist')
    cases['folder'] = (trained, 'expected a checkpoint file, it is a folder')
    (tmp_path / 'truncated.pt').write_bytes(raw[:len(raw) // 2])
    cases['truncated'] = (tmp_path / 'truncated.pt', 'is not a readable mbgraph checkpoint')
    (tmp_path / 'empty.pt').write_bytes(b'')
    cases['empty'] = (tmp_path / 'empty.pt', 'is not a readable mbgraph checkpoint')
    (tmp_path / 'text.pt').write_text('hello')
    cases['text'] = (tmp_path / 'text.pt', 'is not a readable mbgraph checkpoint')
    torch.save({'weights': torch.zeros(2)}, tmp_path / 'foreign.pt')
    cases['foreign'] = (tmp_path / 'foreign.pt', 'is not an mbgraph checkpoint')
    marker = tmp_path / 'pwned'
    torch.save(_Evil(marker), tmp_path / 'evil.pt')
    cases['malicious'] = (tmp_path / 'evil.pt', 'refused by the restricted loader: Trying to '
                                                'load unsupported GLOBAL posix.system')
    with open(tmp_path / 'pickle.pt', 'wb') as f:
        pickle.dump(_Evil(marker), f)
    cases['raw pickle'] = (tmp_path / 'pickle.pt', 'refused by the restricted loader')
    # the tensors changed but not the checksum: another number, silently, before
    state = torch.load(best, weights_only=True)
    state['model'] = {k: v + 1e-3 for k, v in state['model'].items()}
    torch.save(state, tmp_path / 'flipped.pt')
    cases['changed weights'] = (tmp_path / 'flipped.pt', 'is corrupt: its content does not '
                                                        'match the checksum')
    state = torch.load(best, weights_only=True)
    state['config'] = {**state['config'], 'model_kwargs': {'embedding_dim': 16}}
    state.pop('checksum')
    torch.save(state, tmp_path / 'misfit.pt')
    cases['weights of another shape'] = (tmp_path / 'misfit.pt', 'the weights do not fit')
    for name, (path, message) in cases.items():
        rc, err = _evaluate(capsys, path)
        assert rc == 2, name
        assert message in one_line(err), (name, err)
    assert not marker.exists()      # no payload ran


FLIP_TRIALS = 12


def test_flipped_bytes_never_evaluate_silently(trained, tmp_path, capsys):
    """64 flipped bytes anywhere: refused, or (bytes the loader never reads: zip padding)
    the very same metrics; never another number with exit 0."""
    assert _evaluate(capsys, trained / 'best.pt', '--out', tmp_path / 'ref.json')[0] == 0
    reference = json.loads((tmp_path / 'ref.json').read_text())['test']
    raw = bytearray((trained / 'best.pt').read_bytes())
    rng = np.random.default_rng(0)
    refused = 0
    for trial in range(FLIP_TRIALS):
        damaged = bytearray(raw)
        start = int(rng.integers(0, len(raw) - 64))
        for i in range(start, start + 64):
            damaged[i] ^= 0xFF
        path = tmp_path / f'damaged{trial}.pt'
        path.write_bytes(bytes(damaged))
        rc, err = _evaluate(capsys, path, '--out', tmp_path / f'd{trial}.json')
        if rc == 0:
            assert json.loads((tmp_path / f'd{trial}.json').read_text())['test'] == reference
        else:
            assert rc == 2
            one_line(err)
            refused += 1
    assert refused >= FLIP_TRIALS // 2


def test_evaluate_options(trained, tmp_path, capsys):
    rc, err = _evaluate(capsys, trained / 'best.pt', '--device', 'mps')
    assert rc == 2 and "--device='mps'" in one_line(err)
    if not HAS_CUDA:
        rc, err = _evaluate(capsys, trained / 'best.pt', '--device', 'cuda')
        assert rc == 2 and 'CUDA is not available' in one_line(err)
    rc, err = _evaluate(capsys, trained / 'best.pt', '--out', tmp_path)
    assert rc == 2 and 'it is a folder' in one_line(err)


def _csv_log(path, shift=0):
    rows = ['user,item,behavior']
    for u in range(40):
        for k in range(5):
            rows.append(f'u{u},i{(u * 7 + k * 3 + shift) % 30},view')
        for k in range(3):
            rows.append(f'u{u},i{(u * 7 + k * 3 + shift) % 30},buy')
    path.write_text('\n'.join(rows) + '\n')
    return path


def test_evaluate_refuses_changed_data(tmp_path, capsys):
    log = _csv_log(tmp_path / 'log.csv')
    out = tmp_path / 'run'
    assert run_cli([*TRAIN, '--dataset', 'csv', '--data-root', log, '--out', out],
                   capsys)[0] == 0
    assert _evaluate(capsys, out / 'best.pt')[0] == 0
    _csv_log(log, shift=1)
    rc, err = _evaluate(capsys, out / 'best.pt')
    assert rc == 2 and 'was trained on other data' in one_line(err)


# ------------------------------------------------------------------------------------------
# resume: identity, the epoch budget, named overrides, the log
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('changed, named', [
    (['--lr', '0.01'], 'lr 0.001 -> 0.01'), (['--seed', '1'], 'seed 0 -> 1'),
    (['--batch-size', '512'], 'batch_size 2048 -> 512'), (['--dim', '16'], 'parameter_shapes'),
    (['--lr-decay', '0.9'], 'lr_decay None -> 0.9'), (['--patience', '3'], 'patience 10 -> 3')])
def test_resume_with_a_changed_option_is_refused(changed, named, tmp_path, capsys):
    out = tmp_path / 'run'
    assert run_cli([*TRAIN, '--out', out], capsys)[0] == 0
    before = (out / 'checkpoint.pt').read_bytes()
    rc, err = run_cli([*TRAIN, '--out', out, '--epochs', '2', '--resume', *changed], capsys)
    line = one_line(err)
    assert rc == 2 and 'belongs to another run' in line and named in line
    assert (out / 'checkpoint.pt').read_bytes() == before


def test_resume_with_a_new_epoch_budget_and_a_named_override(tmp_path, capsys):
    out = tmp_path / 'run'
    assert run_cli([*TRAIN, '--out', out], capsys)[0] == 0
    assert run_cli([*TRAIN, '--out', out, '--epochs', '2', '--resume'], capsys)[0] == 0
    rc, _ = run_cli([*TRAIN, '--out', out, '--epochs', '3', '--resume', '--lr', '0.01',
                     '--allow-change', 'lr'], capsys)
    assert rc == 0
    log = run_io.read_jsonl(out / 'log.jsonl')
    assert [r['epoch'] for r in log] == [1, 2, 3]
    assert log[-1]['lr'] == pytest.approx(0.01)     # the new learning rate took effect
    assert json.loads((out / 'metrics.json').read_text())['config']['lr'] == 0.01


def test_resume_of_a_checkpoint_without_fingerprint_needs_the_users_word(tmp_path, capsys):
    out = tmp_path / 'run'
    assert run_cli([*TRAIN, '--out', out], capsys)[0] == 0
    state = torch.load(out / 'checkpoint.pt', weights_only=True)
    del state['fingerprint'], state['checksum']     # as an mbgraph before fingerprints wrote it
    torch.save(state, out / 'checkpoint.pt')
    rc, err = run_cli([*TRAIN, '--out', out, '--epochs', '2', '--resume'], capsys)
    assert rc == 2 and '--allow-change unfingerprinted' in one_line(err)
    rc, _ = run_cli([*TRAIN, '--out', out, '--epochs', '2', '--resume',
                     '--allow-change', 'unfingerprinted'], capsys)
    assert rc == 0
    assert [r['epoch'] for r in run_io.read_jsonl(out / 'log.jsonl')] == [1, 2]


@pytest.mark.parametrize('model, extra', [
    ('copf', ['--lr-decay', '0.9']), ('mbcgcn', []),
    pytest.param('pkef', [], marks=pytest.mark.slow)])
def test_cli_resume_is_bitwise_identical(model, extra, tmp_path, capsys):
    base = ['train', '--model', model, '--dim', '8', '--no-progress', '--batch-size', '512',
            '--seed', '3', *extra]
    assert run_cli([*base, '--epochs', '2', '--out', tmp_path / 'a'], capsys)[0] == 0
    assert run_cli([*base, '--epochs', '1', '--out', tmp_path / 'b'], capsys)[0] == 0
    assert run_cli([*base, '--epochs', '2', '--out', tmp_path / 'b', '--resume'], capsys)[0] == 0
    a = torch.load(tmp_path / 'a' / 'checkpoint.pt', weights_only=True)
    b = torch.load(tmp_path / 'b' / 'checkpoint.pt', weights_only=True)
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    assert a['history'] == [{**h, 'epoch_seconds': a['history'][i]['epoch_seconds']}
                            for i, h in enumerate(b['history'])]
    ta = json.loads((tmp_path / 'a' / 'metrics.json').read_text())['test']
    tb = json.loads((tmp_path / 'b' / 'metrics.json').read_text())['test']
    assert ta == tb


@pytest.mark.parametrize('model', ['sasrec', 'pomrec'])
def test_cli_resume_of_a_sequence_model_is_bitwise_identical(model, tmp_path, capsys):
    """A sequence run stopped after epoch 1 and resumed to 2 ends where the uninterrupted
    2-epoch run ends: weights, history (the seconds aside) and test metrics."""
    base = ['train', '--model', model, '--dim', '8', '--max-len', '10', '--no-progress',
            '--seed', '3']
    assert run_cli([*base, '--epochs', '2', '--out', tmp_path / 'a'], capsys)[0] == 0
    assert run_cli([*base, '--epochs', '1', '--out', tmp_path / 'b'], capsys)[0] == 0
    assert run_cli([*base, '--epochs', '2', '--out', tmp_path / 'b', '--resume'], capsys)[0] == 0
    a = torch.load(tmp_path / 'a' / 'checkpoint.pt', weights_only=True)
    b = torch.load(tmp_path / 'b' / 'checkpoint.pt', weights_only=True)
    assert a['epoch'] == b['epoch'] == 2
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    assert a['history'] == [{**h, 'epoch_seconds': a['history'][i]['epoch_seconds']}
                            for i, h in enumerate(b['history'])]
    ma, mb = (json.loads((tmp_path / x / 'metrics.json').read_text()) for x in 'ab')
    assert ma['test'] == mb['test'] and ma['test_full'] == mb['test_full']


def test_cli_resume_of_a_finished_dpcpl_run_changes_nothing(tmp_path, capsys):
    """Both DPCPL stages resume from their own checkpoints (pretrain/, prompt/); a finished
    run resumed returns its own test metrics."""
    base = ['train', '--model', 'dpcpl', '--dim', '8', '--max-len', '10', '--no-progress',
            '--epochs', '1', '--out', tmp_path / 'd']
    assert run_cli(base, capsys)[0] == 0
    first = json.loads((tmp_path / 'd' / 'metrics.json').read_text())
    assert (tmp_path / 'd' / 'pretrain' / 'checkpoint.pt').is_file()
    assert (tmp_path / 'd' / 'prompt' / 'checkpoint.pt').is_file()
    assert run_cli([*base, '--resume'], capsys)[0] == 0
    again = json.loads((tmp_path / 'd' / 'metrics.json').read_text())
    assert again['test'] == first['test'] and again['epochs_run'] == first['epochs_run']


def test_resume_rewrites_the_log_from_the_checkpoint(tmp_path):
    data = small_graph()
    make_trainer(data, tmp_path, epochs=2).fit()
    log_path = tmp_path / 'log.jsonl'
    lines = log_path.read_text().splitlines()
    # a kill after the log line of epoch 3 but before its checkpoint, and a torn line
    log_path.write_text('\n'.join(lines + [lines[-1].replace('"epoch": 2', '"epoch": 3'),
                                           '{"epoch": 4, "lo']) + '\n')
    make_trainer(data, tmp_path, epochs=4).fit(resume=True)
    assert [r['epoch'] for r in run_io.read_jsonl(log_path)] == [1, 2, 3, 4]
    # the resumed run's log equals an uninterrupted run's
    straight = make_trainer(data, tmp_path / 'straight', epochs=4)
    straight.fit()
    a = [r['loss'] for r in run_io.read_jsonl(log_path)]
    b = [r['loss'] for r in run_io.read_jsonl(tmp_path / 'straight' / 'log.jsonl')]
    assert a == b


def test_resume_of_a_folder_without_checkpoint_clears_the_old_run(tmp_path, capsys):
    out = tmp_path / 'run'
    assert run_cli([*TRAIN, '--out', out], capsys)[0] == 0
    (out / 'checkpoint.pt').unlink()
    (out / 'best.pt').write_bytes(b'old')
    assert run_cli([*TRAIN, '--out', out, '--resume'], capsys)[0] == 0
    assert torch.load(out / 'best.pt', weights_only=True)['epoch'] == 1


def test_last_epoch_is_validated(tmp_path, capsys):
    out = tmp_path / 'run'
    assert run_cli([*TRAIN, '--out', out, '--epochs', '2', '--eval-every', '5'], capsys)[0] == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['best_epoch'] == 2 and (out / 'best.pt').is_file()


# ------------------------------------------------------------------------------------------
# divergence
# ------------------------------------------------------------------------------------------

def test_divergence_names_the_term_and_the_last_good_checkpoint(tmp_path):
    from mbgraph.losses import DivergenceError
    data = small_graph()
    trainer = make_trainer(data, tmp_path, epochs=3)
    real = trainer.model.loss

    def loss(batch):
        value, _ = real(batch)
        if trainer.epoch >= 1:      # epoch 2: one part explodes
            return value, {'bpr': value.detach(), 'reg': torch.tensor(1e11)}
        return value, {'bpr': value.detach(), 'reg': torch.tensor(0.0)}
    trainer.model.loss = loss
    with pytest.raises(DivergenceError) as info:
        trainer.fit()
    text = str(info.value)
    assert "loss term 'reg'" in text and 'beyond the bound 1e+08' in text
    assert f'{tmp_path / "checkpoint.pt"} (epoch 1)' in text
    assert torch.load(tmp_path / 'checkpoint.pt', weights_only=True)['epoch'] == 1
    # a NaN is named too, and a DivergenceError is a FloatingPointError
    trainer = make_trainer(data, tmp_path / 'nan', epochs=1)
    trainer.model.loss = lambda batch: (torch.tensor(float('nan'), requires_grad=True),
                                        {'bpr': torch.tensor(float('nan'))})
    with pytest.raises(FloatingPointError, match="loss term 'bpr' is nan; no checkpoint"):
        trainer.fit()


def test_cli_reports_divergence_on_one_line_exit_3(tmp_path, capsys, monkeypatch):
    from mbgraph.models import LightGCN
    real = LightGCN.loss
    calls = {'n': 0}

    def loss(self, batch):      # one batch per epoch (below): epoch 2's loss is NaN
        calls['n'] += 1
        value, parts = real(self, batch)
        return (value * float('nan') if calls['n'] > 1 else value), parts
    monkeypatch.setattr(LightGCN, 'loss', loss)
    out = tmp_path / 'run'
    rc, err = run_cli([*TRAIN, '--out', out, '--epochs', '3', '--batch-size', '1000000'],
                      capsys)
    line = one_line(err)
    assert rc == 3 and 'training diverged at epoch 2, batch 0' in line
    assert f'the last good checkpoint is {out / "checkpoint.pt"} (epoch 1)' in line
    assert torch.load(out / 'checkpoint.pt', weights_only=True)['epoch'] == 1


# ------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------

def _temps(folder: Path):
    return [p for p in folder.rglob('*') if p.name.endswith(run_io.TEMP_SUFFIX)]


@pytest.mark.parametrize('writer', ['json', 'torch', 'checkpoint'])
@pytest.mark.parametrize('fault', ['replace', 'write', 'fsync'])
def test_a_failing_write_keeps_the_old_file(writer, fault, tmp_path, monkeypatch):
    from mbgraph.training import write_metrics
    trainer = make_trainer(small_graph(), tmp_path / 'run', epochs=1)
    path = tmp_path / 'out.bin'
    write = {'json': lambda: write_metrics(path, {'hr@10': 0.5}),
             'torch': lambda: run_io.torch_save({'x': torch.ones(3)}, path),
             'checkpoint': lambda: trainer.save_checkpoint(path)}[writer]
    write()
    old = path.read_bytes()
    boom = OSError(28, 'No space left on device')

    def fail(*args, **kwargs):
        raise boom
    if fault == 'replace':
        monkeypatch.setattr(run_io.os, 'replace', fail)
    elif fault == 'fsync':
        monkeypatch.setattr(run_io.os, 'fsync', fail)
    else:
        real_open = open

        class Torn:
            def __init__(self, f):
                self.f = f

            def write(self, data):
                self.f.write(data[:len(data) // 2])
                raise boom

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()
        monkeypatch.setattr(run_io, 'open', lambda *a, **k: Torn(real_open(*a, **k)),
                            raising=False)
    with pytest.raises(OSError, match='No space left'):
        write()
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert _temps(tmp_path) == []


def test_cli_turns_a_full_disk_into_one_line(tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(run_io.os, 'replace', fail)
    rc, err = run_cli([*TRAIN, '--out', tmp_path / 'run'], capsys)
    assert rc == 2 and 'No space left on device' in one_line(err)


def test_stale_temporary_files_are_cleaned(tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    stale = tmp_path / f'.best.pt.{dead.pid}.tmp'
    stale.write_bytes(b'half')
    alive = tmp_path / f'.metrics.json.{os.getppid()}.tmp'      # a running process's
    alive.write_bytes(b'busy')
    other = tmp_path / 'notes.tmp'
    other.write_text('mine')
    assert run_io.clean_stale_temps(tmp_path) == [stale]
    assert alive.exists() and other.exists()


def test_read_jsonl_skips_a_torn_last_line_only(tmp_path):
    path = tmp_path / 'log.jsonl'
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert run_io.read_jsonl(path) == [{'epoch': 1}, {'epoch': 2}]
    path.write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match='line 2'):
        run_io.read_jsonl(path)
    from benchmarks.runner import read_curve
    (tmp_path / 'log.jsonl').write_text('{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "lo')
    assert [p['epoch'] for p in read_curve(tmp_path)] == [1]


# ------------------------------------------------------------------------------------------
# the run folder's lock and the runner's children
# ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def held_elsewhere(folder: Path, name: str = '.lock'):
    """Another process holds ``folder``'s lock while the block runs; yields its pid."""
    root = str(Path(__file__).resolve().parent.parent)
    code = (f'import sys; from mbgraph.io import RunLock; RunLock({str(folder)!r}, {name!r})'
            '.acquire(); print("ready", flush=True); sys.stdin.read()')
    proc = subprocess.Popen([sys.executable, '-c', code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, 'PYTHONPATH': root})
    try:
        assert proc.stdout.readline().strip() == 'ready'
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_locked_run_folder_is_refused(tmp_path, capsys):
    out = tmp_path / 'run'
    with held_elsewhere(out) as pid:
        with pytest.raises(run_io.RunLockedError, match=f'process {pid} is training into it'):
            run_io.RunLock(out).acquire()
        rc, err = run_cli([*TRAIN, '--out', out, '--overwrite'], capsys)
        assert rc == 2 and 'is in use' in one_line(err)
    # the holder died without releasing (as under kill -9): its lock died with it
    assert run_cli([*TRAIN, '--out', out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ['best.pt', 'checkpoint.pt', 'log.jsonl',
                                                     'metrics.json']
    # within one process the lock is re-entrant
    with run_io.RunLock(out), run_io.RunLock(out):
        pass


def test_runner_child_dies_with_the_runner(tmp_path):
    """kill -9 of the runner takes its child with it (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith('linux'):
        pytest.skip('parent-death signal: Linux only')
    pidfile = tmp_path / 'child.pid'
    child = f'import os, time; open({str(pidfile)!r}, "w").write(str(os.getpid())); time.sleep(60)'
    runner = textwrap.dedent(f'''
        import sys
        from pathlib import Path
        from benchmarks.runner import _subprocess
        _subprocess([sys.executable, '-c', {child!r}], Path({str(tmp_path)!r}), 1, None, False)
    ''')
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen([sys.executable, '-c', runner], cwd=root,
                            env={**os.environ, 'PYTHONPATH': root})
    deadline = time.time() + 60
    while not pidfile.is_file() or not pidfile.read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    pid = int(pidfile.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        try:                        # reaped by init; a zombie still answers kill(0)
            with open(f'/proc/{pid}/stat') as f:
                if f.read().split(')')[-1].split()[0] == 'Z':
                    break
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail('the runner\'s child outlived it')


def test_runner_skips_a_run_another_runner_holds(tmp_path):
    from benchmarks.config import load_table
    from benchmarks.runner import execute, plan

    from test_benchmarks import MINIMAL, write
    planned = plan([load_table(write(tmp_path, MINIMAL))])[0]
    results = tmp_path / 'results'
    run_dir = results / 'runs' / planned.run.id
    said = []
    with held_elsewhere(run_dir, '.runner.lock'):
        out = execute(planned, results, data_root=None, device='cpu', threads=1,
                      progress=False, suite='t', echo=said.append)
    assert 'locked' in out and said[0].startswith(f'SKIPPED {planned.run.id}')


# ------------------------------------------------------------------------------------------
# benchmark configs and options
# ------------------------------------------------------------------------------------------

def test_config_values_are_checked_like_options(tmp_path):
    from benchmarks.config import ConfigError, load_table

    from test_benchmarks import MINIMAL, write
    for old, new, message in [
            ('epochs = 5', 'epochs = "ten"', "epochs = 'ten': expected an integer"),
            ('lr = 1e-3', 'lr = -1.0', 'lr = -1.0: expected a finite number > 0'),
            ('lr = 1e-3', 'lr = 1e-3\nbatch_size = 0', 'batch_size = 0'),
            ('lr = 1e-3', 'lr = 1e-3\nks = [0]', 'ks = [0]'),
            ('id = "t"', 'id = "t/../../x"', "id = 't/../../x': expected letters"),
            ('id = "t"', 'id = ".hidden"', "id = '.hidden'")]:
        assert old in MINIMAL
        with pytest.raises(ConfigError, match=message.replace('[', r'\[').replace(']', r'\]')
                           .replace('.', r'\.').replace('(', r'\(').replace(')', r'\)')):
            load_table(write(tmp_path, MINIMAL.replace(old, new)))


@pytest.mark.parametrize('args, message', [
    (['--seeds', '0'], '--seeds=0: expected an integer >= 1'),
    (['--epochs', '0'], '--epochs=0'), (['--lr', '0'], '--lr=0.0'),
    (['--threads', '0'], '--threads=0'), (['--device', 'mps'], "--device='mps'")])
def test_benchmark_options_exit_2(args, message, tmp_path, capsys):
    from benchmarks.__main__ import main as bench
    assert bench(['run', 'quick', '--dry-run', '--results', str(tmp_path), *args]) == 2
    assert message in one_line(capsys.readouterr().err)


def test_benchmark_results_on_a_file(tmp_path, capsys):
    from benchmarks.__main__ import main as bench
    (tmp_path / 'f').write_text('x')
    assert bench(['run', 'quick', '--dry-run', '--results', str(tmp_path / 'f')]) == 2
    assert 'expected a folder' in capsys.readouterr().err


def test_dry_run_commands_paste(tmp_path, capsys):
    from benchmarks.__main__ import main as bench
    assert bench(['run', 'quick', '--dry-run', '--results', str(tmp_path), '--epochs', '1',
                  '--only', 'sasrec']) == 0
    lines = [ln.strip() for ln in capsys.readouterr().out.splitlines()
             if ln.strip().startswith('PYTHONPATH=')]
    assert lines
    argv = shlex.split(lines[0])
    assert argv[0].startswith('PYTHONPATH=') and argv[1] == sys.executable
    assert argv[2:5] == ['-m', 'mbgraph', 'train'] and '--resume' in argv
    # it runs: the same command, pasted into a shell, trains the run
    env_root = argv[0].split('=', 1)[1]
    out = argv[argv.index('--out') + 1]
    proc = subprocess.run(argv[1:] + ['--dim', '8', '--negatives', '20'], capture_output=True,
                          text=True, env={**os.environ, 'PYTHONPATH': env_root},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (Path(out) / 'metrics.json').is_file()


# ------------------------------------------------------------------------------------------
# data files
# ------------------------------------------------------------------------------------------

def _log_lines():
    return [f'{u},{(u * 7 + k * 3) % 25},{b}' for u in range(30) for k in range(6)
            for b in ('view', 'cart', 'buy')]


def test_a_byte_order_mark_is_not_a_user(tmp_path):
    from mbgraph.data.datasets import load_interaction_log
    plain = tmp_path / 'plain.csv'
    plain.write_text('\n'.join(_log_lines()) + '\n')
    bom = tmp_path / 'bom.csv'
    bom.write_bytes(b'\xef\xbb\xbf' + plain.read_bytes())
    a, b = load_interaction_log(plain), load_interaction_log(bom)
    assert a['user'].num_nodes == b['user'].num_nodes == 30
    assert list(b['user'].raw_id) == list(range(30))


@pytest.mark.parametrize('content, message', [
    (lambda text: text.replace('0,', '0\x00,', 1).encode(), 'a NUL byte in a field'),
    (lambda text: (text + 'x' * 200000 + ',1,buy\n').encode(), 'field larger than field limit'),
    (lambda text: (text + 'caf\xe9,1,buy\n').encode('latin-1'), 'not utf-8 text (byte 0xe9'),
    (lambda text: '\n'.join(f'{ln.rsplit(",", 1)[0]},{t}' for t, ln in
                            enumerate(text.splitlines())).encode(),
     "the file has 540 behaviors ['0', '1', '10'"),
])
def test_bad_log_files_exit_2_naming_the_file(content, message, tmp_path, capsys):
    path = tmp_path / 'log.csv'
    path.write_bytes(content('\n'.join(_log_lines()) + '\n'))
    rc, err = run_cli(['datasets', '--dataset', 'csv', '--data-root', path], capsys)
    line = one_line(err)
    assert rc == 2 and str(path) in line and message in line


def _mbgmn(folder: Path, cart=None, protocol=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    mats = {b: sp.csr_matrix((rng.random((60, 40)) < p).astype(np.float64))
            for b, p in (('pv', 0.3), ('cart', 0.15), ('buy', 0.1))}
    if cart is not None:
        mats['cart'] = cart
    for b, m in mats.items():
        with open(folder / f'trn_{b}', 'wb') as f:
            pickle.dump(m, f, protocol=protocol)
    buy = mats['buy'].toarray()
    tst = [int(np.flatnonzero(buy[u] == 0)[0]) if u % 2 == 0 else None for u in range(60)]
    with open(folder / 'tst_int', 'wb') as f:
        pickle.dump(tst, f)
    return folder


@pytest.mark.parametrize('protocol', [2, 4])
def test_an_empty_behavior_loads_as_empty(protocol, tmp_path, capsys):
    root = tmp_path / 'data'
    _mbgmn(root / 'taobao', cart=sp.csr_matrix((60, 40), dtype=np.float64), protocol=protocol)
    rc, _ = run_cli(['datasets', '--data-root', root, '--dataset', 'taobao'], capsys)
    assert rc == 0
    assert run_cli([*TRAIN, '--dataset', 'taobao', '--data-root', root, '--out',
                    tmp_path / 'a'], capsys)[0] == 0         # LightGCN: a union of behaviors
    rc, err = run_cli([*TRAIN, '--model', 'pkef', '--dataset', 'taobao', '--data-root', root,
                       '--out', tmp_path / 'b'], capsys)
    assert rc == 2 and "behaviors ['cart'] have no training pairs" in one_line(err)


@pytest.mark.parametrize('value, message', [(np.nan, 'NaN or infinite'), (np.inf, 'NaN or '
                                                                                   'infinite'),
                                            (-1.0, 'negative')])
def test_bad_matrix_values_are_refused(value, message, tmp_path, capsys):
    m = sp.csr_matrix((np.random.default_rng(1).random((60, 40)) < 0.2).astype(np.float64))
    m.data[3] = value
    root = tmp_path / 'data'
    _mbgmn(root / 'taobao', cart=m)
    rc, err = run_cli(['datasets', '--data-root', root, '--dataset', 'taobao'], capsys)
    assert rc == 2 and 'trn_cart' in one_line(err) and message in err


def test_refused_and_truncated_dataset_pickles_exit_2(tmp_path, capsys):
    root = tmp_path / 'data'
    folder = _mbgmn(root / 'taobao')
    raw = (folder / 'trn_cart').read_bytes()
    (folder / 'trn_cart').write_bytes(raw[:len(raw) // 2])
    rc, err = run_cli(['datasets', '--data-root', root, '--dataset', 'taobao'], capsys)
    assert rc == 2 and 'could not unpickle' in one_line(err)
    with open(folder / 'trn_cart', 'wb') as f:
        pickle.dump(_Evil(tmp_path / 'pwned'), f)
    rc, err = run_cli(['datasets', '--data-root', root, '--dataset', 'taobao'], capsys)
    assert rc == 2 and 'refused to unpickle posix.system' in one_line(err)
    assert not (tmp_path / 'pwned').exists()
    with open(folder / 'trn_cart', 'wb') as f:      # bytes() with a size: refused
        f.write(b'\x80\x02c__builtin__\nbytes\nK\x05\x85R.')
    rc, err = run_cli(['datasets', '--data-root', root, '--dataset', 'taobao'], capsys)
    assert rc == 2 and 'refused bytes' in one_line(err)


def test_io_module_is_documented_by_its_doctest():
    import doctest
    assert doctest.testmod(run_io).failed == 0
    import mbgraph.validation
    assert doctest.testmod(mbgraph.validation).failed == 0



@pytest.mark.slow
def test_runner_killed_with_sigkill_leaves_no_child_and_resumes_exactly(tmp_path):
    """The runner killed with kill -9 in the middle of a run: its child dies with it, and the
    re-run suite resumes the run, every epoch once in its curve (about a minute on 2 cores)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, 'PYTHONPATH': root, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'benchmarks', 'run', 'quick', '--only', 'lightgcn-*',
           '--epochs', '40', '--seeds', '1', '--results', str(tmp_path), '--no-progress',
           '--threads', '1']
    runner = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    logs = []
    while time.time() < deadline:
        logs = list((tmp_path / 'quick' / 'runs').glob('*/log.jsonl'))
        if logs and len(logs[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert logs, 'the run never started'
    children = subprocess.run(['pgrep', '-P', str(runner.pid)], capture_output=True,
                              text=True).stdout.split()
    assert children
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    time.sleep(2)
    for pid in children:
        assert not Path(f'/proc/{pid}').exists() or \
            open(f'/proc/{pid}/stat').read().split(')')[-1].split()[0] == 'Z'
    assert subprocess.run(cmd, cwd=root, env=env, capture_output=True,
                          timeout=600).returncode == 0
    result = json.loads(next((tmp_path / 'quick').glob('lightgcn-*.json')).read_text())
    epochs = [p['epoch'] for p in result['curve']]
    assert result['resumed'] and epochs == list(range(1, len(epochs) + 1))


def test_a_bad_pretrained_backbone_exits_2(tmp_path, capsys):
    for name, content in (('truncated', b'PK\x03\x04 not a whole zip'), ('empty', b'')):
        path = tmp_path / f'{name}.pt'
        path.write_bytes(content)
        rc, err = run_cli(['train', '--model', 'dpcpl', '--stage', 'prompt', '--epochs', '1',
                           '--dim', '8', '--negatives', '20', '--no-progress', '--out',
                           tmp_path / name, '--set', f'pretrained={str(path)!r}'], capsys)
        assert rc == 2 and 'is not a readable mbgraph checkpoint' in one_line(err), name
