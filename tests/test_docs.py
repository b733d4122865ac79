"""The documentation runs as written.

* Every ```python block of README.md and of every docs/*.md file is executed. The examples of
  one file run **in document order in one namespace**, so a guide can build on the names an
  earlier block defined (as a reader running them in one session would); files share nothing.
  Each block is its own test (id ``FILE-pythonNN-HEADING``); running one block alone first
  runs the blocks before it in the same file.
* In ```bash blocks, the commands that start with ``mbgraph `` are run through
  :func:`mbgraph.cli.main` at their place in that order and must exit with status 0. Other
  shell lines (installs, ``torchrun``) are not run; a command that names a ``--data-root`` or
  ``--checkpoint`` that is not there, or ``--device cuda`` without CUDA, is skipped (real
  datasets are the slow tests' business).
* Each file's examples run in a fresh temporary working directory, so files they write
  (``runs/``, ``interactions.csv``, ...) never land in the repository. Registries that an
  example may extend (models, encoders, heads, datasets, sequence models) are restored after
  the file.
* The CLI reference of docs/guide.md lists exactly the options of ``mbgraph.cli``'s argparse
  definitions, with their defaults, so the two cannot drift apart.
* Links to ``#anchors`` point at headings that exist.
"""
import argparse
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
GUIDE = ROOT / 'docs' / 'guide.md'
DOC_FILES = [README] + sorted((ROOT / 'docs').glob('*.md'))

