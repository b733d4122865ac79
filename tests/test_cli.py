import json
import subprocess
import sys

import pytest

from mbgraph.cli import main


def test_train_end_to_end_two_epochs(tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(['train', '--model', 'lightgcn', '--dataset', 'synthetic', '--epochs', '2',
                 '--out', str(out), '--no-progress', '--ks', '10,20']) == 0
    printed = capsys.readouterr().out
    assert '| lightgcn | synthetic |' in printed
    metrics = json.loads((out / 'metrics.json').read_text())
    for key in ('hr@10', 'ndcg@10', 'hr@20', 'ndcg@20'):
        assert 0.0 <= metrics['test'][key] <= 1.0
    assert metrics['epoch_seconds'] > 0 and metrics['eval_seconds'] > 0
    assert metrics['peak_rss_mb'] > 0 and metrics['epochs_run'] == 2
    assert metrics['config']['behaviors'] == ['view', 'cart', 'buy']
    # evaluate the saved best checkpoint: same test metrics
    assert main(['evaluate', '--checkpoint', str(out / 'best.pt'),
                 '--out', str(tmp_path / 'eval.json')]) == 0
    again = json.loads((tmp_path / 'eval.json').read_text())['test']
    assert again == pytest.approx(metrics['test'])


def test_resume_flag(tmp_path):
    out = tmp_path / 'run'
    args = ['train', '--model', 'lightgcn', '--dataset', 'synthetic', '--out', str(out),
            '--no-progress']
    assert main(args + ['--epochs', '1']) == 0
    assert main(args + ['--epochs', '2', '--resume']) == 0
    log = [json.loads(l) for l in (out / 'log.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in log] == [1, 2]


@pytest.mark.parametrize('args, message', [
    (['--model', 'nope'], "unknown model 'nope'"),
    (['--model', 'lightgcn', '--dataset', 'nope'], "unknown dataset 'nope'"),
    (['--model', 'lightgcn', '--behaviors', 'view,fav,buy'], 'fav'),
    (['--model', 'lightgcn', '--dataset', 'taobao', '--data-root', '/nonexistent'], '/nonexistent'),
])
def test_bad_arguments_exit_2(tmp_path, capsys, args, message):
    assert main(['train', *args, '--epochs', '1', '--out', str(tmp_path), '--no-progress']) == 2
    assert message in capsys.readouterr().err


def test_datasets_command(capsys):
    assert main(['datasets']) == 0
    out = capsys.readouterr().out
    assert 'view' in out and 'buy' in out


def test_console_entry_point_runs():
    proc = subprocess.run([sys.executable, '-m', 'mbgraph', '--help'], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and 'train' in proc.stdout


def test_train_sequence_model_through_the_same_cli(tmp_path, capsys):
    out = tmp_path / 'seq'
    assert main(['train', '--model', 'sasrec', '--dataset', 'synthetic', '--epochs', '1',
                 '--dim', '16', '--out', str(out), '--no-progress', '--negatives', '20']) == 0
    assert '| sasrec | synthetic |' in capsys.readouterr().out
    metrics = json.loads((out / 'metrics.json').read_text())
    assert 0.0 <= metrics['test']['hr@10'] <= 1.0 and 'hr@10' in metrics['test_full']
    assert metrics['epoch_seconds'] > 0 and metrics['peak_rss_mb'] > 0


def test_sequence_model_bad_dataset_exit_2(tmp_path, capsys):
    assert main(['train', '--model', 'sasrec', '--dataset', 'taobao', '--out', str(tmp_path),
                 '--no-progress']) == 2
    err = capsys.readouterr().err
    assert 'sequence models run on synthetic, ml-latest-small, retailrocket or csv' in err


@pytest.mark.parametrize('flags, named', [(['--reg', '0.1'], '--reg'),
                                          (['--lr-decay', '0.9'], '--lr-decay'),
                                          (['--ks', '5,10'], '--ks'),
                                          (['--reading', 'code'], '--reading')])
def test_graph_only_options_are_refused_for_sequence_models(flags, named, tmp_path, capsys):
    assert main(['train', '--model', 'sasrec', '--out', str(tmp_path), '--no-progress',
                 *flags]) == 2
    assert f'{named} applies to graph models only' in capsys.readouterr().err


def _write_log(path, names):
    rows = ['user,item,behavior,timestamp']
    t = 0
    for u in range(30):
        for k in range(6):
            for b in names:
                t += 1
                rows.append(f'u{u},i{(u * 7 + k * 3) % 25},{b},{t}')
    path.write_text('\n'.join(rows) + '\n')
    return path


def test_csv_with_unknown_behavior_names_takes_the_order_from_behaviors(tmp_path, capsys):
    log = _write_log(tmp_path / 'log.csv', ['click', 'fav', 'purchase'])
    assert main(['train', '--model', 'lightgcn', '--dataset', 'csv', '--data-root', str(log),
                 '--epochs', '1', '--out', str(tmp_path / 'g')]) == 2
    assert 'pass behaviors=' in capsys.readouterr().err
    assert main(['train', '--model', 'lightgcn', '--dataset', 'csv', '--data-root', str(log),
                 '--behaviors', 'click,fav,purchase', '--epochs', '1', '--no-progress',
                 '--out', str(tmp_path / 'g')]) == 0
    metrics = json.loads((tmp_path / 'g' / 'metrics.json').read_text())
    assert metrics['config']['behaviors'] == ['click', 'fav', 'purchase']
    capsys.readouterr()
    # and the sequence models read the same log
    assert main(['train', '--model', 'sasrec', '--dataset', 'csv', '--data-root', str(log),
                 '--behaviors', 'click,fav,purchase', '--epochs', '1', '--dim', '8',
                 '--negatives', '10', '--no-progress', '--out', str(tmp_path / 's')]) == 0
    assert '| sasrec | csv ' in capsys.readouterr().out
    seq = json.loads((tmp_path / 's' / 'metrics.json').read_text())
    assert seq['dataset'] == 'csv' and 0.0 <= seq['test']['hr@10'] <= 1.0


def test_csv_without_data_root_names_the_option(tmp_path, capsys):
    assert main(['train', '--model', 'lightgcn', '--dataset', 'csv', '--out', str(tmp_path)]) == 2
    assert "dataset 'csv' needs --data-root FILE" in capsys.readouterr().err


def test_paper_protocol_and_reading_recorded(tmp_path, capsys):
    out = tmp_path / 'paper'
    assert main(['train', '--model', 'copf', '--dataset', 'synthetic', '--epochs', '2',
                 '--eval-every', '2', '--protocol', 'paper', '--out', str(out),
                 '--no-progress', '--set', "lambdas={'cart': 0.5, 'buy': 0.5}"]) == 0
    m = json.loads((out / 'metrics.json').read_text())
    assert m['reading'] == 'code' and m['protocol'] == 'paper'
    assert m['val'] is None and m['epochs_run'] == 2            # no validation, fixed epochs
    assert [p['epoch'] for p in m['test_curve']] == [1, 2]     # watched after 1 and every 2
    assert m['test_curve'][-1]['hr@10'] == pytest.approx(m['test']['hr@10'])
    assert 'OPTIMISTIC' in m['test_best_of_evaluated']['note']
    per = m['train_triples_per_epoch']
    assert per['all'] == per['cart'] + per['buy'] and 'view' not in per
    assert m['seconds_per_million_triples'] > 0
    cfg = m['config']
    assert cfg['batch_kind'] == 'users' and cfg['batch_size'] == 256
    assert cfg['lr'] == 1e-3 and cfg['lr_decay'] == 0.96 and cfg['lr_decay_steps'] == 11
    # every training buy trained: the validation pairs went back into the training graph
    from mbgraph.data.datasets import synthetic
    data = synthetic(seed=0)
    buy = data['user', 'buy', 'item']
    assert m['test_users'] == int(buy.test_edge_index[1].numel())
    # evaluate rebuilds the same data (the validation pairs merged) and the same scores
    assert main(['evaluate', '--checkpoint', str(out / 'checkpoint.pt'),
                 '--out', str(tmp_path / 'e.json')]) == 0
    assert json.loads((tmp_path / 'e.json').read_text())['test'] == pytest.approx(m['test'])
    assert main(['evaluate', '--checkpoint', str(out / 'checkpoint.pt'), '--split', 'val']) == 2
    assert 'no validation split' in capsys.readouterr().err


def test_reading_flag_checked(tmp_path, capsys):
    assert main(['train', '--model', 'lightgcn', '--reading', 'code', '--epochs', '1',
                 '--out', str(tmp_path / 'x'), '--no-progress']) == 2
    assert '--reading applies to' in capsys.readouterr().err
    assert main(['train', '--model', 'pkef', '--reading', 'tf', '--epochs', '1',
                 '--out', str(tmp_path / 'y'), '--no-progress']) == 2
    assert "unknown reading 'tf'" in capsys.readouterr().err
    out = tmp_path / 'z'
    assert main(['train', '--model', 'pkef', '--reading', 'paper', '--epochs', '1',
                 '--out', str(out), '--no-progress']) == 0
    m = json.loads((out / 'metrics.json').read_text())
    assert m['reading'] == 'paper' and m['protocol'] == 'validation'
    assert m['config']['batch_kind'] == 'pairs' and m['config']['batch_size'] == 2048
    assert '|' in ''.join(m['train_triples_per_epoch'])         # the unique pairs counted


def test_stop_at_time_to_accuracy(tmp_path, capsys):
    out = tmp_path / 'tta'
    assert main(['train', '--model', 'lightgcn', '--dataset', 'synthetic', '--epochs', '30',
                 '--lr', '0.01', '--stop-at', 'hr@10=0.05', '--out', str(out),
                 '--no-progress']) == 0
    m = json.loads((out / 'metrics.json').read_text())
    reached = m['time_to_target']
    assert reached['metric'] == 'hr@10' and reached['value'] >= 0.05
    assert m['epochs_run'] == reached['epoch'] < 30 and reached['split'] == 'val'
    assert reached['triples_seen'] == reached['epoch'] * m['train_triples_per_epoch']['all']
    assert main(['train', '--model', 'lightgcn', '--stop-at', 'auc=0.5', '--epochs', '1',
                 '--out', str(tmp_path / 'bad'), '--no-progress']) == 2
    assert '--stop-at auc=0.5: expected METRIC=VALUE' in capsys.readouterr().err
