"""The leaderboard page (benchmarks/leaderboard.py) rendered from fake result JSON files the test
writes: cells over seeds, "not run", shapes, shortcut shares, the papers' numbers, bar charts."""
import json

import pytest

from benchmarks.__main__ import main
from benchmarks.config import expand, load_suite
from benchmarks.leaderboard import dataset_name, finished_runs, render_leaderboard, row_kind

TAOBAO_SHORTCUTS = {'split': 'test', 'pairs': 15449, 'any': 0.852,
                    'share': {'pv': 0.819, 'cart': 0.219}}


def fake(run, hr, ndcg, seconds=None, best=0, rss=500.0, shortcuts=None, behaviors=None,
         novel=None):
    extra = {} if novel is None else {'test_novel': {'hr@10': novel, 'pairs': 2286}}
    return {'run_id': run.id, 'config': run.effective(), 'wall_seconds': 1.0,
            'metrics': {'test': {'hr@10': hr, 'ndcg@10': ndcg, 'hr@20': hr + 0.1,
                                 'ndcg@20': ndcg + 0.01},
                        'epoch_seconds': seconds, 'best_epoch': best, 'peak_rss_mb': rss,
                        'epochs_run': 30,
                        'shortcuts': shortcuts,
                        'config': {'behaviors': behaviors or ['pv', 'cart', 'buy']},
                        'environment': {'git_commit': 'abc1234'}, **extra},
            'curve': []}


def pv_cart_buy():
    (table,) = [t for t in load_suite('leaderboard') if t.id == 'leaderboard_taobao_pv_cart_buy']
    return table


def some_results(table):
    """PKEF with two seeds, History with one, the LightGCN hybrid with one; nothing else."""
    out = {}
    for row, run in expand(table):
        if row.name == 'PKEF' and run.seed < 2:
            out[run.id] = fake(run, 0.10 + 0.02 * run.seed, 0.05 + 0.01 * run.seed,
                               seconds=20.0 + 2 * run.seed, best=12 + 2 * run.seed,
                               shortcuts=TAOBAO_SHORTCUTS)
        elif row.name.startswith('History') and run.seed == 0:
            out[run.id] = fake(run, 0.2728, 0.1400, shortcuts=TAOBAO_SHORTCUTS, novel=0.0171)
        elif row.model == 'hybrid:lightgcn' and run.seed == 0:
            out[run.id] = fake(run, 0.34, 0.17, seconds=12.0, best=6,
                               shortcuts=TAOBAO_SHORTCUTS)
    return out


def line_of(text, start):
    lines = [x for x in text.splitlines() if x.startswith(start)]
    assert lines, f'no line starting {start!r}'
    return lines


def test_cells_not_run_shapes_shortcuts_and_papers():
    table = pv_cart_buy()
    text = render_leaderboard([table], some_results(table))
    # the dataset by shape, its behaviors and the shortcut shares of its runs
    assert dataset_name('taobao') == 'Taobao (15,449 x 11,953)'
    assert 'Taobao (15,449 x 11,953)' in text and 'Tmall' in text
    (setting,) = line_of(text, '| `leaderboard_taobao_pv_cart_buy`')
    assert 'pv -> cart -> buy' in setting and '15,449' in setting
    assert 'pv 81.9%, cart 21.9%; any 85.2%' in setting
    # PKEF: two of three seeds; mean 0.11 and sample std 0.0141 (by hand: 0.02 / sqrt(2));
    # seconds 21 ± 1.41, train minutes (20 and 22 s x 30 epochs) 10.5 ± 0.71, epochs to best
    # 13 ± 1.41; the paper's 0.1385 / 0.0785 beside it
    detail = [x for x in line_of(text, '| PKEF |') if '| trained |' in x and 'seeds' not in x]
    row = detail[-1]
    assert '| 0.1100 ± 0.0141 | 0.0550 ± 0.0071 | 0.2100 ± 0.0141 |' in row
    assert '| 0.1385 / 0.0785 |' in row and '| 21.00 ± 1.41 | 10.5 ± 0.7 | 13 ± 1 |' in row
    assert row.endswith('| 2 of 3 |')
    # the training-free row: no epoch to report
    history = line_of(text, '| History (training-free) |')[-1]
    assert '0.2728' in history and history.count('no training') == 3
    # the novel-pairs column: History's value, "-" for runs that did not record it
    assert '| 0.3728 | 0.1500 | 0.0171 |' in history
    assert '| 0.2100 ± 0.0141 | 0.0650 ± 0.0071 | - |' in row and 'HR@10 novel' in text
    # rows without a finished run read "not run", in the overview too
    copf = line_of(text, '| COPF |')
    assert all('not run' in x for x in copf)
    assert '| 0 of 3 |' in copf[-1]
    # the hybrid is its own kind, and the page says what it answers
    hybrid = line_of(text, '| Hybrid: LightGCN + history |')
    assert '| hybrid |' in hybrid[0] and '0.3400 / 0.1700' in hybrid[0]
    assert 'exploited on purpose' in text
    assert row_kind('cascadingrank') == 'training-free' and row_kind('copf') == 'trained'
    assert row_kind('hybrid:pkef') == 'hybrid'
    # the second overview: the same models on the novel pairs (History's 0.0171; PKEF's runs
    # did not record them)
    novel = text.split('## Overview without the shortcut')[1].split('\n## ')[0]
    assert '| History (training-free) | training-free | 0.0171 / - |' in novel
    assert '| PKEF | trained | - / - |' in novel and '| COPF | trained | not run |' in novel
    first = text.split('## Overview: HR@10 / NDCG@10')[1].split('\n## ')[0]
    assert '| History (training-free) | training-free | 0.2728 / 0.1400 |' in first