FENCE = re.compile(r'^```(\w*)[^\n]*\n(.*?)^```[ \t]*$', flags=re.S | re.M)
HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$', flags=re.M)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _slug(text: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r'[`*_]|\[([^\]]*)\]\([^)]*\)', r'\1', text).strip().lower()
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


@dataclass
class Example:
    path: Path
    kind: str          # 'python' or 'bash'
    index: int         # among the file's python (or bash) blocks
    line: int          # 1-based line of the block's first code line
    code: str
    heading: str

    @property
    def id(self) -> str:
        return f'{_name(self.path)}-{self.kind}{self.index:02d}-{_slug(self.heading)[:50]}'


def examples(path: Path) -> List[Example]:
    """The python and bash blocks of ``path`` in document order."""
    text = path.read_text()
    headings = [(m.start(), m.group(2)) for m in HEADING.finditer(text)]
    out, counts = [], {'python': 0, 'bash': 0}
    for m in FENCE.finditer(text):
        kind = m.group(1)
        if kind not in counts:
            continue
        # headings inside code blocks do not count: take the last one before the block that
        # is not inside an earlier block (fences are matched in order, so this is enough)
        before = [h for pos, h in headings if pos < m.start() and not _in_fence(text, pos)]
        out.append(Example(path, kind, counts[kind], text.count('\n', 0, m.start(2)) + 1,
                           m.group(2), before[-1] if before else path.stem))
        counts[kind] += 1
    return out


def _in_fence(text: str, pos: int) -> bool:
    return any(m.start() < pos < m.end() for m in FENCE.finditer(text))


EXAMPLES = [ex for path in DOC_FILES for ex in examples(path)]
PYTHON = [ex for ex in EXAMPLES if ex.kind == 'python']
SHELL = [ex for ex in EXAMPLES if ex.kind == 'bash'
         and any(line.startswith('mbgraph ') for line in ex.code.splitlines())]
RUNNABLE = [ex for ex in EXAMPLES if ex.kind == 'python' or ex in SHELL]   # document order


# ------------------------------------------------------------------------------------------
# running a file's examples in order
# ------------------------------------------------------------------------------------------

def _registries():
    from mbgraph.data.datasets import DATASETS
    from mbgraph.models import MODELS
    from mbgraph.models.multi_behavior import ENCODERS, HEADS
    from mbgraph_seq.models import SEQ_MODELS
    return [DATASETS, MODELS, ENCODERS, HEADS, SEQ_MODELS]


@dataclass
class FileRun:
    """The state of one documentation file's examples: namespace, working dir, progress."""
    workdir: Path
    namespace: Dict = field(default_factory=lambda: {'__name__': '__docs__'})
    done: int = 0              # examples run so far, in document order
    failed: str = ''           # id of the example that failed
    skipped: Dict[str, str] = field(default_factory=dict)   # id -> why it could not run here


@pytest.fixture(scope='module')
def file_runs(tmp_path_factory):
    saved = [(reg, dict(reg)) for reg in _registries()]
    runs: Dict[Path, FileRun] = {}

    def get(path: Path) -> FileRun:
        if path not in runs:
            runs[path] = FileRun(tmp_path_factory.mktemp(path.stem))
        return runs[path]

    yield get
    for reg, copy in saved:
        reg.clear()
        reg.update(copy)


def _shell_commands(code: str) -> List[str]:
    """The ``mbgraph ...`` commands of a shell block (backslash continuations joined)."""
    lines = code.replace('\\\n', ' ').splitlines()
    return [line.strip() for line in lines if line.startswith('mbgraph ')]


def _unavailable(args: List[str]) -> str:
    """Why a command cannot run here (a data root or checkpoint that is not here, CUDA on a
    machine without it), or ''."""
    import torch
    for flag, value in zip(args, args[1:]):
        if flag in ('--data-root', '--checkpoint') and not Path(value).exists():
            return f'{flag} {value} does not exist here'
        if flag == '--device' and value.startswith('cuda') and not torch.cuda.is_available():
            return 'needs CUDA'
    return ''


def _execute(ex: Example, run: FileRun) -> str:
    """Run one example; returns why it was skipped ('' when it ran)."""
    if ex.kind == 'python':
        # pad with blank lines so that line numbers are the markdown file's; compiled under
        # that file's path, tracebacks quote its lines
        source = '\n' * (ex.line - 1) + ex.code
        exec(compile(source, str(ex.path), 'exec'), run.namespace)
        return ''
    from mbgraph.cli import main
    skipped, ran = [], 0
    for command in _shell_commands(ex.code):
        args = shlex.split(command)[1:]
        reason = _unavailable(args)
        if reason:
            skipped.append(f'`{command}`: {reason}')
            continue
        status = main(args)
        assert status == 0, f'{_name(ex.path)} line {ex.line}: `{command}` exited with {status}'
        ran += 1
    return '; '.join(skipped) if skipped and not ran else ''


def _run_until(ex: Example, run: FileRun) -> str:
    """Run the file's examples up to and including ``ex`` (those not run yet); returns why
    ``ex`` was skipped, or ''."""
    ordered = [e for e in EXAMPLES if e.path == ex.path]
    target = ordered.index(ex)
    while run.done <= target:
        current = ordered[run.done]
        if run.failed:
            pytest.fail(f'an earlier example of {_name(ex.path)} failed ({run.failed}); '
                        f'{current.id} depends on it')
        try:
            run.skipped[current.id] = _execute(current, run)
        except BaseException:
            run.failed = current.id
            raise
        finally:
            run.done += 1
    return run.skipped.get(ex.id, '')


@pytest.mark.parametrize('ex', RUNNABLE, ids=lambda ex: ex.id)
def test_doc_example_runs(ex, file_runs, monkeypatch):
    run = file_runs(ex.path)
    monkeypatch.chdir(run.workdir)
    reason = _run_until(ex, run)
    if reason:
        pytest.skip(reason)


def test_readme_has_examples():
    assert len([ex for ex in PYTHON if ex.path == README]) >= 2


def test_guide_has_examples():
    kinds = [ex.kind for ex in EXAMPLES if ex.path == GUIDE]
    assert kinds.count('python') >= 8 and kinds.count('bash') >= 2


# ------------------------------------------------------------------------------------------
# the CLI reference of the guide against mbgraph.cli's argparse definitions
# ------------------------------------------------------------------------------------------

def _section(text: str, title: str, level: int) -> str:
    """The text under the heading ``title`` of ``level`` up to the next heading of that level
    or higher."""
    m = re.search(rf'^{"#" * level} {re.escape(title)}\s*$', text, flags=re.M)
    assert m, f'docs/guide.md has no heading {"#" * level} {title}'
    nxt = re.search(rf'^#{{1,{level}}} ', text[m.end():], flags=re.M)
    return text[m.end():m.end() + nxt.start()] if nxt else text[m.end():]


def _reference_rows(command: str) -> Dict[str, str]:
    """``{'--option': 'default cell'}`` of the table under ``### mbgraph COMMAND``."""
    reference = _section(GUIDE.read_text(), 'CLI reference', 2)
    rows = {}
    for line in _section(reference, f'mbgraph {command}', 3).splitlines():
        m = re.match(r'^\|\s*`(--[\w-]+)[^`]*`\s*\|\s*([^|]*?)\s*\|', line)
        if m:
            assert m.group(1) not in rows, f'{m.group(1)} listed twice for {command}'
            rows[m.group(1)] = m.group(2).strip('`')
    return rows


def _subparsers():
    from mbgraph.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def _expected_default(action: argparse.Action) -> str:
    if action.required:
        return 'required'
    if isinstance(action, argparse._StoreTrueAction):
        return 'off'
    if action.default is None:
        return '-'
    return str(action.default)


@pytest.mark.parametrize('command', ['train', 'evaluate', 'blend', 'datasets'])
def test_cli_reference_matches_argparse(command):
    _, commands = _subparsers()
    actions = {opt: a for a in commands[command]._actions for opt in a.option_strings
               if opt.startswith('--') and opt != '--help'}
    rows = _reference_rows(command)
    assert sorted(rows) == sorted(actions), (
        f'docs/guide.md "### mbgraph {command}" lists {sorted(rows)}, mbgraph/cli.py defines '
        f'{sorted(actions)}')
    for opt, action in actions.items():
        assert rows[opt] == _expected_default(action), (
            f'docs/guide.md gives {opt} the default {rows[opt]!r}; mbgraph/cli.py has '
            f'{_expected_default(action)!r}')


def test_every_train_help_option_is_in_the_guide(capsys):
    from mbgraph.cli import main
    with pytest.raises(SystemExit):
        main(['train', '--help'])
    options = set(re.findall(r'(?<![\w-])--[a-z][\w-]*', capsys.readouterr().out)) - {'--help'}
    assert options, 'no options found in `mbgraph train --help`'
    reference = _section(GUIDE.read_text(), 'CLI reference', 2)
    missing = sorted(o for o in options if f'`{o}' not in reference)
    assert not missing, f'options of `mbgraph train --help` missing from the guide: {missing}'


def test_global_options_are_in_the_guide():
    parser, _ = _subparsers()
    reference = _section(GUIDE.read_text(), 'CLI reference', 2)
    for action in parser._actions:
        for opt in action.option_strings:
            if opt not in ('-h', '--help'):
                assert f'`{opt}`' in reference, f'global option {opt} missing from the guide'


# ------------------------------------------------------------------------------------------
# anchors
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('path', DOC_FILES, ids=_name)
def test_anchor_links_resolve(path):
    text = path.read_text()
    for target, anchor in re.findall(r'\]\(([^)#\s]*)#([^)\s]+)\)', text):
        if target.startswith(('http://', 'https://')):
            continue
        other = (path.parent / target) if target else path
        if not other.is_file():
            continue        # links to files are not checked here, only anchors
        body = FENCE.sub('', other.read_text())
        slugs = {_slug(h) for _, h in HEADING.findall(body)}
        assert anchor in slugs, f'{_name(path)}: link to {target}#{anchor}: no such heading'
