"""The benchmark suite: config files, run ids, the subprocess runner, tables, plots, speed."""
import json
import math
import re
import textwrap
from pathlib import Path

import pytest
import torch

from benchmarks.__main__ import main
from benchmarks.config import ConfigError, expand, list_suites, load_suite, load_table
from benchmarks.runner import archive_result, load_results, plan, run_suite
from benchmarks.speed import fit_slope, saved_activation_bytes, scaling_slopes, sequence_scaling
from benchmarks.tables import format_cell, plot_curves, render_table

MINIMAL = """
[table]
id = "t"
title = "T"
datasets = ["synthetic"]
seeds = 2

[hyper]
epochs = 5
lr = 1e-3

[[row]]
name = "LightGCN"
model = "lightgcn"
paper = { synthetic = [0.5, 0.25] }

[[row]]
name = "PKEF vanilla"
model = "pkef"
set = { "encoder.fusion" = "vanilla" }
"""


def write(tmp_path, text, name='t.toml'):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------------ config files

def test_every_shipped_suite_loads():
    assert {'quick', 'graph', 'seq', 'speed', 'taobao-budget', 'leaderboard'} <= \
        set(list_suites())
    for suite in list_suites():
        tables = load_suite(suite)
        assert tables and all(t.rows for t in tables)


def _rows(suite, sequence):
    from benchmarks.config import is_sequence_model
    seen = {}
    for table in load_suite(suite):
        for row in table.rows:
            if is_sequence_model(row.model) == sequence:
                seen.setdefault((row.model, repr(sorted(row.set.items()))), row)
    return list(seen.values())


GRAPH_ROWS = _rows('graph', False) + _rows('speed', False) + _rows('quick', False)


@pytest.mark.parametrize('row', GRAPH_ROWS, ids=lambda r: f'{r.model}-{r.name}')
def test_every_graph_row_trains_a_step(row):
    """Each graph row of the shipped configs builds and takes one training step on tiny
    three- and four-behavior data (the papers' Taobao/Beibei and Tmall settings)."""
    from mbgraph.data.datasets import synthetic
    from mbgraph.models import build_model
    for behaviors in (('view', 'cart', 'buy'), ('view', 'fav', 'cart', 'buy')):
        data = synthetic(num_users=60, num_items=40, behaviors=behaviors, views_per_user=20,
                         funnel=0.6)
        torch.manual_seed(0)
        model = build_model(row.model, data, embedding_dim=8, **row.set)
        batch = next(iter(model.batch_source(data, batch_size=16, seed=0).batches(1)))
        out = model.loss(batch)
        loss = out[0] if isinstance(out, tuple) else out
        loss.backward()
        assert torch.isfinite(loss)


@pytest.mark.parametrize('row', _rows('seq', True) + _rows('speed', True) + _rows('quick', True),
                         ids=lambda r: f'{r.model}-{r.name}')
def test_every_sequence_row_builds(row):
    """Each sequence row's model options are accepted by the model (the training options,
    e.g. ``prefixes``, go to ``train_sequence_model`` and are checked by the config loader)."""
    import inspect

    from mbgraph_seq import train as seq_train
    from mbgraph_seq.models import SEQ_MODELS

    from helpers import cyclic_walks
    train_opts = set(inspect.signature(seq_train.train_sequence_model).parameters)
    kwargs = {k: v for k, v in row.set.items() if k not in train_opts}
    ds = cyclic_walks()
    if isinstance(kwargs.get('alpha'), dict):     # HMAR's weights named by MovieLens behaviors
        assert set(kwargs['alpha']) == {'like'}   # the target's: give it to this target
        kwargs['alpha'] = {ds.target: kwargs['alpha']['like']}
    model = SEQ_MODELS[row.model](ds, **kwargs)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_minimal_config_parses(tmp_path):
    table = load_table(write(tmp_path, MINIMAL))
    assert table.id == 't' and table.seeds == 2 and table.datasets == ['synthetic']
    assert [r.name for r in table.rows] == ['LightGCN', 'PKEF vanilla']
    assert table.rows[0].paper == {'synthetic': (0.5, 0.25)}
    assert table.rows[1].set == {'encoder.fusion': 'vanilla'}
    assert table.columns == ['test.hr@10', 'test.ndcg@10']