def test_nothing_run_renders_every_cell_not_run():
    table = pv_cart_buy()
    text = render_leaderboard([table], {})
    (setting,) = line_of(text, '| `leaderboard_taobao_pv_cart_buy`')
    assert setting.endswith('| - | not run |')
    assert 'finished runs' not in text


def test_table_command_writes_the_page_and_one_chart_per_setting(tmp_path, capsys):
    pytest.importorskip('matplotlib')
    results = tmp_path / 'results' / 'leaderboard'
    results.mkdir(parents=True)
    for table in load_suite('leaderboard'):
        for run_id, obj in some_results(table).items():
            (results / f'{run_id}.json').write_text(json.dumps(obj))
    docs = tmp_path / 'docs'
    assert main(['table', 'leaderboard', '--results', str(tmp_path / 'results'),
                 '--docs', str(docs)]) == 0
    page = (docs / 'LEADERBOARD.md').read_text()
    assert 'wrote ' + str(docs / 'LEADERBOARD.md') in capsys.readouterr().out
    for tid in ('leaderboard_taobao_pv_cart_buy', 'leaderboard_taobao_cart_buy',
                'leaderboard_retailrocket'):
        png = docs / f'{tid}.png'
        assert png.stat().st_size > 1000 and f']({tid}.png)' in page
    assert 'RetailRocket (2,174 x 30,113)' in page
    # another suite writes no leaderboard page
    other = tmp_path / 'other'
    assert main(['table', 'quick', '--results', str(tmp_path / 'results'),
                 '--docs', str(other)]) == 0
    assert not other.exists()


def test_a_page_is_not_overwritten_by_fewer_finished_runs(tmp_path, capsys):
    pytest.importorskip('matplotlib')
    results = tmp_path / 'results' / 'leaderboard'
    results.mkdir(parents=True)
    written = []
    for table in load_suite('leaderboard'):
        for run_id, obj in some_results(table).items():
            (results / f'{run_id}.json').write_text(json.dumps(obj))
            written.append(results / f'{run_id}.json')
    docs = tmp_path / 'docs'
    args = ['table', 'leaderboard', '--results', str(tmp_path / 'results'), '--docs', str(docs)]
    assert main(args) == 0
    page = (docs / 'LEADERBOARD.md').read_text()
    shown = finished_runs(page)
    assert shown == len(written) > 1
    # one result file lost (a fresh clone has none): the page stays as it is, rc 1
    written[0].unlink()
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f'shows {shown} finished runs, the results at hand hold {shown - 1}' in err
    assert (docs / 'LEADERBOARD.md').read_text() == page
    # asked for explicitly, the smaller page is written
    assert main(args + ['--replace-docs']) == 0
    assert finished_runs((docs / 'LEADERBOARD.md').read_text()) == shown - 1


def test_run_renders_the_page_with_each_tables_own_seed_count(tmp_path):
    """``benchmarks run leaderboard --seeds 1`` trains (here: finds finished) one seed, but the
    page it renders counts every finished seed against the table's own 3."""
    pytest.importorskip('matplotlib')
    results = tmp_path / 'results' / 'leaderboard'
    results.mkdir(parents=True)
    table = pv_cart_buy()
    found = some_results(table)
    for run_id, obj in found.items():
        (results / f'{run_id}.json').write_text(json.dumps(obj))
    (seed0,) = [run.id for row, run in expand(table) if row.name == 'PKEF' and run.seed == 0]
    docs = tmp_path / 'docs'
    assert main(['run', 'leaderboard', '--results', str(tmp_path / 'results'), '--docs',
                 str(docs), '--seeds', '1', '--only', seed0, '--no-progress']) == 0
    page = (docs / 'LEADERBOARD.md').read_text()
    pkef = [x for x in line_of(page, '| PKEF |') if '| trained |' in x][-1]
    assert pkef.endswith('| 2 of 3 |') and '0.1100 ± 0.0141' in pkef