@pytest.mark.parametrize('old,new,needle', [
    ('lr = 1e-3', 'lr = 1e-3\nlearning_rate = 1', "'learning_rate'"),    # unknown [hyper] key
    ('seeds = 2', 'seeds = 2\ncolour = "red"', "'colour'"),              # unknown [table] key
    ('model = "lightgcn"', 'model = "lightgnc"', "'lightgnc'"),          # unknown model
    ('"encoder.fusion" = "vanilla"', '"encoder.fusoin" = "vanilla"', "'fusoin'"),   # option
    ('"encoder.fusion" = "vanilla"', '"head.nope" = 1', "'nope'"),
    ('name = "PKEF vanilla"', 'name = "LightGCN"', 'duplicate row name'),
    ('model = "pkef"', 'model = "pkef"\nseeds = 0', 'seeds must be an integer >= 1'),
    ('model = "pkef"', 'model = "pkef"\nseeds = "one"', 'seeds must be an integer >= 1'),
])
def test_config_errors_name_the_problem(tmp_path, old, new, needle):
    assert old in MINIMAL
    path = write(tmp_path, MINIMAL.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_table(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_hyper_switches_are_flags(tmp_path):
    """``amp = true`` adds ``--amp`` (no value), ``false`` leaves it out, anything else is
    refused with the key named."""
    def command(value):
        text = MINIMAL.replace('lr = 1e-3', f'lr = 1e-3\namp = {value}')
        table = load_table(write(tmp_path, text))
        return [run.command(None, tmp_path) for _, run in expand(table)][0]
    on, off = command('true'), command('false')
    assert on.count('--amp') == 1 and 'True' not in on and 'true' not in on
    assert '--amp' not in off
    with pytest.raises(ConfigError, match="amp = 'yes': expected true or false"):
        command('"yes"')


def test_sequence_model_options_are_checked(tmp_path):
    text = MINIMAL.replace('model = "lightgcn"', 'model = "dpcpl"\nset = { num_factors = 4, '
                           'num_blocks = 2, pretrain_epochs = 1 }')
    assert load_table(write(tmp_path, text)).rows[0].set['num_factors'] == 4
    bad = MINIMAL.replace('model = "lightgcn"', 'model = "sasrec"\nset = { num_factors = 4 }')
    with pytest.raises(ConfigError, match="'num_factors'"):
        load_table(write(tmp_path, bad))


def test_sequence_rows_refuse_graph_only_settings(tmp_path):
    text = MINIMAL.replace('model = "lightgcn"', 'model = "sasrec"')
    assert load_table(write(tmp_path, text)).rows[0].model == 'sasrec'
    bad = text.replace('lr = 1e-3', 'lr = 1e-3\nreg = 0.01')
    with pytest.raises(ConfigError, match='reg applies to graph models only'):
        load_table(write(tmp_path, bad))
    bad = text.replace('datasets = ["synthetic"]', 'datasets = ["taobao"]').replace(
        'paper = { synthetic', 'paper = { taobao')
    with pytest.raises(ConfigError, match="not 'taobao'"):
        load_table(write(tmp_path, bad))
    # an interrupted sequence run continues from its checkpoint, as a graph run does
    assert '--resume' in expand(load_table(write(tmp_path, text)))[0][1].command(None, 'o')


def test_run_ids_are_stable_and_follow_the_config(tmp_path):
    table = load_table(write(tmp_path, MINIMAL))
    ids = [run.id for _, run in expand(table)]
    assert ids == [run.id for _, run in expand(load_table(write(tmp_path, MINIMAL)))]
    assert len(set(ids)) == 4                      # 2 rows x 2 seeds
    assert ids[0].startswith('lightgcn-synthetic-s0-')
    changed = load_table(write(tmp_path, MINIMAL.replace('lr = 1e-3', 'lr = 2e-3')))
    assert not set(ids) & {run.id for _, run in expand(changed)}
    # the row label and the table id are not part of the run: two tables share the run
    renamed = load_table(write(tmp_path, MINIMAL.replace('id = "t"', 'id = "u"')
                               .replace('name = "LightGCN"', 'name = "LGN"'), 'u.toml'))
    assert [run.id for _, run in expand(renamed)] == ids
    # a smoke override gets its own ids
    assert not set(ids) & {run.id for _, run in expand(table, epochs=1)}
    # so does a learning-rate override, which reaches every run's command
    budget = expand(table, epochs=1, lr=5e-3)
    assert not set(ids) & {run.id for _, run in budget}
    assert all(run.hyper['lr'] == 5e-3 for _, run in budget)
    cmd = budget[0][1].command(None, Path('o'))
    assert cmd[cmd.index('--lr') + 1] == '0.005' and cmd[cmd.index('--epochs') + 1] == '1'
    assert [p.run.id for p in plan([table], epochs=1, lr=5e-3)] == [r.id for _, r in budget]
    runs = plan([table, renamed])
    assert len(runs) == 4 and len(runs[0].tables) == 2


def test_only_patterns_keep_row_names_with_commas_and_refuse_typos(tmp_path):
    text = (MINIMAL.replace('name = "PKEF vanilla"', 'name = "PKEF vanilla, not the paper"')
            .replace('name = "LightGCN"', 'name = "LightGCN, not the paper"'))
    table = load_table(write(tmp_path, text))

    def rows(runs):
        return sorted({name for p in runs for _, name in p.tables})

    # a comma followed by a space belongs to the row name: one pattern, one row (split there,
    # its second piece 'not the paper' would match the LightGCN row too)
    assert rows(plan([table], only='t/PKEF vanilla, not the paper')) == [
        'PKEF vanilla, not the paper']
    # a second pattern after a bare comma still separates
    assert rows(plan([table], only='t/PKEF vanilla, not the paper,LightGCN')) == [
        'LightGCN, not the paper', 'PKEF vanilla, not the paper']
    assert len(plan([table], only='lightgcn,pkef')) == 4
    # a pattern that matches nothing: ignored by plan(), an error for a run
    assert rows(plan([table], only='LightGCN,LightGCM')) == ['LightGCN, not the paper']
    with pytest.raises(ConfigError, match="'LightGCM'"):
        plan([table], only='LightGCN,LightGCM', strict=True)
    with pytest.raises(ConfigError, match="no run"):
        run_suite([table], tmp_path / 'results', 't', only='nothing-here', dry_run=True,
                  echo=lambda *a: None)
    assert plan([table], only='LightGCN,micro', strict=True, ignore=('micro',))


def test_command_line_of_a_run(tmp_path):
    table = load_table(write(tmp_path, MINIMAL))
    run = expand(table)[2][1]          # PKEF vanilla, seed 0
    cmd = run.command('/data', Path('out'), threads=1)
    assert cmd[1:4] == ['-m', 'mbgraph', 'train']
    assert ["--set", "encoder.fusion='vanilla'"] == cmd[cmd.index('--set'):][:2]
    assert '--resume' in cmd and '--data-root' not in cmd     # synthetic needs no data
    assert cmd[cmd.index('--epochs') + 1] == '5' and cmd[cmd.index('--threads') + 1] == '1'


# ------------------------------------------------------------------------------ tables, plots

def _result(run, hr, ndcg, curve):
    return {'run_id': run.id, 'config': run.effective(), 'wall_seconds': 1.0,
            'metrics': {'test': {'hr@10': hr, 'ndcg@10': ndcg}, 'epoch_seconds': 0.5},
            'curve': [{'epoch': e, 'loss': 1.0, 'val': {'ndcg@10': v}} for e, v in curve]}


def test_table_renders_mean_and_std_over_seeds(tmp_path):
    table = load_table(write(tmp_path, MINIMAL))
    (_, r0), (_, r1), (_, p0), _ = expand(table)
    results = {r0.id: _result(r0, 0.1, 0.05, [(1, 0.1), (2, 0.2)]),
               r1.id: _result(r1, 0.3, 0.15, [(1, 0.3), (2, 0.4)]),
               p0.id: _result(p0, 0.2, 0.1, [(1, 0.2)])}
    text = render_table(table, results)
    # HR: mean 0.2, sample std sqrt((0.1^2 + 0.1^2) / 1) = 0.1414; NDCG: 0.1 and 0.0707
    assert '| LightGCN | 0.2000 ± 0.1414 | 0.1000 ± 0.0707 | 0.5000 / 0.2500 |' in text
    # one seed of two finished: the value alone, and how many seeds it has
    assert '| PKEF vanilla | 0.2000 (n=1) | 0.1000 (n=1) |  |' in text
    assert 'synthetic HR@10' in text and 'synthetic paper' in text
    assert '3 of 4 runs finished' in text
    assert format_cell('test.hr@10', [], 2) == '-'
    assert format_cell('tuned_share', [0.104], 1) == '10.40%'


def test_training_curve_plot_is_written(tmp_path):
    pytest.importorskip('matplotlib')
    table = load_table(write(tmp_path, MINIMAL))
    (_, r0), *_ = expand(table)
    out = plot_curves(table, {r0.id: _result(r0, 0.1, 0.05, [(1, 0.1), (2, 0.2)])},
                      tmp_path / 'curves_t.png')
    assert out is not None and out.stat().st_size > 1000
    assert plot_curves(table, {}, tmp_path / 'none.png') is None


# ------------------------------------------------------------------------------ the runner

TINY_LOG = 'user,item,behavior\n' + ''.join(
    f'u{u},i{(u + k) % 7},{b}\n' for u in range(12) for k in range(5)
    for b in (['view', 'buy'] if k % 2 == 0 else ['view']))


def tiny_csv_suite(tmp_path, datasets):
    """A one-row suite folder (LightGCN, one epoch) on the 12-user CSV log ``TINY_LOG``;
    ``datasets``: the table's dataset list as TOML (``'"csv"'``)."""
    log = tmp_path / 'log.csv'
    log.write_text(TINY_LOG)
    suite = tmp_path / 'tiny'
    suite.mkdir()
    write(suite, f"""
        [table]
        id = "tiny"
        datasets = [{datasets}]

        [hyper]
        epochs = 1
        batch_size = 16
        dim = 8

        [dataset.csv]
        data_path = "{log}"
        behaviors = "view,buy"

        [[row]]
        name = "LightGCN"
        model = "lightgcn"
        """, 'tiny.toml')
    return suite


def test_suite_runs_a_subprocess_then_skips_it(tmp_path, capsys):
    """One epoch of LightGCN on a 12-user CSV log through `python -m mbgraph train`."""
    tables = load_suite(str(tiny_csv_suite(tmp_path, '"csv", "taobao"')))
    results = tmp_path / 'results'
    counts = run_suite(tables, results, 'tiny', data_root=None, threads=1, progress=False)
    out = capsys.readouterr().out
    assert counts['done'] == 1 and counts['failed'] == 0, out
    assert counts['missing_data'] == ['taobao'] and "skipping dataset 'taobao'" in out
    (path,) = results.glob('lightgcn-csv-s0-*.json')
    result = json.loads(path.read_text())
    assert result['config']['hyper']['epochs'] == 1
    assert set(result['metrics']['test']) == {'hr@10', 'ndcg@10'}
    assert result['metrics']['environment']['torch'] == torch.__version__
    assert result['curve'][0]['epoch'] == 1 and result['metrics']['peak_rss_mb'] > 0
    assert not (results / 'runs' / result['run_id'] / 'checkpoint.pt').exists()
    again = run_suite(tables, results, 'tiny', data_root=None, progress=False)
    assert again['skipped'] == 1 and again['done'] == 0
    assert list(load_results(results)) == [result['run_id']]


def test_archived_runs_count_as_finished_in_a_fresh_checkout(tmp_path, capsys):
    """A run finished with an archive is copied there; a second results folder (a fresh
    clone: no results/) skips it and the tables read it; `archive` copies what a run
    without an archive left, and `--archive none` turns it off."""
    suite = tiny_csv_suite(tmp_path, '"csv"')
    tables = load_suite(str(suite))
    archive = tmp_path / 'archive' / 'tiny'
    first = run_suite(tables, tmp_path / 'a' / 'tiny', 'tiny', threads=1, progress=False,
                      archive=archive)
    assert first['done'] == 1
    (kept,) = archive.glob('lightgcn-csv-s0-*.json')
    (made,) = (tmp_path / 'a' / 'tiny').glob('lightgcn-csv-s0-*.json')
    assert json.loads(kept.read_text()) == json.loads(made.read_text())
    fresh = tmp_path / 'b'
    again = run_suite(tables, fresh, 'tiny', progress=False, archive=archive)
    assert again == {**again, 'skipped': 1, 'done': 0}
    assert not fresh.exists() or not list(fresh.glob('*.json'))
    assert list(load_results(fresh, archive)) == [kept.stem]
    assert load_results(fresh) == {}
    # a result under results/ wins over the archived one of the same id
    newer = {**json.loads(kept.read_text()), 'date': 'later'}
    fresh.mkdir(exist_ok=True)
    (fresh / kept.name).write_text(json.dumps(newer))
    assert load_results(fresh, archive)[kept.stem]['date'] == 'later'
    # the CLI: archive a results folder's finished runs; --archive none refuses
    other = tmp_path / 'archive2'
    assert main(['archive', str(suite), '--results', str(tmp_path / 'a'),
                 '--archive', str(other)]) == 0
    assert [p.name for p in (other / 'tiny').glob('*.json')] == [kept.name]
    assert 'archived 1 finished run(s)' in capsys.readouterr().out
    assert main(['archive', str(suite), '--results', str(tmp_path / 'a'),
                 '--archive', 'none']) == 2
    assert main(['table', str(suite), '--results', str(tmp_path / 'empty'),
                 '--archive', str(other)]) == 0
    assert 'LightGCN' in capsys.readouterr().out
    with pytest.raises(ValueError, match='not a finished run'):
        bad = tmp_path / 'bad.json'
        bad.write_text('{"run_id": "x"}')
        archive_result(other, bad)


DPCPL_ROWS = """
[table]
id = "d"
datasets = ["synthetic"]
seeds = 1

[hyper]
epochs = 1
batch_size = 64
lr = 1e-2
negatives = 9

[[row]]
name = "DPCPL"
model = "dpcpl"
set = { pretrain_epochs = 1, dim = 8, num_layers = 1, num_blocks = 2, prompt_dim = 4, num_factors = 2, num_tokens = 2, compactness_weight = 0.01 }

[[row]]
name = "fine-tuning"
model = "dpcpl"
set = { tuning = "full", pretrain_epochs = 1, dim = 8, num_layers = 1, num_blocks = 2, prompt_dim = 4, num_factors = 2, num_tokens = 2, compactness_weight = 0.01 }
"""  # noqa: E501 (a TOML inline table is one line)


def test_dpcpl_rows_that_differ_in_tuning_share_one_pretraining(tmp_path):
    table = load_table(write(tmp_path, DPCPL_ROWS))
    runs = [run for _, run in expand(table)]
    pre = [run.pretraining() for run in runs]
    assert pre[0].id == pre[1].id and runs[0].id != runs[1].id
    assert dict(pre[0].set) == {'pretrain_epochs': 1, 'dim': 8, 'num_layers': 1,
                                'num_blocks': 2, 'prompt_slots': 2}
    assert pre[0].hyper['stage'] == 'pretrain' and 'epochs' not in pre[0].hyper
    cmd = pre[0].command(None, Path('p'))
    assert cmd[cmd.index('--stage') + 1] == 'pretrain'
    cmd = runs[0].command(None, Path('o'), pretrained=Path('p/pretrain/ebm.pt'))
    assert cmd[cmd.index('--stage') + 1] == 'prompt'
    assert "pretrained='p/pretrain/ebm.pt'" in cmd
    # a row that changes the backbone or its pre-training gets its own
    second = 'set = { tuning = "full", '
    for old, new in ((second, 'set = { sequence_mixer = "attention", '),
                     (second, 'set = { prefixes = 5, '),
                     ('num_tokens = 2', 'num_tokens = 3')):       # the first row's slots
        text = DPCPL_ROWS.replace(old, new, 1)
        rows = [run for _, run in expand(load_table(write(tmp_path, text, 'o.toml')))]
        assert rows[0].pretraining().id != rows[1].pretraining().id, new
    assert expand(load_table(write(tmp_path, MINIMAL)))[0][1].pretraining() is None
    # end to end: one pre-training subprocess, then both tunings read its backbone
    results = tmp_path / 'results'
    counts = run_suite([table], results, 'd', data_root=None, threads=1, progress=False)
    assert counts['done'] == 2 and counts['failed'] == 0
    found = sorted(load_results(results).values(), key=lambda r: r['metrics']['tuning'])
    assert [r['metrics']['tuning'] for r in found] == ['full', 'prompt']
    assert sorted(r['pretrained']['reused'] for r in found) == [False, True]
    assert {r['pretrained']['id'] for r in found} == {pre[0].id}
    ebm = results / 'pretrained' / pre[0].id / 'pretrain' / 'ebm.pt'
    assert ebm.is_file() and not (results / 'runs' / runs[0].id / 'pretrain').exists()
    backbone = [r['metrics']['pretrain']['test']['hr@10'] for r in found]
    assert backbone[0] == backbone[1]           # the same backbone, evaluated by both runs
    assert all(r['metrics']['pretrain']['path'] == str(ebm) for r in found)


def test_datasets_are_found_by_name(tmp_path):
    from benchmarks.runner import dataset_available
    (tmp_path / 'taobao-mbgmn').mkdir()
    (tmp_path / 'taobao-mbgmn' / 'trn_buy').write_bytes(b'')
    assert dataset_available('taobao', str(tmp_path))[0]
    assert dataset_available('taobao', str(tmp_path / 'taobao-mbgmn'))[0]
    # files of one MB-GMN dataset never stand in for another
    ok, why = dataset_available('beibei', str(tmp_path / 'taobao-mbgmn'))
    assert not ok and 'beibei' in why
    assert not dataset_available('ml-latest-small', str(tmp_path))[0]
    assert not dataset_available('retailrocket', str(tmp_path))[0]
    (tmp_path / 'retailrocket-sslrec').mkdir()
    (tmp_path / 'retailrocket-sslrec' / 'train_mat_buy.pkl').write_bytes(b'')
    assert dataset_available('retailrocket', str(tmp_path)) == (
        True, str(tmp_path / 'retailrocket-sslrec'))
    assert dataset_available('synthetic', None)[0]
    assert not dataset_available('csv', None)[0]


def test_cli_list_table_and_errors(tmp_path, capsys):
    assert main(['list']) == 0
    assert 'quick' in capsys.readouterr().out
    assert main(['run', 'no-such-suite', '--dry-run']) == 2
    assert "unknown suite 'no-such-suite'" in capsys.readouterr().err
    assert main(['run', 'quick', '--dry-run', '--results', str(tmp_path)]) == 0
    assert 'to run' in capsys.readouterr().out
    assert main(['table', 'quick', '--results', str(tmp_path)]) == 0
    assert (tmp_path / 'quick' / 'tables.md').is_file()


# ------------------------------------------------------------------------------ speed

def test_fit_slope_recovers_the_exponent():
    lengths = [64, 128, 256, 512]
    assert fit_slope(lengths, [3e-6 * n ** 2 for n in lengths]) == pytest.approx(2.0)
    assert fit_slope(lengths, [0.5 * n for n in lengths]) == pytest.approx(1.0)
    # log2 times 0, 1, 3 at log2 lengths 0, 1, 2: least-squares slope (0*-1 + 3*1) / 2 = 1.5
    assert fit_slope([1, 2, 4], [1, 2, 8]) == pytest.approx(1.5)
    assert math.isnan(fit_slope([64], [1.0]))


def test_saved_activation_bytes_counts_what_backward_keeps():
    a = torch.randn(10, requires_grad=True)
    b = torch.randn(10, requires_grad=True)
    _, n = saved_activation_bytes(lambda: a * b)     # mul saves both inputs: 2 x 10 x 4 bytes
    assert n == 80
    _, n = saved_activation_bytes(lambda: a + b)     # add saves nothing
    assert n == 0


def test_sequence_scaling_on_tiny_lengths():
    rows = sequence_scaling([8, 16, 32], torch.device('cpu'), batch=2, dim=8, repeats=1)
    assert len(rows) == 6 and all(r['seconds'] > 0 for r in rows)
    attention = {r['length']: r['memory_mb'] for r in rows if 'attention' in r['encoder']}
    assert attention[32] > attention[16] > attention[8]
    slopes = scaling_slopes(rows)
    assert len(slopes) == 2 and all(math.isfinite(s['memory_slope']) for s in slopes)


def test_curves_reads_watched_test_and_validation(tmp_path, capsys):
    from benchmarks import curves
    paper, val = tmp_path / 'paper', tmp_path / 'val'
    paper.mkdir()
    val.mkdir()
    (paper / 'log.jsonl').write_text(
        '{"epoch": 1, "loss": 1.0, "watch": {"hr@10": 0.1}}\n{"epoch": 2, "loss": 0.9}\n'
        '{"epoch": 3, "loss": 0.8, "watch": {"hr@10": 0.3}}\n{"epoch": 4, "lo')   # torn line
    (val / 'log.jsonl').write_text('{"epoch": 1, "val": {"hr@10": 0.2}}\n')
    assert curves.read_points(paper, 'hr@10') == ('test', [(1, 0.1), (3, 0.3)])
    assert curves.read_points(val, 'hr@10') == ('val', [(1, 0.2)])
    assert curves.main([str(paper), str(val), '--metric', 'hr@10']) == 0
    table = capsys.readouterr().out
    assert '| 3 | 0.3000 |  |' in table and '| 1 | 0.1000 | 0.2000 |' in table
    assert curves.main([str(tmp_path / 'missing')]) == 2


def test_training_throughput_rows_render(tmp_path):
    from benchmarks import speed
    from mbgraph.data.datasets import synthetic
    from mbgraph.io import write_json
    data = synthetic(num_users=120, num_items=60, seed=0)
    rows = speed.training_throughput(data, 'synthetic', torch.device('cpu'), steps=1, warmup=1)
    assert [r['model'] for r in rows] == ['pkef', 'copf']
    for r in rows:
        assert r['reading'] == 'code' and r['step_seconds'] > 0
        assert r['seconds_per_million_triples'] == pytest.approx(
            r['step_seconds'] * r['steps_per_epoch'] / r['triples_per_epoch'] * 1e6)
    write_json(tmp_path / 'speed_training.json', {'rows': rows})
    text = speed.render(tmp_path)
    assert '### Training steps of the named models' in text and '| pkef | code |' in text


def test_a_row_caps_its_seeds(tmp_path):
    """A deterministic row (``seeds = 1``) runs once in a 2-seed table; the table counts
    and renders it as complete with one run."""
    text = MINIMAL.replace('model = "pkef"', 'model = "pkef"\nseeds = 1', 1)
    table = load_table(write(tmp_path, text))
    runs = expand(table)
    assert [(row.name, run.seed) for row, run in runs] == \
        [('LightGCN', 0), ('LightGCN', 1), ('PKEF vanilla', 0)]
    assert len(expand(table, seeds=5)) == 5 + 1 and len(expand(table, seeds=1)) == 2
    (_, r0), (_, r1), (_, p0) = runs
    results = {r.id: _result(r, 0.2, 0.1, [(1, 0.2)]) for r in (r0, r1, p0)}
    rendered = render_table(table, results)
    assert '3 of 3 runs finished' in rendered
    assert '| PKEF vanilla | 0.2000 | 0.1000 |' in rendered      # no "(n=1)": it is complete


def test_the_leaderboard_has_every_graph_model_and_baseline_on_three_settings():
    from mbgraph.models import MODELS
    tables = {t.id: t for t in load_suite('leaderboard')}
    assert set(tables) == {'leaderboard_taobao_cart_buy', 'leaderboard_taobao_pv_cart_buy',
                           'leaderboard_retailrocket'}
    for table in tables.values():
        models = {r.model for r in table.rows}
        hybrids = {m for m in models if m.startswith(('hybrid:', 'blend:'))}
        assert models - hybrids == set(MODELS) and hybrids
        assert table.seeds == 3 and 'test.hr@20' in table.columns
        # the training-free rows are deterministic: one run each
        assert {r.model for r in table.rows if r.seeds == 1} == \
            {'mostpop', 'history', 'cascadingrank'}
    assert tables['leaderboard_taobao_cart_buy'].dataset_hyper['taobao']['behaviors'] == \
        'cart,buy'
    assert tables['leaderboard_taobao_pv_cart_buy'].dataset_hyper['taobao']['behaviors'] == \
        'pv,cart,buy'


def test_time_to_accuracy_rows_stop_at_their_targets(tmp_path):
    """The speed suite's time-to-accuracy table asks each run to stop at its target on the
    validation split, and its columns read metrics.json's time_to_target."""
    table = [t for t in load_suite('speed') if t.id == 'speed_time_to_accuracy'][0]
    commands = {row.name: run.command('DATA', tmp_path) for row, run in expand(table)}
    assert len(commands) == 5
    for name, cmd in commands.items():
        target = name.split('target ')[1].rstrip(')')
        assert cmd[cmd.index('--stop-at') + 1] == f'hr@10={target}'
        assert cmd[cmd.index('--protocol') + 1] == 'validation'
    # the larger-batch row passes its batch and rate; the reading's rows keep their own
    big = {n: c for n, c in commands.items() if '1,024-user batches' in n}
    assert sorted(n.split(' (')[0] for n in big) == ['COPF', 'COPF', 'PKEF']
    for name, c in big.items():
        assert c[c.index('--batch-size') + 1] == '1024'
        rate = float(name.split('lr ')[1].split(',')[0])
        assert float(c[c.index('--lr') + 1]) == rate
    assert all('--batch-size' not in c for n, c in commands.items() if '1,024' not in n)
    # only the bf16 row trains under autocast
    assert [n for n, c in commands.items() if '--amp' in c] == \
        [n for n in commands if 'bf16' in n] and any('bf16' in n for n in commands)
    assert all(c.startswith('time_to_target.') for c in table.columns)


def test_cpu_steps_prints_one_row_per_model(capsys):
    import importlib.util
    path = Path(__file__).resolve().parent.parent / 'benchmarks' / 'cpu_steps.py'
    spec = importlib.util.spec_from_file_location('cpu_steps', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(['--dataset', 'synthetic', '--behaviors', 'view,cart,buy', '--models',
              'copf,lightgcn', '--steps', '1', '--eval'])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r['model'] for r in rows] == ['copf', 'lightgcn']
    assert all(r['step_cpu_seconds'] > 0 and r['eval_cpu_seconds'] > 0 for r in rows)
    assert all(r['step_wall_seconds'] > 0 and r['eval_wall_seconds'] > 0 for r in rows)
    assert all(r['matmul_precision'] == 'highest' for r in rows)
    assert all(0 <= r['eval_hr@10'] <= 1 for r in rows)


BLEND_ROWS = """
[table]
id = "b"
datasets = ["synthetic"]
seeds = 1

[hyper]
protocol = "paper"
epochs = 2
eval_every = 1
dim = 8
ks = "10"

[[row]]
name = "LightGCN"
model = "lightgcn"

[[row]]
name = "Blend"
model = "blend:mostpop+lightgcn"
set = { grid = "0,0.5,1" }
"""


@pytest.mark.parametrize('model, extra, needle', [
    ('blend:lightgcn', '', 'at least two members'),
    ('blend:lightgcn+', '', 'at least two members'),
    ('blend:mostpop+nope', '', "member 'nope'"),
    ('blend:mostpop+sasrec', '', "member 'sasrec'"),
    ('blend:mostpop+hybrid:lightgcn', '', "member 'hybrid:lightgcn'"),
    ('blend:mostpop+lightgcn', 'set = { lr = 0.1 }', "unknown key 'lr'"),
])
def test_blend_rows_are_checked(tmp_path, model, extra, needle):
    text = BLEND_ROWS.replace('model = "blend:mostpop+lightgcn"\nset = { grid = "0,0.5,1" }',
                              f'model = "{model}"\n{extra}')
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_table(write(tmp_path, text))


def test_blend_row_trains_its_members_fits_on_validation_and_applies_to_the_paper_runs(
        tmp_path):
    table = load_table(write(tmp_path, BLEND_ROWS))
    (_, pure), (_, blend) = expand(table)
    (pop, pop_run, pop_twin), (gcn, gcn_run, gcn_twin) = blend.blend_parts()
    assert (pop, pop_run, pop_twin) == ('mostpop', None, None)
    assert gcn == 'lightgcn' and gcn_run.id == pure.id          # shared with its own row
    assert gcn_twin.hyper['protocol'] == 'validation' and gcn_twin.id != pure.id
    assert {k: v for k, v in gcn_twin.hyper.items() if k != 'protocol'} == \
        {k: v for k, v in pure.hyper.items() if k != 'protocol'}
    assert pure.blend_parts() == []
    results = tmp_path / 'results'
    counts = run_suite([table], results, 'b', data_root=None, threads=1, progress=False)
    assert counts['done'] == 2 and counts['failed'] == 0, counts
    found = load_results(results)
    # the pure row, the validation twin (trained for the blend), the blend
    assert set(found) == {pure.id, gcn_twin.id, blend.id}
    result = found[blend.id]
    fit = json.loads((results / 'runs' / blend.id / 'fit' / 'metrics.json').read_text())
    assert fit['protocol'] == 'validation' and fit['config']['grid'] == [0.0, 0.5, 1.0]
    metrics = result['metrics']
    assert metrics['protocol'] == 'paper' and metrics['weights'] == fit['weights']
    assert 'fitted on its validation split' in metrics['weights_chosen']
    assert metrics['val'] == fit['val'] and set(metrics['test']) == {'hr@10', 'ndcg@10'}
    members = [m['member'] for m in metrics['members']]
    assert members[0] == 'mostpop' and members[1].endswith(f'{pure.id}/best.pt')
    assert [m['twin'] for m in result['members']] == [None, gcn_twin.id]
    assert len(result['commands']) == 2 and '--weights-from' in result['commands'][1]
    from benchmarks.leaderboard import row_kind
    assert row_kind(blend.model) == 'hybrid'
    again = run_suite([table], results, 'b', data_root=None, threads=1, progress=False)
    assert again['skipped'] == 2 and again['done'] == 0


def test_only_the_leaderboard_is_archived_by_default(tmp_path, monkeypatch):
    from argparse import Namespace

    from benchmarks.__main__ import DEFAULT_ARCHIVE, _suite_archive
    monkeypatch.setenv('MBGRAPH_BENCH_ARCHIVE', str(tmp_path))
    assert _suite_archive(Namespace(archive=None, suite='leaderboard')) == tmp_path / 'leaderboard'
    assert _suite_archive(Namespace(archive=None, suite='quick')) is None
    assert _suite_archive(Namespace(archive='x', suite='quick')) == Path('x') / 'quick'
    assert _suite_archive(Namespace(archive='none', suite='leaderboard')) is None
    monkeypatch.delenv('MBGRAPH_BENCH_ARCHIVE')
    assert (_suite_archive(Namespace(archive=None, suite='leaderboard'))
            == DEFAULT_ARCHIVE / 'leaderboard')
    assert DEFAULT_ARCHIVE == Path(__file__).resolve().parent.parent / 'benchmarks' / 'archive'


def test_a_run_finished_by_another_runner_is_not_trained_again(tmp_path):
    """Two runners on one suite: a run whose result appeared after this runner made its
    plan is skipped when its turn comes (execute re-checks under the run's lock)."""
    from benchmarks.runner import execute
    suite = tmp_path / 'tiny'
    suite.mkdir()
    write(suite, """
        [table]
        id = "tiny"
        datasets = ["synthetic"]

        [hyper]
        epochs = 1

        [[row]]
        name = "LightGCN"
        model = "lightgcn"
        """, 'tiny.toml')
    (planned,) = plan(load_suite(str(suite)))
    results = tmp_path / 'results'
    results.mkdir()
    done = {'run_id': planned.run.id, 'metrics': {'test': {'hr@10': 0.5}}}
    (results / f'{planned.run.id}.json').write_text(json.dumps(done))
    out = execute(planned, results, data_root=None, device='cpu', threads=1, progress=False,
                  suite='tiny')
    assert out['finished_elsewhere'] and out['metrics'] == done['metrics']
    assert not (results / 'runs' / planned.run.id / 'stdout.log').exists()


def test_device_check_script_rehearses_on_the_cpu(tmp_path):
    """benchmarks/device_check.sh (the one prepared GPU command of issue 16) runs end to end
    with DEVICE=cpu DRY=1: its CUDA tests are collected and skipped, the speed suite plans its
    runs, and every file it promises is in $OUT."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / 'out'
    env = {**os.environ, 'OUT': str(out), 'PYTHON': sys.executable, 'DEVICE': 'cpu', 'DRY': '1',
           'TESTS_S': '240', 'SPEED_S': '240'}
    proc = subprocess.run(['bash', str(root / 'benchmarks' / 'device_check.sh')], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'cuda available False' in (out / 'env.txt').read_text()
    tests_log = (out / 'pytest_cuda.log').read_text()
    assert 'pytest exit status 0' in tests_log and 'skipped' in tests_log
    speed_log = (out / 'speed.log').read_text()
    assert 'speed suite exit status 0' in speed_log
    assert '--device cpu' in speed_log and 'speed_graph/COPF' in speed_log
    assert 'then the speed micro-benchmarks' in speed_log


def test_train_minutes_is_the_median_epoch_times_the_epochs_run():
    from benchmarks.tables import label, lookup
    result = {'metrics': {'epoch_seconds': 3.0, 'epochs_run': 40}, 'wall_seconds': 999.0}
    assert lookup(result, 'train_minutes') == pytest.approx(2.0)
    assert lookup({'metrics': {'epoch_seconds': 3.0}}, 'train_minutes') is None
    assert format_cell('train_minutes', [2.0, 3.0], wanted=2) == '2.5 ± 0.7'
    assert label('train_minutes') == 'train min'


def test_cpu_steps_times_a_sequence_model_in_its_layout(capsys, monkeypatch):
    """benchmarks/cpu_steps.py on a sequence model: EBM's steps in its all-cuts layout, one
    JSON row with CPU seconds per step and per 1,000 targets."""
    from benchmarks import cpu_steps
    monkeypatch.setenv('LRU_CACHE_CAPACITY', '1')      # what it sets; restored afterwards
    monkeypatch.setenv('ONEDNN_PRIMITIVE_CACHE_CAPACITY', '0')
    cpu_steps.main(['--dataset', 'synthetic', '--models', 'ebm', '--steps', '2',
                    '--batch-size', '16', '--negatives', '5', '--max-len', '12'])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row['model'] == 'ebm' and row['layout'] == 'all'
    assert row['step_cpu_seconds'] > 0 and row['cpu_seconds_per_1000_targets'] > 0
    with pytest.raises(SystemExit):
        cpu_steps.main(['--dataset', 'synthetic', '--models', 'ebm,copf'])
